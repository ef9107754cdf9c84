//! Domains and certificates as users and the API see them: the rules a domain name must
//! follow, and the views `berth domains` shows.

use serde::{Deserialize, Serialize};

/// Most custom domains per app.
pub const MAX_DOMAINS_PER_APP: usize = 32;

/// Normalises and checks a domain name: lowercase, no trailing dot, 2+ labels of letters,
/// digits and inner hyphens (1–63 characters each, 253 in all), no wildcard, not an address.
pub fn normalize_domain(raw: &str) -> Result<String, String> {
    let name = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let bad = |why: &str| Err(format!("domain {raw:?} is not a valid host name: {why}"));
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 253 {
        return bad("it is longer than 253 characters");
    }
    if name.starts_with("*.") {
        return bad("wildcards are not supported; add each name");
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return bad("it is an IP address; certificates are issued for names");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return bad("use letters, digits, '-' and '.' only (IDNs in their xn-- form)");
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return bad("it needs at least two labels, e.g. shop.example.com");
    }
    for l in &labels {
        if l.is_empty() {
            return bad("it has an empty label");
        }
        if l.len() > 63 {
            return bad("a label is longer than 63 characters");
        }
        if !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return bad("use letters, digits, '-' and '.' only (IDNs in their xn-- form)");
        }
        if l.starts_with('-') || l.ends_with('-') {
            return bad("a label starts or ends with '-'");
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return bad("its last label is numeric");
    }
    Ok(name)
}

/// Whether a name can only be certified by berth's local CA (no public CA issues for it).
pub fn is_local_only(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost")
}

/// Body of `POST /v1/apps/{app}/domains`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DomainAdd {
    /// The domain.
    pub name: String,
    /// Redirect plain HTTP to HTTPS (default: yes).
    #[serde(default = "yes")]
    pub https_redirect: bool,
}

fn yes() -> bool {
    true
}

/// A certificate as `berth domains list` shows it (never its key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CertificateView {
    /// `acme` or `local`.
    pub source: String,
    /// Issuer's name.
    pub issuer: String,
    /// Hex serial.
    pub serial: String,
    /// Unix seconds.
    pub not_after: i64,
    /// Unix seconds.
    pub issued_at: i64,
}

/// One of an app's domains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DomainView {
    /// The domain.
    pub name: String,
    /// App it routes to.
    pub app: String,
    /// Plain HTTP is redirected to HTTPS.
    pub https_redirect: bool,
    /// Where it is served.
    pub url: String,
    /// The certificate in use, once issued.
    pub certificate: Option<CertificateView>,
    /// Why the last issuance failed, if it did (it is retried).
    pub error: Option<String>,
    /// Its DNS records, when berth publishes records (`berth up --dns`).
    pub dns: Option<DnsRecordView>,
    /// Unix seconds.
    pub created_at: i64,
}

/// A name berth publishes in DNS (RFC 2136), and how that stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DnsRecordView {
    /// The name.
    pub name: String,
    /// The app it routes to.
    pub app: String,
    /// `published`, `pending` (not yet sent), `failed` (retried) or `outside zone` (berth
    /// publishes only names in its zone).
    pub state: String,
    /// The records published (`A 203.0.113.10`), or to be published.
    pub records: Vec<String>,
    /// Why the last update failed.
    pub error: Option<String>,
    /// Failed attempts since the last success.
    pub attempts: i64,
    /// Unix seconds of the last change or attempt.
    pub updated_at: i64,
}

/// `GET /v1/dns`: where berth publishes records, and each name's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DnsStatus {
    /// The authoritative server updates go to.
    pub server: String,
    /// The zone updated.
    pub zone: String,
    /// Whether updates are signed (TSIG) and with which key name.
    pub key: Option<String>,
    /// What every name points at.
    pub records: Vec<String>,
    /// The names, in order.
    pub names: Vec<DnsRecordView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_normalised() {
        assert_eq!(
            normalize_domain("Shop.Example.TEST.").unwrap(),
            "shop.example.test"
        );
        assert_eq!(
            normalize_domain("xn--bcher-kva.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(normalize_domain("a-b.c1.io").unwrap(), "a-b.c1.io");
    }

    #[test]
    fn malformed_domains_are_refused_with_the_reason() {
        for (bad, why) in [
            ("", "empty"),
            ("localhost", "two labels"),
            ("*.example.com", "wildcards"),
            ("10.0.0.1", "IP address"),
            ("a..b", "empty label"),
            ("-a.example", "starts or ends"),
            ("sh op.example", "letters, digits"),
            ("bad domain", "letters, digits"),
            ("shop.example/x", "letters, digits"),
            ("bücher.example", "letters, digits"),
            ("a.123", "numeric"),
        ] {
            let e = normalize_domain(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.contains("not a valid host name"), "{e}");
        }
        assert!(normalize_domain(&format!("{}.example", "a".repeat(64))).is_err());
        assert!(normalize_domain(&format!("{}example", "a.".repeat(130))).is_err());
    }

    #[test]
    fn only_localhost_names_are_local_only() {
        assert!(is_local_only("shop.localhost"));
        assert!(!is_local_only("shop.test"));
        assert!(!is_local_only("mylocalhost.com"));
    }
}

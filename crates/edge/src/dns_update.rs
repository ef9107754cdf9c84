//! DNS records for app domains by RFC 2136 dynamic updates, signed with TSIG (RFC 8945): the
//! role ExternalDNS plays on Kubernetes. The control plane decides which names should point
//! at the platform ([`DnsSettings::covers`]) and calls [`DnsUpdater::publish`] /
//! [`DnsUpdater::withdraw`]; each call is one atomic update message.
//!
//! A name berth has not published before is only claimed when it holds no records at all
//! (the RFC 2136 "name is not in use" prerequisite), so berth never overwrites records
//! someone else keeps in the zone.

use hickory_client::client::Client;
use hickory_client::proto::dnssec::rdata::tsig::TsigAlgorithm;
use hickory_client::proto::dnssec::tsig::TSigner;
use hickory_client::proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_client::proto::rr::rdata::{A, AAAA, CNAME};
use hickory_client::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_client::proto::runtime::TokioRuntimeProvider;
use hickory_client::proto::tcp::TcpClientStream;
use hickory_client::proto::xfer::DnsHandle;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// Default TTL of the records berth publishes, seconds.
pub const DEFAULT_TTL: u32 = 60;
/// Longest one update may take.
const UPDATE_TIMEOUT: Duration = Duration::from_secs(5);
/// TSIG fudge (allowed clock difference), seconds; RFC 8945 recommends 300.
const FUDGE: u16 = 300;

/// Errors of DNS updates.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// `--dns` is malformed.
    #[error("--dns {0}")]
    Settings(String),
    /// The TSIG key is malformed.
    #[error("--dns-tsig-key: {0}")]
    Key(String),
    /// The name is not under the zone.
    #[error("{name} is not in the zone {zone}")]
    NotInZone { name: String, zone: String },
    /// The server could not be reached or did not answer.
    #[error("DNS server {server}: {message}")]
    Unreachable { server: String, message: String },
    /// The server answered with an error.
    #[error("DNS server {server} refused the update of {name}: {code} ({why})")]
    Refused {
        server: String,
        name: String,
        code: String,
        why: &'static str,
    },
}

/// What app names point at: addresses (A/AAAA records) or one host name (a CNAME).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsTarget {
    Addresses(Vec<IpAddr>),
    Alias(String),
}

/// A TSIG key: its name, algorithm and secret.
#[derive(Clone)]
pub struct TsigKey {
    pub name: String,
    pub algorithm: String,
    secret: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TsigKey({} {})", self.algorithm, self.name)
    }
}

const ALGORITHMS: [&str; 4] = [
    "hmac-sha256",
    "hmac-sha384",
    "hmac-sha512",
    "hmac-sha512-256",
];

impl TsigKey {
    /// Parses `[ALGORITHM:]NAME:SECRET` (nsupdate's `-y` form; the algorithm defaults to
    /// hmac-sha256, the secret is base64).
    pub fn parse(s: &str) -> Result<Self, DnsError> {
        let parts: Vec<&str> = s.trim().split(':').collect();
        let (algorithm, name, secret) = match parts.as_slice() {
            [name, secret] => ("hmac-sha256", *name, *secret),
            [alg, name, secret] => (*alg, *name, *secret),
            _ => {
                return Err(DnsError::Key(
                    "give [ALGORITHM:]NAME:SECRET, e.g. hmac-sha256:berth:<base64 secret> (as `tsig-keygen` or `keymgr -t` print it)".into(),
                ))
            }
        };
        let algorithm = algorithm.to_ascii_lowercase();
        if !ALGORITHMS.contains(&algorithm.as_str()) {
            return Err(DnsError::Key(format!(
                "algorithm {algorithm:?} is not supported; use one of {}",
                ALGORITHMS.join(", ")
            )));
        }
        if name.is_empty() || Name::from_ascii(name).is_err() {
            return Err(DnsError::Key(format!("{name:?} is not a key name")));
        }
        use base64::Engine;
        let secret = base64::engine::general_purpose::STANDARD
            .decode(secret)
            .map_err(|e| DnsError::Key(format!("the secret is not base64: {e}")))?;
        if secret.is_empty() {
            return Err(DnsError::Key("the secret is empty".into()));
        }
        Ok(Self {
            name: name.to_ascii_lowercase(),
            algorithm,
            secret: Zeroizing::new(secret),
        })
    }

    /// Reads a key file: `[ALGORITHM:]NAME:SECRET`, a BIND key block as `tsig-keygen`
    /// prints it (`key "NAME" { algorithm ALG; secret "SECRET"; };`), or Knot's as
    /// `keymgr -t NAME` prints it (`id: NAME`, `algorithm: ALG`, `secret: SECRET`).
    pub fn from_file_text(text: &str) -> Result<Self, DnsError> {
        let text = text.trim();
        if !text.contains('{') && !text.contains("id:") {
            return Self::parse(text);
        }
        let mut name = None;
        let mut algorithm = None;
        let mut secret = None;
        for raw in text.split(['\n', ';', '{', '}']) {
            let line = raw.trim().trim_start_matches("- ").trim();
            let unquote = |v: &str| v.trim().trim_matches('"').to_string();
            if let Some(v) = line.strip_prefix("key ") {
                name = Some(unquote(v));
            } else if let Some(v) = line.strip_prefix("id:") {
                name = Some(unquote(v));
            } else if let Some(v) = line
                .strip_prefix("algorithm:")
                .or_else(|| line.strip_prefix("algorithm "))
            {
                algorithm = Some(unquote(v));
            } else if let Some(v) = line
                .strip_prefix("secret:")
                .or_else(|| line.strip_prefix("secret "))
            {
                secret = Some(unquote(v));
            }
        }
        match (name, secret) {
            (Some(n), Some(s)) => Self::parse(&format!(
                "{}:{n}:{s}",
                algorithm.unwrap_or_else(|| "hmac-sha256".into())
            )),
            _ => Err(DnsError::Key(
                "the file holds no key: give [ALGORITHM:]NAME:SECRET or a key block with its name and secret".into(),
            )),
        }
    }

    fn signer(&self) -> Result<TSigner, DnsError> {
        let name = Name::from_ascii(&self.name).map_err(|e| DnsError::Key(e.to_string()))?;
        let algorithm = TsigAlgorithm::from_name(
            Name::from_ascii(&self.algorithm).map_err(|e| DnsError::Key(e.to_string()))?,
        );
        TSigner::new(self.secret.to_vec(), algorithm, name, FUDGE)
            .map_err(|e| DnsError::Key(e.to_string()))
    }
}

/// Where and how app names are published: `rfc2136://SERVER[:PORT]?zone=ZONE&target=…`.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// The authoritative server, `HOST:PORT`.
    pub server: String,
    /// The zone updated (no trailing dot).
    pub zone: String,
    /// What names point at.
    pub target: DnsTarget,
    /// TTL of the records.
    pub ttl: u32,
    /// The key updates are signed with.
    pub key: Option<TsigKey>,
}

fn normal_name(s: &str) -> String {
    s.trim().trim_end_matches('.').to_ascii_lowercase()
}

impl DnsSettings {
    /// Parses the `--dns` URL: `rfc2136://SERVER[:PORT]?zone=ZONE&target=ADDRESS|HOST[&target=…][&ttl=SECONDS]`.
    pub fn parse(url: &str) -> Result<Self, DnsError> {
        let bad = |m: String| DnsError::Settings(format!("{url:?}: {m}"));
        let rest = url.strip_prefix("rfc2136://").ok_or_else(|| {
            bad("only rfc2136:// is supported, e.g. rfc2136://192.0.2.53?zone=example.com&target=203.0.113.10".into())
        })?;
        let (server, query) = rest.split_once('?').unwrap_or((rest, ""));
        let server = server.trim_end_matches('/');
        if server.is_empty() {
            return Err(bad("no server: give rfc2136://HOST[:PORT]?…".into()));
        }
        let server = if server.parse::<SocketAddr>().is_ok()
            || server.rsplit_once(':').is_some_and(|(h, p)| {
                !h.is_empty() && !h.ends_with(':') && p.parse::<u16>().is_ok()
            }) {
            server.to_string()
        } else {
            let host = server.trim_start_matches('[').trim_end_matches(']');
            match host.parse::<IpAddr>() {
                Ok(ip) => SocketAddr::new(ip, 53).to_string(),
                Err(_) => format!("{host}:53"),
            }
        };
        let (mut zone, mut targets, mut ttl) = (None, Vec::new(), DEFAULT_TTL);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "zone" => zone = Some(normal_name(v)),
                "target" => targets.push(v.to_string()),
                "ttl" => {
                    ttl = v
                        .parse::<u32>()
                        .ok()
                        .filter(|t| (1..=86400).contains(t))
                        .ok_or_else(|| {
                            bad(format!(
                                "ttl {v:?} is not a number of seconds from 1 to 86400"
                            ))
                        })?
                }
                other => {
                    return Err(bad(format!(
                        "unknown setting {other:?}; the settings are zone, target and ttl"
                    )))
                }
            }
        }
        let zone = zone.filter(|z| !z.is_empty()).ok_or_else(|| {
            bad("no zone: add ?zone=ZONE, the zone the server lets berth update".into())
        })?;
        Name::from_ascii(&zone).map_err(|e| bad(format!("zone {zone:?}: {e}")))?;
        if targets.is_empty() {
            return Err(bad("no target: add &target=ADDRESS (A/AAAA records) or &target=HOST (a CNAME), what app names point at".into()));
        }
        let ips: Vec<IpAddr> = targets.iter().filter_map(|t| t.parse().ok()).collect();
        let target = if ips.len() == targets.len() {
            DnsTarget::Addresses(ips)
        } else if targets.len() == 1 && ips.is_empty() {
            let host = normal_name(&targets[0]);
            berth_core::domains::normalize_domain(&host)
                .map_err(|e| bad(format!("target: {e}")))?;
            DnsTarget::Alias(host)
        } else {
            return Err(bad(
                "targets are either addresses or one host name (a CNAME cannot sit beside other records)".into(),
            ));
        };
        Ok(Self {
            server,
            zone,
            target,
            ttl,
            key: None,
        })
    }

    /// Whether `name` lies in the zone (and is not its apex, which holds the SOA).
    pub fn covers(&self, name: &str) -> bool {
        let name = normal_name(name);
        name.len() > self.zone.len() + 1
            && name.ends_with(&self.zone)
            && name.as_bytes()[name.len() - self.zone.len() - 1] == b'.'
    }

    /// The records `name` gets, as `TYPE value` strings (for display).
    pub fn describe(&self) -> Vec<String> {
        match &self.target {
            DnsTarget::Addresses(ips) => ips
                .iter()
                .map(|ip| match ip {
                    IpAddr::V4(a) => format!("A {a}"),
                    IpAddr::V6(a) => format!("AAAA {a}"),
                })
                .collect(),
            DnsTarget::Alias(host) => vec![format!("CNAME {host}.")],
        }
    }
}

/// Sends signed updates to the zone's server.
#[derive(Debug, Clone)]
pub struct DnsUpdater {
    settings: DnsSettings,
}

/// The record types berth manages at a name.
const MANAGED: [RecordType; 3] = [RecordType::A, RecordType::AAAA, RecordType::CNAME];

impl DnsUpdater {
    pub fn new(settings: DnsSettings) -> Result<Self, DnsError> {
        if let Some(k) = &settings.key {
            k.signer()?;
        }
        Ok(Self { settings })
    }

    pub fn settings(&self) -> &DnsSettings {
        &self.settings
    }

    fn fqdn(&self, name: &str) -> Result<(Name, Name), DnsError> {
        if !self.settings.covers(name) {
            return Err(DnsError::NotInZone {
                name: name.to_string(),
                zone: self.settings.zone.clone(),
            });
        }
        let parse = |s: &str| {
            Name::from_ascii(format!("{s}.")).map_err(|e| DnsError::NotInZone {
                name: format!("{s} ({e})"),
                zone: self.settings.zone.clone(),
            })
        };
        Ok((parse(&normal_name(name))?, parse(&self.settings.zone)?))
    }

    fn message(&self, zone: Name) -> Message {
        let mut query = Query::new();
        query
            .set_name(zone)
            .set_query_class(DNSClass::IN)
            .set_query_type(RecordType::SOA);
        let mut message = Message::new();
        message
            .set_id(rand::random())
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Update)
            .set_recursion_desired(false);
        message.add_zone(query);
        message
    }

    fn delete_managed(message: &mut Message, name: &Name) {
        for rtype in MANAGED {
            let mut r = Record::update0(name.clone(), 0, rtype);
            r.set_dns_class(DNSClass::ANY);
            message.add_update(r);
        }
    }

    /// Points `name` at the target. `claim`: berth has not published it before, so the
    /// update only applies if the name holds no records at all.
    pub async fn publish(&self, name: &str, claim: bool) -> Result<(), DnsError> {
        let (fqdn, zone) = self.fqdn(name)?;
        let mut message = self.message(zone);
        if claim {
            // RFC 2136 2.4.5: "Name Is Not In Use" — class NONE, type ANY.
            let mut pre = Record::update0(fqdn.clone(), 0, RecordType::ANY);
            pre.set_dns_class(DNSClass::NONE);
            message.add_pre_requisite(pre);
        }
        Self::delete_managed(&mut message, &fqdn);
        let ttl = self.settings.ttl;
        match &self.settings.target {
            DnsTarget::Addresses(ips) => {
                for ip in ips {
                    let data = match ip {
                        IpAddr::V4(a) => RData::A(A(*a)),
                        IpAddr::V6(a) => RData::AAAA(AAAA(*a)),
                    };
                    message.add_update(Record::from_rdata(fqdn.clone(), ttl, data));
                }
            }
            DnsTarget::Alias(host) => {
                let target = Name::from_str(&format!("{host}."))
                    .map_err(|e| DnsError::Settings(format!("target {host}: {e}")))?;
                message.add_update(Record::from_rdata(
                    fqdn.clone(),
                    ttl,
                    RData::CNAME(CNAME(target)),
                ));
            }
        }
        self.send(name, message).await
    }

    /// Removes the records berth published at `name`.
    pub async fn withdraw(&self, name: &str) -> Result<(), DnsError> {
        let (fqdn, zone) = self.fqdn(name)?;
        let mut message = self.message(zone);
        Self::delete_managed(&mut message, &fqdn);
        self.send(name, message).await
    }

    async fn send(&self, name: &str, message: Message) -> Result<(), DnsError> {
        let server = self.settings.server.clone();
        let unreachable = |m: String| DnsError::Unreachable {
            server: server.clone(),
            message: m,
        };
        let addr = tokio::net::lookup_host(&server)
            .await
            .map_err(|e| unreachable(format!("cannot resolve it: {e}")))?
            .next()
            .ok_or_else(|| unreachable("it resolves to no address".into()))?;
        let signer = match &self.settings.key {
            Some(k) => Some(Arc::new(k.signer()?) as Arc<_>),
            None => None,
        };
        let (stream, handle) = TcpClientStream::new(
            addr,
            None,
            Some(UPDATE_TIMEOUT),
            TokioRuntimeProvider::default(),
        );
        let exchange = async {
            let (client, background) =
                Client::with_timeout(stream, handle, UPDATE_TIMEOUT, signer).await?;
            let task = tokio::spawn(background);
            let answer = {
                use futures_util::StreamExt;
                let mut responses = client.send(message);
                responses.next().await
            };
            task.abort();
            answer.unwrap_or_else(|| {
                Err(hickory_client::proto::ProtoError::from(
                    "the connection closed without an answer",
                ))
            })
        };
        let response = tokio::time::timeout(UPDATE_TIMEOUT * 2, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer in {}s", UPDATE_TIMEOUT.as_secs() * 2)))?
            .map_err(|e| refusal_from_error(&server, name, e))?;
        match response.response_code() {
            ResponseCode::NoError => Ok(()),
            code => Err(DnsError::Refused {
                server,
                name: name.to_string(),
                code: mnemonic(code),
                why: explain(code),
            }),
        }
    }
}

/// hickory reports an answer whose signature it cannot check as an error, not a message:
/// a server that refuses the request's TSIG (BADSIG, BADKEY, BADTIME) answers NOTAUTH with
/// an empty MAC, which hickory calls a "truncated HMAC".
fn refusal_from_error(server: &str, name: &str, e: hickory_client::proto::ProtoError) -> DnsError {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("hmac") || lower.contains("tsig") {
        return DnsError::Refused {
            server: server.to_string(),
            name: name.to_string(),
            code: "NOTAUTH".into(),
            why: explain(ResponseCode::NotAuth),
        };
    }
    for code in [
        ResponseCode::NotAuth,
        ResponseCode::Refused,
        ResponseCode::NotZone,
    ] {
        if text.contains(&code.to_string()) {
            return DnsError::Refused {
                server: server.to_string(),
                name: name.to_string(),
                code: mnemonic(code),
                why: explain(code),
            };
        }
    }
    DnsError::Unreachable {
        server: server.to_string(),
        message: text,
    }
}

/// A response code as DNS tools print it (`dig`, `nsupdate`).
fn mnemonic(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::YXDomain => "YXDOMAIN".into(),
        ResponseCode::YXRRSet => "YXRRSET".into(),
        ResponseCode::NXRRSet => "NXRRSET".into(),
        ResponseCode::NotAuth => "NOTAUTH".into(),
        ResponseCode::NotZone => "NOTZONE".into(),
        other => format!("code {}", u16::from(other)),
    }
}

fn explain(code: ResponseCode) -> &'static str {
    match code {
        ResponseCode::YXDomain => {
            "the name already holds records berth did not create; remove them from the zone or use another name"
        }
        ResponseCode::NotAuth => {
            "the server did not accept berth's TSIG signature: an unknown key name, a wrong secret or algorithm, or clocks more than 5 minutes apart; check --dns-tsig-key against the server's key"
        }
        ResponseCode::Refused => {
            "the server's policy does not let this key update the zone; allow updates for the key (an update ACL)"
        }
        ResponseCode::NotZone => "the name is outside the zone the server holds",
        ResponseCode::ServFail => "the server failed; see its log",
        _ => "see the server's log",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_parsed_with_defaults() {
        let s = DnsSettings::parse(
            "rfc2136://127.0.0.1:5353?zone=Example.TEST.&target=203.0.113.10&target=2001:db8::1",
        )
        .unwrap();
        assert_eq!(s.server, "127.0.0.1:5353");
        assert_eq!(s.zone, "example.test");
        assert_eq!(s.ttl, DEFAULT_TTL);
        assert_eq!(s.describe(), ["A 203.0.113.10", "AAAA 2001:db8::1"]);
        let s = DnsSettings::parse(
            "rfc2136://ns1.example.net?zone=example.test&target=lb.example.net&ttl=300",
        )
        .unwrap();
        assert_eq!(s.server, "ns1.example.net:53");
        assert_eq!(s.ttl, 300);
        assert_eq!(s.target, DnsTarget::Alias("lb.example.net".into()));
        let s =
            DnsSettings::parse("rfc2136://[2001:db8::53]:5353?zone=example.test&target=192.0.2.1")
                .unwrap();
        assert_eq!(s.server, "[2001:db8::53]:5353");
        let s =
            DnsSettings::parse("rfc2136://192.0.2.53?zone=example.test&target=192.0.2.1").unwrap();
        assert_eq!(s.server, "192.0.2.53:53");
    }

    #[test]
    fn bad_settings_name_the_problem() {
        for (bad, why) in [
            (
                "dns://127.0.0.1?zone=a.test&target=192.0.2.1",
                "only rfc2136://",
            ),
            ("rfc2136://?zone=a.test&target=192.0.2.1", "no server"),
            ("rfc2136://127.0.0.1?target=192.0.2.1", "no zone"),
            ("rfc2136://127.0.0.1?zone=a.test", "no target"),
            (
                "rfc2136://127.0.0.1?zone=a.test&target=192.0.2.1&tll=5",
                "unknown setting \"tll\"",
            ),
            (
                "rfc2136://127.0.0.1?zone=a.test&target=192.0.2.1&ttl=0",
                "ttl",
            ),
            (
                "rfc2136://127.0.0.1?zone=a.test&target=192.0.2.1&target=lb.a.test",
                "either addresses",
            ),
            ("rfc2136://127.0.0.1?zone=a.test&target=bad_host!", "target"),
        ] {
            let e = DnsSettings::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn names_are_covered_only_inside_the_zone() {
        let s =
            DnsSettings::parse("rfc2136://127.0.0.1?zone=example.test&target=192.0.2.1").unwrap();
        assert!(s.covers("shop.example.test"));
        assert!(s.covers("a.b.Example.Test."));
        assert!(!s.covers("example.test"));
        assert!(!s.covers("badexample.test"));
        assert!(!s.covers("shop.example.org"));
    }

    #[test]
    fn tsig_keys_are_parsed_and_bad_ones_refused() {
        let k = TsigKey::parse("hmac-sha512:berth-key:c2VjcmV0").unwrap();
        assert_eq!(
            (k.algorithm.as_str(), k.name.as_str()),
            ("hmac-sha512", "berth-key")
        );
        assert_eq!(&k.secret[..], b"secret");
        let k = TsigKey::parse("berth:c2VjcmV0").unwrap();
        assert_eq!(k.algorithm, "hmac-sha256");
        assert!(!format!("{k:?}").contains("c2VjcmV0"));
        let bind = "key \"berth\" {\n\talgorithm hmac-sha512;\n\tsecret \"c2VjcmV0\";\n};\n";
        let k = TsigKey::from_file_text(bind).unwrap();
        assert_eq!(
            (k.algorithm.as_str(), k.name.as_str()),
            ("hmac-sha512", "berth")
        );
        let knot = "# hmac-sha256:berth:c2VjcmV0\nkey:\n  - id: berth\n    algorithm: hmac-sha256\n    secret: c2VjcmV0\n";
        let k = TsigKey::from_file_text(knot).unwrap();
        assert_eq!(
            (k.algorithm.as_str(), &k.secret[..]),
            ("hmac-sha256", &b"secret"[..])
        );
        assert_eq!(
            TsigKey::from_file_text("berth:c2VjcmV0\n").unwrap().name,
            "berth"
        );
        assert!(TsigKey::from_file_text("key { }")
            .unwrap_err()
            .to_string()
            .contains("no key"));
        for (bad, why) in [
            ("justone", "[ALGORITHM:]NAME:SECRET"),
            ("hmac-md5:berth:c2VjcmV0", "not supported"),
            ("berth:***", "not base64"),
            ("berth:", "empty"),
        ] {
            let e = TsigKey::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}

//! Credentials for OCI registries berth pushes to: a user name and a password (or token)
//! per registry host, kept sealed like secrets; only the host and user name ever come out.

use serde::{Deserialize, Serialize};

/// Body of `POST /v1/registries` (`berth registry login`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryLogin {
    /// `host[:port]`, as in the registry address.
    #[schema(pattern = "^[a-z0-9.-]+(:[0-9]{1,5})?$")]
    pub host: String,
    pub username: String,
    /// Password or access token; sealed at once, never shown again.
    pub password: String,
    /// Who may use them: `platform` (every project; the default), `tenant:NAME` or
    /// `project:NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// Whose deploys may use a registry credential.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RegistryScope {
    /// Every project's.
    Platform,
    /// The projects of one tenant.
    Tenant(String),
    /// One project's.
    Project(String),
}

impl RegistryScope {
    /// Reads `platform`, `tenant:NAME` or `project:NAME`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let named = |name: &str| {
            crate::projects::check_project_name(name)
                .map(|()| name.to_string())
                .map_err(|e| format!("registry scope {text:?}: {e}"))
        };
        match text.split_once(':') {
            None if text == "platform" => Ok(Self::Platform),
            Some(("tenant", name)) => named(name).map(Self::Tenant),
            Some(("project", name)) => named(name).map(Self::Project),
            _ => Err(format!(
                "{text:?} is not a registry scope: use platform, tenant:NAME or project:NAME"
            )),
        }
    }

    /// As stored and shown.
    pub fn as_text(&self) -> String {
        match self {
            Self::Platform => "platform".into(),
            Self::Tenant(t) => format!("tenant:{t}"),
            Self::Project(p) => format!("project:{p}"),
        }
    }
}

impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLogin")
            .field("host", &self.host)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A registry berth holds credentials for (never the password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegistryView {
    pub host: String,
    /// `platform`, `tenant:NAME` or `project:NAME`.
    pub scope: String,
    pub username: String,
    pub created_at: i64,
    pub created_by: String,
}

/// Checks a login: a registry host (`host[:port]`, lowercase), a user name and a password
/// of sane sizes.
pub fn check_login(login: &RegistryLogin) -> Result<(), String> {
    if let Some(scope) = &login.scope {
        RegistryScope::parse(scope)?;
    }
    let (name, port) = match login.host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (login.host.as_str(), None),
    };
    let host_ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    if !host_ok {
        return Err(format!(
            "{:?} is not a registry host: give HOST or HOST:PORT, e.g. registry.example.com",
            login.host
        ));
    }
    if login.username.is_empty()
        || login.username.len() > 256
        || login.username.contains(':')
        || login.username.chars().any(char::is_control)
    {
        return Err(
            "the user name must be 1-256 characters, without ':' or control characters".into(),
        );
    }
    if login.password.is_empty() || login.password.len() > 4096 {
        return Err("the password must be 1-4096 bytes".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_the_platform_a_tenant_or_a_project() {
        assert_eq!(
            RegistryScope::parse("platform"),
            Ok(RegistryScope::Platform)
        );
        assert_eq!(
            RegistryScope::parse("project:shop"),
            Ok(RegistryScope::Project("shop".into()))
        );
        assert_eq!(
            RegistryScope::parse("tenant:acme").map(|s| s.as_text()),
            Ok("tenant:acme".into())
        );
        for bad in [
            "",
            "project:",
            "project:Shop",
            "team:x",
            "tenant:a:b",
            "platform:x",
        ] {
            assert!(RegistryScope::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn logins_name_a_host_and_never_print_the_password() {
        let mut l = RegistryLogin {
            host: "127.0.0.1:5000".into(),
            username: "ci".into(),
            password: "hunter2-hunter2".into(),
            scope: None,
        };
        assert!(check_login(&l).is_ok());
        assert!(!format!("{l:?}").contains("hunter2"));
        for bad in ["", "Registry.io", "a b", "host:0", "host:99999", "x/y"] {
            l.host = bad.into();
            assert!(check_login(&l).is_err(), "{bad}");
        }
    }
}

/// A reference to an image in a registry (`[HOST[:PORT]/]PATH[:TAG][@sha256:…]`), read the
/// way Docker reads it: no host means Docker Hub, a one-word path there is `library/…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    /// `host[:port]`.
    pub registry: String,
    /// `team/app`.
    pub repository: String,
    /// The tag, when given (`latest` when neither tag nor digest is).
    pub tag: Option<String>,
    /// `sha256:…`, when pinned.
    pub digest: Option<String>,
}

impl ImageReference {
    /// The reference as skopeo takes it (`host/path:tag`, `host/path@digest`).
    pub fn whole(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => format!("{}/{}@{d}", self.registry, self.repository),
            (None, Some(t)) => format!("{}/{}:{t}", self.registry, self.repository),
            (None, None) => format!("{}/{}:latest", self.registry, self.repository),
        }
    }

    /// The same image pinned to `digest`.
    pub fn pinned(&self, digest: &str) -> String {
        format!("{}/{}@{digest}", self.registry, self.repository)
    }

    /// The last path component (`app` of `team/app`), a default app name.
    pub fn name(&self) -> &str {
        self.repository
            .rsplit('/')
            .next()
            .unwrap_or(&self.repository)
    }

    /// Whether the registry is on this machine's loopback, which is spoken to without TLS
    /// (as Docker does).
    pub fn on_loopback(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
            _ => self.registry.as_str(),
        };
        host == "localhost" || host.starts_with("127.") || host == "[::1]"
    }
}

/// Reads an image reference; the error says what is wrong with it.
pub fn parse_reference(text: &str) -> Result<ImageReference, String> {
    let bad = |why: &str| format!("{text:?} is not an image reference: {why}");
    if text.is_empty() || text.len() > 512 || text.chars().any(|c| c.is_whitespace()) {
        return Err(bad(
            "give HOST/PATH:TAG, e.g. registry.example.com/team/app:1.4",
        ));
    }
    if text.contains("://") {
        return Err(bad("leave out the scheme (no http:// or docker://)"));
    }
    let (rest, digest) = match text.split_once('@') {
        Some((r, d)) => {
            let ok = d.strip_prefix("sha256:").is_some_and(|h| {
                h.len() == 64 && h.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
            });
            if !ok {
                return Err(bad("a digest is sha256: and 64 lowercase hex digits"));
            }
            (r, Some(d.to_string()))
        }
        None => (text, None),
    };
    // A tag follows the last ':' after the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (
            &rest[..last_slash + i],
            Some(rest[last_slash + i + 1..].to_string()),
        ),
        None => (rest, None),
    };
    if let Some(t) = &tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && !t.starts_with(['.', '-'])
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return Err(bad(
                "a tag is letters, digits, '_', '.' and '-' (at most 128)",
            ));
        }
    }
    let (registry, path) = match name.split_once('/') {
        Some((first, path))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), path.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    let registry_ok = registry
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-:[]".contains(c));
    if !registry_ok {
        return Err(bad(
            "the registry host is lowercase letters, digits, '.', '-' and a :PORT",
        ));
    }
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
            && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
    };
    if !path.split('/').all(component_ok) {
        return Err(bad(
            "the path is lowercase letters, digits and '.', '_', '-' between '/'",
        ));
    }
    let repository = if registry == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    Ok(ImageReference {
        registry,
        repository,
        tag,
        digest,
    })
}

/// The OCI name of this machine's CPU architecture (`amd64`, `arm64`, …).
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

#[cfg(test)]
mod reference_tests {
    use super::*;

    #[test]
    fn references_are_read_like_docker_reads_them() {
        let r = parse_reference("127.0.0.1:5000/team/web:1.4").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "team/web", Some("1.4"))
        );
        assert!(r.on_loopback());
        assert_eq!(r.name(), "web");
        assert_eq!(r.whole(), "127.0.0.1:5000/team/web:1.4");
        let r = parse_reference("debian").unwrap();
        assert_eq!(r.whole(), "docker.io/library/debian:latest");
        assert!(!r.on_loopback());
        let d = format!("sha256:{}", "a".repeat(64));
        let r = parse_reference(&format!("localhost/x@{d}")).unwrap();
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.whole(), format!("localhost/x@{d}"));
        for bad in [
            "",
            "docker://x/y",
            "Upper/Case",
            "x:",
            "x@sha256:12",
            "a b",
            "reg.io/-bad",
            "reg.io/x:-t",
        ] {
            assert!(parse_reference(bad).is_err(), "{bad}");
        }
    }
}

//! How much an app is trusted: its isolation level, whom it may talk to on the network and
//! which capabilities it may hold. Plain data plus validation; the runtime and the network
//! plane enforce it.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// How an app's containers are isolated from the host (ordered: `Trusted` < `Sandbox`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    Default,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Linux containers (crun): namespaces, cgroups, seccomp, no capabilities.
    #[default]
    Trusted,
    /// gVisor (runsc): the app talks to a user-space kernel, never to the host's.
    Sandbox,
}

impl Isolation {
    /// The stable name used in files, the API and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trusted => "trusted",
            Self::Sandbox => "sandbox",
        }
    }

    /// Parses a level, naming the accepted ones on error.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "trusted" => Ok(Self::Trusted),
            "sandbox" => Ok(Self::Sandbox),
            other => Err(format!(
                "unknown isolation level {other:?}; use \"trusted\" (crun) or \"sandbox\" (gVisor)"
            )),
        }
    }
}

/// What an app may reach outside its own network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
pub struct NetworkPolicy {
    /// Apps this app may open connections to (by name). Others are unreachable.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Egress mode.
    #[serde(default)]
    pub egress: EgressMode,
    /// Destinations allowed in [`EgressMode::Allowlist`] mode.
    #[serde(default)]
    pub egress_allow: Vec<EgressRule>,
    /// Apps of other projects (`PROJECT/APP`) whose `allow` may reach this app. Apps of
    /// the app's own project need no mention.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accept_from: Vec<String>,
}

impl NetworkPolicy {
    /// Whether app `caller` of project `project` may reach an app of `own_project` with
    /// this policy: the same project, or named in `accept_from`.
    pub fn accepts(&self, own_project: &str, project: &str, caller: &str) -> bool {
        own_project == project
            || self
                .accept_from
                .iter()
                .any(|a| a.split_once('/') == Some((project, caller)))
    }
}

/// How egress beyond berth's bridge is filtered. The blocklist (cloud metadata, SMTP, the
/// host itself) applies in every mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EgressMode {
    /// Anything but the blocklist.
    #[default]
    Open,
    /// Only the destinations in `egress_allow`.
    Allowlist,
    /// Nothing beyond the bridge.
    None,
}

impl EgressMode {
    /// Parses a mode, naming the accepted ones on error.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "open" => Ok(Self::Open),
            "allowlist" => Ok(Self::Allowlist),
            "none" => Ok(Self::None),
            other => Err(format!(
                "unknown egress mode {other:?}; use \"open\", \"allowlist\" or \"none\""
            )),
        }
    }
}

/// One allowed egress destination: an IPv4 network and optionally one TCP/UDP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EgressRule {
    /// Network address.
    #[schema(value_type = String, format = Ipv4)]
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Port, or any.
    pub port: Option<u16>,
}

impl EgressRule {
    /// Parses `ADDR`, `ADDR/PREFIX`, `ADDR:PORT` or `ADDR/PREFIX:PORT`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{text:?} is not an egress destination; write \"203.0.113.0/24\" or \"198.51.100.7:443\""
            )
        };
        let (net, port) = match text.rsplit_once(':') {
            Some((n, p)) => (n, Some(p.parse::<u16>().map_err(|_| bad())?)),
            None => (text, None),
        };
        let (addr, prefix) = match net.split_once('/') {
            Some((a, p)) => (a, p.parse::<u8>().map_err(|_| bad())?),
            None => (net, 32),
        };
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        if prefix > 32 || port == Some(0) {
            return Err(bad());
        }
        Ok(Self { addr, prefix, port })
    }

    /// The rule as nftables writes a destination (`203.0.113.0/24`).
    pub fn network(&self) -> String {
        format!("{}/{}", self.addr, self.prefix)
    }
}

impl std::fmt::Display for EgressRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// Capabilities a trusted app may ask to keep (everything else is always dropped).
pub const GRANTABLE_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_SYS_CHROOT",
];

/// Normalises a capability name (`net_bind_service` → `CAP_NET_BIND_SERVICE`) and checks
/// that apps may hold it.
pub fn parse_capability(text: &str) -> Result<String, String> {
    let upper = text.trim().to_ascii_uppercase();
    let name = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if GRANTABLE_CAPABILITIES.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(format!(
            "{text:?} cannot be granted to apps; grantable: {}",
            GRANTABLE_CAPABILITIES.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_of_other_projects_are_accepted_only_when_named_with_their_project() {
        let policy = NetworkPolicy {
            accept_from: vec!["front/web".into()],
            ..NetworkPolicy::default()
        };
        assert!(policy.accepts("back", "back", "anyone"));
        assert!(policy.accepts("back", "front", "web"));
        assert!(!policy.accepts("back", "front", "admin"));
        assert!(!policy.accepts("back", "other", "web"));
        assert!(!NetworkPolicy::default().accepts("back", "front", "web"));
    }

    #[test]
    fn isolation_levels_parse_and_name_the_choices() {
        assert_eq!(Isolation::parse("sandbox").unwrap(), Isolation::Sandbox);
        let e = Isolation::parse("vm").unwrap_err();
        assert!(e.contains("trusted") && e.contains("sandbox"), "{e}");
    }

    #[test]
    fn egress_rules_parse() {
        let r = EgressRule::parse("203.0.113.0/24:443").unwrap();
        assert_eq!(r.network(), "203.0.113.0/24");
        assert_eq!(r.port, Some(443));
        assert_eq!(EgressRule::parse("198.51.100.7").unwrap().prefix, 32);
        assert!(EgressRule::parse("example.com").is_err());
        assert!(EgressRule::parse("1.2.3.4/40").is_err());
        assert!(EgressRule::parse("1.2.3.4:0").is_err());
        assert_eq!(
            EgressRule::parse("1.2.3.4:80").unwrap().to_string(),
            "1.2.3.4/32:80"
        );
    }

    #[test]
    fn only_harmless_capabilities_are_grantable() {
        assert_eq!(
            parse_capability("net_bind_service").unwrap(),
            "CAP_NET_BIND_SERVICE"
        );
        assert!(parse_capability("CAP_SYS_ADMIN").is_err());
        assert!(parse_capability("sys_ptrace").is_err());
    }
}

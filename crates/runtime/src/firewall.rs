//! berth's network policy, enforced with nftables on the host (Debian package `nftables`).
//!
//! Every app port on berth's bridge is *isolated* (no frame goes from one app straight to
//! another) and the bridge answers ARP for the whole subnet (proxy ARP, private-VLAN
//! style), so traffic between apps is routed through the host, where it meets conntrack and
//! the rules below:
//!
//! - app → app: denied unless the source app lists the target in `[network] allow`;
//! - app → host: denied (the host's own addresses, berth's API, anything listening on it);
//!   the host (edge, health checks) → app is always allowed;
//! - app → beyond the bridge: the blocklist (cloud metadata addresses, SMTP ports 25/465/587,
//!   IPv6) always applies; then `open` apps go anywhere (masqueraded), `allowlist` apps only
//!   to their listed destinations, `none` apps nowhere.
//!
//! The whole table is replaced atomically on every change (`nft -f`), one table per berth
//! bridge so several platforms on one machine do not touch each other's rules.

use crate::network::Subnet;
use crate::RuntimeError;
use berth_core::policy::{EgressMode, EgressRule};
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// Addresses apps may never reach: cloud metadata services.
pub const METADATA_V4: &[&str] = &["169.254.169.254", "169.254.170.2", "100.100.100.200"];
/// The IPv6 metadata address (apps get no IPv6 route at all; listed for the record).
pub const METADATA_V6: &str = "fd00:ec2::254";
/// Mail submission and relay ports apps may never reach.
pub const SMTP_PORTS: &[u16] = &[25, 465, 587];

/// One app as the firewall sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRules {
    /// App name.
    pub name: String,
    /// Addresses of all its instances (every release that still runs).
    pub addresses: Vec<Ipv4Addr>,
    /// Apps it may connect to.
    pub allow: Vec<String>,
    /// Egress mode.
    pub egress: EgressMode,
    /// Allowed destinations in allowlist mode.
    pub egress_allow: Vec<EgressRule>,
    /// Whether it may reach the platform's database server (it has a database there).
    pub database: bool,
    /// Whether these are a build's addresses: they reach the build proxy on the host and
    /// nothing else (no other app, no egress of their own).
    pub build: bool,
}

/// The nftables rules of one berth bridge.
#[derive(Debug, Clone)]
pub struct Firewall {
    bridge: String,
    subnet: Subnet,
    /// The platform's database server on the host, which apps with a database may reach.
    database: Option<(Ipv4Addr, u16)>,
    /// The build proxy on the host, which builds reach (and nothing else).
    build_proxy: Option<(Ipv4Addr, u16)>,
    /// IPv4 ranges no app reaches (`--egress-block`), as nftables writes them.
    egress_block: Vec<String>,
}

impl Firewall {
    /// The firewall of `bridge` with instance subnet `subnet`.
    pub fn new(bridge: impl Into<String>, subnet: Subnet) -> Self {
        Self {
            bridge: bridge.into(),
            subnet,
            database: None,
            build_proxy: None,
            egress_block: Vec::new(),
        }
    }

    /// Refuses apps every connection to `ranges` (IPv4 `a.b.c.d/n`; the bridge carries no
    /// IPv6 at all).
    pub fn with_egress_block(mut self, ranges: Vec<String>) -> Self {
        self.egress_block = ranges;
        self
    }

    /// Lets builds reach the build proxy at `address:port` on the host.
    pub fn with_build_proxy(mut self, address: Ipv4Addr, port: u16) -> Self {
        self.build_proxy = Some((address, port));
        self
    }

    /// Lets apps with a database reach the database server at `address:port` on the host.
    pub fn with_database(mut self, address: Ipv4Addr, port: u16) -> Self {
        self.database = Some((address, port));
        self
    }

    /// The nftables table name.
    pub fn table(&self) -> String {
        format!("berth_{}", self.bridge.replace('-', "_"))
    }

    /// Checks that `nft` is installed.
    pub fn preflight() -> Result<(), RuntimeError> {
        match Command::new("nft").arg("--version").output() {
            Ok(o) if o.status.success() => Ok(()),
            _ => Err(RuntimeError::MissingBinary {
                binary: "nft",
                package: "nftables",
            }),
        }
    }

    /// The complete nftables script for `apps`: replaces the table atomically.
    pub fn render(&self, apps: &[AppRules]) -> String {
        let t = self.table();
        let br = &self.bridge;
        let net = self.subnet.to_string();
        let mut s = String::new();
        let set = |addrs: &[Ipv4Addr]| {
            let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
            format!("{{ {} }}", list.join(", "))
        };
        s.push_str(&format!(
            "table inet {t}\ndelete table inet {t}\ntable inet {t} {{\n"
        ));
        // How every denial answers: a TCP reset (every network stack, gVisor's included,
        // turns it into an immediate "connection refused"), else ICMP "administratively
        // prohibited". Never a silent drop, which leaves apps waiting for a timeout.
        s.push_str(
            "  chain deny {\n    meta l4proto tcp reject with tcp reset\n    \
             reject with icmpx type admin-prohibited\n  }\n",
        );
        s.push_str(&format!(
            "  chain input {{\n    type filter hook input priority filter; policy accept;\n    \
             iifname \"{br}\" ct state established,related accept\n"
        ));
        // The host is closed to apps, but for the database server to those with a database,
        // and the build proxy to builds (it connects for them by host name).
        let services = [
            (
                self.database,
                "databases",
                (|a: &AppRules| a.database) as fn(&AppRules) -> bool,
            ),
            (self.build_proxy, "builds -> build proxy", |a: &AppRules| {
                a.build
            }),
        ];
        for (service, comment, admitted) in services {
            let Some((addr, port)) = service else {
                continue;
            };
            let from: Vec<Ipv4Addr> = apps
                .iter()
                .filter(|a| admitted(a))
                .flat_map(|a| a.addresses.iter().copied())
                .collect();
            if !from.is_empty() {
                s.push_str(&format!(
                    "    iifname \"{br}\" ip saddr {} ip daddr {addr} tcp dport {port} accept comment \"{comment}\"\n",
                    set(&from)
                ));
            }
        }
        s.push_str(&format!("    iifname \"{br}\" jump deny\n  }}\n"));
        s.push_str(&format!(
            "  chain forward {{\n    type filter hook forward priority filter; policy accept;\n    \
             ct state established,related accept\n    \
             iifname \"{br}\" meta nfproto ipv6 jump deny\n"
        ));
        // App to app.
        for app in apps.iter().filter(|a| !a.addresses.is_empty() && !a.build) {
            for other in &app.allow {
                if let Some(target) = apps
                    .iter()
                    .find(|a| &a.name == other && !a.addresses.is_empty() && !a.build)
                {
                    s.push_str(&format!(
                        "    iifname \"{br}\" oifname \"{br}\" ip saddr {} ip daddr {} accept comment \"{} -> {}\"\n",
                        set(&app.addresses),
                        set(&target.addresses),
                        app.name,
                        target.name
                    ));
                }
            }
        }
        s.push_str(&format!("    oifname \"{br}\" ip daddr {net} jump deny\n"));
        // Egress blocklist.
        s.push_str(&format!(
            "    iifname \"{br}\" ip daddr {{ {} }} jump deny comment \"cloud metadata\"\n",
            METADATA_V4.join(", ")
        ));
        if !self.egress_block.is_empty() {
            s.push_str(&format!(
                "    iifname \"{br}\" ip daddr {{ {} }} jump deny comment \"egress block\"\n",
                self.egress_block.join(", ")
            ));
        }
        let smtp: Vec<String> = SMTP_PORTS.iter().map(u16::to_string).collect();
        s.push_str(&format!(
            "    iifname \"{br}\" meta l4proto {{ tcp, udp }} th dport {{ {} }} jump deny comment \"smtp\"\n",
            smtp.join(", ")
        ));
        // Per-app egress modes; a build has none of its own (it goes through the proxy).
        for app in apps.iter().filter(|a| !a.addresses.is_empty()) {
            if app.build {
                s.push_str(&format!(
                    "    iifname \"{br}\" ip saddr {} jump deny comment \"{}: a build, through the proxy only\"\n",
                    set(&app.addresses),
                    app.name
                ));
                continue;
            }
            match app.egress {
                EgressMode::Open => {}
                EgressMode::None => s.push_str(&format!(
                    "    iifname \"{br}\" ip saddr {} jump deny comment \"{}: egress none\"\n",
                    set(&app.addresses),
                    app.name
                )),
                EgressMode::Allowlist => {
                    for rule in &app.egress_allow {
                        let port = rule
                            .port
                            .map(|p| format!(" meta l4proto {{ tcp, udp }} th dport {p}"))
                            .unwrap_or_default();
                        s.push_str(&format!(
                            "    iifname \"{br}\" ip saddr {} ip daddr {}{port} accept comment \"{}: egress {rule}\"\n",
                            set(&app.addresses),
                            rule.network(),
                            app.name
                        ));
                    }
                    s.push_str(&format!(
                        "    iifname \"{br}\" ip saddr {} jump deny comment \"{}: egress allowlist\"\n",
                        set(&app.addresses),
                        app.name
                    ));
                }
            }
        }
        s.push_str("  }\n");
        s.push_str(&format!(
            "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    \
             ip saddr {net} oifname != \"{br}\" masquerade\n  }}\n}}\n"
        ));
        s
    }

    /// Replaces the table with the rules for `apps`.
    pub fn apply(&self, apps: &[AppRules]) -> Result<(), RuntimeError> {
        nft(&self.render(apps))
    }

    /// Removes the table. Idempotent.
    pub fn remove(&self) {
        let t = self.table();
        let _ = nft(&format!("table inet {t}\ndelete table inet {t}\n"));
    }
}

/// Runs `script` as `nft -f -` does: in this process through libnftables where it loads,
/// else with the `nft` command.
fn nft(script: &str) -> Result<(), RuntimeError> {
    match crate::nft_lib::run(script) {
        Some(Ok(())) => Ok(()),
        Some(Err(message)) => Err(RuntimeError::Network {
            command: "nft -f - (libnftables)".into(),
            message,
        }),
        None => nft_command(script),
    }
}

fn nft_command(script: &str) -> Result<(), RuntimeError> {
    let fail = |message: String| RuntimeError::Network {
        command: "nft -f -".into(),
        message,
    };
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RuntimeError::MissingBinary {
                binary: "nft",
                package: "nftables",
            },
            _ => fail(e.to_string()),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str, last: u8, allow: &[&str], egress: EgressMode) -> AppRules {
        AppRules {
            name: name.into(),
            addresses: vec![Ipv4Addr::new(10, 77, 0, last)],
            allow: allow.iter().map(|s| s.to_string()).collect(),
            egress,
            egress_allow: vec![],
            database: false,
            build: false,
        }
    }

    #[test]
    fn the_platforms_egress_block_holds_for_every_app() {
        let fw = Firewall::new("berth0", "10.77.0.0/24".parse().unwrap())
            .with_egress_block(vec!["10.20.0.0/16".into(), "192.168.0.0/16".into()]);
        let rules = fw.render(&[app("shop", 2, &[], EgressMode::Open)]);
        let block = rules
            .lines()
            .find(|l| l.contains("comment \"egress block\""))
            .expect("block rule");
        assert!(
            block.contains("ip daddr { 10.20.0.0/16, 192.168.0.0/16 } jump deny"),
            "{block}"
        );
        // Before any app's own egress accepts.
        assert!(rules.find("egress block").unwrap() < rules.find("postrouting").unwrap());
    }

    #[test]
    fn a_build_reaches_the_build_proxy_and_nothing_else() {
        let fw = Firewall::new("berth0", "10.77.0.0/24".parse().unwrap())
            .with_build_proxy(Ipv4Addr::new(10, 77, 0, 1), 41234);
        let mut build = app("build-shop-abc", 9, &["db"], EgressMode::Open);
        build.build = true;
        let rules = fw.render(&[build, app("db", 3, &[], EgressMode::Open)]);
        let proxy = rules
            .lines()
            .find(|l| l.contains("builds -> build proxy"))
            .expect("proxy rule");
        assert!(
            proxy.contains("ip saddr { 10.77.0.9 }")
                && proxy.contains("ip daddr 10.77.0.1 tcp dport 41234 accept"),
            "{proxy}"
        );
        // Its input rule comes before the input chain's deny; its forward deny before any
        // egress; it reaches no app even when named in an allow list of its own.
        let input_deny = rules.find("jump deny\n  }").expect("input deny");
        assert!(rules.find("builds -> build proxy").expect("proxy") < input_deny);
        assert!(rules.contains("ip saddr { 10.77.0.9 } jump deny comment \"build-shop-abc: a build, through the proxy only\""));
        assert!(!rules.contains("build-shop-abc -> db"), "{rules}");
        // Without a proxy, a build reaches nothing at all.
        let closed = Firewall::new("berth0", "10.77.0.0/24".parse().unwrap()).render(&[{
            let mut b = app("build-x", 9, &[], EgressMode::Open);
            b.build = true;
            b
        }]);
        assert!(!closed.contains("build proxy"));
    }

    #[test]
    fn renders_default_deny_with_the_allowed_pairs_and_the_blocklist() {
        let fw = Firewall::new("berth0", "10.77.0.0/24".parse().unwrap());
        let mut shop = app("shop", 2, &["db"], EgressMode::Allowlist);
        shop.egress_allow = vec![EgressRule::parse("203.0.113.0/24:443").unwrap()];
        let rules = fw.render(&[
            shop,
            app("db", 3, &[], EgressMode::None),
            app("idle", 4, &[], EgressMode::Open),
        ]);
        insta::assert_snapshot!(rules);
    }

    #[test]
    fn only_apps_with_a_database_reach_the_database_server() {
        let fw = Firewall::new("berth0", "10.77.0.0/24".parse().unwrap())
            .with_database(Ipv4Addr::new(10, 77, 0, 1), 5432);
        let mut shop = app("shop", 2, &[], EgressMode::Open);
        shop.database = true;
        let rules = fw.render(&[shop, app("blog", 3, &[], EgressMode::Open)]);
        let accept = rules
            .lines()
            .find(|l| l.contains("comment \"databases\""))
            .expect("database rule");
        assert!(accept.contains("ip saddr { 10.77.0.2 }"), "{accept}");
        assert!(
            accept.contains("ip daddr 10.77.0.1 tcp dport 5432 accept"),
            "{accept}"
        );
        // The rule comes before the host is closed to everyone else.
        let pos = |needle: &str| rules.find(needle).expect(needle);
        assert!(pos("comment \"databases\"") < pos("iifname \"berth0\" jump deny"));
        let without = Firewall::new("berth0", "10.77.0.0/24".parse().unwrap()).render(&[app(
            "blog",
            3,
            &[],
            EgressMode::Open,
        )]);
        assert!(!without.contains("5432"));
    }

    #[test]
    fn apps_without_instances_get_no_rules() {
        let fw = Firewall::new("b1", "10.1.0.0/24".parse().unwrap());
        let mut gone = app("gone", 2, &["other"], EgressMode::None);
        gone.addresses.clear();
        let rules = fw.render(&[gone]);
        assert!(!rules.contains("gone"), "{rules}");
        assert!(!rules.contains("{  }"), "{rules}");
    }
}

//! `berth status`: the platform of a data directory at a glance, read from the machine
//! itself (processes, interfaces, firewall, files) so that it answers when the control
//! plane does not.

use crate::config::PlatformConfig;
use crate::doctor::{disk, tool_version, Check, Level};
use crate::platform::EdgeProcess;
use berth_runtime::proc::ProcessIdentity;
use std::path::Path;
use std::process::Command;

/// What `berth up` recorded in `api.json` (the settings the platform runs with).
fn recorded(cfg: &PlatformConfig) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(cfg.api_info_path()).ok()?).ok()
}

fn control_plane(cfg: &PlatformConfig, info: Option<&serde_json::Value>) -> Check {
    let name = "control plane";
    match (crate::control_plane::recorded(cfg), info) {
        (Some(id), Some(info)) => {
            let url = info["url"].as_str().unwrap_or("?");
            let answers = url
                .strip_prefix("http://")
                .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                .is_some_and(|a| {
                    std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(1))
                        .is_ok()
                });
            if answers {
                Check::ok(name, format!("pid {}, API at {url}", id.pid))
            } else {
                Check::problem(
                    name,
                    Level::Fail,
                    format!("pid {} runs, but its API at {url} does not answer", id.pid),
                    "see its output; restart it (berth down, then berth up)",
                )
            }
        }
        _ => Check::problem(
            name,
            Level::Fail,
            "not running: nothing is supervised or deployed (running apps and the edge serve on without it)",
            "start it: berth up (or systemctl start berth)",
        ),
    }
}

fn edge(cfg: &PlatformConfig) -> Check {
    let name = "edge";
    match EdgeProcess::running(cfg) {
        Some(id) => {
            let generation = std::fs::read_to_string(cfg.edge_dir().join("applied"))
                .map(|g| g.trim().to_string())
                .unwrap_or_else(|_| "none".into());
            let routes = std::fs::read(cfg.edge_dir().join("routes.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<berth_edge::routes::RouteSnapshot>(&b).ok())
                .map_or(0, |s| s.routes.len());
            Check::ok(
                name,
                format!(
                    "pid {}, {routes} host name(s) routed (routes generation {generation})",
                    id.pid
                ),
            )
        }
        None => Check::problem(
            name,
            Level::Fail,
            "not running: no app is reachable",
            "berth up starts it (it adopts the running apps)",
        ),
    }
}

fn runtime(name: &str, program: &str, needed: bool) -> Check {
    match tool_version(program, "--version") {
        Some(v) => Check::ok(name, v),
        None => Check::problem(
            name,
            if needed { Level::Fail } else { Level::Warn },
            format!("{program} not found"),
            &format!("apt-get install {program}"),
        ),
    }
}

fn bridge(bridge: &str) -> Check {
    let sys = Path::new("/sys/class/net").join(bridge);
    if !sys.exists() {
        return Check::problem(
            "bridge",
            Level::Fail,
            format!("{bridge} does not exist: instances have no network"),
            "restart the platform (berth down, then berth up): the bridge is made again and the apps start on it",
        );
    }
    let mac = std::fs::read_to_string(sys.join("address")).unwrap_or_default();
    let ports = std::fs::read_dir(sys.join("brif")).map_or(0, |d| d.count());
    Check::ok(
        "bridge",
        format!("{bridge} ({}), {ports} instance port(s)", mac.trim()),
    )
}

fn firewall(bridge: &str) -> Check {
    let table = format!("berth_{}", bridge.replace('-', "_"));
    match Command::new("nft")
        .args(["list", "table", "inet", &table])
        .output()
    {
        Ok(o) if o.status.success() => {
            let rules = String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| {
                    let l = l.trim();
                    !l.is_empty() && !l.ends_with('{') && l != "}" && !l.starts_with("type ")
                })
                .count();
            Check::ok("firewall", format!("table inet {table}, {rules} rule(s)"))
        }
        _ => Check::problem(
            "firewall",
            Level::Fail,
            format!("no nftables table {table}: traffic between apps is not filtered"),
            "berth up publishes it again (run as root, with nftables installed)",
        ),
    }
}

fn database(cfg: &PlatformConfig) -> Option<Check> {
    let root = cfg.data_dir.join("postgres");
    if !root.exists() {
        return None;
    }
    let pid = std::fs::read_to_string(root.join("data").join("postmaster.pid"))
        .ok()
        .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<u32>().ok()));
    Some(
        match pid.and_then(ProcessIdentity::of).filter(|p| p.alive()) {
            Some(p) => Check::ok("database server", format!("PostgreSQL, pid {}", p.pid)),
            None => Check::problem(
                "database server",
                Level::Fail,
                "PostgreSQL is not running: apps' databases do not answer",
                "berth up starts it again",
            ),
        },
    )
}

fn certificates(cfg: &PlatformConfig) -> Option<Check> {
    let snapshot = berth_edge::certs::CertSnapshot::load(&cfg.edge_certs_file()).ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut soonest: Option<(i64, String)> = None;
    for entry in &snapshot.certs {
        if let Ok(f) = berth_edge::certs::facts(&entry.chain_pem) {
            let name = f.names.first().cloned().unwrap_or_default();
            if soonest.as_ref().is_none_or(|(t, _)| f.not_after < *t) {
                soonest = Some((f.not_after, name));
            }
        }
    }
    let count = snapshot.certs.len();
    Some(match soonest {
        None => Check::ok("certificates", "none served"),
        Some((t, name)) if t <= now => Check::problem(
            "certificates",
            Level::Fail,
            format!("{count} served; {name}'s has expired"),
            "see berth domains list; berth renews certificates while it runs",
        ),
        Some((t, name)) if t - now < 14 * 86_400 => Check::problem(
            "certificates",
            Level::Warn,
            format!(
                "{count} served; {name}'s expires in {} days",
                (t - now) / 86_400
            ),
            "berth renews in the last third of a lifetime: check that the ACME directory answers",
        ),
        Some((t, name)) => Check::ok(
            "certificates",
            format!(
                "{count} served; the first to expire is {name}'s, in {} days",
                (t - now) / 86_400
            ),
        ),
    })
}

/// The DNS records berth publishes, as the control plane last wrote them.
fn dns(cfg: &PlatformConfig) -> Option<Check> {
    let status: berth_core::domains::DnsStatus =
        serde_json::from_slice(&std::fs::read(cfg.data_dir.join("dns.json")).ok()?).ok()?;
    let name = "dns records";
    let failing: Vec<_> = status
        .names
        .iter()
        .filter(|n| n.state == "failed")
        .collect();
    let published = status
        .names
        .iter()
        .filter(|n| n.state == "published")
        .count();
    Some(match failing.first() {
        None => Check::ok(
            name,
            format!(
                "{published} of {} names published in {} at {}",
                status.names.len(),
                status.zone,
                status.server
            ),
        ),
        Some(first) => Check::problem(
            name,
            Level::Warn,
            format!(
                "{} of {} names failing (the names still answer through the edge); {}: {}",
                failing.len(),
                status.names.len(),
                first.name,
                first.error.as_deref().unwrap_or("?")
            ),
            "see berth dns; berth retries on its own",
        ),
    })
}

/// The platform of `cfg.data_dir`; `None` when no platform ever ran from it.
pub fn status(cfg: &PlatformConfig) -> Option<Vec<Check>> {
    let info = recorded(cfg)?;
    let mut cfg = cfg.clone();
    if let Some(b) = info["bridge"].as_str() {
        cfg.bridge = b.to_string();
    }
    let mut checks = vec![
        control_plane(&cfg, Some(&info)),
        edge(&cfg),
        runtime("runtime trusted", "crun", true),
        runtime("runtime sandbox", "runsc", false),
        bridge(&cfg.bridge),
        firewall(&cfg.bridge),
        disk(&cfg.data_dir),
    ];
    checks.extend(cluster(&info));
    checks.extend(database(&cfg));
    checks.extend(certificates(&cfg));
    checks.extend(dns(&cfg));
    Some(checks)
}

/// Where apps run, when it is a Kubernetes cluster (`berth up --backend kubernetes`): is
/// its API server there?
fn cluster(info: &serde_json::Value) -> Option<Check> {
    let url = info["cluster"].as_str()?;
    let name = "cluster";
    let reachable = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .map(|rest| rest.split('/').next().unwrap_or(rest))
        .and_then(|host| {
            use std::net::ToSocketAddrs;
            let with_port = if host.contains(':') {
                host.to_string()
            } else {
                format!("{host}:443")
            };
            with_port.to_socket_addrs().ok()?.next()
        })
        .is_some_and(|a| {
            std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(2)).is_ok()
        });
    Some(if reachable {
        Check::ok(
            name,
            format!("apps run in the Kubernetes cluster at {url}; `berth kube drift` compares it with what berth applied"),
        )
    } else {
        Check::problem(
            name,
            Level::Fail,
            format!("apps run in the Kubernetes cluster at {url}, which does not answer"),
            "check the API server and the kubeconfig berth up was given (--kubeconfig, --kube-context)",
        )
    })
}

//! `berth doctor`: checks a machine before berth runs on it — privileges, kernel, cgroups,
//! the runtimes and tools berth drives, the ports it listens on, disk — each problem with
//! the fix. Also the shape of every health line `berth status` prints.

use serde::Serialize;
use std::path::Path;
use std::process::Command;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    /// berth runs, without something (sandboxed apps, Dockerfile builds, databases, …).
    Warn,
    /// berth cannot run (or this part of a running platform is down).
    Fail,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "FAIL",
        }
    }
}

/// One line of a report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub level: Level,
    /// What was found.
    pub detail: String,
    /// What to do about it, when it is not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(name: &str, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            level: Level::Ok,
            detail: detail.into(),
            fix: None,
        }
    }
    pub fn problem(name: &str, level: Level, detail: impl Into<String>, fix: &str) -> Self {
        Self {
            name: name.into(),
            level,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// The first line a tool prints for `--version` (or `version`), if it runs.
pub fn tool_version(program: &str, arg: &str) -> Option<String> {
    let out = Command::new(program).arg(arg).output().ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
}

/// Free bytes on the filesystem holding `path` (or its nearest existing parent).
pub fn free_bytes(path: &Path) -> Option<u64> {
    let mut p = path;
    while !p.exists() {
        p = p.parent()?;
    }
    let s = nix::sys::statvfs::statvfs(p).ok()?;
    Some(s.blocks_available() as u64 * s.fragment_size() as u64)
}

/// Free space below which builds and backups are likely to fail.
pub const LOW_DISK: u64 = 2 << 30;
/// Free space below which berth should not start.
pub const NO_DISK: u64 = 512 << 20;

/// The disk check of `dir`.
pub fn disk(dir: &Path) -> Check {
    let name = "disk";
    match free_bytes(dir) {
        None => Check::problem(
            name,
            Level::Warn,
            format!("cannot read the free space of {}", dir.display()),
            "check that the data directory's filesystem is mounted",
        ),
        Some(free) => {
            let detail = format!("{} free for {}", human(free), dir.display());
            if free < NO_DISK {
                Check::problem(name, Level::Fail, detail, "free disk space (old images: berth releases; logs: --log-max-size) or choose another --data-dir")
            } else if free < LOW_DISK {
                Check::problem(
                    name,
                    Level::Warn,
                    detail,
                    "builds and backups need room: free some space",
                )
            } else {
                Check::ok(name, detail)
            }
        }
    }
}

/// Bytes as a person reads them.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A tool berth drives: ok with its version, else `level` with the package to install.
fn tool(name: &str, program: &str, arg: &str, level: Level, package: &str, without: &str) -> Check {
    match tool_version(program, arg) {
        Some(v) => Check::ok(name, v),
        None => Check::problem(
            name,
            level,
            format!("{program} not found{without}"),
            &format!("apt-get install {package}"),
        ),
    }
}

/// Whether something already listens on `port` (on any local address).
fn port_taken(port: u16) -> bool {
    std::net::TcpListener::bind(("0.0.0.0", port)).is_err()
}

/// Checks this machine for a platform in `data_dir` listening on `ports` (name, port).
pub fn check_host(data_dir: &Path, ports: &[(&str, u16)]) -> Vec<Check> {
    let mut checks = Vec::new();
    checks.push(if nix::unistd::geteuid().is_root() {
        Check::ok("privileges", "root")
    } else {
        Check::problem(
            "privileges",
            Level::Fail,
            "not root: berth up makes a bridge, network namespaces, cgroups and firewall rules",
            "run berth up as root (sudo berth up), or as the systemd unit",
        )
    });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let version: Vec<u32> = kernel
        .split(['.', '-'])
        .take(2)
        .filter_map(|n| n.parse().ok())
        .collect();
    checks.push(match version.as_slice() {
        [major, minor] if (*major, *minor) >= (4, 18) => Check::ok("kernel", kernel),
        _ => Check::problem(
            "kernel",
            Level::Fail,
            format!("{kernel}: berth needs Linux 4.18 or later"),
            "upgrade the kernel (Debian 12 ships 6.1)",
        ),
    });
    checks.push(if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Check::ok("cgroups", "v2 (unified)")
    } else if Path::new("/sys/fs/cgroup/memory").exists() {
        Check::ok("cgroups", "v1 or hybrid (berth fixes up what crun needs)")
    } else {
        Check::problem(
            "cgroups",
            Level::Fail,
            "no cgroup hierarchy under /sys/fs/cgroup",
            "mount cgroup2 on /sys/fs/cgroup (systemd does at boot)",
        )
    });
    checks.push(tool(
        "crun",
        "crun",
        "--version",
        Level::Fail,
        "crun",
        ": apps cannot run",
    ));
    checks.push(tool(
        "runsc",
        "runsc",
        "--version",
        Level::Warn,
        "runsc",
        ": sandboxed (gVisor) apps cannot run",
    ));
    checks.push(match tool_version("nft", "--version") {
        None => Check::problem(
            "nftables",
            Level::Fail,
            "nft not found: the network policy cannot be enforced",
            "apt-get install nftables",
        ),
        Some(v) => match Command::new("nft").args(["list", "tables"]).output() {
            Ok(o) if o.status.success() => Check::ok("nftables", v),
            _ => Check::problem(
                "nftables",
                Level::Fail,
                format!("{v}, but `nft list tables` fails"),
                "run as root; load the kernel module (modprobe nf_tables)",
            ),
        },
    });
    checks.push(tool(
        "iproute2",
        "ip",
        "-V",
        Level::Fail,
        "iproute2",
        ": no bridge or network namespaces",
    ));
    checks.push(tool(
        "buildah",
        "buildah",
        "--version",
        Level::Warn,
        "buildah uidmap",
        ": Dockerfile builds cannot run",
    ));
    checks.push(tool(
        "skopeo",
        "skopeo",
        "--version",
        Level::Warn,
        "skopeo",
        ": images cannot be pulled or pushed",
    ));
    checks.push(
        match std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|mut d| d.next())
        {
            Some(_) => Check::ok("postgresql", "server binaries in /usr/lib/postgresql"),
            None => Check::problem(
                "postgresql",
                Level::Warn,
                "no PostgreSQL server: apps cannot get a database (--database)",
                "apt-get install postgresql",
            ),
        },
    );
    let userns = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    checks.push(match userns {
        Some(n) if n > 0 => Check::ok("user namespaces", format!("up to {n}")),
        _ => Check::problem(
            "user namespaces",
            Level::Warn,
            "disabled: rootless Dockerfile builds cannot run",
            "sysctl -w user.max_user_namespaces=15000",
        ),
    });
    let running =
        crate::control_plane::recorded(&crate::config::PlatformConfig::new(data_dir.to_path_buf()));
    for (what, port) in ports {
        let name = format!("port {port}");
        checks.push(if !port_taken(*port) {
            Check::ok(&name, format!("free for the {what}"))
        } else if running.is_some() {
            Check::ok(
                &name,
                format!("in use (berth runs on {})", data_dir.display()),
            )
        } else {
            Check::problem(
                &name,
                Level::Fail,
                format!("in use by another program: the {what} cannot listen"),
                "stop that program, or choose another port (berth up --api-port/--edge-port/--edge-tls-port)",
            )
        });
    }
    checks.push(disk(data_dir));
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_read_them() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 30), "3.0 GiB");
        assert_eq!(human(1536 << 10), "1.5 MiB");
    }

    #[test]
    fn a_missing_tool_names_its_package() {
        let c = tool(
            "x",
            "berth-no-such-tool",
            "--version",
            Level::Warn,
            "pkg",
            ": no x",
        );
        assert_eq!(c.level, Level::Warn);
        assert_eq!(c.fix.as_deref(), Some("apt-get install pkg"));
        assert!(c.detail.contains("not found: no x"), "{}", c.detail);
    }

    #[test]
    fn a_taken_port_is_seen() {
        let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(port_taken(port));
        drop(l);
        assert!(!port_taken(port));
    }
}

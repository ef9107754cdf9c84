//! `berth install` / `berth uninstall`: berth as a systemd service (journald logging,
//! restarted on failure), with its shell completions and man pages.

use crate::cli::Global;
use anyhow::{bail, Context, Result};
use clap::CommandFactory;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The unit's name.
pub const UNIT: &str = "berth.service";
/// Where a system service keeps its state unless told otherwise.
pub const SERVICE_DATA_DIR: &str = "/var/lib/berth";

/// The files `berth install` writes, relative to the root.
fn files() -> [(&'static str, &'static str); 4] {
    [
        ("unit", "etc/systemd/system/berth.service"),
        ("bash", "usr/share/bash-completion/completions/berth"),
        ("zsh", "usr/share/zsh/vendor-completions/_berth"),
        ("fish", "usr/share/fish/vendor_completions.d/berth.fish"),
    ]
}
const MAN_DIR: &str = "usr/share/man/man1";

/// The unit running `berth up` for `data_dir` with `binary`.
pub fn unit(binary: &Path, data_dir: &Path) -> String {
    format!(
        "[Unit]
Description=berth application platform (control plane)
Documentation=man:berth(1) man:berth-up(1)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart={bin} --data-dir {data} up
# Stopping the control plane leaves the apps and the edge serving (they run in their own
# process groups and cgroups); `berth down` stops those.
KillMode=process
Restart=on-failure
RestartSec=2s
TimeoutStopSec=30s
StandardOutput=journal
StandardError=journal
LimitNOFILE=1048576

[Install]
WantedBy=multi-user.target
",
        bin = binary.display(),
        data = data_dir.display()
    )
}

fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn systemctl(args: &[&str]) -> Result<()> {
    let out = Command::new("systemctl")
        .args(args)
        .output()
        .context("running systemctl")?;
    if !out.status.success() {
        bail!(
            "systemctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn no_systemd() -> anyhow::Error {
    anyhow::anyhow!(
        "this machine does not run systemd (no /run/systemd/system): nothing was installed\nhint: run `berth up` under your own init system or in a terminal; to write the files for a package or an image, pass --root DIR"
    )
}

/// Writes the unit, completions and man pages under `root` (`/` when `None`, then enables
/// and starts the unit).
pub fn install(g: &Global, root: Option<&Path>, binary: Option<PathBuf>) -> Result<i32> {
    if root.is_none() && !systemd_runs() {
        return Err(no_systemd());
    }
    let binary = match binary {
        Some(b) => b,
        None => std::env::current_exe().context("finding the berth binary")?,
    };
    if !binary.is_absolute() {
        bail!("--bin {}: give an absolute path", binary.display());
    }
    let data_dir = g
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(SERVICE_DATA_DIR));
    let base = root.unwrap_or(Path::new("/"));
    let mut written = Vec::new();
    for (what, rel) in files() {
        let path = base.join(rel);
        let text = match what {
            "unit" => unit(&binary, &data_dir).into_bytes(),
            shell => {
                let shell: clap_complete::Shell =
                    shell.parse().map_err(|e: String| anyhow::anyhow!(e))?;
                let mut out = Vec::new();
                clap_complete::generate(shell, &mut crate::cli::Cli::command(), "berth", &mut out);
                out
            }
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    crate::ops::man_pages_quiet(&base.join(MAN_DIR))?;
    for p in &written {
        println!("wrote {}", p.display());
    }
    println!("wrote man pages to {}", base.join(MAN_DIR).display());
    if root.is_none() {
        systemctl(&["daemon-reload"])?;
        systemctl(&["enable", "--now", UNIT])?;
        println!(
            "{UNIT} enabled and started (state in {}); logs: journalctl -u berth",
            data_dir.display()
        );
    } else {
        println!("not enabled (--root): systemctl enable --now {UNIT} on the target machine");
    }
    Ok(0)
}

/// Stops and disables the unit (unless `root` is given) and removes what `install` wrote.
/// Apps, the edge and the data directory stay (`berth down` stops them).
pub fn uninstall(root: Option<&Path>) -> Result<i32> {
    if root.is_none() && !systemd_runs() {
        return Err(no_systemd());
    }
    let base = root.unwrap_or(Path::new("/"));
    if root.is_none() {
        systemctl(&["disable", "--now", UNIT])?;
    }
    let mut removed = 0;
    for (_, rel) in files() {
        if std::fs::remove_file(base.join(rel)).is_ok() {
            removed += 1;
        }
    }
    if let Ok(entries) = std::fs::read_dir(base.join(MAN_DIR)) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if (name == "berth.1" || name.starts_with("berth-")) && name.ends_with(".1") {
                let _ = std::fs::remove_file(e.path());
                removed += 1;
            }
        }
    }
    if root.is_none() {
        systemctl(&["daemon-reload"])?;
    }
    println!("removed {removed} file(s); the apps, the edge and the data directory stay (berth down stops them)");
    Ok(0)
}

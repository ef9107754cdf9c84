//! [`Runtime`] on the `crun` binary (Debian package `crun`), for trusted code.
//!
//! Containers are started with `crun run --detach`: crun exits once the container runs, and
//! the container lives on in its own session, so apps survive any restart of berth. Each
//! berth installation keeps crun's state under its own `--root`, so several can share a host.

use crate::{bundle, cgroups, ContainerSpec, ContainerState, Runtime, RuntimeError};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The crun runtime.
#[derive(Debug, Clone)]
pub struct Crun {
    state_root: PathBuf,
}

impl Crun {
    /// A crun runtime keeping its state under `state_root`.
    pub fn new(state_root: impl Into<PathBuf>) -> Self {
        Self {
            state_root: state_root.into(),
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("crun");
        cmd.arg("--root").arg(&self.state_root);
        cmd
    }

    fn error_log(&self, id: &str) -> PathBuf {
        self.state_root.join(format!("{id}.crun.log"))
    }

    fn output(&self, op: &'static str, id: &str, args: &[&str]) -> Result<Output, RuntimeError> {
        self.command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| spawn_error(op, id, e))
    }
}

fn spawn_error(op: &'static str, id: &str, e: std::io::Error) -> RuntimeError {
    if e.kind() == std::io::ErrorKind::NotFound {
        RuntimeError::MissingBinary {
            binary: "crun",
            package: "crun",
        }
    } else {
        RuntimeError::Failed {
            runtime: "crun",
            op,
            id: id.to_string(),
            message: e.to_string(),
        }
    }
}

fn open_log(path: &Path) -> Result<File, RuntimeError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(RuntimeError::io(format!("creating {}", parent.display())))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(RuntimeError::io(format!("opening log {}", path.display())))
}

/// Reads the last lines crun wrote to its `--log` file, for error messages.
fn crun_message(log: &Path, fallback: &[u8]) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut lines: Vec<String> = text
        .lines()
        .filter_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["msg"].as_str().map(str::to_string))
                .or_else(|| (!l.trim().is_empty()).then(|| l.to_string()))
        })
        .collect();
    if lines.is_empty() {
        lines.push(String::from_utf8_lossy(fallback).trim().to_string());
    }
    lines.last().cloned().unwrap_or_default()
}

/// Finds `name` on PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Runtime for Crun {
    fn name(&self) -> &'static str {
        "crun"
    }

    fn preflight(&self) -> Result<(), RuntimeError> {
        if find_on_path("crun").is_none() {
            return Err(RuntimeError::MissingBinary {
                binary: "crun",
                package: "crun",
            });
        }
        std::fs::create_dir_all(&self.state_root).map_err(RuntimeError::io(format!(
            "creating {}",
            self.state_root.display()
        )))?;
        cgroups::ensure_crun_compatible()
    }

    fn start(&self, spec: &ContainerSpec) -> Result<ContainerState, RuntimeError> {
        bundle::write(spec)?;
        let log = open_log(&spec.log_file)?;
        let log2 = log
            .try_clone()
            .map_err(RuntimeError::io("duplicating log handle"))?;
        let err_log = self.error_log(&spec.id);
        let _ = std::fs::remove_file(&err_log);
        let status = self
            .command()
            .arg("--log")
            .arg(&err_log)
            .args(["run", "--detach", "--bundle"])
            .arg(&spec.bundle_dir)
            .arg(&spec.id)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .status()
            .map_err(|e| spawn_error("run", &spec.id, e))?;
        if !status.success() {
            let message = crun_message(&err_log, b"crun exited with an error");
            let _ = self.delete(&spec.id);
            return Err(RuntimeError::Failed {
                runtime: "crun",
                op: "run",
                id: spec.id.clone(),
                message,
            });
        }
        let _ = std::fs::remove_file(&err_log);
        self.state(&spec.id)?.ok_or_else(|| RuntimeError::Failed {
            runtime: "crun",
            op: "state",
            id: spec.id.clone(),
            message: "container vanished right after it started".into(),
        })
    }

    fn run_to_exit(&self, spec: &ContainerSpec) -> Result<i32, RuntimeError> {
        bundle::write(spec)?;
        let log = open_log(&spec.log_file)?;
        let log2 = log
            .try_clone()
            .map_err(RuntimeError::io("duplicating log handle"))?;
        let err_log = self.error_log(&spec.id);
        let _ = std::fs::remove_file(&err_log);
        let status = self
            .command()
            .arg("--log")
            .arg(&err_log)
            .args(["run", "--bundle"])
            .arg(&spec.bundle_dir)
            .arg(&spec.id)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .status()
            .map_err(|e| spawn_error("run", &spec.id, e))?;
        let crun_said = crun_message(&err_log, b"");
        let _ = self.delete(&spec.id);
        let _ = std::fs::remove_file(&err_log);
        match status.code() {
            // crun itself failed before the process ran: say why.
            Some(code) if code != 0 && !crun_said.is_empty() && !crun_said.contains("exited") => {
                Err(RuntimeError::Failed {
                    runtime: "crun",
                    op: "run",
                    id: spec.id.clone(),
                    message: crun_said,
                })
            }
            Some(code) => Ok(code),
            None => Ok(137),
        }
    }

    fn state(&self, id: &str) -> Result<Option<ContainerState>, RuntimeError> {
        let out = self.output("state", id, &["state", id])?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("does not exist") || stderr.contains("No such file") {
                return Ok(None);
            }
            return Err(RuntimeError::Failed {
                runtime: "crun",
                op: "state",
                id: id.to_string(),
                message: stderr.trim().to_string(),
            });
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| RuntimeError::Failed {
                runtime: "crun",
                op: "state",
                id: id.to_string(),
                message: format!("unreadable state: {e}"),
            })?;
        let running = v["status"] == "running";
        Ok(Some(ContainerState {
            id: id.to_string(),
            pid: v["pid"]
                .as_u64()
                .filter(|p| *p > 0 && running)
                .map(|p| p as u32),
            running,
            bundle: PathBuf::from(v["bundle"].as_str().unwrap_or_default()),
        }))
    }

    fn kill(&self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        let out = self.output("kill", id, &["kill", id, signal])?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("does not exist") || stderr.contains("not running") {
            return Ok(());
        }
        Err(RuntimeError::Failed {
            runtime: "crun",
            op: "kill",
            id: id.to_string(),
            message: stderr.trim().to_string(),
        })
    }

    fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        let out = self.output("delete", id, &["delete", "--force", id])?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("does not exist") || stderr.contains("No such file") {
            return Ok(());
        }
        Err(RuntimeError::Failed {
            runtime: "crun",
            op: "delete",
            id: id.to_string(),
            message: stderr.trim().to_string(),
        })
    }

    fn list(&self) -> Result<Vec<String>, RuntimeError> {
        let out = self.output("list", "-", &["list", "-q"])?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty() && l != "ID")
            .collect())
    }
}

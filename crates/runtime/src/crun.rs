//! [`Runtime`] on the `crun` binary (Debian package `crun`), for trusted code.
//!
//! Containers are started with `crun run --detach`: crun exits once the container runs, and
//! the container lives on in its own session, so apps survive any restart of berth. Each
//! berth installation keeps crun's state under its own `--root`, so several can share a host.

use crate::oci_cli::{failure_message, open_log, OciCli};
use crate::{bundle, cgroups, ContainerSpec, ContainerState, Runtime, RuntimeError};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

/// How a bundle is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// `run`, waiting for the container to end.
    Foreground,
    /// `run --detach`.
    Detached,
    /// `create`: in place, its process not started.
    Created,
}

/// The crun runtime.
#[derive(Debug, Clone)]
pub struct Crun {
    cli: OciCli,
}

impl Crun {
    /// A crun runtime keeping its state under `state_root`.
    pub fn new(state_root: impl Into<PathBuf>) -> Self {
        Self {
            cli: OciCli {
                binary: "crun",
                package: "crun",
                state_root: state_root.into(),
                list_quiet: "-q",
            },
        }
    }

    /// `crun run [--detach]` (or `crun create`) of a freshly written bundle, output appended
    /// to the log file.
    fn run(&self, spec: &ContainerSpec, how: How) -> Result<(ExitStatus, String), RuntimeError> {
        bundle::write(spec)?;
        let log = open_log(&spec.log_file)?;
        let log2 = log
            .try_clone()
            .map_err(RuntimeError::io("duplicating log handle"))?;
        let err_log = self.cli.error_log(&spec.id);
        let _ = std::fs::remove_file(&err_log);
        let mut cmd = self.cli.command();
        cmd.arg("--log").arg(&err_log);
        match how {
            How::Foreground => {
                cmd.arg("run");
            }
            How::Detached => {
                cmd.args(["run", "--detach"]);
            }
            How::Created => {
                cmd.arg("create");
            }
        }
        if how != How::Foreground {
            cmd.arg("--pid-file").arg(self.cli.pid_file(&spec.id));
        }
        let status = cmd
            .arg("--bundle")
            .arg(&spec.bundle_dir)
            .arg(&spec.id)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .status()
            .map_err(|e| self.cli.spawn_error("run", &spec.id, e))?;
        let said = if status.success() {
            String::new()
        } else {
            failure_message(&err_log, b"")
        };
        let _ = std::fs::remove_file(&err_log);
        Ok((status, said))
    }
}

impl Runtime for Crun {
    fn name(&self) -> &'static str {
        "crun"
    }

    fn preflight(&self) -> Result<(), RuntimeError> {
        self.cli.preflight()?;
        cgroups::ensure_crun_compatible()
    }

    fn start(&self, spec: &ContainerSpec) -> Result<ContainerState, RuntimeError> {
        let (status, said) = self.run(spec, How::Detached)?;
        self.cli.detached(spec, status, said)
    }

    fn create(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let (status, said) = self.run(spec, How::Created)?;
        if status.success() {
            return Ok(());
        }
        let _ = self.delete(&spec.id);
        Err(self.cli.failed(
            "create",
            &spec.id,
            if said.is_empty() {
                "crun exited with an error".to_string()
            } else {
                said
            },
        ))
    }

    fn start_created(&self, id: &str, bundle: &Path) -> Result<ContainerState, RuntimeError> {
        let out = self
            .cli
            .command()
            .args(["start", id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| self.cli.spawn_error("start", id, e))?;
        if !out.status.success() {
            let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(self.cli.failed("start", id, said));
        }
        // The pid `create` wrote is the app's now (the runtime's init became it).
        self.cli.started(id, bundle)
    }

    fn run_to_exit(&self, spec: &ContainerSpec) -> Result<i32, RuntimeError> {
        let (status, said) = self.run(spec, How::Foreground)?;
        let _ = self.delete(&spec.id);
        match status.code() {
            // crun itself failed before the process ran: say why.
            Some(code) if code != 0 && !said.is_empty() && !said.contains("exited") => {
                Err(self.cli.failed("run", &spec.id, said))
            }
            Some(code) => Ok(code),
            None => Ok(137),
        }
    }

    fn state(&self, id: &str) -> Result<Option<ContainerState>, RuntimeError> {
        self.cli.state(id)
    }

    fn kill(&self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        self.cli.kill(id, signal)
    }

    fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        self.cli.delete(id)
    }

    fn list(&self) -> Result<Vec<String>, RuntimeError> {
        self.cli.list()
    }

    fn may_know(&self, id: &str) -> bool {
        // crun keeps one directory per container under its root.
        self.cli.state_root.join(id).exists()
    }
}

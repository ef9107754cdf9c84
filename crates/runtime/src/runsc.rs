//! [`Runtime`] on gVisor's `runsc` (Debian package `runsc`), for apps with
//! `isolation = "sandbox"`: the app talks to gVisor's user-space kernel, never to the host's.
//!
//! How berth runs it, and why:
//! - `--platform=ptrace`: the only platform that works on hosts without nested
//!   virtualisation (`kvm` hangs on such hosts).
//! - `--network=sandbox`: gVisor's own network stack on the instance's veth (the host only
//!   sees frames, which meet berth's firewall on the bridge). Debian's runsc refuses this in
//!   a network namespace it takes for the root one (gVisor bug #10704), so it is started
//!   inside a private mount namespace with a tmpfs over `/proc/sys/net`. runsc moves the veth's
//!   address and route into its own stack, so every start gets a freshly configured
//!   namespace (the launcher makes a new one per start).
//! - `--oci-seccomp`: the bundle's system-call filter applies inside the sandbox too.
//! - Launched under `setsid`, so the sandbox and its gofer leave berth's session and survive
//!   any restart of berth.
//! - stdout and stderr get their own file descriptions (runsc makes inherited descriptors
//!   non-blocking).
//! - An out-of-memory kill ends the whole sandbox: the container shows as stopped, and the
//!   supervisor restarts it like any crash (the cgroup's OOM counter tells why).

use crate::bundle::NetworkMode;
use crate::oci_cli::{failure_message, open_log, OciCli};
use crate::{bundle, ContainerSpec, ContainerState, Runtime, RuntimeError};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};

/// Makes the network namespace look like a non-root one to runsc, then runs it.
const SANDBOX_NET_WRAPPER: &str = "mount -t tmpfs berth-netfix /proc/sys/net && exec \"$0\" \"$@\"";

/// The runsc runtime.
#[derive(Debug, Clone)]
pub struct Runsc {
    cli: OciCli,
}

impl Runsc {
    /// A runsc runtime keeping its state under `state_root`.
    pub fn new(state_root: impl Into<PathBuf>) -> Self {
        Self {
            cli: OciCli {
                binary: "runsc",
                package: "runsc",
                state_root: state_root.into(),
                list_quiet: "-quiet",
            },
        }
    }

    /// The command line that runs `spec` (already written as a bundle).
    fn run_command(&self, spec: &ContainerSpec, detach: bool) -> Command {
        let mut cmd = Command::new("setsid");
        cmd.arg("--wait");
        let network = match spec.network {
            NetworkMode::Namespace(_) => {
                cmd.args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
                    .arg(SANDBOX_NET_WRAPPER);
                "--network=sandbox"
            }
            NetworkMode::Host => "--network=host",
        };
        cmd.arg(self.cli.binary)
            .arg("--root")
            .arg(&self.cli.state_root)
            .arg("--log")
            .arg(self.cli.error_log(&spec.id))
            .args(["--platform=ptrace", network]);
        if spec.privileges.seccomp {
            cmd.arg("--oci-seccomp");
        }
        cmd.arg("run");
        if detach {
            cmd.arg("--detach")
                .arg("--pid-file")
                .arg(self.cli.pid_file(&spec.id));
        }
        cmd.arg("--bundle").arg(&spec.bundle_dir).arg(&spec.id);
        cmd
    }

    fn run(
        &self,
        spec: &ContainerSpec,
        detach: bool,
    ) -> Result<(ExitStatus, String), RuntimeError> {
        self.cli.preflight()?;
        bundle::write(spec)?;
        let stdout = open_log(&spec.log_file)?;
        let stderr = open_log(&spec.log_file)?;
        let err_log = self.cli.error_log(&spec.id);
        let _ = std::fs::remove_file(&err_log);
        let status = self
            .run_command(spec, detach)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .status()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    RuntimeError::MissingBinary {
                        binary: "setsid",
                        package: "util-linux",
                    }
                } else {
                    self.cli.failed("run", &spec.id, e.to_string())
                }
            })?;
        let said = if status.success() {
            String::new()
        } else {
            failure_message(&err_log, b"")
        };
        Ok((status, said))
    }
}

impl Runtime for Runsc {
    fn name(&self) -> &'static str {
        "runsc"
    }

    fn preflight(&self) -> Result<(), RuntimeError> {
        self.cli.preflight()
    }

    fn start(&self, spec: &ContainerSpec) -> Result<ContainerState, RuntimeError> {
        let (status, said) = self.run(spec, true)?;
        self.cli.detached(spec, status, said)
    }

    fn run_to_exit(&self, spec: &ContainerSpec) -> Result<i32, RuntimeError> {
        let (status, said) = self.run(spec, false)?;
        let _ = self.delete(&spec.id);
        let _ = std::fs::remove_file(self.cli.error_log(&spec.id));
        match status.code() {
            // runsc failed before the process ran (it exits 128 then): say why.
            Some(128) if !said.is_empty() => Err(self.cli.failed("run", &spec.id, said)),
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
        let result = self.cli.delete(id);
        let _ = std::fs::remove_file(self.cli.error_log(id));
        result
    }

    fn may_know(&self, id: &str) -> bool {
        // runsc keeps `<id>_sandbox:<sandbox id>.state` files under its root.
        let prefix = format!("{id}_sandbox:");
        std::fs::read_dir(&self.cli.state_root)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            })
            .unwrap_or(false)
    }

    fn list(&self) -> Result<Vec<String>, RuntimeError> {
        if !self.cli.installed() || !self.cli.state_root.exists() {
            return Ok(Vec::new());
        }
        self.cli.list()
    }
}

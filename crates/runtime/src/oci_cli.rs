//! What every OCI runtime command line (`crun`, `runsc`) has in common: a private state
//! root, `state`/`kill`/`delete`/`list` subcommands with the same JSON and the same way of
//! saying a container does not exist, and an error log berth reads to explain a failure.

use crate::{ContainerSpec, ContainerState, RuntimeError};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};

/// One runtime binary with berth's state root.
#[derive(Debug, Clone)]
pub(crate) struct OciCli {
    /// Binary on PATH.
    pub binary: &'static str,
    /// Debian package that installs it.
    pub package: &'static str,
    /// `--root`: where the runtime keeps the state of berth's containers.
    pub state_root: PathBuf,
    /// The flag of `list` that prints only ids (`-q` for crun, `-quiet` for runsc).
    pub list_quiet: &'static str,
}

impl OciCli {
    /// `binary --root <state_root>`.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(self.binary);
        cmd.arg("--root").arg(&self.state_root);
        cmd
    }

    /// Checks the binary is installed and creates the state root.
    pub fn preflight(&self) -> Result<(), RuntimeError> {
        if !self.installed() {
            return Err(self.missing());
        }
        std::fs::create_dir_all(&self.state_root).map_err(RuntimeError::io(format!(
            "creating {}",
            self.state_root.display()
        )))
    }

    /// The outcome of `run --detach` for `spec`: its state, or (after removing what the
    /// runtime left) an error saying what the runtime said.
    pub fn detached(
        &self,
        spec: &ContainerSpec,
        status: ExitStatus,
        said: String,
    ) -> Result<ContainerState, RuntimeError> {
        if status.success() {
            return self.started(&spec.id, &spec.bundle_dir);
        }
        let _ = self.delete(&spec.id);
        let _ = std::fs::remove_file(self.error_log(&spec.id));
        let message = if said.is_empty() {
            format!("{} exited with an error", self.binary)
        } else {
            said
        };
        Err(self.failed("run", &spec.id, message))
    }

    /// Where `run --pid-file` writes the pid of container `id`.
    pub fn pid_file(&self, id: &str) -> PathBuf {
        self.state_root.join(format!("{id}.pid"))
    }

    /// The state of a container `run --detach` just started: running, with the pid the
    /// runtime wrote (saves asking the runtime), else whatever `state` says.
    pub fn started(&self, id: &str, bundle: &Path) -> Result<ContainerState, RuntimeError> {
        let pid_file = self.pid_file(id);
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        let _ = std::fs::remove_file(&pid_file);
        if let Some(pid) = pid {
            return Ok(ContainerState {
                id: id.to_string(),
                pid: Some(pid),
                running: true,
                bundle: bundle.to_path_buf(),
            });
        }
        self.state(id)?
            .ok_or_else(|| self.failed("state", id, "container vanished right after it started"))
    }

    /// The runtime's own log for container `id` (errors of a failed start).
    pub fn error_log(&self, id: &str) -> PathBuf {
        self.state_root.join(format!("{id}.{}.log", self.binary))
    }

    pub fn failed(&self, op: &'static str, id: &str, message: impl Into<String>) -> RuntimeError {
        RuntimeError::Failed {
            runtime: self.binary,
            op,
            id: id.to_string(),
            message: message.into(),
        }
    }

    pub fn missing(&self) -> RuntimeError {
        RuntimeError::MissingBinary {
            binary: self.binary,
            package: self.package,
        }
    }

    /// Whether the binary is installed.
    pub fn installed(&self) -> bool {
        find_on_path(self.binary).is_some()
    }

    /// Maps a failure to spawn a process: a missing program becomes [`RuntimeError::MissingBinary`].
    pub fn spawn_error(&self, op: &'static str, id: &str, e: std::io::Error) -> RuntimeError {
        if e.kind() == std::io::ErrorKind::NotFound {
            self.missing()
        } else {
            self.failed(op, id, e.to_string())
        }
    }

    fn output(&self, op: &'static str, id: &str, args: &[&str]) -> Result<Output, RuntimeError> {
        self.command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.spawn_error(op, id, e))
    }

    /// Runs `op` on container `id`; `Ok(false)` when the runtime does not know the container.
    fn run_on(&self, op: &'static str, id: &str, args: &[&str]) -> Result<bool, RuntimeError> {
        let out = self.output(op, id, args)?;
        if out.status.success() {
            return Ok(true);
        }
        let said = said(&out);
        if says_gone(&said) {
            return Ok(false);
        }
        Err(self.failed(op, id, said))
    }

    pub fn state(&self, id: &str) -> Result<Option<ContainerState>, RuntimeError> {
        let out = self.output("state", id, &["state", id])?;
        if !out.status.success() {
            let said = said(&out);
            if says_gone(&said) {
                return Ok(None);
            }
            return Err(self.failed("state", id, said));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| self.failed("state", id, format!("unreadable state: {e}")))?;
        let running = v["status"] == "running";
        Ok(Some(ContainerState {
            id: id.to_string(),
            pid: v["pid"]
                .as_i64()
                .filter(|p| *p > 0 && running)
                .and_then(|p| u32::try_from(p).ok()),
            running,
            bundle: PathBuf::from(v["bundle"].as_str().unwrap_or_default()),
        }))
    }

    pub fn kill(&self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        match self.run_on("kill", id, &["kill", id, signal]) {
            Err(RuntimeError::Failed { message, .. }) if message.contains("not running") => Ok(()),
            other => other.map(|_| ()),
        }
    }

    pub fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        self.run_on("delete", id, &["delete", "--force", id])
            .map(|_| ())
    }

    pub fn list(&self) -> Result<Vec<String>, RuntimeError> {
        let out = self.output("list", "-", &["list", self.list_quiet])?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty() && l != "ID" && !l.contains(' '))
            .collect())
    }
}

/// What a runtime said on stderr, or on stdout when stderr is empty (runsc logs to stdout
/// unless told otherwise).
fn said(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if err.is_empty() {
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    } else {
        err
    }
}

/// Whether a runtime's message means "no such container".
fn says_gone(message: &str) -> bool {
    message.contains("does not exist") || message.contains("No such file")
}

/// Opens a container's log file for appending, creating its directory.
pub(crate) fn open_log(path: &Path) -> Result<File, RuntimeError> {
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

/// The message that explains a failure, from a runtime's `--log` file: the first error
/// (runsc's last error is a generic "cannot create sandbox"), else the last line. The file
/// holds JSON objects (crun: one per line, runsc: back to back) or plain text.
pub(crate) fn failure_message(log: &Path, fallback: &[u8]) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut messages = Vec::new();
    let mut first_error = None;
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        for v in serde_json::Deserializer::from_str(trimmed)
            .into_iter::<serde_json::Value>()
            .map_while(Result::ok)
        {
            if let Some(msg) = v["msg"].as_str() {
                if first_error.is_none() && v["level"] == "error" {
                    first_error = Some(msg.to_string());
                }
                messages.push(msg.to_string());
            }
        }
    } else {
        messages.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string),
        );
    }
    first_error
        .or_else(|| messages.pop())
        .unwrap_or_else(|| String::from_utf8_lossy(fallback).trim().to_string())
}

/// Finds `name` on PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_failures_from_either_runtimes_log() {
        let dir = tempfile::tempdir().unwrap();
        let crun = dir.path().join("crun.log");
        std::fs::write(
            &crun,
            "{\"msg\":\"starting\",\"level\":\"info\"}\n{\"msg\":\"executable file `nope` not found\",\"level\":\"error\"}\n",
        )
        .unwrap();
        assert_eq!(
            failure_message(&crun, b""),
            "executable file `nope` not found"
        );
        let runsc = dir.path().join("runsc.log");
        std::fs::write(
            &runsc,
            "{\"msg\":\"Error setting up root FS: no such file\",\"level\":\"error\"}{\"msg\":\"cannot create sandbox\",\"level\":\"error\"}",
        )
        .unwrap();
        assert_eq!(
            failure_message(&runsc, b""),
            "Error setting up root FS: no such file"
        );
        assert_eq!(
            failure_message(&dir.path().join("absent"), b" fell over \n"),
            "fell over"
        );
    }
}

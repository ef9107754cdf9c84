//! berth's run plane: runs each process instance as an OCI container through an existing OCI
//! runtime.
//!
//! - [`bundle`] turns a [`ContainerSpec`] (berth's view: rootfs, command, env, mounts,
//!   network) into an OCI runtime bundle (`config.json`, built with `oci-spec`).
//! - [`Runtime`] is the narrow interface the control plane uses; [`crun::Crun`] implements it
//!   with the `crun` binary (trusted apps), [`runsc::Runsc`] with gVisor's `runsc` (sandboxed
//!   apps), [`select::ByIsolation`] picks between them per container, and
//!   [`fake::RecordingRuntime`] records calls for unit tests. Kubernetes slots in as a
//!   further implementation.
//! - [`network`] gives each instance its own network namespace with a veth into berth's bridge.
//! - [`firewall`] keeps each app's network policy as one nftables table, applied through
//!   libnftables in this process ([`nft_lib`], the only unsafe code: the library's C calls)
//!   or the `nft` command where the library is missing.
//! - [`cgroups`] checks (and on these hosts fixes) the cgroup layout crun needs.
//! - [`init`] is the tiny init berth runs as PID 1 inside each app container: it forwards
//!   signals, reaps, and records the app's exit status where the platform can read it after
//!   any restart of its own.
#![deny(unsafe_code)]

pub mod bundle;
pub mod cgroups;
pub mod crun;
pub mod fake;
pub mod firewall;
pub mod init;
pub mod network;
mod nft_lib;
mod oci_cli;
pub mod ownership;
pub mod proc;
pub mod runsc;
pub mod seccomp;
pub mod select;

use std::path::{Path, PathBuf};

pub use bundle::{BindMount, ContainerSpec, Isolation, NetworkMode, Privileges, Resources};
pub use oci_cli::find_on_path;

/// Errors of the run plane.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime binary is not installed.
    #[error("{binary} not found on PATH; install it with `apt-get install {package}`")]
    MissingBinary {
        binary: &'static str,
        package: &'static str,
    },
    /// The runtime refused or failed an operation.
    #[error("{runtime} {op} {id} failed: {message}")]
    Failed {
        runtime: &'static str,
        op: &'static str,
        id: String,
        message: String,
    },
    /// A network setup command failed.
    #[error("network setup failed: `{command}`: {message}")]
    Network { command: String, message: String },
    /// The cgroup layout stops the runtime from working.
    #[error("{0}")]
    Cgroups(String),
    /// The runtime cannot do this (e.g. create a container without starting it).
    #[error("{runtime} cannot {op}")]
    Unsupported {
        runtime: &'static str,
        op: &'static str,
    },
    /// The bundle could not be generated.
    #[error("bundle for {id}: {message}")]
    Bundle { id: String, message: String },
    /// Reading or writing files failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

/// What the runtime knows about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    /// Container id.
    pub id: String,
    /// Host PID of the container's init, when it is running.
    pub pid: Option<u32>,
    /// Whether its process is alive.
    pub running: bool,
    /// Bundle directory.
    pub bundle: PathBuf,
}

/// The interface the control plane drives containers through. Blocking; call it from
/// `spawn_blocking` in async code.
pub trait Runtime: Send + Sync {
    /// A short name for messages (`crun`, `runsc`, `fake`).
    fn name(&self) -> &'static str;
    /// Checks that the runtime can work on this host (binary present, cgroups usable).
    fn preflight(&self) -> Result<(), RuntimeError>;
    /// Writes the bundle and starts the container detached: it keeps running when the caller
    /// exits. Its stdout and stderr go to `spec.log_file`, appended.
    fn start(&self, spec: &ContainerSpec) -> Result<ContainerState, RuntimeError>;
    /// Writes the bundle and creates the container without starting its process: its
    /// namespaces, cgroup and mounts are in place and the runtime's init waits (a small
    /// process, none of the app's) until [`Runtime::start_created`]. Its output will go to
    /// `spec.log_file`, appended.
    fn create(&self, _spec: &ContainerSpec) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unsupported {
            runtime: self.name(),
            op: "create a container without starting it",
        })
    }
    /// Starts the process of a container made by [`Runtime::create`].
    fn start_created(&self, _id: &str, _bundle: &Path) -> Result<ContainerState, RuntimeError> {
        Err(RuntimeError::Unsupported {
            runtime: self.name(),
            op: "start a created container",
        })
    }
    /// Runs the container in the foreground until it exits; returns its exit code. Output is
    /// appended to `spec.log_file`.
    fn run_to_exit(&self, spec: &ContainerSpec) -> Result<i32, RuntimeError>;
    /// The container's state, or `None` if the runtime does not know it.
    fn state(&self, id: &str) -> Result<Option<ContainerState>, RuntimeError>;
    /// Sends a signal (`TERM`, `KILL`) to the container's init.
    fn kill(&self, id: &str, signal: &str) -> Result<(), RuntimeError>;
    /// Removes the container (killing it if needed); succeeds if it is already gone.
    fn delete(&self, id: &str) -> Result<(), RuntimeError>;
    /// Ids of every container the runtime knows under berth's state root.
    fn list(&self) -> Result<Vec<String>, RuntimeError>;
    /// A cheap check (no process started) of whether the runtime may hold state for `id`;
    /// `false` means it certainly holds none.
    fn may_know(&self, _id: &str) -> bool {
        true
    }
}

//! The control plane as a process: `berth up` records its identity beside the API address
//! (`api.json`), so that `berth down` stops it with the rest of the platform, and a drill
//! can kill it and start it again exactly as it was started.

use crate::config::PlatformConfig;
use berth_runtime::proc::ProcessIdentity;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Why the control plane could not be restarted.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error(
        "no control plane of {0} runs on this machine (none recorded in api.json, or it exited)"
    )]
    NotRunning(String),
    #[error("cannot read how the control plane was started: {0}")]
    Unreadable(String),
    #[error("starting the control plane again failed: {0}")]
    Start(std::io::Error),
}

/// The control plane recorded in the data dir's `api.json`, if that process still runs.
pub fn recorded(cfg: &PlatformConfig) -> Option<ProcessIdentity> {
    let text = std::fs::read(cfg.api_info_path()).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    let id = ProcessIdentity {
        pid: u32::try_from(v["pid"].as_u64()?).ok()?,
        start_ticks: v["start_ticks"].as_u64()?,
    };
    id.alive().then_some(id)
}

fn signal(id: &ProcessIdentity, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(id.pid as i32);
    let _ = nix::sys::signal::kill(pid, sig);
}

fn wait_gone(id: &ProcessIdentity, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while id.alive() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Stops the recorded control plane (SIGTERM, then SIGKILL after `grace`); returns its pid
/// if one ran.
pub fn stop(cfg: &PlatformConfig, grace: Duration) -> Option<u32> {
    let id = recorded(cfg)?;
    signal(&id, nix::sys::signal::Signal::SIGTERM);
    if !wait_gone(&id, grace) {
        signal(&id, nix::sys::signal::Signal::SIGKILL);
        wait_gone(&id, Duration::from_secs(5));
    }
    Some(id.pid)
}

/// How a process was started, read from `/proc` while it runs.
struct Launch {
    argv: Vec<String>,
    cwd: PathBuf,
    env: Vec<(String, String)>,
    /// Its standard output, when that is a file (kept for the new process).
    output: Option<PathBuf>,
}

fn nul_separated(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn launch_of(pid: u32) -> Result<Launch, ControlPlaneError> {
    let proc = |name: &str| PathBuf::from(format!("/proc/{pid}/{name}"));
    let unreadable = |e: std::io::Error| ControlPlaneError::Unreadable(e.to_string());
    let argv = nul_separated(&std::fs::read(proc("cmdline")).map_err(unreadable)?);
    if argv.is_empty() {
        return Err(ControlPlaneError::Unreadable("empty command line".into()));
    }
    let env = nul_separated(&std::fs::read(proc("environ")).map_err(unreadable)?)
        .into_iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let cwd = std::fs::read_link(proc("cwd")).map_err(unreadable)?;
    let output = std::fs::read_link(proc("fd/1"))
        .ok()
        .filter(|p| p.is_absolute() && p.is_file());
    Ok(Launch {
        argv,
        cwd,
        env,
        output,
    })
}

/// Kills the recorded control plane abruptly (SIGKILL, as a crash) and starts it again
/// with the same command line, directory and environment, detached; its output goes where
/// the old one's went when that was a file, else to `<data>/control-plane.log`. Returns
/// the old pid once the new process is started (not yet serving: poll the API).
pub fn crash_and_restart(cfg: &PlatformConfig) -> Result<(u32, u32), ControlPlaneError> {
    let id = recorded(cfg)
        .ok_or_else(|| ControlPlaneError::NotRunning(cfg.data_dir.display().to_string()))?;
    let launch = launch_of(id.pid)?;
    signal(&id, nix::sys::signal::Signal::SIGKILL);
    wait_gone(&id, Duration::from_secs(10));
    let log_path = launch
        .output
        .clone()
        .unwrap_or_else(|| cfg.data_dir.join("control-plane.log"));
    let open = |p: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(ControlPlaneError::Start)
    };
    let (out, err) = (open(&log_path)?, open(&log_path)?);
    use std::os::unix::process::CommandExt;
    let child = Command::new(&launch.argv[0])
        .args(&launch.argv[1..])
        .current_dir(&launch.cwd)
        .env_clear()
        .envs(launch.env)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(ControlPlaneError::Start)?;
    Ok((id.pid, child.id()))
}

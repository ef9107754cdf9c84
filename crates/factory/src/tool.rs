//! Running an outside tool (git, skopeo) to its end within a deadline, its standard error
//! read as it comes (a chatty tool cannot fill the pipe and stall) and its last line kept
//! to say why it failed.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Instant;

/// How a tool's run ended.
#[derive(Debug)]
pub enum Ran {
    /// Exit status 0.
    Succeeded,
    /// Another status; the last line it wrote to standard error.
    Failed(String),
    /// Still running at the deadline: killed.
    TimedOut,
}

/// Runs `cmd` (stdin and stdout closed) until it exits or `deadline` passes. An error only
/// when it could not be started (`NotFound`: not installed).
pub fn run_until(cmd: &mut Command, deadline: Instant) -> std::io::Result<Ran> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let reader = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = e.read_to_string(&mut text);
            text
        })
    });
    let last_line = |reader: Option<std::thread::JoinHandle<String>>, fallback: &str| {
        reader
            .and_then(|r| r.join().ok())
            .and_then(|t| t.trim().lines().last().map(str::to_string))
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| fallback.to_string())
    };
    let (status, timed_out) = wait_until(&mut child, deadline, false)?;
    Ok(match status {
        _ if timed_out => Ran::TimedOut,
        s if s.success() => Ran::Succeeded,
        s => Ran::Failed(last_line(reader, &format!("exited with {s}"))),
    })
}

/// Waits for `child` to exit; at `deadline` kills it (and its process group when it leads
/// one). Whether it was killed for the deadline.
fn wait_until(
    child: &mut std::process::Child,
    deadline: Instant,
    group: bool,
) -> std::io::Result<(std::process::ExitStatus, bool)> {
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let left = deadline.saturating_duration_since(Instant::now());
        if finished.recv_timeout(left).is_ok() {
            return false;
        }
        let target = if group {
            format!("-{pid}")
        } else {
            pid.to_string()
        };
        let _ = Command::new("kill").args(["-KILL", "--", &target]).status();
        true
    });
    let status = child.wait();
    let _ = done.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    Ok((status?, timed_out))
}

/// Runs `cmd` until it exits or `deadline` passes, its standard output and error appended
/// to `log` as they come (a build's live log). An error only when it could not be started.
pub fn run_logged(
    cmd: &mut Command,
    log: &std::path::Path,
    deadline: Instant,
) -> std::io::Result<Ran> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let err = out.try_clone()?;
    use std::os::unix::process::CommandExt as _;
    // Its own process group, so that a timeout stops what it started too.
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()?;
    let (status, timed_out) = wait_until(&mut child, deadline, true)?;
    Ok(match status {
        _ if timed_out => Ran::TimedOut,
        s if s.success() => Ran::Succeeded,
        s => Ran::Failed(format!("exited with {s}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn failures_say_their_last_line_and_slow_runs_are_stopped() {
        let far = Instant::now() + Duration::from_secs(30);
        assert!(matches!(
            run_until(Command::new("true").arg("x"), far).unwrap(),
            Ran::Succeeded
        ));
        match run_until(
            Command::new("sh").args(["-c", "echo first >&2; echo 'the reason' >&2; exit 3"]),
            far,
        )
        .unwrap()
        {
            Ran::Failed(why) => assert_eq!(why, "the reason"),
            other => panic!("{other:?}"),
        }
        // More standard error than a pipe holds does not stall it.
        assert!(matches!(
            run_until(
                Command::new("sh").args(["-c", "head -c 300000 /dev/zero | tr '\\\\0' x >&2"]),
                far
            )
            .unwrap(),
            Ran::Succeeded
        ));
        let soon = Instant::now() + Duration::from_millis(200);
        assert!(matches!(
            run_until(Command::new("sleep").arg("30"), soon).unwrap(),
            Ran::TimedOut
        ));
        assert!(run_until(&mut Command::new("no-such-tool-berth"), far).is_err());
    }
}

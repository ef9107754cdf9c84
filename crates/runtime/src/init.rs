//! The init process berth runs as PID 1 inside each app container (`berth container-init`).
//!
//! A shell or an app as PID 1 ignores `SIGTERM` (the kernel gives PID 1 no default signal
//! actions), leaves zombies behind, and its exit code is lost once the launching process is
//! gone: there is no shim to report it after berth restarts. This init starts the app in its
//! own process group, forwards termination signals to that group, reaps every child, and
//! writes the app's exit status to a file on a host-visible mount before exiting with it.

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// Exit status for a signal, shell style: 128 + signal number.
pub fn signal_exit_code(signal: i32) -> i32 {
    128 + signal
}

/// Reads an exit status file written by [`run`].
pub fn read_exit_status(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn write_status(path: &Path, code: i32) {
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, format!("{code}\n")).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// Whether `/proc/net/route` text has a default route (destination 0.0.0.0).
fn has_default_route(route_table: &str) -> bool {
    route_table
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some("00000000"))
}

/// Waits, at most `limit`, until this network namespace has a default route: the platform
/// may start a container while it is still configuring the namespace, and the route is
/// the last step. Returns whether the route appeared.
pub fn wait_for_default_route(limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let table = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
        if has_default_route(&table) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_micros(500));
    }
}

/// Parses a secrets environment file: `KEY=VALUE` entries separated by NUL bytes (values
/// may hold newlines). Entries without `=` are skipped.
pub fn parse_env_file(bytes: &[u8]) -> Vec<(String, String)> {
    bytes
        .split(|b| *b == 0)
        .filter_map(|entry| {
            let text = String::from_utf8_lossy(entry);
            let (k, v) = text.split_once('=')?;
            (!k.is_empty()).then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// Encodes variables in the format [`parse_env_file`] reads.
pub fn encode_env_file<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in vars {
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Runs `argv` as the app, supervised as described above; returns its exit code. With
/// `wait_for_network`, the app starts only once the namespace has its default route. The
/// variables of `env_file` (secrets, kept out of the container's configuration on disk)
/// are added to the app's environment; only the app's process tree sees them.
pub fn run(
    status_file: &Path,
    argv: &[String],
    wait_for_network: bool,
    env_file: Option<&Path>,
) -> i32 {
    let _ = std::fs::remove_file(status_file);
    let secrets = match env_file.map(std::fs::read) {
        None => Vec::new(),
        Some(Ok(bytes)) => parse_env_file(&bytes),
        Some(Err(e)) => {
            eprintln!("berth container-init: cannot read the app's secrets: {e}");
            write_status(status_file, 126);
            return 126;
        }
    };
    if wait_for_network && !wait_for_default_route(std::time::Duration::from_secs(10)) {
        eprintln!("berth container-init: the network was not ready after 10 s; starting anyway");
    }
    let Some((program, args)) = argv.split_first() else {
        eprintln!("berth container-init: no command given");
        write_status(status_file, 127);
        return 127;
    };
    let child = match Command::new(program)
        .args(args)
        .envs(secrets)
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth container-init: cannot start {program}: {e}");
            write_status(status_file, 127);
            return 127;
        }
    };
    let pgid = Pid::from_raw(child.id() as i32);
    match Signals::new([SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2]) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                for sig in signals.forever() {
                    if let Ok(sig) = Signal::try_from(sig) {
                        let _ = killpg(pgid, sig);
                    }
                }
            });
        }
        Err(e) => eprintln!("berth container-init: cannot handle signals: {e}"),
    }
    let code = loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == pgid => break code,
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == pgid => {
                break signal_exit_code(sig as i32)
            }
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break 1,
        }
    };
    // The app is gone; make sure nothing it left behind outlives it.
    let _ = killpg(pgid, Signal::SIGKILL);
    write_status(status_file, code);
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_carry_values_with_newlines_and_equals_signs() {
        let bytes = encode_env_file([("A", "1"), ("PEM", "-----BEGIN-----\nx=y\n")]);
        assert_eq!(
            parse_env_file(&bytes),
            vec![
                ("A".to_string(), "1".to_string()),
                ("PEM".to_string(), "-----BEGIN-----\nx=y\n".to_string())
            ]
        );
        assert!(parse_env_file(b"").is_empty());
    }

    #[test]
    fn finds_the_default_route_in_the_kernels_table() {
        let header =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";
        let link = "eth0\t00004D0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let default = "eth0\t00000000\t01004D0A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert!(!has_default_route(header));
        assert!(!has_default_route(&format!("{header}{link}")));
        assert!(has_default_route(&format!("{header}{link}{default}")));
    }
}

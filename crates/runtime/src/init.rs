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

/// Runs `argv` as the app, supervised as described above; returns its exit code.
pub fn run(status_file: &Path, argv: &[String]) -> i32 {
    let _ = std::fs::remove_file(status_file);
    let Some((program, args)) = argv.split_first() else {
        eprintln!("berth container-init: no command given");
        write_status(status_file, 127);
        return 127;
    };
    let child = match Command::new(program).args(args).process_group(0).spawn() {
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

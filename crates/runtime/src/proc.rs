//! Process liveness from `/proc`, robust against PID reuse: a process is identified by its
//! PID together with its start time.

use std::fs;

/// A host process: PID plus the start time (clock ticks since boot) from `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessIdentity {
    /// Host PID.
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat`.
    pub start_ticks: u64,
}

impl ProcessIdentity {
    /// Reads the identity of a live process.
    pub fn of(pid: u32) -> Option<Self> {
        start_ticks(pid).map(|start_ticks| Self { pid, start_ticks })
    }

    /// Whether this same process (not a later one that reused the PID) is still alive and
    /// not a zombie.
    pub fn alive(&self) -> bool {
        match fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Ok(stat) => {
                let Some((state, fields)) = parse_stat(&stat) else {
                    return false;
                };
                state != 'Z' && fields == self.start_ticks
            }
            Err(_) => false,
        }
    }
}

fn start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, t)| t)
}

/// Returns (state, starttime) from a `/proc/PID/stat` line. The command name may hold spaces
/// and parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // fields[0] is field 3 (state); starttime is field 22.
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_identity_differs_for_other_start() {
        let me = ProcessIdentity::of(std::process::id()).expect("own stat");
        assert!(me.alive());
        let forged = ProcessIdentity {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(!forged.alive());
    }

    #[test]
    fn parses_names_with_parens() {
        let line = "42 (a) b) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 999 20";
        assert_eq!(parse_stat(line), Some(('S', 999)));
    }
}

//! The cgroup layout crun needs. On hosts with cgroup v1 and v2 mounted side by side
//! ("hybrid"), crun refuses to run while any controller is attached to the v2 hierarchy
//! (`cgroups in hybrid mode not supported, drop all controllers from cgroupv2`). Mounting each
//! such controller's v1 hierarchy moves it off v2 and crun works.

use crate::RuntimeError;
use std::path::Path;
use std::process::Command;

const UNIFIED: &str = "/sys/fs/cgroup/unified/cgroup.controllers";

/// Controllers attached to the v2 hierarchy of a hybrid host (empty on pure v1 or v2 hosts).
pub fn hybrid_v2_controllers() -> Vec<String> {
    std::fs::read_to_string(UNIFIED)
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Makes sure crun can create containers: on a hybrid host, mounts the v1 hierarchy of every
/// controller still on v2 (needs root), or explains exactly what to run.
pub fn ensure_crun_compatible() -> Result<(), RuntimeError> {
    let controllers = hybrid_v2_controllers();
    if controllers.is_empty() {
        return Ok(());
    }
    for c in &controllers {
        let dir = format!("/sys/fs/cgroup/{c}");
        let fixed = std::fs::create_dir_all(&dir).is_ok()
            && Command::new("mount")
                .args(["-t", "cgroup", "-o", c, "cgroup", &dir])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
        if !fixed && !Path::new(&dir).join("cgroup.procs").exists() {
            return Err(RuntimeError::Cgroups(format!(
                "crun cannot run containers while the {c} cgroup controller is attached to cgroup v2 \
                 (hybrid mode). Run as root: mkdir -p {dir} && mount -t cgroup -o {c} cgroup {dir}"
            )));
        }
    }
    let left = hybrid_v2_controllers();
    if !left.is_empty() {
        return Err(RuntimeError::Cgroups(format!(
            "cgroup v2 still holds controllers {left:?} in hybrid mode; crun will refuse to start \
             containers. Mount their v1 hierarchies under /sys/fs/cgroup/<name> as root"
        )));
    }
    tracing::info!(
        ?controllers,
        "moved cgroup controllers from v2 to v1 so crun can run"
    );
    Ok(())
}

/// How many times the kernel's out-of-memory killer has killed a process in the cgroup at
/// `path` (relative to the hierarchy roots, as in the bundle's `cgroupsPath`), or `None` if
/// the cgroup does not exist. Reads `memory.oom_control` (v1) or `memory.events` (v2).
pub fn oom_kills(path: &str) -> Option<u64> {
    let rel = path.trim_start_matches('/');
    let candidates = [
        Path::new("/sys/fs/cgroup/memory")
            .join(rel)
            .join("memory.oom_control"),
        Path::new("/sys/fs/cgroup").join(rel).join("memory.events"),
    ];
    candidates
        .iter()
        .find_map(|f| std::fs::read_to_string(f).ok())
        .map(|text| oom_kill_count(&text))
}

/// What a container's cgroup has used so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CgroupUsage {
    /// CPU time, seconds.
    pub cpu_seconds: f64,
    /// Memory charged to it now (page cache included), bytes.
    pub memory_bytes: u64,
    /// Processes the out-of-memory killer ended.
    pub oom_kills: u64,
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// CPU, memory and OOM kills of the cgroup at `path` (as in [`oom_kills`]), from the v1
/// hierarchies (`cpuacct`, `memory`) or the v2 one; `None` when the cgroup does not exist.
pub fn usage(path: &str) -> Option<CgroupUsage> {
    let rel = path.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    let v1_cpu = ["cpuacct", "cpu,cpuacct"]
        .iter()
        .find_map(|h| read_u64(&root.join(h).join(rel).join("cpuacct.usage")));
    let v1_mem = read_u64(&root.join("memory").join(rel).join("memory.usage_in_bytes"));
    let (cpu_seconds, memory_bytes) = match (v1_cpu, v1_mem) {
        (None, None) => {
            let dir = root.join(rel);
            let stat = std::fs::read_to_string(dir.join("cpu.stat")).ok();
            let mem = read_u64(&dir.join("memory.current"));
            if stat.is_none() && mem.is_none() {
                return None;
            }
            let usec = stat
                .as_deref()
                .and_then(|t| t.lines().find_map(|l| l.strip_prefix("usage_usec ")))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0);
            (usec as f64 / 1e6, mem.unwrap_or(0))
        }
        (cpu, mem) => (cpu.unwrap_or(0) as f64 / 1e9, mem.unwrap_or(0)),
    };
    Some(CgroupUsage {
        cpu_seconds,
        memory_bytes,
        oom_kills: oom_kills(path).unwrap_or(0),
    })
}

/// The `oom_kill N` counter of a `memory.oom_control` or `memory.events` file.
fn oom_kill_count(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_oom_kill_counter_of_either_version() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        let v2 = "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(oom_kill_count(v1), 2);
        assert_eq!(oom_kill_count(v2), 1);
        assert_eq!(oom_kill_count("oom_kill_disable 0\n"), 0);
        assert_eq!(oom_kills("/berth/surely-no-such-cgroup-here"), None);
        assert_eq!(usage("/berth/surely-no-such-cgroup-here"), None);
    }
}

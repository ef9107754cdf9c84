//! Keeping a worker on its own core while it serves kept-alive connections.
//!
//! A worker serving kept-alive connections on the ring ([`crate::uring`]) does little work
//! per request and sleeps between bursts of them; each time it wakes, the scheduler may move
//! it to another core (towards the client or instance that woke it). Left free, under a
//! kept-alive load of small responses (`bench/edge-vs-nginx.sh`, 2 cores) the edge's p99 went
//! from run to run between 1.2 and 3.7 ms; kept each on its own core, the workers gave
//! 1.2–1.4 ms in every run, for the same requests per second (p99.9: 2.5–3.3 ms from 3.0–5.6).
//!
//! A worker accepting a new connection for every request needs more of a core, beside the
//! clients and instances it shares the machine with, and there the scheduler's freedom to
//! move it is worth more: pinned, it served 18% fewer requests per second. So a worker is
//! pinned only while its work is mostly kept-alive connections — more connections on the
//! ring than it accepted in the last [`CHECK_EVERY`] — and let go otherwise. Only where there
//! is exactly one worker per core the edge may use: with fewer workers, pinning would leave
//! cores unused to them.

use rustix::thread::CpuSet;
use std::cell::Cell;
use std::io;
use std::time::Duration;

/// How often a worker weighs whether to stay on its core.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);

/// The core each worker may be kept on: none when the edge does not run one worker per core
/// it may use (or the cores it may use cannot be read).
pub fn cores_for(workers: usize) -> Vec<Option<usize>> {
    let allowed = match rustix::thread::sched_getaffinity(None) {
        Ok(set) => set,
        Err(_) => return vec![None; workers],
    };
    let cores: Vec<usize> = (0..CpuSet::MAX_CPU)
        .filter(|&c| allowed.is_set(c))
        .collect();
    if workers < 2 || cores.len() != workers {
        return vec![None; workers];
    }
    cores.into_iter().map(Some).collect()
}

/// What a worker counts to weigh pinning: its connections on the ring and the connections
/// it accepted since the last check.
#[derive(Debug, Default)]
pub struct Load {
    on_ring: Cell<usize>,
    accepted: Cell<usize>,
}

impl Load {
    pub fn accepted(&self) {
        self.accepted.set(self.accepted.get() + 1);
    }

    /// A connection on the ring, counted until the guard drops.
    pub fn on_ring(&self) -> RingGuard<'_> {
        self.on_ring.set(self.on_ring.get() + 1);
        RingGuard(self)
    }

    /// Whether the worker's work since the last call was mostly kept-alive connections
    /// (and starts counting anew).
    pub fn mostly_kept_alive(&self) -> bool {
        self.on_ring.get() > self.accepted.replace(0)
    }
}

/// Counts a connection on the ring while it lives.
pub struct RingGuard<'a>(&'a Load);

impl Drop for RingGuard<'_> {
    fn drop(&mut self) {
        self.0.on_ring.set(self.0.on_ring.get().saturating_sub(1));
    }
}

/// A worker thread's pinning to `core`: changed only when asked for the other state.
#[derive(Debug)]
pub struct Pinning {
    core: usize,
    /// The cores the worker may use when not pinned.
    free: CpuSet,
    pinned: bool,
}

impl Pinning {
    /// For the calling thread, to be kept on `core` when asked.
    pub fn new(core: usize) -> io::Result<Self> {
        Ok(Self {
            core,
            free: rustix::thread::sched_getaffinity(None)?,
            pinned: false,
        })
    }

    /// Keeps the calling thread on its core (`true`) or lets it run on any it may use.
    pub fn set(&mut self, pinned: bool) -> io::Result<()> {
        if pinned == self.pinned {
            return Ok(());
        }
        let set = if pinned {
            let mut one = CpuSet::new();
            one.set(self.core);
            one
        } else {
            self.free
        };
        rustix::thread::sched_setaffinity(None, &set)?;
        self.pinned = pinned;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<usize> {
        let set = rustix::thread::sched_getaffinity(None).expect("affinity");
        (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect()
    }

    #[test]
    fn one_core_per_worker_only_when_the_counts_match() {
        let cores = allowed();
        let planned = cores_for(cores.len());
        if cores.len() >= 2 {
            assert_eq!(planned, cores.iter().copied().map(Some).collect::<Vec<_>>());
        } else {
            assert_eq!(planned, vec![None]);
        }
        assert_eq!(cores_for(cores.len() + 1), vec![None; cores.len() + 1]);
        assert_eq!(cores_for(1), vec![None]);
    }

    #[test]
    fn a_pinned_thread_runs_on_its_core_and_is_let_go_again() {
        let cores = allowed();
        let last = *cores.last().expect("a core");
        let all = cores.clone();
        std::thread::spawn(move || {
            let mut pinning = Pinning::new(last).expect("pinning");
            pinning.set(true).expect("pin");
            assert_eq!(allowed(), vec![last]);
            assert_eq!(rustix::thread::sched_getcpu(), last);
            pinning.set(false).expect("unpin");
            assert_eq!(allowed(), all);
        })
        .join()
        .expect("thread");
        // The test's own thread was never touched.
        assert_eq!(allowed(), cores);
    }

    #[test]
    fn kept_alive_work_is_told_from_new_connections() {
        let load = Load::default();
        assert!(!load.mostly_kept_alive(), "an idle worker stays free");
        let a = load.on_ring();
        let b = load.on_ring();
        assert!(load.mostly_kept_alive());
        for _ in 0..5 {
            load.accepted();
        }
        assert!(
            !load.mostly_kept_alive(),
            "5 new connections outweigh 2 kept alive"
        );
        assert!(
            load.mostly_kept_alive(),
            "the count of new ones starts anew"
        );
        drop((a, b));
        assert!(!load.mostly_kept_alive(), "no connection left on the ring");
    }
}

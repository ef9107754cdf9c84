//! The edge's access log: one JSON line per response of a routed request (app, release and
//! a readable line: method, path, status, time, client), handed from the request path to a
//! writer thread over a bounded channel (a full channel drops lines rather than slowing
//! requests, and says how many) and appended to a file the control plane ingests into each
//! app's log as stream `access`.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

/// Lines waiting for the writer at most.
const QUEUE: usize = 65_536;

/// One access-log entry as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    pub app: String,
    pub release: u32,
    /// `GET /path 200 3.2ms 10.0.0.1`.
    pub line: String,
}

/// The sending side, cloned into every worker.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: SyncSender<AccessEntry>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Starts the writer thread appending to `path`.
    pub fn start(path: PathBuf) -> Self {
        let (tx, rx) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        std::thread::spawn(move || write_loop(path, rx, counter));
        Self { tx, dropped }
    }

    /// Records one response.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        app: &str,
        release: u32,
        method: &str,
        path: &str,
        status: u16,
        elapsed: Duration,
        client: std::net::IpAddr,
    ) {
        let entry = AccessEntry {
            ts: crate::now_millis(),
            app: app.to_string(),
            release,
            line: format!(
                "{method} {path} {status} {:.1}ms {client}",
                elapsed.as_secs_f64() * 1000.0
            ),
        };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(entry) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn write_loop(path: PathBuf, rx: Receiver<AccessEntry>, dropped: Arc<AtomicU64>) {
    let file = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot open the access log; access lines are not kept");
            return;
        }
    };
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, file);
    let mut reported = 0;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(entry) => {
                if serde_json::to_writer(&mut out, &entry).is_ok() {
                    let _ = out.write_all(b"\n");
                }
                // Drain what else is waiting before flushing.
                while let Ok(entry) = rx.try_recv() {
                    if serde_json::to_writer(&mut out, &entry).is_ok() {
                        let _ = out.write_all(b"\n");
                    }
                }
                let _ = out.flush();
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let _ = out.flush();
                return;
            }
        }
        let lost = dropped.load(Ordering::Relaxed);
        if lost > reported {
            tracing::warn!(
                dropped = lost - reported,
                "access log lines dropped: the writer fell behind"
            );
            reported = lost;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_reach_the_file_as_json_lines() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("access.log");
        let log = AccessLog::start(path.clone());
        log.record(
            "shop",
            3,
            "GET",
            "/cart?id=1",
            200,
            Duration::from_micros(3_250),
            "10.0.0.9".parse().unwrap(),
        );
        let mut text = String::new();
        for _ in 0..100 {
            text = std::fs::read_to_string(&path).unwrap_or_default();
            if !text.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let e: AccessEntry = serde_json::from_str(text.trim()).unwrap();
        assert_eq!((e.app.as_str(), e.release), ("shop", 3));
        assert_eq!(e.line, "GET /cart?id=1 200 3.2ms 10.0.0.9");
    }
}

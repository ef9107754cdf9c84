//! The edge's access log: one JSON line per response of a routed request (app, release and
//! a readable line: method, path, status, time, client), handed from the request path to a
//! writer thread over a bounded channel (a full channel drops lines rather than slowing
//! requests, and says how many) and appended to a file the control plane ingests into each
//! app's log as stream `access`. Each worker thread encodes its lines into a buffer of its
//! own (no allocation per request, no lock shared between threads; buffers, not lines,
//! cross to the writer) and hands full buffers over, and what it has ten times a second.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Buffers waiting for the writer at most.
const QUEUE: usize = 64;

/// A worker hands its buffer over once it holds this much (or at its next flush).
const BUFFER: usize = 64 * 1024;

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

/// The same, borrowed, as a worker encodes it.
#[derive(Serialize)]
struct EntryRef<'a> {
    ts: i64,
    app: &'a str,
    release: u32,
    line: &'a str,
}

/// The writer's side, shared by the workers.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: SyncSender<(Vec<u8>, u64)>,
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

    /// A buffer for one worker thread: lines are encoded there, with no allocation and no
    /// lock another thread holds, and handed to the writer in batches.
    pub fn worker(&self) -> WorkerLog {
        WorkerLog {
            pending: Arc::new(Mutex::new(Pending::default())),
            log: self.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct Pending {
    buf: Vec<u8>,
    lines: u64,
    line: String,
}

/// One worker's access log: cloned into each of its connections; flushed by the worker
/// about ten times a second.
#[derive(Debug, Clone)]
pub struct WorkerLog {
    pending: Arc<Mutex<Pending>>,
    log: AccessLog,
}

impl WorkerLog {
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
        use std::fmt::Write as _;
        let full = {
            let mut guard = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let p = &mut *guard;
            p.line.clear();
            let micros = elapsed.as_micros();
            let _ = write!(
                p.line,
                "{method} {path} {status} {}.{}ms {client}",
                micros / 1000,
                (micros % 1000) / 100
            );
            let entry = EntryRef {
                ts: crate::now_millis(),
                app,
                release,
                line: &p.line,
            };
            if serde_json::to_writer(&mut p.buf, &entry).is_ok() {
                p.buf.push(b'\n');
                p.lines += 1;
            }
            (p.buf.len() >= BUFFER).then(|| take(p))
        };
        if let Some(batch) = full {
            self.send(batch);
        }
    }

    /// Hands what is buffered to the writer.
    pub fn flush(&self) {
        let batch = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            (p.lines > 0).then(|| take(&mut p))
        };
        if let Some(batch) = batch {
            self.send(batch);
        }
    }

    fn send(&self, batch: (Vec<u8>, u64)) {
        let lines = batch.1;
        if let Err(TrySendError::Full(_)) = self.log.tx.try_send(batch) {
            self.log.dropped.fetch_add(lines, Ordering::Relaxed);
        }
    }
}

fn take(p: &mut Pending) -> (Vec<u8>, u64) {
    let buf = std::mem::replace(&mut p.buf, Vec::with_capacity(BUFFER + 512));
    (buf, std::mem::take(&mut p.lines))
}

fn write_loop(path: PathBuf, rx: Receiver<(Vec<u8>, u64)>, dropped: Arc<AtomicU64>) {
    let mut file = match std::fs::OpenOptions::new()
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
    let mut reported = 0;
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok((buf, _)) => {
                if let Err(e) = file.write_all(&buf) {
                    tracing::warn!(error = %e, "writing the access log failed");
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
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
        let log = AccessLog::start(path.clone()).worker();
        log.record(
            "shop",
            3,
            "GET",
            "/cart?id=1",
            200,
            Duration::from_micros(3_250),
            "10.0.0.9".parse().unwrap(),
        );
        log.flush();
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

//! berth's observability plane, logs first.
//!
//! Containers write stdout and stderr to plain files opened in append mode (a durable buffer
//! that survives any berth restart). The [`ingest::Ingester`] tails those files by offset and
//! appends each complete line, labelled with app, release, process and instance, to the app's
//! log in the [`store::LogStore`]; offsets are persisted so that nothing is lost or doubled
//! across restarts; ingested bytes are freed from the raw files, and secret values are
//! redacted ([`redact`]) before a line is stored. Build logs are kept as they were written, one file per build.
//!
//! [`metrics`] is berth's `/metrics`: platform counters, the edge's request counts per app
//! and release, and each instance's CPU, memory, restarts and OOM kills.
#![forbid(unsafe_code)]

pub mod grafana;
pub mod ingest;
pub mod loki;
pub mod metrics;
pub mod redact;
pub mod store;
pub mod traces;

pub use store::{Cursor, LogFilter, LogRecord, LogStore, Retention};

/// Errors of the log store.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ObserveError {
    let context = context.into();
    move |source| ObserveError::Io { context, source }
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

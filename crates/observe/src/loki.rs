//! Export of every app's log to Loki's push API (`POST /loki/api/v1/push`, JSON), when a
//! Loki is configured. Each line goes with its labels (project, app, release, process,
//! instance, stream, commit) and the time berth stored it. What was pushed is remembered
//! per app as a log position (`<logs>/export/loki.json`), saved after each accepted batch:
//! an unreachable Loki delays lines, never loses them (as long as the log keeps them), and a
//! restart of berth sends nothing twice.

use crate::store::{Cursor, LogRecord, LogStore};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Lines in one push at most.
const BATCH_LINES: usize = 5_000;

/// Errors of the Loki export.
#[derive(Debug, thiserror::Error)]
pub enum LokiError {
    #[error("the Loki URL {0:?} must be an http:// or https:// URL")]
    BadUrl(String),
    #[error("Loki at {url} is unavailable: {reason}")]
    Unavailable { url: String, reason: String },
    #[error(transparent)]
    Store(#[from] crate::ObserveError),
}

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LokiTarget {
    /// Loki's base URL (`http://loki:3100`).
    pub url: String,
    /// `X-Scope-OrgID` for a multi-tenant Loki.
    pub tenant: Option<String>,
}

impl LokiTarget {
    /// The push endpoint; refuses what is not an HTTP URL.
    pub fn push_url(&self) -> Result<String, LokiError> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(LokiError::BadUrl(self.url.clone()));
        }
        Ok(format!(
            "{}/loki/api/v1/push",
            self.url.trim_end_matches('/')
        ))
    }
}

/// The labels of a Loki stream.
fn stream_labels(r: &LogRecord) -> BTreeMap<&'static str, String> {
    let mut l = BTreeMap::from([
        ("project", r.project.clone()),
        ("app", r.app.clone()),
        ("release", r.release.to_string()),
        ("process", r.process.clone()),
        ("instance", format!("{}.{}", r.process, r.index)),
        ("stream", r.stream.clone()),
    ]);
    if let Some(c) = &r.commit {
        l.insert("commit", c.clone());
    }
    l
}

/// The push body: one stream per label set, in the order the lines came.
pub fn push_body(records: &[LogRecord]) -> serde_json::Value {
    let mut streams: Vec<(BTreeMap<&'static str, String>, Vec<serde_json::Value>)> = Vec::new();
    for r in records {
        let labels = stream_labels(r);
        let ns = (r.ts as i128 * 1_000_000).to_string();
        let value = serde_json::json!([ns, r.line]);
        match streams.iter_mut().find(|(l, _)| *l == labels) {
            Some((_, values)) => values.push(value),
            None => streams.push((labels, vec![value])),
        }
    }
    serde_json::json!({
        "streams": streams
            .into_iter()
            .map(|(stream, values)| serde_json::json!({ "stream": stream, "values": values }))
            .collect::<Vec<_>>()
    })
}

/// The exporter: the store, the target and how far each app's log was pushed.
#[derive(Debug)]
pub struct LokiExporter {
    store: LogStore,
    target: LokiTarget,
    push_url: String,
    state_file: PathBuf,
    pushed: BTreeMap<String, Cursor>,
    client: reqwest::Client,
}

impl LokiExporter {
    /// An exporter that resumes where the last one stopped.
    pub fn open(store: LogStore, target: LokiTarget) -> Result<Self, LokiError> {
        let push_url = target.push_url()?;
        let dir = store.root().join("export");
        let _ = std::fs::create_dir_all(&dir);
        let state_file = dir.join("loki.json");
        let pushed: BTreeMap<String, String> = std::fs::read(&state_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(Self {
            store,
            target,
            push_url,
            state_file,
            pushed: pushed
                .into_iter()
                .filter_map(|(app, c)| Some((app, c.parse().ok()?)))
                .collect(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        })
    }

    fn save(&self) {
        let state: BTreeMap<&String, String> = self
            .pushed
            .iter()
            .map(|(a, c)| (a, c.to_string()))
            .collect();
        if let Ok(bytes) = serde_json::to_vec(&state) {
            let tmp = self.state_file.with_extension("tmp");
            if std::fs::write(&tmp, bytes).is_ok() {
                let _ = std::fs::rename(&tmp, &self.state_file);
            }
        }
    }

    /// Pushes every line not pushed yet; returns how many went. Stops at the first batch
    /// Loki does not take (the next call retries it); a batch Loki refuses for good (a 4xx
    /// answer other than 429, such as lines older than it accepts) is skipped and logged.
    pub async fn push_pending(&mut self) -> Result<usize, LokiError> {
        let mut sent = 0;
        for app in self.store.apps() {
            loop {
                let from = self.pushed.get(&app).copied().unwrap_or_default();
                let (store, a) = (self.store.clone(), app.clone());
                let (entries, next) =
                    tokio::task::spawn_blocking(move || store.entries_after(&a, from, BATCH_LINES))
                        .await
                        .map_err(|e| LokiError::Unavailable {
                            url: self.push_url.clone(),
                            reason: e.to_string(),
                        })??;
                if entries.is_empty() {
                    if next != from {
                        self.pushed.insert(app.clone(), next);
                        self.save();
                    }
                    break;
                }
                let records: Vec<LogRecord> = entries.into_iter().map(|(r, _)| r).collect();
                self.push(&app, &records).await?;
                sent += records.len();
                self.pushed.insert(app.clone(), next);
                self.save();
            }
        }
        Ok(sent)
    }

    async fn push(&self, app: &str, records: &[LogRecord]) -> Result<(), LokiError> {
        let mut req = self.client.post(&self.push_url).json(&push_body(records));
        if let Some(t) = &self.target.tenant {
            req = req.header("X-Scope-OrgID", t);
        }
        let unavailable = |reason: String| LokiError::Unavailable {
            url: self.push_url.clone(),
            reason,
        };
        let resp = req.send().await.map_err(|e| unavailable(e.to_string()))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        if status.is_client_error() && status.as_u16() != 429 {
            tracing::warn!(%app, lines = records.len(), %status, answer = %text.trim(), "Loki refused log lines for good; skipping them");
            return Ok(());
        }
        Err(unavailable(format!("{status} {}", text.trim())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_grouped_into_streams_by_their_labels() {
        let rec = |release: u32, line: &str| LogRecord {
            ts: 1_700_000_000_123,
            project: "default".into(),
            app: "shop".into(),
            release,
            process: "web".into(),
            index: 1,
            stream: "runtime".into(),
            commit: Some("abc123".into()),
            source: None,
            line: line.into(),
        };
        let body = push_body(&[rec(1, "a"), rec(2, "b"), rec(1, "c")]);
        let streams = body["streams"].as_array().unwrap();
        assert_eq!(streams.len(), 2);
        assert_eq!(streams[0]["stream"]["release"], "1");
        assert_eq!(streams[0]["stream"]["instance"], "web.1");
        assert_eq!(streams[0]["stream"]["commit"], "abc123");
        assert_eq!(
            streams[0]["values"],
            serde_json::json!([["1700000000123000000", "a"], ["1700000000123000000", "c"]])
        );
        let bad = LokiTarget {
            url: "loki:3100".into(),
            tenant: None,
        };
        assert!(bad.push_url().unwrap_err().to_string().contains("http://"));
    }
}

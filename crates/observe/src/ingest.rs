//! Tails raw container output files by offset into the labelled app logs.

use crate::redact::Redactor;
use crate::store::block::Header;
use crate::store::{LogRecord, LogStore};
use crate::{io, now_millis, ObserveError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

/// Labels of one container's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Labels {
    /// Project of the app.
    #[serde(default = "crate::store::block::default_project")]
    pub project: String,
    /// App name.
    pub app: String,
    /// Release version.
    pub release: u32,
    /// Process type.
    pub process: String,
    /// Instance index.
    pub index: u32,
    /// The git commit the release was built from, when it came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// A followed container's output: its labels and how far it is ingested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    #[serde(flatten)]
    pub labels: Labels,
    /// Bytes of the raw file already ingested.
    pub offset: u64,
}

/// The `app` of the source that is the edge's access log: its lines name their own app.
pub const ACCESS_SOURCE_APP: &str = "*";

/// A line of the edge's access log.
#[derive(Deserialize)]
struct AccessLine {
    ts: i64,
    app: String,
    release: u32,
    line: String,
}

/// Raw output read in one pass over a source at most.
const READ_CHUNK: u64 = 4 << 20;

/// Longest line kept; longer lines are split.
const MAX_LINE: usize = 16 * 1024;

/// The ingester: a set of sources and their offsets, persisted in `<root>/offsets.json`.
#[derive(Debug)]
pub struct Ingester {
    store: LogStore,
    sources: BTreeMap<String, Source>,
    state_file: PathBuf,
    /// Secret values to hide, per app.
    redactors: BTreeMap<String, Redactor>,
    /// The read buffer, kept between passes.
    buf: Vec<u8>,
}

impl Ingester {
    /// Loads the persisted sources and offsets.
    pub fn open(store: LogStore) -> Self {
        let state_file = store.root().join("offsets.json");
        let mut sources: BTreeMap<String, Source> = std::fs::read(&state_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        // Lines may have been stored after the offsets were last saved (a crash in between):
        // each record carries where its line ended, so resume after the last one stored.
        for (id, src) in sources.iter_mut() {
            let apps = if src.labels.app == ACCESS_SOURCE_APP {
                store.apps()
            } else {
                vec![src.labels.app.clone()]
            };
            for app in apps {
                if let Some(stored) = store.last_source_offset(&app, id) {
                    src.offset = src.offset.max(stored);
                }
            }
        }
        Self {
            store,
            sources,
            state_file,
            redactors: BTreeMap::new(),
            buf: Vec::new(),
        }
    }

    /// Sets the secret values hidden in an app's lines from now on.
    pub fn set_redactor(&mut self, app: &str, redactor: Redactor) {
        if redactor.is_empty() {
            self.redactors.remove(app);
        } else {
            self.redactors.insert(app.to_string(), redactor);
        }
    }

    /// Starts following a container's output (keeps the offset if already followed).
    pub fn add(&mut self, instance_id: &str, labels: Labels) {
        self.sources
            .entry(instance_id.to_string())
            .or_insert_with(|| Source { labels, offset: 0 });
        self.persist();
    }

    /// Ingests what is left of a container's output, then stops following it and removes
    /// its raw file.
    pub fn remove(&mut self, instance_id: &str) {
        let _ = self.poll_one(instance_id);
        if self.sources.remove(instance_id).is_some() {
            let _ = std::fs::remove_file(self.store.raw_path(instance_id));
            self.persist();
        }
    }

    /// Ids followed now.
    pub fn followed(&self) -> Vec<String> {
        self.sources.keys().cloned().collect()
    }

    fn persist(&self) {
        if let Ok(bytes) = serde_json::to_vec(&self.sources) {
            let tmp = self.state_file.with_extension("tmp");
            if std::fs::write(&tmp, bytes).is_ok() {
                let _ = std::fs::rename(&tmp, &self.state_file);
            }
        }
    }

    fn poll_one(&mut self, id: &str) -> Result<usize, ObserveError> {
        let Some(src) = self.sources.get(id).cloned() else {
            return Ok(0);
        };
        let path = self.store.raw_path(id);
        let mut f = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(_) => return Ok(0),
        };
        let len = f.metadata().map_err(io("reading raw log"))?.len();
        if len <= src.offset {
            return Ok(0);
        }
        f.seek(SeekFrom::Start(src.offset))
            .map_err(io("reading raw log"))?;
        // One read buffer for every pass (its pages are faulted in once).
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let read = (&mut f).take(READ_CHUNK).read_to_end(&mut buf);
        let result = match read {
            Err(e) => Err(io("reading raw log")(e)),
            Ok(_) if src.labels.app == ACCESS_SOURCE_APP => self.ingest_access(id, &src, &f, &buf),
            Ok(_) => self.ingest_output(id, &src, &f, &buf),
        };
        self.buf = buf;
        result
    }

    /// Stores the complete lines of a container's output as one block, then frees them
    /// from the raw file.
    fn ingest_output(
        &mut self,
        id: &str,
        src: &Source,
        f: &std::fs::File,
        buf: &[u8],
    ) -> Result<usize, ObserveError> {
        let redactor = self.redactors.get(&src.labels.app);
        let (lines, consumed) = complete_lines(buf, redactor);
        if consumed == 0 {
            return Ok(0);
        }
        let count = memchr::memchr_iter(b'\n', &lines).count();
        let offset = src.offset + consumed as u64;
        let l = &src.labels;
        let header = Header {
            ts: now_millis(),
            project: l.project.clone(),
            release: l.release,
            process: l.process.clone(),
            index: l.index,
            stream: "runtime".into(),
            commit: l.commit.clone(),
            source: Some(id.to_string()),
            end: offset,
            n: 0,
        };
        self.store.append_lines(&l.app, header, &lines)?;
        if let Some(s) = self.sources.get_mut(id) {
            s.offset = offset;
        }
        // The raw file is a buffer: what is ingested is freed (and no unredacted copy of a
        // line stays on disk). Offsets stay valid; the file keeps its length.
        punch_hole(f, src.offset, consumed as u64);
        Ok(count)
    }

    /// Stores the complete lines of the edge's access log in their apps' logs (stream
    /// `access`), then frees them from the raw file.
    fn ingest_access(
        &mut self,
        id: &str,
        src: &Source,
        f: &std::fs::File,
        buf: &[u8],
    ) -> Result<usize, ObserveError> {
        let complete = memchr::memrchr(b'\n', buf).map_or(0, |p| p + 1);
        let mut records: Vec<LogRecord> = Vec::new();
        let mut end = 0usize;
        for raw in buf[..complete].split_inclusive(|b| *b == b'\n') {
            end += raw.len();
            let Ok(a) = serde_json::from_slice::<AccessLine>(&raw[..raw.len() - 1]) else {
                continue;
            };
            let line = match self.redactors.get(&a.app) {
                Some(r) => r.apply(&a.line),
                None => a.line,
            };
            // Lines of the same app and release within a second share one stored block
            // (and its time).
            let ts = match records.last() {
                Some(p) if p.app == a.app && p.release == a.release && a.ts - p.ts < 1000 => p.ts,
                _ => a.ts,
            };
            records.push(LogRecord {
                ts,
                project: crate::store::block::default_project(),
                app: a.app,
                release: a.release,
                process: "edge".into(),
                index: 0,
                stream: "access".into(),
                commit: None,
                source: Some((id.to_string(), src.offset + end as u64)),
                line,
            });
        }
        if complete == 0 {
            return Ok(0);
        }
        self.store.append(&records)?;
        if let Some(s) = self.sources.get_mut(id) {
            s.offset = src.offset + complete as u64;
        }
        punch_hole(f, src.offset, complete as u64);
        Ok(records.len())
    }

    /// Ingests new complete lines of one source now; returns how many.
    pub fn poll_instance(&mut self, instance_id: &str) -> usize {
        let n = self.poll_one(instance_id).unwrap_or(0);
        if n > 0 {
            self.persist();
        }
        n
    }

    /// Ingests new complete lines of every source; returns how many.
    pub fn poll(&mut self) -> usize {
        let ids: Vec<String> = self.sources.keys().cloned().collect();
        let mut total = 0;
        for id in ids {
            match self.poll_one(&id) {
                Ok(n) => total += n,
                Err(e) => tracing::warn!(instance = %id, error = %e, "log ingest failed"),
            }
        }
        if total > 0 {
            self.persist();
        }
        total
    }
}

/// The complete lines at the start of `buf` as they are stored (valid UTF-8, no carriage
/// returns, secret values redacted, lines longer than [`MAX_LINE`] split), and how many
/// bytes of `buf` they took. Output that needs none of that is stored as it came.
fn complete_lines<'a>(
    buf: &'a [u8],
    redactor: Option<&Redactor>,
) -> (std::borrow::Cow<'a, [u8]>, usize) {
    let complete = memchr::memrchr(b'\n', buf).map_or(0, |p| p + 1);
    let clean = &buf[..complete];
    let plain = redactor.is_none()
        && std::str::from_utf8(clean).is_ok()
        && memchr::memchr(b'\r', clean).is_none()
        && {
            let mut last = 0usize;
            memchr::memchr_iter(b'\n', clean).all(|p| {
                let ok = p - last <= MAX_LINE;
                last = p + 1;
                ok
            })
        };
    if plain && buf.len() - complete <= MAX_LINE {
        return (std::borrow::Cow::Borrowed(clean), complete);
    }
    let mut out = Vec::with_capacity(buf.len() + 64);
    let mut consumed = 0usize;
    let mut rest = buf;
    loop {
        let cut = match memchr::memchr(b'\n', rest) {
            Some(p) if p <= MAX_LINE => Some((p, p + 1)),
            _ if rest.len() > MAX_LINE => Some((MAX_LINE, MAX_LINE)),
            _ => None,
        };
        let Some((end, next)) = cut else { break };
        let line = String::from_utf8_lossy(&rest[..end]);
        let line = line.trim_end_matches('\r');
        match redactor {
            Some(r) => out.extend_from_slice(r.apply(line).as_bytes()),
            None => out.extend_from_slice(line.as_bytes()),
        }
        out.push(b'\n');
        consumed += next;
        rest = &rest[next..];
    }
    (std::borrow::Cow::Owned(out), consumed)
}

/// Frees the blocks of `[offset, offset + len)` (zeroes partial blocks at the edges).
pub fn punch_hole(f: &std::fs::File, offset: u64, len: u64) {
    use nix::fcntl::{fallocate, FallocateFlags};
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    if len == 0 {
        return;
    }
    let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    if let Err(e) = fallocate(f.as_raw_fd(), flags, off, len) {
        tracing::debug!(error = %e, "freeing ingested raw log failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn labels(app: &str) -> Labels {
        Labels {
            project: "default".into(),
            app: app.into(),
            release: 1,
            process: "web".into(),
            index: 0,
            commit: Some("0123abcd".into()),
        }
    }

    #[test]
    fn ingests_complete_lines_once_across_restarts() {
        let d = tempfile::tempdir().unwrap();
        let store = LogStore::open(d.path()).unwrap();
        let mut ing = Ingester::open(store.clone());
        ing.add("hello-v1-web-0-x", labels("hello"));
        let raw = store.raw_path("hello-v1-web-0-x");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&raw)
            .unwrap();
        write!(f, "one\ntwo\npart").unwrap();
        assert_eq!(ing.poll(), 2);
        assert_eq!(
            store.tail("hello", 1).unwrap().0[0].source,
            Some(("hello-v1-web-0-x".to_string(), 8))
        );
        assert_eq!(ing.poll(), 0);
        // A new ingester (berth restarted) picks up where the last one stopped.
        let mut again = Ingester::open(store.clone());
        writeln!(f, "ial").unwrap();
        assert_eq!(again.poll(), 1);
        let (recs, _) = store.tail("hello", 10).unwrap();
        let lines: Vec<_> = recs.iter().map(|r| r.line.as_str()).collect();
        assert_eq!(lines, ["one", "two", "partial"]);
        // What was ingested no longer lies in the raw file.
        let left = std::fs::read(&raw).unwrap();
        assert!(!String::from_utf8_lossy(&left).contains("two"), "{left:?}");
        again.remove("hello-v1-web-0-x");
        assert!(!raw.exists());
    }

    #[test]
    fn a_crash_between_storing_lines_and_saving_offsets_doubles_nothing() {
        let d = tempfile::tempdir().unwrap();
        let store = LogStore::open(d.path()).unwrap();
        let mut ing = Ingester::open(store.clone());
        ing.add("w-v1-web-0-x", labels("w"));
        let saved_before = std::fs::read(d.path().join("offsets.json")).unwrap();
        let raw = store.raw_path("w-v1-web-0-x");
        std::fs::write(&raw, "a\nb\n").unwrap();
        assert_eq!(ing.poll(), 2);
        // As if berth died after storing the lines but before saving their offsets.
        drop(ing);
        std::fs::write(d.path().join("offsets.json"), saved_before).unwrap();
        let mut again = Ingester::open(store.clone());
        let mut f = std::fs::OpenOptions::new().append(true).open(&raw).unwrap();
        writeln!(f, "c").unwrap();
        assert_eq!(again.poll(), 1);
        let (recs, _) = store.tail("w", 10).unwrap();
        let lines: Vec<_> = recs.iter().map(|r| r.line.as_str()).collect();
        assert_eq!(lines, ["a", "b", "c"]);
        // Quotes, backslashes, tabs and non-ASCII come back as they were written.
        let odd = "say \"hi\" \\ ünïcode\ttab";
        writeln!(f, "{odd}").unwrap();
        assert_eq!(again.poll(), 1);
        let (recs, _) = store.tail("w", 1).unwrap();
        assert_eq!(recs[0].line, odd);
        assert_eq!(recs[0].stream, "runtime");
        assert_eq!(
            (
                recs[0].app.as_str(),
                recs[0].release,
                recs[0].process.as_str()
            ),
            ("w", 1, "web")
        );
        assert_eq!(
            (recs[0].project.as_str(), recs[0].commit.as_deref()),
            ("default", Some("0123abcd"))
        );
    }

    #[test]
    fn secret_values_never_reach_the_store() {
        let d = tempfile::tempdir().unwrap();
        let store = LogStore::open(d.path()).unwrap();
        let mut ing = Ingester::open(store.clone());
        ing.add("a-v1-web-0-x", labels("a"));
        ing.set_redactor("a", Redactor::new([("TOKEN", "tok-12345")]));
        std::fs::write(store.raw_path("a-v1-web-0-x"), "token is tok-12345\n").unwrap();
        assert_eq!(ing.poll(), 1);
        let (recs, _) = store.tail("a", 10).unwrap();
        assert_eq!(recs[0].line, "token is [secret TOKEN]");
        let everything = std::process::Command::new("grep")
            .args(["-r", "-a", "tok-12345"])
            .arg(d.path())
            .output()
            .unwrap();
        assert!(everything.stdout.is_empty(), "{everything:?}");
    }
}

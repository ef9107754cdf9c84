//! The log store. Each app's labelled lines live in segments under `<root>/apps/<app>/`,
//! JSON lines in time order, each segment named by the time (ms) of its first line and
//! closed after 32 MiB or an hour. The names are the index: a time-bounded query opens only
//! the segments whose span overlaps it, and retention drops whole segments (the oldest first)
//! past an age or a total size. A reader's position is a [`Cursor`] (segment, byte offset),
//! which stays valid while the store grows and rotates. Builds have one raw file each under
//! `<root>/builds/`; raw container output is under `<root>/raw/`.

use crate::{io, ObserveError};
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bytes after which a segment is closed.
pub const SEGMENT_BYTES: u64 = 32 << 20;
/// Milliseconds after which a segment is closed.
pub const SEGMENT_SPAN_MS: i64 = 3_600_000;

fn runtime() -> String {
    "runtime".into()
}

/// One log line with its labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Milliseconds since the Unix epoch when berth read the line.
    pub ts: i64,
    /// App name.
    pub app: String,
    /// Release version.
    pub release: u32,
    /// Process type (`web`, `worker`, `release`).
    pub process: String,
    /// Instance index within the process type.
    pub index: u32,
    /// `runtime` (the app's output), `build` (its builds), `access` (the edge's access log)
    /// or `platform` (what berth says about the app).
    #[serde(default = "runtime")]
    pub stream: String,
    /// The container the line came from, and where the line ended in its raw output
    /// (so that ingestion resumes exactly after a crash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<(String, u64)>,
    /// The line, without its newline.
    pub line: String,
}

impl LogRecord {
    /// The line as `berth logs` prints it.
    pub fn render(&self) -> String {
        let secs = (self.ts / 1000) as u64;
        let ts = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
        );
        format!(
            "{ts} {}.{}[v{}]: {}",
            self.process, self.index, self.release, self.line
        )
    }
}

/// A position in an app's log: a segment (its start, ms) and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Cursor {
    pub segment: i64,
    pub offset: u64,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.segment, self.offset)
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (seg, off) = s
            .split_once('-')
            .ok_or_else(|| format!("{s:?} is not a log position"))?;
        Ok(Self {
            segment: seg
                .parse()
                .map_err(|_| format!("{s:?} is not a log position"))?,
            offset: off
                .parse()
                .map_err(|_| format!("{s:?} is not a log position"))?,
        })
    }
}

/// Which lines a query wants.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// From this time (ms), inclusive.
    pub since: Option<i64>,
    /// Until this time (ms), exclusive.
    pub until: Option<i64>,
    pub release: Option<u32>,
    pub process: Option<String>,
    pub stream: Option<String>,
    pub grep: Option<regex::Regex>,
}

impl LogFilter {
    /// Whether a record passes.
    pub fn matches(&self, r: &LogRecord) -> bool {
        self.since.is_none_or(|s| r.ts >= s)
            && self.until.is_none_or(|u| r.ts < u)
            && self.release.is_none_or(|v| r.release == v)
            && self.process.as_deref().is_none_or(|p| r.process == p)
            && self.stream.as_deref().is_none_or(|s| r.stream == s)
            && self.grep.as_ref().is_none_or(|g| g.is_match(&r.line))
    }
}

/// Retention of an app's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Segments whose lines are all older than this go (ms).
    pub max_age_ms: i64,
    /// The oldest segments go while the log is bigger than this.
    pub max_bytes: u64,
}

impl Default for Retention {
    /// 7 days, 1 GiB.
    fn default() -> Self {
        Self {
            max_age_ms: 7 * 86_400_000,
            max_bytes: 1 << 30,
        }
    }
}

#[derive(Debug, Clone)]
struct Segment {
    start: i64,
    path: PathBuf,
    len: u64,
}

/// The store's files.
#[derive(Debug, Clone)]
pub struct LogStore {
    root: PathBuf,
}

fn parse_lines(buf: &[u8]) -> impl Iterator<Item = LogRecord> + '_ {
    buf.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
}

impl LogStore {
    /// A store under `root`, created if needed. A log of the single-file layout
    /// (`apps/<app>.jsonl`) becomes the app's first segment.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ObserveError> {
        let root = root.into();
        for d in ["apps", "builds", "raw"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(io(format!("creating {}", p.display())))?;
        }
        let store = Self { root };
        store.adopt_single_files()?;
        Ok(store)
    }

    fn adopt_single_files(&self) -> Result<(), ObserveError> {
        let apps = self.root.join("apps");
        for e in std::fs::read_dir(&apps)
            .map_err(io("reading the log store"))?
            .flatten()
        {
            let path = e.path();
            let Some(app) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".jsonl"))
                .map(str::to_string)
            else {
                continue;
            };
            let first_ts = std::fs::read(&path)
                .ok()
                .and_then(|b| parse_lines(&b).next().map(|r| r.ts))
                .unwrap_or(0);
            let dir = self.app_dir(&app);
            std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
            std::fs::rename(&path, dir.join(format!("{first_ts:013}.jsonl")))
                .map_err(io(format!("moving {}", path.display())))?;
        }
        Ok(())
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The raw output file of a container.
    pub fn raw_path(&self, instance_id: &str) -> PathBuf {
        self.root.join("raw").join(format!("{instance_id}.log"))
    }

    /// The log of a build.
    pub fn build_path(&self, build_id: &str) -> PathBuf {
        self.root.join("builds").join(format!("{build_id}.log"))
    }

    /// The directory of an app's segments.
    pub fn app_dir(&self, app: &str) -> PathBuf {
        self.root.join("apps").join(app)
    }

    fn segments(&self, app: &str) -> Vec<Segment> {
        let mut out: Vec<Segment> = std::fs::read_dir(self.app_dir(app))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let start = name.strip_suffix(".jsonl")?.parse().ok()?;
                Some(Segment {
                    start,
                    len: e.metadata().ok()?.len(),
                    path: e.path(),
                })
            })
            .collect();
        out.sort_by_key(|s| s.start);
        out
    }

    /// Appends records to their apps' logs (a new segment when the last is full or old).
    pub fn append(&self, records: &[LogRecord]) -> Result<(), ObserveError> {
        let mut by_app: std::collections::BTreeMap<&str, (i64, Vec<u8>)> = Default::default();
        for r in records {
            let (first, buf) = by_app.entry(&r.app).or_insert((r.ts, Vec::new()));
            *first = (*first).min(r.ts);
            if serde_json::to_writer(&mut *buf, r).is_ok() {
                buf.push(b'\n');
            }
        }
        for (app, (first_ts, buf)) in by_app {
            self.append_encoded(app, first_ts, &buf)?;
        }
        Ok(())
    }

    /// Appends lines already encoded as records (JSON, one per line) to an app's log;
    /// `first_ts` is the time of the first.
    pub fn append_encoded(&self, app: &str, first_ts: i64, buf: &[u8]) -> Result<(), ObserveError> {
        {
            let dir = self.app_dir(app);
            std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
            let path = match self.segments(app).pop() {
                Some(last)
                    if last.len < SEGMENT_BYTES && first_ts - last.start < SEGMENT_SPAN_MS =>
                {
                    last.path
                }
                last => {
                    let start = last.map_or(first_ts, |l| first_ts.max(l.start + 1));
                    dir.join(format!("{start:013}.jsonl"))
                }
            };
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io(format!("opening {}", path.display())))?;
            f.write_all(buf)
                .map_err(io(format!("writing {}", path.display())))?;
        }
        Ok(())
    }

    /// Stores a finished build's log in the app's log (stream `build`, process `build`),
    /// labelled with the release it made (0 when it made none).
    pub fn store_build_log(
        &self,
        app: &str,
        release: u32,
        build_log: &Path,
    ) -> Result<usize, ObserveError> {
        let Ok(text) = std::fs::read(build_log) else {
            return Ok(0);
        };
        let ts = crate::now_millis();
        let records: Vec<LogRecord> = String::from_utf8_lossy(&text)
            .lines()
            .map(|l| LogRecord {
                ts,
                app: app.to_string(),
                release,
                process: "build".into(),
                index: 0,
                stream: "build".into(),
                source: None,
                line: l.trim_end_matches('\r').to_string(),
            })
            .collect();
        self.append(&records)?;
        Ok(records.len())
    }

    /// The last `n` records of an app, oldest first, and the cursor to follow from.
    pub fn tail(&self, app: &str, n: usize) -> Result<(Vec<LogRecord>, Cursor), ObserveError> {
        let segs = self.segments(app);
        let Some(last) = segs.last() else {
            return Ok((vec![], Cursor::default()));
        };
        let end = Cursor {
            segment: last.start,
            offset: last.len,
        };
        let mut out: Vec<LogRecord> = Vec::new();
        for seg in segs.iter().rev() {
            let mut got = tail_of_file(&seg.path, seg.len, n - out.len().min(n))?;
            got.append(&mut out);
            out = got;
            if out.len() >= n {
                break;
            }
        }
        let skip = out.len().saturating_sub(n);
        Ok((out.split_off(skip), end))
    }

    /// Records after `from`, and the cursor after them (the segments that follow included).
    pub fn read_from(
        &self,
        app: &str,
        from: Cursor,
    ) -> Result<(Vec<LogRecord>, Cursor), ObserveError> {
        let (entries, at) = self.entries_from(app, from)?;
        Ok((entries.into_iter().map(|(r, _)| r).collect(), at))
    }

    /// Records after `from`, each with the cursor just after it (to resume from exactly
    /// there), and the cursor after them all.
    pub fn entries_from(
        &self,
        app: &str,
        from: Cursor,
    ) -> Result<(Vec<(LogRecord, Cursor)>, Cursor), ObserveError> {
        let mut out = Vec::new();
        let mut at = from;
        for seg in self
            .segments(app)
            .into_iter()
            .filter(|s| s.start >= from.segment)
        {
            let offset = if seg.start == from.segment {
                from.offset.min(seg.len)
            } else {
                0
            };
            let mut f = std::fs::File::open(&seg.path)
                .map_err(io(format!("opening {}", seg.path.display())))?;
            f.seek(SeekFrom::Start(offset))
                .map_err(io(format!("reading {}", seg.path.display())))?;
            let mut buf = Vec::new();
            f.take(seg.len - offset)
                .read_to_end(&mut buf)
                .map_err(io(format!("reading {}", seg.path.display())))?;
            let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
            let mut pos = 0usize;
            for line in buf[..complete].split_inclusive(|b| *b == b'\n') {
                pos += line.len();
                if let Ok(r) = serde_json::from_slice::<LogRecord>(&line[..line.len() - 1]) {
                    out.push((
                        r,
                        Cursor {
                            segment: seg.start,
                            offset: offset + pos as u64,
                        },
                    ));
                }
            }
            at = Cursor {
                segment: seg.start,
                offset: offset + complete as u64,
            };
        }
        Ok((out, at))
    }

    /// The records passing `filter`, oldest first; at most the last `limit`. Only segments
    /// whose span overlaps the time range are read.
    pub fn query(
        &self,
        app: &str,
        filter: &LogFilter,
        limit: usize,
    ) -> Result<Vec<LogRecord>, ObserveError> {
        let segs = self.segments(app);
        let mut out: std::collections::VecDeque<LogRecord> = Default::default();
        for (i, seg) in segs.iter().enumerate() {
            let end = segs.get(i + 1).map_or(i64::MAX, |n| n.start);
            if filter.since.is_some_and(|s| end <= s)
                || filter.until.is_some_and(|u| seg.start >= u)
            {
                continue;
            }
            let buf =
                std::fs::read(&seg.path).map_err(io(format!("reading {}", seg.path.display())))?;
            let prefilter = filter.grep.as_ref().and_then(raw_prefilter);
            let mut keep = |raw: &[u8]| {
                let Ok(r) = serde_json::from_slice::<LogRecord>(raw) else {
                    return;
                };
                if filter.matches(&r) {
                    if out.len() == limit {
                        out.pop_front();
                    }
                    out.push_back(r);
                }
            };
            match &prefilter {
                // Search the whole segment at once, as grep does, and parse only the lines
                // with a match (a stored line without escapes holds its text verbatim) or
                // with an escape (whose text the raw bytes do not show as it is).
                Some(pre) => {
                    for (start, end) in candidate_lines(&buf, pre) {
                        keep(&buf[start..end]);
                    }
                }
                None => {
                    for raw in buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                        keep(raw);
                    }
                }
            }
        }
        Ok(out.into())
    }

    /// Drops an app's oldest segments past the retention (never the one being written);
    /// returns the bytes freed.
    pub fn enforce_retention(&self, app: &str, keep: Retention, now_ms: i64) -> u64 {
        let segs = self.segments(app);
        let mut total: u64 = segs.iter().map(|s| s.len).sum();
        let mut freed = 0;
        for (i, seg) in segs.iter().enumerate() {
            let Some(next) = segs.get(i + 1) else { break };
            let too_old = now_ms - next.start > keep.max_age_ms;
            if !(too_old || total > keep.max_bytes) {
                break;
            }
            if std::fs::remove_file(&seg.path).is_ok() {
                total -= seg.len;
                freed += seg.len;
            }
        }
        freed
    }

    /// Apps that have a log.
    pub fn apps(&self) -> Vec<String> {
        std::fs::read_dir(self.root.join("apps"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect()
    }

    /// The last raw-output position recorded for `source` in an app's newest segments.
    pub fn last_source_offset(&self, app: &str, source: &str) -> Option<u64> {
        let segs = self.segments(app);
        for seg in segs.iter().rev().take(2) {
            let recs = tail_of_file(&seg.path, seg.len, 10_000).ok()?;
            if let Some(off) = recs.iter().rev().find_map(|r| {
                r.source
                    .as_ref()
                    .filter(|(s, _)| s == source)
                    .map(|(_, o)| *o)
            }) {
                return Some(off);
            }
        }
        None
    }

    /// Removes everything stored for an app.
    pub fn remove_app(&self, app: &str) {
        let _ = std::fs::remove_dir_all(self.app_dir(app));
    }
}

/// The same pattern over raw stored lines, when that is sound: not for anchored patterns
/// (the stored line starts with `{`, not with the text).
fn raw_prefilter(re: &regex::Regex) -> Option<regex::bytes::Regex> {
    let src = re.as_str();
    if src.contains('^')
        || src.contains('$')
        || src.contains("\\A")
        || src.contains("\\z")
        || src.contains("\\b")
        || src.contains("\\B")
    {
        return None;
    }
    regex::bytes::Regex::new(src).ok()
}

/// The (start, end) of every line of `buf` that holds a match of `pre` or a backslash, in
/// order, each once.
fn candidate_lines(buf: &[u8], pre: &regex::bytes::Regex) -> Vec<(usize, usize)> {
    let line_of = |at: usize| {
        let start = memchr::memrchr(b'\n', &buf[..at]).map_or(0, |p| p + 1);
        let end = memchr::memchr(b'\n', &buf[at..]).map_or(buf.len(), |p| at + p);
        (start, end)
    };
    let mut out: Vec<(usize, usize)> = Vec::new();
    let mut push = |range: (usize, usize)| {
        if out.last() != Some(&range) {
            out.push(range);
        }
    };
    let mut matches = pre.find_iter(buf).map(|m| m.start()).peekable();
    let mut escapes = memchr::memchr_iter(b'\\', buf).peekable();
    // Merge the two ascending streams of positions into ascending lines.
    loop {
        let next = match (matches.peek(), escapes.peek()) {
            (Some(m), Some(e)) if m <= e => matches.next(),
            (Some(_), Some(_)) => escapes.next(),
            (Some(_), None) => matches.next(),
            (None, Some(_)) => escapes.next(),
            (None, None) => break,
        };
        if let Some(at) = next {
            let line = line_of(at);
            // Skip the rest of this line's positions.
            while matches.peek().is_some_and(|p| *p < line.1) {
                matches.next();
            }
            while escapes.peek().is_some_and(|p| *p < line.1) {
                escapes.next();
            }
            push(line);
        }
    }
    out
}

/// The last `n` records of a file of length `len`.
fn tail_of_file(path: &Path, len: u64, n: usize) -> Result<Vec<LogRecord>, ObserveError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut f = std::fs::File::open(path).map_err(io(format!("opening {}", path.display())))?;
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        f.seek(SeekFrom::Start(start))
            .map_err(io(format!("reading {}", path.display())))?;
        let mut buf = Vec::new();
        (&mut f)
            .take(len - start)
            .read_to_end(&mut buf)
            .map_err(io(format!("reading {}", path.display())))?;
        let from = if start > 0 {
            // Probably cut in half.
            buf.iter()
                .position(|b| *b == b'\n')
                .map_or(buf.len(), |p| p + 1)
        } else {
            0
        };
        let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        let recs: Vec<LogRecord> = parse_lines(&buf[from.min(complete)..complete]).collect();
        if recs.len() >= n || start == 0 {
            let skip = recs.len().saturating_sub(n);
            return Ok(recs[skip..].to_vec());
        }
        window *= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(app: &str, ts: i64, line: &str) -> LogRecord {
        LogRecord {
            ts,
            app: app.into(),
            release: 2,
            process: "web".into(),
            index: 0,
            stream: "runtime".into(),
            source: None,
            line: line.into(),
        }
    }

    const T0: i64 = 1_700_000_000_000;

    #[test]
    fn append_tail_and_follow_across_segments() {
        let d = tempfile::tempdir().unwrap();
        let s = LogStore::open(d.path()).unwrap();
        let recs: Vec<_> = (0..100)
            .map(|i| rec("a", T0 + i, &format!("line {i}")))
            .collect();
        s.append(&recs).unwrap();
        s.append(&[rec("b", T0, "other app")]).unwrap();
        let (tail, at) = s.tail("a", 3).unwrap();
        assert_eq!(
            tail.iter().map(|r| r.line.as_str()).collect::<Vec<_>>(),
            ["line 97", "line 98", "line 99"]
        );
        // An hour later a new segment starts; a follower moves into it.
        s.append(&[rec("a", T0 + 10, "same segment")]).unwrap();
        s.append(&[rec("a", T0 + SEGMENT_SPAN_MS + 1, "next segment")])
            .unwrap();
        assert_eq!(s.segments("a").len(), 2);
        let (more, at2) = s.read_from("a", at).unwrap();
        assert_eq!(
            more.iter().map(|r| r.line.as_str()).collect::<Vec<_>>(),
            ["same segment", "next segment"]
        );
        assert!(at2 > at);
        assert_eq!(s.read_from("a", at2).unwrap().0, vec![]);
        // Resuming from the cursor of any entry gives exactly what followed it.
        let (entries, _) = s.entries_from("a", at).unwrap();
        let (rest, _) = s.entries_from("a", entries[0].1).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].0.line, "next segment");
        // The tail spans segments too.
        let (tail, _) = s.tail("a", 2).unwrap();
        assert_eq!(tail[0].line, "same segment");
        assert!(tail[0].render().contains("web.0[v2]: same segment"));
        assert_eq!(s.tail("missing", 10).unwrap().0, vec![]);
        let c: Cursor = at2.to_string().parse().unwrap();
        assert_eq!(c, at2);
        assert!("x".parse::<Cursor>().is_err());
    }

    #[test]
    fn queries_filter_and_skip_segments_outside_the_range() {
        let d = tempfile::tempdir().unwrap();
        let s = LogStore::open(d.path()).unwrap();
        for h in 0..5 {
            let base = T0 + h * SEGMENT_SPAN_MS;
            let mut r = rec("a", base, &format!("hour {h} ok"));
            r.release = h as u32;
            let mut e = rec("a", base + 1, &format!("hour {h} ERROR disk"));
            e.process = "worker".into();
            s.append(&[r, e]).unwrap();
        }
        assert_eq!(s.segments("a").len(), 5);
        let grep = LogFilter {
            grep: Some(regex::Regex::new("ERROR").unwrap()),
            ..Default::default()
        };
        assert_eq!(s.query("a", &grep, 100).unwrap().len(), 5);
        assert_eq!(
            s.query("a", &grep, 2).unwrap()[0].line,
            "hour 3 ERROR disk",
            "the last 2"
        );
        let window = LogFilter {
            since: Some(T0 + 2 * SEGMENT_SPAN_MS),
            until: Some(T0 + 3 * SEGMENT_SPAN_MS),
            process: Some("web".into()),
            ..Default::default()
        };
        let got = s.query("a", &window, 100).unwrap();
        assert_eq!(
            got.iter().map(|r| r.line.as_str()).collect::<Vec<_>>(),
            ["hour 2 ok"]
        );
        // The segments outside the range were not read: breaking one changes nothing.
        let first = s.segments("a")[0].path.clone();
        std::fs::write(&first, b"not json\n").unwrap();
        assert_eq!(s.query("a", &window, 100).unwrap(), got);
        // Escaped lines and anchored patterns are still found.
        s.append(&[rec("a", T0 + 4 * SEGMENT_SPAN_MS + 5, "say \"hi\" twice")])
            .unwrap();
        let quoted = LogFilter {
            grep: Some(regex::Regex::new(r#"y "h"#).unwrap()),
            ..Default::default()
        };
        assert_eq!(s.query("a", &quoted, 100).unwrap().len(), 1);
        let anchored = LogFilter {
            grep: Some(regex::Regex::new("^hour 4").unwrap()),
            ..Default::default()
        };
        assert_eq!(s.query("a", &anchored, 100).unwrap().len(), 2);
        let by_release = LogFilter {
            release: Some(4),
            ..Default::default()
        };
        assert_eq!(s.query("a", &by_release, 100).unwrap().len(), 1);
    }

    #[test]
    fn retention_drops_old_and_oversized_segments_but_never_the_newest() {
        let d = tempfile::tempdir().unwrap();
        let s = LogStore::open(d.path()).unwrap();
        for h in 0..6 {
            s.append(&[rec("a", T0 + h * SEGMENT_SPAN_MS, &"x".repeat(1000))])
                .unwrap();
        }
        let now = T0 + 6 * SEGMENT_SPAN_MS;
        let keep = Retention {
            max_age_ms: 3 * SEGMENT_SPAN_MS,
            max_bytes: 1 << 30,
        };
        assert!(s.enforce_retention("a", keep, now) > 0);
        let left: Vec<i64> = s.segments("a").iter().map(|g| g.start).collect();
        assert_eq!(
            left,
            (2..6).map(|h| T0 + h * SEGMENT_SPAN_MS).collect::<Vec<_>>()
        );
        let tiny = Retention {
            max_age_ms: i64::MAX,
            max_bytes: 1,
        };
        s.enforce_retention("a", tiny, now);
        assert_eq!(s.segments("a").len(), 1, "the newest stays");
    }

    #[test]
    fn a_single_file_log_becomes_the_first_segment() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("apps")).unwrap();
        let old = r#"{"ts":1700000000000,"app":"a","release":1,"process":"web","index":0,"line":"from before"}"#;
        std::fs::write(d.path().join("apps/a.jsonl"), format!("{old}\n")).unwrap();
        let s = LogStore::open(d.path()).unwrap();
        let (tail, _) = s.tail("a", 10).unwrap();
        assert_eq!(tail[0].line, "from before");
        assert_eq!(tail[0].stream, "runtime");
        assert_eq!(s.apps(), vec!["a".to_string()]);
    }
}

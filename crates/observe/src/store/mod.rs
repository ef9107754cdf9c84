//! The log store. Each app's labelled lines live in segments under `<root>/apps/<app>/`,
//! each named by the time (ms) of its first line and closed after 32 MiB or an hour. A
//! segment is a chain of blocks ([`block`]): one header with the labels a run of lines
//! shares, then the lines verbatim. The names are the index: a time-bounded query opens only
//! the segments whose span overlaps it and skips blocks by their headers; a search runs over
//! a segment's bytes at once, as `grep` does; retention drops whole segments (the oldest
//! first) past an age or a total size. A reader's position is a [`Cursor`] (segment, block,
//! lines of it already read), which stays valid while the store grows and rotates. Builds
//! have one raw file each under `<root>/builds/`; raw container output is under `<root>/raw/`.

pub mod block;

use crate::{io, ObserveError};
use block::Header;
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bytes after which a segment is closed.
pub const SEGMENT_BYTES: u64 = 32 << 20;
/// Milliseconds after which a segment is closed.
pub const SEGMENT_SPAN_MS: i64 = 3_600_000;
/// File name suffix of a segment.
const SEGMENT_SUFFIX: &str = ".blk";

fn runtime() -> String {
    "runtime".into()
}

/// One log line with its labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Milliseconds since the Unix epoch when berth read the line.
    pub ts: i64,
    /// Project of the app.
    #[serde(default = "block::default_project")]
    pub project: String,
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
    /// The git commit the release was built from, when it came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The container the line came from, and where the line ended in its raw output
    /// (so that ingestion resumes exactly after a crash). Read back on the last line of
    /// each stored run.
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

    /// The header of a block that starts with this record.
    fn header(&self) -> Header {
        Header {
            ts: self.ts,
            project: self.project.clone(),
            release: self.release,
            process: self.process.clone(),
            index: self.index,
            stream: self.stream.clone(),
            commit: self.commit.clone(),
            source: self.source.as_ref().map(|(s, _)| s.clone()),
            end: 0,
            n: 0,
        }
    }

    fn from_block(app: &str, h: &Header, line: &[u8]) -> Self {
        Self {
            ts: h.ts,
            project: h.project.clone(),
            app: app.to_string(),
            release: h.release,
            process: h.process.clone(),
            index: h.index,
            stream: h.stream.clone(),
            commit: h.commit.clone(),
            source: None,
            line: match std::str::from_utf8(line) {
                Ok(s) => s.to_string(),
                Err(_) => String::from_utf8_lossy(line).into_owned(),
            },
        }
    }
}

/// A position in an app's log: a segment (its start, ms), the byte offset of a block in
/// it, and how many of that block's lines lie before the position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Cursor {
    pub segment: i64,
    pub offset: u64,
    pub line: u32,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.segment, self.offset)?;
        if self.line > 0 {
            write!(f, "-{}", self.line)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a log position");
        let mut parts = s.split('-');
        let segment = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let offset = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let line = match parts.next() {
            Some(p) => p.parse().map_err(|_| bad())?,
            None => 0,
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self {
            segment,
            offset,
            line,
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

    /// Whether the lines under a header may pass (everything but the text).
    fn admits(&self, h: &Header) -> bool {
        self.since.is_none_or(|s| h.ts >= s)
            && self.until.is_none_or(|u| h.ts < u)
            && self.release.is_none_or(|v| h.release == v)
            && self.process.as_deref().is_none_or(|p| h.process == p)
            && self.stream.as_deref().is_none_or(|s| h.stream == s)
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

/// Records of the JSON-lines layout of earlier versions.
fn parse_json_lines(buf: &[u8]) -> impl Iterator<Item = LogRecord> + '_ {
    buf.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
}

/// Encodes records as blocks, one per run of records with the same labels and time.
fn encode_records(records: &[&LogRecord], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < records.len() {
        let mut h = records[i].header();
        let mut body = Vec::new();
        let mut j = i;
        while j < records.len() && (j == i || records[j].header() == records[i].header()) {
            body.extend_from_slice(records[j].line.replace('\n', " ").as_bytes());
            body.push(b'\n');
            if let Some((_, end)) = &records[j].source {
                h.end = *end;
            }
            j += 1;
        }
        h.n = (j - i) as u32;
        block::encode(&h, &body, out);
        i = j;
    }
}

impl LogStore {
    /// A store under `root`, created if needed. Logs of earlier layouts (one JSON-lines
    /// file per app, or JSON-lines segments) are converted; a block cut short by a crash at
    /// the end of a log is cut off.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ObserveError> {
        let root = root.into();
        for d in ["apps", "builds", "raw"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(io(format!("creating {}", p.display())))?;
        }
        let store = Self { root };
        store.convert_json_lines()?;
        for app in store.apps() {
            store.cut_torn_tail(&app)?;
        }
        Ok(store)
    }

    fn convert_json_lines(&self) -> Result<(), ObserveError> {
        let apps = self.root.join("apps");
        let mut old: Vec<(String, PathBuf)> = Vec::new();
        for e in std::fs::read_dir(&apps)
            .map_err(io("reading the log store"))?
            .flatten()
        {
            let path = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(app) = name.strip_suffix(".jsonl") {
                old.push((app.to_string(), path));
            } else if path.is_dir() {
                for s in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                    if s.file_name().to_string_lossy().ends_with(".jsonl") {
                        old.push((name.clone(), s.path()));
                    }
                }
            }
        }
        old.sort();
        for (app, path) in old {
            let bytes = std::fs::read(&path).map_err(io(format!("reading {}", path.display())))?;
            let records: Vec<LogRecord> = parse_json_lines(&bytes)
                .map(|mut r| {
                    r.app = app.clone();
                    r
                })
                .collect();
            let refs: Vec<&LogRecord> = records.iter().collect();
            let mut buf = Vec::new();
            encode_records(&refs, &mut buf);
            if let Some(first) = records.first() {
                let dir = self.app_dir(&app);
                std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
                let seg = dir.join(format!("{:013}{SEGMENT_SUFFIX}", first.ts));
                let tmp = seg.with_extension("tmp");
                std::fs::write(&tmp, &buf).map_err(io(format!("writing {}", tmp.display())))?;
                std::fs::rename(&tmp, &seg).map_err(io(format!("writing {}", seg.display())))?;
            }
            std::fs::remove_file(&path).map_err(io(format!("removing {}", path.display())))?;
        }
        Ok(())
    }

    /// Cuts off a block that a crash left incomplete at the end of an app's log, so that
    /// what is appended next starts a block of its own.
    fn cut_torn_tail(&self, app: &str) -> Result<(), ObserveError> {
        let Some(last) = self.segments(app).pop() else {
            return Ok(());
        };
        let complete = block::headers(&last.path, 0, last.len)
            .map_err(io(format!("reading {}", last.path.display())))?
            .last()
            .map_or(0, |h| h.next);
        if complete < last.len {
            tracing::warn!(
                app,
                cut = last.len - complete,
                "cutting off a torn log block"
            );
            std::fs::OpenOptions::new()
                .write(true)
                .open(&last.path)
                .and_then(|f| f.set_len(complete))
                .map_err(io(format!("repairing {}", last.path.display())))?;
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
                let start = name.strip_suffix(SEGMENT_SUFFIX)?.parse().ok()?;
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
        let mut by_app: std::collections::BTreeMap<&str, Vec<&LogRecord>> = Default::default();
        for r in records {
            by_app.entry(&r.app).or_default().push(r);
        }
        for (app, recs) in by_app {
            let first_ts = recs.iter().map(|r| r.ts).min().unwrap_or(0);
            let mut buf = Vec::new();
            encode_records(&recs, &mut buf);
            self.append_encoded(app, first_ts, &buf)?;
        }
        Ok(())
    }

    /// Appends one block: `lines` are complete lines, each ending in a newline, that share
    /// the labels of `header` (whose line count is set here).
    pub fn append_lines(
        &self,
        app: &str,
        mut header: Header,
        lines: &[u8],
    ) -> Result<(), ObserveError> {
        header.n = memchr::memchr_iter(b'\n', lines).count() as u32;
        let mut head = Vec::with_capacity(256);
        block::encode_header(&header, lines.len(), &mut head);
        self.append_parts(app, header.ts, &[&head, lines])
    }

    /// Appends encoded blocks (one write, so concurrent appenders do not interleave).
    fn append_encoded(&self, app: &str, first_ts: i64, buf: &[u8]) -> Result<(), ObserveError> {
        self.append_parts(app, first_ts, &[buf])
    }

    /// Appends the concatenation of `parts` with one gathering write where the kernel takes
    /// it all at once (as it does for files), so concurrent appenders do not interleave.
    fn append_parts(&self, app: &str, first_ts: i64, parts: &[&[u8]]) -> Result<(), ObserveError> {
        let dir = self.app_dir(app);
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let path = match self.segments(app).pop() {
            Some(last) if last.len < SEGMENT_BYTES && first_ts - last.start < SEGMENT_SPAN_MS => {
                last.path
            }
            last => {
                let start = last.map_or(first_ts, |l| first_ts.max(l.start + 1));
                dir.join(format!("{start:013}{SEGMENT_SUFFIX}"))
            }
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(format!("opening {}", path.display())))?;
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let slices: Vec<std::io::IoSlice> =
            parts.iter().map(|p| std::io::IoSlice::new(p)).collect();
        let written = f
            .write_vectored(&slices)
            .map_err(io(format!("writing {}", path.display())))?;
        if written < total {
            // A short write: the rest, in order.
            let mut skip = written;
            for p in parts {
                let from = skip.min(p.len());
                skip -= from;
                f.write_all(&p[from..])
                    .map_err(io(format!("writing {}", path.display())))?;
            }
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
        let mut body = Vec::with_capacity(text.len() + 1);
        for l in String::from_utf8_lossy(&text).lines() {
            body.extend_from_slice(l.trim_end_matches('\r').as_bytes());
            body.push(b'\n');
        }
        let header = Header {
            ts: crate::now_millis(),
            project: block::default_project(),
            release,
            process: "build".into(),
            index: 0,
            stream: "build".into(),
            commit: None,
            source: None,
            end: 0,
            n: 0,
        };
        self.append_lines(app, header, &body)?;
        Ok(memchr::memchr_iter(b'\n', &body).count())
    }

    /// The last `n` records of an app, oldest first, and the cursor to follow from.
    pub fn tail(&self, app: &str, n: usize) -> Result<(Vec<LogRecord>, Cursor), ObserveError> {
        let segs = self.segments(app);
        let Some(last) = segs.last() else {
            return Ok((vec![], Cursor::default()));
        };
        let read_headers = |seg: &Segment| {
            block::headers(&seg.path, 0, seg.len)
                .map_err(io(format!("reading {}", seg.path.display())))
        };
        let last_headers = read_headers(last)?;
        let end = Cursor {
            segment: last.start,
            offset: last_headers.last().map_or(0, |h| h.next),
            line: 0,
        };
        let mut out: Vec<LogRecord> = Vec::new();
        for (k, seg) in segs.iter().enumerate().rev() {
            if out.len() >= n {
                break;
            }
            let hs = if k + 1 == segs.len() {
                last_headers.clone()
            } else {
                read_headers(seg)?
            };
            // The blocks that hold the last lines wanted.
            let mut want = n - out.len();
            let mut from = hs.len();
            while from > 0 && want > 0 {
                from -= 1;
                want = want.saturating_sub(hs[from].header.n as usize);
            }
            let Some(first) = hs.get(from) else { continue };
            let (mut got, _) = self.read_segment(app, seg, first.start, 0, usize::MAX)?;
            let skip = got.len().saturating_sub(n - out.len());
            let mut got: Vec<LogRecord> = got.drain(skip..).map(|(r, _)| r).collect();
            got.append(&mut out);
            out = got;
        }
        Ok((out, end))
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

    /// The records of a segment's complete blocks from byte `offset` on (the first `skip`
    /// lines of the first block left out), each with the cursor just after it, and the
    /// cursor after the last complete block.
    fn read_segment(
        &self,
        app: &str,
        seg: &Segment,
        offset: u64,
        skip: u32,
        max: usize,
    ) -> Result<(Vec<(LogRecord, Cursor)>, Cursor), ObserveError> {
        let offset = offset.min(seg.len);
        let mut f = std::fs::File::open(&seg.path)
            .map_err(io(format!("opening {}", seg.path.display())))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(io(format!("reading {}", seg.path.display())))?;
        let mut buf = Vec::new();
        f.take(seg.len - offset)
            .read_to_end(&mut buf)
            .map_err(io(format!("reading {}", seg.path.display())))?;
        let mut out = Vec::new();
        let mut end = 0;
        for (k, e) in block::extents(&buf, 0).enumerate() {
            end = e.next();
            let Some(h) = block::header(&buf, &e) else {
                continue;
            };
            let start = offset + e.start as u64;
            let lines: Vec<&[u8]> = block::lines(&buf[e.body.clone()]).collect();
            let count = lines.len() as u32;
            let first = if k == 0 { skip.min(count) } else { 0 };
            for (i, line) in lines.into_iter().enumerate().skip(first as usize) {
                let mut r = LogRecord::from_block(app, &h, line);
                let i = i as u32 + 1;
                if i == count {
                    r.source = h.source.clone().map(|s| (s, h.end));
                }
                let after = if i == count {
                    Cursor {
                        segment: seg.start,
                        offset: offset + e.next() as u64,
                        line: 0,
                    }
                } else {
                    Cursor {
                        segment: seg.start,
                        offset: start,
                        line: i,
                    }
                };
                out.push((r, after));
                if out.len() == max {
                    return Ok((out, after));
                }
            }
        }
        Ok((
            out,
            Cursor {
                segment: seg.start,
                offset: offset + end as u64,
                line: if end == 0 { skip } else { 0 },
            },
        ))
    }

    /// Records after `from`, each with the cursor just after it (to resume from exactly
    /// there), and the cursor after them all.
    pub fn entries_from(
        &self,
        app: &str,
        from: Cursor,
    ) -> Result<(Vec<(LogRecord, Cursor)>, Cursor), ObserveError> {
        self.entries_after(app, from, usize::MAX)
    }

    /// At most `max` records after `from`, each with the cursor just after it, and the
    /// cursor after the last of them.
    pub fn entries_after(
        &self,
        app: &str,
        from: Cursor,
        max: usize,
    ) -> Result<(Vec<(LogRecord, Cursor)>, Cursor), ObserveError> {
        let mut out = Vec::new();
        let mut at = from;
        for seg in self
            .segments(app)
            .into_iter()
            .filter(|s| s.start >= from.segment)
        {
            if out.len() >= max {
                break;
            }
            let (offset, skip) = if seg.start == from.segment {
                (from.offset, from.line)
            } else {
                (0, 0)
            };
            let (mut got, after) = self.read_segment(app, &seg, offset, skip, max - out.len())?;
            out.append(&mut got);
            at = after;
        }
        Ok((out, at))
    }

    /// The records passing `filter`, oldest first; at most the last `limit`. Only segments
    /// whose span overlaps the time range are read, and only the lines of blocks whose
    /// labels pass are looked at.
    pub fn query(
        &self,
        app: &str,
        filter: &LogFilter,
        limit: usize,
    ) -> Result<Vec<LogRecord>, ObserveError> {
        let segs = self.segments(app);
        let mut out: std::collections::VecDeque<LogRecord> = Default::default();
        let prefilter = filter.grep.as_ref().and_then(segment_search);
        let mut buf = Vec::new();
        for (i, seg) in segs.iter().enumerate() {
            let end = segs.get(i + 1).map_or(i64::MAX, |n| n.start);
            if filter.since.is_some_and(|s| end <= s)
                || filter.until.is_some_and(|u| seg.start >= u)
            {
                continue;
            }
            let mut f = std::fs::File::open(&seg.path)
                .map_err(io(format!("opening {}", seg.path.display())))?;
            // The segment is read a chunk at a time into one buffer that stays in the CPU's
            // cache while it is searched; a block cut by the chunk's end waits for the next.
            buf.clear();
            let mut eof = false;
            while !eof {
                let have = buf.len();
                let got = (&mut f)
                    .take(SEARCH_CHUNK as u64)
                    .read_to_end(&mut buf)
                    .map_err(io(format!("reading {}", seg.path.display())))?;
                eof = got == 0 || (buf.len() - have) < SEARCH_CHUNK;
                let done = block::extents(&buf, 0).last().map_or(0, |e| e.next());
                let chunk = &buf[..done];
                search_blocks(app, chunk, filter, prefilter.as_ref(), |r| {
                    if out.len() == limit {
                        out.pop_front();
                    }
                    out.push_back(r);
                });
                buf.drain(..done);
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
            let hs = block::headers(&seg.path, 0, seg.len).ok()?;
            if let Some(h) = hs
                .iter()
                .rev()
                .find(|h| h.header.source.as_deref() == Some(source))
            {
                return Some(h.header.end);
            }
        }
        None
    }

    /// Removes everything stored for an app.
    pub fn remove_app(&self, app: &str) {
        let _ = std::fs::remove_dir_all(self.app_dir(app));
    }
}

/// Bytes of a segment searched at a time.
const SEARCH_CHUNK: usize = 1 << 20;

/// Hands `keep` the records of the complete blocks in `buf` that pass `filter`, in order.
/// With a `prefilter` the pattern is searched over all of `buf` at once and only the blocks
/// where it occurs are looked at line by line.
fn search_blocks(
    app: &str,
    buf: &[u8],
    filter: &LogFilter,
    prefilter: Option<&regex::bytes::Regex>,
    mut keep: impl FnMut(LogRecord),
) {
    let mut hits = prefilter.map(|pre| pre.find_iter(buf).map(|m| m.start()).peekable());
    let mut at: Vec<usize> = Vec::new();
    for e in block::extents(buf, 0) {
        if let Some(h) = hits.as_mut() {
            at.clear();
            while let Some(p) = h.next_if(|p| *p < e.next()) {
                if p >= e.body.start {
                    at.push(p);
                }
            }
            if at.is_empty() {
                continue;
            }
        }
        let Some(h) = block::header(buf, &e) else {
            continue;
        };
        if !filter.admits(&h) {
            continue;
        }
        let body = &buf[e.body.clone()];
        if prefilter.is_some() {
            // Only the lines where the pattern occurs can match.
            let mut last_line = None;
            for p in &at {
                let p = p - e.body.start;
                let start = memchr::memrchr(b'\n', &body[..p]).map_or(0, |i| i + 1);
                if last_line == Some(start) {
                    continue;
                }
                last_line = Some(start);
                let end = memchr::memchr(b'\n', &body[p..]).map_or(body.len(), |i| p + i);
                let line = &body[start..end];
                if filter
                    .grep
                    .as_ref()
                    .is_none_or(|g| g.is_match(&String::from_utf8_lossy(line)))
                {
                    keep(LogRecord::from_block(app, &h, line));
                }
            }
            continue;
        }
        for line in block::lines(body) {
            let text = String::from_utf8_lossy(line);
            if filter.grep.as_ref().is_none_or(|g| g.is_match(&text)) {
                keep(LogRecord::from_block(app, &h, line));
            }
        }
    }
}

/// The pattern as a search over a whole segment, when that finds every line that matches
/// it alone: `^` and `$` become line anchors, and the pattern must not be able to match
/// across a newline (else a match spanning two lines could hide one in the second).
fn segment_search(re: &regex::Regex) -> Option<regex::bytes::Regex> {
    let src = re.as_str();
    const CROSSES_LINES: &[&str] = &[
        "\\s", "\\S", "\\n", "\\W", "\\D", "\\x", "\\u", "\\U", "\\0", "\\p", "\\P", "\\A", "\\z",
        "[^", "(?s", "(?m", "\\v", "[[:", "\\N",
    ];
    if CROSSES_LINES.iter().any(|t| src.contains(t)) || src.contains('\n') {
        return None;
    }
    regex::bytes::RegexBuilder::new(src)
        .multi_line(true)
        .build()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(app: &str, ts: i64, line: &str) -> LogRecord {
        LogRecord {
            ts,
            project: "default".into(),
            app: app.into(),
            commit: None,
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

    #[test]
    fn a_cursor_inside_a_block_resumes_at_the_next_line() {
        let d = tempfile::tempdir().unwrap();
        let s = LogStore::open(d.path()).unwrap();
        let recs: Vec<_> = (0..5).map(|i| rec("a", T0, &format!("l{i}"))).collect();
        s.append(&recs).unwrap();
        let (entries, end) = s.entries_from("a", Cursor::default()).unwrap();
        assert_eq!(entries.len(), 5);
        assert_eq!(entries[1].1.line, 2, "one block, two lines read");
        let c: Cursor = entries[1].1.to_string().parse().unwrap();
        let (rest, end2) = s.read_from("a", c).unwrap();
        assert_eq!(
            rest.iter().map(|r| r.line.as_str()).collect::<Vec<_>>(),
            ["l2", "l3", "l4"]
        );
        assert_eq!(end, end2);
        assert_eq!(entries[4].1, end, "after the last line: the next block");
    }

    #[test]
    fn a_block_torn_by_a_crash_is_cut_off_and_the_log_goes_on() {
        let d = tempfile::tempdir().unwrap();
        let s = LogStore::open(d.path()).unwrap();
        s.append(&[rec("a", T0, "whole")]).unwrap();
        let seg = s.segments("a")[0].path.clone();
        let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"\x1e100 {\"ts\":1,\"release\":1,\"process\":\"web\",\"index\":0,\"stream\":\"runtime\",\"n\":3}\nhalf a bl")
            .unwrap();
        // Readers see only complete blocks, and the end cursor stops before the torn one.
        let (tail, end) = s.tail("a", 10).unwrap();
        assert_eq!(tail.len(), 1);
        let s = LogStore::open(d.path()).unwrap();
        s.append(&[rec("a", T0 + 1, "after")]).unwrap();
        let (tail, _) = s.tail("a", 10).unwrap();
        assert_eq!(
            tail.iter().map(|r| r.line.as_str()).collect::<Vec<_>>(),
            ["whole", "after"]
        );
        assert_eq!(s.read_from("a", end).unwrap().0[0].line, "after");
    }

    #[test]
    fn json_lines_segments_of_earlier_versions_are_converted() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("apps/a")).unwrap();
        let old = r#"{"ts":1700000000000,"app":"a","release":3,"process":"worker","index":1,"stream":"runtime","line":"kept"}"#;
        std::fs::write(
            d.path().join("apps/a/1700000000000.jsonl"),
            format!("{old}\n{old}\n"),
        )
        .unwrap();
        let s = LogStore::open(d.path()).unwrap();
        let (tail, _) = s.tail("a", 10).unwrap();
        assert_eq!(tail.len(), 2);
        assert_eq!((tail[0].release, tail[0].process.as_str()), (3, "worker"));
        assert!(!d.path().join("apps/a/1700000000000.jsonl").exists());
    }
}

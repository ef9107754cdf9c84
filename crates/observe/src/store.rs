//! The log store: one JSON-lines file per app under `<root>/apps/`, one raw file per build
//! under `<root>/builds/`, and the raw container output under `<root>/raw/`.

use crate::{io, ObserveError};
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

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

/// The store's files.
#[derive(Debug, Clone)]
pub struct LogStore {
    root: PathBuf,
}

impl LogStore {
    /// A store under `root`, created if needed.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ObserveError> {
        let root = root.into();
        for d in ["apps", "builds", "raw"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(io(format!("creating {}", p.display())))?;
        }
        Ok(Self { root })
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

    /// The labelled log of an app.
    pub fn app_path(&self, app: &str) -> PathBuf {
        self.root.join("apps").join(format!("{app}.jsonl"))
    }

    /// Appends records to their app's log.
    pub fn append(&self, records: &[LogRecord]) -> Result<(), ObserveError> {
        let mut by_app: std::collections::BTreeMap<&str, Vec<u8>> = Default::default();
        for r in records {
            let buf = by_app.entry(&r.app).or_default();
            if serde_json::to_writer(&mut *buf, r).is_ok() {
                buf.push(b'\n');
            }
        }
        for (app, buf) in by_app {
            let path = self.app_path(app);
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io(format!("opening {}", path.display())))?;
            f.write_all(&buf)
                .map_err(io(format!("writing {}", path.display())))?;
        }
        Ok(())
    }

    /// The last `n` records of an app, oldest first, and the file offset to follow from.
    pub fn tail(&self, app: &str, n: usize) -> Result<(Vec<LogRecord>, u64), ObserveError> {
        let path = self.app_path(app);
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], 0)),
            Err(e) => return Err(io(format!("opening {}", path.display()))(e)),
        };
        let len = f
            .metadata()
            .map_err(io(format!("reading {}", path.display())))?
            .len();
        // Read backwards in growing windows until n lines are in hand.
        let mut window: u64 = 64 * 1024;
        loop {
            let start = len.saturating_sub(window);
            f.seek(SeekFrom::Start(start))
                .map_err(io(format!("reading {}", path.display())))?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)
                .map_err(io(format!("reading {}", path.display())))?;
            let text = String::from_utf8_lossy(&buf);
            let mut lines: Vec<&str> = text.lines().collect();
            if start > 0 && !lines.is_empty() {
                lines.remove(0); // probably cut in half
            }
            if lines.len() >= n || start == 0 {
                let skip = lines.len().saturating_sub(n);
                let records = lines[skip..]
                    .iter()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect();
                return Ok((records, len));
            }
            window *= 4;
        }
    }

    /// Records appended after `offset`, and the new offset.
    pub fn read_from(&self, app: &str, offset: u64) -> Result<(Vec<LogRecord>, u64), ObserveError> {
        let path = self.app_path(app);
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], offset)),
            Err(e) => return Err(io(format!("opening {}", path.display()))(e)),
        };
        let len = f
            .metadata()
            .map_err(io(format!("reading {}", path.display())))?
            .len();
        let offset = if len < offset { 0 } else { offset };
        f.seek(SeekFrom::Start(offset))
            .map_err(io(format!("reading {}", path.display())))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .map_err(io(format!("reading {}", path.display())))?;
        // Only complete lines.
        let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        let records = String::from_utf8_lossy(&buf[..complete])
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        Ok((records, offset + complete as u64))
    }

    /// Removes everything stored for an app.
    pub fn remove_app(&self, app: &str) {
        let _ = std::fs::remove_file(self.app_path(app));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(app: &str, line: &str) -> LogRecord {
        LogRecord {
            ts: 1_700_000_000_000,
            app: app.into(),
            release: 2,
            process: "web".into(),
            index: 0,
            line: line.into(),
        }
    }

    #[test]
    fn append_tail_and_follow() {
        let d = tempfile::tempdir().unwrap();
        let s = LogStore::open(d.path()).unwrap();
        let recs: Vec<_> = (0..100).map(|i| rec("a", &format!("line {i}"))).collect();
        s.append(&recs).unwrap();
        s.append(&[rec("b", "other app")]).unwrap();
        let (tail, off) = s.tail("a", 3).unwrap();
        assert_eq!(
            tail.iter().map(|r| r.line.as_str()).collect::<Vec<_>>(),
            ["line 97", "line 98", "line 99"]
        );
        s.append(&[rec("a", "new")]).unwrap();
        let (more, off2) = s.read_from("a", off).unwrap();
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].line, "new");
        assert!(off2 > off);
        assert!(tail[0].render().contains("web.0[v2]: line 97"));
        assert_eq!(s.tail("missing", 10).unwrap().0, vec![]);
    }
}

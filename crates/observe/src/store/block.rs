//! The on-disk format of a log segment: a sequence of blocks, each the labels shared by a
//! run of lines (one header) followed by the lines verbatim.
//!
//! ```text
//! \x1e<body length> <header JSON>\n
//! <line>\n<line>\n…            ← the body: exactly <body length> bytes
//! ```
//!
//! Lines are stored as the app wrote them (after redaction), so a search runs over the
//! segment's bytes as `grep` would, and ingesting a chunk of container output is one copy.
//! The body length chains the blocks: a reader skips a body without looking at it, and a
//! block cut short by a crash is recognised (and cut off when the store opens).

use serde::{Deserialize, Serialize};
use std::io::{BufRead, Seek};
use std::ops::Range;
use std::path::Path;

/// First byte of every block.
pub const MARK: u8 = 0x1e;

pub(crate) fn default_project() -> String {
    "default".into()
}

/// The labels shared by the lines of a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Milliseconds since the Unix epoch when berth read the lines.
    pub ts: i64,
    #[serde(default = "default_project")]
    pub project: String,
    pub release: u32,
    pub process: String,
    pub index: u32,
    pub stream: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The container whose output this was, and where the block's last line ended in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default)]
    pub end: u64,
    /// Lines in the body.
    pub n: u32,
}

/// Appends a block: `body` is complete lines, each ending in `\n`.
pub fn encode(header: &Header, body: &[u8], out: &mut Vec<u8>) {
    encode_header(header, body.len(), out);
    out.extend_from_slice(body);
}

/// Appends the header line of a block whose body is `body_len` bytes.
pub fn encode_header(header: &Header, body_len: usize, out: &mut Vec<u8>) {
    out.push(MARK);
    out.extend_from_slice(body_len.to_string().as_bytes());
    out.push(b' ');
    if serde_json::to_writer(&mut *out, header).is_err() {
        out.extend_from_slice(b"{}");
    }
    out.push(b'\n');
}

/// Where a block lies in a buffer.
#[derive(Debug, Clone)]
pub struct Extent {
    /// Where the block starts (its mark).
    pub start: usize,
    /// The header's JSON.
    pub header: Range<usize>,
    /// The lines.
    pub body: Range<usize>,
}

impl Extent {
    /// Where the next block starts.
    pub fn next(&self) -> usize {
        self.body.end
    }
}

/// The block at `pos` of `buf`, unless it is incomplete or not a block.
pub fn extent_at(buf: &[u8], pos: usize) -> Option<Extent> {
    let rest = buf.get(pos..)?;
    if rest.first() != Some(&MARK) {
        return None;
    }
    let space = memchr::memchr(b' ', &rest[..rest.len().min(24)])?;
    let len: usize = std::str::from_utf8(&rest[1..space]).ok()?.parse().ok()?;
    let nl = memchr::memchr(b'\n', &rest[space..])? + space;
    let body_start = pos + nl + 1;
    let body_end = body_start.checked_add(len)?;
    (body_end <= buf.len()).then_some(Extent {
        start: pos,
        header: pos + space + 1..pos + nl,
        body: body_start..body_end,
    })
}

/// A header line (with its newline): the body's length and the labels.
fn parse_header_line(line: &[u8]) -> Option<(usize, Header)> {
    if line.first() != Some(&MARK) || line.last() != Some(&b'\n') {
        return None;
    }
    let space = memchr::memchr(b' ', &line[..line.len().min(24)])?;
    let len = std::str::from_utf8(&line[1..space]).ok()?.parse().ok()?;
    let h = serde_json::from_slice(&line[space + 1..line.len() - 1]).ok()?;
    Some((len, h))
}

/// Every complete block of `buf` from `pos` on, in order.
pub fn extents(buf: &[u8], mut pos: usize) -> impl Iterator<Item = Extent> + '_ {
    std::iter::from_fn(move || {
        let e = extent_at(buf, pos)?;
        pos = e.next();
        Some(e)
    })
}

/// The header of a block.
pub fn header(buf: &[u8], e: &Extent) -> Option<Header> {
    serde_json::from_slice(&buf[e.header.clone()]).ok()
}

/// The lines of a body, without their newlines.
pub fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|b| *b == b'\n')
        .take(memchr::memchr_iter(b'\n', body).count())
}

/// A header read from a file, with where its block starts and where the next one does.
#[derive(Debug, Clone)]
pub struct Located {
    pub start: u64,
    pub next: u64,
    pub header: Header,
}

/// The headers of the complete blocks of a file from `from` to `len`, reading only headers.
pub fn headers(path: &Path, from: u64, len: u64) -> std::io::Result<Vec<Located>> {
    let f = std::fs::File::open(path)?;
    let mut r = std::io::BufReader::with_capacity(16 * 1024, f);
    r.seek(std::io::SeekFrom::Start(from))?;
    let mut out = Vec::new();
    let mut at = from;
    let mut line = Vec::new();
    while at < len {
        line.clear();
        r.read_until(b'\n', &mut line)?;
        if line.last() != Some(&b'\n') {
            break;
        }
        let Some((body_len, h)) = parse_header_line(&line) else {
            break;
        };
        let body_len = body_len as u64;
        let next = at + line.len() as u64 + body_len;
        if next > len {
            break;
        }
        r.seek_relative(body_len as i64)?;
        out.push(Located {
            start: at,
            next,
            header: h,
        });
        at = next;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u32) -> Header {
        Header {
            ts: 1,
            project: "default".into(),
            release: 1,
            process: "web".into(),
            index: 0,
            stream: "runtime".into(),
            commit: None,
            source: None,
            end: 0,
            n,
        }
    }

    #[test]
    fn blocks_chain_and_a_torn_tail_is_not_a_block() {
        let mut buf = Vec::new();
        encode(&h(2), b"one\ntwo\n", &mut buf);
        encode(&h(1), b"\x1e9 looks like a header\n", &mut buf);
        let all: Vec<Extent> = extents(&buf, 0).collect();
        assert_eq!(all.len(), 2);
        assert_eq!(
            lines(&buf[all[1].body.clone()]).collect::<Vec<_>>(),
            [b"\x1e9 looks like a header".as_slice()]
        );
        assert_eq!(header(&buf, &all[0]).unwrap().n, 2);
        let torn = &buf[..buf.len() - 3];
        assert_eq!(extents(torn, 0).count(), 1);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s");
        std::fs::write(&p, torn).unwrap();
        let hs = headers(&p, 0, torn.len() as u64).unwrap();
        assert_eq!(hs.len(), 1);
        assert_eq!(hs[0].next as usize, all[0].next());
    }
}

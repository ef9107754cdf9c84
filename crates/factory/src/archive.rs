//! The one bounded reader of source archives (`tar`, gzipped for uploads), shared by
//! [`unpack`], the spec reader [`read_files`] and [`digest_except`], so that the spec berth
//! reads from an archive is the file the build unpacks. An archive is someone else's bytes:
//! the reader streams it (memory stays flat whatever it expands to) and refuses, by name,
//! - more than [`Limits::max_bytes`] of file content, [`Limits::max_entries`] entries,
//!   paths deeper than [`Limits::max_depth`] or longer than [`Limits::max_path`];
//! - a gzip stream expanding more than [`Limits::max_ratio`]:1 (checked once past
//!   [`Limits::ratio_floor`] bytes, so a 4 MB bomb of a 4 GiB file stops after a few MiB);
//! - absolute paths and `..`, links whose target leaves the tree (absolute, climbing out,
//!   or out through other links), entries beneath a link (writing through it), hard links,
//!   devices, FIFOs and sparse files, and an entry given twice.
//!
//! Unpacked modes are masked to `0o777` (no setuid), owners are not kept, and the unpacked
//! tree is checked again by the kernel ([`SourceTree::check_links`]). Errors name entries
//! and limits, never their contents.

use crate::source::SourceError;
use crate::tree::{lexical, SourceTree, TreeError, SPEC_CAP};
use flate2::read::GzDecoder;
use sha2::{Digest, Sha256};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::Read;
use std::path::{Component, Path};
use std::rc::Rc;

/// What an archive may amount to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most bytes of file content, all entries together.
    pub max_bytes: u64,
    /// Most entries (files, directories, links).
    pub max_entries: u64,
    /// Most bytes out per compressed byte in.
    pub max_ratio: u64,
    /// Bytes out before the ratio is enforced (small archives of text compress well).
    pub ratio_floor: u64,
    /// Most components of an entry's path.
    pub max_depth: usize,
    /// Most bytes of an entry's path.
    pub max_path: usize,
}

/// The limits of an upload.
pub const LIMITS: Limits = Limits {
    max_bytes: crate::source::MAX_UNPACKED_BYTES,
    max_entries: 100_000,
    max_ratio: 200,
    ratio_floor: 16 << 20,
    max_depth: 64,
    max_path: 4096,
};

/// Bytes of tar headers and padding allowed beyond the content itself.
const HEADER_ALLOWANCE: u64 = 1 << 10;
/// Links followed while resolving one path inside an archive (as the kernel's 40).
const MAX_HOPS: usize = 40;

/// Why the stream itself was stopped (the tar crate wraps the error it is handed).
#[derive(Debug, Clone, Copy)]
enum Trip {
    Ratio,
    Total,
}

/// Counts the compressed bytes read.
struct Counted<R> {
    inner: R,
    read: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// The decompressed stream, stopped past the total or the ratio.
struct Guarded<R> {
    inner: R,
    compressed: Option<Rc<Cell<u64>>>,
    out: u64,
    cap: u64,
    limits: Limits,
    tripped: Rc<Cell<Option<Trip>>>,
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out += n as u64;
        if self.out > self.cap {
            self.tripped.set(Some(Trip::Total));
            return Err(std::io::Error::other("the archive expands past its limit"));
        }
        if let Some(c) = &self.compressed {
            if self.out > self.limits.ratio_floor
                && self.out / c.get().max(1) > self.limits.max_ratio
            {
                self.tripped.set(Some(Trip::Ratio));
                return Err(std::io::Error::other("compression ratio over the limit"));
            }
        }
        Ok(n)
    }
}

/// What an entry is, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    Dir,
    File(u64),
    Link(String),
}

/// What a pass saw: each path's kind and each link's target.
#[derive(Default)]
struct Index {
    kinds: HashMap<String, Body>,
    /// Every directory an entry implies (its ancestors).
    implied: HashSet<String>,
    name_bytes: u64,
}

/// Where a path inside an archive ends, its links followed inside the archive.
#[derive(Debug, PartialEq, Eq)]
enum Resolved {
    Inside(String),
    Escapes,
    Loops,
}

impl Index {
    fn link(&self, path: &str) -> Option<&str> {
        match self.kinds.get(path) {
            Some(Body::Link(t)) => Some(t),
            _ => None,
        }
    }

    /// Resolves `path` component by component as the kernel would in the unpacked tree.
    fn resolve(&self, path: &str) -> Resolved {
        let mut todo: VecDeque<String> = path.split('/').map(str::to_string).collect();
        let mut cur: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(c) = todo.pop_front() {
            match c.as_str() {
                "" | "." => {}
                ".." => {
                    if cur.pop().is_none() {
                        return Resolved::Escapes;
                    }
                }
                name => {
                    cur.push(name.to_string());
                    if let Some(target) = self.link(&cur.join("/")) {
                        hops += 1;
                        if hops > MAX_HOPS {
                            return Resolved::Loops;
                        }
                        if target.starts_with('/') {
                            return Resolved::Escapes;
                        }
                        cur.pop();
                        for part in target.rsplit('/') {
                            todo.push_front(part.to_string());
                        }
                    }
                }
            }
        }
        Resolved::Inside(cur.join("/"))
    }
}

/// An entry's path made relative and plain (`./a//b/` → `a/b`), or refused.
fn normalise(raw: &Path, limits: &Limits) -> Result<String, SourceError> {
    let shown = raw.to_string_lossy().to_string();
    if raw.as_os_str().len() > limits.max_path {
        return Err(SourceError::PathTooLong {
            path: shown.chars().take(200).collect(),
            limit: limits.max_path,
        });
    }
    let mut parts = Vec::new();
    for c in raw.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(n) => match n.to_str() {
                Some(n) => parts.push(n),
                None => return Err(SourceError::NotUtf8Path(shown)),
            },
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(SourceError::UnsafePath(shown))
            }
        }
    }
    if parts.len() > limits.max_depth {
        return Err(SourceError::TooDeep {
            path: shown,
            limit: limits.max_depth,
        });
    }
    Ok(parts.join("/"))
}

/// What kind of entry berth does not take, by its type.
fn unsupported(kind: tar::EntryType) -> Option<&'static str> {
    use tar::EntryType::*;
    match kind {
        Regular | Continuous | Directory | Symlink => None,
        Link => Some("hard link"),
        Char => Some("character device"),
        Block => Some("block device"),
        Fifo => Some("FIFO"),
        GNUSparse => Some("sparse file"),
        _ => Some("special entry"),
    }
}

/// Walks every entry of a tar stream, checking each, and hands the accepted ones to
/// `visit`. `compressed` counts the bytes in for the ratio (none for a plain tar).
fn walk<R: Read>(
    stream: R,
    compressed: Option<Rc<Cell<u64>>>,
    limits: &Limits,
    mut configure: impl FnMut(&mut tar::Archive<Guarded<R>>),
    mut visit: impl FnMut(&str, &Body, &mut tar::Entry<'_, Guarded<R>>) -> Result<(), SourceError>,
) -> Result<Index, SourceError> {
    let tripped = Rc::new(Cell::new(None));
    let guarded = Guarded {
        inner: stream,
        compressed,
        out: 0,
        cap: limits
            .max_bytes
            .saturating_add(limits.max_entries.saturating_mul(HEADER_ALLOWANCE)),
        limits: *limits,
        tripped: tripped.clone(),
    };
    let stopped = |e: std::io::Error| match tripped.get() {
        Some(Trip::Ratio) => SourceError::CompressionRatio(limits.max_ratio),
        Some(Trip::Total) => SourceError::UnpackedTooLarge(limits.max_bytes),
        None => SourceError::BadArchive(e.to_string()),
    };
    let mut tar = tar::Archive::new(guarded);
    configure(&mut tar);
    let mut index = Index::default();
    let mut count = 0u64;
    let mut total = 0u64;
    let entries = tar.entries().map_err(stopped)?;
    for entry in entries {
        let mut entry = entry.map_err(stopped)?;
        count += 1;
        if count > limits.max_entries {
            return Err(SourceError::TooManyEntries(limits.max_entries));
        }
        let kind = entry.header().entry_type();
        if matches!(kind, tar::EntryType::XGlobalHeader) {
            // `git archive` records its commit in one; nothing to unpack.
            continue;
        }
        let raw = entry.path().map_err(stopped)?.into_owned();
        let path = normalise(&raw, limits)?;
        if let Some(what) = unsupported(kind) {
            return Err(SourceError::Unsupported {
                path: raw.to_string_lossy().to_string(),
                kind: what,
            });
        }
        if path.is_empty() {
            // The archive's root (`./`): a directory, or nothing berth takes.
            if kind.is_dir() {
                continue;
            }
            return Err(SourceError::UnsafePath(raw.to_string_lossy().to_string()));
        }
        let body = if kind.is_dir() {
            Body::Dir
        } else if kind.is_symlink() {
            let target = entry
                .link_name()
                .map_err(stopped)?
                .map(|t| t.to_string_lossy().to_string())
                .unwrap_or_default();
            let parent = Path::new(&path).parent().unwrap_or(Path::new(""));
            if target.is_empty()
                || target.starts_with('/')
                || lexical(&parent.join(&target)).is_none()
            {
                return Err(SourceError::UnsafeLink { path, target });
            }
            Body::Link(target)
        } else {
            let size = entry.size();
            total = total.saturating_add(size);
            if total > limits.max_bytes {
                return Err(SourceError::UnpackedTooLarge(limits.max_bytes));
            }
            Body::File(size)
        };
        // Nothing is written through a link, nor beneath a file.
        let mut ancestor = Path::new(&path).parent();
        while let Some(a) = ancestor.filter(|a| !a.as_os_str().is_empty()) {
            let a_str = a.to_string_lossy();
            match index.kinds.get(a_str.as_ref()) {
                Some(Body::Link(_)) => {
                    return Err(SourceError::BeneathLink {
                        path: path.clone(),
                        link: a_str.to_string(),
                    })
                }
                Some(Body::File(_)) => {
                    return Err(SourceError::Duplicate {
                        path: a_str.to_string(),
                    })
                }
                _ => {}
            }
            if index.implied.insert(a_str.to_string()) {
                index.name_bytes += a_str.len() as u64;
            }
            ancestor = a.parent();
        }
        match index.kinds.get(&path) {
            Some(Body::Dir) if body == Body::Dir => continue,
            Some(_) => return Err(SourceError::Duplicate { path }),
            None if body != Body::Dir && index.implied.contains(&path) => {
                return Err(SourceError::Duplicate { path })
            }
            None => {}
        }
        index.name_bytes += path.len() as u64;
        if index.name_bytes > limits.max_entries * 256 {
            return Err(SourceError::TooManyEntries(limits.max_entries));
        }
        if let Err(e) = visit(&path, &body, &mut entry) {
            // A stopped stream shows through the visitor's error as whatever it was doing.
            return Err(match tripped.get() {
                Some(Trip::Ratio) => SourceError::CompressionRatio(limits.max_ratio),
                Some(Trip::Total) => SourceError::UnpackedTooLarge(limits.max_bytes),
                None => e,
            });
        }
        index.kinds.insert(path, body);
    }
    // Each link inside on its own may still lead out through another (`x -> d/l/..` with
    // `d/l -> ..`): every link resolved against all of them.
    for (path, body) in &index.kinds {
        if let Body::Link(target) = body {
            if index.resolve(path) == Resolved::Escapes {
                return Err(SourceError::UnsafeLink {
                    path: path.clone(),
                    target: target.clone(),
                });
            }
        }
    }
    Ok(index)
}

/// Walks a gzipped archive held in memory.
fn walk_gz(
    archive: &[u8],
    limits: &Limits,
    configure: impl FnMut(&mut tar::Archive<Guarded<GzDecoder<Counted<&[u8]>>>>),
    visit: impl FnMut(
        &str,
        &Body,
        &mut tar::Entry<'_, Guarded<GzDecoder<Counted<&[u8]>>>>,
    ) -> Result<(), SourceError>,
) -> Result<Index, SourceError> {
    let read = Rc::new(Cell::new(0));
    let gz = GzDecoder::new(Counted {
        inner: archive,
        read: read.clone(),
    });
    walk(gz, Some(read), limits, configure, visit)
}

fn entry_err(path: &str) -> impl FnOnce(std::io::Error) -> SourceError + '_ {
    move |e| SourceError::BadArchive(format!("{path:?}: {e}"))
}

/// Unpacks a gzipped tar into `dest` within [`LIMITS`].
pub fn unpack(archive: &[u8], dest: &Path) -> Result<(), SourceError> {
    unpack_with(archive, dest, &LIMITS)
}

/// Unpacks a gzipped tar into `dest` within `limits`.
pub fn unpack_with(archive: &[u8], dest: &Path, limits: &Limits) -> Result<(), SourceError> {
    let read = Rc::new(Cell::new(0));
    let gz = GzDecoder::new(Counted {
        inner: archive,
        read: read.clone(),
    });
    unpack_stream(gz, Some(read), dest, limits)
}

/// Unpacks a plain (uncompressed) tar stream into `dest` within [`LIMITS`] (`git archive`'s
/// output).
pub fn unpack_tar(stream: impl Read, dest: &Path) -> Result<(), SourceError> {
    unpack_stream(stream, None, dest, &LIMITS)
}

fn unpack_stream<R: Read>(
    stream: R,
    compressed: Option<Rc<Cell<u64>>>,
    dest: &Path,
    limits: &Limits,
) -> Result<(), SourceError> {
    std::fs::create_dir_all(dest).map_err(|source| SourceError::Io {
        context: format!("creating {}", dest.display()),
        source,
    })?;
    walk(
        stream,
        compressed,
        limits,
        |tar| {
            // Modes masked to 0o777 (no setuid or setgid from an upload), no owners, no
            // extended attributes.
            tar.set_preserve_permissions(false);
            tar.set_preserve_ownerships(false);
            tar.set_unpack_xattrs(false);
            tar.set_overwrite(false);
        },
        |path, _, entry| {
            let ok = entry.unpack_in(dest).map_err(entry_err(path))?;
            if !ok {
                return Err(SourceError::UnsafePath(path.to_string()));
            }
            Ok(())
        },
    )?;
    // The kernel's word on the links as unpacked.
    SourceTree::open(dest)?.check_links().map_err(|e| match e {
        TreeError::LinkEscapes { path, target } => SourceError::UnsafeLink { path, target },
        e => SourceError::Tree(e),
    })
}

/// A visitor keeping the bodies of the `wanted` regular files (each at most [`SPEC_CAP`]).
fn capture<'a>(
    wanted: &'a HashSet<String>,
    found: &'a mut HashMap<String, Vec<u8>>,
) -> impl FnMut(&str, &Body, &mut dyn Read) -> Result<(), SourceError> + 'a {
    move |path, body, entry| {
        if let (Body::File(size), true) = (body, wanted.contains(path)) {
            if *size > SPEC_CAP {
                return Err(SourceError::SpecTooLarge {
                    path: path.to_string(),
                    size: *size,
                    cap: SPEC_CAP,
                });
            }
            let mut text = Vec::with_capacity(*size as usize);
            entry
                .take(SPEC_CAP)
                .read_to_end(&mut text)
                .map_err(entry_err(path))?;
            found.insert(path.to_string(), text);
        }
        Ok(())
    }
}

/// Reads spec files `names` from a packed source: each a regular file of at most
/// [`SPEC_CAP`] bytes, or a link to one inside the archive; absent ones are left out. The
/// whole archive is checked as [`unpack`] checks it, so what is read is what a build unpacks.
pub fn read_files(archive: &[u8], names: &[&str]) -> Result<BTreeMap<String, String>, SourceError> {
    let wanted: HashSet<String> = names
        .iter()
        .map(|n| normalise(Path::new(n), &LIMITS))
        .collect::<Result<_, _>>()?;
    let mut found: HashMap<String, Vec<u8>> = HashMap::new();
    let index = {
        let mut visit = capture(&wanted, &mut found);
        walk_gz(archive, &LIMITS, |_| {}, |p, b, e| visit(p, b, e))?
    };
    // Names reached through links: where each ends, read in a second pass.
    let mut through: BTreeMap<String, String> = BTreeMap::new();
    for name in &wanted {
        if matches!(index.kinds.get(name), Some(Body::File(_))) {
            continue;
        }
        if let Some(Body::Dir) = index.kinds.get(name) {
            return Err(SourceError::NotRegular {
                path: name.clone(),
                kind: "directory".into(),
            });
        }
        match index.resolve(name) {
            Resolved::Inside(end) if end != *name => match index.kinds.get(&end) {
                Some(Body::File(_)) => {
                    through.insert(name.clone(), end);
                }
                Some(Body::Dir) => {
                    return Err(SourceError::NotRegular {
                        path: name.clone(),
                        kind: "link to a directory".into(),
                    })
                }
                _ => {}
            },
            Resolved::Inside(_) => {}
            Resolved::Escapes => {
                return Err(SourceError::UnsafeLink {
                    path: name.clone(),
                    target: index.link(name).unwrap_or_default().to_string(),
                })
            }
            Resolved::Loops => {
                return Err(SourceError::NotRegular {
                    path: name.clone(),
                    kind: "loop of links".into(),
                })
            }
        }
    }
    if !through.is_empty() {
        let ends: HashSet<String> = through.values().cloned().collect();
        let mut more = HashMap::new();
        {
            let mut visit = capture(&ends, &mut more);
            walk_gz(archive, &LIMITS, |_| {}, |p, b, e| visit(p, b, e))?;
        }
        for (name, end) in through {
            if let Some(text) = more.get(&end) {
                found.insert(name, text.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    for (name, bytes) in found {
        if !wanted.contains(&name) {
            continue;
        }
        let text = String::from_utf8(bytes).map_err(|_| SourceError::NotUtf8Path(name.clone()))?;
        out.insert(name, text);
    }
    Ok(out)
}

/// Reads spec file `name` from a packed source, if present (see [`read_files`]).
pub fn read_file(archive: &[u8], name: &str) -> Result<Option<String>, SourceError> {
    let key = normalise(Path::new(name), &LIMITS)?;
    Ok(read_files(archive, &[name])?.remove(&key))
}

/// A digest of a packed source's entries other than `skip` (paths, contents and link
/// targets, in the archive's order): the code of an app apart from its berth.toml, which a
/// declarative plan compares field by field instead. Contents are streamed into the hash.
pub fn digest_except(archive: &[u8], skip: &[&str]) -> Result<String, SourceError> {
    let skip: HashSet<String> = skip
        .iter()
        .filter_map(|s| normalise(Path::new(s), &LIMITS).ok())
        .collect();
    let mut hasher = Sha256::new();
    walk_gz(
        archive,
        &LIMITS,
        |_| {},
        |path, body, entry| {
            if skip.contains(path) {
                return Ok(());
            }
            hasher.update(path.as_bytes());
            hasher.update([0]);
            match body {
                Body::File(size) => {
                    hasher.update(size.to_le_bytes());
                    let mut buf = [0u8; 64 << 10];
                    loop {
                        let n = entry.read(&mut buf).map_err(entry_err(path))?;
                        if n == 0 {
                            break;
                        }
                        hasher.update(&buf[..n]);
                    }
                }
                Body::Dir => hasher.update(0u64.to_le_bytes()),
                Body::Link(target) => {
                    hasher.update(0u64.to_le_bytes());
                    hasher.update(b"->");
                    hasher.update(target.as_bytes());
                }
            }
            Ok(())
        },
    )?;
    Ok(format!("sha256-{}", hex::encode(hasher.finalize())))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::io::Write;

    /// One raw entry: any path, type flag, link name and mode, as a hostile client writes it.
    #[derive(Debug, Clone)]
    pub(crate) struct Raw {
        pub path: String,
        pub flag: u8,
        pub link: String,
        pub data: Vec<u8>,
        pub mode: u32,
    }

    pub(crate) fn file(path: &str, data: &[u8]) -> Raw {
        Raw {
            path: path.into(),
            flag: b'0',
            link: String::new(),
            data: data.to_vec(),
            mode: 0o644,
        }
    }

    pub(crate) fn link(path: &str, flag: u8, target: &str) -> Raw {
        Raw {
            path: path.into(),
            flag,
            link: target.into(),
            data: vec![],
            mode: 0o777,
        }
    }

    /// A plain tar of `entries`, headers written byte by byte (no checks of the tar crate's
    /// builder in the way); names past 100 bytes get a GNU long-name entry.
    pub(crate) fn tar_of(entries: &[Raw]) -> Vec<u8> {
        let mut t = tar::Builder::new(Vec::new());
        for e in entries {
            if e.path.len() >= 100 {
                let mut long = tar::Header::new_gnu();
                long.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
                long.set_entry_type(tar::EntryType::GNULongName);
                long.set_size(e.path.len() as u64 + 1);
                long.set_mode(0o644);
                long.set_cksum();
                let mut name = e.path.as_bytes().to_vec();
                name.push(0);
                t.append(&long, &name[..]).unwrap();
            }
            let mut h = tar::Header::new_gnu();
            {
                let gnu = h.as_gnu_mut().unwrap();
                let n = e.path.len().min(99);
                gnu.name[..n].copy_from_slice(&e.path.as_bytes()[..n]);
                let l = e.link.len().min(99);
                gnu.linkname[..l].copy_from_slice(&e.link.as_bytes()[..l]);
            }
            h.set_entry_type(tar::EntryType::new(e.flag));
            if e.flag == b'S' {
                // A sparse file of a terabyte in a few bytes of archive.
                h.as_gnu_mut().unwrap().set_real_size(1 << 40);
            }
            h.set_size(e.data.len() as u64);
            h.set_mode(e.mode);
            h.set_cksum();
            t.append(&h, &e.data[..]).unwrap();
        }
        t.into_inner().unwrap()
    }

    pub(crate) fn gz(raw: &[u8]) -> Vec<u8> {
        let mut g = GzEncoder::new(Vec::new(), Compression::fast());
        g.write_all(raw).unwrap();
        g.finish().unwrap()
    }

    pub(crate) fn tgz(entries: &[Raw]) -> Vec<u8> {
        gz(&tar_of(entries))
    }

    fn dir(path: &str) -> Raw {
        Raw {
            path: path.into(),
            flag: b'5',
            link: String::new(),
            data: vec![],
            mode: 0o755,
        }
    }

    #[test]
    fn a_link_out_of_the_tree_is_refused_by_name_at_unpack() {
        for (entries, named) in [
            (vec![link("a", b'2', "/etc/shadow")], "a"),
            (vec![dir("d"), link("d/b", b'2', "../../x")], "d/b"),
            // Each inside on its own, out together: d/l is the root, so d/l/.. its parent.
            (
                vec![dir("d"), link("d/l", b'2', ".."), link("x", b'2', "d/l/..")],
                "x",
            ),
        ] {
            let out = tempfile::tempdir().unwrap();
            match unpack(&tgz(&entries), &out.path().join("t")) {
                Err(SourceError::UnsafeLink { path, .. }) => assert_eq!(path, named),
                other => panic!("{entries:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_spec_linked_out_of_the_archive_is_never_read_nor_echoed() {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        let a = tgz(&[link("berth.toml", b'2', "/etc/hostname")]);
        let e = read_file(&a, "berth.toml").unwrap_err().to_string();
        assert!(e.contains("berth.toml"), "{e}");
        assert!(host.trim().is_empty() || !e.contains(host.trim()), "{e}");
        assert!(digest_except(&a, &[]).is_err());
    }

    #[test]
    fn a_spec_is_read_through_links_inside_and_as_unpack_sees_it() {
        let a = tgz(&[
            dir("./"),
            dir("./real"),
            file("./real/b.toml", b"name = \"x\"\n"),
            link("./conf", b'2', "real"),
            link("./berth.toml", b'2', "conf/b.toml"),
            file("./Procfile", b"web: ./serve\n"),
        ]);
        let specs = read_files(&a, &["berth.toml", "Procfile", "app.json"]).unwrap();
        assert_eq!(specs["berth.toml"], "name = \"x\"\n");
        assert_eq!(specs["Procfile"], "web: ./serve\n");
        assert!(!specs.contains_key("app.json"));
        assert_eq!(
            read_file(&a, "./conf/b.toml").unwrap().as_deref(),
            Some("name = \"x\"\n")
        );
        let out = tempfile::tempdir().unwrap();
        unpack(&a, out.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.path().join("berth.toml")).unwrap(),
            "name = \"x\"\n"
        );
        // `./` is not part of a name: the digest is the same without it.
        let plain = tgz(&[
            dir("real"),
            file("real/b.toml", b"name = \"x\"\n"),
            link("conf", b'2', "real"),
            link("berth.toml", b'2', "conf/b.toml"),
            file("Procfile", b"web: ./serve\n"),
        ]);
        assert_eq!(
            digest_except(&a, &["berth.toml"]).unwrap(),
            digest_except(&plain, &["./berth.toml"]).unwrap()
        );
    }

    #[test]
    fn a_spec_over_a_mebibyte_is_refused_with_its_size() {
        let a = tgz(&[file("berth.toml", &vec![b'#'; 2 << 20])]);
        match read_file(&a, "berth.toml") {
            Err(SourceError::SpecTooLarge { path, size, cap }) => {
                assert_eq!(
                    (path.as_str(), size, cap),
                    ("berth.toml", 2 << 20, SPEC_CAP)
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hard_links_devices_fifos_and_sparse_files_are_refused_by_name() {
        for (flag, kind) in [
            (b'1', "hard link"),
            (b'3', "character device"),
            (b'4', "block device"),
            (b'6', "FIFO"),
            (b'S', "sparse file"),
        ] {
            let a = tgz(&[file("ok", b"x"), link("odd", flag, "ok")]);
            let out = tempfile::tempdir().unwrap();
            match unpack(&a, out.path()) {
                Err(SourceError::Unsupported { path, kind: k }) => {
                    assert_eq!((path.as_str(), k), ("odd", kind))
                }
                // The tar crate reads a sparse header's map before handing the entry over:
                // an inconsistent one is refused there.
                Err(SourceError::BadArchive(_)) if flag == b'S' => {}
                other => panic!("{kind}: {other:?}"),
            }
            assert!(
                read_file(&a, "ok").is_err(),
                "the reader checks as unpack does"
            );
        }
    }

    #[test]
    fn duplicates_and_writes_through_links_are_refused() {
        let out = tempfile::tempdir().unwrap();
        let twice = tgz(&[file("berth.toml", b"a"), file("./berth.toml", b"b")]);
        assert!(matches!(
            unpack(&twice, &out.path().join("1")),
            Err(SourceError::Duplicate { .. })
        ));
        assert!(matches!(
            read_file(&twice, "berth.toml"),
            Err(SourceError::Duplicate { .. })
        ));
        let through = tgz(&[
            dir("sub"),
            link("l", b'2', "sub"),
            file("l/berth.toml", b"x"),
        ]);
        match unpack(&through, &out.path().join("2")) {
            Err(SourceError::BeneathLink { path, link }) => {
                assert_eq!((path.as_str(), link.as_str()), ("l/berth.toml", "l"))
            }
            other => panic!("{other:?}"),
        }
        // A directory given twice is fine.
        unpack(
            &tgz(&[dir("d"), dir("d/"), file("d/f", b"x")]),
            &out.path().join("3"),
        )
        .unwrap();
    }

    #[test]
    fn setuid_bits_are_dropped() {
        let mut f = file("run", b"#!/bin/sh\n");
        f.mode = 0o6755;
        let out = tempfile::tempdir().unwrap();
        unpack(&tgz(&[f]), out.path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.path().join("run"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7000, 0, "{mode:o}");
    }

    #[test]
    fn entry_count_and_depth_are_bounded() {
        let many: Vec<Raw> = (0..11).map(|i| file(&format!("f{i}"), b"")).collect();
        let limits = Limits {
            max_entries: 10,
            ..LIMITS
        };
        let out = tempfile::tempdir().unwrap();
        assert!(matches!(
            unpack_with(&tgz(&many), out.path(), &limits),
            Err(SourceError::TooManyEntries(10))
        ));
        let deep = vec!["d"; 65].join("/");
        assert!(matches!(
            unpack(&tgz(&[file(&deep, b"x")]), &out.path().join("deep")),
            Err(SourceError::TooDeep { limit: 64, .. })
        ));
    }

    /// A gzip stream of a tar holding one file of `size` zero bytes, made without holding
    /// it: one 1 MiB block of zeros deflated on its own (full flush, byte-aligned) and
    /// repeated. The trailer's CRC is not computed (the reader must stop long before it).
    fn zero_bomb(size: u64) -> Vec<u8> {
        use flate2::{Compress, FlushCompress};
        let deflate = |input: &[u8], flush: FlushCompress| {
            let mut c = Compress::new(Compression::best(), false);
            let mut out = Vec::with_capacity(input.len() / 100 + (64 << 10));
            c.compress_vec(input, &mut out, flush).unwrap();
            assert_eq!(c.total_in(), input.len() as u64);
            out
        };
        let mut header = tar::Header::new_gnu();
        header.set_path("zeros").unwrap();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_cksum();
        let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        out.extend(deflate(header.as_bytes(), FlushCompress::Full));
        let block = deflate(&vec![0u8; 1 << 20], FlushCompress::Full);
        for _ in 0..size >> 20 {
            out.extend_from_slice(&block);
        }
        out.extend(deflate(&[], FlushCompress::Finish));
        out.extend([0; 8]);
        out
    }

    #[test]
    fn a_gzip_bomb_is_refused_quickly() {
        let out = tempfile::tempdir().unwrap();
        // 4 MB of gzip for a 4 GiB file: its header alone is over the total.
        let bomb = zero_bomb(4 << 30);
        assert!(bomb.len() < 8 << 20, "{} bytes", bomb.len());
        let started = std::time::Instant::now();
        let r = unpack(&bomb, &out.path().join("4g"));
        assert!(
            matches!(
                r,
                Err(SourceError::UnpackedTooLarge(_)) | Err(SourceError::CompressionRatio(_))
            ),
            "{r:?}"
        );
        // A 1 GiB one, within the total: the ratio stops it after a few MiB.
        let bomb = zero_bomb(1 << 30);
        let r = unpack(&bomb, &out.path().join("1g"));
        assert!(
            matches!(r, Err(SourceError::CompressionRatio(200))),
            "{r:?}"
        );
        let written = std::fs::metadata(out.path().join("1g/zeros"))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(written <= LIMITS.ratio_floor + (1 << 20), "{written}");
        for r in [
            read_file(&bomb, "berth.toml").map(|_| ()),
            digest_except(&bomb, &[]).map(|_| ()),
        ] {
            assert!(matches!(r, Err(SourceError::CompressionRatio(_))), "{r:?}");
        }
        assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
    }

    #[test]
    fn a_plain_tar_unpacks_within_the_same_bounds() {
        let out = tempfile::tempdir().unwrap();
        let ok = tar_of(&[file("app.py", b"print(1)"), link("l", b'2', "app.py")]);
        unpack_tar(&ok[..], out.path()).unwrap();
        assert!(out.path().join("app.py").is_file());
        let bad = tar_of(&[link("l", b'2', "/etc")]);
        assert!(matches!(
            unpack_tar(&bad[..], &out.path().join("bad")),
            Err(SourceError::UnsafeLink { .. })
        ));
    }
}

/// Property tests: generated hostile archives never write outside the tree, never panic,
/// are refused whenever an entry is hostile, and finish quickly.
#[cfg(test)]
mod props {
    use super::tests::{tgz, Raw};
    use super::*;
    use proptest::prelude::*;
    use std::time::{Duration, Instant};

    fn component() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("berth.toml".to_string()),
            Just("..".to_string()),
            Just(".".to_string()),
        ]
    }

    fn rel_path() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::collection::vec(component(), 1..5).prop_map(|c| c.join("/")),
            1 => prop::collection::vec(component(), 1..3).prop_map(|c| format!("/{}", c.join("/"))),
            // Deep trees, past the depth limit at times (long names as GNU long-name entries).
            1 => (1usize..90).prop_map(|n| format!("{}f", "d/".repeat(n))),
        ]
    }

    fn target() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => rel_path(),
            1 => prop_oneof![
                Just("/etc/shadow".to_string()),
                Just("/".to_string()),
                Just("../../secret".to_string()),
            ],
        ]
    }

    fn entry() -> impl Strategy<Value = Raw> {
        let data = prop::collection::vec(any::<u8>(), 0..64);
        (rel_path(), 0u8..8, target(), data).prop_map(|(path, k, link, data)| {
            let (flag, data) = match k {
                0 | 1 => (b'0', data),
                2 => (b'5', vec![]),
                3 | 4 => (b'2', vec![]),
                5 => (b'1', vec![]),
                6 => ([b'3', b'4', b'6'][data.len() % 3], vec![]),
                _ => (b'S', vec![]),
            };
            Raw {
                path,
                flag,
                link,
                data,
                mode: 0o6777,
            }
        })
    }

    /// Whether an entry must make the archive refused on its own.
    fn hostile(e: &Raw) -> bool {
        let p = Path::new(&e.path);
        let bad_path = e.path.starts_with('/')
            || p.components().any(|c| c == Component::ParentDir)
            || p.components().count() > LIMITS.max_depth;
        let bad_kind = !matches!(e.flag, b'0' | b'5' | b'2');
        let bad_link = e.flag == b'2'
            && (e.link.starts_with('/')
                || lexical(&p.parent().unwrap_or(Path::new("")).join(&e.link)).is_none());
        bad_path || bad_kind || bad_link
    }

    /// Every path under `root` (links not followed) with its length and bytes, but `skip`.
    fn snapshot(root: &Path, skip: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p == skip {
                    continue;
                }
                let meta = std::fs::symlink_metadata(&p).unwrap();
                let body = if meta.is_file() {
                    std::fs::read(&p).unwrap()
                } else {
                    vec![]
                };
                if meta.is_dir() {
                    stack.push(p.clone());
                }
                out.push((p, body));
            }
        }
        out.sort();
        out
    }

    use std::path::PathBuf;

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            // No regression files written into the source tree.
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn unpacking_stays_in_the_tree(entries in prop::collection::vec(entry(), 1..10)) {
            let sentinel = tempfile::tempdir().unwrap();
            std::fs::write(sentinel.path().join("secret"), "SECRET").unwrap();
            std::fs::create_dir(sentinel.path().join("inner")).unwrap();
            let tree = sentinel.path().join("inner/tree");
            let before = snapshot(sentinel.path(), &tree);
            let archive = tgz(&entries);
            let started = Instant::now();
            let result = unpack(&archive, &tree);
            let spec = read_file(&archive, "berth.toml");
            let digest = digest_except(&archive, &[]);
            prop_assert!(started.elapsed() < Duration::from_secs(5));
            prop_assert_eq!(&before, &snapshot(sentinel.path(), &tree), "written outside the tree");
            if entries.iter().any(hostile) {
                prop_assert!(result.is_err(), "accepted a hostile archive: {:?}", entries);
                prop_assert!(spec.is_err() && digest.is_err());
            }
            if result.is_ok() {
                prop_assert!(
                    matches!(
                        spec,
                        Ok(_) | Err(SourceError::NotUtf8Path(_)) | Err(SourceError::NotRegular { .. })
                    ) && digest.is_ok(),
                    "{:?} {:?}", spec, digest
                );
                let t = SourceTree::open(&tree).unwrap();
                prop_assert!(t.check_links().is_ok());
                // The spec read from the archive is the file unpacked.
                if let Ok(Some(text)) = &spec {
                    prop_assert_eq!(Some(text.clone()), t.read_spec("berth.toml").unwrap());
                }
            }
            for e in [result.err(), spec.err(), digest.err()].into_iter().flatten() {
                prop_assert!(!e.to_string().contains("SECRET"));
            }
        }
    }
}

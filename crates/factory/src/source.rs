//! Packing an app directory into a gzipped tarball for upload, and unpacking one.

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Component, Path};

/// Default upload limit: 256 MiB compressed.
pub const DEFAULT_UPLOAD_LIMIT: u64 = 256 << 20;
/// Most bytes an upload may expand to.
pub const MAX_UNPACKED_BYTES: u64 = 2 << 30;

/// Errors packing or unpacking sources.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0} is not a directory")]
    NotADirectory(String),
    #[error("the packed source is {size} bytes, over the upload limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("unpacked source would exceed {0} bytes")]
    UnpackedTooLarge(u64),
    #[error("the upload is not a valid gzipped tar archive: {0}")]
    BadArchive(String),
    #[error("archive entry {0:?} points outside the source directory")]
    UnsafePath(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SourceError {
    let context = context.into();
    move |source| SourceError::Io { context, source }
}

/// Counts bytes written, failing once past a limit.
struct Limited<W> {
    inner: W,
    written: u64,
    limit: u64,
}

impl<W: Write> Write for Limited<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written += buf.len() as u64;
        if self.written > self.limit {
            return Err(std::io::Error::other("upload limit exceeded"));
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Packs `dir` into a reproducible `tar.gz` (sorted, zeroed times and owners), skipping
/// `.git` and whatever `.gitignore` or `.dockerignore` exclude. Fails once the archive
/// passes `limit` bytes.
pub fn pack(dir: &Path, limit: u64) -> Result<Vec<u8>, SourceError> {
    if !dir.is_dir() {
        return Err(SourceError::NotADirectory(dir.display().to_string()));
    }
    let out = Limited {
        inner: Vec::new(),
        written: 0,
        limit,
    };
    let mut tar = tar::Builder::new(GzEncoder::new(out, Compression::fast()));
    tar.follow_symlinks(false);
    let walker = ignore::WalkBuilder::new(dir)
        .hidden(false)
        .git_ignore(true)
        .git_global(false)
        .git_exclude(false)
        .require_git(false)
        .parents(false)
        .add_custom_ignore_filename(".dockerignore")
        .filter_entry(|e| e.file_name() != ".git")
        .sort_by_file_name(|a, b| a.cmp(b))
        .build();
    let too_large = |e: &std::io::Error| e.to_string().contains("upload limit exceeded");
    for entry in walker {
        let entry = entry.map_err(|e| SourceError::Io {
            context: format!("reading {}", dir.display()),
            source: std::io::Error::other(e.to_string()),
        })?;
        let path = entry.path();
        let Ok(rel) = path.strip_prefix(dir) else {
            continue;
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        if let Err(e) = append_entry(&mut tar, path, rel) {
            if too_large(&e) {
                return Err(SourceError::TooLarge {
                    size: limit + 1,
                    limit,
                });
            }
            return Err(io(format!("packing {}", rel.display()))(e));
        }
    }
    let finish = tar.into_inner().and_then(|gz| gz.finish());
    match finish {
        Ok(limited) => Ok(limited.inner),
        Err(e) if too_large(&e) => Err(SourceError::TooLarge {
            size: limit + 1,
            limit,
        }),
        Err(e) => Err(io("packing")(e)),
    }
}

/// Appends one file, directory or symlink at `path` as `name`, with reproducible metadata
/// (zeroed times and owners). Other file types are skipped.
pub fn append_entry<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &Path,
    name: &Path,
) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(&meta, tar::HeaderMode::Deterministic);
    header.set_mtime(0);
    if meta.is_dir() {
        tar.append_data(&mut header, name, std::io::empty())
    } else if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path)?;
        tar.append_link(&mut header, name, target)
    } else if meta.is_file() {
        let f = std::fs::File::open(path)?;
        tar.append_data(&mut header, name, f)
    } else {
        Ok(())
    }
}

/// The content id of a packed source: `sha256-<hex>` of the archive (reproducible, so an
/// unchanged directory gives the same id).
pub fn content_id(archive: &[u8]) -> String {
    format!("sha256-{}", hex::encode(Sha256::digest(archive)))
}

/// A digest of a packed source's files other than `skip` (paths and contents, in the
/// archive's order): the code of an app apart from its berth.toml, which a declarative plan
/// compares field by field instead.
pub fn digest_except(archive: &[u8], skip: &[&str]) -> Result<String, SourceError> {
    let mut tar = tar::Archive::new(GzDecoder::new(archive));
    let mut hasher = Sha256::new();
    let entries = tar
        .entries()
        .map_err(io("reading the archive".to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(io("reading the archive".to_string()))?;
        let path = entry
            .path()
            .map_err(io("reading the archive".to_string()))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if skip.contains(&path.as_str()) || path.is_empty() {
            continue;
        }
        hasher.update(path.as_bytes());
        hasher.update([0]);
        let mut body = Vec::new();
        entry
            .read_to_end(&mut body)
            .map_err(io(format!("reading {path}")))?;
        hasher.update((body.len() as u64).to_le_bytes());
        hasher.update(&body);
    }
    Ok(format!("sha256-{}", hex::encode(hasher.finalize())))
}

/// Unpacks a `tar.gz` into `dest`, refusing entries that escape it, devices, and archives
/// that expand past [`MAX_UNPACKED_BYTES`].
pub fn unpack(archive: &[u8], dest: &Path) -> Result<(), SourceError> {
    std::fs::create_dir_all(dest).map_err(io(format!("creating {}", dest.display())))?;
    let mut tar = tar::Archive::new(GzDecoder::new(archive));
    tar.set_preserve_permissions(true);
    tar.set_overwrite(true);
    let mut total = 0u64;
    let entries = tar
        .entries()
        .map_err(|e| SourceError::BadArchive(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| SourceError::BadArchive(e.to_string()))?;
        let path = entry
            .path()
            .map_err(|e| SourceError::BadArchive(e.to_string()))?
            .into_owned();
        if path.is_absolute()
            || path
                .components()
                .any(|c| matches!(c, Component::ParentDir | Component::RootDir))
        {
            return Err(SourceError::UnsafePath(path.display().to_string()));
        }
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink()) {
            continue;
        }
        total += entry.size();
        if total > MAX_UNPACKED_BYTES {
            return Err(SourceError::UnpackedTooLarge(MAX_UNPACKED_BYTES));
        }
        let ok = entry
            .unpack_in(dest)
            .map_err(|e| SourceError::BadArchive(format!("{}: {e}", path.display())))?;
        if !ok {
            return Err(SourceError::UnsafePath(path.display().to_string()));
        }
    }
    Ok(())
}

/// Reads a file from a packed source, if present (used to find `berth.toml` before building).
pub fn read_file(archive: &[u8], name: &str) -> Result<Option<String>, SourceError> {
    let mut tar = tar::Archive::new(GzDecoder::new(archive));
    for entry in tar
        .entries()
        .map_err(|e| SourceError::BadArchive(e.to_string()))?
    {
        let mut entry = entry.map_err(|e| SourceError::BadArchive(e.to_string()))?;
        let matches = entry.path().map(|p| p == Path::new(name)).unwrap_or(false);
        if matches {
            let mut s = String::new();
            entry
                .read_to_string(&mut s)
                .map_err(|e| SourceError::BadArchive(format!("{name}: {e}")))?;
            return Ok(Some(s));
        }
    }
    Ok(None)
}

/// The git commit of `dir` when it is a clean git checkout.
pub fn git_commit(dir: &Path) -> Option<String> {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let top = run(&["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    let dirty = run(&["status", "--porcelain", "--untracked-files=normal"])?;
    if !dirty.is_empty() {
        return None;
    }
    run(&["rev-parse", "HEAD"]).filter(|s| s.len() == 40)
}

/// When the checked-out commit of `dir` was made (Unix seconds, committer time).
pub fn git_commit_time(dir: &Path) -> Option<i64> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["log", "-1", "--format=%ct"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_honours_ignore_files_and_is_reproducible() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("app.py"), "print(1)").unwrap();
        std::fs::write(d.path().join(".gitignore"), "secret.txt\n").unwrap();
        std::fs::write(d.path().join(".dockerignore"), "big/\n").unwrap();
        std::fs::write(d.path().join("secret.txt"), "x").unwrap();
        std::fs::create_dir(d.path().join("big")).unwrap();
        std::fs::write(d.path().join("big/blob"), "y").unwrap();
        std::fs::create_dir(d.path().join(".git")).unwrap();
        std::fs::write(d.path().join(".git/HEAD"), "z").unwrap();
        let a = pack(d.path(), DEFAULT_UPLOAD_LIMIT).unwrap();
        let b = pack(d.path(), DEFAULT_UPLOAD_LIMIT).unwrap();
        assert_eq!(content_id(&a), content_id(&b));
        let out = tempfile::tempdir().unwrap();
        unpack(&a, out.path()).unwrap();
        assert!(out.path().join("app.py").exists());
        assert!(!out.path().join("secret.txt").exists());
        assert!(!out.path().join("big").exists());
        assert!(!out.path().join(".git").exists());
        assert_eq!(
            read_file(&a, "app.py").unwrap().as_deref(),
            Some("print(1)")
        );
    }

    #[test]
    fn pack_stops_at_the_limit() {
        let d = tempfile::tempdir().unwrap();
        let noise: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        std::fs::write(d.path().join("blob"), noise).unwrap();
        match pack(d.path(), 10_000) {
            Err(SourceError::TooLarge { limit, .. }) => assert_eq!(limit, 10_000),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn unpack_refuses_escaping_paths() {
        let mut raw = Vec::new();
        {
            let mut t = tar::Builder::new(GzEncoder::new(&mut raw, Compression::fast()));
            let mut h = tar::Header::new_gnu();
            let data = b"evil";
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
            h.set_cksum();
            t.append(&h, &data[..]).unwrap();
            t.into_inner().unwrap().finish().unwrap();
        }
        let out = tempfile::tempdir().unwrap();
        let inner = out.path().join("inner");
        assert!(unpack(&raw, &inner).is_err());
        assert!(!out.path().join("escape").exists());
        assert!(matches!(
            unpack(b"not a tarball", &inner),
            Err(SourceError::BadArchive(_))
        ));
    }
}

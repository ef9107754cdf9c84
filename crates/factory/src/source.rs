//! Packing an app directory into a gzipped tarball for upload; unpacking and reading one is
//! [`crate::archive`]'s, re-exported here. A link whose target leaves the directory is
//! refused by name (berth never follows a link out of a source), and the ignore files are
//! read only when they are regular files.

pub use crate::archive::{
    digest_except, read_file, read_files, unpack, unpack_tar, unpack_with, Limits, LIMITS,
};
use crate::tree::{SourceTree, TreeError};
use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

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
    #[error("{path:?} is a link to {target:?}, outside the source directory: berth does not follow links out of a source; copy the file in or remove the link")]
    UnsafeLink { path: String, target: String },
    #[error(
        "archive entry {path:?} is beneath the link {link:?}: berth does not write through links"
    )]
    BeneathLink { path: String, link: String },
    #[error("archive entry {path:?} is a {kind}: berth takes regular files, directories and symbolic links inside the source (pack without hard links, e.g. tar --hard-dereference)")]
    Unsupported { path: String, kind: &'static str },
    #[error("archive entry {path:?} is given more than once")]
    Duplicate { path: String },
    #[error("the archive has more than {0} entries")]
    TooManyEntries(u64),
    #[error("the archive expands more than {0} times its compressed size: refused as a compression bomb")]
    CompressionRatio(u64),
    #[error("archive entry {path:?} is deeper than {limit} directories")]
    TooDeep { path: String, limit: usize },
    #[error("archive entry {path:?}… has a path longer than {limit} bytes")]
    PathTooLong { path: String, limit: usize },
    #[error("{0:?} is not a UTF-8 name or text")]
    NotUtf8Path(String),
    #[error("{path} is {size} bytes, over the limit of {cap} bytes for a spec file")]
    SpecTooLarge { path: String, size: u64, cap: u64 },
    #[error("{path} is a {kind}, not a regular file")]
    NotRegular { path: String, kind: String },
    #[error(transparent)]
    Tree(#[from] TreeError),
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

/// The ignore files `pack` reads in each directory.
const IGNORE_FILES: &[&str] = &[".gitignore", ".dockerignore"];

/// Refuses an ignore file of directory `rel` that is not a regular file: the ignore crate
/// opens them by path, and a `.gitignore -> /etc/shadow` must not be read (its lines could
/// come back in a glob error).
fn check_ignore_files(tree: &SourceTree, rel: &str) -> Result<(), SourceError> {
    for name in IGNORE_FILES {
        let path = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        match tree.kind_nofollow(&path)? {
            None | Some(crate::tree::Kind::File) => {}
            Some(kind) => {
                return Err(SourceError::NotRegular {
                    path,
                    kind: kind.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// Packs `dir` into a reproducible `tar.gz` (sorted, zeroed times and owners), skipping
/// `.git` and whatever `.gitignore` or `.dockerignore` exclude. Fails once the archive
/// passes `limit` bytes, and on a link that leads out of `dir` (named, with its target).
pub fn pack(dir: &Path, limit: u64) -> Result<Vec<u8>, SourceError> {
    if !dir.is_dir() {
        return Err(SourceError::NotADirectory(dir.display().to_string()));
    }
    let tree = SourceTree::open(dir)?;
    check_ignore_files(&tree, "")?;
    let out = Limited {
        inner: Vec::new(),
        written: 0,
        limit,
    };
    let mut tar = tar::Builder::new(GzEncoder::new(out, Compression::fast()));
    tar.follow_symlinks(false);
    // The walker reads a directory's ignore files once it enters it: each directory's are
    // checked as it is let in (the walker never follows links, `follow_links(false)`).
    let refused: Arc<Mutex<Option<SourceError>>> = Arc::new(Mutex::new(None));
    let filter_tree = Arc::new(SourceTree::open(dir)?);
    let (filter_refused, root) = (refused.clone(), dir.to_path_buf());
    let walker = ignore::WalkBuilder::new(dir)
        .hidden(false)
        .git_ignore(true)
        .git_global(false)
        .git_exclude(false)
        .require_git(false)
        .parents(false)
        .follow_links(false)
        .add_custom_ignore_filename(".dockerignore")
        .filter_entry(move |e| {
            if e.file_name() == ".git" {
                return false;
            }
            if !e.file_type().is_some_and(|t| t.is_dir()) {
                return true;
            }
            let rel = e
                .path()
                .strip_prefix(&root)
                .map(|r| r.to_string_lossy().to_string())
                .unwrap_or_default();
            match check_ignore_files(&filter_tree, &rel) {
                Ok(()) => true,
                Err(err) => {
                    if let Ok(mut slot) = filter_refused.lock() {
                        slot.get_or_insert(err);
                    }
                    false
                }
            }
        })
        .sort_by_file_name(|a, b| a.cmp(b))
        .build();
    let too_large = |e: &std::io::Error| e.to_string().contains("upload limit exceeded");
    for entry in walker {
        if let Some(err) = refused.lock().ok().and_then(|mut slot| slot.take()) {
            return Err(err);
        }
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
        if entry.path_is_symlink() {
            let name = rel.to_string_lossy();
            if let Some(target) = tree.link_escapes(&name)? {
                return Err(SourceError::UnsafeLink {
                    path: name.to_string(),
                    target: target.display().to_string(),
                });
            }
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
    if let Some(err) = refused.lock().ok().and_then(|mut slot| slot.take()) {
        return Err(err);
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
/// (zeroed times and owners). Other file types are skipped. A regular file is opened
/// without following a link put in its place meanwhile.
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
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(
                (rustix::fs::OFlags::NOFOLLOW
                    | rustix::fs::OFlags::NONBLOCK
                    | rustix::fs::OFlags::NOCTTY)
                    .bits() as i32,
            )
            .open(path)?;
        if !f.metadata()?.is_file() {
            return Ok(());
        }
        // The size recorded is the size read: a file that grows meanwhile is cut there.
        tar.append_data(&mut header, name, f.take(meta.len()))
    } else {
        Ok(())
    }
}

/// The content id of a packed source: `sha256-<hex>` of the archive (reproducible, so an
/// unchanged directory gives the same id).
pub fn content_id(archive: &[u8]) -> String {
    format!("sha256-{}", hex::encode(Sha256::digest(archive)))
}

/// git run on `dir` as a checkout, and never as anything the tree's files could make it:
/// the environment a git hook runs in (`GIT_DIR`, the quarantine's object directories, …)
/// is cleared, a directory that looks like a bare repository is not taken for one, git
/// does not look above `dir`, and no configuration can run a command (fsmonitor, hooks).
/// A pushed tree holding `HEAD`, `refs/` and a `config` with `core.fsmonitor` would
/// otherwise have git run that command.
fn checkout_git(dir: &Path) -> std::process::Command {
    checkout_git_under(dir, std::env::vars_os().map(|(k, _)| k))
}

/// [`checkout_git`] for a process whose environment holds the variables `inherited`.
fn checkout_git_under(
    dir: &Path,
    inherited: impl Iterator<Item = std::ffi::OsString>,
) -> std::process::Command {
    let mut c = std::process::Command::new("git");
    for key in inherited {
        if key.to_string_lossy().starts_with("GIT_") {
            c.env_remove(key);
        }
    }
    c.env("GIT_CEILING_DIRECTORIES", dir.parent().unwrap_or(dir))
        .args([
            "-c",
            "safe.bareRepository=explicit",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "core.hooksPath=/dev/null",
        ])
        .arg("-C")
        .arg(dir);
    c
}

/// The git commit of `dir` when it is a clean git checkout.
pub fn git_commit(dir: &Path) -> Option<String> {
    let run = |args: &[&str]| {
        checkout_git(dir)
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
    let out = checkout_git(dir)
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
    fn a_tree_dressed_as_a_repository_never_runs_its_config() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("refs/heads")).unwrap();
        std::fs::create_dir_all(src.join("objects")).unwrap();
        std::fs::write(src.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        let pwned = d.path().join("pwned");
        std::fs::write(
            src.join("config"),
            format!(
                "[core]\n\tbare = false\n\tworktree = .\n\tfsmonitor = \"touch {}; false\"\n",
                pwned.display()
            ),
        )
        .unwrap();
        assert_eq!(git_commit(&src), None);
        let status = checkout_git(&src).args(["status"]).output().unwrap();
        assert!(!status.status.success());
        assert!(!pwned.exists(), "the tree's git config ran a command");
        // The environment of a git hook (GIT_DIR=., the quarantine) never reaches it.
        let cmd = checkout_git_under(
            &src,
            ["GIT_DIR", "GIT_OBJECT_DIRECTORY", "HOME"]
                .map(std::ffi::OsString::from)
                .into_iter(),
        );
        let removed: Vec<_> = cmd
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_string_lossy().to_string())
            .collect();
        assert_eq!(removed, ["GIT_DIR", "GIT_OBJECT_DIRECTORY"]);
    }

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

    #[test]
    fn pack_refuses_a_link_out_of_the_directory_by_name() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("app.py"), "print(1)").unwrap();
        std::os::unix::fs::symlink("app.py", d.path().join("inside")).unwrap();
        pack(d.path(), DEFAULT_UPLOAD_LIMIT).unwrap();
        std::fs::create_dir(d.path().join("conf")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", d.path().join("conf/secrets")).unwrap();
        match pack(d.path(), DEFAULT_UPLOAD_LIMIT) {
            Err(SourceError::UnsafeLink { path, target }) => {
                assert_eq!(
                    (path.as_str(), target.as_str()),
                    ("conf/secrets", "/etc/shadow")
                )
            }
            other => panic!("{other:?}"),
        }
        // An ignored directory's links are not packed, so not refused (a virtualenv's
        // bin/python -> /usr/bin/python3).
        std::fs::write(d.path().join(".gitignore"), "conf/\n").unwrap();
        pack(d.path(), DEFAULT_UPLOAD_LIMIT).unwrap();
        // An ignore file that is a link is not read.
        std::fs::remove_file(d.path().join(".gitignore")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", d.path().join(".dockerignore")).unwrap();
        match pack(d.path(), DEFAULT_UPLOAD_LIMIT) {
            Err(SourceError::NotRegular { path, .. }) => assert_eq!(path, ".dockerignore"),
            other => panic!("{other:?}"),
        }
    }
}

//! Source trees read beneath their root. An uploaded, pushed or fetched source is someone
//! else's directory: a `berth.toml -> /etc/shadow` or a `platform -> /` in it must never
//! make berth read (let alone echo) a file of the machine. Every file berth itself reads from
//! a source is opened through a [`SourceTree`]: `openat2` with `RESOLVE_BENEATH` (links are
//! followed only while they stay inside the root, `..` never climbs out, magic links and
//! other mounts are refused), and read only when it is a regular file under a size cap. A
//! FIFO or a device is never opened for reading: the kind is checked on an `O_PATH`
//! descriptor first. Errors name paths inside the tree and limits, never a file's bytes.
//!
//! A kernel without `openat2` (before 5.6) fails closed with [`TreeError::Unsupported`].

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// Most bytes of a spec file berth reads (berth.toml, Procfile, app.json, score.yaml,
/// Dockerfile, package.json, Cargo.toml…): 1 MiB.
pub const SPEC_CAP: u64 = 1 << 20;

/// The kind of a file in a tree, as errors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Link,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Unknown,
}

impl Kind {
    fn of(t: FileType) -> Kind {
        match t {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Link,
            FileType::Fifo => Kind::Fifo,
            FileType::Socket => Kind::Socket,
            FileType::CharacterDevice => Kind::CharDevice,
            FileType::BlockDevice => Kind::BlockDevice,
            _ => Kind::Unknown,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::File => "regular file",
            Kind::Dir => "directory",
            Kind::Link => "symbolic link",
            Kind::Fifo => "FIFO",
            Kind::Socket => "socket",
            Kind::CharDevice => "character device",
            Kind::BlockDevice => "block device",
            Kind::Unknown => "special file",
        })
    }
}

/// Why a file of a source tree was not read. No variant carries a file's bytes.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{path} leads out of the source directory (through a link or `..`): berth reads a source only inside it")]
    Escapes { path: String },
    #[error("{path} is a link to {target}, outside the source directory: berth does not follow links out of a source; copy the file in or remove the link")]
    LinkEscapes { path: String, target: String },
    #[error("{path} goes through a link: name the directory itself")]
    ThroughLink { path: String },
    #[error("{path} is a {kind}, not a regular file")]
    NotRegular { path: String, kind: Kind },
    #[error("{path} is {size} bytes, over the limit of {cap} bytes")]
    TooLarge { path: String, size: u64, cap: u64 },
    #[error("{path} is not UTF-8 text")]
    NotUtf8 { path: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("this kernel has no openat2 (Linux 5.6 or later is needed): berth does not read a source without it")]
    Unsupported,
}

impl TreeError {
    /// The path an error names.
    pub fn path(&self) -> Option<&str> {
        match self {
            TreeError::Escapes { path }
            | TreeError::LinkEscapes { path, .. }
            | TreeError::ThroughLink { path }
            | TreeError::NotRegular { path, .. }
            | TreeError::TooLarge { path, .. }
            | TreeError::NotUtf8 { path }
            | TreeError::Io { path, .. } => Some(path),
            TreeError::Unsupported => None,
        }
    }
}

/// A source directory: an `O_PATH` descriptor of its root, and the path it was opened at.
#[derive(Debug)]
pub struct SourceTree {
    fd: OwnedFd,
    path: PathBuf,
}

/// Links followed inside the root only; `/proc/self/fd`-style magic links and other mounts
/// never.
fn beneath() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV
}

/// A relative path as given to `openat2` ("." for the root itself).
fn arg(rel: &str) -> &str {
    let rel = rel.trim_start_matches("./");
    if rel.is_empty() {
        "."
    } else {
        rel
    }
}

/// `rel` resolved lexically ("a/./b/../c" → "a/c"), or `None` when it climbs out of the
/// root or is absolute.
pub fn lexical(rel: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in rel.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

impl SourceTree {
    /// Opens the tree rooted at `dir` (the path itself is berth's to choose and is followed).
    pub fn open(dir: &Path) -> Result<SourceTree, TreeError> {
        let fd = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| TreeError::Io {
            path: dir.display().to_string(),
            source: e.into(),
        })?;
        Ok(SourceTree {
            fd,
            path: dir.to_path_buf(),
        })
    }

    /// Where the tree was opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn fail(&self, rel: &str, e: Errno) -> TreeError {
        match e {
            Errno::XDEV => TreeError::Escapes { path: rel.into() },
            Errno::NOSYS => TreeError::Unsupported,
            e => TreeError::Io {
                path: rel.into(),
                source: e.into(),
            },
        }
    }

    fn open_at(&self, rel: &str, flags: OFlags, resolve: ResolveFlags) -> Result<OwnedFd, Errno> {
        rustix::fs::openat2(
            self.fd.as_fd(),
            arg(rel),
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            resolve,
        )
    }

    /// The directory `rel` of this tree, reached without any link (so that its path is
    /// itself, for tools that take paths). A link on the way, or out of the tree, is refused.
    pub fn subtree(&self, rel: &str) -> Result<SourceTree, TreeError> {
        let fd = self
            .open_at(
                rel,
                OFlags::PATH | OFlags::DIRECTORY,
                beneath() | ResolveFlags::NO_SYMLINKS,
            )
            .map_err(|e| match e {
                Errno::LOOP => TreeError::ThroughLink { path: rel.into() },
                Errno::NOTDIR => TreeError::NotRegular {
                    path: rel.into(),
                    kind: self.kind(rel).ok().flatten().unwrap_or(Kind::Unknown),
                },
                e => self.fail(rel, e),
            })?;
        Ok(SourceTree {
            fd,
            path: self.path.join(rel),
        })
    }

    /// What `rel` is, links followed inside the tree; `None` when absent.
    pub fn kind(&self, rel: &str) -> Result<Option<Kind>, TreeError> {
        match self.open_at(rel, OFlags::PATH, beneath()) {
            Ok(fd) => {
                let st = rustix::fs::fstat(&fd).map_err(|e| self.fail(rel, e))?;
                Ok(Some(Kind::of(FileType::from_raw_mode(st.st_mode))))
            }
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(None),
            Err(e) => Err(self.fail(rel, e)),
        }
    }

    /// What `rel` itself is, a link not followed (its parents are, inside the tree).
    pub fn kind_nofollow(&self, rel: &str) -> Result<Option<Kind>, TreeError> {
        match self.open_at(rel, OFlags::PATH | OFlags::NOFOLLOW, beneath()) {
            Ok(fd) => {
                let st = rustix::fs::fstat(&fd).map_err(|e| self.fail(rel, e))?;
                Ok(Some(Kind::of(FileType::from_raw_mode(st.st_mode))))
            }
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(None),
            Err(e) => Err(self.fail(rel, e)),
        }
    }

    /// Whether `rel` is a regular file inside the tree (links followed inside only).
    pub fn is_file(&self, rel: &str) -> bool {
        matches!(self.kind(rel), Ok(Some(Kind::File)))
    }

    /// Whether `rel` is a directory inside the tree.
    pub fn is_dir(&self, rel: &str) -> bool {
        matches!(self.kind(rel), Ok(Some(Kind::Dir)))
    }

    /// Whether `rel` exists inside the tree (a link out of it counts as absent).
    pub fn exists(&self, rel: &str) -> bool {
        matches!(self.kind(rel), Ok(Some(_)))
    }

    /// The bytes of `rel`, a regular file of at most `cap` bytes; `None` when absent. A
    /// FIFO, device or socket is never opened for reading: its kind is read first through
    /// an `O_PATH` descriptor.
    pub fn read_capped(&self, rel: &str, cap: u64) -> Result<Option<Vec<u8>>, TreeError> {
        let probe = match self.open_at(rel, OFlags::PATH, beneath()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => return Ok(None),
            Err(e) => return Err(self.fail(rel, e)),
        };
        let st = rustix::fs::fstat(&probe).map_err(|e| self.fail(rel, e))?;
        let kind = Kind::of(FileType::from_raw_mode(st.st_mode));
        if kind != Kind::File {
            return Err(TreeError::NotRegular {
                path: rel.into(),
                kind,
            });
        }
        let size = st.st_size.max(0) as u64;
        if size > cap {
            return Err(TreeError::TooLarge {
                path: rel.into(),
                size,
                cap,
            });
        }
        let fd = self
            .open_at(
                rel,
                OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY,
                beneath(),
            )
            .map_err(|e| self.fail(rel, e))?;
        // The same file as probed (not swapped for something else in between).
        let again = rustix::fs::fstat(&fd).map_err(|e| self.fail(rel, e))?;
        if again.st_ino != st.st_ino
            || again.st_dev != st.st_dev
            || Kind::of(FileType::from_raw_mode(again.st_mode)) != Kind::File
        {
            return Err(TreeError::NotRegular {
                path: rel.into(),
                kind: Kind::of(FileType::from_raw_mode(again.st_mode)),
            });
        }
        let mut body = Vec::with_capacity(size.min(cap) as usize);
        std::fs::File::from(fd)
            .take(cap + 1)
            .read_to_end(&mut body)
            .map_err(|source| TreeError::Io {
                path: rel.into(),
                source,
            })?;
        if body.len() as u64 > cap {
            return Err(TreeError::TooLarge {
                path: rel.into(),
                size: body.len() as u64,
                cap,
            });
        }
        Ok(Some(body))
    }

    /// The text of spec file `rel` (a regular file inside the tree of at most [`SPEC_CAP`]
    /// bytes, UTF-8); `None` when absent.
    pub fn read_spec(&self, rel: &str) -> Result<Option<String>, TreeError> {
        match self.read_capped(rel, SPEC_CAP)? {
            Some(body) => String::from_utf8(body)
                .map(Some)
                .map_err(|_| TreeError::NotUtf8 { path: rel.into() }),
            None => Ok(None),
        }
    }

    /// The target of link `rel` (its parents resolved inside the tree).
    pub fn read_link(&self, rel: &str) -> Result<PathBuf, TreeError> {
        let (parent, name) = split(rel);
        let dir = self
            .open_at(parent, OFlags::PATH | OFlags::DIRECTORY, beneath())
            .map_err(|e| self.fail(rel, e))?;
        let target =
            rustix::fs::readlinkat(&dir, name, Vec::new()).map_err(|e| self.fail(rel, e))?;
        let target: std::ffi::OsString =
            std::os::unix::ffi::OsStringExt::from_vec(target.into_bytes());
        Ok(PathBuf::from(target))
    }

    /// The entries of directory `rel` (sorted by name) with their kinds, links not followed.
    pub fn read_dir(&self, rel: &str) -> Result<Vec<(String, Kind)>, TreeError> {
        let fd = self
            .open_at(rel, OFlags::RDONLY | OFlags::DIRECTORY, beneath())
            .map_err(|e| self.fail(rel, e))?;
        let dir = rustix::fs::Dir::new(fd).map_err(|e| self.fail(rel, e))?;
        let mut out = Vec::new();
        for entry in dir {
            let entry = entry.map_err(|e| self.fail(rel, e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name == "." || name == ".." {
                continue;
            }
            let mut kind = Kind::of(entry.file_type());
            if kind == Kind::Unknown {
                // Some file systems leave d_type unset: ask for the entry itself.
                let path = join(rel, &name);
                kind = rustix::fs::statat(self.fd.as_fd(), arg(&path), AtFlags::SYMLINK_NOFOLLOW)
                    .map(|st| Kind::of(FileType::from_raw_mode(st.st_mode)))
                    .unwrap_or(Kind::Unknown);
            }
            out.push((name, kind));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Whether link `rel` leads out of the tree: its target absolute, climbing out by `..`
    /// (lexically, for a dangling one) or resolving outside (the kernel's word, which also
    /// catches links through other links). Returns the target when it does.
    pub fn link_escapes(&self, rel: &str) -> Result<Option<PathBuf>, TreeError> {
        let target = self.read_link(rel)?;
        let (parent, _) = split(rel);
        let lexically_inside =
            !target.is_absolute() && lexical(&Path::new(parent).join(&target)).is_some();
        if !lexically_inside {
            return Ok(Some(target));
        }
        match self.open_at(rel, OFlags::PATH, beneath()) {
            Err(Errno::XDEV) => Ok(Some(target)),
            Err(Errno::NOSYS) => Err(TreeError::Unsupported),
            _ => Ok(None),
        }
    }

    /// Walks the whole tree (links not followed) and refuses the first link whose target
    /// escapes it, by name.
    pub fn check_links(&self) -> Result<(), TreeError> {
        let mut stack = vec![String::new()];
        while let Some(dir) = stack.pop() {
            for (name, kind) in self.read_dir(&dir)? {
                let rel = join(&dir, &name);
                match kind {
                    Kind::Dir => stack.push(rel),
                    Kind::Link => {
                        if let Some(target) = self.link_escapes(&rel)? {
                            return Err(TreeError::LinkEscapes {
                                path: rel,
                                target: target.display().to_string(),
                            });
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// `dir/name`, or `name` at the root.
fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// The parent directory ("" at the root) and the last component of `rel`.
fn split(rel: &str) -> (&str, &str) {
    let rel = rel.trim_end_matches('/');
    match rel.rsplit_once('/') {
        Some((parent, name)) => (parent, name),
        None => ("", rel),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, SourceTree) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("src")).unwrap();
        let t = SourceTree::open(&d.path().join("src")).unwrap();
        (d, t)
    }

    #[test]
    fn reads_a_regular_file_and_follows_links_inside() {
        let (d, t) = tree();
        let src = d.path().join("src");
        std::fs::create_dir(src.join("conf")).unwrap();
        std::fs::write(src.join("conf/berth.toml"), "name = \"a\"\n").unwrap();
        symlink("conf/berth.toml", src.join("berth.toml")).unwrap();
        assert_eq!(
            t.read_spec("berth.toml").unwrap().unwrap(),
            "name = \"a\"\n"
        );
        assert_eq!(
            t.read_spec("./conf/berth.toml").unwrap().unwrap(),
            "name = \"a\"\n"
        );
        assert!(t.read_spec("Procfile").unwrap().is_none());
        assert!(t.is_file("berth.toml") && t.is_dir("conf") && !t.exists("nope"));
        t.check_links().unwrap();
    }

    #[test]
    fn a_link_to_a_host_file_is_never_read_nor_echoed() {
        let (d, t) = tree();
        let src = d.path().join("src");
        std::fs::write(d.path().join("secret"), "TOP-SECRET").unwrap();
        symlink("/etc/hostname", src.join("berth.toml")).unwrap();
        symlink("../secret", src.join("score.yaml")).unwrap();
        for name in ["berth.toml", "score.yaml"] {
            let e = t.read_spec(name).unwrap_err();
            assert!(matches!(e, TreeError::Escapes { .. }), "{e:?}");
            let text = e.to_string();
            assert!(
                text.contains(name) && !text.contains("TOP-SECRET"),
                "{text}"
            );
            assert!(!t.is_file(name) && !t.exists(name));
        }
        match t.check_links().unwrap_err() {
            TreeError::LinkEscapes { path, .. } => {
                assert!(path == "berth.toml" || path == "score.yaml")
            }
            e => panic!("{e:?}"),
        }
        // `..` in the name itself.
        assert!(matches!(
            t.read_spec("../secret"),
            Err(TreeError::Escapes { .. })
        ));
        assert!(matches!(
            t.read_spec("/etc/hostname"),
            Err(TreeError::Escapes { .. })
        ));
    }

    #[test]
    fn a_link_through_a_link_to_the_root_is_caught_by_the_kernel() {
        let (d, t) = tree();
        let src = d.path().join("src");
        std::fs::create_dir(src.join("d")).unwrap();
        // Each lexically inside, together outside: d/l is the root, so d/l/.. its parent.
        symlink("..", src.join("d/l")).unwrap();
        symlink("d/l/..", src.join("x")).unwrap();
        match t.check_links().unwrap_err() {
            TreeError::LinkEscapes { path, .. } => assert_eq!(path, "x"),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn fifos_and_devices_are_never_opened() {
        let (d, t) = tree();
        let src = d.path().join("src");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            src.join("Procfile"),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        // Would block forever if it were opened for reading without O_NONBLOCK.
        match t.read_spec("Procfile").unwrap_err() {
            TreeError::NotRegular { path, kind } => {
                assert_eq!((path.as_str(), kind), ("Procfile", Kind::Fifo))
            }
            e => panic!("{e:?}"),
        }
        // A device node inside the tree (root can make one): refused by kind.
        let made = rustix::fs::mknodat(
            rustix::fs::CWD,
            src.join("zero"),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o644),
            rustix::fs::makedev(1, 5),
        );
        if made.is_ok() {
            assert!(matches!(
                t.read_spec("zero"),
                Err(TreeError::NotRegular {
                    kind: Kind::CharDevice,
                    ..
                })
            ));
        }
        // A link to /dev/zero leaves the tree.
        symlink("/dev/zero", src.join("app.json")).unwrap();
        assert!(matches!(
            t.read_spec("app.json"),
            Err(TreeError::Escapes { .. })
        ));
    }

    #[test]
    fn a_spec_over_the_cap_is_refused_with_its_size() {
        let (d, t) = tree();
        let src = d.path().join("src");
        std::fs::write(src.join("berth.toml"), vec![b'#'; 2 << 20]).unwrap();
        match t.read_spec("berth.toml").unwrap_err() {
            TreeError::TooLarge { path, size, cap } => {
                assert_eq!(
                    (path.as_str(), size, cap),
                    ("berth.toml", 2 << 20, SPEC_CAP)
                )
            }
            e => panic!("{e:?}"),
        }
        std::fs::write(src.join("bin"), [0xff, 0xfe]).unwrap();
        assert!(matches!(t.read_spec("bin"), Err(TreeError::NotUtf8 { .. })));
    }

    #[test]
    fn a_subtree_is_reached_without_links() {
        let (d, t) = tree();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("apps/web")).unwrap();
        symlink("/", src.join("platform")).unwrap();
        symlink("apps", src.join("inside")).unwrap();
        let apps = t.subtree("apps").unwrap();
        assert_eq!(apps.path(), src.join("apps"));
        assert!(apps.is_dir("web"));
        assert!(matches!(
            t.subtree("platform"),
            Err(TreeError::ThroughLink { .. }) | Err(TreeError::Escapes { .. })
        ));
        assert!(matches!(
            t.subtree("inside"),
            Err(TreeError::ThroughLink { .. })
        ));
        assert!(t.subtree("../").is_err());
        assert_eq!(
            t.read_dir("").unwrap(),
            vec![
                ("apps".to_string(), Kind::Dir),
                ("inside".to_string(), Kind::Link),
                ("platform".to_string(), Kind::Link)
            ]
        );
    }

    #[test]
    fn lexical_resolution() {
        assert_eq!(lexical(Path::new("a/./b/../c")), Some(PathBuf::from("a/c")));
        assert_eq!(lexical(Path::new("a/../..")), None);
        assert_eq!(lexical(Path::new("/etc")), None);
    }
}

//! The part of this machine's stack an app built by berth's language builders needs to run
//! anywhere else (a Kubernetes node): such an image holds only `/app` and runs on the host's
//! `/usr`; for a cluster it gets a layer of the host files its processes use — each
//! program's ELF closure (what `ldd` lists), the interpreters' standard libraries (Python's
//! `lib/python3.N` and its extension modules' libraries), `/bin/sh`, the CA certificates —
//! and nothing else of the machine.

use crate::image::ImageMeta;
use crate::tree::{Kind, SourceTree, TreeError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error(
        "process {process}: {program:?} is neither in the app nor on this machine's PATH ({path})"
    )]
    NotFound {
        process: String,
        program: String,
        path: String,
    },
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("{link} is a link to {target}, on this machine outside the app: berth follows a link out of the app only into {allowed}; copy the file into the app instead")]
    LinkOut {
        link: String,
        target: String,
        allowed: String,
    },
    #[error("{path} is on this machine outside the app: an image gets the app and, of this machine, only programs, libraries and certificates under {allowed}")]
    HostOut { path: String, allowed: String },
    #[error("ldd {file}: {message}")]
    Ldd { file: String, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Top-level links of a merged-`/usr` system, kept as links in the layer.
const ROOT_LINKS: &[&str] = &["/bin", "/lib", "/lib64", "/sbin"];
/// Parts of Python's standard library no server uses.
const PYTHON_SKIP: &[&str] = &["test", "idlelib", "tkinter", "turtledemo", "__pycache__"];
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Always there: the shell (`sh -c` commands), `sleep` (a pod's stop waits a moment for
/// its endpoints to go) and the CA certificates.
const ALWAYS: &[&str] = &[
    "/bin/sh",
    "/bin/sleep",
    "/etc/ssl/certs/ca-certificates.crt",
];

/// Where on the host a link of the app may lead (a virtualenv's `bin/python ->
/// /usr/bin/python3.N`): the system's programs, libraries and certificates, nothing else.
const HOST_ALLOWED: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc/ssl/certs",
    "/etc/alternatives",
];

/// An absolute image path with `.` and `..` resolved lexically (`/app/../etc` → `/etc`), so
/// that a path of the app is recognised as one only when it stays in `/app`.
fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Where a path of the image is: the app's (`Some(relative path)`, read beneath the app's
/// tree) or the host's (`None`).
fn app_rel(path: &Path) -> Option<String> {
    clean(path)
        .strip_prefix("/app")
        .ok()
        .map(|rel| rel.to_string_lossy().to_string())
}

/// Where a path of the image is: the app's (`/app/…`, in `app_root`) or the host's.
fn locate(app_root: &Path, path: &Path) -> (bool, PathBuf) {
    match app_rel(path) {
        Some(rel) => (true, app_root.join(rel)),
        None => (false, clean(path)),
    }
}

struct Closure<'a> {
    app: &'a SourceTree,
    /// The image's PATH.
    path_var: String,
    /// Image path → host file (the same path, but for berth's own binary).
    files: BTreeMap<PathBuf, PathBuf>,
    seen: BTreeSet<PathBuf>,
}

impl Closure<'_> {
    /// A host path with its parent directories resolved (so that `/lib/x/libc.so.6` is kept
    /// as `/usr/lib/x/libc.so.6`, under the layer's `lib -> usr/lib`).
    fn normalise(path: &Path) -> PathBuf {
        match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) => std::fs::canonicalize(parent)
                .map(|p| p.join(name))
                .unwrap_or_else(|_| path.to_path_buf()),
            _ => path.to_path_buf(),
        }
    }

    /// Adds `path` (an image path) and whatever it needs: the links it goes through, the
    /// file they end at, its interpreter (`#!`), its libraries.
    fn add(&mut self, path: &Path) -> Result<(), StackError> {
        if path == Path::new(crate::providers::BERTH_IN_CONTAINER) {
            // berth's own binary (`serve-static`), which berth's runtime mounts there.
            let exe = std::env::current_exe().map_err(|source| StackError::Io {
                context: "finding berth's own binary".into(),
                source,
            })?;
            self.files.insert(path.to_path_buf(), exe.clone());
            for lib in ldd(&exe)? {
                self.add(&lib)?;
            }
            return Ok(());
        }
        let mut current = clean(path);
        for _ in 0..40 {
            let (in_app, real) = locate(self.app.path(), &current);
            let key = if in_app {
                current.clone()
            } else {
                Self::normalise(&current)
            };
            if !self.seen.insert(key.clone()) {
                return Ok(());
            }
            // The app's files are looked at beneath its tree: a link in it is followed
            // inside only, and out of it only into the host's system directories.
            let (is_link, is_file) = match app_rel(&current) {
                Some(rel) => match self.app.kind_nofollow(&rel)? {
                    Some(kind) => (kind == Kind::Link, kind == Kind::File),
                    None => {
                        return Err(StackError::Io {
                            context: format!("reading {}", current.display()),
                            source: std::io::ErrorKind::NotFound.into(),
                        })
                    }
                },
                None => {
                    let meta =
                        std::fs::symlink_metadata(&real).map_err(|source| StackError::Io {
                            context: format!("reading {}", real.display()),
                            source,
                        })?;
                    (meta.file_type().is_symlink(), meta.is_file())
                }
            };
            if !in_app {
                // A command, an interpreter (`#!`) or a program found on a PATH the app
                // set may name any host path: only the system's directories are copied.
                if !host_allowed(&key) {
                    return Err(StackError::HostOut {
                        path: key.display().to_string(),
                        allowed: HOST_ALLOWED.join(", "),
                    });
                }
                self.files.insert(key.clone(), key.clone());
            }
            if is_link {
                let target = match app_rel(&current) {
                    Some(rel) => self.app.read_link(&rel)?,
                    None => std::fs::read_link(&real).map_err(|source| StackError::Io {
                        context: format!("reading the link {}", real.display()),
                        source,
                    })?,
                };
                let next = clean(&if target.is_absolute() {
                    target.clone()
                } else {
                    key.parent().unwrap_or(Path::new("/")).join(&target)
                });
                if in_app && app_rel(&next).is_none() && !host_allowed(&next) {
                    return Err(StackError::LinkOut {
                        link: current.display().to_string(),
                        target: target.display().to_string(),
                        allowed: HOST_ALLOWED.join(", "),
                    });
                }
                current = next;
                continue;
            }
            if is_file {
                self.file_needs(&key, &real)?;
            }
            return Ok(());
        }
        Ok(())
    }

    fn file_needs(&mut self, path: &Path, real: &Path) -> Result<(), StackError> {
        let mut head = [0u8; 256];
        let n = std::fs::File::open(real)
            .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
            .unwrap_or(0);
        let head = &head[..n];
        // A script of an npm package (npm itself): the whole package.
        if let Some(package) = node_package(path) {
            if self.seen.insert(package.clone()) {
                self.add_tree(&package, &[])?;
            }
        }
        if head.starts_with(b"#!") {
            let line = String::from_utf8_lossy(head);
            let line = line.lines().next().unwrap_or_default();
            let mut words = line[2..].split_whitespace();
            if let Some(interpreter) = words.next() {
                self.add(Path::new(interpreter))?;
                // `#!/usr/bin/env node`: the program env runs, found on the PATH.
                if interpreter.ends_with("/env") {
                    if let Some(program) = words.find(|w| !w.starts_with('-')) {
                        if let Some(found) = resolve(self.app, program, &self.path_var) {
                            self.add(&found)?;
                        }
                    }
                }
            }
        } else if head.starts_with(b"\x7fELF") {
            for lib in ldd(real)? {
                self.add(&lib)?;
            }
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            if let Some(version) = name
                .strip_prefix("python")
                .filter(|v| v.starts_with('3') && v.chars().all(|c| c.is_ascii_digit() || c == '.'))
            {
                self.python_library(&format!("/usr/lib/python{version}"))?;
            }
        }
        Ok(())
    }

    /// Python's standard library, and the libraries of its extension modules.
    fn python_library(&mut self, dir: &str) -> Result<(), StackError> {
        self.add_tree(Path::new(dir), PYTHON_SKIP)
    }

    /// Every file under `dir` (but directories named in `skip`), shared objects with the
    /// libraries they load.
    fn add_tree(&mut self, dir: &Path, skip: &[&str]) -> Result<(), StackError> {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                let name = e.file_name().to_string_lossy().to_string();
                let Ok(kind) = e.file_type() else { continue };
                if kind.is_dir() {
                    if !skip.contains(&name.as_str()) {
                        stack.push(path);
                    }
                } else if name.ends_with(".so") || name.ends_with(".node") {
                    self.add(&path)?;
                } else {
                    self.files.insert(path.clone(), path);
                }
            }
        }
        Ok(())
    }
}

/// Whether a link of the app may lead to host path `path`.
fn host_allowed(path: &Path) -> bool {
    HOST_ALLOWED.iter().any(|dir| path.starts_with(dir))
}

/// The package directory of a host file inside `node_modules/` (`…/node_modules/npm`), or
/// Debian's tree of Node modules.
fn node_package(path: &Path) -> Option<PathBuf> {
    // Debian's npm: its modules side by side under /usr/share/nodejs.
    const DEBIAN_NODE: &str = "/usr/share/nodejs";
    if path.starts_with(DEBIAN_NODE) {
        return Some(PathBuf::from(DEBIAN_NODE));
    }
    path.ancestors()
        .find(|a| {
            a.parent()
                .and_then(|p| p.file_name())
                .is_some_and(|n| n == "node_modules")
                && !a.starts_with("/app")
        })
        .map(Path::to_path_buf)
}

/// The libraries `ldd` says an ELF file loads (none for a static one).
fn ldd(file: &Path) -> Result<Vec<PathBuf>, StackError> {
    let out = Command::new("ldd")
        .arg(file)
        .output()
        .map_err(|source| StackError::Io {
            context: "running ldd (libc-bin)".into(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if text.contains("not a dynamic executable") || out.stderr.is_empty() {
            return Ok(Vec::new());
        }
        return Err(StackError::Ldd {
            file: file.display().to_string(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("=> not found") {
            return Err(StackError::Ldd {
                file: file.display().to_string(),
                message: format!("a library is missing: {line}"),
            });
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// The program a command starts: its first word after variable assignments and `exec`
/// (`sh -c` commands included: the shell is always in the layer).
fn program_of(command: &str) -> Option<String> {
    shlex::split(command)
        .unwrap_or_else(|| command.split_whitespace().map(str::to_string).collect())
        .into_iter()
        .find(|w| w != "exec" && (w.starts_with('/') || !w.contains('=')))
}

/// Finds `program` as the image would: a path, or the first match on the image's PATH (the
/// app's directories first where PATH names them).
fn resolve(app: &SourceTree, program: &str, path_var: &str) -> Option<PathBuf> {
    if program == crate::providers::BERTH_IN_CONTAINER {
        return Some(PathBuf::from(program));
    }
    if program.contains('/') {
        let p = if program.starts_with('/') {
            PathBuf::from(program)
        } else {
            Path::new("/app").join(program)
        };
        let there = match app_rel(&p) {
            Some(rel) => matches!(app.kind_nofollow(&rel), Ok(Some(_))),
            None => p.symlink_metadata().is_ok(),
        };
        return there.then_some(p);
    }
    path_var
        .split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| Path::new(d).join(program))
        .find(|p| match app_rel(p) {
            // There, link or not: where a link leads is `add`'s to check.
            Some(rel) => matches!(app.kind_nofollow(&rel), Ok(Some(_))),
            None => p.exists(),
        })
}

/// The host files the image's processes need, sorted by where they go in the image (with
/// the host file each is copied from); `app_root` is the image's `/app`.
pub fn needed_files(
    app_root: &Path,
    meta: &ImageMeta,
) -> Result<Vec<(PathBuf, PathBuf)>, StackError> {
    let path_var = meta
        .env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    let app = SourceTree::open(app_root)?;
    let mut closure = Closure {
        app: &app,
        path_var: path_var.clone(),
        files: BTreeMap::new(),
        seen: BTreeSet::new(),
    };
    for link in ROOT_LINKS {
        if Path::new(link).is_symlink() {
            closure
                .files
                .insert(PathBuf::from(link), PathBuf::from(link));
        }
    }
    for always in ALWAYS {
        if Path::new(always).exists() {
            closure.add(Path::new(always))?;
        }
    }
    let commands = meta
        .processes
        .iter()
        .map(|(k, c)| (k.clone(), c.clone()))
        .chain(
            meta.release_command
                .clone()
                .map(|c| ("release".to_string(), c)),
        )
        .chain(meta.test_command.clone().map(|c| ("test".to_string(), c)));
    for (process, command) in commands {
        let Some(program) = program_of(&command) else {
            continue;
        };
        let found = resolve(&app, &program, &path_var).ok_or_else(|| StackError::NotFound {
            process: process.clone(),
            program: program.clone(),
            path: path_var.clone(),
        })?;
        closure.add(&found)?;
    }
    Ok(closure.files.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_program_of_a_command_skips_assignments_and_exec() {
        assert_eq!(program_of("python3 app.py").as_deref(), Some("python3"));
        assert_eq!(
            program_of("FOO=1 exec gunicorn app:app").as_deref(),
            Some("gunicorn")
        );
        assert_eq!(
            program_of("/app/.berth/bin/web --port $PORT").as_deref(),
            Some("/app/.berth/bin/web")
        );
    }

    #[test]
    fn a_python_app_needs_the_interpreter_its_libraries_and_the_standard_library() {
        let app = tempfile::tempdir().unwrap();
        let meta = ImageMeta::host_stack(
            BTreeMap::from([("web".to_string(), "python3 app.py".to_string())]),
            None,
            None,
            vec![],
        );
        let files: Vec<PathBuf> = needed_files(app.path(), &meta)
            .unwrap()
            .into_iter()
            .map(|(image, host)| {
                assert_eq!(image, host);
                image
            })
            .collect();
        let has = |p: &str| files.iter().any(|f| f == Path::new(p));
        assert!(has("/usr/bin/python3"), "the link the command names");
        let interpreter = std::fs::canonicalize("/usr/bin/python3").unwrap();
        assert!(files.contains(&interpreter), "and the file it ends at");
        assert!(files.iter().any(|f| f.ends_with("libc.so.6")), "{files:?}");
        assert!(
            files
                .iter()
                .any(|f| f.to_string_lossy().contains("/json/__init__.py")),
            "the standard library"
        );
        assert!(
            has("/usr/bin/sh") && has("/bin"),
            "the shell, under /bin -> usr/bin"
        );
        assert!(has("/lib"), "merged-/usr links kept");
        assert!(!files.iter().any(|f| f.starts_with("/app")));
        assert!(!files
            .iter()
            .any(|f| f.to_string_lossy().contains("/idlelib/")));
    }

    #[test]
    fn a_static_site_gets_berths_own_server() {
        let app = tempfile::tempdir().unwrap();
        let meta = ImageMeta::host_stack(
            BTreeMap::from([(
                "web".to_string(),
                format!(
                    "{} serve-static --dir /app --port $PORT",
                    crate::providers::BERTH_IN_CONTAINER
                ),
            )]),
            None,
            None,
            vec![],
        );
        let files = needed_files(app.path(), &meta).unwrap();
        let exe = std::env::current_exe().unwrap();
        assert!(
            files.contains(&(PathBuf::from("/.berth/berth"), exe)),
            "{files:?}"
        );
    }

    #[test]
    fn a_command_or_interpreter_naming_a_host_file_is_refused() {
        let app = tempfile::tempdir().unwrap();
        std::fs::write(app.path().join("x"), "#!/etc/shadow\n").unwrap();
        for cmd in ["/etc/shadow", "/app/x", "/root/.bashrc --now"] {
            let meta = ImageMeta::host_stack(
                BTreeMap::from([("web".to_string(), cmd.to_string())]),
                None,
                None,
                vec![],
            );
            let e = needed_files(app.path(), &meta).unwrap_err();
            assert!(matches!(e, StackError::HostOut { .. }), "{cmd}: {e}");
        }
    }

    #[test]
    fn a_program_nowhere_is_named() {
        let app = tempfile::tempdir().unwrap();
        let meta = ImageMeta::host_stack(
            BTreeMap::from([("web".to_string(), "no-such-server --fast".to_string())]),
            None,
            None,
            vec![],
        );
        let e = needed_files(app.path(), &meta).unwrap_err().to_string();
        assert!(e.contains("process web: \"no-such-server\""), "{e}");
    }

    #[test]
    fn an_apps_link_onto_the_host_is_followed_only_into_system_directories() {
        let app = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(app.path().join("bin")).unwrap();
        let web = |cmd: &str| {
            ImageMeta::host_stack(
                BTreeMap::from([("web".to_string(), cmd.to_string())]),
                None,
                None,
                vec![],
            )
        };
        // A virtualenv's interpreter: a link to the host's, allowed.
        std::os::unix::fs::symlink("/bin/sh", app.path().join("bin/python")).unwrap();
        let files = needed_files(app.path(), &web("/app/bin/python app.py")).unwrap();
        assert!(files.iter().any(|(f, _)| f.ends_with("sh")), "{files:?}");
        // Anything else of the host is refused, by name, and never copied.
        for (name, target) in [("shadow", "/etc/shadow"), ("up", "../../../etc/passwd")] {
            std::os::unix::fs::symlink(target, app.path().join("bin").join(name)).unwrap();
            let e = needed_files(app.path(), &web(&format!("/app/bin/{name}")))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("/app/bin/{name}")) && e.contains("/usr"),
                "{e}"
            );
        }
        // A path of the app that climbs out by `..` is the host's, not the app's.
        assert_eq!(app_rel(Path::new("/app/../etc/shadow")), None);
        assert_eq!(app_rel(Path::new("/app/bin/../x")).as_deref(), Some("x"));
    }
}

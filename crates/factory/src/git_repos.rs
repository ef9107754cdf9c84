//! The repositories berth serves for `git push`: one bare repository per app under
//! `<data>/git/APP.git`, whose `pre-receive` hook hands the pushed commit of the deploy
//! branch to berth (`berth git-hook`), so that a push deploys and a failed deploy rejects it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The branch a push deploys.
pub const DEPLOY_BRANCH: &str = "main";

/// Errors of the repositories.
#[derive(Debug, thiserror::Error)]
pub enum GitRepoError {
    #[error("git is not installed (install the `git` package)")]
    Missing,
    #[error("making the repository {path}: {detail}")]
    Init { path: PathBuf, detail: String },
}

/// The app repositories of a data directory.
#[derive(Debug, Clone)]
pub struct GitRepos {
    root: PathBuf,
}

fn git(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

impl GitRepos {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// Where all repositories live (`GIT_PROJECT_ROOT`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The repository of `app` (a checked app name).
    pub fn path(&self, app: &str) -> PathBuf {
        self.root.join(format!("{app}.git"))
    }

    pub fn exists(&self, app: &str) -> bool {
        self.path(app).join("HEAD").is_file()
    }

    /// Makes the app's bare repository if it is not there, and (re)writes its hook to run
    /// `berth` (the binary of this platform, which may have moved since).
    pub fn ensure(&self, app: &str, berth: &Path) -> Result<PathBuf, GitRepoError> {
        let path = self.path(app);
        let fail = |detail: String| GitRepoError::Init {
            path: path.clone(),
            detail,
        };
        if !self.exists(app) {
            std::fs::create_dir_all(&self.root).map_err(|e| fail(e.to_string()))?;
            // Made aside and renamed, so a half-made repository is never served.
            let tmp = self.root.join(format!(".{app}.git.new"));
            let _ = std::fs::remove_dir_all(&tmp);
            let out = Command::new("git")
                .args([
                    "init",
                    "--quiet",
                    "--bare",
                    "--initial-branch",
                    DEPLOY_BRANCH,
                ])
                .arg(&tmp)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .output()
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => GitRepoError::Missing,
                    _ => fail(e.to_string()),
                })?;
            if !out.status.success() {
                return Err(fail(
                    String::from_utf8_lossy(&out.stderr).trim().to_string(),
                ));
            }
            for (key, value) in [
                // Served over smart HTTP by berth, which has checked the token.
                ("http.receivepack", "true"),
                // No branch is deleted. The deploy branch's history is what releases
                // record: the pre-receive hook (`berth git-hook`) refuses rewriting it;
                // other branches may be force-pushed, as on any git host.
                ("receive.denyDeletes", "true"),
                ("receive.denyNonFastForwards", "false"),
                ("receive.fsckObjects", "true"),
            ] {
                git(&tmp, &["config", key, value]).map_err(fail)?;
            }
            std::fs::rename(&tmp, &path).map_err(|e| fail(e.to_string()))?;
        }
        let hook = path.join("hooks").join("pre-receive");
        let script = format!(
            "#!/bin/sh\n# Written by berth: a push to {DEPLOY_BRANCH} deploys the app; a failed deploy rejects the push.\nexec '{}' git-hook\n",
            berth.display().to_string().replace('\'', "'\\''")
        );
        if std::fs::read_to_string(&hook).ok().as_deref() != Some(script.as_str()) {
            std::fs::create_dir_all(path.join("hooks")).map_err(|e| fail(e.to_string()))?;
            let tmp = hook.with_extension("new");
            std::fs::write(&tmp, &script)
                .and_then(|()| {
                    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
                })
                .and_then(|()| std::fs::rename(&tmp, &hook))
                .map_err(|e| fail(e.to_string()))?;
        }
        Ok(path)
    }

    /// Removes an app's repository (the app is destroyed).
    pub fn remove(&self, app: &str) -> std::io::Result<()> {
        match std::fs::remove_dir_all(self.path(app)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_is_made_once_with_its_hook() {
        let d = tempfile::tempdir().unwrap();
        let repos = GitRepos::new(d.path().join("git"));
        assert!(!repos.exists("shop"));
        let path = repos.ensure("shop", Path::new("/usr/bin/berth")).unwrap();
        assert!(repos.exists("shop"));
        let hook = std::fs::read_to_string(path.join("hooks/pre-receive")).unwrap();
        assert!(hook.contains("exec '/usr/bin/berth' git-hook"), "{hook}");
        let mode = std::fs::metadata(path.join("hooks/pre-receive"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
        let head = std::fs::read_to_string(path.join("HEAD")).unwrap();
        assert_eq!(head.trim(), "ref: refs/heads/main");
        // A moved binary: the hook follows it; the repository stays.
        std::fs::write(path.join("marker"), "x").unwrap();
        repos
            .ensure("shop", Path::new("/opt/berth's/berth"))
            .unwrap();
        let hook = std::fs::read_to_string(path.join("hooks/pre-receive")).unwrap();
        assert!(
            hook.contains("exec '/opt/berth'\\''s/berth' git-hook"),
            "{hook}"
        );
        assert!(path.join("marker").exists());
        repos.remove("shop").unwrap();
        assert!(!repos.exists("shop"));
        repos.remove("shop").unwrap();
    }
}

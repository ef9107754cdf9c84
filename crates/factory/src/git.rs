//! Source from a git repository: one commit of a remote repository (a branch, a tag or a
//! commit id), fetched shallow into a directory for a build. Only network transports are
//! allowed (https, http, git, ssh): never a path or `file://` on the building machine, nor
//! git's command-running `ext::` transport — the URL may come from someone else (an agent
//! over MCP).

use crate::tool::Ran;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Why a repository could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error(
        "{0:?} is not a repository URL berth fetches: use https://, http://, git:// or ssh://"
    )]
    BadUrl(String),
    #[error(
        "{0:?} carries a password: berth never puts credentials on a command line or in its records"
    )]
    PasswordInUrl(String),
    #[error("{0:?} is not a branch, tag or commit name")]
    BadRef(String),
    #[error("git is not installed (install the `git` package)")]
    Missing,
    #[error("fetching {url} {git_ref} failed: {detail}")]
    Fetch {
        url: String,
        git_ref: String,
        detail: String,
    },
    #[error("fetching {0} took longer than {1:?}")]
    Timeout(String, Duration),
}

/// Checks that `url` names a remote repository over a network transport.
pub fn check_url(url: &str) -> Result<(), GitError> {
    let allowed = ["https://", "http://", "git://", "ssh://"];
    let ok = allowed.iter().any(|p| url.starts_with(p))
        && url.len() <= 2048
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(GitError::BadUrl(redacted(url)));
    }
    if password_of(url).is_some() {
        return Err(GitError::PasswordInUrl(redacted(url)));
    }
    Ok(())
}

/// The password part of a URL's `user:password@`, if it has one.
fn password_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let (userinfo, _) = authority.rsplit_once('@')?;
    userinfo.split_once(':').map(|(_, password)| password)
}

/// `url` with any password replaced by `***`, fit for errors and logs.
pub fn redacted(url: &str) -> String {
    match password_of(url) {
        Some(p) if !p.is_empty() => url.replacen(&format!(":{p}@"), ":***@", 1),
        _ => url.to_string(),
    }
}

/// Writes git's short SSH form (`git@github.com:acme/shop.git`, as the hosts show it) as
/// the `ssh://` URL it means; any other text is returned as it is.
pub fn normalize_url(url: &str) -> String {
    let url = url.trim();
    if url.contains("://") {
        return url.to_string();
    }
    let Some((user_host, path)) = url.split_once(':') else {
        return url.to_string();
    };
    let Some((user, host)) = user_host.split_once('@') else {
        return url.to_string();
    };
    let plain = |s: &str| {
        !s.is_empty()
            && !s.starts_with('-')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    if plain(user) && plain(host) && !path.is_empty() && !path.starts_with('-') {
        format!("ssh://{user}@{host}/{}", path.trim_start_matches('/'))
    } else {
        url.to_string()
    }
}

/// A private key git authenticates with over ssh, and the known hosts file where the
/// servers' keys are remembered (each server trusted on first use, and held to that key
/// afterwards).
#[derive(Debug, Clone, Copy)]
pub struct SshKey<'a> {
    pub key: &'a Path,
    pub known_hosts: &'a Path,
}

fn shell_quoted(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// Whose credentials a fetch may use.
#[derive(Debug, Clone, Copy)]
enum Who<'a> {
    /// The user running the CLI on their own machine: their git and ssh set-up.
    User,
    /// The platform fetching for a tenant: only the deploy key it holds for the app (if
    /// any) — never the host user's ssh keys, agent, git credential helpers or config.
    Platform(Option<SshKey<'a>>),
}

impl Who<'_> {
    /// Sets git's environment for this identity.
    fn apply(self, cmd: &mut Command) {
        cmd.env("GIT_ALLOW_PROTOCOL", "https:http:git:ssh")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_SSH_COMMAND", self.ssh_command());
        if let Who::Platform(_) = self {
            // No home either: git's HTTP client would read the host user's ~/.netrc.
            cmd.env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("HOME", "/dev/null")
                .env_remove("XDG_CONFIG_HOME")
                .env_remove("SSH_AUTH_SOCK")
                .env_remove("GIT_ASKPASS")
                .env_remove("SSH_ASKPASS");
        }
    }

    /// `GIT_SSH_COMMAND`: never a prompt; for the platform, only its key (or none).
    fn ssh_command(self) -> String {
        match self {
            Who::User => "ssh -o BatchMode=yes".into(),
            Who::Platform(None) => "ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o IdentityAgent=none -o IdentityFile=none".into(),
            Who::Platform(Some(k)) => format!(
                "ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o IdentityAgent=none -i {} -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile={}",
                shell_quoted(k.key),
                shell_quoted(k.known_hosts)
            ),
        }
    }
}

/// The app name a repository suggests: its last path segment without `.git`.
pub fn suggested_app_name(url: &str) -> Option<String> {
    url.trim_end_matches('/')
        .rsplit('/')
        .next()
        .map(|last| berth_core::AppName::suggest_from(last.trim_end_matches(".git")))
        .filter(|n| !n.is_empty())
}

/// Checks a branch, tag or commit name: no options in disguise, nothing git would refuse.
pub fn check_ref(git_ref: &str) -> Result<(), GitError> {
    let ok = !git_ref.is_empty()
        && git_ref.len() <= 255
        && !git_ref.starts_with('-')
        && !git_ref.contains("..")
        && git_ref
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(GitError::BadRef(git_ref.to_string()))
    }
}

fn git(
    dir: &Path,
    args: &[&str],
    deadline: Instant,
    url: &str,
    git_ref: &str,
    who: Who,
) -> Result<(), GitError> {
    let mut cmd = Command::new("git");
    cmd.args([
        "-c",
        "protocol.file.allow=never",
        "-c",
        "protocol.ext.allow=never",
    ])
    .args(args)
    .current_dir(dir);
    // Submodules and redirects are held to the same transports.
    who.apply(&mut cmd);
    let failed = |detail: String| GitError::Fetch {
        url: url.into(),
        git_ref: git_ref.into(),
        detail,
    };
    match crate::tool::run_until(&mut cmd, deadline) {
        Ok(Ran::Succeeded) => Ok(()),
        Ok(Ran::Failed(why)) => Err(failed(why)),
        Ok(Ran::TimedOut) => Err(GitError::Timeout(url.into(), Duration::ZERO)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(GitError::Missing),
        Err(e) => Err(failed(e.to_string())),
    }
}

/// Fetches `git_ref` of `url` into the empty directory `into` (a checkout with one commit:
/// the build sees a clean git working tree and records its commit).
/// Runs on the user's machine (the CLI) with the user's own git and ssh set-up.
pub fn fetch(url: &str, git_ref: &str, into: &Path, timeout: Duration) -> Result<(), GitError> {
    fetch_as(url, git_ref, into, timeout, Who::User)
}

/// [`fetch`] by the platform: authenticating over ssh with `ssh`'s key only, nothing of
/// the host user's keys, agent, credential helpers or git configuration.
pub fn fetch_with(
    url: &str,
    git_ref: &str,
    into: &Path,
    timeout: Duration,
    ssh: Option<SshKey>,
) -> Result<(), GitError> {
    fetch_as(url, git_ref, into, timeout, Who::Platform(ssh))
}

fn fetch_as(
    url: &str,
    git_ref: &str,
    into: &Path,
    timeout: Duration,
    who: Who,
) -> Result<(), GitError> {
    check_url(url)?;
    check_ref(git_ref)?;
    let deadline = Instant::now() + timeout;
    let timed = |r: Result<(), GitError>| match r {
        Err(GitError::Timeout(u, _)) => Err(GitError::Timeout(u, timeout)),
        other => other,
    };
    timed(git(into, &["init", "-q"], deadline, url, git_ref, who))?;
    timed(git(
        into,
        &[
            "fetch",
            "-q",
            "--depth",
            "1",
            "--no-tags",
            "--",
            url,
            git_ref,
        ],
        deadline,
        url,
        git_ref,
        who,
    ))?;
    timed(git(
        into,
        &[
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "-q",
            "FETCH_HEAD",
        ],
        deadline,
        url,
        git_ref,
        who,
    ))
}

/// The commit `branch` of `url` names now (`git ls-remote`), without fetching anything.
pub fn remote_head(url: &str, branch: &str, timeout: Duration) -> Result<String, GitError> {
    remote_head_as(url, branch, timeout, Who::User)
}

/// [`remote_head`] by the platform, authenticating over ssh with `ssh`'s key only.
pub fn remote_head_with(
    url: &str,
    branch: &str,
    timeout: Duration,
    ssh: Option<SshKey>,
) -> Result<String, GitError> {
    remote_head_as(url, branch, timeout, Who::Platform(ssh))
}

fn remote_head_as(
    url: &str,
    branch: &str,
    timeout: Duration,
    who: Who,
) -> Result<String, GitError> {
    check_url(url)?;
    check_ref(branch)?;
    let full = format!("refs/heads/{branch}");
    let dir = tempfile::tempdir().map_err(|e| GitError::Fetch {
        url: url.into(),
        git_ref: branch.into(),
        detail: e.to_string(),
    })?;
    let log = dir.path().join("ls-remote");
    let mut cmd = Command::new("git");
    cmd.args([
        "-c",
        "protocol.file.allow=never",
        "-c",
        "protocol.ext.allow=never",
        "ls-remote",
        "--",
        url,
        &full,
    ])
    .current_dir(dir.path());
    who.apply(&mut cmd);
    let ran = crate::tool::run_logged(&mut cmd, &log, Instant::now() + timeout);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let failed = |detail: String| GitError::Fetch {
        url: url.into(),
        git_ref: branch.into(),
        detail,
    };
    match ran {
        Ok(Ran::Succeeded) => text
            .lines()
            .find_map(|l| {
                let (sha, name) = l.split_once('\t')?;
                (name.trim() == full
                    && sha.len() == 40
                    && sha.chars().all(|c| c.is_ascii_hexdigit()))
                .then(|| sha.to_ascii_lowercase())
            })
            .ok_or_else(|| failed(format!("the repository has no branch {branch:?}"))),
        Ok(Ran::Failed(_)) => Err(failed(
            text.trim()
                .lines()
                .last()
                .unwrap_or("git ls-remote failed")
                .to_string(),
        )),
        Ok(Ran::TimedOut) => Err(GitError::Timeout(url.into(), timeout)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(GitError::Missing),
        Err(e) => Err(failed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_passwords_are_refused_and_never_echoed() {
        let err = check_url("https://ci:s3cr3t-token@git.example.com/shop.git").unwrap_err();
        assert!(matches!(err, GitError::PasswordInUrl(_)));
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        assert!(err.to_string().contains("ci:***@git.example.com"), "{err}");
        // A user name alone (ssh's git@) is no credential.
        check_url("ssh://git@git.example.com/shop.git").unwrap();
        check_url("https://git.example.com/a@b/shop.git").unwrap();
        assert_eq!(redacted("https://a:b@h/x"), "https://a:***@h/x".to_string());
    }

    #[test]
    fn only_network_transports_and_plain_ref_names_are_fetched() {
        for good in [
            "https://git.example.com/a/b.git",
            "git://127.0.0.1:9418/app.git",
            "ssh://git@example.com/a.git",
        ] {
            assert!(check_url(good).is_ok(), "{good}");
        }
        for bad in [
            "file:///etc",
            "/srv/repo",
            "ext::sh -c touch% /tmp/pwned",
            "../repo",
            "https://x/a b",
            "",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert_eq!(
            suggested_app_name("git://127.0.0.1:9418/Shop_Front.git").as_deref(),
            Some("shop-front")
        );
        for good in ["main", "v1.2.3", "feature/x", "0123abcd"] {
            assert!(check_ref(good).is_ok(), "{good}");
        }
        for bad in ["--upload-pack=evil", "a..b", "", "a b", "x;y"] {
            assert!(check_ref(bad).is_err(), "{bad}");
        }
        assert_eq!(
            normalize_url("git@github.com:acme/shop.git"),
            "ssh://git@github.com/acme/shop.git"
        );
        assert_eq!(normalize_url("https://x/y.git"), "https://x/y.git");
        for left in [
            "-oProxyCommand=x@h:p",
            "git@-h:p",
            "git@h:-p",
            "/srv/repo",
            "h:p",
        ] {
            assert_eq!(normalize_url(left), left, "{left}");
            assert!(check_url(&normalize_url(left)).is_err(), "{left}");
        }
    }
}

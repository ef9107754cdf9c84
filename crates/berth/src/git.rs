//! `git push` to berth, the CLI's side: `berth git remote APP` (the remote, and with `--add`
//! the remote and credential helper set up in the current repository), `berth git
//! credential` (a git credential helper that answers with the CLI's token) and the hidden
//! `berth git-hook`, the `pre-receive` hook of berth's repositories, which deploys a push
//! to `main` through the API as the pusher and streams the build back to them.

use crate::cli::Global;
use crate::output;
use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::Command;

/// The remote URL of an app's repository at `base` (the platform's HTTPS address, else
/// the API's).
fn remote_url(base: &str, app: &str) -> String {
    format!("{}/git/{app}.git", base.trim_end_matches('/'))
}

fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Where the platform is served over HTTPS (and whether by berth's local CA); `None`
/// when the edge serves no HTTPS.
async fn platform_https(client: &berth_client::Client) -> Option<(String, bool)> {
    let health: berth_control::openapi::Health = client.get_json("/v1/health").await.ok()?;
    health.platform_url.map(|u| (u, health.local_ca))
}

fn git(args: &[&str]) -> Result<bool> {
    Ok(Command::new("git")
        .args(args)
        .status()
        .context("running git (is it installed?)")?
        .success())
}

/// `berth git remote APP [--add NAME]`.
pub async fn remote(g: &Global, app: &str, add: Option<String>) -> Result<i32> {
    berth_core::AppName::parse(app).map_err(|e| anyhow!("{e}"))?;
    let client = crate::client::discover(g)?;
    let https = platform_https(&client).await;
    let url = remote_url(
        https.as_ref().map_or(client.base(), |(u, _)| u.as_str()),
        app,
    );
    // The helper runs this berth with the same way to the platform.
    let exe = std::env::current_exe().context("finding the berth binary")?;
    let mut helper = format!("!{}", quoted(&exe.display().to_string()));
    if let Some(d) = &g.data_dir {
        let d = if d.is_absolute() {
            d.clone()
        } else {
            std::env::current_dir()?.join(d)
        };
        helper.push_str(&format!(" --data-dir {}", quoted(&d.display().to_string())));
    }
    if let Some(u) = &g.api_url {
        helper.push_str(&format!(" --api-url {}", quoted(u)));
    }
    helper.push_str(" git credential");
    let mut ca_file = None;
    if let Some(name) = &add {
        if !git(&["rev-parse", "--git-dir"])? {
            bail!("the current directory is not in a git repository\nhint: run it inside the repository you will push, or run `git init` first");
        }
        if !git(&["remote", "add", name, &url])? && !git(&["remote", "set-url", name, &url])? {
            bail!("could not add the remote {name:?}");
        }
        if !git(&["config", &format!("credential.{url}.helper"), &helper])? {
            bail!("could not set the credential helper for {url}");
        }
        // berth's local CA certifies the platform: git trusts it for this remote only.
        if let Some((_, true)) = &https {
            let v: serde_json::Value = client.get_json("/v1/ca").await?;
            let pem = v["certificate_pem"].as_str().unwrap_or_default();
            let out = Command::new("git")
                .args(["rev-parse", "--absolute-git-dir"])
                .output()
                .context("running git")?;
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let path = Path::new(&dir).join("berth-ca.pem");
            std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
            let path = path.display().to_string();
            if !git(&["config", &format!("http.{url}.sslCAInfo"), &path])? {
                bail!("could not set the certificate authority for {url}");
            }
            if std::env::var_os("GIT_SSL_CAINFO").is_some() {
                eprintln!("warning: GIT_SSL_CAINFO is set and overrides the certificate authority set for this remote\nhint: unset it for pushes to berth, or add berth's CA (`berth ca export`) to the bundle it names");
            }
            ca_file = Some(path);
        }
    }
    if g.json {
        output::json(&serde_json::json!({
            "app": app, "url": url, "credential_helper": helper, "added": add, "ca_file": ca_file,
        }));
    } else if let Some(name) = add {
        println!("added the remote {name} ({url}); push with: git push {name} main");
    } else {
        println!("{url}");
        if https.as_ref().is_some_and(|(_, local)| *local) {
            eprintln!("hint: berth's local CA certifies it: `berth git remote {app} --add berth` trusts it for this remote (or `berth ca export`)");
        }
        eprintln!(
            "hint: `berth git remote {app} --add berth` adds it here with a credential helper; then git push berth main"
        );
    }
    Ok(0)
}

/// `berth git credential get`: git's credential helper protocol — the request on stdin
/// (`key=value` lines), the answer on stdout. Only `get` answers; `store` and `erase` are
/// no-ops (the token lives with berth).
pub async fn credential(g: &Global, operation: &str) -> Result<i32> {
    let mut request = std::collections::BTreeMap::new();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once('=') {
            request.insert(k.to_string(), v.to_string());
        }
    }
    if operation != "get" {
        return Ok(0);
    }
    let client = crate::client::discover(g)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "username=berth")?;
    writeln!(out, "password={}", client.token())?;
    Ok(0)
}

/// `berth git connect APP URL --branch B`.
pub async fn connect(g: &Global, app: &str, url: &str, branch: &str) -> Result<i32> {
    let client = crate::client::discover(g)?;
    let done: berth_core::git::GitConnected = client
        .post_json(
            &berth_client::app_path(app, "/git"),
            &serde_json::json!({ "url": url, "branch": branch }),
        )
        .await?;
    if g.json {
        output::json(&done);
        return Ok(0);
    }
    println!(
        "connected {app} to {url} ({branch}); its head is deploying now (`berth git status {app}`)"
    );
    print_webhooks(&webhook_base(&client).await, &done.webhook_secret);
    Ok(0)
}

/// `berth git key APP [--rotate]`.
pub async fn key(g: &Global, app: &str, rotate: bool) -> Result<i32> {
    let client = crate::client::discover(g)?;
    let key: berth_core::git::DeployKeyView = client
        .post_json(
            &berth_client::app_path(app, "/git/key"),
            &serde_json::json!({ "rotate": rotate }),
        )
        .await?;
    if g.json {
        output::json(&key);
        return Ok(0);
    }
    println!("{}", key.public_key);
    eprintln!(
        "{} deploy key of {app} ({})",
        if key.created { "made the" } else { "the" },
        key.fingerprint
    );
    eprintln!("hint: add it to the repository as a read-only deploy key, then: berth git connect {app} git@HOST:OWNER/REPO.git");
    Ok(0)
}

/// Where git hosts send webhooks: the platform's HTTPS address, else the API's.
pub(crate) async fn webhook_base(client: &berth_client::Client) -> String {
    match platform_https(client).await {
        Some((url, _)) => url.trim_end_matches('/').to_string(),
        None => client.base().to_string(),
    }
}

/// The webhook endpoints at `base` and their secret (shown this once).
pub(crate) fn print_webhooks(base: &str, secret: &str) {
    println!("webhooks — a push event, content type application/json, with this secret:");
    println!("  GitHub          {base}/hooks/github");
    println!("  Gitea, Forgejo  {base}/hooks/gitea");
    println!("  GitLab          {base}/hooks/gitlab   (the secret as its token)");
    println!("  secret          {secret}");
    eprintln!("the secret is shown this once; without webhooks berth polls the branch (berth up --git-poll-interval)");
}

/// `COMMIT — OUTCOME (by TRIGGER, WHEN)` of the last commit a connection or a GitOps source
/// acted on.
pub(crate) fn last_acted_on(
    commit: &Option<String>,
    outcome: &Option<String>,
    trigger: &Option<String>,
    at: Option<i64>,
) -> Option<String> {
    let (commit, outcome) = (commit.as_ref()?, outcome.as_ref()?);
    Some(format!(
        "{} — {outcome} (by {}, {})",
        &commit[..commit.len().min(12)],
        trigger.as_deref().unwrap_or("?"),
        at.map(output::ago).unwrap_or_default()
    ))
}

/// `berth git status APP`.
pub async fn status(g: &Global, app: &str) -> Result<i32> {
    let client = crate::client::discover(g)?;
    let c: berth_core::git::GitConnectionView = client
        .get_json(&berth_client::app_path(app, "/git"))
        .await?;
    if g.json {
        output::json(&c);
        return Ok(0);
    }
    println!("{} ← {} ({})", c.app, c.url, c.branch);
    println!(
        "connected by {} {}",
        c.created_by,
        output::ago(c.created_at)
    );
    match last_acted_on(&c.last_commit, &c.last_outcome, &c.last_trigger, c.last_at) {
        Some(line) => println!("last push: {line}"),
        None => println!("no push acted on yet"),
    }
    Ok(i32::from(
        c.last_outcome
            .as_deref()
            .is_some_and(|o| o.starts_with("failed")),
    ))
}

/// `berth git disconnect APP`.
pub async fn disconnect(g: &Global, app: &str) -> Result<i32> {
    let client = crate::client::discover(g)?;
    client.delete(&berth_client::app_path(app, "/git")).await?;
    if g.json {
        output::json(&serde_json::json!({ "disconnected": app }));
    } else {
        println!("{app} no longer deploys on pushes (its releases stay)");
    }
    Ok(0)
}

const ZERO: &str = "0000000000000000000000000000000000000000";

/// The commit's tree, exported into `into`.
fn export(commit: &str, into: &Path) -> Result<()> {
    let src = into.join("src");
    std::fs::create_dir_all(&src)?;
    // The pushed tree is the pusher's: streamed from git straight into the bounded unpacker
    // (never written whole first, so a tree of one blob repeated a million times stops at
    // the bounds), links kept inside it.
    let mut child = Command::new("git")
        .args(["archive", "--format=tar", commit])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running git archive")?;
    let stdout = child
        .stdout
        .take()
        .context("reading git archive's output")?;
    let unpacked = berth_factory::source::unpack_tar(std::io::BufReader::new(stdout), &src);
    if unpacked.is_err() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().context("running git archive")?;
    unpacked.context("unpacking the pushed commit")?;
    if !out.status.success() {
        bail!(
            "git archive {commit}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn commit_time(commit: &str) -> Option<i64> {
    let out = Command::new("git")
        .args(["show", "-s", "--format=%ct", commit])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Whether commit `old` is in the history of `new` (a fast-forward), inside the hook,
/// where the pushed objects are visible.
fn is_ancestor(old: &str, new: &str) -> bool {
    Command::new("git")
        .args(["merge-base", "--is-ancestor", old, new])
        .status()
        .is_ok_and(|s| s.success())
}

/// The first 12 characters of a commit id.
fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// Whether the pusher's token sees app `app` (an unreachable API counts as no).
async fn app_exists(g: &Global, app: &str) -> bool {
    let Ok(client) = crate::client::Client::discover(&crate::client::target(g)) else {
        return false;
    };
    client
        .get_json::<serde_json::Value>(&berth_client::app_path(app, "/releases"))
        .await
        .is_ok()
}

/// The `pre-receive` hook: each pushed ref on stdin (`OLD NEW REF`); a push to `main`
/// deploys NEW; exit 1 rejects the whole push.
pub async fn hook(g: &Global) -> Result<i32> {
    let app = std::env::var("BERTH_GIT_APP").map_err(|_| {
        anyhow!("berth git-hook runs as the pre-receive hook of berth's repositories")
    })?;
    let deploy_ref = format!("refs/heads/{}", berth_factory::git_repos::DEPLOY_BRANCH);
    let mut pushed = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let parts: Vec<&str> = line.split_whitespace().collect();
        if let [old, new, name] = parts.as_slice() {
            pushed.push((old.to_string(), new.to_string(), name.to_string()));
        }
    }
    let mut deploy = None;
    for (_, new, name) in &pushed {
        if *name != deploy_ref {
            eprintln!("berth: {name} is kept, not deployed (pushes to {deploy_ref} deploy)");
        } else if new == ZERO {
            eprintln!("berth: {deploy_ref} cannot be deleted: it is what {app} serves");
            return Ok(1);
        } else {
            deploy = Some(new.clone());
        }
    }
    // The deploy branch is protected: its history is what the releases record, so a push
    // may only build on it, never rewrite it.
    for (old, new, name) in &pushed {
        if *name == deploy_ref && old != ZERO && new != ZERO && !is_ancestor(old, new) {
            eprintln!(
                "berth: {deploy_ref} cannot be rewritten (a non-fast-forward push): {} is not in the history of {}",
                short(old),
                short(new)
            );
            eprintln!("berth: pull and push a commit that builds on it; `berth rollback {app}` serves an earlier release");
            return Ok(1);
        }
    }
    let Some(commit) = deploy else {
        // Other branches are kept only for an app that exists (to the pusher): a repository
        // is never filled before its app is made — by a push to the deploy branch.
        if !app_exists(g, &app).await {
            eprintln!("berth: app {app} does not exist: push {deploy_ref} first, which makes and deploys it");
            return Ok(1);
        }
        return Ok(0);
    };
    let work = tempfile::tempdir().context("a work directory")?;
    export(&commit, work.path())?;
    let limit = std::env::var("BERTH_UPLOAD_LIMIT")
        .ok()
        .and_then(|s| berth_core::limits::parse_memory(&s).ok())
        .unwrap_or(berth_factory::source::DEFAULT_UPLOAD_LIMIT);
    let src = work.path().join("src");
    let upload = {
        let (src, app) = (src.clone(), app.clone());
        tokio::task::spawn_blocking(move || berth_client::upload::prepare(&src, Some(app), limit))
            .await??
    };
    let mut path = berth_client::app_path(&app, &format!("/deploys?commit={commit}"));
    if let Some(t) = commit_time(&commit) {
        path.push_str(&format!("&commit_time={t}"));
    }
    eprintln!(
        "berth: deploying {} as {app} ({} KiB)",
        &commit[..12],
        upload.archive.len().div_ceil(1024)
    );
    // The release says it came by git push.
    let mut target = crate::client::target(g);
    target.client = "git-push".into();
    let client = crate::client::Client::discover(&target)?;
    let outcome = crate::commands::stream_workflow(
        g,
        &client,
        reqwest::Method::POST,
        &path,
        Some((reqwest::Body::from(upload.archive), "application/gzip")),
        None,
    )
    .await;
    match outcome {
        Ok(0) => Ok(0),
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("berth: the deploy failed, so the push is rejected: {e:#}");
            Ok(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_and_quotes() {
        assert_eq!(
            remote_url("http://127.0.0.1:7070/", "shop"),
            "http://127.0.0.1:7070/git/shop.git"
        );
        assert_eq!(quoted("/opt/it's/berth"), "'/opt/it'\\''s/berth'");
    }
}

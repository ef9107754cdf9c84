//! End-to-end: apps deployed from a branch of a remote repository. The repository is a real
//! one served by `git daemon` on loopback and changed by real `git push`es; the push
//! webhooks are the providers' documented payloads (GitHub, Gitea/Forgejo, GitLab), signed
//! the way each provider signs. A forged, replayed or foreign delivery triggers nothing; a
//! commit that fails to deploy is reported and the app keeps serving; polling catches
//! pushes no webhook announced; connecting to what cannot be read changes nothing.

use crate::common;

use common::{copy_dir, eventually, fixture, free_port, git, Platform};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A bare repository served by `git daemon` (git://), with a work tree that pushes to it.
struct Remote {
    _daemon: common::GitDaemon,
    port: u16,
    work: PathBuf,
    _dir: tempfile::TempDir,
}

impl Remote {
    fn start() -> Remote {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("repos/src.git");
        std::fs::create_dir_all(&bare).unwrap();
        git(&bare, &["init", "-q", "--bare", "--initial-branch", "main"]);
        let work = dir.path().join("work");
        copy_dir(&fixture("stateful"), &work);
        git(&work, &["init", "-q", "--initial-branch", "main"]);
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-qm", "first"]);
        git(&work, &["push", "-q", bare.to_str().unwrap(), "main"]);
        let daemon = common::git_daemon(&dir.path().join("repos"));
        let port = daemon.port;
        Remote {
            _daemon: daemon,
            port,
            work,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("git://127.0.0.1:{}/src.git", self.port)
    }

    /// Commits a change (written by `change`) and pushes it; the new commit.
    fn push(&self, message: &str, change: impl FnOnce(&Path)) -> String {
        change(&self.work);
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-qm", message]);
        let bare = self._dir.path().join("repos/src.git");
        git(
            &self.work,
            &["push", "-q", bare.to_str().unwrap(), "HEAD:main"],
        );
        git(&self.work, &["rev-parse", "HEAD"])
    }

    fn head(&self) -> String {
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

/// A provider's documented push payload for `sha` of the repository on `port`, as the host
/// would describe it (its own https, ssh and git URLs).
fn payload(provider: &str, sha: &str, port: u16, git_ref: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/webhooks/{provider}-push.json"));
    std::fs::read_to_string(path)
        .unwrap()
        .replace("{{SHA}}", sha)
        .replace("{{HTTP_URL}}", "https://127.0.0.1/src.git")
        .replace("{{SSH_URL}}", "git@127.0.0.1:src.git")
        .replace("{{GIT_URL}}", &format!("git://127.0.0.1:{port}/src.git"))
        .replace("{{WEB_URL}}", "https://127.0.0.1/src")
        .replace(
            "\"ref\": \"refs/heads/main\"",
            &format!("\"ref\": \"{git_ref}\""),
        )
}

fn hmac_hex(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// POSTs a webhook delivery; (status, body).
fn deliver(p: &Platform, path: &str, headers: &[(&str, String)], body: &str) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"])
        .args(["-H", "content-type: application/json"]);
    for (k, v) in headers {
        cmd.args(["-H", &format!("{k}: {v}")]);
    }
    // A full https:// URL goes through the edge, to the platform's own host name.
    if path.starts_with("https://") {
        let ca = p.data.path().join("webhook-ca.pem");
        p.ok(&["ca", "export", "--out", ca.to_str().unwrap()]);
        cmd.arg("--cacert").arg(&ca).arg(path);
    } else {
        cmd.arg(format!("http://127.0.0.1:{}{path}", p.api_port));
    }
    let out = cmd.args(["--data-binary", body]).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn github_headers(secret: &str, body: &str, delivery: &str) -> Vec<(&'static str, String)> {
    vec![
        ("X-GitHub-Event", "push".into()),
        ("X-GitHub-Delivery", delivery.into()),
        (
            "X-Hub-Signature-256",
            format!("sha256={}", hmac_hex(secret, body)),
        ),
        ("User-Agent", "GitHub-Hookshot/044aadd".into()),
    ]
}

/// Waits until the connection's last push is `commit` with an outcome starting `outcome`.
fn settled(p: &Platform, app: &str, commit: &str, outcome: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let ok = eventually(Duration::from_secs(90), || {
        let out = p.berth(&["--json", "git", "status", app]);
        last = serde_json::from_slice(&out.stdout).unwrap_or_default();
        last["last_commit"] == commit
            && last["last_outcome"]
                .as_str()
                .is_some_and(|o| o.starts_with(outcome))
    });
    assert!(
        ok,
        "{app} never got to {outcome} {commit}: {last}\n{}",
        p.up_log()
    );
    last
}

#[test]
fn verified_webhooks_deploy_pushes_and_forged_or_replayed_ones_change_nothing() {
    let remote = Remote::start();
    let p = Platform::start_with(&["--git-poll-interval", "0"]);
    let connected = p.json(&[
        "git",
        "connect",
        "hooked",
        &remote.url(),
        "--branch",
        "main",
    ]);
    let secret = connected["webhook_secret"]
        .as_str()
        .expect("secret")
        .to_string();
    assert_eq!(connected["connection"]["hooks"]["github"], "/hooks/github");
    let first = remote.head();
    let status = settled(&p, "hooked", &first, "deployed v1");
    assert_eq!(status["last_trigger"], "connect");
    assert_eq!(p.answer("hooked", "/env?name=BERTH_APP"), "hooked");
    assert!(p.releases("hooked")[0].to_string().contains(&first));

    // GitHub: a forged delivery is refused and nothing deploys.
    let second = remote.push("two", |w| {
        std::fs::write(w.join("version.txt"), "2\n").unwrap()
    });
    let body = payload("github", &second, remote.port, "refs/heads/main");
    let (code, answer) = deliver(
        &p,
        "/hooks/github",
        &github_headers("not-the-secret", &body, "d-forged"),
        &body,
    );
    assert_eq!(code, 401, "{answer}");
    assert!(answer.contains("bad_signature"), "{answer}");
    let (code, _) = deliver(
        &p,
        "/hooks/github",
        &[
            ("X-GitHub-Event", "push".into()),
            ("X-GitHub-Delivery", "d-unsigned".into()),
        ],
        &body,
    );
    assert_eq!(code, 401);
    assert!(p.up_log().contains("a webhook delivery was refused"));
    assert_eq!(p.releases("hooked").len(), 1);

    // The real one deploys the pushed commit; it comes as GitHub's would, over HTTPS to
    // the platform's own host name at the edge.
    let (code, answer) = deliver(
        &p,
        &format!("https://berth.localhost:{}/hooks/github", p.tls_port),
        &github_headers(&secret, &body, "d-1"),
        &body,
    );
    assert_eq!(code, 202, "{answer}");
    assert!(answer.contains("\"deploying\":[\"hooked\"]"), "{answer}");
    settled(&p, "hooked", &second, "deployed v2");
    assert_eq!(p.answer("hooked", "/env?name=BERTH_RELEASE"), "2");

    // The same delivery again: refused as a replay.
    let (code, answer) = deliver(
        &p,
        "/hooks/github",
        &github_headers(&secret, &body, "d-1"),
        &body,
    );
    assert_eq!(code, 409, "{answer}");
    assert!(p.up_log().contains("replayed"));
    // The same signed body under a delivery id of the replayer's choosing, or none: the
    // id is not signed, so it makes no replay new.
    for id in [Some("d-1-again"), None] {
        let mut headers = github_headers(&secret, &body, id.unwrap_or(""));
        if id.is_none() {
            headers.retain(|(name, _)| *name != "X-GitHub-Delivery");
        }
        let (code, answer) = deliver(&p, "/hooks/github", &headers, &body);
        assert_eq!(code, 409, "{id:?}: {answer}");
    }
    assert_eq!(p.releases("hooked").len(), 2);
    // A ping (GitHub sends one when the hook is made) verifies and deploys nothing.
    let ping = r#"{"zen":"Design for failure.","hook_id":1}"#;
    let mut headers = github_headers(&secret, ping, "d-ping");
    headers[0].1 = "ping".into();
    let (code, answer) = deliver(&p, "/hooks/github", &headers, ping);
    assert_eq!(code, 202, "{answer}");
    // Another branch: verified, ignored.
    let other = payload("github", &second, remote.port, "refs/heads/dev");
    let (code, answer) = deliver(
        &p,
        "/hooks/github",
        &github_headers(&secret, &other, "d-dev"),
        &other,
    );
    assert_eq!(code, 202, "{answer}");
    assert!(answer.contains("not a connected branch"), "{answer}");
    assert_eq!(p.releases("hooked").len(), 2);

    // Gitea / Forgejo.
    let third = remote.push("three", |w| {
        std::fs::write(w.join("version.txt"), "3\n").unwrap()
    });
    let body = payload("gitea", &third, remote.port, "refs/heads/main");
    let headers = vec![
        ("X-Gitea-Event", "push".to_string()),
        ("X-Gitea-Delivery", "g-1".to_string()),
        ("X-Gitea-Signature", hmac_hex(&secret, &body)),
    ];
    let (code, answer) = deliver(&p, "/hooks/gitea", &headers, &body);
    assert_eq!(code, 202, "{answer}");
    let status = settled(&p, "hooked", &third, "deployed v3");
    assert_eq!(status["last_trigger"], "gitea");

    // The platform's key rotates: the secret is sealed anew and still verifies.
    let rotation = p.json(&["secrets", "rotate-key"]);
    assert_eq!(rotation["webhook_secrets"], 1, "{rotation}");

    // GitLab: a wrong token is refused, the right one deploys.
    let fourth = remote.push("four", |w| {
        std::fs::write(w.join("version.txt"), "4\n").unwrap()
    });
    let body = payload("gitlab", &fourth, remote.port, "refs/heads/main");
    let gitlab = |token: &str, id: &str| {
        vec![
            ("X-Gitlab-Event", "Push Hook".to_string()),
            ("X-Gitlab-Event-UUID", id.to_string()),
            ("X-Gitlab-Token", token.to_string()),
        ]
    };
    let (code, _) = deliver(&p, "/hooks/gitlab", &gitlab("guess", "l-0"), &body);
    assert_eq!(code, 401);
    let (code, answer) = deliver(&p, "/hooks/gitlab", &gitlab(&secret, "l-1"), &body);
    assert_eq!(code, 202, "{answer}");
    settled(&p, "hooked", &fourth, "deployed v4");

    // A commit that cannot deploy: reported with the reason, the app keeps serving v4.
    let bad = remote.push("broken", |w| {
        std::fs::write(w.join("berth.toml"), "isolation = \"nope\"\n").unwrap()
    });
    let body = payload("github", &bad, remote.port, "refs/heads/main");
    let (code, _) = deliver(
        &p,
        "/hooks/github",
        &github_headers(&secret, &body, "d-bad"),
        &body,
    );
    assert_eq!(code, 202);
    let status = settled(&p, "hooked", &bad, "failed");
    assert!(
        status["last_outcome"]
            .as_str()
            .unwrap()
            .contains("isolation"),
        "{status}"
    );
    let out = p.berth(&["git", "status", "hooked"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed last push makes `berth git status` exit 1"
    );
    assert_eq!(p.answer("hooked", "/env?name=BERTH_RELEASE"), "4");

    // Disconnected: deliveries prove nothing any more.
    p.ok(&["git", "disconnect", "hooked"]);
    let (code, _) = deliver(
        &p,
        "/hooks/github",
        &github_headers(&secret, &body, "d-after"),
        &body,
    );
    assert_eq!(code, 401);
    let err = p.fails(&["git", "status", "hooked"]);
    assert!(err.contains("not connected"), "{err}");
}

#[test]
fn the_poll_deploys_pushes_no_webhook_announced() {
    let remote = Remote::start();
    let p = Platform::start_with(&["--git-poll-interval", "1s"]);
    p.ok(&["git", "connect", "polled", &remote.url()]);
    settled(&p, "polled", &remote.head(), "deployed v1");
    let second = remote.push("two", |w| {
        std::fs::write(w.join("version.txt"), "2\n").unwrap()
    });
    let status = settled(&p, "polled", &second, "deployed v2");
    assert_eq!(status["last_trigger"], "poll");
    assert!(p
        .releases("polled")
        .iter()
        .any(|r| r.to_string().contains(&second)));
}

#[test]
fn connecting_to_what_cannot_be_read_changes_nothing() {
    let remote = Remote::start();
    let p = Platform::start_with(&["--git-poll-interval", "0"]);
    for (url, branch, why) in [
        (
            format!("git://127.0.0.1:{}/nope.git", free_port()),
            "main",
            "Connection refused",
        ),
        (remote.url(), "no-such-branch", "has no branch"),
        (
            "file:///etc".to_string(),
            "main",
            "not a repository URL berth fetches",
        ),
        (remote.url(), "--upload-pack=x", "not a branch"),
    ] {
        let branch_arg = format!("--branch={branch}");
        let out = p.berth(&["--json", "git", "connect", "never", &url, &branch_arg]);
        assert!(!out.status.success(), "{url} {branch}");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(said.contains(why), "{url} {branch}: {said}");
    }
    let err = p.fails(&["git", "status", "never"]);
    assert!(err.contains("not connected"), "{err}");
    assert!(p.json(&["apps"]).as_array().unwrap().is_empty());
    // A viewer may not connect.
    let viewer = p.json(&["tokens", "create", "look", "--role", "viewer"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    let out = p.berth_env(
        &["git", "connect", "never", &remote.url()],
        &[("BERTH_TOKEN", &viewer)],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("forbidden")
            || String::from_utf8_lossy(&out.stderr).contains("may not")
    );
}

#[test]
fn a_private_repository_over_ssh_is_read_with_the_apps_deploy_key() {
    let remote = Remote::start();
    let sshd = common::Sshd::start();
    let p = Platform::start_with(&["--git-poll-interval", "1s"]);
    let bare = remote._dir.path().join("repos/src.git");
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        sshd.user,
        sshd.port,
        bare.display()
    );

    // No key yet: refused, with the way to make one; nothing stored.
    let err = p.fails(&["git", "connect", "private", &url]);
    assert!(err.contains("berth git key private"), "{err}");
    assert!(p
        .fails(&["git", "status", "private"])
        .contains("not connected"));

    // The key is made once, then shown as it is.
    let key = p.json(&["git", "key", "private"]);
    assert_eq!(key["created"], true);
    let public = key["public_key"].as_str().unwrap().to_string();
    assert!(public.starts_with("ssh-ed25519 "), "{public}");
    assert!(public.ends_with("berth deploy key for private"), "{public}");
    assert!(key["fingerprint"].as_str().unwrap().starts_with("SHA256:"));
    let again = p.json(&["git", "key", "private"]);
    assert_eq!(again["created"], false);
    assert_eq!(again["public_key"], public.as_str());

    // Not yet added to the repository: refused, naming the key.
    let err = p.fails(&["git", "connect", "private", &url]);
    assert!(err.contains("deploy key"), "{err}");

    // Added: connect reads the branch and deploys it; the poll finds the next push.
    sshd.authorize(&public);
    p.ok(&["git", "connect", "private", &url]);
    settled(&p, "private", &remote.head(), "deployed v1");
    assert_eq!(p.answer("private", "/env?name=BERTH_APP"), "private");
    let second = remote.push("two", |w| {
        std::fs::write(w.join("version.txt"), "2\n").unwrap()
    });
    settled(&p, "private", &second, "deployed v2");

    // The private half is nowhere in plaintext: sealed in the store, written only while
    // git runs.
    let found = Command::new("grep")
        .args(["-r", "-a", "-l", "-F", "OPENSSH PRIVATE KEY"])
        .arg(p.data.path())
        .output()
        .unwrap();
    assert!(
        found.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&found.stdout)
    );

    // A new key replaces it: the server does not know it, so the next poll fails (and is
    // logged), and the app keeps serving.
    let rotated = p.json(&["git", "key", "private", "--rotate"]);
    assert_eq!(rotated["created"], true);
    assert_ne!(rotated["public_key"], public.as_str());
    let third = remote.push("three", |w| {
        std::fs::write(w.join("version.txt"), "3\n").unwrap()
    });
    assert!(eventually(Duration::from_secs(30), || p
        .up_log()
        .contains("polling the repository failed")));
    assert_eq!(p.answer("private", "/env?name=BERTH_RELEASE"), "2");
    sshd.authorize(rotated["public_key"].as_str().unwrap());
    settled(&p, "private", &third, "deployed v3");
}

//! End-to-end: GitOps. A platform definition lives in a directory of a real repository
//! (served by `git daemon` on loopback, changed by real pushes); each commit announced by a
//! signed push webhook — or found by the poll — is applied; a commit with an invalid
//! definition is refused whole and changes nothing; releases record the commit; a change
//! made by hand shows as drift.

use crate::common;

use common::{copy_dir, eventually, fixture, git, Platform};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The infrastructure repository: `platform/shop` and `platform/blog`.
struct Infra {
    daemon: common::GitDaemon,
    work: PathBuf,
    bare: PathBuf,
    _dir: tempfile::TempDir,
}

fn app(root: &Path, dir: &str, toml: &str) {
    let d = root.join("platform").join(dir);
    copy_dir(&fixture("stateful"), &d);
    std::fs::write(d.join("berth.toml"), toml).unwrap();
}

impl Infra {
    fn start() -> Infra {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("repos/infra.git");
        std::fs::create_dir_all(&bare).unwrap();
        git(&bare, &["init", "-q", "--bare", "--initial-branch", "main"]);
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q", "--initial-branch", "main"]);
        std::fs::write(work.join("README.md"), "# our platform\n").unwrap();
        app(
            &work,
            "shop",
            "name = \"shop\"\n[env]\nGREETING = \"hello\"\n",
        );
        app(&work, "blog", "[env]\nGREETING = \"hi\"\n");
        let infra = Infra {
            daemon: common::git_daemon(&dir.path().join("repos")),
            work,
            bare,
            _dir: dir,
        };
        infra.commit("the platform");
        infra
    }

    fn url(&self) -> String {
        format!("git://127.0.0.1:{}/infra.git", self.daemon.port)
    }

    fn commit(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-qm", message]);
        git(
            &self.work,
            &["push", "-q", self.bare.to_str().unwrap(), "HEAD:main"],
        );
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

fn status(p: &Platform) -> serde_json::Value {
    let out = p.berth(&["--json", "gitops", "status"]);
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()[0].clone()
}

fn settled(p: &Platform, commit: &str, outcome: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let ok = eventually(Duration::from_secs(120), || {
        last = status(p);
        last["last_commit"] == commit
            && last["last_outcome"]
                .as_str()
                .is_some_and(|o| o.starts_with(outcome))
    });
    assert!(ok, "never {outcome} {commit}: {last}\n{}", p.up_log());
    last
}

fn push_webhook(p: &Platform, secret: &str, sha: &str, delivery: &str) -> (u16, String) {
    let body = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhooks/github-push.json"),
    )
    .unwrap()
    .replace("{{SHA}}", sha)
    .replace("{{HTTP_URL}}", "https://127.0.0.1/infra.git")
    .replace("{{SSH_URL}}", "git@127.0.0.1:infra.git")
    .replace("{{GIT_URL}}", "git://127.0.0.1/infra.git")
    .replace("{{WEB_URL}}", "https://127.0.0.1/infra");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let sig = hex::encode(mac.finalize().into_bytes());
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"])
        .args([
            "-H",
            "content-type: application/json",
            "-H",
            "X-GitHub-Event: push",
        ])
        .args(["-H", &format!("X-GitHub-Delivery: {delivery}")])
        .args(["-H", &format!("X-Hub-Signature-256: sha256={sig}")])
        .args(["--data-binary", &body])
        .arg(format!("http://127.0.0.1:{}/hooks/github", p.api_port))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn commits_are_applied_whole_or_refused_whole_and_drift_shows() {
    let infra = Infra::start();
    let p = Platform::start_with(&["--git-poll-interval", "0"]);
    let added = p.json(&["gitops", "add", &infra.url(), "--path", "platform/"]);
    let secret = added["webhook_secret"].as_str().unwrap().to_string();
    assert_eq!(added["source"]["name"], "infra");
    let first = git(&infra.work, &["rev-parse", "HEAD"]);
    let s = settled(&p, &first, "applied");
    assert_eq!(s["last_trigger"], "add");
    assert_eq!(p.answer("shop", "/env?name=GREETING"), "hello");
    assert_eq!(p.answer("blog", "/env?name=GREETING"), "hi");
    assert!(
        p.releases("shop")[0].to_string().contains(&first),
        "the release records the commit"
    );
    assert_eq!(s["drift"], serde_json::json!([]));

    // One line changes in a commit; its webhook applies exactly that.
    app(
        &infra.work,
        "shop",
        "name = \"shop\"\n[env]\nGREETING = \"good day\"\n",
    );
    let second = infra.commit("greet better");
    let (code, answer) = push_webhook(&p, &secret, &second, "infra-2");
    assert_eq!(code, 202, "{answer}");
    assert!(answer.contains("\"applying\":[\"infra\"]"), "{answer}");
    let s = settled(&p, &second, "applied");
    assert_eq!(s["last_trigger"], "github");
    assert_eq!(p.answer("shop", "/env?name=GREETING"), "good day");
    assert_eq!(p.releases("blog").len(), 1, "blog did not change");
    assert_eq!(p.releases("shop").len(), 2);

    // A forged delivery: refused.
    let (code, _) = push_webhook(&p, "guess", &second, "infra-forged");
    assert_eq!(code, 401);

    // A commit whose definition is invalid: refused whole, nothing changes.
    app(&infra.work, "shop-copy", "name = \"shop\"\n");
    app(&infra.work, "blog", "[env]\nGREETING = \"changed too\"\n");
    let bad = infra.commit("two shops");
    push_webhook(&p, &secret, &bad, "infra-3");
    let s = settled(&p, &bad, "refused");
    assert!(
        s["last_outcome"]
            .as_str()
            .unwrap()
            .contains("shop/ and shop-copy/ are both app shop"),
        "{s}"
    );
    let out = p.berth(&["gitops", "status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("refused"));
    assert_eq!(
        p.answer("blog", "/env?name=GREETING"),
        "hi",
        "nothing of a refused commit is applied"
    );
    assert_eq!((p.releases("shop").len(), p.releases("blog").len()), (2, 1));

    // Mended: applied.
    std::fs::remove_dir_all(infra.work.join("platform/shop-copy")).unwrap();
    let fixed = infra.commit("one shop");
    push_webhook(&p, &secret, &fixed, "infra-4");
    settled(&p, &fixed, "applied");
    assert_eq!(p.answer("blog", "/env?name=GREETING"), "changed too");

    // A change by hand: drift, named.
    p.ok(&["scale", "shop", "web=2"]);
    let s = status(&p);
    let drift = s["drift"].as_array().cloned().unwrap_or_default();
    assert_eq!(drift.len(), 1, "{s}");
    assert_eq!(drift[0]["app"], "shop");
    assert!(
        drift[0].to_string().contains("made outside the definition"),
        "{s}"
    );
    let out = p.berth(&["gitops", "status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("drift"));

    // Bad input at add: changes nothing.
    let err = p.fails(&["gitops", "add", &infra.url(), "--path", "../etc"]);
    assert!(
        err.contains("not a directory inside the repository"),
        "{err}"
    );
    let err = p.fails(&["gitops", "add", &infra.url()]);
    assert!(err.contains("exists"), "{err}");
    p.ok(&["gitops", "remove", "infra"]);
    let (code, _) = push_webhook(&p, &secret, &fixed, "infra-5");
    assert_eq!(code, 401, "a removed source's secret proves nothing");
}

#[test]
fn the_poll_applies_commits_no_webhook_announced() {
    let infra = Infra::start();
    let p = Platform::start_with(&["--git-poll-interval", "1s"]);
    p.ok(&[
        "gitops",
        "add",
        &infra.url(),
        "--path",
        "platform",
        "--name",
        "polled",
    ]);
    let first = git(&infra.work, &["rev-parse", "HEAD"]);
    settled(&p, &first, "applied");
    app(&infra.work, "blog", "[env]\nGREETING = \"polled\"\n");
    let second = infra.commit("poll me");
    let s = settled(&p, &second, "applied");
    assert_eq!(s["last_trigger"], "poll");
    assert_eq!(p.answer("blog", "/env?name=GREETING"), "polled");
}

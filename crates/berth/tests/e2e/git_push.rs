//! End-to-end: `git push` deploys. A real git client pushes to the repository berth serves
//! (smart HTTP, the token handed over by `berth git credential`); the push streams the build
//! and the release records the commit; a commit whose deploy fails is rejected and the branch
//! stays where it was; fetching needs a viewer, pushing a deployer, and nothing at all gets
//! nothing.

use crate::common;

use common::{copy_dir, fixture, git_client as git, git_client_ok as git_ok, Platform};
use std::process::Command;

#[test]
fn a_push_to_main_deploys_and_a_failing_commit_is_rejected() {
    let p = Platform::start();
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("shop");
    copy_dir(&fixture("stateful"), &repo);
    let first = common::git_commit_all(&repo);
    git_ok(&repo, &["branch", "-M", "main"]);

    // The remote, with berth's credential helper, set up by berth.
    let out = p
        .berth_command(&["git", "remote", "pushed", "--add"])
        .current_dir(&repo)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // It is the platform's own HTTPS address at the edge, certified by berth's local CA,
    // which git trusts for this remote only.
    let url = git_ok(&repo, &["remote", "get-url", "berth"]);
    assert_eq!(
        url,
        format!("https://berth.localhost:{}/git/pushed.git", p.tls_port)
    );
    let ca = git_ok(&repo, &["config", &format!("http.{url}.sslCAInfo")]);
    assert!(
        std::fs::read_to_string(&ca)
            .unwrap()
            .contains("BEGIN CERTIFICATE"),
        "{ca}"
    );
    // Plain HTTP to the platform's host name is sent on to HTTPS: a token never crosses
    // the network in the clear.
    let (status, _) =
        common::http_get(p.edge_port, "berth.localhost", "/git/pushed.git/info/refs").unwrap();
    assert_eq!(status, 308);

    // The push builds and deploys, and the pusher sees it happen.
    let out = git(&repo, &["push", "berth", "main"]);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{said}\n{}", p.up_log());
    eprintln!("{said}");
    assert!(said.contains("remote: berth: deploying"), "{said}");
    assert!(
        said.contains("remote: Release v1 is serving at http://pushed.localhost"),
        "{said}"
    );
    assert_eq!(p.answer("pushed", "/env?name=BERTH_APP"), "pushed");
    let rel = p.releases("pushed");
    assert_eq!(rel.len(), 1);
    assert!(
        rel[0].to_string().contains(&first),
        "the release records the commit: {}",
        rel[0]
    );

    // A commit whose deploy fails: the push is rejected with the reason, main stays.
    std::fs::write(repo.join("berth.toml"), "isolation = \"nope\"\n").unwrap();
    git_ok(&repo, &["add", "-A"]);
    git_ok(&repo, &["commit", "-qm", "break it"]);
    let out = git(&repo, &["push", "berth", "main"]);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("pre-receive hook declined"), "{said}");
    assert!(
        said.contains("isolation"),
        "the reason reaches the pusher: {said}"
    );
    let remote_main = git_ok(&repo, &["ls-remote", "berth", "refs/heads/main"]);
    assert!(remote_main.starts_with(&first), "{remote_main}");
    assert_eq!(p.releases("pushed").len(), 1);
    assert_eq!(p.answer("pushed", "/env?name=BERTH_RELEASE"), "1");

    // A fix: deploys as v2.
    std::fs::remove_file(repo.join("berth.toml")).unwrap();
    std::fs::write(repo.join("version.txt"), "2\n").unwrap();
    git_ok(&repo, &["add", "-A"]);
    git_ok(&repo, &["commit", "-qm", "fix it"]);
    let second = git_ok(&repo, &["rev-parse", "HEAD"]);
    let out = git(&repo, &["push", "berth", "main"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(p.answer("pushed", "/env?name=BERTH_RELEASE"), "2");
    assert!(p
        .releases("pushed")
        .iter()
        .any(|r| r.to_string().contains(&second)));

    // Another branch is kept, not deployed.
    git_ok(&repo, &["checkout", "-qb", "feature"]);
    std::fs::write(repo.join("version.txt"), "3\n").unwrap();
    git_ok(&repo, &["commit", "-qam", "wip"]);
    let out = git(&repo, &["push", "berth", "feature"]);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{said}");
    assert!(said.contains("kept, not deployed"), "{said}");
    assert_eq!(p.releases("pushed").len(), 2);

    // main cannot be deleted, nor rewritten (a force-push of another history).
    let out = git(&repo, &["push", "berth", ":main"]);
    assert!(!out.status.success());
    git_ok(&repo, &["checkout", "-q", "main"]);
    git_ok(
        &repo,
        &["commit", "-q", "--amend", "-m", "history rewritten"],
    );
    let out = git(&repo, &["push", "--force", "berth", "main"]);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("cannot be rewritten"), "{said}");
    let remote_main = git_ok(&repo, &["ls-remote", "berth", "refs/heads/main"]);
    assert!(remote_main.starts_with(&second), "{remote_main}");
    assert_eq!(p.answer("pushed", "/env?name=BERTH_RELEASE"), "2");
    // The feature branch, force-pushed: any branch but main may be.
    git_ok(&repo, &["checkout", "-q", "feature"]);
    git_ok(&repo, &["commit", "-q", "--amend", "-m", "wip, rewritten"]);
    let out = git(&repo, &["push", "--force", "berth", "feature"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The pushes are in the audit log as the token that made them.
    let audit = p.ok(&["audit"]);
    assert!(audit.contains("git-receive-pack"), "{audit}");
}

#[test]
fn no_app_takes_the_platforms_own_host_name() {
    let p = Platform::start();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("src");
    copy_dir(&fixture("stateful"), &dir);
    let err = p.fails(&["deploy", dir.to_str().unwrap(), "--app", "berth"]);
    assert!(err.contains("the platform's own host name"), "{err}");
    let (status, body) = common::curl(
        &p,
        &common::admin_token(&p),
        "POST",
        "/v1/apps",
        &[
            "-H",
            "content-type: application/json",
            "--data",
            r#"{"name":"berth"}"#,
        ],
    );
    assert_eq!(status, 400, "{body}");
    assert!(p.json(&["apps"]).as_array().unwrap().is_empty());
    // The name answers with the platform: its health, over HTTPS at the edge.
    let ca = p.data.path().join("ca.pem");
    p.ok(&["ca", "export", "--out", ca.to_str().unwrap()]);
    let out = Command::new("curl")
        .args(["-s", "--cacert", ca.to_str().unwrap()])
        .arg(format!("https://berth.localhost:{}/v1/health", p.tls_port))
        .output()
        .unwrap();
    let health: serde_json::Value = serde_json::from_slice(&out.stdout).expect("health");
    assert_eq!(health["status"], "ok");
    assert_eq!(
        health["platform_url"],
        format!("https://berth.localhost:{}/", p.tls_port)
    );
    assert_eq!(health["local_ca"], true);
}

#[test]
fn fetching_needs_a_viewer_and_pushing_a_deployer() {
    let p = Platform::start();
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("src");
    copy_dir(&fixture("stateful"), &repo);
    common::git_commit_all(&repo);
    git_ok(&repo, &["branch", "-M", "main"]);
    let base = format!("127.0.0.1:{}/git/guarded.git", p.api_port);
    let admin = common::admin_token(&p);
    git_ok(
        &repo,
        &["push", &format!("http://berth:{admin}@{base}"), "main"],
    );
    let token = |name: &str, role: &str| -> String {
        p.json(&["tokens", "create", name, "--role", role])["token"]
            .as_str()
            .expect("token")
            .to_string()
    };
    let viewer = token("reader", "viewer");

    // No token: refused, and git is asked for credentials (it has none to give here).
    let out = git(work.path(), &["ls-remote", &format!("http://{base}")]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("Authentication failed") || said.contains("could not read Username"),
        "{said}"
    );
    // A wrong token: the same.
    let out = git(
        work.path(),
        &["ls-remote", &format!("http://berth:berth_wrong@{base}")],
    );
    assert!(!out.status.success());

    // A viewer clones; its push is refused and changes nothing.
    let clone = work.path().join("clone");
    git_ok(
        work.path(),
        &[
            "clone",
            "-q",
            &format!("http://berth:{viewer}@{base}"),
            clone.to_str().unwrap(),
        ],
    );
    assert!(clone.join("app.py").exists());
    std::fs::write(clone.join("version.txt"), "9\n").unwrap();
    git_ok(&clone, &["add", "-A"]);
    git_ok(&clone, &["commit", "-qm", "sneaky"]);
    let out = git(&clone, &["push", "origin", "main"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("403"), "{said}");
    assert_eq!(p.releases("guarded").len(), 1);

    // Names that are no app repositories are refused.
    for bad in ["..%2F..%2Fetc.git", "UPPER.git", "a_b.git"] {
        let (code, _) = common::curl(
            &p,
            &admin,
            "GET",
            &format!("/git/{bad}/info/refs?service=git-upload-pack"),
            &[],
        );
        assert!(code == 404 || code == 400, "{bad}: {code}");
    }
    // An app that was never pushed has nothing to fetch.
    let (code, body) = common::curl(
        &p,
        &admin,
        "GET",
        "/git/never.git/info/refs?service=git-upload-pack",
        &[],
    );
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("no repository yet"), "{body}");
    assert!(!p.data.path().join("git/never.git").exists());
}

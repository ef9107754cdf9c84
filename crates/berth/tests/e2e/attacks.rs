//! The attack suite: what a tenant's tokens try against the tenant boundary. Mallory holds a
//! deployer token limited to project `alpha` and a viewer token of project `beta`, where the
//! victim app `vault` runs with a secret and a git repository. Every attempt below — paths
//! encoded to slip past the guard, other projects' apps and repositories, the network, a
//! tenant's isolation floor, git URLs, the dashboard's sign-in, the edge's Host handling —
//! is refused, and at the end nothing of the victim's changed: the same release serves, its
//! repository holds the same refs, its secret never appeared. The README's Security section
//! lists each attempt and its outcome.

use crate::common;

use common::{
    admin_token, copy_dir, curl, fixture, git_client as git, git_client_ok as git_ok, Platform,
};
use std::io::{Read, Write};
use std::path::Path;

const SECRET: &str = "victim-secret-4242";

/// The outcome of each attempt, for the log of the run.
struct Ledger<'a>(&'a Platform, Vec<String>);

impl Ledger<'_> {
    /// An API call as `token` answered with `want` (and nothing of the victim's secret).
    fn api(
        &mut self,
        what: &str,
        token: &str,
        method: &str,
        path: &str,
        extra: &[&str],
        want: u16,
    ) -> String {
        let (code, text) = curl(self.0, token, method, path, extra);
        assert_eq!(code, want, "{what}: {method} {path}: {text}");
        assert!(!text.contains(SECRET), "{what}: the secret leaked: {text}");
        self.1.push(format!("{what}: {method} {path} → {code}"));
        text
    }

    fn note(&mut self, what: &str, outcome: &str) {
        self.1.push(format!("{what}: {outcome}"));
    }
}

/// A token made by the admin.
fn token(p: &Platform, name: &str, role: &str, project: &str) -> String {
    p.json(&[
        "tokens",
        "create",
        name,
        "--role",
        role,
        "--project",
        project,
    ])["token"]
        .as_str()
        .expect("token")
        .to_string()
}

/// An app directory from the `stateful` fixture with `toml` as its berth.toml.
fn app_dir(root: &Path, name: &str, toml: &str) -> String {
    let dir = root.join(name);
    copy_dir(&fixture("stateful"), &dir);
    std::fs::write(dir.join("berth.toml"), toml).expect("berth.toml");
    dir.display().to_string()
}

/// One raw HTTP/1.1 request to the edge; the status.
fn raw_status(port: u16, head: &str) -> u16 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("edge");
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(head.as_bytes()).expect("send");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[test]
fn a_project_limited_deployer_reaches_nothing_outside_its_project() {
    let p = Platform::start();
    let admin = admin_token(&p);
    let work = tempfile::tempdir().expect("tempdir");
    let mut ledger = Ledger(&p, Vec::new());
    p.ok(&["projects", "create", "alpha"]);
    p.ok(&["projects", "create", "beta"]);
    let mallory = token(&p, "mallory", "deployer", "alpha");
    let peek = token(&p, "peek", "viewer", "beta");

    // The victim: an app of beta with a secret, deployed by a push to its repository, and a
    // branch of notes beside main.
    p.ok(&[
        "create",
        "vault",
        "--project",
        "beta",
        "--secret",
        &format!("TOKEN={SECRET}"),
    ]);
    let repo = work.path().join("vault-src");
    copy_dir(&fixture("stateful"), &repo);
    common::git_commit_all(&repo);
    git_ok(&repo, &["branch", "-M", "main"]);
    let api = format!("127.0.0.1:{}", p.api_port);
    let as_admin_url = format!("http://berth:{admin}@{api}/git/vault.git");
    git_ok(&repo, &["push", "-q", &as_admin_url, "main"]);
    git_ok(&repo, &["push", "-q", &as_admin_url, "main:notes"]);
    let refs_before = git_ok(&repo, &["ls-remote", &as_admin_url]);
    assert_eq!(p.answer("vault", "/env?name=TOKEN"), SECRET);
    let releases_before = p.json(&["releases", "vault"]).to_string();
    // Mallory's own app in alpha.
    let (ok, said) = p.try_as(
        &mallory,
        &[
            "deploy",
            &app_dir(work.path(), "probe", ""),
            "--app",
            "probe",
        ],
    );
    assert!(ok, "{said}");

    // -- Git paths: the victim's repository by any spelling is unknown to alpha's token.
    for path in [
        "/git/vault.git/info/refs?service=git-upload-pack",
        "/git/vault%2egit/info/refs?service=git-upload-pack",
        "/git/vault%2Egit/info/refs?service=git-upload-pack",
        "/git/vault.gi%74/info/refs?service=git-upload-pack",
        "/git/%76ault.git/info/refs?service=git-upload-pack",
        "/git/vault%2egit/info/refs?service=git-receive-pack",
    ] {
        let text = ledger.api(
            "fetch another project's repository",
            &mallory,
            "GET",
            path,
            &[],
            404,
        );
        assert!(!text.contains("refs/heads/main"), "{path}: {text}");
    }
    for path in [
        "/git/vault%2egit/git-upload-pack",
        "/git/vault%2egit/git-receive-pack",
    ] {
        ledger.api(
            "exchange packs with another project's repository",
            &mallory,
            "POST",
            path,
            &[
                "-H",
                "content-type: application/x-git-upload-pack-request",
                "--data",
                "0000",
            ],
            404,
        );
    }
    // A real git client, by the plain name and the encoded one.
    for name in ["vault.git", "vault%2egit"] {
        let url = format!("http://berth:{mallory}@{api}/git/{name}");
        let out = git(work.path(), &["ls-remote", &url]);
        assert!(!out.status.success(), "ls-remote {name}: {out:?}");
        let dest = work.path().join("stolen");
        let out = git(
            work.path(),
            &["clone", "-q", &url, dest.to_str().expect("path")],
        );
        assert!(
            !out.status.success() && !dest.join("app.py").exists(),
            "clone {name}"
        );
        let out = git(&repo, &["push", &url, "main:refs/heads/evil"]);
        assert!(!out.status.success(), "push {name}");
    }
    ledger.note(
        "git clone, ls-remote and push to another project's repository (plain and encoded names)",
        "refused",
    );
    // A branch pushed into the repository of an app that does not exist (yet): refused, so
    // no repository is ever filled before its app is made.
    let out = git(
        &repo,
        &[
            "push",
            &format!("http://berth:{mallory}@{api}/git/ghost.git"),
            "main:refs/heads/plant",
        ],
    );
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && said.contains("does not exist"),
        "{said}"
    );
    assert!(p.json(&["apps"]).to_string().find("\"ghost\"").is_none());
    let planted = git(
        work.path(),
        &[
            "ls-remote",
            &format!("http://berth:{admin}@{api}/git/ghost.git"),
        ],
    );
    assert!(
        !String::from_utf8_lossy(&planted.stdout).contains("plant"),
        "{planted:?}"
    );
    ledger.note(
        "push a branch into the repository of an app not made yet",
        "refused by the hook, nothing kept",
    );

    // A pushed tree dressed as a git repository (HEAD, refs, an index, a config whose
    // fsmonitor is a command) never has the platform run that command.
    let marker = work.path().join("pwned-by-push");
    let dressed = work.path().join("dressed");
    copy_dir(&fixture("stateful"), &dressed);
    std::fs::create_dir_all(dressed.join("refs")).expect("refs");
    std::fs::write(dressed.join("refs/x"), "x\n").expect("refs/x");
    std::fs::write(dressed.join("HEAD"), "ref: refs/heads/main\n").expect("HEAD");
    std::fs::write(
        dressed.join("config"),
        format!(
            "[core]\n\tbare = false\n\tworktree = .\n\tfsmonitor = \"touch {}; false\"\n",
            marker.display()
        ),
    )
    .expect("config");
    common::git_commit_all(&dressed);
    std::fs::copy(dressed.join(".git/index"), dressed.join("index")).expect("index");
    common::git_commit_all(&dressed);
    git_ok(&dressed, &["branch", "-M", "main"]);
    let _ = git(
        &dressed,
        &[
            "push",
            &format!("http://berth:{mallory}@{api}/git/dressed.git"),
            "main",
        ],
    );
    assert!(
        !marker.exists(),
        "a pushed tree's git config ran on the platform"
    );
    ledger.note(
        "push a tree dressed as a git repository whose config runs a command",
        "never run",
    );

    // -- API paths: encoded and qualified names of the victim are the victim, out of reach.
    for (method, path) in [
        ("GET", "/v1/apps/%76ault/env"),
        ("GET", "/v1/apps/vault/secrets"),
        ("GET", "/v1/apps/beta%2Fvault/env"),
        ("GET", "/v1/apps/vault/logs?lines=5"),
        ("GET", "/v1/apps/vault/releases"),
        ("GET", "/v1/apps/vault/git"),
        ("GET", "/v1/apps/vault/git/key"),
        ("POST", "/v1/apps/vault/rollback"),
        ("POST", "/v1/apps/vault/redeploy"),
        ("DELETE", "/v1/apps/vault"),
        ("DELETE", "/v1/apps/%76ault"),
        ("POST", "/v1/apps/vault/git/key"),
        ("GET", "/v1/apps/ghost-of-vault/env"),
    ] {
        ledger.api(
            "act on another project's app",
            &mallory,
            method,
            path,
            &[],
            404,
        );
    }
    for body in [
        r#"{"set":{"X":"1"}}"#,
        r#"{"set":{"TOKEN":"mine"}}"#,
        r#"{"set":{"NPM_TOKEN":"mine"},"build":true}"#,
    ] {
        for path in ["/v1/apps/vault/env", "/v1/apps/%76ault/secrets"] {
            ledger.api(
                "change another project's env or secrets",
                &mallory,
                "POST",
                path,
                &["-H", "content-type: application/json", "--data", body],
                404,
            );
        }
    }
    ledger.api(
        "a name no app can have",
        &mallory,
        "GET",
        "/v1/apps/a%2f..%2fb/env",
        &[],
        400,
    );
    ledger.api(
        "a name no app can have",
        &mallory,
        "GET",
        "/v1/apps/..%00/env",
        &[],
        400,
    );
    for path in [
        "/git/..%2fvault.git/info/refs?service=git-upload-pack",
        "/git/%2e%2e.git/info/refs?service=git-upload-pack",
    ] {
        let text = ledger.api("a name no app can have", &mallory, "GET", path, &[], 400);
        assert!(!text.contains("refs/heads/main"), "{path}: {text}");
    }
    ledger.api(
        "another project's DORA",
        &mallory,
        "GET",
        "/v1/dora?project=beta",
        &[],
        404,
    );
    ledger.api("the audit log", &mallory, "GET", "/v1/audit", &[], 403);
    ledger.api(
        "make a platform token",
        &mallory,
        "POST",
        "/v1/tokens",
        &[
            "-H",
            "content-type: application/json",
            "--data",
            r#"{"name":"root","role":"admin"}"#,
        ],
        403,
    );
    ledger.api(
        "registry credentials",
        &mallory,
        "GET",
        "/v1/registries",
        &[],
        403,
    );
    let listed = ledger.api("list apps", &mallory, "GET", "/v1/apps", &[], 200);
    assert!(!listed.contains("vault"), "{listed}");
    // The dashboard, by an encoded name.
    let (code, text) = curl(
        &p,
        "",
        "GET",
        "/ui/apps/%76ault",
        &["-H", &format!("Cookie: berth_session={mallory}")],
    );
    assert!(code == 404 && !text.contains(SECRET), "{code}: {text}");
    ledger.note(
        "the dashboard's page of another project's app, by an encoded name",
        "404",
    );
    // A deploy over the victim, by the CLI.
    let (ok, said) = p.try_as(
        &mallory,
        &[
            "deploy",
            &app_dir(work.path(), "over", ""),
            "--app",
            "vault",
        ],
    );
    assert!(!ok && said.contains("does not exist"), "{said}");
    ledger.note("deploy over another project's app", "refused as unknown");

    // A deploy key made by beta for an app it has not deployed yet makes that app beta's:
    // alpha can neither connect a repository with it nor rotate it.
    let bob = token(&p, "bob", "deployer", "beta");
    let made = ledger.api(
        "a deploy key for an app not deployed yet (its own project)",
        &bob,
        "POST",
        "/v1/apps/pending/git/key",
        &["-H", "content-type: application/json", "--data", "{}"],
        200,
    );
    assert!(made.contains("ssh-ed25519"), "{made}");
    for (path, body) in [
        ("/v1/apps/pending/git/key", r#"{"rotate":true}"#),
        (
            "/v1/apps/pending/git",
            r#"{"url":"ssh://git@127.0.0.1:1/b/private.git","branch":"main"}"#,
        ),
    ] {
        ledger.api(
            "take another project's pending deploy key",
            &mallory,
            "POST",
            path,
            &["-H", "content-type: application/json", "--data", body],
            404,
        );
    }

    // -- The viewer of beta reads, and changes nothing.
    ledger.api(
        "read as a viewer of the project",
        &peek,
        "GET",
        "/v1/apps/vault/releases",
        &[],
        200,
    );
    ledger.api(
        "change env as a viewer",
        &peek,
        "POST",
        "/v1/apps/vault/env",
        &[
            "-H",
            "content-type: application/json",
            "--data",
            r#"{"set":{"X":"1"}}"#,
        ],
        403,
    );
    ledger.api(
        "set a build secret as a viewer (a build step would run with it)",
        &peek,
        "POST",
        "/v1/apps/vault/secrets",
        &[
            "-H",
            "content-type: application/json",
            "--data",
            r#"{"set":{"NPM_TOKEN":"mine"},"build":true}"#,
        ],
        403,
    );
    ledger.api(
        "roll back as a viewer",
        &peek,
        "POST",
        "/v1/apps/vault/rollback",
        &[],
        403,
    );
    // Nor makes the platform fetch a URL (over MCP): a listener of the test's own stands for
    // the address, and no connection ever reaches it.
    let bait = std::net::TcpListener::bind("127.0.0.1:0").expect("bait");
    bait.set_nonblocking(true).expect("nonblocking");
    let bait_url = format!(
        "http://127.0.0.1:{}/repo.git",
        bait.local_addr().expect("addr").port()
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let refused = rt.block_on(async {
        use rmcp::model::CallToolRequestParams;
        use rmcp::ServiceExt;
        let mut cmd = tokio::process::Command::new(common::berth_bin());
        cmd.arg("--data-dir")
            .arg(p.data.path())
            .arg("mcp")
            .env_remove("BERTH_API_URL")
            .env("BERTH_TOKEN", &peek);
        let client =
            ().serve(rmcp::transport::TokioChildProcess::new(cmd).expect("berth mcp"))
                .await
                .expect("MCP handshake");
        let serde_json::Value::Object(args) =
            serde_json::json!({ "git_url": bait_url, "app": "fetched" })
        else {
            unreachable!()
        };
        let r = client
            .call_tool(CallToolRequestParams::new("deploy".to_string()).with_arguments(args))
            .await
            .expect("deploy tool");
        client.cancel().await.expect("close");
        r
    });
    assert_eq!(refused.is_error, Some(true), "{refused:?}");
    let answer = refused.structured_content.clone().unwrap_or_default();
    assert_eq!(answer["code"], "forbidden", "{answer}");
    assert!(
        bait.accept().is_err(),
        "the platform connected to the URL a viewer gave"
    );
    ledger.note(
        "make the platform fetch a git URL as a viewer (MCP deploy)",
        "forbidden, no connection made",
    );

    // -- The network: an app of alpha may not reach an app of beta that does not accept it.
    let spy = app_dir(work.path(), "spy", "[network]\nallow = [\"vault\"]\n");
    let (ok, said) = p.try_as(&mallory, &["deploy", &spy, "--app", "spy"]);
    assert!(
        !ok && said.contains("there is no app named \"vault\""),
        "{said}"
    );
    ledger.note(
        "[network] allow an app of another project (alpha's token)",
        "refused as unknown",
    );
    let err = p.fails(&["deploy", &spy, "--app", "spy", "--project", "alpha"]);
    assert!(
        err.contains("does not accept connections from spy") && err.contains("accept_from"),
        "{err}"
    );
    ledger.note(
        "[network] allow an app of another project (the admin)",
        "refused, naming both and accept_from",
    );
    let (ok, said) = p.try_as(
        &mallory,
        &[
            "deploy",
            &app_dir(
                work.path(),
                "bad-accept",
                "[network]\naccept_from = [\"vault\"]\n",
            ),
            "--app",
            "bad-accept",
        ],
    );
    assert!(!ok && said.contains("PROJECT/APP"), "{said}");
    let apps = p.json(&["apps"]).to_string();
    assert!(
        !apps.contains("\"spy\"") && !apps.contains("bad-accept"),
        "{apps}"
    );

    // -- Sources: a link out of the tree is refused by name, and nothing it points at is
    // read or echoed.
    for (name, target) in [("berth.toml", "/etc/shadow"), ("data", "../../../etc")] {
        let src = work
            .path()
            .join(format!("linked-{}", name.replace('.', "-")));
        copy_dir(&fixture("stateful"), &src);
        std::os::unix::fs::symlink(target, src.join(name)).expect("symlink");
        let archive = work
            .path()
            .join(format!("{}.tar.gz", name.replace('.', "-")));
        common::tar_gz(&src, &archive);
        let text = ledger.api(
            "upload a source with a link out of its tree",
            &mallory,
            "POST",
            "/v1/apps/probe/deploys",
            &[
                "-H",
                "content-type: application/gzip",
                "--data-binary",
                &format!("@{}", archive.display()),
            ],
            400,
        );
        assert!(text.contains(name) && !text.contains("root:"), "{text}");
    }

    // -- Git URLs: one carrying a password is refused and never echoed.
    let (code, text) = curl(
        &p,
        &mallory,
        "POST",
        "/v1/apps/probe/git",
        &[
            "-H",
            "content-type: application/json",
            "--data",
            r#"{"url":"https://ci:hunter2-token@git.example.com/x.git","branch":"main"}"#,
        ],
    );
    assert!(
        code == 400 && !text.contains("hunter2-token"),
        "{code}: {text}"
    );
    ledger.note(
        "a git URL with a password in it",
        "400, the password never echoed",
    );

    // A repository URL on the platform's own API: the platform fetches with no credential
    // of its own, so the victim's repository does not open to it.
    let (code, text) = curl(
        &p,
        &mallory,
        "POST",
        "/v1/apps/probe/git",
        &[
            "-H",
            "content-type: application/json",
            "--data",
            &format!(r#"{{"url":"http://{api}/git/vault.git","branch":"main"}}"#),
        ],
    );
    assert!(code >= 400 && !text.contains(SECRET), "{code}: {text}");
    let (code, text) = curl(&p, &mallory, "GET", "/v1/apps/probe/git", &[]);
    assert!(code == 404 || !text.contains("vault.git"), "{code}: {text}");
    ledger.note(
        "connect a repository URL on the platform's own API (its own loopback)",
        "refused: the platform's fetch carries no credential",
    );

    // -- The dashboard's sign-in from another site (login CSRF): refused.
    let (code, text) = curl(
        &p,
        "",
        "POST",
        "/ui/login",
        &["--data-urlencode", &format!("token={mallory}")],
    );
    assert!(
        code == 403 && !text.contains("set-cookie: berth_session"),
        "{code}: {text}"
    );
    let (code, _) = curl(
        &p,
        "",
        "POST",
        "/ui/login",
        &[
            "-H",
            "Cookie: berth_login=abc",
            "-H",
            "Sec-Fetch-Site: cross-site",
            "--data-urlencode",
            &format!("token={mallory}"),
            "--data",
            "csrf=abc",
        ],
    );
    assert_eq!(code, 403);
    ledger.note("sign a visitor in from another site (login CSRF)", "403");

    // -- The edge: Host tricks never pick an app.
    for head in [
        "GET / HTTP/1.1\r\nHost: probe.localhost\r\nHost: vault.localhost\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: vault.localhost:8x\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: vault.localhost:1:2\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: vault.local host\r\nConnection: close\r\n\r\n",
    ] {
        assert_eq!(raw_status(p.edge_port, head), 400, "{head:?}");
    }
    ledger.note(
        "two Host headers, a non-numeric port, a malformed name at the edge",
        "400",
    );

    // -- Local hygiene: the data directory and the state database are root's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(p.data.path()), 0o700);
    for entry in std::fs::read_dir(p.data.path()).expect("data dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if name.starts_with("berth.db") {
            assert_eq!(mode(&path), 0o600, "{name}");
        }
    }
    ledger.note("the data directory and the state database", "0700 and 0600");

    // Nothing of the victim's changed.
    assert_eq!(git_ok(&repo, &["ls-remote", &as_admin_url]), refs_before);
    assert_eq!(p.json(&["releases", "vault"]).to_string(), releases_before);
    assert_eq!(p.answer("vault", "/env?name=TOKEN"), SECRET);
    let secrets = p.json(&["secrets", "list", "vault"]);
    assert!(
        secrets
            .as_array()
            .is_some_and(|l| l.iter().all(|s| s["injected_as"] != "build")),
        "no build secret was planted: {secrets}"
    );
    let audit = p.ok(&["audit", "--actor", "mallory"]);
    assert!(
        audit.contains("404") || audit.contains("refused"),
        "{audit}"
    );
    eprintln!("{}", ledger.1.join("\n"));
}

#[test]
fn a_tenant_holds_its_apps_to_its_isolation_and_capabilities() {
    let p = Platform::start();
    let work = tempfile::tempdir().expect("tempdir");
    p.ok(&["tenants", "create", "locked", "--isolation", "sandbox"]);
    p.ok(&["projects", "create", "jail", "--tenant", "locked"]);
    let tenant_admin = p
        .ok(&[
            "tokens",
            "create",
            "locked-admin",
            "--role",
            "admin",
            "--tenant",
            "locked",
        ])
        .trim()
        .to_string();
    // An app asking for less than the tenant's floor is refused, naming both.
    let (ok, said) = p.try_as(
        &tenant_admin,
        &[
            "deploy",
            &app_dir(work.path(), "lowered", "isolation = \"trusted\"\n"),
            "--app",
            "lowered",
            "--project",
            "jail",
        ],
    );
    assert!(
        !ok && said.contains("tenant locked holds its apps to isolation \"sandbox\""),
        "{said}"
    );
    assert!(!p.json(&["apps"]).to_string().contains("lowered"));
    // Asking for nothing, it runs sandboxed.
    let (ok, said) = p.try_as(
        &tenant_admin,
        &[
            "deploy",
            &app_dir(work.path(), "inmate", ""),
            "--app",
            "inmate",
            "--project",
            "jail",
        ],
    );
    assert!(ok, "{said}");
    let apps = p.json(&["apps"]);
    let inmate = apps
        .as_array()
        .expect("apps")
        .iter()
        .find(|a| a["name"] == "inmate")
        .expect("inmate")
        .clone();
    assert_eq!(inmate["isolation"], "sandbox", "{inmate}");
    assert_eq!(p.answer("inmate", "/env?name=BERTH_APP"), "inmate");

    // Its Dockerfile would run RUN steps on the host's kernel: refused, nothing made.
    let docker = work.path().join("dockered");
    std::fs::create_dir_all(&docker).expect("dir");
    std::fs::write(docker.join("Dockerfile"), "FROM scratch\nRUN true\n").expect("Dockerfile");
    let (ok, said) = p.try_as(
        &tenant_admin,
        &[
            "deploy",
            docker.to_str().expect("path"),
            "--app",
            "dockered",
            "--project",
            "jail",
        ],
    );
    assert!(
        !ok && said.contains("a sandboxed app's Dockerfile is not built here"),
        "{said}"
    );
    assert!(!p.json(&["apps"]).to_string().contains("dockered"));

    // A tenant's capability ceiling.
    p.ok(&[
        "tenants",
        "create",
        "narrow",
        "--capabilities",
        "net_bind_service",
    ]);
    p.ok(&["projects", "create", "small", "--tenant", "narrow"]);
    let err = p.fails(&[
        "deploy",
        &app_dir(
            work.path(),
            "raw",
            "isolation = \"trusted\"\n[security]\ncapabilities = [\"net_raw\"]\n",
        ),
        "--app",
        "raw",
        "--project",
        "small",
    ]);
    assert!(
        err.contains("tenant narrow does not let its apps keep CAP_NET_RAW"),
        "{err}"
    );
    let err = p.fails(&["tenants", "create", "wide", "--capabilities", "sys_admin"]);
    assert!(err.contains("cannot be granted"), "{err}");
    let table = p.ok(&["tenants", "list"]);
    assert!(
        table.contains("LEAST ISOLATION") && table.contains("sandbox"),
        "{table}"
    );
    let tenants = p.json(&["tenants", "list"]).to_string();
    assert!(
        tenants.contains("\"min_isolation\":\"sandbox\"") && !tenants.contains("\"wide\""),
        "{tenants}"
    );
}

//! End-to-end: the web dashboard in a real browser (headless Chromium, driven by
//! puppeteer-core): sign in (a wrong token refused), the apps, an app with its releases, its
//! logs and a search, a rollback with its confirmation, the audit log, signing out, a viewer
//! refused the rollback — each page checked by axe-core (no serious violation) and
//! photographed at desktop and phone widths (`target/tmp/ui-screenshots/`). Around it, over
//! plain HTTP: no page without a session, a forged form refused, hostile text escaped, the
//! security headers.

use crate::common;

use common::{copy_dir, fixture, Platform};
use std::path::PathBuf;
use std::process::Command;

fn tools() -> PathBuf {
    let base = std::env::var("BERTH_TOOLS_DIR").unwrap_or_else(|_| "/var/lib/berth-tools".into());
    PathBuf::from(base).join("browser/node_modules")
}

/// A request to the API port with the session cookie `token` (none: no cookie); the
/// status line's code, the headers and the body.
fn ui(
    p: &Platform,
    token: Option<&str>,
    method: &str,
    path: &str,
    form: Option<&str>,
) -> (u16, String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-D", "-", "-X", method]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Cookie: berth_session={t}")]);
    }
    if let Some(f) = form {
        cmd.args([
            "-H",
            "content-type: application/x-www-form-urlencoded",
            "--data",
            f,
        ]);
    }
    cmd.arg(format!("http://127.0.0.1:{}{path}", p.api_port));
    answer_of(cmd)
}

/// Runs a `curl -s -D -` and reads its answer: the status line's code, the headers (see
/// `lower_names`) and the body.
fn answer_of(mut curl: Command) -> (u16, String, String) {
    let out = curl.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, lower_names(head), body.to_string())
}

/// The head in lower case, but for where a redirect goes (run ids and notices keep their
/// case).
fn lower_names(head: &str) -> String {
    head.lines()
        .map(|l| match l.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("location") => {
                format!("location:{value}")
            }
            _ => l.to_ascii_lowercase(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A form with a file, as a browser sends it: `archive` uploaded to app `app`.
fn upload(
    p: &Platform,
    token: &str,
    csrf: &str,
    app: &str,
    archive: &std::path::Path,
) -> (u16, String, String) {
    let mut curl = Command::new("curl");
    curl.args(["-s", "-D", "-", "-H"])
        .arg(format!("Cookie: berth_session={token}"))
        .args(["-F", &format!("csrf={csrf}"), "-F", &format!("app={app}")])
        .arg("-F")
        .arg(format!("archive=@{}", archive.display()))
        .arg(format!("http://127.0.0.1:{}/ui/upload", p.api_port));
    answer_of(curl)
}

/// The run page a redirect points at.
fn run_of(head: &str) -> String {
    head.lines()
        .find_map(|l| l.strip_prefix("location: "))
        .filter(|l| l.contains("/runs/"))
        .unwrap_or_else(|| panic!("no run in {head}"))
        .trim()
        .to_string()
}

/// The run's page once it ended.
fn finished(p: &Platform, token: &str, run: &str) -> String {
    let mut page = String::new();
    common::eventually(std::time::Duration::from_secs(240), || {
        page = ui(p, Some(token), "GET", run, None).2;
        page.contains("Done: ") || page.contains("Failed: ")
    });
    page
}

#[test]
fn the_dashboard_runs_the_day_in_a_real_browser() {
    let p = Platform::start_with(&["--slo-sample-interval", "1s"]);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("shop");
    copy_dir(&fixture("stateful"), &dir);
    let path = dir.to_str().unwrap();
    p.ok(&["deploy", path, "--app", "shop"]);
    // v2: an env value made to be a script, and a log line that carries it.
    p.ok(&["env", "set", "shop", "XSS=<img src=x onerror=alert(1)>"]);
    assert_eq!(p.answer("shop", "/log?name=XSS"), "logged\n");
    // A repository the platform can fetch (git://, on loopback).
    let repos = work.path().join("repos");
    let bare = repos.join("shop.git");
    std::fs::create_dir_all(&bare).unwrap();
    common::git(&bare, &["init", "-q", "--bare", "--initial-branch", "main"]);
    let src = work.path().join("src");
    copy_dir(&fixture("stateful"), &src);
    std::fs::write(src.join("version.txt"), "from git\n").unwrap();
    common::git(&src, &["init", "-q", "--initial-branch", "main"]);
    common::git(&src, &["add", "-A"]);
    common::git(&src, &["commit", "-qm", "from git"]);
    common::git(&src, &["push", "-q", bare.to_str().unwrap(), "main"]);
    let daemon = common::git_daemon(&repos);
    let admin = common::admin_token(&p);
    let viewer = p.json(&["tokens", "create", "look", "--role", "viewer"])["token"]
        .as_str()
        .unwrap()
        .to_string();

    // Over plain HTTP first: no session, no page; a token that is no token, back to sign in.
    let (code, head, _) = ui(&p, None, "GET", "/ui", None);
    assert_eq!(code, 303);
    assert!(head.contains("location: /ui/login"), "{head}");
    let (code, head, _) = ui(&p, Some("berth_nope"), "GET", "/ui", None);
    assert_eq!(code, 303);
    assert!(head.contains("location: /ui/login?failed=1"), "{head}");
    let (code, head, body) = ui(&p, Some(&admin), "GET", "/ui/apps/shop", None);
    assert_eq!(code, 200, "{body}");
    for header in [
        "content-security-policy: default-src 'none'; script-src 'self'",
        "x-frame-options: deny",
        "x-content-type-options: nosniff",
    ] {
        assert!(head.contains(header), "{header}: {head}");
    }
    assert!(
        body.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "escaped"
    );
    assert!(!body.contains("<img src=x"), "never markup");
    // A forged form (no CSRF token, or another session's): refused, nothing rolled back.
    for form in ["to=1", "to=1&csrf=0123456789abcdef"] {
        let (code, _, body) = ui(
            &p,
            Some(&admin),
            "POST",
            "/ui/apps/shop/rollback",
            Some(form),
        );
        assert_eq!(code, 403, "{body}");
        assert!(
            body.contains("did not come from one of your berth pages"),
            "{body}"
        );
    }
    assert_eq!(p.json(&["releases", "shop"]).as_array().unwrap().len(), 2);
    // Its health, drawn on the server: the requests of the last hour (sampled every second
    // here), the error budgets, the DORA keys with today's deploy.
    let mut requests = 0;
    common::eventually(std::time::Duration::from_secs(60), || {
        // Requests keep coming while the sampler (every second here) counts them.
        p.answer("shop", "/env?name=PORT");
        let (_, _, body) = ui(&p, Some(&admin), "GET", "/ui/apps/shop", None);
        requests = body
            .split(" requests (")
            .next()
            .and_then(|before| before.rsplit('"').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        requests > 0
    });
    assert!(requests > 0, "the requests chart counts the app's requests");
    let (_, _, body) = ui(&p, Some(&admin), "GET", "/ui/apps/shop", None);
    for needle in [
        "requests (0 answered 5xx) in the last hour; busiest minute",
        "aria-label=\"0 of ",
        "answers slower than the latency objective in the last hour",
        "Error budgets (30 days)",
        "of the availability error budget left",
        "Deployment frequency",
        "1 deploy in the last 30 days, per day",
        ": 1 deploy</title>",
    ] {
        assert!(body.contains(needle), "{needle}: {body}");
    }
    let (_, _, body) = ui(&p, Some(&admin), "GET", "/ui", None);
    assert!(
        body.contains("<svg"),
        "the apps page draws each app's traffic"
    );

    // Changes through the pages' forms, each with the page's CSRF token: a variable, a
    // secret (its value never shown), instances.
    let csrf = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    let form = |path: &str, fields: &str| {
        let (code, head, body) = ui(
            &p,
            Some(&admin),
            "POST",
            path,
            Some(&format!("csrf={csrf}&{fields}")),
        );
        assert_eq!(code, 303, "{path} {fields}: {body}");
        head
    };
    let head = form("/ui/apps/shop/env", "action=set&key=MODE&value=blue");
    assert!(head.contains("location: /ui/apps/shop?notice="), "{head}");
    assert_eq!(p.answer("shop", "/env?name=MODE"), "blue");
    form(
        "/ui/apps/shop/secrets",
        "action=set&key=API_KEY&value=s3cr3t-from-the-page",
    );
    assert_eq!(
        p.answer("shop", "/env?name=API_KEY"),
        "s3cr3t-from-the-page"
    );
    let (_, _, page) = ui(&p, Some(&admin), "GET", "/ui/apps/shop", None);
    assert!(
        page.contains("API_KEY") && !page.contains("s3cr3t-from-the-page"),
        "secret names only"
    );
    form("/ui/apps/shop/scale", "process=web&instances=2");
    let web = p
        .json(&["ps", "shop"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["process"] == "web" && i["state"] == "running")
        .count();
    assert_eq!(web, 2);
    // A form sent twice (a double click): the work is done once, both get its answer.
    let releases = p.json(&["releases", "shop"]).as_array().unwrap().len();
    let first = form(
        "/ui/apps/shop/env?once=d0ub1ec11ck",
        "action=set&key=TWICE&value=1",
    );
    let again = form(
        "/ui/apps/shop/env?once=d0ub1ec11ck",
        "action=set&key=TWICE&value=1",
    );
    assert!(again.contains("idempotent-replayed"), "{again}");
    let location = |h: &str| {
        h.lines()
            .find(|l| l.starts_with("location:"))
            .map(str::to_string)
    };
    assert_eq!(location(&first), location(&again));
    assert_eq!(
        p.json(&["releases", "shop"]).as_array().unwrap().len(),
        releases + 1
    );
    let (_, _, page) = ui(&p, Some(&admin), "GET", "/ui/apps/shop", None);
    assert!(
        page.contains("/scale?once="),
        "each form carries its own key"
    );

    // Bad input through a form: refused with the reason, nothing changed.
    let before = p.json(&["releases", "shop"]).as_array().unwrap().len();
    for (path, fields, why) in [
        (
            "/ui/apps/shop/scale",
            "process=web&instances=-1",
            "not a number of instances",
        ),
        ("/ui/apps/shop/env", "action=set&key=1BAD&value=x", "1BAD"),
        (
            "/ui/deploy",
            "app=shop&url=file:///etc&ref=main",
            "is not a repository URL berth fetches",
        ),
    ] {
        let (code, _, body) = ui(
            &p,
            Some(&admin),
            "POST",
            path,
            Some(&format!("csrf={csrf}&{fields}")),
        );
        assert_eq!(code, 400, "{path}: {body}");
        assert!(body.contains(why), "{why}: {body}");
    }
    assert_eq!(
        p.json(&["releases", "shop"]).as_array().unwrap().len(),
        before
    );

    // Its domain with the certificate berth issued; no database yet, and how to make one.
    p.ok(&["domains", "add", "shop", "shop.example.test"]);
    let (_, _, page) = ui(&p, Some(&admin), "GET", "/ui/apps/shop", None);
    assert!(page.contains("shop.example.test"), "{page}");
    assert!(
        page.contains("certificate from CN=berth local CA"),
        "{page}"
    );
    assert!(page.contains("berth db create shop"), "{page}");

    // A volume, its snapshot and a database, from the app's page; a deploy of an uploaded
    // archive from the apps page. Each long one is followed on its run's page.
    let head = form("/ui/apps/shop/volumes", "name=data&mount=%2Fdata&size=64M");
    let run = run_of(&head);
    let done = finished(&p, &admin, &run);
    assert!(done.contains("Done: "), "{done}");
    let volumes = p.json(&["volumes", "list", "shop"]);
    assert_eq!(volumes[0]["mount"], "/data", "{volumes}");
    let head = form("/ui/apps/shop/volumes/data/snapshot", "");
    assert!(head.contains("notice=Snapshot"), "{head}");
    let back = head
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .unwrap()
        .trim()
        .to_string();
    let (_, _, page) = ui(&p, Some(&admin), "GET", &back, None);
    assert!(page.contains("of volume data taken"), "{page}");
    let head = form("/ui/apps/shop/database", "");
    let done = finished(&p, &admin, &run_of(&head));
    assert!(done.contains("Done: "), "{done}");
    assert!(p
        .answer("shop", "/env?name=DATABASE_URL")
        .starts_with("postgres"));
    let head = form("/ui/apps/shop/database/backup", "");
    assert!(head.contains("notice=Backup"), "{head}");
    let (_, _, page) = ui(&p, Some(&admin), "GET", "/ui/apps/shop", None);
    assert!(
        page.contains("1 backup;") && page.contains("Snapshot data"),
        "{page}"
    );
    let archive = work.path().join("upload.tar.gz");
    let packed = Command::new("tar")
        .arg("czf")
        .arg(&archive)
        .arg("-C")
        .arg(&dir)
        .arg(".")
        .status()
        .unwrap();
    assert!(packed.success());
    let (code, head, body) = upload(&p, &admin, &csrf, "uploaded", &archive);
    assert_eq!(code, 303, "{body}");
    let done = finished(&p, &admin, &run_of(&head));
    assert!(
        done.contains("Done: release v1 serves at http://uploaded.localhost")
            && done.contains("Detected a procfile app"),
        "{done}"
    );
    assert!(!p.answer("uploaded", "/env?name=PORT").is_empty());
    // Bad input: refused with the reason, nothing made.
    let junk = work.path().join("junk.tar.gz");
    std::fs::write(&junk, "not an archive").unwrap();
    let (code, _, body) = upload(&p, &admin, &csrf, "junk", &junk);
    assert_eq!(code, 400, "{body}");
    let (code, _, body) = upload(&p, &admin, "forged", "junk", &archive);
    assert_eq!(code, 403, "{body}");
    let (code, _, body) = ui(
        &p,
        Some(&admin),
        "POST",
        "/ui/apps/shop/volumes",
        Some(&format!("csrf={csrf}&name=more&mount=%2Fmore&size=lots")),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("size:"), "{body}");
    let apps = p.json(&["apps"]).to_string();
    assert!(!apps.contains("junk"), "{apps}");
    assert_eq!(
        p.json(&["volumes", "list", "shop"])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The project's page: its quota and use, its apps, their DORA keys day by day.
    let (code, _, body) = ui(&p, Some(&admin), "GET", "/ui/projects/default", None);
    assert_eq!(code, 200, "{body}");
    for needle in [
        "Project default",
        "/ui/apps/shop",
        "/ui/apps/uploaded",
        "DORA four keys of the project",
        "Lead time for changes (median per day)",
        "Change failure rate per day",
        "Time to restore service (median per day)",
        "deploys in the last 30 days, per day",
    ] {
        assert!(body.contains(needle), "{needle}: {body}");
    }
    let keys = p.json(&["dora", "--project", "default", "--window", "1d"]);
    assert_eq!(keys[0]["scope"], "project default", "{keys}");
    assert!(keys[0]["deployments"].as_u64().unwrap() >= 2, "{keys}");
    let err = p.fails(&["dora", "--project", "nosuch"]);
    assert!(err.contains("no project nosuch"), "{err}");

    // A token limited to another project sees none of shop, here as in the API.
    p.ok(&["projects", "create", "other"]);
    let limited = p.json(&[
        "tokens",
        "create",
        "elsewhere",
        "--role",
        "deployer",
        "--project",
        "other",
    ])["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, _, body) = ui(&p, Some(&limited), "GET", "/ui", None);
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains("/ui/apps/shop"), "{body}");
    let (code, _, _) = ui(&p, Some(&limited), "GET", "/ui/apps/shop", None);
    assert_eq!(code, 404);
    let (code, _, _) = ui(&p, Some(&limited), "GET", "/ui/apps/shop/logs", None);
    assert_eq!(code, 404);
    let (code, _, _) = ui(&p, Some(&limited), "GET", "/ui/projects/default", None);
    assert_eq!(code, 404);
    let (code, _, body) = ui(&p, Some(&limited), "GET", "/ui/projects/other", None);
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains("/ui/apps/shop"), "{body}");
    assert!(
        !body.contains("The platform's DORA"),
        "the platform's keys are not a project's"
    );
    let (code, _, _) = ui(&p, Some(&limited), "GET", "/v1/dora?project=default", None);
    assert!(code == 404 || code == 401, "{code}");

    // Logs of a time range; the alerts.
    let (code, _, body) = ui(
        &p,
        Some(&admin),
        "GET",
        "/ui/apps/shop/logs?since=1h&stream=runtime",
        None,
    );
    assert_eq!(code, 200);
    assert!(body.contains("stateful listening"), "{body}");
    let (code, _, body) = ui(
        &p,
        Some(&admin),
        "GET",
        "/ui/apps/shop/logs?since=yesterday",
        None,
    );
    assert_eq!(code, 400);
    assert!(body.contains("is not a time span"), "{body}");
    let (code, _, body) = ui(&p, Some(&admin), "GET", "/ui/alerts", None);
    assert_eq!(code, 200);
    assert!(body.contains("Firing (0)"), "{body}");

    // An app name that is no name: refused as text.
    let (code, _, body) = ui(&p, Some(&admin), "GET", "/ui/apps/%3Cscript%3E", None);
    assert_eq!(code, 400);
    assert!(!body.contains("<script>"), "{body}");
    // The assets come from the binary.
    let (code, head, _) = ui(&p, None, "GET", "/ui/assets/htmx.min.js", None);
    assert_eq!(code, 200);
    assert!(head.contains("text/javascript"), "{head}");

    // The browser.
    let before = p.json(&["releases", "shop"]).as_array().unwrap().len();
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ui/walk.mjs"))
        .env("BASE", format!("http://127.0.0.1:{}", p.api_port))
        .env("TOKEN", &admin)
        .env("VIEWER", &viewer)
        .env("APP", "shop")
        .env("EDGE_PORT", p.edge_port.to_string())
        .env(
            "GIT_URL",
            format!("git://127.0.0.1:{}/shop.git", daemon.port),
        )
        .env("SHOTS", &shots)
        .env("CHROMIUM", "/usr/bin/chromium")
        .env("TOOLS", tools())
        .output()
        .expect("node (install it with scripts/install-deps)");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        p.up_log()
    );
    let report: serde_json::Value = serde_json::from_str(said.trim()).expect("the walk's report");
    assert_eq!(report["ok"], true, "{report}");
    for name in [
        "login", "apps", "project", "app", "deploy", "logs", "rollback", "audit",
    ] {
        assert!(shots.join(format!("{name}-desktop.png")).exists(), "{name}");
        assert!(shots.join(format!("{name}-phone.png")).exists(), "{name}");
    }

    // What the browser did is what the platform did.
    let releases = p.json(&["releases", "shop"]);
    assert_eq!(releases.as_array().unwrap().len(), before + 2, "{releases}");
    let commit = common::git(&src, &["rev-parse", "HEAD"]);
    assert!(
        releases[1].to_string().contains(&commit),
        "the deploy from git records its commit: {}",
        releases[1]
    );
    assert!(
        releases[0]["description"]
            .as_str()
            .unwrap()
            .contains("rollback to v1"),
        "{releases}"
    );
    let audit = p.ok(&["--json", "audit"]);
    assert!(audit.contains("POST /ui/apps/{app}/rollback"), "{audit}");
}

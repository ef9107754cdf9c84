//! End-to-end: an app's state on a real platform. Secrets sealed at rest, delivered as
//! environment variables and files, redacted from logs, rotated; volumes that keep their
//! bytes through redeploys, rollbacks, crashes and a killed control plane, at both isolation
//! levels, with their size enforced by a real filesystem; snapshots and restores; and the
//! bad input that must change nothing.

use crate::common;

use common::{copy_dir, eventually, files_holding, Platform};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn fixture() -> PathBuf {
    common::fixture("stateful")
}

/// A copy of the stateful fixture named `app`, with extra berth.toml lines.
fn app_dir(root: &Path, app: &str, toml: &str) -> PathBuf {
    let dir = root.join(app);
    copy_dir(&fixture(), &dir);
    std::fs::write(dir.join("berth.toml"), format!("name = \"{app}\"\n{toml}")).expect("toml");
    dir
}

fn body(p: &Platform, app: &str, path: &str) -> String {
    let (status, body) = p.get(app, path);
    assert_eq!(status, 200, "GET {path}: {body}\n{}", p.up_log());
    body
}

/// Runs SQL in the app (psql with its DATABASE_URL); returns the rows or the error.
fn sql(p: &Platform, app: &str, q: &str) -> String {
    body(p, app, &format!("/sql?q={}", q.replace(' ', "%20")))
}

/// A read-only query, asked again while the app is too busy to answer (the machine runs
/// several platforms side by side); returns the first answer.
fn select(p: &Platform, app: &str, q: &str) -> String {
    answer(p, app, &format!("/sql?q={}", q.replace(' ', "%20")))
}

/// GET of an idempotent route, asked again while the app is too busy to answer.
fn answer(p: &Platform, app: &str, path: &str) -> String {
    p.answer(app, path)
}

/// Every file under `dir` that holds `needle`.

#[test]
fn secrets_reach_the_app_but_never_the_disk_the_api_or_the_logs() {
    let p = Platform::start();
    let work = tempfile::tempdir().expect("tempdir");
    let api_key = "ak-7f3e9c1d5b2a";
    let db_pass = "pw\nline-two-0a9b8c";
    let pass_file = work.path().join("db_pass");
    std::fs::write(&pass_file, db_pass).expect("write");

    p.ok(&["create", "vault"]);
    // Set before the first deploy: stored, applied by it.
    let out = p.ok(&[
        "secrets",
        "set",
        "vault",
        &format!("API_KEY={api_key}"),
        "--file",
        &format!("DB_PASS={}", pass_file.display()),
    ]);
    assert!(out.contains("first deploy"), "{out}");
    let dir = app_dir(work.path(), "vault", "[secrets]\nfiles = [\"DB_PASS\"]\n");
    p.ok(&["deploy", &dir.display().to_string()]);

    assert_eq!(body(&p, "vault", "/env?name=API_KEY"), api_key);
    assert_eq!(body(&p, "vault", "/file?name=DB_PASS"), db_pass);
    assert_eq!(body(&p, "vault", "/env?name=DB_PASS"), "<unset>");

    // The API lists names and versions, never values.
    let list = p.ok(&["--json", "secrets", "list", "vault"]);
    assert!(
        !list.contains(api_key) && !list.contains("line-two"),
        "{list}"
    );
    let list: serde_json::Value = serde_json::from_str(&list).expect("json");
    assert_eq!(list[0]["name"], "API_KEY");
    assert_eq!(list[0]["version"], 1);
    assert_eq!(list[1]["injected_as"], "file /run/secrets/DB_PASS");

    // A value the app prints is redacted in its log.
    body(&p, "vault", "/log?name=API_KEY");
    assert!(
        eventually(Duration::from_secs(10), || p
            .ok(&["logs", "vault"])
            .contains("the secret is [secret API_KEY]")),
        "{}",
        p.ok(&["logs", "vault"])
    );
    assert!(!p.ok(&["logs", "vault"]).contains(api_key));

    // A change is a new release; the app sees the new value.
    let rotated = "ak-second-4d4d4d4d";
    let out = p.ok(&["secrets", "set", "vault", &format!("API_KEY={rotated}")]);
    assert!(out.contains("v2"), "{out}");
    assert_eq!(body(&p, "vault", "/env?name=API_KEY"), rotated);
    let releases = p.json(&["releases", "vault"]);
    assert_eq!(releases[0]["description"], "secrets API_KEY");
    assert_eq!(releases[0]["config"]["secrets"]["API_KEY"], 2);

    // Rotating the key re-seals every version; a crashed instance restarts with its secrets.
    let key_file = p.data.path().join("keys/secrets.json");
    let key_before = std::fs::read_to_string(&key_file).expect("key file");
    let rotation = p.json(&["secrets", "rotate-key"]);
    assert_eq!(rotation["resealed"], 3, "{rotation}");
    let key_after = std::fs::read_to_string(&key_file).expect("key file");
    assert_ne!(key_before, key_after);
    assert!(key_after.contains(rotation["key_id"].as_str().expect("id")));
    let _ = p.get("vault", "/crash");
    assert!(eventually(Duration::from_secs(20), || {
        let ps = p.json(&["ps", "vault"]);
        ps[0]["restarts"] == 1 && ps[0]["state"] == "running"
    }));
    assert!(eventually(Duration::from_secs(10), || p
        .get("vault", "/env?name=API_KEY")
        .1
        == rotated));

    // A rollback returns to the secret versions of its release.
    p.ok(&["rollback", "vault"]);
    assert_eq!(body(&p, "vault", "/env?name=API_KEY"), api_key);
    assert_eq!(p.json(&["secrets", "list", "vault"])[0]["version"], 1);

    // Bad input names the problem and changes nothing.
    let releases_before = p.json(&["releases", "vault"]);
    let err = p.fails(&["secrets", "set", "vault", "MY-KEY=x"]);
    assert!(
        err.contains("MY-KEY") && err.contains("environment variable name"),
        "{err}"
    );
    let err = p.fails(&["secrets", "unset", "vault", "NOPE"]);
    assert!(err.contains("NOPE is not set"), "{err}");
    assert_eq!(p.json(&["releases", "vault"]), releases_before);

    // Nowhere in the data directory (database, logs, bundles, key file) is a value in the
    // clear.
    for value in [api_key, rotated, "line-two-0a9b8c"] {
        let found = files_holding(p.data.path(), value);
        assert!(found.is_empty(), "{value:?} in plaintext in:\n{found}");
    }
    // Unset removes it from the next release.
    p.ok(&["secrets", "unset", "vault", "API_KEY"]);
    assert_eq!(body(&p, "vault", "/env?name=API_KEY"), "<unset>");
}

#[test]
fn build_secrets_reach_the_build_and_nothing_else() {
    let p = Platform::start();
    let work = tempfile::tempdir().expect("tempdir");
    let token = "npm-tok-5e5e9a1b7c3d";
    p.ok(&["create", "pkgs"]);
    // Bad input names the problem and stores nothing.
    let err = p.fails(&["secrets", "set", "pkgs", "--build", "PATH=/tmp"]);
    assert!(
        err.contains("PATH") && err.contains("name of its own"),
        "{err}"
    );
    let err = p.fails(&["secrets", "unset", "pkgs", "NPM_TOKEN", "--build"]);
    assert!(err.contains("build secret NPM_TOKEN is not set"), "{err}");
    assert_eq!(p.json(&["secrets", "list", "pkgs"]), serde_json::json!([]));

    let token_file = work.path().join("token");
    std::fs::write(&token_file, token).expect("token");
    let out = p.ok(&[
        "secrets",
        "set",
        "pkgs",
        "--build",
        "--file",
        &format!("NPM_TOKEN={}", token_file.display()),
    ]);
    assert!(out.contains("next build"), "{out}");
    // A node app whose install step uses the token (as a private registry's would) and
    // records what it saw; the running app reports what it sees.
    let dir = work.path().join("pkgs");
    std::fs::create_dir_all(&dir).expect("dir");
    let package = |version: &str| {
        format!(
            r#"{{"name": "pkgs", "version": "{version}", "private": true,
               "scripts": {{"postinstall": "node build.js", "start": "node server.js"}}}}"#
        )
    };
    std::fs::write(dir.join("package.json"), package("1.0.0")).expect("package.json");
    std::fs::write(
        dir.join("build.js"),
        r#"const fs = require("fs");
const env = process.env.NPM_TOKEN || "";
let file = "";
try { file = fs.readFileSync("/run/secrets/NPM_TOKEN", "utf8"); } catch (e) { file = "unreadable"; }
console.log("the install sees " + env);
fs.writeFileSync(__dirname + "/built.txt", `env=${env.length} file=${file === env && env !== ""} uid=${process.getuid()}\n`);
"#,
    )
    .expect("build.js");
    std::fs::write(
        dir.join("server.js"),
        r#"const fs = require("fs");
require("http").createServer((req, res) => {
  if (req.url === "/built") return res.end(fs.readFileSync(__dirname + "/built.txt"));
  res.end(`env=${process.env.NPM_TOKEN === undefined ? "unset" : "set"} file=${fs.existsSync("/run/secrets/NPM_TOKEN")}\n`);
}).listen(Number(process.env.PORT || 8000), "0.0.0.0");
"#,
    )
    .expect("server.js");
    let deployed = common::said(&p.berth(&["deploy", &dir.display().to_string()]));
    assert!(!deployed.contains(token), "{deployed}");
    assert!(
        deployed.contains("the install sees [secret NPM_TOKEN]"),
        "{deployed}"
    );
    let uid_line = deployed
        .lines()
        .find(|l| l.contains("Building as uid "))
        .unwrap_or_else(|| panic!("{deployed}"));
    let uid = uid_line
        .split("Building as uid ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .expect("uid");
    assert_eq!(
        body(&p, "pkgs", "/built"),
        format!("env={} file=true uid={uid}\n", token.len())
    );
    // The running app never sees it, nor does its release.
    assert_eq!(body(&p, "pkgs", "/"), "env=unset file=false\n");
    let release = &p.json(&["releases", "pkgs"])[0];
    assert!(
        release["config"]["secrets"]
            .as_object()
            .is_none_or(|m| m.is_empty()),
        "{release}"
    );
    let list = p.json(&["secrets", "list", "pkgs"]);
    assert_eq!(list[0]["name"], "NPM_TOKEN", "{list}");
    assert_eq!(list[0]["injected_as"], "build", "{list}");
    let found = files_holding(p.data.path(), token);
    assert!(found.is_empty(), "the token in plaintext in:\n{found}");

    // Unset, the next build goes without it; the release is untouched by the change.
    let releases = p.json(&["releases", "pkgs"]).as_array().map(Vec::len);
    p.ok(&["secrets", "unset", "pkgs", "NPM_TOKEN", "--build"]);
    assert_eq!(
        p.json(&["releases", "pkgs"]).as_array().map(Vec::len),
        releases
    );
    std::fs::write(dir.join("package.json"), package("1.0.1")).expect("package.json");
    p.ok(&["deploy", &dir.display().to_string()]);
    assert_eq!(
        body(&p, "pkgs", "/built"),
        format!("env=0 file=false uid={uid}\n")
    );
}

/// Volumes at one isolation level: data through every kind of restart, the size enforced,
/// snapshot and restore, destroy guarded.
fn volume_lifecycle(isolation: &str) {
    let mut p = Platform::start();
    let work = tempfile::tempdir().expect("tempdir");
    let app = format!("files-{isolation}");
    let dir = app_dir(work.path(), &app, &format!("isolation = \"{isolation}\"\n"));
    p.ok(&["deploy", &dir.display().to_string()]);
    let out = p.ok(&[
        "volumes", "create", &app, "data", "--size", "24M", "--mount", "/data",
    ]);
    assert!(out.contains("v2"), "creating a volume redeploys: {out}");
    assert_eq!(body(&p, &app, "/write?name=keep&bytes=3000"), "ok\n");
    let kept = |p: &Platform| p.get(&app, "/read?name=keep").1.len() == 3000;

    // A redeploy, a rollback, a crash and a killed control plane keep the bytes.
    p.ok(&["env", "set", &app, "MODE=two"]);
    assert!(kept(&p), "after a redeploy");
    p.ok(&["rollback", &app]);
    assert!(kept(&p), "after a rollback");
    let _ = p.get(&app, "/crash");
    let mut last = serde_json::Value::Null;
    assert!(
        eventually(Duration::from_secs(30), || {
            last = p.json(&["ps", &app]);
            last[0]["restarts"] == 1 && last[0]["state"] == "running"
        }),
        "{last}\n{}\n{}",
        p.up_log(),
        p.edge_log()
    );
    // (A restarted instance is routed before it listens, #12; under a loaded machine a
    // sandbox takes a while to answer again.)
    assert!(
        eventually(Duration::from_secs(60), || kept(&p)),
        "after a crash: {:?}\n{}",
        p.get(&app, "/read?name=keep"),
        p.up_log()
    );
    p.kill_control_plane();
    assert!(kept(&p), "while the control plane is down");
    p.up();
    assert!(kept(&p), "after the control plane came back");

    // The size is the filesystem's: the app gets ENOSPC. (Writing the file again gives the
    // same answer, so a busy machine may ask twice.)
    assert_eq!(
        answer(&p, &app, "/write?name=big&bytes=40000000"),
        "error ENOSPC\n"
    );
    let v = &p.json(&["volumes", "list", &app])[0];
    assert_eq!(v["size_bytes"], 24u64 << 20);
    assert!(v["used_bytes"].as_u64().expect("used") > 16 << 20, "{v}");

    // Snapshot, change, restore: the snapshot's bytes are back.
    let snap = p.json(&["volumes", "snapshot", &app, "data"]);
    let id = snap["id"].as_str().expect("id").to_string();
    assert_eq!(body(&p, &app, "/write?name=keep&bytes=10"), "ok\n");
    let err = p.fails(&["volumes", "restore", &app, "data", &id]);
    assert!(err.contains("in use") && err.contains("--force"), "{err}");
    p.ok(&["volumes", "restore", &app, "data", &id, "--force"]);
    assert!(
        eventually(Duration::from_secs(30), || kept(&p)),
        "after a restore"
    );

    // Destroy asks, and refuses while the app mounts the volume.
    let err = p.fails(&["volumes", "destroy", &app, "data"]);
    assert!(err.contains("--yes"), "{err}");
    let err = p.fails(&["volumes", "destroy", &app, "data", "--yes"]);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(
        p.json(&["volumes", "list", &app]).as_array().map(Vec::len),
        Some(1)
    );
    p.ok(&["volumes", "destroy", &app, "data", "--yes", "--force"]);
    assert_eq!(
        p.json(&["volumes", "list", &app]).as_array().map(Vec::len),
        Some(0)
    );
    assert!(eventually(Duration::from_secs(20), || !p
        .data
        .path()
        .join(format!("volumes/{app}/data.ext4"))
        .exists()));
}

#[test]
fn trusted_volumes_keep_their_bytes_and_their_size() {
    volume_lifecycle("trusted");
}

#[test]
fn sandboxed_volumes_keep_their_bytes_and_their_size() {
    volume_lifecycle("sandbox");
}

#[test]
fn exclusive_volumes_make_deploys_stop_first_and_bad_volumes_change_nothing() {
    let p = Platform::start();
    let work = tempfile::tempdir().expect("tempdir");
    p.ok(&["create", "db"]);
    for (args, field) in [
        (vec!["--size", "0", "--mount", "/data"], "size"),
        (
            vec!["--size", "10 potatoes", "--mount", "/data"],
            "not a size",
        ),
        (vec!["--size", "1G", "--mount", "/etc"], "system path"),
        (vec!["--size", "1G", "--mount", "/data/../etc"], "leaves"),
        (vec!["--size", "1G", "--mount", "data"], "absolute"),
    ] {
        let mut a = vec!["volumes", "create", "db", "store"];
        a.extend(args);
        let err = p.fails(&a);
        assert!(err.contains(field), "{a:?}: {err}");
    }
    let err = p.fails(&[
        "volumes", "create", "db", "Bad_Name", "--size", "1G", "--mount", "/x",
    ]);
    assert!(err.contains("volume name"), "{err}");
    assert_eq!(
        p.json(&["volumes", "list", "db"]).as_array().map(Vec::len),
        Some(0)
    );
    assert!(!p.data.path().join("volumes/db").exists());

    p.ok(&[
        "volumes",
        "create",
        "db",
        "store",
        "--size",
        "32M",
        "--mount",
        "/data",
        "--exclusive",
    ]);
    let err = p.fails(&[
        "volumes", "create", "db", "store", "--size", "32M", "--mount", "/other",
    ]);
    assert!(err.contains("already has a volume"), "{err}");
    let err = p.fails(&[
        "volumes", "create", "db", "more", "--size", "32M", "--mount", "/data/x",
    ]);
    assert!(err.contains("overlaps"), "{err}");

    // Two instances cannot share an exclusive volume.
    let two = app_dir(work.path(), "db", "[processes.web]\ninstances = 2\n");
    let err = p.fails(&["deploy", &two.display().to_string()]);
    assert!(err.contains("exclusive"), "{err}");

    let one = app_dir(&work.path().join("one"), "db", "");
    p.ok(&["deploy", &one.display().to_string()]);
    assert_eq!(body(&p, "db", "/write?name=rows&bytes=5"), "ok\n");
    let out = p.berth(&["deploy", &one.display().to_string()]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(all.contains("volume store is exclusive"), "{all}");
    let ps = p.json(&["ps", "db"]);
    assert_eq!(ps.as_array().map(Vec::len), Some(1), "{ps}");
    // v1 was the refused two-instance release; v2 served; v3 replaced it.
    assert_eq!(ps[0]["release"], 3);
    assert_eq!(body(&p, "db", "/read?name=rows"), "xxxxx");
}

#[test]
fn databases_belong_to_their_app_and_come_back_from_a_backup() {
    let mut p = Platform::start();
    let work = tempfile::tempdir().expect("tempdir");
    for app in ["shop", "blog", "plain"] {
        let dir = app_dir(work.path(), app, "");
        p.ok(&["deploy", &dir.display().to_string()]);
    }
    let out = p.ok(&["db", "create", "shop"]);
    assert!(out.contains("v2"), "creating a database redeploys: {out}");
    p.ok(&["db", "create", "blog"]);

    assert_eq!(
        sql(
            &p,
            "shop",
            "create table notes (t text); insert into notes values ('kept'); select t from notes"
        ),
        "kept\n"
    );
    // Another app's role cannot open shop's database; an app without one cannot reach the
    // server at all.
    let denied = answer(&p, "blog", "/sql?db=app_shop&q=select%201");
    assert!(
        denied.contains("permission denied for database"),
        "{denied}"
    );
    let info = p.json(&["db", "info", "shop"]);
    let server = format!("{}:{}", info["host"].as_str().expect("host"), info["port"]);
    let refused = answer(
        &p,
        "plain",
        &format!("/sql?url=postgres://app_shop:x@{server}/app_shop&q=select%201"),
    );
    assert!(refused.contains("Connection refused"), "{refused}");

    // The password is a secret: sealed at rest, listed by name only.
    let url = body(&p, "shop", "/env?name=DATABASE_URL");
    let password = url
        .split_once("app_shop:")
        .and_then(|(_, rest)| rest.split_once('@'))
        .map(|(pw, _)| pw.to_string())
        .expect("password in DATABASE_URL");
    assert_eq!(
        p.json(&["secrets", "list", "shop"])[0]["name"],
        "DATABASE_URL"
    );
    let found = files_holding(p.data.path(), &password);
    assert!(
        found.is_empty(),
        "database password in plaintext in:\n{found}"
    );

    // One database per app.
    let err = p.fails(&["db", "create", "shop"]);
    assert!(err.contains("already has a database"), "{err}");
    let err = p.fails(&["db", "create", "nosuchapp"]);
    assert!(err.contains("does not exist"), "{err}");

    // Backup, lose the row, restore: the row is back.
    let backup = p.json(&["db", "backup", "shop"]);
    let id = backup["id"].as_str().expect("id").to_string();
    assert_eq!(
        sql(&p, "shop", "delete from notes; select count(*) from notes"),
        "0\n"
    );
    p.ok(&["db", "restore", "shop", &id]);
    assert_eq!(select(&p, "shop", "select t from notes"), "kept\n");
    let err = p.fails(&["db", "restore", "shop", "no-such-backup"]);
    assert!(err.contains("no backup"), "{err}");

    // The database outlives the control plane, and the administrator's psql sees the rows.
    p.kill_control_plane();
    assert_eq!(select(&p, "shop", "select t from notes"), "kept\n");
    p.up();
    let out = p.ok(&[
        "db",
        "psql",
        "shop",
        "--",
        "-At",
        "-c",
        "select count(*) from notes",
    ]);
    assert_eq!(out.trim(), "1");

    // Destroying the app drops its database.
    p.ok(&["destroy", "shop"]);
    let gone = answer(&p, "blog", "/sql?db=app_shop&q=select%201");
    assert!(gone.contains("does not exist"), "{gone}");
}

#[test]
fn one_call_creates_an_app_with_everything_or_nothing_and_retries_create_nothing_twice() {
    let p = Platform::start();
    let work = tempfile::tempdir().expect("tempdir");
    let create = [
        "create",
        "shop",
        "--domain",
        "Shop.Example.TEST",
        "--secret",
        "API_KEY=ak-0c0ffee1",
        "--volume",
        "data:64M:/data",
        "--database",
        "--idempotency-key",
        "create-shop-1",
    ];
    let first = p.json(&create);
    assert_eq!(first["name"], "shop", "{first}");
    assert_eq!(first["domains"][0]["name"], "shop.example.test", "{first}");
    assert_eq!(
        first["secrets"],
        serde_json::json!(["API_KEY", "DATABASE_URL"])
    );
    assert_eq!(first["volumes"][0]["name"], "data", "{first}");
    assert_eq!(first["database"], "app_shop", "{first}");
    assert!(
        !first.to_string().contains("ak-0c0ffee1"),
        "no secret value in the answer"
    );

    // The same call again (a retry) answers the same and creates nothing twice.
    assert_eq!(p.json(&create), first);
    assert_eq!(
        p.json(&["volumes", "list", "shop"])
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(
        p.json(&["secrets", "list", "shop"])
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    // The key reused for another request, or the app created again without one: refused.
    let err = p.fails(&[
        "create",
        "shop",
        "--database",
        "--idempotency-key",
        "create-shop-1",
    ]);
    assert!(err.contains("different request"), "{err}");
    let err = p.fails(&["create", "shop"]);
    assert!(err.contains("already exists"), "{err}");

    // Deployed, it has all of it.
    let dir = app_dir(work.path(), "shop", "");
    p.ok(&["deploy", &dir.display().to_string()]);
    assert_eq!(body(&p, "shop", "/env?name=API_KEY"), "ak-0c0ffee1");
    assert_eq!(body(&p, "shop", "/write?name=f&bytes=1048576"), "ok\n");
    assert_eq!(select(&p, "shop", "SELECT 6*7").trim(), "42");
    let ca = work.path().join("ca.pem");
    p.ok(&["ca", "export", "--out", ca.to_str().expect("path")]);
    let https = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&ca)
        .args([
            "--resolve",
            &format!("shop.example.test:{}:127.0.0.1", p.tls_port),
        ])
        .arg(format!(
            "https://shop.example.test:{}/env?name=API_KEY",
            p.tls_port
        ))
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&https.stdout),
        "ak-0c0ffee1",
        "{https:?}"
    );

    // A failure half-way leaves nothing: the database server refuses "clash"'s database
    // because one of that name is already there.
    p.ok(&[
        "db",
        "psql",
        "shop",
        "--",
        "-c",
        "CREATE DATABASE app_clash",
    ]);
    let apps_before = p.json(&["apps"]);
    let err = p.fails(&[
        "create",
        "clash",
        "--domain",
        "clash.example.test",
        "--secret",
        "K=v-12345678",
        "--volume",
        "data:64M:/data",
        "--database",
    ]);
    assert!(
        err.contains("nothing was created") && err.contains("app_clash"),
        "{err}"
    );
    assert_eq!(p.json(&["apps"]), apps_before, "no app");
    let leftovers = std::fs::read_dir(p.data.path().join("volumes/clash"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "no volume");
    let roles = p.ok(&[
        "db",
        "psql",
        "shop",
        "--",
        "-At",
        "-c",
        "SELECT count(*) FROM pg_roles WHERE rolname = 'app_clash'",
    ]);
    assert_eq!(roles.trim(), "0", "no role");
    // The domain is free again.
    p.ok(&["domains", "add", "shop", "clash.example.test"]);

    // Bad input is refused before anything is made, every problem named.
    let err = p.fails(&[
        "create",
        "bad",
        "--secret",
        "1X=v",
        "--volume",
        "data:10potatoes:/data",
        "--volume",
        "logs:0:/proc",
        "--domain",
        "not a domain",
    ]);
    for part in [
        "not an environment variable name",
        "not a size",
        "/proc",
        "not a valid host name",
    ] {
        assert!(err.contains(part), "{part}: {err}");
    }
    assert_eq!(p.json(&["apps"]), apps_before);
}

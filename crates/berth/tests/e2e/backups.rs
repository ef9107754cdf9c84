//! End-to-end: platform backups. A disaster drill (an app's volume bytes, database rows,
//! secret and releases → backup → the data directory wiped → restore → the same served),
//! to a local directory and to a real S3-compatible server (moto's, on loopback, standing
//! in for S3/MinIO); damaged backups, wrong passphrases and non-empty targets that must
//! change nothing; scheduled backups with retention.

use crate::common;

use common::{copy_dir, eventually, free_port, Platform};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const PASSPHRASE: &str = "drill passphrase 2026";

/// moto's S3 server on a free loopback port, stopped on drop.
struct S3Server {
    child: Child,
    port: u16,
}

impl S3Server {
    fn start() -> Self {
        let tools =
            std::env::var("BERTH_TOOLS_DIR").unwrap_or_else(|_| "/var/lib/berth-tools".into());
        let bin = PathBuf::from(tools).join("moto/bin/moto_server");
        assert!(
            bin.exists(),
            "{} is missing: run scripts/install-deps",
            bin.display()
        );
        let port = free_port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server");
        let s = Self { child, port };
        assert!(
            eventually(Duration::from_secs(30), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            }),
            "moto_server did not start"
        );
        s
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "AWS_ENDPOINT_URL".into(),
                format!("http://127.0.0.1:{}", self.port),
            ),
            ("AWS_ACCESS_KEY_ID".into(), "drill".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "drill-secret".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
        ]
    }

    fn create_bucket(&self, bucket: &str) {
        let out = Command::new("curl")
            .args([
                "-sf",
                "-X",
                "PUT",
                &format!("http://127.0.0.1:{}/{bucket}", self.port),
            ])
            .output()
            .expect("curl");
        assert!(out.status.success(), "creating bucket {bucket}: {out:?}");
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn body(p: &Platform, app: &str, path: &str) -> String {
    p.answer(app, path)
}

fn sql(p: &Platform, app: &str, q: &str) -> String {
    body(p, app, &format!("/sql?q={}", q.replace(' ', "%20")))
}

fn with_env(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn run(p: &Platform, args: &[&str], env: &[(String, String)]) -> std::process::Output {
    p.berth_env(args, &with_env(env))
}

fn ok(p: &Platform, args: &[&str], env: &[(String, String)]) -> String {
    let out = run(p, args, env);
    assert!(
        out.status.success(),
        "berth {args:?} failed:\nstdout: {}\nstderr: {}\nberth up:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        p.up_log()
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn fails(p: &Platform, args: &[&str], env: &[(String, String)]) -> String {
    let out = run(p, args, env);
    assert!(
        !out.status.success(),
        "berth {args:?} should have failed:\nstdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Stops everything of the platform (control plane, apps, edge, database server, mounts).
fn stop(p: &mut Platform) {
    p.kill_control_plane();
    p.ok(&["down"]);
}

/// Every entry of a directory, for "nothing changed" checks.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_platform_comes_back_from_a_backup_after_its_data_directory_is_lost() {
    let s3 = S3Server::start();
    s3.create_bucket("berth-drill");
    let env = s3.env();
    let work = tempfile::tempdir().expect("tempdir");
    let pass_file = work.path().join("passphrase");
    std::fs::write(&pass_file, format!("{PASSPHRASE}\n")).expect("passphrase");
    let pass = pass_file.display().to_string();
    let local = work.path().join("backups");
    let scheduled = work.path().join("scheduled");
    let mut p = Platform::start_env(
        None,
        &[
            "--backup-to",
            &scheduled.display().to_string(),
            "--backup-every",
            "3s",
            "--backup-passphrase-file",
            &pass,
            "--backup-keep-daily",
            "1",
            "--backup-keep-weekly",
            "0",
        ],
        &with_env(&env),
    );

    // An app with a volume, a database and a secret, holding data.
    p.ok(&[
        "create",
        "vault",
        "--volume",
        "data:48M:/data",
        "--database",
        "--secret",
        "TOKEN=tk-5e1f-drill",
    ]);
    let dir = work.path().join("vault");
    copy_dir(&common::fixture("stateful"), &dir);
    std::fs::write(dir.join("berth.toml"), "name = \"vault\"\n").expect("toml");
    p.ok(&["deploy", &dir.display().to_string()]);
    assert_eq!(body(&p, "vault", "/write?name=blob&bytes=3000000"), "ok\n");
    assert_eq!(
        sql(
            &p,
            "vault",
            "create table notes (t text); insert into notes values ('kept'); select t from notes"
        ),
        "kept\n"
    );
    let releases_before = p.json(&["releases", "vault"]);

    // Backups to a directory and to S3, while the app serves.
    let b = p.json(&[
        "backup",
        "create",
        "--to",
        &local.display().to_string(),
        "--passphrase-file",
        &pass,
    ]);
    assert_eq!(b["apps"], serde_json::json!(["vault"]), "{b}");
    assert_eq!(b["volumes"], serde_json::json!(["vault/data"]), "{b}");
    assert_eq!(b["databases"], serde_json::json!(["vault"]), "{b}");
    let local_id = b["id"].as_str().expect("id").to_string();
    let out = ok(
        &p,
        &[
            "--json",
            "backup",
            "create",
            "--to",
            "s3://berth-drill/nightly",
            "--passphrase-file",
            &pass,
        ],
        &env,
    );
    let s3_backup: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(s3_backup["location"], "s3://berth-drill/nightly");

    // A bucket that does not exist, and a short passphrase, are named.
    let err = fails(
        &p,
        &[
            "backup",
            "create",
            "--to",
            "s3://no-such-bucket/x",
            "--passphrase-file",
            &pass,
        ],
        &env,
    );
    assert!(err.contains("s3://no-such-bucket/x"), "{err}");
    let mut short = env.clone();
    short.push(("BERTH_BACKUP_PASSPHRASE".into(), "short".into()));
    let err = fails(
        &p,
        &["backup", "create", "--to", &local.display().to_string()],
        &short,
    );
    assert!(err.contains("at least 12 characters"), "{err}");
    assert_eq!(
        p.json(&["backup", "list", &local.display().to_string()])
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // Nothing of the secret in the backup in plaintext.
    let grep = Command::new("grep")
        .args(["-r", "-a", "-l", "-F", "tk-5e1f-drill"])
        .arg(&local)
        .output()
        .expect("grep");
    assert!(
        grep.stdout.is_empty(),
        "secret in plaintext in the backup: {grep:?}"
    );

    // Changes after the backup are not in it.
    assert_eq!(body(&p, "vault", "/write?name=blob&bytes=1000000"), "ok\n");
    sql(&p, "vault", "insert into notes values ('after'); select 1");

    // list and verify, from both places; a wrong passphrase is refused.
    let listed = p.json(&["backup", "list", &local.display().to_string()]);
    assert_eq!(listed[0]["id"], local_id.as_str(), "{listed}");
    let out = ok(
        &p,
        &["--json", "backup", "list", "s3://berth-drill/nightly"],
        &env,
    );
    let listed: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let out = ok(
        &p,
        &[
            "backup",
            "verify",
            "s3://berth-drill/nightly",
            "--passphrase-file",
            &pass,
        ],
        &env,
    );
    assert!(
        out.contains("intact") && out.contains("the passphrase opens it"),
        "{out}"
    );
    let wrong = work.path().join("wrong");
    std::fs::write(&wrong, "not the drill passphrase").expect("wrong");
    let err = p.fails(&[
        "backup",
        "verify",
        &local.display().to_string(),
        "--passphrase-file",
        &wrong.display().to_string(),
    ]);
    assert!(err.contains("passphrase does not open"), "{err}");

    // A damaged copy is refused by verify and by restore, which changes nothing.
    let damaged = work.path().join("damaged");
    copy_dir(&local, &damaged);
    let part = damaged.join(&local_id).join("volumes/vault/data.tar.zst");
    let mut bytes = std::fs::read(&part).expect("part");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&part, bytes).expect("damage");
    let err = p.fails(&["backup", "verify", &damaged.display().to_string()]);
    assert!(
        err.contains("damaged") && err.contains("volumes/vault/data.tar.zst"),
        "{err}"
    );
    let elsewhere = work.path().join("elsewhere");
    let out = Command::new(common::berth_bin())
        .arg("--data-dir")
        .arg(&elsewhere)
        .args([
            "backup",
            "restore",
            &damaged.display().to_string(),
            "--passphrase-file",
            &pass,
        ])
        .output()
        .expect("berth");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("damaged"), "{err}");
    assert!(
        listing(&elsewhere).is_empty(),
        "a failed restore left {:?}",
        listing(&elsewhere)
    );
    assert!(
        listing(work.path())
            .iter()
            .all(|n| !n.contains(".restore-")),
        "{:?}",
        listing(work.path())
    );

    // A restore onto the running platform is refused.
    let err = p.fails(&[
        "backup",
        "restore",
        &local.display().to_string(),
        "--passphrase-file",
        &pass,
    ]);
    assert!(err.contains("berth is running"), "{err}");

    // Scheduled backups run, and retention keeps the newest of the day.
    assert!(
        eventually(Duration::from_secs(120), || p
            .up_log()
            .matches("backup written")
            .count()
            >= 4),
        "scheduled backups did not run:\n{}",
        p.up_log()
    );
    let kept = p.json(&["backup", "list", &scheduled.display().to_string()]);
    assert_eq!(
        kept.as_array().map(Vec::len),
        Some(1),
        "keep-daily 1 keeps one: {kept}"
    );

    // The disaster: the platform stops and its data directory is lost.
    stop(&mut p);
    let data = p.data.path().to_path_buf();
    for e in std::fs::read_dir(&data).expect("data").flatten() {
        let path = e.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).expect("wipe");
        } else {
            std::fs::remove_file(&path).expect("wipe");
        }
    }

    // Restore from S3 onto the empty data directory; the platform serves the same again.
    let out = ok(
        &p,
        &[
            "backup",
            "restore",
            "s3://berth-drill/nightly",
            "--passphrase-file",
            &pass,
        ],
        &env,
    );
    assert!(
        out.contains("1 app(s), 1 volume(s), 1 database(s)"),
        "{out}"
    );
    p.up();
    let blob = body(&p, "vault", "/read?name=blob");
    assert_eq!(
        blob.len(),
        3_000_000,
        "the volume's bytes as they were at the backup"
    );
    assert!(blob.bytes().all(|b| b == b'x'));
    assert_eq!(sql(&p, "vault", "select t from notes order by t"), "kept\n");
    assert_eq!(body(&p, "vault", "/env?name=TOKEN"), "tk-5e1f-drill");
    assert_eq!(p.json(&["releases", "vault"]), releases_before);

    // Restoring over a platform's data needs --force, and keeps what was there aside.
    stop(&mut p);
    let before = listing(&data);
    let err = p.fails(&[
        "backup",
        "restore",
        &local.display().to_string(),
        "--passphrase-file",
        &pass,
    ]);
    assert!(
        err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        listing(&data),
        before,
        "a refused restore changed the data directory"
    );
    let out = p.ok(&[
        "backup",
        "restore",
        &local.display().to_string(),
        &local_id,
        "--passphrase-file",
        &pass,
        "--force",
    ]);
    let aside = out
        .lines()
        .find_map(|l| l.strip_prefix("what was there before is in "))
        .expect("moved aside")
        .to_string();
    assert!(Path::new(&aside).join("berth.db").exists(), "{aside}");
    p.up();
    assert_eq!(body(&p, "vault", "/read?name=blob").len(), 3_000_000);
    assert_eq!(sql(&p, "vault", "select count(*) from notes"), "1\n");
    stop(&mut p);
    let _ = std::fs::remove_dir_all(&aside);
}

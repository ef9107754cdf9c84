//! End-to-end: the real `berth` binary, real crun containers, real builds that download
//! from the package registries, traffic through berth's edge on loopback.

use crate::common;

use common::{copy_dir, eventually, examples, http_get, Platform};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn deploy(p: &Platform, dir: &std::path::Path, extra: &[&str]) -> String {
    let d = dir.display().to_string();
    let mut args = vec!["deploy", d.as_str()];
    args.extend_from_slice(extra);
    p.ok(&args)
}

#[test]
fn every_example_builds_deploys_and_answers_through_the_edge() {
    let p = Platform::start();
    for (app, expect) in [
        ("static-site", "Static site served by berth"),
        ("python-app", "python-app on bottle 0.13.2"),
        ("node-app", "node-app up for"),
        ("rust-app", "rust-app served request"),
        ("hello", "Hello from berth! release=v1"),
    ] {
        let out = deploy(&p, &examples().join(app), &[]);
        assert!(
            out.contains(&format!("http://{app}.localhost:{}/", p.edge_port)),
            "{out}"
        );
        let (status, body) = p.get(app, "/");
        assert_eq!(status, 200, "{app}: {body}");
        assert!(body.contains(expect), "{app}: {body}");
    }
    // Images are OCI image layouts that standard tools accept.
    let apps = p.json(&["apps"]);
    assert_eq!(apps.as_array().map(|a| a.len()), Some(5));
    let releases = p.json(&["releases", "python-app"]);
    let tag = releases[0]["image"]["tag"]
        .as_str()
        .expect("tag")
        .to_string();
    let layout = p.data.path().join("images/python-app");
    let out = std::process::Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:{tag}", layout.display()))
        .output()
        .expect("skopeo is installed (apt-get install skopeo)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("skopeo json");
    assert_eq!(info["Labels"]["dev.berth.process.web"], "python app.py");
    // Build logs are kept, runtime logs are captured.
    let build_log = p.ok(&["logs", "python-app", "--build"]);
    assert!(
        build_log.contains("Successfully installed bottle"),
        "{build_log}"
    );
    assert!(eventually(Duration::from_secs(5), || p
        .ok(&["logs", "hello"])
        .contains("hello listening on port 8000")));
    // Unknown hosts get berth's 404 page.
    let (status, body) = p.get("nothing-here", "/");
    assert_eq!(status, 404);
    assert!(body.contains("No app is deployed"), "{body}");
    // A second deploy of unchanged source reuses the image; destroy removes everything.
    let again = deploy(&p, &examples().join("rust-app"), &[]);
    assert!(again.contains("v2"), "{again}");
    p.ok(&["destroy", "rust-app"]);
    assert_eq!(p.get("rust-app", "/").0, 404);
    assert!(!layout.with_file_name("rust-app").exists());
    assert_eq!(p.json(&["apps"]).as_array().map(|a| a.len()), Some(4));
}

#[test]
fn ten_redeploys_under_continuous_traffic_fail_no_request() {
    let p = Platform::start();
    deploy(&p, &examples().join("hello"), &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, port) = (stop.clone(), ok.clone(), failed.clone(), p.edge_port);
        workers.push(std::thread::spawn(move || {
            let started = Instant::now();
            // Bounded: stops when told, after 120 s, or after 200k requests.
            while !stop.load(Ordering::SeqCst)
                && started.elapsed() < Duration::from_secs(120)
                && ok.load(Ordering::SeqCst) < 200_000
            {
                match http_get(port, "hello.localhost", "/") {
                    Ok((200, body)) if body.contains("Hello from berth") => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    other => failed.lock().expect("lock").push(format!("{other:?}")),
                }
            }
        }));
    }
    for _ in 0..10 {
        deploy(&p, &examples().join("hello"), &[]);
    }
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().expect("worker");
    }
    let failed = failed.lock().expect("lock");
    assert!(
        failed.is_empty(),
        "{} failed requests, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        ok.load(Ordering::SeqCst) > 100,
        "too little traffic to prove anything"
    );
    let (_, body) = p.get("hello", "/");
    assert!(body.contains("release=v11"), "{body}");
    // Old instances were drained: only the serving release runs.
    assert!(eventually(Duration::from_secs(15), || {
        let ps = p.json(&["ps", "hello"]);
        ps.as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["release"] == 11)
    }));
}

#[test]
fn failed_deploys_leave_the_previous_release_serving_and_rollback_restores() {
    let p = Platform::start();
    deploy(&p, &examples().join("hello"), &[]);
    let before = p.json(&["ps", "hello"]);

    // A web process that never listens fails its health check.
    let tmp = tempfile::tempdir().expect("tmp");
    let silent = tmp.path().join("silent");
    copy_dir(&examples().join("hello"), &silent);
    std::fs::write(silent.join("Procfile"), "web: sleep 600\n").expect("write");
    std::fs::write(
        silent.join("berth.toml"),
        "name = \"hello\"\n[health]\ntimeout_secs = 2\n",
    )
    .expect("write");
    let err = p.fails(&["deploy", silent.to_str().expect("path")]);
    assert!(err.contains("did not pass its health check"), "{err}");
    // One that exits at once fails with its exit code and output.
    let crashing = tmp.path().join("crashing");
    copy_dir(&examples().join("hello"), &crashing);
    std::fs::write(
        crashing.join("Procfile"),
        "web: echo missing config >&2; exit 4\n",
    )
    .expect("write");
    let err = p.fails(&["deploy", crashing.to_str().expect("path")]);
    assert!(err.contains("exited with code 4"), "{err}");
    assert!(err.contains("missing config"), "{err}");
    // A failing release command fails the deploy too.
    let release_fails = tmp.path().join("release-fails");
    copy_dir(&examples().join("hello"), &release_fails);
    std::fs::write(
        release_fails.join("Procfile"),
        "web: python3 app.py\nrelease: echo migrating; exit 2\n",
    )
    .expect("write");
    let err = p.fails(&["deploy", release_fails.to_str().expect("path")]);
    assert!(err.contains("release command exited with code 2"), "{err}");
    assert!(err.contains("migrating"), "{err}");

    let (status, body) = p.get("hello", "/");
    assert_eq!(
        (status, body.contains("release=v1")),
        (200, true),
        "{body}\nps: {}\nberth up:\n{}",
        p.json(&["ps", "hello"]),
        p.up_log()
    );
    assert_eq!(
        p.json(&["ps", "hello"]),
        before,
        "the serving instance was not touched"
    );
    let releases = p.json(&["releases", "hello"]);
    let statuses: Vec<&str> = releases
        .as_array()
        .expect("list")
        .iter()
        .map(|r| r["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(statuses, ["failed", "failed", "failed", "active"]);

    // Config change: a new release, same image.
    let out = p.ok(&["env", "set", "hello", "GREETING=Howdy"]);
    assert!(out.contains("v5"), "{out}");
    assert!(p
        .get("hello", "/")
        .1
        .contains("Howdy from berth! release=v5"));
    assert!(p.ok(&["env", "list", "hello"]).contains("GREETING=Howdy"));
    // Rollback: back to v1's image and config, as a new release, without a build.
    let out = p.ok(&["rollback", "hello"]);
    assert!(out.contains("v6"), "{out}");
    let (_, body) = p.get("hello", "/");
    assert!(body.contains("Hello from berth! release=v6"), "{body}");
    let releases = p.json(&["releases", "hello"]);
    assert_eq!(releases[0]["description"], "rollback to v1");
    assert_eq!(releases[0]["image"], releases[5]["image"]);
    assert!(releases[0]["actor"]
        .as_str()
        .is_some_and(|a| a.contains('@')));
    // Rolling back to a failed release is refused.
    let err = p.fails(&["rollback", "hello", "--to", "2"]);
    assert!(err.contains("failed to deploy"), "{err}");
    // v1 had no GREETING: unsetting it now is an error that changes nothing.
    let err = p.fails(&["env", "unset", "hello", "GREETING"]);
    assert!(err.contains("GREETING is not set"), "{err}");
    p.ok(&["env", "set", "hello", "GREETING=Hi", "OTHER=1"]);
    p.ok(&["env", "unset", "hello", "GREETING"]);
    assert!(p
        .get("hello", "/")
        .1
        .contains("Hello from berth! release=v8"));
    assert_eq!(p.json(&["env", "list", "hello"])["OTHER"], "1");
}

#[test]
fn crashed_apps_restart_and_apps_survive_a_killed_control_plane() {
    let mut p = Platform::start();
    deploy(&p, &examples().join("hello"), &[]);
    let _ = p.get("hello", "/crash");
    assert!(
        eventually(Duration::from_secs(20), || {
            let ps = p.json(&["ps", "hello"]);
            ps[0]["restarts"] == 1 && ps[0]["last_exit"] == 3 && ps[0]["state"] == "running"
        }),
        "{}",
        p.json(&["ps", "hello"])
    );
    assert!(eventually(Duration::from_secs(10), || p
        .get("hello", "/")
        .0
        == 200));
    assert!(eventually(Duration::from_secs(5), || p
        .ok(&["logs", "hello"])
        .contains("exited with code 3")));

    let before = p.json(&["ps", "hello"]);
    p.kill_control_plane();
    // The data plane does not need the control plane.
    for _ in 0..20 {
        assert_eq!(p.get("hello", "/").0, 200);
    }
    p.up();
    assert!(eventually(Duration::from_secs(10), || p
        .json(&["ps", "hello"])
        == before));
    // No duplicate or orphaned containers.
    let out = std::process::Command::new("crun")
        .arg("--root")
        .arg(p.data.path().join("run/crun"))
        .args(["list", "-q"])
        .output()
        .expect("crun");
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(ids, [before[0]["id"].as_str().expect("id").to_string()]);
    assert_eq!(p.get("hello", "/").0, 200);
    // And the adopted platform still deploys.
    assert!(deploy(&p, &examples().join("hello"), &[]).contains("v2"));
}

#[test]
fn git_checkouts_are_tagged_with_their_commit() {
    let p = Platform::start();
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = tmp.path().join("site");
    copy_dir(&examples().join("static-site"), &repo);
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["-c", "user.email=dev@example.com", "-c", "user.name=Dev"])
            .args(args)
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "first"]);
    let sha = git(&["rev-parse", "HEAD"]);
    deploy(&p, &repo, &[]);
    let releases = p.json(&["releases", "site"]);
    assert_eq!(releases[0]["image"]["tag"], sha.as_str());
    assert_eq!(
        releases[0]["description"],
        format!("deploy of commit {}", &sha[..12])
    );
    // The image is in the app's OCI layout under that tag.
    let out = std::process::Command::new("skopeo")
        .arg("inspect")
        .arg(format!(
            "oci:{}:{sha}",
            p.data.path().join("images/site").display()
        ))
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A dirty checkout is tagged by content instead: the commit would not describe it.
    std::fs::write(repo.join("extra.html"), "<p>uncommitted</p>").expect("write");
    deploy(&p, &repo, &[]);
    let releases = p.json(&["releases", "site"]);
    assert!(releases[0]["image"]["tag"]
        .as_str()
        .is_some_and(|t| t.starts_with("sha256-")));
    assert_eq!(p.get("site", "/extra.html").1, "<p>uncommitted</p>");
}

/// Ids of the containers a runtime keeps under a platform's data dir.
fn containers(p: &Platform, runtime: &str, list_flag: &str) -> Vec<String> {
    let out = std::process::Command::new(runtime)
        .arg("--root")
        .arg(p.data.path().join("run").join(runtime))
        .args(["list", list_flag])
        .output()
        .expect("runtime");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn sandboxed_apps_build_and_run_in_gvisor_restart_and_outlive_the_control_plane() {
    let mut p = Platform::start_with(&["--default-isolation", "sandbox"]);
    // hello's berth.toml does not choose: the platform's default applies. A (empty)
    // requirements.txt gives it a build step: a virtualenv made inside the sandbox.
    let tmp = tempfile::tempdir().expect("tmp");
    let hello = tmp.path().join("hello");
    copy_dir(&examples().join("hello"), &hello);
    std::fs::write(hello.join("requirements.txt"), "").expect("requirements.txt");
    let out = deploy(&p, &hello, &[]);
    assert!(out.contains("Release v1 is serving"), "{out}");
    let build_log = p.ok(&["logs", "hello", "--build"]);
    assert!(
        build_log.contains("Building in a gVisor sandbox"),
        "{build_log}"
    );
    assert_eq!(p.json(&["apps"])[0]["isolation"], "sandbox");
    assert!(p.ok(&["apps"]).contains("sandbox"));
    let id = p.json(&["ps", "hello"])[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(containers(&p, "runsc", "-quiet"), std::slice::from_ref(&id));
    assert!(containers(&p, "crun", "-q").is_empty());
    assert!(p
        .get("hello", "/")
        .1
        .contains("Hello from berth! release=v1"));

    // A crash inside the sandbox is seen, reported and restarted.
    let _ = p.get("hello", "/crash");
    assert!(
        eventually(Duration::from_secs(30), || {
            let ps = p.json(&["ps", "hello"]);
            ps[0]["restarts"] == 1 && ps[0]["last_exit"] == 3 && ps[0]["state"] == "running"
        }),
        "{}",
        p.json(&["ps", "hello"])
    );
    assert!(eventually(Duration::from_secs(15), || p
        .get("hello", "/")
        .0
        == 200));

    // Sandboxes run in their own session: they outlive the control plane, which adopts
    // them again.
    let before = p.json(&["ps", "hello"]);
    p.kill_control_plane();
    for _ in 0..10 {
        assert_eq!(p.get("hello", "/").0, 200);
    }
    p.up();
    assert!(eventually(Duration::from_secs(10), || p
        .json(&["ps", "hello"])
        == before));
    assert_eq!(containers(&p, "runsc", "-quiet"), [id]);

    // An app may still choose to be trusted on a sandboxing platform.
    let dir = tmp.path().join("plain");
    copy_dir(&examples().join("hello"), &dir);
    std::fs::write(
        dir.join("berth.toml"),
        "name = \"plain\"\nisolation = \"trusted\"\n",
    )
    .expect("berth.toml");
    deploy(&p, &dir, &[]);
    assert_eq!(containers(&p, "crun", "-q").len(), 1);
    assert_eq!(p.get("plain", "/").0, 200);
}

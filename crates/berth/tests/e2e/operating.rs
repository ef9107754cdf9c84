//! End-to-end: operating berth on a machine. `berth doctor` checks the host and names the
//! fix of each problem; `berth status` sees the whole platform of a data directory, also
//! when it is down; `berth down` stops all of it, the control plane included; completions
//! and man pages come from the CLI itself.

use crate::common;

use common::{berth_bin, Platform};
use std::time::Duration;

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {report}"))
}

#[test]
fn doctor_status_and_down_see_the_whole_platform() {
    let mut p = Platform::start();
    let ports = [
        "--api-port".to_string(),
        p.api_port.to_string(),
        "--edge-port".to_string(),
        p.edge_port.to_string(),
        "--edge-tls-port".to_string(),
        p.tls_port.to_string(),
    ];
    let mut args = vec!["doctor"];
    args.extend(ports.iter().map(String::as_str));

    // This machine has what berth needs; the platform's own ports are its own.
    let doctor = p.json(&args);
    assert_eq!(doctor["healthy"], true, "{doctor}");
    for name in [
        "privileges",
        "crun",
        "runsc",
        "nftables",
        "iproute2",
        "cgroups",
    ] {
        assert_eq!(check(&doctor, name)["level"], "ok", "{doctor}");
    }
    let api = check(&doctor, &format!("port {}", p.api_port));
    assert!(
        api["detail"]
            .as_str()
            .is_some_and(|d| d.contains("berth runs")),
        "{api}"
    );

    // Without the tools on PATH: each missing one named with its package, exit 1.
    let out = p.berth_env(&args, &[("PATH", "/nonexistent")]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "crun not found",
        "apt-get install crun",
        "apt-get install nftables",
        "apt-get install runsc",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }

    // Status of a running platform with an app.
    p.ok(&[
        "deploy",
        &common::fixture("stateful").display().to_string(),
        "--app",
        "op",
    ]);
    let status = p.json(&["status"]);
    assert_eq!(status["healthy"], true, "{status}");
    for name in [
        "control plane",
        "edge",
        "runtime trusted",
        "bridge",
        "firewall",
        "disk",
    ] {
        assert_eq!(check(&status, name)["level"], "ok", "{status}");
    }
    assert!(
        check(&status, "bridge")["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&p.bridge) && d.contains("1 instance port")),
        "{status}"
    );
    let table = p.ok(&["status"]);
    assert!(
        table.contains("CHECK") && table.contains("control plane"),
        "{table}"
    );

    // A bridge deleted by hand: status tells, with the way back.
    let del = std::process::Command::new("ip")
        .args(["link", "del", &p.bridge])
        .status()
        .expect("ip");
    assert!(del.success());
    let out = p.berth(&["--json", "status"]);
    assert_eq!(out.status.code(), Some(1));
    let broken: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let bridge = check(&broken, "bridge");
    assert_eq!(bridge["level"], "fail", "{broken}");
    assert!(
        bridge["detail"]
            .as_str()
            .is_some_and(|d| d.contains("does not exist"))
            && bridge["fix"]
                .as_str()
                .is_some_and(|f| f.contains("berth down, then berth up")),
        "{bridge}"
    );
    assert_eq!(check(&broken, "control plane")["level"], "ok", "{broken}");

    // `berth down` stops all of it, the control plane first.
    let down = p.ok(&["down"]);
    assert!(down.contains("stopped the control plane"), "{down}");
    assert!(common::eventually(Duration::from_secs(10), || p.up_exited()));
    std::thread::sleep(Duration::from_secs(2));
    let out = p.berth(&["--json", "status"]);
    assert_eq!(out.status.code(), Some(1));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    for name in ["control plane", "edge", "bridge", "firewall"] {
        assert_eq!(check(&status, name)["level"], "fail", "{status}");
    }
    assert!(
        check(&status, "control plane")["fix"]
            .as_str()
            .is_some_and(|f| f.contains("berth up")),
        "{status}"
    );
    assert!(
        !std::path::Path::new(&format!("/sys/class/net/{}", p.bridge)).exists(),
        "nothing restarted behind down"
    );

    // A data directory no platform ran from.
    let empty = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(berth_bin())
        .arg("--data-dir")
        .arg(empty.path())
        .arg("status")
        .output()
        .expect("status");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no platform ran from"));
}

#[test]
fn completions_and_man_pages_come_from_the_cli() {
    let run = |args: &[&str]| {
        std::process::Command::new(berth_bin())
            .args(args)
            .output()
            .expect("berth")
    };
    for (shell, marker) in [
        ("bash", "_berth()"),
        ("zsh", "#compdef berth"),
        ("fish", "complete -c berth"),
    ] {
        let out = run(&["completions", shell]);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(marker),
            "{shell}: {}",
            &text[..text.len().min(300)]
        );
        assert!(text.contains("deploy") && text.contains("drill"), "{shell}");
    }
    let out = run(&["completions", "tcsh"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values"));

    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(&["man", "--out", &dir.path().display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let main = std::fs::read_to_string(dir.path().join("berth.1")).expect("berth.1");
    assert!(
        main.contains(".TH berth"),
        "{}",
        &main[..200.min(main.len())]
    );
    let deploy = std::fs::read_to_string(dir.path().join("berth-deploy.1")).expect("deploy");
    assert!(
        deploy.contains(r"\-\-image"),
        "the deploy page documents its flags"
    );
    assert!(dir.path().join("berth-secrets-set.1").exists());
    assert!(
        !dir.path().join("berth-container-init.1").exists(),
        "internal commands get no page"
    );
}

#[test]
fn berth_up_reads_its_config_file_under_flags_and_environment() {
    // A file with mistakes: every one named with its line, nothing started.
    let bad = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        bad.path().join("berth.toml"),
        "api-port = \"seventy\"\nedge-prot = 8081\ndefault-isolation = \"vm\"\n",
    )
    .expect("toml");
    let out = std::process::Command::new(berth_bin())
        .arg("--data-dir")
        .arg(bad.path())
        .arg("up")
        .output()
        .expect("berth up");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "has 3 problem(s); nothing was started",
        "line 1: api-port",
        "line 2: unknown setting \"edge-prot\" (did you mean \"edge-port\"?)",
        "line 3: default-isolation",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert!(!bad.path().join("api.json").exists());

    // A good one: its settings reach berth up (the harness gives the ports as flags).
    let mut p = Platform::unstarted(None, &[], &[]);
    std::fs::write(
        p.data.path().join("berth.toml"),
        "# the platform's settings\nbase-domain = \"apps.test\"\napi-port = 1\n",
    )
    .expect("toml");
    p.up();
    p.ok(&[
        "deploy",
        &common::fixture("stateful").display().to_string(),
        "--app",
        "cfg",
    ]);
    let (code, body) =
        common::http_get(p.edge_port, "cfg.apps.test", "/env?name=BERTH_APP").expect("GET");
    assert_eq!((code, body.as_str()), (200, "cfg"));

    // `berth config`: each setting's value and where it comes from.
    let shown = p.berth_env(&["--json", "config"], &[("BERTH_BRIDGE", "bx1")]);
    assert!(shown.status.success());
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("json");
    let setting = |key: &str| {
        shown["settings"]
            .as_array()
            .expect("settings")
            .iter()
            .find(|s| s["key"] == key)
            .cloned()
            .unwrap_or_else(|| panic!("{key}: {shown}"))
    };
    assert_eq!(setting("base-domain")["value"], "apps.test");
    assert!(setting("base-domain")["source"]
        .as_str()
        .is_some_and(|s| s.ends_with("berth.toml:2")));
    assert_eq!(setting("api-port")["value"], "1");
    assert_eq!(setting("bridge")["value"], "bx1");
    assert_eq!(setting("bridge")["source"], "environment (BERTH_BRIDGE)");
    assert_eq!(setting("drain-grace")["source"], "default");
}

#[test]
fn install_writes_a_valid_unit_completions_and_man_pages() {
    let run = |args: &[&str]| {
        std::process::Command::new(berth_bin())
            .args(args)
            .output()
            .expect("berth")
    };
    // This machine does not run systemd: a clear refusal, nothing written.
    if !std::path::Path::new("/run/systemd/system").exists() {
        let unit = std::path::Path::new("/etc/systemd/system/berth.service");
        let before = unit.exists();
        let out = run(&["install"]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("does not run systemd") && err.contains("--root"),
            "{err}"
        );
        assert_eq!(unit.exists(), before);
    }

    // For a package: the files under a root, the unit valid to systemd itself.
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path().display().to_string();
    let out = run(&["--data-dir", "/srv/berth", "install", "--root", &r]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit_path = root.path().join("etc/systemd/system/berth.service");
    let unit = std::fs::read_to_string(&unit_path).expect("unit");
    let bin = common::berth_bin().display().to_string();
    assert!(
        unit.contains(&format!("ExecStart={bin} --data-dir /srv/berth up")),
        "{unit}"
    );
    assert!(unit.contains("KillMode=process") && unit.contains("Restart=on-failure"));
    let verify = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit_path)
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    for f in [
        "usr/share/bash-completion/completions/berth",
        "usr/share/zsh/vendor-completions/_berth",
        "usr/share/fish/vendor_completions.d/berth.fish",
        "usr/share/man/man1/berth.1",
        "usr/share/man/man1/berth-up.1",
    ] {
        assert!(root.path().join(f).is_file(), "{f}");
    }

    // Uninstall takes all of it away again.
    let out = run(&["uninstall", "--root", &r]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!unit_path.exists());
    assert!(!root.path().join("usr/share/man/man1/berth.1").exists());
}

#[test]
fn a_data_directory_of_a_newer_berth_is_refused_and_left_alone() {
    let mut p = Platform::start();
    p.ok(&["apps"]);
    p.kill_control_plane();
    p.ok(&["down"]);
    // A newer berth's migration, as far as this one can tell.
    let db = p.data.path().join("berth.db");
    let python = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('INSERT INTO schema_migrations (version) VALUES (99)'); c.commit()")
        .arg(&db)
        .status()
        .expect("python3");
    assert!(python.success());
    let out = p
        .command(berth_bin())
        .args(p.up_args())
        .output()
        .expect("berth up");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("written by a newer berth (state schema 99"),
        "{err}"
    );
    assert!(
        !std::path::Path::new(&format!("/sys/class/net/{}", p.bridge)).exists(),
        "a refused start leaves no bridge"
    );
    assert!(
        !p.data.path().join("edge/edge.pid").exists(),
        "no edge was started"
    );
    // The store is as the newer berth left it.
    let check = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT MAX(version) FROM schema_migrations').fetchone()[0])")
        .arg(&db)
        .output()
        .expect("python3");
    assert_eq!(String::from_utf8_lossy(&check.stdout).trim(), "99");
}

#[test]
fn public_urls_are_probed_through_the_edge() {
    let p = Platform::start_with(&["--probe-interval", "1s", "--alert-for", "1s"]);
    let work = tempfile::tempdir().expect("tempdir");
    let good = work.path().join("pgood");
    common::copy_dir(&common::fixture("stateful"), &good);
    std::fs::write(
        good.join("berth.toml"),
        "[health]\npath = \"/env?name=BERTH_APP\"\n",
    )
    .expect("toml");
    p.ok(&["deploy", &good.display().to_string()]);
    // This one answers its root with a server error (it has no /data volume to count in).
    p.ok(&[
        "deploy",
        &common::fixture("stateful").display().to_string(),
        "--app",
        "pbad",
    ]);
    let urls_of = |app: &str| p.json(&["probes", app]);
    let probed = |app: &str, scheme: &str| {
        urls_of(app)
            .as_array()
            .expect("urls")
            .iter()
            .find(|u| u["url"].as_str().is_some_and(|s| s.starts_with(scheme)))
            .cloned()
    };
    assert!(
        common::eventually(Duration::from_secs(20), || {
            probed("pgood", "https://").is_some() && probed("pbad", "http://").is_some()
        }),
        "{} {}",
        urls_of("pgood"),
        p.up_log()
    );
    let http = probed("pgood", "http://").expect("http");
    assert_eq!(
        http["url"],
        format!("http://pgood.localhost:{}/env?name=BERTH_APP", p.edge_port)
    );
    let last = http["results"]
        .as_array()
        .and_then(|r| r.last())
        .cloned()
        .expect("result");
    assert_eq!(last["status"], 200, "{http}");
    assert!(last["latency_ms"].as_f64().unwrap_or(-1.0) > 0.0);
    let https = probed("pgood", "https://").expect("https");
    let last = https["results"]
        .as_array()
        .and_then(|r| r.last())
        .cloned()
        .expect("result");
    assert_eq!(last["status"], 200, "{https}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let expires = last["tls_expires_at"].as_i64().expect("certificate expiry");
    assert!(expires > now + 86_400, "{last}");

    let last_status = |app: &str| {
        probed(app, "http://")
            .and_then(|u| u["results"].as_array().and_then(|r| r.last()).cloned())
            .map(|r| r["status"].clone())
    };
    assert!(
        common::eventually(Duration::from_secs(20), || last_status("pbad")
            == Some(serde_json::json!(500))),
        "{}",
        urls_of("pbad")
    );
    let bad = probed("pbad", "http://").expect("bad");
    assert!(bad["success_ratio"].as_f64().unwrap_or(1.0) < 1.0, "{bad}");
    assert!(p.up_log().contains("probe failed"));
    let table = p.ok(&["probes", "pgood"]);
    assert!(
        table.contains("CERT EXPIRES") && table.contains("days"),
        "{table}"
    );
    let err = p.fails(&["probes", "nope"]);
    assert!(err.contains("nope"), "{err}");

    // The results are metrics (as blackbox_exporter names them) and a failing URL pages.
    let token = common::admin_token(&p);
    let (code, metrics) = common::curl(&p, &token, "GET", "/metrics", &[]);
    assert_eq!(code, 200, "{metrics}");
    let port = p.edge_port;
    for sample in [
        format!("berth_probe_success{{app=\"pgood\",url=\"http://pgood.localhost:{port}/env?name=BERTH_APP\"}} 1"),
        format!("berth_probe_success{{app=\"pbad\",url=\"http://pbad.localhost:{port}/\"}} 0"),
        format!("berth_probe_http_status_code{{app=\"pbad\",url=\"http://pbad.localhost:{port}/\"}} 500"),
    ] {
        assert!(metrics.contains(&sample), "missing {sample} in\n{metrics}");
    }
    assert!(metrics.contains("berth_probe_ssl_earliest_cert_expiry{app=\"pgood\""));
    let alert = |app: &str| {
        p.json(&["alerts", "--all"])
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .find(|a| a["app"] == app && a["name"] == "probe_failing")
    };
    assert!(
        common::eventually(Duration::from_secs(30), || alert("pbad").is_some()),
        "{}",
        p.json(&["alerts", "--all"])
    );
    let a = alert("pbad").expect("alert");
    assert!(a["resolved_at"].is_null(), "{a}");
    assert!(
        a["summary"].as_str().unwrap_or("").contains("HTTP 500"),
        "{a}"
    );
    assert!(alert("pgood").is_none());
}

#[test]
fn output_cut_short_by_its_reader_ends_quietly() {
    use std::io::Read;
    let mut child = std::process::Command::new(berth_bin())
        .args(["completions", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("berth");
    // Read a little, then hang up, as `| head -1` does.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).expect("some output");
    drop(stdout);
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        matches!(out.status.code(), Some(0) | Some(141)),
        "{:?}",
        out.status
    );
}

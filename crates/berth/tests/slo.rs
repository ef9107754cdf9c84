//! End-to-end: an SLO drill. An app starts answering 500s to half its requests under a
//! steady load → berth's page alert fires; a rollback → the page resolves (the budget it
//! ate keeps a ticket open). The windows are shortened by configuration
//! (`--slo-time-scale`), not by another code path. The rules berth exports for Prometheus
//! pass `promtool check rules` and load into a real Prometheus.

mod common;

use common::{copy_dir, eventually, free_port, Platform};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flaky")
}

fn alerts(p: &Platform) -> Vec<serde_json::Value> {
    p.json(&["alerts", "--all"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn firing(p: &Platform, name: &str) -> bool {
    alerts(p)
        .iter()
        .any(|a| a["name"] == name && a["resolved_at"].is_null())
}

#[test]
fn a_failing_release_pages_and_a_rollback_resolves_it() {
    // 1h becomes 18 s and 5m 1.5 s; the counters are sampled twice a second.
    let p = Platform::start_with(&[
        "--slo-time-scale",
        "0.005",
        "--slo-sample-interval",
        "500ms",
    ]);
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("flaky");
    copy_dir(&fixture(), &dir);

    // An objective of 120% is refused, naming the field; nothing is deployed.
    std::fs::write(
        dir.join("berth.toml"),
        "name = \"flaky\"\n[slo]\navailability = 120\n",
    )
    .expect("toml");
    let err = p.fails(&["deploy", &dir.display().to_string()]);
    assert!(err.contains("slo.availability: 120"), "{err}");
    assert!(p.fails(&["slo", "flaky"]).contains("does not exist"));

    std::fs::write(
        dir.join("berth.toml"),
        "name = \"flaky\"\n[slo]\navailability = 99.0\n",
    )
    .expect("toml");
    p.ok(&["deploy", &dir.display().to_string()]);

    // A steady, bounded load through the edge (at most 3 minutes).
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, port) = (stop.clone(), p.edge_port);
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(180);
            while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                let _ = common::http_get(port, "flaky.localhost", "/");
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    // Healthy: budgets intact, nothing fires.
    std::thread::sleep(Duration::from_secs(4));
    let v = p.json(&["slo", "flaky"]);
    assert_eq!(v["spec"]["availability"], 99.0, "{v}");
    let availability = &v["slis"][0];
    assert_eq!(availability["sli"], "availability");
    assert_eq!(availability["budget_remaining"], 1.0, "{v}");
    assert!(alerts(&p).is_empty(), "{:?}", alerts(&p));

    // Half the requests fail: the page fires.
    p.ok(&["env", "set", "flaky", "ERROR_EVERY=2"]);
    assert!(
        eventually(Duration::from_secs(60), || firing(
            &p,
            "slo_availability_page"
        )),
        "no page: {:?}\n{}",
        alerts(&p),
        p.up_log()
    );
    let page = alerts(&p)
        .into_iter()
        .find(|a| a["name"] == "slo_availability_page")
        .expect("page");
    assert_eq!(page["severity"], "page");
    assert!(
        page["summary"]
            .as_str()
            .unwrap_or("")
            .contains("availability error budget"),
        "{page}"
    );
    let table = p.ok(&["slo", "flaky"]);
    assert!(table.contains("page"), "{table}");

    // Rolled back: the page resolves; the budget spent keeps a ticket.
    p.ok(&["rollback", "flaky"]);
    assert!(
        eventually(Duration::from_secs(60), || {
            alerts(&p)
                .iter()
                .any(|a| a["name"] == "slo_availability_page" && !a["resolved_at"].is_null())
        }),
        "the page did not resolve: {:?}",
        alerts(&p)
    );
    assert!(firing(&p, "slo_availability_ticket"), "{:?}", alerts(&p));
    stop.store(true, Ordering::Relaxed);
    let _ = load.join();
    let listed = p.ok(&["alerts"]);
    assert!(
        listed.contains("slo_availability_ticket") && !listed.contains("slo_availability_page"),
        "{listed}"
    );

    // The rules for Prometheus: promtool accepts them and a real Prometheus loads them.
    let rules = work.path().join("berth-slo.yml");
    p.ok(&["slo", "--rules", "--out", &rules.display().to_string()]);
    let checked = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool");
    assert!(
        checked.status.success(),
        "promtool check rules: {checked:?}"
    );
    let port = free_port();
    let config = work.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs: []\n",
            rules.display()
        ),
    )
    .expect("config");
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            work.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus");
    let mut loaded = String::new();
    let ok = eventually(Duration::from_secs(30), || {
        let out = Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{port}/api/v1/rules")])
            .output();
        loaded = out
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        loaded.contains("BerthSLOAvailabilityPage") && loaded.contains("berth-slo-flaky")
    });
    let _ = prom.kill();
    let _ = prom.wait();
    assert!(ok, "Prometheus did not load the rules: {loaded}");
    assert!(!loaded.contains("\"health\":\"err\""), "{loaded}");
}

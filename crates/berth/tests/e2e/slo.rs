//! End-to-end: an SLO drill. An app starts answering 500s to half its requests under a
//! steady load → berth's page alert fires and reaches a real Alertmanager (Debian's
//! `prometheus-alertmanager`, started only after the alert fired: berth keeps sending) and a
//! signed webhook (which refuses the first delivery: berth retries); a rollback → the page
//! resolves everywhere (the budget it ate keeps a ticket open). The windows are shortened by
//! configuration (`--slo-time-scale`), not by another code path. The rules berth exports for
//! Prometheus pass `promtool check rules` and load into a real Prometheus.

use crate::common;

use common::{copy_dir, eventually, free_port, Platform};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Delivery = common::Received;

/// A webhook receiver on loopback that answers 503 to its first request, 200 after.
fn webhook_receiver() -> (u16, Arc<Mutex<Vec<Delivery>>>) {
    common::receiver(1)
}

/// Debian's Alertmanager on loopback (no clustering), stopped on drop; its files live as
/// long as it does.
struct Alertmanager(std::process::Child, #[allow(dead_code)] tempfile::TempDir);

impl Alertmanager {
    fn start(port: u16) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: none\nreceivers:\n  - name: none\n",
        )
        .expect("config");
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-alertmanager (apt-get install prometheus-alertmanager)");
        Self(child, dir)
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The alerts Alertmanager holds as active.
fn alertmanager_alerts(port: u16) -> Vec<serde_json::Value> {
    Command::new("curl")
        .args([
            "-sf",
            &format!("http://127.0.0.1:{port}/api/v2/alerts?active=true"),
        ])
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

fn page_in_alertmanager(port: u16) -> bool {
    alertmanager_alerts(port).iter().any(|a| {
        a["labels"]["alertname"] == "BerthSloAvailabilityPage"
            && a["labels"]["app"] == "flaky"
            && a["labels"]["severity"] == "page"
            && a["status"]["state"] == "active"
    })
}

fn verify(delivery: &Delivery, secret: &str) -> bool {
    use hmac::Mac;
    let Delivery { headers, body, .. } = delivery;
    let (Some(ts), Some(sig)) = (
        headers.get("x-berth-timestamp"),
        headers.get("x-berth-signature"),
    ) else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{ts}.{body}").as_bytes());
    *sig == format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn fixture() -> PathBuf {
    common::fixture("flaky")
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
    let work = tempfile::tempdir().expect("tempdir");
    let am_port = free_port();
    let (hook_port, deliveries) = webhook_receiver();
    let secret = "webhook-secret-0123456789";
    let secret_file = work.path().join("hook-secret");
    std::fs::write(&secret_file, secret).expect("secret");
    // 1h becomes 18 s and 5m 1.5 s; the counters are sampled twice a second. Alertmanager is
    // not running yet.
    let p = Platform::start_with(&[
        "--slo-time-scale",
        "0.005",
        "--slo-sample-interval",
        "500ms",
        "--alertmanager",
        &format!("http://127.0.0.1:{am_port}"),
        "--alert-webhook",
        &format!("http://127.0.0.1:{hook_port}/hooks/berth"),
        "--alert-webhook-secret-file",
        &secret_file.display().to_string(),
    ]);
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
    // (Platform-wide alerts, e.g. a full disk on a crowded machine, are not this app's.)
    assert!(
        alerts(&p).iter().all(|a| a["app"] != "flaky"),
        "{:?}",
        alerts(&p)
    );

    // Half the requests fail: the page fires.
    std::fs::write(
        dir.join("berth.toml"),
        "name = \"flaky\"\n[slo]\navailability = 99.0\n[env]\nERROR_EVERY = \"2\"\n",
    )
    .expect("toml");
    p.ok(&["deploy", &dir.display().to_string()]);
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
    // The deploy that paged counts as a failed change in DORA (before any rollback).
    let dora = &p.json(&["dora", "flaky", "--window", "1d"])[0];
    assert_eq!(
        (dora["attempts"].as_u64(), dora["failures"].as_u64()),
        (Some(2), Some(1)),
        "{dora}"
    );

    // Alertmanager was down: berth kept sending, so the page is there once it runs.
    assert!(
        p.up_log().contains("Alertmanager unreachable"),
        "{}",
        p.up_log()
    );
    let _am = Alertmanager::start(am_port);
    assert!(
        eventually(Duration::from_secs(60), || page_in_alertmanager(am_port)),
        "the page never reached Alertmanager: {:?}",
        alertmanager_alerts(am_port)
    );
    // The webhook got the page; it refused the first delivery it saw, and that one came
    // again (same delivery id), signed.
    let delivered = || {
        let got = deliveries.lock().expect("lock").clone();
        let page = got.iter().any(|Delivery { body: b, .. }| {
            b.contains("\"slo_availability_page\"") && b.contains("\"status\":\"firing\"")
        });
        let first = got
            .first()
            .and_then(|Delivery { headers: h, .. }| h.get("x-berth-delivery").cloned());
        let retried = got
            .iter()
            .skip(1)
            .any(|Delivery { headers: h, .. }| h.get("x-berth-delivery") == first.as_ref());
        page && retried
    };
    assert!(
        eventually(Duration::from_secs(30), delivered),
        "no page delivery, or no retry: {:?}",
        deliveries.lock().expect("lock")
    );
    assert!(
        deliveries
            .lock()
            .expect("lock")
            .iter()
            .all(|d| verify(d, secret)),
        "a delivery is not signed with the secret"
    );
    assert!(!verify(
        &deliveries.lock().expect("lock")[0],
        "another-secret-0123456"
    ));

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
    assert!(
        eventually(Duration::from_secs(30), || !page_in_alertmanager(am_port)),
        "Alertmanager still has the page active: {:?}",
        alertmanager_alerts(am_port)
    );
    assert!(
        eventually(Duration::from_secs(30), || deliveries
            .lock()
            .expect("lock")
            .iter()
            .any(|Delivery { body: b, .. }| b
                .contains("\"slo_availability_page\"")
                && b.contains("\"status\":\"resolved\""))),
        "no resolved delivery: {:?}",
        deliveries.lock().expect("lock")
    );
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
        loaded.contains("BerthSloAvailabilityPage") && loaded.contains("berth-slo-flaky")
    });
    let _ = prom.kill();
    let _ = prom.wait();
    assert!(ok, "Prometheus did not load the rules: {loaded}");
    assert!(!loaded.contains("\"health\":\"err\""), "{loaded}");
}

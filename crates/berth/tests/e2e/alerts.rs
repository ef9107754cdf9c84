//! End-to-end: operational alerts. An app that keeps crashing raises a crash-loop page (and
//! is down while it waits to restart); both resolve once it runs steadily. A scheduled
//! backup that fails raises `backup_failing`; the next good one resolves it.

use crate::common;

use common::{copy_dir, eventually, Platform};
use std::time::Duration;

fn alerts(p: &Platform) -> Vec<serde_json::Value> {
    p.json(&["alerts", "--all"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn state(p: &Platform, app: &str, name: &str) -> Option<&'static str> {
    alerts(p)
        .iter()
        .find(|a| a["app"] == app && a["name"] == name)
        .map(|a| {
            if a["resolved_at"].is_null() {
                "firing"
            } else {
                "resolved"
            }
        })
}

#[test]
fn crash_loops_and_failing_backups_alert_and_resolve() {
    let work = tempfile::tempdir().expect("tempdir");
    let pass = work.path().join("passphrase");
    std::fs::write(&pass, "alert drill passphrase").expect("passphrase");
    let backups = work.path().join("backups");
    let p = Platform::start_with(&[
        "--alert-for",
        "2s",
        "--slo-sample-interval",
        "500ms",
        "--backup-to",
        &backups.display().to_string(),
        "--backup-every",
        "2s",
        "--backup-passphrase-file",
        &pass.display().to_string(),
    ]);
    let dir = work.path().join("crashy");
    copy_dir(&common::fixture("stateful"), &dir);
    std::fs::write(dir.join("berth.toml"), "name = \"crashy\"\n").expect("toml");
    p.ok(&["deploy", &dir.display().to_string()]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(state(&p, "crashy", "crash_loop"), None, "{:?}", alerts(&p));
    assert_eq!(state(&p, "crashy", "app_down"), None, "{:?}", alerts(&p));

    // Three crashes in a row (each restart waits longer: 1 s, 2 s, 4 s).
    for n in 1..=3 {
        assert!(
            eventually(Duration::from_secs(30), || {
                let _ = common::http_get(p.edge_port, "crashy.localhost", "/crash");
                p.json(&["ps", "crashy"])[0]["restarts"].as_u64() >= Some(n)
            }),
            "restart {n} never came: {}",
            p.ok(&["ps", "crashy"])
        );
    }
    assert!(
        eventually(Duration::from_secs(30), || state(
            &p,
            "crashy",
            "crash_loop"
        ) == Some("firing")),
        "no crash-loop alert: {:?}\n{}",
        alerts(&p),
        p.up_log()
    );
    let page = alerts(&p)
        .into_iter()
        .find(|a| a["name"] == "crash_loop")
        .expect("alert");
    assert_eq!(page["severity"], "page");
    assert!(
        page["summary"]
            .as_str()
            .unwrap_or("")
            .contains("restarted 3 times"),
        "{page}"
    );

    // Running steadily again: it resolves (restarts leave the 20 s window).
    assert!(
        eventually(Duration::from_secs(60), || state(
            &p,
            "crashy",
            "crash_loop"
        ) == Some("resolved")),
        "the crash loop never resolved: {:?}",
        alerts(&p)
    );
    assert_ne!(state(&p, "crashy", "app_down"), Some("firing"));

    // A scheduled backup that fails (its passphrase file is gone) raises an alert; the
    // next one that works resolves it.
    assert!(eventually(Duration::from_secs(30), || backups.is_dir()
        && std::fs::read_dir(&backups)
            .map(|d| d.count() > 0)
            .unwrap_or(false)));
    std::fs::remove_file(&pass).expect("rm");
    assert!(
        eventually(Duration::from_secs(30), || state(
            &p,
            "platform",
            "backup_failing"
        ) == Some("firing")),
        "no backup alert: {:?}",
        alerts(&p)
    );
    let listed = p.ok(&["alerts"]);
    assert!(
        listed.contains("backup_failing") && listed.contains("passphrase"),
        "{listed}"
    );
    std::fs::write(&pass, "alert drill passphrase").expect("passphrase");
    assert!(
        eventually(Duration::from_secs(30), || state(
            &p,
            "platform",
            "backup_failing"
        ) == Some("resolved")),
        "the backup alert never resolved: {:?}",
        alerts(&p)
    );
}

//! End-to-end: an app with `[scale] min = 0` sleeps when idle — its web instances stop —
//! and the next request is held by the edge (not failed) while an instance starts, then
//! served; at both isolation levels.

use crate::common;

use common::{copy_dir, http_get, Platform};
use std::time::Duration;

fn asleep(p: &Platform, app: &str) -> bool {
    p.json(&["apps"])
        .as_array()
        .expect("apps")
        .iter()
        .any(|a| a["name"] == app && a["sleeping"] == true)
}

/// A log without its terminal colour codes.
fn without_colours(log: &str) -> String {
    let mut plain = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&d| d == 'm');
        } else {
            plain.push(c);
        }
    }
    plain
}

/// The app's web instances as `berth ps` shows them.
fn web_rows(p: &Platform, app: &str) -> Vec<serde_json::Value> {
    p.json(&["ps", app])
        .as_array()
        .expect("instances")
        .iter()
        .filter(|i| i["process"] == "web")
        .cloned()
        .collect()
}

/// The address (`ip:port`) of the app's first web instance.
fn web_address(p: &Platform, app: &str) -> String {
    web_rows(p, app)
        .first()
        .and_then(|i| i["address"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn an_idle_app_sleeps_and_the_next_request_wakes_it() {
    let p = Platform::start();
    let work = tempfile::tempdir().expect("tempdir");
    for (app, isolation) in [("nap", "trusted"), ("napbox", "sandbox")] {
        let dir = work.path().join(app);
        copy_dir(&common::fixture("stateful"), &dir);
        std::fs::write(
            dir.join("berth.toml"),
            // (No egress: the app's own rules name its addresses.)
            format!("isolation = \"{isolation}\"\n\n[scale]\nmin = 0\nidle = \"2s\"\n\n[network]\negress = \"none\"\n"),
        )
        .expect("berth.toml");
        p.ok(&["deploy", &dir.display().to_string()]);
        assert_eq!(p.answer(app, "/env?name=BERTH_APP"), app);
    }
    let awake_at: Vec<String> = ["nap", "napbox"]
        .iter()
        .map(|app| web_address(&p, app))
        .collect();
    for (app, was_at) in ["nap", "napbox"].into_iter().zip(awake_at) {
        // Idle: its web instances stop.
        assert!(
            common::eventually(Duration::from_secs(60), || asleep(&p, app)),
            "{app} never slept\n{}",
            p.up_log()
        );
        // Nothing of the app's answers while it sleeps (a trusted app's container waits
        // created, its program not started).
        assert!(
            common::eventually(Duration::from_secs(10), || {
                std::net::TcpStream::connect_timeout(
                    &was_at.parse().expect("address"),
                    Duration::from_millis(300),
                )
                .is_err()
            }),
            "{app} still answers at {was_at} while asleep"
        );
        // One request, not retried by the test: held while the app starts, then served.
        let (code, body) = http_get(
            p.edge_port,
            &format!("{app}.localhost"),
            "/env?name=BERTH_APP",
        )
        .expect("GET");
        assert_eq!((code, body.as_str()), (200, app), "{}", p.up_log());
        assert!(!asleep(&p, app));
        assert_eq!(web_rows(&p, app).len(), 1, "{}", p.up_log());
        // It woke at the address it had — kept from other instances while it slept, and
        // under the network policy in force for it (its egress denied).
        assert_eq!(web_address(&p, app), was_at);
        let ip = was_at.split(':').next().expect("ip");
        let table = format!("berth_{}", p.bridge.replace('-', "_"));
        let rules = std::process::Command::new("nft")
            .args(["list", "table", "inet", &table])
            .output()
            .expect("nft");
        assert!(
            String::from_utf8_lossy(&rules.stdout).contains(ip),
            "{ip} not in the rules:\n{}",
            String::from_utf8_lossy(&rules.stdout)
        );
    }
    // The trusted app woke by starting the instance made ready while it slept.
    assert!(
        without_colours(&p.up_log()).contains("prepared=1"),
        "the wake-up did not use the prepared instance:\n{}",
        p.up_log()
    );
    // Destroyed while asleep: no container, namespace or address of it stays behind.
    assert!(
        common::eventually(Duration::from_secs(60), || asleep(&p, "nap")),
        "nap never slept again\n{}",
        p.up_log()
    );
    p.ok(&["destroy", "nap"]);
    let crun = std::process::Command::new("crun")
        .arg("--root")
        .arg(p.data.path().join("run/crun"))
        .args(["list", "-q"])
        .output()
        .expect("crun list");
    let containers = String::from_utf8_lossy(&crun.stdout).to_string();
    assert!(
        !containers.lines().any(|c| c.starts_with("nap-")),
        "containers left: {containers}"
    );
    let netns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns");
    let namespaces = String::from_utf8_lossy(&netns.stdout).to_string();
    assert!(
        !namespaces.lines().any(|n| n.starts_with("nap-")),
        "namespaces left: {namespaces}"
    );
    // A bad idle time is refused before anything is built.
    let dir = work.path().join("nap");
    std::fs::write(dir.join("berth.toml"), "[scale]\nmin = 0\nidle = \"0s\"\n").expect("toml");
    let err = p.fails(&["deploy", &dir.display().to_string()]);
    assert!(err.contains("scale.idle"), "{err}");
}

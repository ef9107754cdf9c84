//! End-to-end: `berth drill`. A bounded load against an app of two instances while berth
//! kills one of them, then the control plane (started again as it was), then redeploys:
//! the report counts every phase's requests, and the platform promises no failed request
//! except those in flight on the killed instance.

use crate::common;

use common::Platform;

#[test]
fn a_drill_kills_an_instance_and_the_control_plane_and_redeploys_under_load() {
    let p = Platform::start();
    let dir = common::fixture("stateful");
    p.ok(&["deploy", &dir.display().to_string(), "--app", "dr"]);
    p.ok(&["scale", "dr", "web=2"]);
    let before: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(p.data.path().join("api.json")).expect("api.json"),
    )
    .expect("json");

    let report = p.json(&[
        "drill",
        "dr",
        "--phase",
        "3s",
        "--rate",
        "40",
        "--concurrency",
        "4",
        "--path",
        "/env?name=BERTH_APP",
    ]);
    let phases = report["phases"].as_array().expect("phases");
    let names: Vec<&str> = phases.iter().filter_map(|p| p["phase"].as_str()).collect();
    assert_eq!(
        names,
        [
            "steady",
            "instance killed",
            "control plane killed",
            "redeploy"
        ],
        "{report}"
    );
    for phase in phases {
        assert!(phase["requests"].as_u64().unwrap_or(0) >= 40, "{phase}");
        assert!(phase.get("skipped").is_none(), "{phase}");
        assert!(phase["p99_ms"].as_f64().unwrap_or(0.0) > 0.0, "{phase}");
        let failed = phase["failed"].as_u64().expect("failed");
        if phase["phase"] == "instance killed" {
            // Only requests in flight on the killed instance may fail: one per client.
            assert!(failed <= 4, "{phase}");
        } else {
            assert_eq!(failed, 0, "{phase}\n{}", p.up_log());
            assert_eq!(phase["burn_rate"].as_f64(), Some(0.0), "{phase}");
        }
    }
    assert_eq!(report["availability_objective"].as_f64(), Some(99.9));
    assert!(
        phases[2]["action"]
            .as_str()
            .is_some_and(|a| a.contains("answered after")),
        "{report}"
    );

    // The control plane is a new process, and it serves.
    let after: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(p.data.path().join("api.json")).expect("api.json"),
    )
    .expect("json");
    assert_ne!(before["pid"], after["pid"]);
    let releases = p.json(&["releases", "dr"]);
    assert_eq!(releases[0]["description"], "redeploy", "{releases}");
    assert_eq!(p.answer("dr", "/env?name=BERTH_APP"), "dr");

    // Bad input changes nothing.
    for (args, says) in [
        (&["drill", "nope"][..], "no app named \"nope\""),
        (
            &["drill", "dr", "--phase", "0s"][..],
            "--phase must be between",
        ),
        (
            &["drill", "dr", "--path", "env"][..],
            "--path must start with '/'",
        ),
        (
            &["kill", "dr", "web.9"][..],
            "has no running instance \"web.9\"",
        ),
    ] {
        let err = p.fails(args);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let err = p.fails(&["kill", "dr", "web.9"]);
    assert!(
        err.contains("web.0"),
        "the hint names the running ones: {err}"
    );
    assert_eq!(
        p.json(&["releases", "dr"]).as_array().map(Vec::len),
        Some(3)
    );

    // An app without a web process cannot be drilled.
    let worker = p.data.path().join("worker-app");
    std::fs::create_dir_all(&worker).expect("dir");
    std::fs::write(
        worker.join("Procfile"),
        "worker: python3 -c 'import time; time.sleep(100000)'\n",
    )
    .expect("Procfile");
    std::fs::write(worker.join("requirements.txt"), "").expect("requirements");
    p.ok(&["deploy", &worker.display().to_string(), "--app", "wk"]);
    let err = p.fails(&["drill", "wk", "--phase", "1s"]);
    assert!(err.contains("wk has no web process running"), "{err}");
}

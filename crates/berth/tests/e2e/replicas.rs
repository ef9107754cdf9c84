//! End-to-end: an app scaled to several instances. The edge spreads requests over them,
//! fewest outstanding requests first; when one instance crashes, requests go to the others
//! (no failed GET under a bounded load), and the restarted instance gets traffic again
//! only once it listens.

use crate::common;

use common::{http_get, Platform};
use std::collections::BTreeSet;
use std::time::Duration;

fn instances(p: &Platform, app: &str) -> Vec<serde_json::Value> {
    p.json(&["ps", app]).as_array().expect("instances").clone()
}

fn running_web(p: &Platform, app: &str) -> usize {
    instances(p, app)
        .iter()
        .filter(|i| i["process"] == "web" && i["state"] == "running")
        .count()
}

#[test]
fn scaled_instances_share_the_load_and_survive_a_crash() {
    let p = Platform::start();
    let dir = common::fixture("stateful");
    p.ok(&["deploy", &dir.display().to_string(), "--app", "rep"]);

    // Bad counts change nothing.
    for (args, says) in [
        (&["scale", "rep", "web=0"][..], "keep at least 1"),
        (
            &["scale", "rep", "queue=2"][..],
            "no process type \"queue\"",
        ),
        (&["scale", "rep", "web=17"][..], "maximum of 16"),
        (&["scale", "rep", "web"][..], "not TYPE=COUNT"),
    ] {
        let err = p.fails(args);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(p.json(&["releases", "rep"]).as_array().expect("r").len(), 1);

    let bridge_mac =
        || std::fs::read_to_string(format!("/sys/class/net/{}/address", p.bridge)).expect("bridge");
    let mac = bridge_mac();
    p.ok(&["scale", "rep", "web=3"]);
    assert_eq!(running_web(&p, "rep"), 3);
    // The replaced instance's port left the bridge; the gateway's address did not change
    // (the instances' ARP entries for it stay right, and their answers reach the edge).
    assert!(common::eventually(Duration::from_secs(10), || {
        instances(&p, "rep").iter().all(|i| i["release"] == 2)
    }));
    assert_eq!(bridge_mac(), mac);
    let release = &p.json(&["releases", "rep"])[0];
    assert_eq!(release["description"], "scale web=3", "{release}");

    // Idle instances take turns: every one of them answers.
    let mut seen = BTreeSet::new();
    for _ in 0..12 {
        seen.insert(p.answer("rep", "/env?name=BERTH_INSTANCE"));
    }
    assert_eq!(seen.len(), 3, "{seen:?}");

    // Two slow requests keep two instances busy: quick ones go to the third.
    let port = p.edge_port;
    let slow: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || http_get(port, "rep.localhost", "/slow?ms=4000")))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let quick: BTreeSet<String> = (0..5)
        .map(|_| p.answer("rep", "/env?name=BERTH_INSTANCE"))
        .collect();
    let busy: BTreeSet<String> = slow
        .into_iter()
        .map(|t| t.join().expect("thread").expect("slow GET").1)
        .collect();
    assert_eq!(
        busy.len(),
        2,
        "the slow requests went to two instances: {busy:?}"
    );
    assert_eq!(
        quick.len(),
        1,
        "quick requests all went to the idle one: {quick:?}"
    );
    assert!(busy.is_disjoint(&quick), "busy {busy:?}, quick {quick:?}");

    // One instance crashes; a bounded load of GETs meanwhile gets no error.
    let (code, _) = http_get(port, "rep.localhost", "/crash").expect("crash");
    assert!(code == 502 || code == 200, "{code}");
    let mut failed = Vec::new();
    for i in 0..300 {
        match http_get(port, "rep.localhost", "/env?name=BERTH_APP") {
            Ok((200, body)) if body == "rep" => {}
            other => failed.push((i, format!("{other:?}"))),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        failed.is_empty(),
        "failed requests: {failed:?}\n{}",
        p.up_log()
    );
    // The supervisor brings it back, and it serves again.
    assert!(
        common::eventually(Duration::from_secs(30), || running_web(&p, "rep") == 3),
        "{:?}",
        instances(&p, "rep")
    );
    let restarted: u64 = instances(&p, "rep")
        .iter()
        .map(|i| i["restarts"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(restarted, 1);
    let mut seen = BTreeSet::new();
    assert!(
        common::eventually(Duration::from_secs(30), || {
            seen.insert(p.answer("rep", "/env?name=BERTH_INSTANCE"));
            seen.len() == 3
        }),
        "{seen:?}"
    );

    // Back to one.
    p.ok(&["scale", "rep", "web=1"]);
    assert!(common::eventually(Duration::from_secs(30), || {
        instances(&p, "rep").len() == 1
    }));
}

//! End-to-end: canary deploys. A release that answers 500 to a share of its requests gets
//! its share of the traffic under a bounded load, is caught by the analysis and rolled back
//! with the reason — and no request the stable release served failed. A good release is
//! promoted step by step; `berth abort` rolls a canary back by hand.

use crate::common;

use common::{copy_dir, http_get, Platform};
use std::path::Path;
use std::time::{Duration, Instant};

fn canary_toml(dir: &Path, steps: &str, pause: &str, fail_rate: &str) {
    std::fs::write(
        dir.join("berth.toml"),
        format!(
            "[deploy]\nstrategy = \"canary\"\nsteps = {steps}\nstep_pause = \"{pause}\"\n\n[env]\nFAIL_RATE = \"{fail_rate}\"\n"
        ),
    )
    .expect("berth.toml");
}

/// Deploys `dir` in the background while GETs of /flaky go through the edge (at most 60 s);
/// the deploy's output and every answer.
fn deploy_under_load(p: &Platform, dir: &Path) -> (std::process::Output, Vec<(u16, String)>) {
    let mut cmd = p.berth_command(&["deploy", &dir.display().to_string()]);
    let deploy = std::thread::spawn(move || cmd.output().expect("berth deploy"));
    let mut answers = Vec::new();
    let started = Instant::now();
    while !deploy.is_finished() && started.elapsed() < Duration::from_secs(60) {
        if let Ok(a) = http_get(p.edge_port, "can.localhost", "/flaky") {
            answers.push(a);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (deploy.join().expect("deploy thread"), answers)
}

#[test]
fn a_bad_canary_is_rolled_back_and_a_good_one_promoted() {
    let p = Platform::start();
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("can");
    copy_dir(&common::fixture("stateful"), &dir);
    p.ok(&["deploy", &dir.display().to_string()]);
    assert_eq!(p.answer("can", "/flaky"), "ok release=1\n");

    // v2 fails 60% of its requests.
    canary_toml(&dir, "[50]", "4s", "0.6");
    let (out, answers) = deploy_under_load(&p, &dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("canary rolled back at 50%") && err.contains("answered 5xx"),
        "{err}"
    );
    let from = |r: &str| answers.iter().filter(|(_, b)| b.contains(r)).count();
    assert!(
        from("release=2") > 0,
        "the canary got requests: {answers:?}"
    );
    let stable_failed: Vec<_> = answers
        .iter()
        .filter(|(code, body)| *code != 200 && !body.contains("release=2"))
        .collect();
    assert!(
        stable_failed.is_empty(),
        "requests the stable side answered failed: {stable_failed:?}"
    );
    let listed = p.releases("can");
    assert_eq!(listed[0]["version"], 2);
    assert_eq!(listed[0]["status"], "failed");
    assert_eq!(listed[1]["status"], "active");
    assert_eq!(p.answer("can", "/flaky"), "ok release=1\n");

    // v3 is good: promoted through its steps.
    canary_toml(&dir, "[20, 60]", "2s", "0");
    let (out, answers) = deploy_under_load(&p, &dir);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("canary at 20%") && text.contains("canary at 60%"),
        "{text}"
    );
    assert!(answers.iter().all(|(code, _)| *code == 200), "{answers:?}");
    assert_eq!(p.releases("can")[0]["status"], "active");
    assert_eq!(p.answer("can", "/flaky"), "ok release=3\n");

    // Nothing to promote or abort now.
    let err = p.fails(&["promote", "can"]);
    assert!(err.contains("no canary under way"), "{err}");

    // A long canary, aborted by hand: v3 keeps serving.
    canary_toml(&dir, "[10]", "120s", "0");
    let mut cmd = p.berth_command(&["deploy", &dir.display().to_string()]);
    let deploy = std::thread::spawn(move || cmd.output().expect("berth deploy"));
    assert!(
        common::eventually(Duration::from_secs(60), || p
            .berth(&["abort", "can"])
            .status
            .success()),
        "the canary never started"
    );
    let out = deploy.join().expect("deploy");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("was aborted by"), "{err}");
    assert_eq!(p.releases("can")[0]["status"], "failed");
    assert_eq!(p.answer("can", "/flaky"), "ok release=3\n");

    // `sticky` without a canary is refused, and changes nothing.
    std::fs::write(dir.join("berth.toml"), "[deploy]\nsticky = true\n").expect("toml");
    let err = p.fails(&["deploy", &dir.display().to_string()]);
    assert!(err.contains("deploy.sticky are for strategy"), "{err}");
    assert_eq!(p.releases("can").len(), 4);

    // A sticky canary: a client stays on its side for the whole step (this test is one
    // client), so once the new release answered it, the old one never does again.
    std::fs::write(
        dir.join("berth.toml"),
        "[deploy]\nstrategy = \"canary\"\nsteps = [50]\nstep_pause = \"3s\"\nsticky = true\n",
    )
    .expect("toml");
    let (out, answers) = deploy_under_load(&p, &dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bodies: Vec<&str> = answers.iter().map(|(_, b)| b.as_str()).collect();
    // (This client's address may fall on either side; either way it stays there.)
    if let Some(first_new) = bodies.iter().position(|b| b.contains("release=5")) {
        assert!(
            bodies[first_new..].iter().all(|b| b.contains("release=5")),
            "the client went back and forth: {bodies:?}"
        );
    }
    assert!(
        bodies.len() > 20,
        "a load ran through the canary: {bodies:?}"
    );
    assert_eq!(p.answer("can", "/flaky"), "ok release=5\n");
}

//! End-to-end: the autoscaler. Under a bounded load of slow requests an app with
//! `[scale] target_concurrency` gets more web instances (up to `max`), every request
//! answered meanwhile; once the load is gone it goes back to `min` after its cooldown.

use crate::common;

use common::{copy_dir, http_get, Platform};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn web_instances(p: &Platform) -> usize {
    p.json(&["ps", "auto"])
        .as_array()
        .expect("instances")
        .iter()
        .filter(|i| i["process"] == "web" && i["state"] == "running")
        .count()
}

#[test]
fn web_instances_follow_the_load_between_min_and_max() {
    let p = Platform::start();
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("auto");
    copy_dir(&common::fixture("stateful"), &dir);
    // An autoscaler without a most is refused, naming the field.
    std::fs::write(dir.join("berth.toml"), "[scale]\ntarget_concurrency = 2\n").expect("toml");
    let err = p.fails(&["deploy", &dir.display().to_string()]);
    assert!(err.contains("scale.max"), "{err}");
    std::fs::write(
        dir.join("berth.toml"),
        "[scale]\nmin = 1\nmax = 3\ntarget_concurrency = 2\ncooldown = \"3s\"\n",
    )
    .expect("toml");
    p.ok(&["deploy", &dir.display().to_string()]);
    assert_eq!(web_instances(&p), 1);

    // Six clients, each always waiting on a 300 ms request: about six under way.
    let stop = Arc::new(AtomicBool::new(false));
    let port = p.edge_port;
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(90) {
                    answers.push(http_get(port, "auto.localhost", "/slow?ms=300").map(|a| a.0));
                }
                answers
            })
        })
        .collect();
    let grew = common::eventually(Duration::from_secs(60), || web_instances(&p) == 3);
    stop.store(true, Ordering::Relaxed);
    let answers: Vec<_> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client"))
        .collect();
    assert!(
        grew,
        "never scaled out: {}\n{}",
        p.json(&["ps", "auto"]),
        p.up_log()
    );
    let failed: Vec<_> = answers.iter().filter(|a| !matches!(a, Ok(200))).collect();
    assert!(failed.is_empty(), "{failed:?} of {}", answers.len());

    // Load gone: back to one after the cooldown.
    assert!(
        common::eventually(Duration::from_secs(60), || web_instances(&p) == 1),
        "never scaled in: {}",
        p.json(&["ps", "auto"])
    );

    // CPU as the signal: instances of a quarter CPU aimed at half of it. A target past
    // 100% is refused first.
    std::fs::write(
        dir.join("berth.toml"),
        "[processes.web]\ncpus = 0.25\n[scale]\nmin = 1\nmax = 3\ntarget_cpu = 150\n",
    )
    .expect("toml");
    let err = p.fails(&["deploy", &dir.display().to_string()]);
    assert!(err.contains("scale.target_cpu: 150"), "{err}");
    std::fs::write(
        dir.join("berth.toml"),
        "[processes.web]\ncpus = 0.25\n[scale]\nmin = 1\nmax = 3\ntarget_cpu = 50\ncooldown = \"3s\"\n",
    )
    .expect("toml");
    p.ok(&["deploy", &dir.display().to_string()]);
    assert_eq!(web_instances(&p), 1);
    // Two clients keep the instance's CPU busy (few requests under way, so only CPU asks
    // for more).
    let stop = Arc::new(AtomicBool::new(false));
    let burners: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(90) {
                    let _ = http_get(port, "auto.localhost", "/burn?ms=200");
                }
            })
        })
        .collect();
    let grew = common::eventually(Duration::from_secs(60), || web_instances(&p) >= 2);
    stop.store(true, Ordering::Relaxed);
    for b in burners {
        b.join().expect("burner");
    }
    assert!(
        grew,
        "CPU never scaled it out: {}\n{}",
        p.json(&["ps", "auto"]),
        p.up_log()
    );
    assert!(
        p.up_log().contains("autoscale: adding web instances"),
        "{}",
        p.up_log()
    );
    assert!(
        common::eventually(Duration::from_secs(60), || web_instances(&p) == 1),
        "never scaled in after the CPU load: {}",
        p.json(&["ps", "auto"])
    );
}

//! End-to-end: a deploy is a durable workflow. The control plane is killed (`kill -9`) as a
//! deploy reaches each of its steps in turn — build, release command, start, health check,
//! switch — and comes back: every interrupted deploy has either completed (it had switched)
//! or been rolled back cleanly (release failed, its instances gone), never half-applied;
//! only the serving release's instances run; and clients of the app were answered
//! throughout, by the release that was serving.

use crate::common;

use common::{admin_token, copy_dir, http_get, Platform};
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn a_deploy_killed_at_each_step_completes_or_rolls_back_and_the_app_keeps_answering() {
    let mut p = Platform::start();
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("durable");
    copy_dir(&common::fixture("stateful"), &dir);
    // A release command that takes a moment, so that its step can be caught.
    std::fs::write(
        dir.join("Procfile"),
        "web: python3 app.py\nrelease: sleep 1\n",
    )
    .expect("Procfile");
    p.ok(&["deploy", &dir.display().to_string()]);
    let archive = work.path().join("durable.tar.gz");
    common::tar_gz(&dir, &archive);

    // Clients of the app, bounded in time and count.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    // What the test is doing, for failures to say when they happened.
    let phase = Arc::new(Mutex::new(String::from("serving v1")));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (stop, ok, failed, port) = (stop.clone(), ok.clone(), failed.clone(), p.edge_port);
        let phase = phase.clone();
        clients.push(std::thread::spawn(move || {
            let started = Instant::now();
            while !stop.load(Ordering::SeqCst)
                && started.elapsed() < Duration::from_secs(300)
                && ok.load(Ordering::SeqCst) < 500_000
            {
                match http_get(port, "durable.localhost", "/env?name=BERTH_APP") {
                    Ok((200, body)) if body == "durable" => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok((status, _)) => {
                        let during = phase.lock().expect("lock").clone();
                        failed
                            .lock()
                            .expect("lock")
                            .push(format!("{status} while {during}"));
                    }
                    Err(e) => {
                        let during = phase.lock().expect("lock").clone();
                        failed
                            .lock()
                            .expect("lock")
                            .push(format!("{e} while {during}"));
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }));
    }

    let token = admin_token(&p);
    for step in ["build", "release_command", "start", "health", "switch"] {
        *phase.lock().expect("lock") = format!("deploying to be killed at {step}");
        let before = p
            .json(&["releases", "durable"])
            .as_array()
            .expect("releases")
            .len();
        let mut curl = std::process::Command::new("curl")
            .args(["-sN", "-X", "POST", "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .args(["-H", "Content-Type: application/gzip", "--data-binary"])
            .arg(format!("@{}", archive.display()))
            .arg(format!(
                "http://127.0.0.1:{}/v1/apps/durable/deploys",
                p.api_port
            ))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("curl");
        let out = curl.stdout.take().expect("stdout");
        let mut seen = Vec::new();
        for line in std::io::BufReader::new(out).lines() {
            let line = line.expect("line");
            let reached = line.contains(&format!("\"step\":\"{step}\""));
            seen.push(line);
            if reached {
                break;
            }
        }
        assert!(
            seen.iter()
                .any(|l| l.contains(&format!("\"step\":\"{step}\""))),
            "the deploy never reached {step}: {seen:?}"
        );
        *phase.lock().expect("lock") = format!("berth is down (killed at {step})");
        p.kill_control_plane();
        let _ = curl.kill();
        let _ = curl.wait();
        *phase.lock().expect("lock") = format!("berth starts again (killed at {step})");
        p.up();
        *phase.lock().expect("lock") = format!("berth is back (killed at {step})");

        // Completed or rolled back, never half-applied. (A build cut off made no release.)
        let releases = p.json(&["releases", "durable"]);
        if step == "build" {
            assert_eq!(
                releases.as_array().expect("releases").len(),
                before,
                "killed at build: {releases:#}"
            );
            assert_eq!(releases[0]["status"], "active");
        }
        let newest = &releases[0];
        let status = newest["status"].as_str().expect("status");
        assert!(
            status == "failed" || status == "active",
            "killed at {step}, the deploy is {status}: {releases:#}"
        );
        if step != "switch" && step != "build" {
            assert_eq!(status, "failed", "killed at {step}: {releases:#}");
        }
        let serving = releases
            .as_array()
            .expect("releases")
            .iter()
            .find(|r| r["status"] == "active")
            .expect("a serving release")["version"]
            .clone();
        let only_serving = || {
            let ps = p.json(&["ps", "durable"]);
            let all = ps.as_array().expect("instances").clone();
            !all.is_empty() && all.iter().all(|i| i["release"] == serving)
        };
        assert!(
            common::eventually(Duration::from_secs(30), only_serving),
            "killed at {step}: instances of another release than v{serving} are left: {}",
            p.ok(&["ps", "durable"])
        );
    }

    // The platform goes on as before.
    *phase.lock().expect("lock") = "a last deploy".into();
    p.ok(&["deploy", &dir.display().to_string()]);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("client");
    }
    let failed = failed.lock().expect("lock");
    if !failed.is_empty() {
        eprintln!("{}", p.up_log());
        let edge = p.edge_log();
        eprintln!(
            "edge:\n{}",
            edge.lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failed.len(),
        ok.load(Ordering::SeqCst) + failed.len() as u64,
        &failed[..failed.len().min(5)]
    );
    assert!(ok.load(Ordering::SeqCst) > 100);
}

//! End-to-end: the DORA four keys move with real deploys (from a git checkout whose commits
//! are dated in the past), a failed rollout and a rollback; shown by the CLI, the API and
//! `/metrics`.

use crate::common;

use common::{copy_dir, examples, Platform};
use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str], date: Option<i64>) {
    let mut c = Command::new("git");
    c.arg("-C")
        .arg(dir)
        .args(["-c", "user.email=dev@example.com", "-c", "user.name=Dev"])
        .args(args);
    if let Some(t) = date {
        let d = format!("@{t} +0000");
        c.env("GIT_AUTHOR_DATE", &d).env("GIT_COMMITTER_DATE", &d);
    }
    let out = c.output().expect("git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

fn commit(dir: &Path, message: &str, at: i64) {
    git(dir, &["add", "-A"], None);
    git(dir, &["commit", "-q", "-m", message], Some(at));
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

#[test]
fn the_four_keys_follow_deploys_failures_and_rollbacks() {
    let p = Platform::start();
    let work = tempfile::tempdir().expect("tempdir");
    let repo = work.path().join("hello");
    copy_dir(&examples().join("hello"), &repo);
    git(&repo, &["init", "-q"], None);
    let t0 = now();

    // A change committed two hours ago goes live.
    commit(&repo, "first", t0 - 7_200);
    p.ok(&["deploy", &repo.display().to_string()]);
    // A broken change (committed an hour ago) fails to roll out.
    std::fs::write(
        repo.join("Procfile"),
        "web: echo missing config >&2; exit 4\n",
    )
    .expect("write");
    commit(&repo, "broken", t0 - 3_600);
    p.fails(&["deploy", &repo.display().to_string()]);
    // Its fix (committed half an hour ago) goes live, and is then rolled back.
    std::fs::write(repo.join("Procfile"), "web: python3 app.py\n").expect("write");
    std::fs::write(repo.join("NOTES"), "fixed\n").expect("write");
    commit(&repo, "fix", t0 - 1_800);
    p.ok(&["deploy", &repo.display().to_string()]);
    p.ok(&["rollback", "hello"]);
    let done = now();

    let views = p.json(&["dora", "hello", "--window", "1d"]);
    let v = &views[0];
    assert_eq!(v["scope"], "hello", "{v}");
    assert_eq!(v["deployments"], 2, "two code deploys went live: {v}");
    assert_eq!(v["attempts"], 3, "{v}");
    assert_eq!(v["failures"], 2, "one failed, one rolled back: {v}");
    let cfr = v["change_failure_rate"].as_f64().expect("rate");
    assert!((cfr - 2.0 / 3.0).abs() < 1e-9, "{v}");
    // Lead times: ~2 h and ~30 min (plus the time to build and roll out): median ~75 min.
    let lead = v["lead_time_seconds"].as_f64().expect("lead time");
    let slack = (done - t0) as f64;
    assert!(
        lead >= 4_500.0 && lead <= 4_500.0 + slack,
        "lead time {lead}: {v}"
    );
    // Both failures were mended within the test (timestamps are whole seconds).
    let restore = v["time_to_restore_seconds"].as_f64().expect("restore");
    assert!((0.0..=slack).contains(&restore), "restore {restore}: {v}");
    assert_eq!(v["bands"]["time_to_restore"], "elite", "{v}");
    assert_eq!(v["bands"]["lead_time"], "elite", "{v}");
    assert_eq!(v["bands"]["deployment_frequency"], "elite", "{v}");
    assert_eq!(v["bands"]["change_failure_rate"], "low", "{v}");
    assert_eq!(v["bands"]["overall"], "low", "{v}");

    // The platform over the three windows; the table for people.
    let all = p.json(&["dora"]);
    let windows: Vec<&str> = all
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|v| v["window"].as_str())
        .collect();
    assert_eq!(windows, ["1d", "7d", "30d"]);
    assert!(all
        .as_array()
        .expect("list")
        .iter()
        .all(|v| v["scope"] == "platform" && v["deployments"] == 2));
    let table = p.ok(&["dora", "hello"]);
    assert!(
        table.contains("FAILURE RATE") && table.contains("67% (2/3, low)"),
        "{table}"
    );

    // In /metrics.
    let token = std::fs::read_to_string(p.data.path().join("api-token")).expect("token");
    let out = Command::new("curl")
        .args([
            "-sf",
            "-H",
            &format!("Authorization: Bearer {}", token.trim()),
        ])
        .arg(format!("http://127.0.0.1:{}/metrics", p.api_port))
        .output()
        .expect("curl");
    let metrics = String::from_utf8_lossy(&out.stdout);
    assert!(
        metrics.contains("berth_dora_deployments{scope=\"hello\",window=\"1d\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("berth_dora_performance{scope=\"platform\",window=\"7d\",band=\"low\"} 1")
    );

    // Bad input is named.
    let err = p.fails(&["dora", "hello", "--window", "soon"]);
    assert!(err.contains("not a duration"), "{err}");
    let err = p.fails(&["dora", "nosuchapp"]);
    assert!(err.contains("does not exist"), "{err}");
}

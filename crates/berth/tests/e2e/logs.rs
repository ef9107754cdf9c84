//! End-to-end: searching an app's logs by time, text, release, process and stream; the
//! platform's own lines about the app; bad queries named; everything still searchable after
//! the control plane is killed and started again.

use crate::common;

use common::{copy_dir, eventually, Platform};
use std::time::Duration;

fn lines(p: &Platform, args: &[&str]) -> Vec<serde_json::Value> {
    let mut a = vec!["--json", "logs"];
    a.extend_from_slice(args);
    p.ok(&a)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

fn texts(recs: &[serde_json::Value]) -> Vec<String> {
    recs.iter()
        .map(|r| r["line"].as_str().unwrap_or("").to_string())
        .collect()
}

/// (id, data) of the server-sent events of an app's log within 2 seconds.
fn sse(
    p: &Platform,
    app_and_query: &str,
    headers: &[(&str, &str)],
    after: Option<&str>,
) -> Vec<(String, String)> {
    let token = std::fs::read_to_string(p.data.path().join("api-token")).expect("token");
    sse_raw(p.api_port, token.trim(), app_and_query, headers, after, 2)
}

fn sse_raw(
    port: u16,
    token: &str,
    app_and_query: &str,
    headers: &[(&str, &str)],
    after: Option<&str>,
    secs: u64,
) -> Vec<(String, String)> {
    let (app, query) = app_and_query.split_once('&').unwrap_or((app_and_query, ""));
    let mut url = format!("http://127.0.0.1:{port}/v1/apps/{app}/logs/events?{query}");
    if let Some(a) = after {
        url.push_str(&format!("&after={a}"));
    }
    let mut c = std::process::Command::new("curl");
    c.args([
        "-sN",
        "--max-time",
        &secs.to_string(),
        "-H",
        &format!("Authorization: Bearer {token}"),
    ]);
    for (k, v) in headers {
        c.args(["-H", &format!("{k}: {v}")]);
    }
    let out = c.arg(url).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split("\n\n")
        .filter_map(|block| {
            let id = block.lines().find_map(|l| l.strip_prefix("id: "))?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((id.to_string(), data.to_string()))
        })
        .collect()
}

#[test]
fn logs_are_searchable_by_time_text_release_process_and_stream() {
    let mut p = Platform::start();
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("chatty");
    copy_dir(&common::fixture("stateful"), &dir);
    std::fs::write(
        dir.join("berth.toml"),
        "name = \"chatty\"\n[logs]\nretention = \"2d\"\nmax_size = \"64M\"\n",
    )
    .expect("toml");
    // A git checkout: its lines carry the commit they were built from.
    let sha = common::git_commit_all(&dir);
    p.ok(&["deploy", &dir.display().to_string()]);
    // v1 says something; then v2 (an env change) says something else; then it crashes once.
    p.ok(&["env", "set", "chatty", "WORD=alpha"]);
    for _ in 0..3 {
        assert_eq!(p.get("chatty", "/log?name=WORD").0, 200);
    }
    p.ok(&["env", "set", "chatty", "WORD=omega"]);
    assert_eq!(p.get("chatty", "/log?name=WORD").0, 200);
    let _ = p.get("chatty", "/crash");
    assert!(
        eventually(Duration::from_secs(30), || {
            texts(&lines(&p, &["chatty", "--stream", "platform"]))
                .iter()
                .any(|l| l.starts_with("[berth]") && l.contains("exited with code 3"))
        }),
        "no platform line about the crash: {:?}",
        lines(&p, &["chatty", "--stream", "platform"])
    );
    assert!(eventually(Duration::from_secs(30), || lines(
        &p,
        &["chatty", "--grep", "omega"]
    )
    .len()
        == 1));

    // Text.
    let alpha = lines(&p, &["chatty", "--grep", "the secret is alpha"]);
    assert_eq!(alpha.len(), 3, "{alpha:?}");
    assert!(alpha
        .iter()
        .all(|r| r["release"] == 2 && r["process"] == "web" && r["stream"] == "runtime"));
    assert!(
        alpha
            .iter()
            .all(|r| r["commit"] == sha.as_str() && r["project"] == "default"),
        "every line names its project and commit {sha}: {alpha:?}"
    );
    let either = lines(
        &p,
        &["chatty", "--grep", "(?i)SECRET IS (alpha|omega)", "-n", "2"],
    );
    assert_eq!(
        texts(&either),
        ["the secret is alpha", "the secret is omega"],
        "the last two"
    );
    // Release and stream.
    let v3 = texts(&lines(
        &p,
        &["chatty", "--release", "3", "--stream", "runtime"],
    ));
    assert!(
        v3.contains(&"the secret is omega".to_string()) && !v3.iter().any(|l| l.contains("alpha")),
        "{v3:?}"
    );
    assert!(lines(&p, &["chatty", "--process", "worker"]).is_empty());
    // Time.
    assert!(!lines(&p, &["chatty", "--since", "10m", "--grep", "secret"]).is_empty());
    assert!(
        lines(&p, &["chatty", "--until", "10m"]).is_empty(),
        "nothing is older than 10 minutes"
    );
    assert!(lines(&p, &["chatty", "--since", "2999-01-01T00:00:00Z"]).is_empty());
    // People see the lines rendered.
    let human = p.ok(&["logs", "chatty", "--grep", "omega"]);
    assert!(human.contains("web.0[v3]: the secret is omega"), "{human}");

    // Bad queries name the problem.
    let err = p.fails(&["logs", "chatty", "--since", "last tuesday"]);
    assert!(
        err.contains("since") && err.contains("neither a duration"),
        "{err}"
    );
    let err = p.fails(&["logs", "chatty", "--grep", "(unclosed"]);
    assert!(err.contains("not a regular expression"), "{err}");
    let err = p.fails(&["logs", "chatty", "--stream", "everything"]);
    assert!(
        err.contains("not one of runtime, build, access, platform"),
        "{err}"
    );
    // The edge's access log, per app.
    assert!(
        eventually(Duration::from_secs(30), || lines(
            &p,
            &[
                "chatty",
                "--stream",
                "access",
                "--grep",
                r"^GET /log\?name=WORD 200 "
            ]
        )
        .len()
            >= 4),
        "{:?}",
        lines(&p, &["chatty", "--stream", "access"])
    );
    let access = lines(&p, &["chatty", "--stream", "access", "--grep", "/crash"]);
    assert!(
        !access.is_empty() && access.iter().all(|r| r["process"] == "edge"),
        "{access:?}"
    );
    // The build's output is searchable too, labelled with the release it made.
    let built = lines(&p, &["chatty", "--stream", "build"]);
    assert!(
        !built.is_empty()
            && built
                .iter()
                .all(|r| r["release"] == 1 && r["process"] == "build"),
        "{built:?}"
    );

    // The live tail over server-sent events resumes exactly where a client left off.
    let first = sse(&p, "chatty", &[], Some("0-0"));
    assert!(first.len() >= 5, "{first:?}");
    let (second_id, _) = &first[1];
    let resumed = sse(&p, "chatty", &[("last-event-id", second_id.as_str())], None);
    assert_eq!(
        resumed[0].1, first[2].1,
        "the event after the one seen, no gap, no repeat"
    );
    // Everything after it, in order; lines stored since the first read may follow.
    assert!(
        resumed.len() >= first.len() - 2 && resumed[..first.len() - 2] == first[2..],
        "no gap, no repeat: {first:?} then {resumed:?}"
    );
    let filtered = sse(&p, "chatty&grep=omega", &[], Some("0-0"));
    assert_eq!(filtered.len(), 1, "{filtered:?}");
    // New lines arrive while connected.
    let live = {
        let port = p.api_port;
        let token = std::fs::read_to_string(p.data.path().join("api-token")).expect("token");
        let after = first.last().map(|(id, _)| id.clone()).expect("id");
        std::thread::spawn(move || {
            sse_raw(port, token.trim(), "chatty&grep=late", &[], Some(&after), 6)
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    p.ok(&["env", "set", "chatty", "WORD=late"]);
    assert_eq!(p.get("chatty", "/log?name=WORD").0, 200);
    let got = live.join().expect("thread");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].1.contains("the secret is late"));

    // A killed control plane loses nothing: after it comes back, the same lines are found,
    // once each.
    // The app keeps serving and writing meanwhile: what it wrote while berth was down is
    // ingested after, once.
    p.kill_control_plane();
    assert_eq!(p.get("chatty", "/log?name=WORD").0, 200);
    p.up();
    assert_eq!(
        lines(&p, &["chatty", "--grep", "the secret is alpha"]).len(),
        3
    );
    assert_eq!(lines(&p, &["chatty", "--grep", "omega"]).len(), 1);
    assert!(
        eventually(Duration::from_secs(30), || lines(
            &p,
            &["chatty", "--grep", "the secret is late"]
        )
        .len()
            == 2),
        "{:?}",
        lines(&p, &["chatty", "--grep", "the secret is late"])
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        lines(&p, &["chatty", "--grep", "the secret is late"]).len(),
        2,
        "a line was stored twice"
    );

    // berth.toml [logs] is checked.
    std::fs::write(
        dir.join("berth.toml"),
        "name = \"chatty\"\n[logs]\nretention = \"forever\"\n",
    )
    .expect("toml");
    let err = p.fails(&["deploy", &dir.display().to_string()]);
    assert!(err.contains("logs.retention"), "{err}");
}

//! End-to-end: berth's `/metrics`, scraped by a real Prometheus (Debian's package) and
//! queried over its HTTP API; the exposition passes `promtool check metrics`.

use crate::common;

use common::{eventually, free_port, Platform};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A Prometheus server on loopback that scrapes the platform every second.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn scraping(p: &Platform) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: berth\n    metrics_path: /metrics\n    authorization:\n      type: Bearer\n      credentials_file: {}\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
                p.data.path().join("api-token").display(),
                p.api_port
            ),
        )
        .expect("config");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).expect("log"))
            .spawn()
            .expect("prometheus (apt-get install prometheus)");
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    /// The value of an instant query's first sample, if any.
    fn value(&self, query: &str) -> Option<f64> {
        let out = Command::new("curl")
            .args([
                "-sf",
                "-G",
                &format!("http://127.0.0.1:{}/api/v1/query", self.port),
            ])
            .args(["--data-urlencode", &format!("query={query}")])
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    fn wait_for(&self, query: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let mut last = None;
        let done = eventually(Duration::from_secs(60), || {
            last = self.value(query);
            last.is_some_and(&ok)
        });
        assert!(done, "Prometheus answered {last:?} to {query}");
        last.unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scrape(p: &Platform, accept: &str) -> (String, String) {
    let token = std::fs::read_to_string(p.data.path().join("api-token")).expect("token");
    let out = Command::new("curl")
        .args([
            "-sf",
            "-D",
            "-",
            "-H",
            &format!("Authorization: Bearer {}", token.trim()),
        ])
        .args(["-H", &format!("Accept: {accept}")])
        .arg(format!("http://127.0.0.1:{}/metrics", p.api_port))
        .output()
        .expect("curl");
    assert!(out.status.success(), "GET /metrics failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("response");
    (head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn prometheus_scrapes_platform_edge_and_instance_metrics() {
    let p = Platform::start();
    let work = tempfile::tempdir().expect("tempdir");
    // A build that fails, then a deploy that works.
    let empty = work.path().join("hello");
    std::fs::create_dir_all(&empty).expect("dir");
    std::fs::write(empty.join("notes.txt"), "nothing to build").expect("file");
    p.fails(&["deploy", &empty.display().to_string(), "--app", "hello"]);
    p.ok(&[
        "deploy",
        &common::examples().join("hello").display().to_string(),
    ]);
    for i in 0..25 {
        let (status, _) = p.get("hello", &format!("/n/{i}"));
        assert_eq!(status, 200);
    }

    // The token guards it.
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{}/metrics", p.api_port))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");

    // Both formats; the classic one passes promtool's checks.
    let (head, body) = scrape(&p, "application/openmetrics-text; version=1.0.0");
    assert!(
        head.contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"));
    let (head, body) = scrape(&p, "text/plain");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        body.contains("berth_builds_total{app=\"hello\",outcome=\"failed\"} 1"),
        "{body}"
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    std::io::Write::write_all(promtool.stdin.as_mut().expect("stdin"), body.as_bytes())
        .expect("write");
    let checked = promtool.wait_with_output().expect("promtool");
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{body}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // A real Prometheus scrapes it and answers PromQL about it.
    let prom = Prometheus::scraping(&p);
    prom.wait_for("up{job=\"berth\"}", |v| v == 1.0);
    let served = prom.wait_for(
        "sum(berth_http_requests_total{app=\"hello\",code=\"2xx\"})",
        |v| v >= 25.0,
    );
    assert_eq!(served, 25.0, "the edge counted each request once");
    prom.wait_for(
        "sum(berth_http_request_duration_seconds_count{app=\"hello\",release=\"1\"})",
        |v| v == 25.0,
    );
    prom.wait_for(
        "sum(berth_http_request_duration_seconds_bucket{app=\"hello\",le=\"+Inf\"})",
        |v| v == 25.0,
    );
    let quick = prom.wait_for(
        "sum(berth_http_request_duration_seconds_bucket{app=\"hello\",le=\"10.0\"})",
        |v| v <= 25.0,
    );
    assert!(quick > 0.0, "some of 25 local requests answer within 10 s");
    prom.wait_for(
        "berth_deploys_total{app=\"hello\",outcome=\"succeeded\"}",
        |v| v == 1.0,
    );
    prom.wait_for(
        "berth_builds_total{app=\"hello\",outcome=\"failed\"}",
        |v| v == 1.0,
    );
    prom.wait_for("sum(berth_instance_up{app=\"hello\"})", |v| v == 1.0);
    prom.wait_for("sum(berth_instance_memory_bytes{app=\"hello\"})", |v| {
        v > 0.0
    });
    prom.wait_for(
        "sum(berth_instance_cpu_seconds_total{app=\"hello\"})",
        |v| v > 0.0,
    );
    prom.wait_for("berth_app_release{app=\"hello\"}", |v| v == 1.0);

    // More traffic shows as a rate.
    for i in 0..30 {
        let _ = p.get("hello", &format!("/again/{i}"));
    }
    prom.wait_for(
        "sum(increase(berth_http_requests_total{app=\"hello\"}[1m]))",
        |v| v >= 25.0,
    );
}

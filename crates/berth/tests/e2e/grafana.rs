//! End-to-end: the Grafana dashboards `berth grafana dashboards` writes query only what
//! berth's `/metrics` really exports (every metric name found in a live scrape of a
//! platform serving an app, probed and deployed), and every query is PromQL that
//! `promtool` accepts.

use crate::common;

use common::{copy_dir, fixture, Platform};
use std::collections::BTreeSet;
use std::process::Command;

/// The metric names in a PromQL expression (`berth_…`).
fn names_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("berth_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn the_dashboards_query_only_what_berth_exports() {
    let p = Platform::start_env(None, &[], &[("BERTH_PROBE_INTERVAL", "1s")]);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("shop");
    copy_dir(&fixture("stateful"), &dir);
    p.ok(&["deploy", dir.to_str().unwrap(), "--app", "shop"]);
    for _ in 0..3 {
        p.answer("shop", "/env?name=PORT");
    }
    let token = common::admin_token(&p);
    let mut exported = String::new();
    common::eventually(std::time::Duration::from_secs(60), || {
        exported = common::curl(&p, &token, "GET", "/metrics", &[]).1;
        exported.contains("berth_probe_success{") && exported.contains("berth_http_requests_total{")
    });
    // The series with samples, and those each declared family has (a DORA lead time
    // with no commit times yet has none, but is declared).
    let mut series: BTreeSet<String> = exported
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    for l in exported.lines() {
        let mut words = l
            .strip_prefix("# TYPE ")
            .unwrap_or_default()
            .split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        match kind {
            "counter" => series.insert(format!("{}_total", name.trim_end_matches("_total"))),
            "histogram" => {
                for suffix in ["bucket", "count", "sum"] {
                    series.insert(format!("{name}_{suffix}"));
                }
                true
            }
            _ => series.insert(name.to_string()),
        };
    }

    let out = work.path().join("dashboards");
    let written = p.json(&["grafana", "dashboards", "--out", out.to_str().unwrap()]);
    assert_eq!(written["written"].as_array().unwrap().len(), 4, "{written}");
    let mut rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    let mut checked = 0;
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(dashboard["uid"].as_str().unwrap().starts_with("berth-"));
        let mut exprs = berth_observe::grafana::queries(&dashboard);
        // The variables' queries name series too.
        for v in dashboard["templating"]["list"].as_array().unwrap() {
            if let Some(def) = v["definition"].as_str() {
                exprs.push(def.to_string());
            }
        }
        for expr in exprs {
            for name in names_in(&expr) {
                assert!(
                    series.contains(&name),
                    "{}: {name} is not in berth's /metrics",
                    path.display()
                );
            }
            if expr.starts_with("label_values") {
                continue;
            }
            let concrete = expr.replace("$app", "shop").replace("$scope", "shop");
            rules.push_str(&format!(
                "      - record: berth_dashboard_check_{checked}\n        expr: '{}'\n",
                concrete.replace('\'', "''")
            ));
            checked += 1;
        }
    }
    assert!(checked > 20, "{checked} queries");
    let file = work.path().join("rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let check = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool (the prometheus package)");
    assert!(
        check.status.success(),
        "{}\n{rules}",
        String::from_utf8_lossy(&check.stdout)
    );
}

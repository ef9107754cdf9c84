//! Grafana dashboards for berth's metrics, as provisionable JSON (`berth grafana dashboards
//! --out DIR`): the platform, one app's RED signals and resources, its SLOs, and the DORA
//! four keys. Every query names only series berth's `/metrics` exports (the tests hold them
//! to a live scrape and check each with promtool); the Prometheus data source is a
//! variable, so the files import into any Grafana.

use serde_json::{json, Value};

/// One panel's place and queries.
struct Panel {
    title: &'static str,
    kind: &'static str,
    unit: &'static str,
    /// (PromQL, legend).
    queries: Vec<(String, &'static str)>,
    w: u32,
    h: u32,
}

fn panel(
    title: &'static str,
    kind: &'static str,
    unit: &'static str,
    queries: Vec<(String, &'static str)>,
) -> Panel {
    let (w, h) = if kind == "stat" { (6, 4) } else { (12, 8) };
    Panel {
        title,
        kind,
        unit,
        queries,
        w,
        h,
    }
}

fn q(expr: &str, legend: &'static str) -> (String, &'static str) {
    (expr.to_string(), legend)
}

/// The panels laid out left to right, top to bottom.
fn panels(list: Vec<Panel>) -> Vec<Value> {
    let (mut x, mut y, mut row_h) = (0, 0, 0);
    list.into_iter()
        .enumerate()
        .map(|(i, p)| {
            if x + p.w > 24 {
                x = 0;
                y += row_h;
                row_h = 0;
            }
            let pos = json!({ "x": x, "y": y, "w": p.w, "h": p.h });
            x += p.w;
            row_h = row_h.max(p.h);
            let targets: Vec<Value> = p
                .queries
                .iter()
                .enumerate()
                .map(|(j, (expr, legend))| {
                    json!({
                        "refId": char::from(b'A' + j as u8).to_string(),
                        "datasource": { "type": "prometheus", "uid": "${datasource}" },
                        "expr": expr,
                        "legendFormat": legend,
                    })
                })
                .collect();
            json!({
                "id": i + 1,
                "type": p.kind,
                "title": p.title,
                "gridPos": pos,
                "datasource": { "type": "prometheus", "uid": "${datasource}" },
                "fieldConfig": { "defaults": { "unit": p.unit }, "overrides": [] },
                "options": {},
                "targets": targets,
            })
        })
        .collect()
}

fn datasource() -> Value {
    json!({
        "name": "datasource",
        "label": "Prometheus",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
    })
}

fn label_variable(name: &str, label: &str, query: &str) -> Value {
    json!({
        "name": name,
        "label": label,
        "type": "query",
        "datasource": { "type": "prometheus", "uid": "${datasource}" },
        "query": { "query": query, "refId": "variable" },
        "definition": query,
        "refresh": 2,
        "includeAll": false,
        "multi": false,
        "sort": 1,
        "current": {},
        "hide": 0,
    })
}

fn dashboard(uid: &str, title: &str, variables: Vec<Value>, list: Vec<Panel>) -> Value {
    let mut templating = vec![datasource()];
    templating.extend(variables);
    json!({
        "uid": uid,
        "title": title,
        "tags": ["berth"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": true,
        "refresh": "30s",
        "time": { "from": "now-6h", "to": "now" },
        "templating": { "list": templating },
        "annotations": { "list": [] },
        "panels": panels(list),
    })
}

/// The dashboards: (file name, dashboard JSON).
pub fn dashboards() -> Vec<(&'static str, Value)> {
    let app = r#"app="$app""#;
    let platform = dashboard(
        "berth-platform",
        "berth · platform",
        vec![],
        vec![
            panel("Apps", "stat", "none", vec![q("berth_apps", "apps")]),
            panel("Instances up", "stat", "none", vec![q("sum(berth_instance_up)", "up")]),
            panel("Public URLs failing", "stat", "none", vec![q("count(berth_probe_success == 0) or vector(0)", "failing")]),
            panel("Deploys (24 h)", "stat", "none", vec![q("sum(increase(berth_deploys_total[1d]))", "deploys")]),
            panel("Requests per second by app", "timeseries", "reqps", vec![q("sum by (app) (rate(berth_http_requests_total[5m]))", "{{app}}")]),
            panel("5xx share by app", "timeseries", "percentunit", vec![q(r#"sum by (app) (rate(berth_http_requests_total{code="5xx"}[5m])) / sum by (app) (rate(berth_http_requests_total[5m]))"#, "{{app}}")]),
            panel("Deploys by outcome", "timeseries", "none", vec![q("sum by (outcome) (increase(berth_deploys_total[1h]))", "{{outcome}}")]),
            panel("Build time (p90)", "timeseries", "s", vec![q("histogram_quantile(0.9, sum by (le) (rate(berth_build_duration_seconds_bucket[1h])))", "p90")]),
            panel("Memory by app", "timeseries", "bytes", vec![q("sum by (app) (berth_instance_memory_bytes)", "{{app}}")]),
            panel("Days until a certificate expires", "timeseries", "d", vec![q("min by (app) ((berth_probe_ssl_earliest_cert_expiry - time()) / 86400)", "{{app}}")]),
        ],
    );
    let app_variable = || label_variable("app", "App", "label_values(berth_app_release, app)");
    let red = dashboard(
        "berth-app",
        "berth · app",
        vec![app_variable()],
        vec![
            panel("Serving release", "stat", "none", vec![q(&format!("berth_app_release{{{app}}}"), "release")]),
            panel("Instances up", "stat", "none", vec![q(&format!("sum(berth_instance_up{{{app}}})"), "up")]),
            panel("Restarts (1 h)", "stat", "none", vec![q(&format!("sum(increase(berth_instance_restarts_total{{{app}}}[1h]))"), "restarts")]),
            panel("Out-of-memory kills (24 h)", "stat", "none", vec![q(&format!("sum(increase(berth_instance_oom_kills_total{{{app}}}[1d]))"), "OOM kills")]),
            panel("Requests per second by status class", "timeseries", "reqps", vec![q(&format!("sum by (code) (rate(berth_http_requests_total{{{app}}}[5m]))"), "{{code}}")]),
            panel("Errors (5xx share)", "timeseries", "percentunit", vec![q(&format!(r#"sum(rate(berth_http_requests_total{{{app},code="5xx"}}[5m])) / sum(rate(berth_http_requests_total{{{app}}}[5m]))"#), "5xx")]),
            panel("Latency", "timeseries", "s", vec![
                q(&format!("histogram_quantile(0.5, sum by (le) (rate(berth_http_request_duration_seconds_bucket{{{app}}}[5m])))"), "p50"),
                q(&format!("histogram_quantile(0.9, sum by (le) (rate(berth_http_request_duration_seconds_bucket{{{app}}}[5m])))"), "p90"),
                q(&format!("histogram_quantile(0.99, sum by (le) (rate(berth_http_request_duration_seconds_bucket{{{app}}}[5m])))"), "p99"),
            ]),
            panel("Requests by release", "timeseries", "reqps", vec![q(&format!("sum by (release) (rate(berth_http_requests_total{{{app}}}[5m]))"), "v{{release}}")]),
            panel("CPU by instance", "timeseries", "percentunit", vec![q(&format!("rate(berth_instance_cpu_seconds_total{{{app}}}[5m])"), "{{instance}}")]),
            panel("Memory by instance", "timeseries", "bytes", vec![q(&format!("berth_instance_memory_bytes{{{app}}}"), "{{instance}}")]),
        ],
    );
    // The objectives' defaults (berth.toml's [slo] may set others): 99.9% of requests not
    // 5xx, 99% under 300 ms; the budget is 30 days'.
    let availability = |w: &str| {
        format!(
            r#"sum(rate(berth_http_requests_total{{{app},code="5xx"}}[{w}])) / sum(rate(berth_http_requests_total{{{app}}}[{w}]))"#
        )
    };
    let slow = |w: &str| {
        format!(
            r#"1 - sum(rate(berth_http_request_duration_seconds_bucket{{{app},le="0.3"}}[{w}])) / sum(rate(berth_http_request_duration_seconds_count{{{app}}}[{w}]))"#
        )
    };
    let slo = dashboard(
        "berth-slo",
        "berth · SLOs",
        vec![app_variable()],
        vec![
            panel(
                "Availability error budget left (30 d, 99.9%)",
                "stat",
                "percentunit",
                vec![q(&format!("1 - ({}) / 0.001", availability("30d")), "left")],
            ),
            panel(
                "Latency error budget left (30 d, 99% < 300 ms)",
                "stat",
                "percentunit",
                vec![q(&format!("1 - ({}) / 0.01", slow("30d")), "left")],
            ),
            panel(
                "Availability burn rate",
                "timeseries",
                "none",
                vec![
                    q(&format!("({}) / 0.001", availability("1h")), "1 h"),
                    q(&format!("({}) / 0.001", availability("6h")), "6 h"),
                ],
            ),
            panel(
                "Latency burn rate",
                "timeseries",
                "none",
                vec![
                    q(&format!("({}) / 0.01", slow("1h")), "1 h"),
                    q(&format!("({}) / 0.01", slow("6h")), "6 h"),
                ],
            ),
        ],
    );
    let scope = r#"scope="$scope",window="30d""#;
    let dora = dashboard(
        "berth-dora",
        "berth · DORA four keys",
        vec![label_variable(
            "scope",
            "App or platform",
            "label_values(berth_dora_deployments, scope)",
        )],
        vec![
            panel(
                "Deployments per day (30 d)",
                "stat",
                "none",
                vec![q(
                    &format!("berth_dora_deployments_per_day{{{scope}}}"),
                    "per day",
                )],
            ),
            panel(
                "Lead time for changes (30 d)",
                "stat",
                "s",
                vec![q(
                    &format!("berth_dora_lead_time_seconds{{{scope}}}"),
                    "median",
                )],
            ),
            panel(
                "Change failure rate (30 d)",
                "stat",
                "percentunit",
                vec![q(
                    &format!("berth_dora_change_failure_rate{{{scope}}}"),
                    "rate",
                )],
            ),
            panel(
                "Time to restore (30 d)",
                "stat",
                "s",
                vec![q(
                    &format!("berth_dora_time_to_restore_seconds{{{scope}}}"),
                    "median",
                )],
            ),
            panel(
                "Deployments by window",
                "timeseries",
                "none",
                vec![q(r#"berth_dora_deployments{scope="$scope"}"#, "{{window}}")],
            ),
            panel(
                "Performance band (1 low … 4 elite)",
                "timeseries",
                "none",
                vec![q(r#"berth_dora_performance{scope="$scope"}"#, "{{window}}")],
            ),
        ],
    );
    vec![
        ("berth-platform.json", platform),
        ("berth-app.json", red),
        ("berth-slo.json", slo),
        ("berth-dora.json", dora),
    ]
}

/// Every query of a dashboard.
pub fn queries(dashboard: &Value) -> Vec<String> {
    dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboards_have_unique_uids_panels_that_do_not_overlap_and_queries() {
        let all = dashboards();
        let mut uids: Vec<&str> = all.iter().filter_map(|(_, d)| d["uid"].as_str()).collect();
        uids.sort();
        uids.dedup();
        assert_eq!(uids.len(), all.len());
        for (file, d) in &all {
            let panels = d["panels"].as_array().unwrap();
            assert!(!panels.is_empty(), "{file}");
            for p in panels {
                let g = &p["gridPos"];
                assert!(
                    g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
                    "{file}: {p}"
                );
            }
            assert!(queries(d).iter().all(|q| q.contains("berth_")), "{file}");
        }
    }
}

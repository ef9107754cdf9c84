//! End-to-end: export to the standard protocols. berth pushes every app's log to a Loki
//! push endpoint (with its labels; a refused push is retried; a restart sends nothing
//! twice) and sends traces of its deploys to an OTLP/HTTP endpoint (a span per step, each
//! with the app and release), and apps get `OTEL_EXPORTER_OTLP_ENDPOINT`.
//!
//! Grafana Loki and an OpenTelemetry collector are not packaged for this machine (Debian's
//! `loki` is a genetics program), so both endpoints are a receiver in this test that keeps
//! what it is sent: the Loki body is checked against Loki's documented push format, and
//! the traces are decoded with the OTLP protobuf definitions (`opentelemetry-proto`).

use crate::common;

use common::{copy_dir, eventually, Platform, Received};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use std::time::Duration;

/// Every Loki line received: (labels, line).
fn loki_lines(got: &[Received]) -> Vec<(serde_json::Value, String)> {
    got.iter()
        .filter(|r| r.path == "/loki/api/v1/push" && !r.refused)
        .flat_map(|r| {
            let body: serde_json::Value = serde_json::from_str(&r.body).expect("push body");
            body["streams"]
                .as_array()
                .expect("streams")
                .iter()
                .flat_map(|s| {
                    let labels = s["stream"].clone();
                    s["values"]
                        .as_array()
                        .expect("values")
                        .iter()
                        .map(move |v| {
                            assert!(v[0].as_str().expect("ns").parse::<u128>().is_ok());
                            (labels.clone(), v[1].as_str().expect("line").to_string())
                        })
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn spans(got: &[Received]) -> Vec<Span> {
    got.iter()
        .filter(|r| r.path == "/v1/traces" && !r.refused)
        .filter(|r| {
            r.headers.get("content-type").map(String::as_str) == Some("application/x-protobuf")
        })
        .flat_map(|r| {
            let req: ExportTraceServiceRequest =
                prost::Message::decode(r.raw.as_slice()).expect("OTLP protobuf");
            req.resource_spans
                .into_iter()
                .flat_map(|rs| rs.scope_spans)
                .flat_map(|ss| ss.spans)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
}

#[test]
fn logs_go_to_loki_and_deploys_to_otlp_with_their_labels() {
    let (port, got) = common::receiver(1);
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut p = Platform::start_with(&["--loki-url", &endpoint, "--otlp-endpoint", &endpoint]);
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("traced");
    copy_dir(&common::fixture("stateful"), &dir);
    let sha = common::git_commit_all(&dir);
    p.ok(&["deploy", &dir.display().to_string()]);
    p.ok(&["env", "set", "traced", "WORD=exported-once"]);
    assert_eq!(p.get("traced", "/log?name=WORD").0, 200);

    // The app knows where to send its own telemetry.
    assert_eq!(
        p.answer("traced", "/env?name=OTEL_EXPORTER_OTLP_ENDPOINT"),
        endpoint
    );
    assert_eq!(p.answer("traced", "/env?name=OTEL_SERVICE_NAME"), "traced");
    assert!(p
        .answer("traced", "/env?name=OTEL_RESOURCE_ATTRIBUTES")
        .contains(&format!("service.version={sha},berth.release=2")));

    // Loki got the line once, labelled, after a refused first push.
    let line = "the secret is exported-once";
    assert!(
        eventually(Duration::from_secs(30), || loki_lines(
            &got.lock().expect("lock")
        )
        .iter()
        .any(|(_, l)| l == line)),
        "the line never reached Loki: {:?}",
        got.lock()
            .expect("lock")
            .iter()
            .map(|r| &r.path)
            .collect::<Vec<_>>()
    );
    let lines = loki_lines(&got.lock().expect("lock"));
    let (labels, _) = lines.iter().find(|(_, l)| l == line).expect("line");
    assert_eq!(labels["app"], "traced");
    assert_eq!(labels["project"], "default");
    assert_eq!(labels["release"], "2");
    assert_eq!(labels["process"], "web");
    assert_eq!(labels["instance"], "web.0");
    assert_eq!(labels["stream"], "runtime");
    assert_eq!(labels["commit"], sha.as_str());
    assert!(
        eventually(Duration::from_secs(30), || loki_lines(
            &got.lock().expect("lock")
        )
        .iter()
        .any(
            |(l, text)| l["stream"] == "access" && text.starts_with("GET /log?name=WORD 200")
        )),
        "no access line in Loki"
    );
    assert!(
        lines.iter().any(|(l, _)| l["stream"] == "build"),
        "no build line in Loki"
    );

    // The deploy and the env change are traces: a root span with a child per step, each
    // with the app and the release it made.
    let traced = |op: &str, release: &str| {
        let all = spans(&got.lock().expect("lock"));
        let Some(root) = all.iter().find(|s| {
            s.name == op
                && s.parent_span_id.is_empty()
                && attr(s, "berth.app").as_deref() == Some("traced")
                && attr(s, "berth.release").as_deref() == Some(release)
        }) else {
            return Vec::new();
        };
        all.iter()
            .filter(|s| s.trace_id == root.trace_id && s.parent_span_id == root.span_id)
            .filter(|s| {
                attr(s, "berth.app").as_deref() == Some("traced")
                    && attr(s, "berth.release").as_deref() == Some(release)
                    && s.end_time_unix_nano >= s.start_time_unix_nano
                    && s.start_time_unix_nano >= root.start_time_unix_nano
            })
            .map(|s| s.name.clone())
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(30), || {
            let steps = traced("deploy", "1");
            ["build", "start", "health", "switch"]
                .iter()
                .all(|s| steps.iter().any(|n| n == s))
        }),
        "no deploy trace with build/start/health/switch spans: {:?}",
        spans(&got.lock().expect("lock"))
            .iter()
            .map(|s| s.name.clone())
            .collect::<Vec<_>>()
    );
    assert!(
        eventually(Duration::from_secs(30), || traced("env", "2")
            .iter()
            .any(|n| n == "switch")),
        "no trace of the env change"
    );

    // berth dies without warning and comes back: nothing is pushed twice, new lines go on.
    p.kill_control_plane();
    p.up();
    p.ok(&["env", "set", "traced", "WORD=after-restart"]);
    assert_eq!(p.get("traced", "/log?name=WORD").0, 200);
    assert!(
        eventually(Duration::from_secs(30), || loki_lines(
            &got.lock().expect("lock")
        )
        .iter()
        .any(|(_, l)| l == "the secret is after-restart")),
        "lines after the restart never reached Loki"
    );
    let lines = loki_lines(&got.lock().expect("lock"));
    assert_eq!(
        lines.iter().filter(|(_, l)| l == line).count(),
        1,
        "a line was pushed twice"
    );
}

#[test]
fn a_malformed_export_url_is_refused_before_anything_starts() {
    let p = Platform::unstarted(None, &["--loki-url", "loki:3100"], &[]);
    let out = p
        .command(common::berth_bin())
        .args(p.up_args())
        .output()
        .expect("berth up");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--loki-url") && err.contains("http://"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(p.data.path()).expect("data dir").count(),
        0,
        "nothing written"
    );
}

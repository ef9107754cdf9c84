//! berth's `/metrics`: what the platform did (builds, deploys, their outcomes and
//! durations), what the edge served per app and release (requests by status class and a
//! latency histogram: RED), and what each instance uses (CPU, memory, restarts, OOM kills).
//!
//! Platform counters live here for the life of the control plane; the edge's counts and the
//! instances' usage are read at each scrape and handed to [`Metrics::render`]. Exposition is
//! OpenMetrics (prometheus-client), or the classic Prometheus text format for clients that do
//! not ask for OpenMetrics.

use berth_core::metrics::{EdgeMetricsSnapshot, LATENCY_BUCKETS, STATUS_CLASSES};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Buckets (seconds) of build and deploy durations.
const WORK_BUCKETS: [f64; 10] = [1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0];

type Labels = Vec<(&'static str, String)>;

fn work_histogram() -> Histogram {
    Histogram::new(WORK_BUCKETS)
}

/// One instance as a scrape sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceSample {
    pub app: String,
    pub release: u32,
    pub process: String,
    /// Container id.
    pub instance: String,
    /// Whether it runs.
    pub running: bool,
    /// Restarts after exits.
    pub restarts: u32,
    /// CPU time, seconds (`None` when its cgroup is gone).
    pub cpu_seconds: Option<f64>,
    /// Memory charged to it, bytes.
    pub memory_bytes: Option<u64>,
    /// OOM kills.
    pub oom_kills: Option<u64>,
}

/// What one scrape reads besides the platform counters.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// The edge's latest counts, if it wrote any.
    pub edge: Option<EdgeMetricsSnapshot>,
    pub instances: Vec<InstanceSample>,
    /// Apps and the release each serves.
    pub apps: Vec<(String, Option<u32>)>,
    /// DORA four keys per scope and window.
    pub dora: Vec<berth_core::dora::DoraView>,
    /// The latest blackbox probe of each app's public URLs: (app, result).
    pub probes: Vec<(String, berth_core::api::ProbeResult)>,
}

/// Exposition formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
    /// `text/plain; version=0.0.4`.
    Prometheus,
}

impl Format {
    /// The format an `Accept` header asks for (OpenMetrics only when asked).
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// Its `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The platform's metrics.
pub struct Metrics {
    registry: Registry,
    deploys: Family<Labels, Counter>,
    deploy_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    builds: Family<Labels, Counter>,
    build_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    scrape: Arc<Mutex<Scrape>>,
    /// One render at a time (the scrape data is handed over through `scrape`).
    rendering: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let deploys = Family::<Labels, Counter>::default();
        let deploy_seconds =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(work_histogram);
        let builds = Family::<Labels, Counter>::default();
        let build_seconds =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(work_histogram);
        registry.register(
            "berth_deploys",
            "Deploys (rollouts of a release: deploys, rollbacks, config and secret changes) by app and outcome",
            deploys.clone(),
        );
        registry.register(
            "berth_deploy_duration_seconds",
            "How long rollouts took, by outcome",
            deploy_seconds.clone(),
        );
        registry.register("berth_builds", "Builds by app and outcome", builds.clone());
        registry.register(
            "berth_build_duration_seconds",
            "How long builds took, by outcome",
            build_seconds.clone(),
        );
        let scrape = Arc::new(Mutex::new(Scrape::default()));
        registry.register_collector(Box::new(ScrapeCollector(scrape.clone())));
        Self {
            registry,
            deploys,
            deploy_seconds,
            builds,
            build_seconds,
            scrape,
            rendering: Mutex::new(()),
        }
    }
}

impl Metrics {
    /// Counts a finished rollout (`outcome`: succeeded or failed).
    pub fn deploy_finished(&self, app: &str, outcome: &str, took: Duration) {
        self.deploys
            .get_or_create(&vec![
                ("app", app.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
        self.deploy_seconds
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .observe(took.as_secs_f64());
    }

    /// Counts a finished build (`outcome`: succeeded or failed).
    pub fn build_finished(&self, app: &str, outcome: &str, took: Duration) {
        self.builds
            .get_or_create(&vec![
                ("app", app.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
        self.build_seconds
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .observe(took.as_secs_f64());
    }

    /// Everything, in `format`.
    pub fn render(&self, scrape: Scrape, format: Format) -> String {
        let _one = self.rendering.lock();
        if let Ok(mut s) = self.scrape.lock() {
            *s = scrape;
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        if let Ok(mut s) = self.scrape.lock() {
            *s = Scrape::default();
        }
        match format {
            Format::OpenMetrics => out,
            Format::Prometheus => to_prometheus_text(&out),
        }
    }
}

/// The OpenMetrics text as the classic Prometheus format: no `# EOF` or `# UNIT`, and a
/// counter family named after its `_total` samples.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Encodes the scrape's data.
#[derive(Debug)]
struct ScrapeCollector(Arc<Mutex<Scrape>>);

fn family<'a>(
    encoder: &'a mut DescriptorEncoder,
    name: &'a str,
    help: &str,
    kind: MetricType,
) -> Result<prometheus_client::encoding::MetricEncoder<'a>, std::fmt::Error> {
    encoder.encode_descriptor(name, help, None, kind)
}

impl Collector for ScrapeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(s) = self.0.lock() else {
            return Ok(());
        };
        let mut m = family(
            &mut encoder,
            "berth_apps",
            "Apps on the platform",
            MetricType::Gauge,
        )?;
        ConstGauge::new(s.apps.len() as i64)
            .encode(m.encode_family(&Vec::<(&str, String)>::new())?)?;

        let mut m = family(
            &mut encoder,
            "berth_app_release",
            "The release each app serves (0: none yet)",
            MetricType::Gauge,
        )?;
        for (app, release) in &s.apps {
            let labels: Labels = vec![("app", app.clone())];
            ConstGauge::new(i64::from(release.unwrap_or(0))).encode(m.encode_family(&labels)?)?;
        }

        if let Some(edge) = &s.edge {
            let mut m = family(
                &mut encoder,
                "berth_edge_start_time_seconds",
                "When the edge process started (its counters count from then)",
                MetricType::Gauge,
            )?;
            ConstGauge::new(edge.started_at)
                .encode(m.encode_family(&Vec::<(&str, String)>::new())?)?;

            let mut m = family(
                &mut encoder,
                "berth_http_requests",
                "Responses the edge gave, by app, release and status class",
                MetricType::Counter,
            )?;
            for series in &edge.series {
                for (i, class) in STATUS_CLASSES.iter().enumerate() {
                    let labels: Labels = vec![
                        ("app", series.app.clone()),
                        ("release", series.release.to_string()),
                        ("code", (*class).to_string()),
                    ];
                    ConstCounter::new(series.responses[i]).encode(m.encode_family(&labels)?)?;
                }
            }

            let mut m = family(
                &mut encoder,
                "berth_http_request_duration_seconds",
                "Time from the request to the response's head, through the edge, by app and release",
                MetricType::Histogram,
            )?;
            for series in &edge.series {
                let labels: Labels = vec![
                    ("app", series.app.clone()),
                    ("release", series.release.to_string()),
                ];
                // prometheus-client adds the buckets up itself, and writes `f64::MAX` as +Inf.
                let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
                    .iter()
                    .copied()
                    .chain([f64::MAX])
                    .zip(
                        series
                            .latency_buckets
                            .iter()
                            .copied()
                            .chain(std::iter::repeat(0)),
                    )
                    .collect();
                m.encode_family(&labels)?.encode_histogram::<Labels>(
                    series.latency_sum_seconds,
                    series.count(),
                    &buckets,
                    None,
                )?;
            }
        }

        let instance_labels = |i: &InstanceSample| -> Labels {
            vec![
                ("app", i.app.clone()),
                ("release", i.release.to_string()),
                ("process", i.process.clone()),
                ("instance", i.instance.clone()),
            ]
        };
        let mut m = family(
            &mut encoder,
            "berth_instance_up",
            "1 when the instance runs, 0 when it crashed or stopped",
            MetricType::Gauge,
        )?;
        for i in &s.instances {
            ConstGauge::new(i64::from(i.running)).encode(m.encode_family(&instance_labels(i))?)?;
        }
        let mut m = family(
            &mut encoder,
            "berth_instance_restarts",
            "Restarts of the instance after it exited",
            MetricType::Counter,
        )?;
        for i in &s.instances {
            ConstCounter::new(u64::from(i.restarts))
                .encode(m.encode_family(&instance_labels(i))?)?;
        }
        let mut m = family(
            &mut encoder,
            "berth_instance_cpu_seconds",
            "CPU time the instance used (its cgroup)",
            MetricType::Counter,
        )?;
        for i in &s.instances {
            if let Some(cpu) = i.cpu_seconds {
                ConstCounter::new(cpu).encode(m.encode_family(&instance_labels(i))?)?;
            }
        }
        let mut m = family(
            &mut encoder,
            "berth_instance_memory_bytes",
            "Memory charged to the instance's cgroup now (page cache included)",
            MetricType::Gauge,
        )?;
        for i in &s.instances {
            if let Some(mem) = i.memory_bytes {
                ConstGauge::new(mem as i64).encode(m.encode_family(&instance_labels(i))?)?;
            }
        }
        let mut m = family(
            &mut encoder,
            "berth_instance_oom_kills",
            "Processes of the instance the out-of-memory killer ended",
            MetricType::Counter,
        )?;
        for i in &s.instances {
            if let Some(n) = i.oom_kills {
                ConstCounter::new(n).encode(m.encode_family(&instance_labels(i))?)?;
            }
        }
        encode_probes(&mut encoder, &s.probes)?;
        encode_dora(&mut encoder, &s.dora)
    }
}

/// The latest probe of each public URL, as blackbox_exporter names its series.
fn encode_probes(
    encoder: &mut DescriptorEncoder,
    probes: &[(String, berth_core::api::ProbeResult)],
) -> Result<(), std::fmt::Error> {
    let labels = |app: &String, r: &berth_core::api::ProbeResult| -> Labels {
        vec![("app", app.clone()), ("url", r.url.clone())]
    };
    type Pick = fn(&berth_core::api::ProbeResult) -> Option<f64>;
    let gauges: [(&str, &str, Pick); 4] = [
        (
            "berth_probe_success",
            "Whether the last blackbox probe of the URL (through the edge) got an answer that is not a server error",
            |r| Some(if r.ok() { 1.0 } else { 0.0 }),
        ),
        (
            "berth_probe_duration_seconds",
            "Time of the last blackbox probe of the URL until the answer's head",
            |r| Some(r.latency_ms / 1000.0),
        ),
        (
            "berth_probe_http_status_code",
            "HTTP status of the last blackbox probe of the URL (0: no answer)",
            |r| Some(f64::from(r.status.unwrap_or(0))),
        ),
        (
            "berth_probe_ssl_earliest_cert_expiry",
            "When the certificate served for the URL expires, Unix seconds (HTTPS URLs)",
            |r| r.tls_expires_at.map(|t| t as f64),
        ),
    ];
    for (name, help, pick) in gauges {
        let mut m = family(encoder, name, help, MetricType::Gauge)?;
        for (app, r) in probes {
            if let Some(x) = pick(r) {
                ConstGauge::new(x).encode(m.encode_family(&labels(app, r))?)?;
            }
        }
    }
    Ok(())
}

fn encode_dora(
    encoder: &mut DescriptorEncoder,
    views: &[berth_core::dora::DoraView],
) -> Result<(), std::fmt::Error> {
    let labels = |v: &berth_core::dora::DoraView| -> Labels {
        vec![("scope", v.scope.clone()), ("window", v.window.clone())]
    };
    type Pick = fn(&berth_core::dora::DoraView) -> Option<f64>;
    let gauges: [(&str, &str, Pick); 5] = [
        (
            "berth_dora_deployments",
            "DORA: code deploys that went live in the window (scope: an app, or platform)",
            |v| Some(v.deployments as f64),
        ),
        (
            "berth_dora_deployments_per_day",
            "DORA deployment frequency: code deploys that went live per day",
            |v| Some(v.deployments_per_day),
        ),
        (
            "berth_dora_lead_time_seconds",
            "DORA lead time for changes: median time from commit to serving",
            |v| v.lead_time_seconds,
        ),
        (
            "berth_dora_change_failure_rate",
            "DORA change failure rate: share of code deploys that failed or were rolled back",
            |v| v.change_failure_rate,
        ),
        (
            "berth_dora_time_to_restore_seconds",
            "DORA time to restore service: median time from a failure to the next successful rollout",
            |v| v.time_to_restore_seconds,
        ),
    ];
    for (name, help, pick) in gauges {
        let mut m = family(encoder, name, help, MetricType::Gauge)?;
        for v in views {
            if let Some(x) = pick(v) {
                ConstGauge::new(x).encode(m.encode_family(&labels(v))?)?;
            }
        }
    }
    let mut m = family(
        encoder,
        "berth_dora_performance",
        "DORA performance band (elite, high, medium, low) overall; 1 for the band reached",
        MetricType::Gauge,
    )?;
    for v in views {
        if let Some(band) = v.bands.overall {
            let mut l = labels(v);
            l.push(("band", band.as_str().to_string()));
            ConstGauge::new(1i64).encode(m.encode_family(&l)?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::metrics::RequestSeries;

    fn scrape() -> Scrape {
        let mut buckets = vec![0; LATENCY_BUCKETS.len() + 1];
        buckets[0] = 9;
        buckets[12] = 1;
        Scrape {
            edge: Some(EdgeMetricsSnapshot {
                started_at: 1_790_000_000,
                written_at: 1_790_000_100,
                series: vec![RequestSeries {
                    app: "shop".into(),
                    release: 3,
                    responses: [0, 8, 0, 1, 1],
                    latency_buckets: buckets,
                    latency_sum_seconds: 12.5,
                }],
            }),
            instances: vec![InstanceSample {
                app: "shop".into(),
                release: 3,
                process: "web".into(),
                instance: "shop-v3-web-0-abc".into(),
                running: true,
                restarts: 2,
                cpu_seconds: Some(1.25),
                memory_bytes: Some(10 << 20),
                oom_kills: Some(1),
            }],
            apps: vec![("shop".into(), Some(3))],
            dora: vec![berth_core::dora::compute(
                "shop",
                "7d",
                7 * 86_400,
                1_800_000_000,
                &[],
                &[],
            )],
            probes: vec![
                (
                    "shop".into(),
                    berth_core::api::ProbeResult {
                        at: 1_790_000_000,
                        url: "https://shop.localhost:8443/".into(),
                        status: Some(200),
                        latency_ms: 12.5,
                        error: None,
                        tls_expires_at: Some(1_800_000_000),
                    },
                ),
                (
                    "shop".into(),
                    berth_core::api::ProbeResult {
                        at: 1_790_000_000,
                        url: "http://shop.localhost:8080/".into(),
                        status: None,
                        latency_ms: 10_000.0,
                        error: Some("timed out".into()),
                        tls_expires_at: None,
                    },
                ),
            ],
        }
    }

    #[test]
    fn both_formats_carry_the_same_samples() {
        let m = Metrics::default();
        m.deploy_finished("shop", "succeeded", Duration::from_secs(3));
        m.build_finished("shop", "failed", Duration::from_secs(70));
        let om = m.render(scrape(), Format::OpenMetrics);
        assert!(om.ends_with("# EOF\n"), "{om}");
        for sample in [
            "berth_deploys_total{app=\"shop\",outcome=\"succeeded\"} 1",
            "berth_builds_total{app=\"shop\",outcome=\"failed\"} 1",
            "berth_http_requests_total{app=\"shop\",release=\"3\",code=\"2xx\"} 8",
            "berth_http_requests_total{app=\"shop\",release=\"3\",code=\"5xx\"} 1",
            "berth_http_request_duration_seconds_bucket{le=\"0.005\",app=\"shop\",release=\"3\"} 9",
            "berth_http_request_duration_seconds_count{app=\"shop\",release=\"3\"} 10",
            "berth_http_request_duration_seconds_bucket{le=\"0.3\",app=\"shop\",release=\"3\"} 9",
            "berth_http_request_duration_seconds_bucket{le=\"10.0\",app=\"shop\",release=\"3\"} 9",
            "berth_http_request_duration_seconds_bucket{le=\"+Inf\",app=\"shop\",release=\"3\"} 10",
            "berth_instance_restarts_total{app=\"shop\",release=\"3\",process=\"web\",instance=\"shop-v3-web-0-abc\"} 2",
            "berth_instance_memory_bytes{app=\"shop\",release=\"3\",process=\"web\",instance=\"shop-v3-web-0-abc\"} 10485760",
            "berth_app_release{app=\"shop\"} 3",
            "berth_dora_deployments{scope=\"shop\",window=\"7d\"} 0",
            "berth_probe_success{app=\"shop\",url=\"https://shop.localhost:8443/\"} 1",
            "berth_probe_success{app=\"shop\",url=\"http://shop.localhost:8080/\"} 0",
            "berth_probe_http_status_code{app=\"shop\",url=\"http://shop.localhost:8080/\"} 0",
            "berth_probe_duration_seconds{app=\"shop\",url=\"https://shop.localhost:8443/\"} 0.0125",
            "berth_probe_ssl_earliest_cert_expiry{app=\"shop\",url=\"https://shop.localhost:8443/\"} 1800000000",
        ] {
            assert!(om.contains(sample), "missing {sample} in\n{om}");
        }
        let text = m.render(scrape(), Format::Prometheus);
        assert!(!text.contains("# EOF"));
        assert!(
            text.contains("# TYPE berth_deploys_total counter"),
            "{text}"
        );
        assert!(text.contains("# TYPE berth_http_request_duration_seconds histogram"));
        assert!(
            text.contains("berth_http_requests_total{app=\"shop\",release=\"3\",code=\"4xx\"} 1")
        );
        // Nothing of one scrape stays for the next.
        let empty = m.render(Scrape::default(), Format::OpenMetrics);
        assert!(!empty.contains("berth_http_requests_total{"), "{empty}");
        assert!(empty.contains("berth_deploys_total{"));
        assert!(!empty.contains("berth_probe_success{"), "{empty}");
    }

    #[test]
    fn openmetrics_only_when_asked() {
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Prometheus);
        assert_eq!(Format::negotiate(None), Format::Prometheus);
    }
}

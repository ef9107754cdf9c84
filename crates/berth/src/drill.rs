//! `berth drill APP`: a bounded load against an app while its instance, the control plane
//! and the app's release are taken away in turn; what each phase cost, in failed requests,
//! latency and SLO burn rate.

use crate::cli::Global;
use crate::output;
use anyhow::{anyhow, bail, Result};
use berth_client::load::{Load, LoadSpec, WindowSummary};
use berth_core::api::{AppSummary, DeployEvent, InstanceView};
use berth_core::model::InstanceState;
use serde::Serialize;
use std::time::{Duration, Instant};

/// What a drill sends and for how long.
#[derive(Debug, Clone)]
pub struct DrillSettings {
    pub phase: Duration,
    pub concurrency: usize,
    pub rate: u32,
    pub path: String,
}

/// Longest the control plane may take to answer again after its restart.
const API_BACK_WITHIN: Duration = Duration::from_secs(60);

/// One phase's outcome.
#[derive(Debug, Serialize)]
struct Phase {
    phase: &'static str,
    /// What was done at its start.
    action: String,
    #[serde(flatten)]
    load: WindowSummary,
    /// Share of the responses that failed.
    error_ratio: f64,
    /// How fast the phase spent the error budget: 1 spends it exactly over the SLO's
    /// period, 14.4 pages (berth's fast-burn threshold).
    burn_rate: f64,
    /// Why the phase was skipped, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    app: String,
    url: String,
    /// The availability objective the burn rates are measured against (percent).
    availability_objective: f64,
    phases: Vec<Phase>,
    failed: u64,
}

fn phase(
    name: &'static str,
    action: String,
    load: WindowSummary,
    objective: f64,
    skipped: Option<String>,
) -> Phase {
    let error_ratio = if load.requests == 0 {
        0.0
    } else {
        load.failed as f64 / load.requests as f64
    };
    let budget = (1.0 - objective / 100.0).max(1e-9);
    Phase {
        phase: name,
        action,
        error_ratio,
        burn_rate: error_ratio / budget,
        load,
        skipped,
    }
}

/// Where requests for `url` go: a `*.localhost` name is this machine's edge.
fn resolve(url: &reqwest::Url) -> Option<(String, std::net::SocketAddr)> {
    let host = url.host_str()?;
    let local = host == "localhost" || host.ends_with(".localhost");
    let port = url.port_or_known_default()?;
    local.then(|| {
        (
            host.to_string(),
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        )
    })
}

async fn wait_for_api(client: &berth_client::Client) -> Result<Duration> {
    let started = Instant::now();
    while started.elapsed() < API_BACK_WITHIN {
        if client.get_text("/v1/health").await.is_ok() {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "the control plane did not answer within {}s of its restart\nhint: see its output (api.json's data directory, up.log or control-plane.log)",
        API_BACK_WITHIN.as_secs()
    )
}

fn progress(g: &Global, text: &str) {
    if !g.json {
        eprintln!("{text}");
    }
}

/// Sleeps until `since + phase`.
async fn rest_of(phase: Duration, since: Instant) {
    if let Some(left) = phase.checked_sub(since.elapsed()) {
        tokio::time::sleep(left).await;
    }
}

pub async fn drill(g: &Global, app: &str, s: DrillSettings) -> Result<i32> {
    if s.phase < Duration::from_secs(1) || s.phase > Duration::from_secs(600) {
        bail!("--phase must be between 1s and 10m");
    }
    if !(1..=64).contains(&s.concurrency) {
        bail!("--concurrency must be between 1 and 64");
    }
    if !(1..=5000).contains(&s.rate) {
        bail!("--rate must be between 1 and 5000 requests per second");
    }
    if !s.path.starts_with('/') {
        bail!("--path must start with '/', e.g. /health");
    }
    let client = crate::client::discover(g)?;
    let apps: Vec<AppSummary> = client.get_json("/v1/apps").await?;
    let summary = apps
        .into_iter()
        .find(|a| a.name == app)
        .ok_or_else(|| anyhow!("no app named {app:?}\nhint: see `berth apps`"))?;
    let instances: Vec<InstanceView> = client
        .get_json(&berth_client::app_path(app, "/instances"))
        .await?;
    let web: Vec<&InstanceView> = instances
        .iter()
        .filter(|i| {
            i.process == berth_core::model::WEB_PROCESS
                && i.state == InstanceState::Running
                && Some(i.release) == summary.current_release
        })
        .collect();
    let Some(victim) = web.first() else {
        bail!("{app} has no web process running: a drill sends requests to its URL\nhint: a drill needs an app that serves HTTP (a `web` process), awake; see `berth ps {app}`");
    };
    let victim = format!("{}.{}", victim.process, victim.index);
    let objective = client
        .get_json::<berth_core::slo::SloView>(&berth_client::app_path(app, "/slo"))
        .await
        .map(|v| v.spec.availability)
        .unwrap_or(berth_core::slo::DEFAULT_AVAILABILITY);
    let url: reqwest::Url = format!("{}{}", summary.url.trim_end_matches('/'), s.path)
        .parse()
        .map_err(|e| anyhow!("the app's URL {} does not parse: {e}", summary.url))?;
    let per_phase = u64::from(s.rate) * s.phase.as_secs().max(1) * 3;
    let load = Load::start(LoadSpec {
        url: url.clone(),
        resolve: resolve(&url),
        concurrency: s.concurrency,
        rate: s.rate,
        max_requests: per_phase * 4,
    })?;
    let mut phases = Vec::new();
    let secs = s.phase.as_secs_f64();

    progress(g, &format!("steady: {} req/s to {url} for {secs}s", s.rate));
    let start = Instant::now();
    rest_of(s.phase, start).await;
    phases.push(phase(
        "steady",
        "nothing".into(),
        load.window().summary(),
        objective,
        None,
    ));

    progress(g, &format!("instance killed: {victim} (SIGKILL)"));
    let start = Instant::now();
    let killed: serde_json::Value = client
        .post_json(
            &berth_client::app_path(app, &format!("/instances/{victim}/kill")),
            &serde_json::json!({}),
        )
        .await?;
    rest_of(s.phase, start).await;
    phases.push(phase(
        "instance killed",
        format!(
            "killed {victim} ({})",
            killed["instance"].as_str().unwrap_or("?")
        ),
        load.window().summary(),
        objective,
        None,
    ));

    progress(g, "control plane killed (SIGKILL), then started again");
    let start = Instant::now();
    let cfg = berth_control::PlatformConfig::new(crate::client::data_dir(g));
    let restarted =
        tokio::task::spawn_blocking(move || berth_control::control_plane::crash_and_restart(&cfg))
            .await?;
    let (action, skipped) = match restarted {
        Ok((old, new)) => {
            let back = wait_for_api(&client).await?;
            (
                format!(
                    "killed pid {old}; pid {new} answered after {:.1}s",
                    back.as_secs_f64()
                ),
                None,
            )
        }
        Err(e) => ("nothing".to_string(), Some(e.to_string())),
    };
    rest_of(s.phase, start).await;
    phases.push(phase(
        "control plane killed",
        action,
        load.window().summary(),
        objective,
        skipped,
    ));

    progress(g, "redeploy: a new release of the same image, rolled out");
    let start = Instant::now();
    let outcome = client
        .workflow(
            reqwest::Method::POST,
            &berth_client::app_path(app, "/redeploy"),
            None,
            None,
            |_| {},
        )
        .await?;
    let action = match outcome {
        DeployEvent::Done { release, .. } => format!("release v{release} rolled out"),
        DeployEvent::Failed { error, .. } => format!("the redeploy failed: {}", error.message),
        other => format!("{other:?}"),
    };
    rest_of(s.phase, start).await;
    let last = load.stop().await;
    phases.push(phase("redeploy", action, last.summary(), objective, None));

    let failed = phases.iter().map(|p| p.load.failed).sum();
    let report = Report {
        app: app.to_string(),
        url: url.to_string(),
        availability_objective: objective,
        phases,
        failed,
    };
    if g.json {
        output::json(&report);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = report
        .phases
        .iter()
        .map(|p| {
            vec![
                p.phase.to_string(),
                p.load.requests.to_string(),
                if p.load.failures.is_empty() {
                    "0".to_string()
                } else {
                    format!(
                        "{} ({})",
                        p.load.failed,
                        p.load
                            .failures
                            .iter()
                            .map(|(k, n)| format!("{n}× {k}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
                format!("{:.1} ms", p.load.p50_ms),
                format!("{:.1} ms", p.load.p99_ms),
                format!("{:.1}×", p.burn_rate),
                p.skipped
                    .as_ref()
                    .map_or_else(|| p.action.clone(), |why| format!("skipped: {why}")),
            ]
        })
        .collect();
    output::table(
        &[
            "PHASE",
            "REQUESTS",
            "FAILED",
            "P50",
            "P99",
            "SLO BURN",
            "WHAT HAPPENED",
        ],
        &rows,
    );
    println!(
        "SLO burn against {}% availability (1× spends the error budget exactly over the SLO's period; berth pages at 14.4×)",
        report.availability_objective
    );
    if report.failed == 0 {
        println!("no request failed");
    } else {
        println!("{} request(s) failed", report.failed);
    }
    Ok(0)
}

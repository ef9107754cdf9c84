//! SLOs of the apps, evaluated by berth itself: every sample interval the edge's counters
//! become per-app response counts (all, 5xx, slower than the app's latency threshold)
//! stored as deltas, so any window is a sum; each app's objectives (from the release that
//! serves) are then evaluated with the SRE workbook's multi-window burn-rate table
//! (`berth_core::slo`), and alerts are raised and resolved. The same rules are exported for
//! Prometheus (`berth slo --rules`).

use crate::error::ApiError;
use crate::platform::Platform;
use berth_core::metrics::{EdgeMetricsSnapshot, LATENCY_BUCKETS};
use berth_core::slo::{evaluate, windows, Counts, Severity, Sli, SloSpec, SloView, BUDGET_WINDOW};
use std::collections::HashMap;
use std::sync::Arc;

/// Default time between samples of the edge's counters.
pub const DEFAULT_SAMPLE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// What the sampler last saw of each release's counters.
#[derive(Debug, Default)]
pub struct SloCursor {
    /// Whether a first pass set the baseline (counts from before it are not ours to add).
    started: bool,
    /// (app, release) → (edge start time, cumulative counts).
    last: HashMap<(String, u32), (i64, Counts)>,
}

/// The cumulative counts of one release's series, with `threshold` (seconds) for slowness.
fn cumulative(series: &berth_core::metrics::RequestSeries, threshold: f64) -> Counts {
    let requests = series.count();
    let fast = LATENCY_BUCKETS
        .iter()
        .position(|b| (b - threshold).abs() < 1e-9)
        .and_then(|i| series.cumulative_buckets().get(i).map(|(_, n)| *n))
        .unwrap_or(requests);
    Counts {
        requests,
        errors: series.responses[4],
        slow: requests.saturating_sub(fast),
    }
}

impl SloCursor {
    /// The responses of each app since the previous snapshot.
    pub fn advance(
        &mut self,
        snap: &EdgeMetricsSnapshot,
        threshold: &dyn Fn(&str) -> f64,
    ) -> HashMap<String, Counts> {
        let mut out: HashMap<String, Counts> = HashMap::new();
        for s in &snap.series {
            let now = cumulative(s, threshold(&s.app));
            let key = (s.app.clone(), s.release);
            let delta = match self.last.get(&key) {
                // Same edge, counters moved on.
                Some((started, prev))
                    if *started == snap.started_at && now.requests >= prev.requests =>
                {
                    Counts {
                        requests: now.requests - prev.requests,
                        errors: now.errors.saturating_sub(prev.errors),
                        slow: now.slow.saturating_sub(prev.slow),
                    }
                }
                // The edge restarted: its counters began again from zero.
                Some(_) => now,
                // A series seen for the first time after the baseline is all new.
                None if self.started => now,
                None => Counts::default(),
            };
            self.last.insert(key, (snap.started_at, now));
            let e = out.entry(s.app.clone()).or_default();
            e.requests += delta.requests;
            e.errors += delta.errors;
            e.slow += delta.slow;
        }
        self.started = true;
        out
    }
}

/// `slo_availability_page`, `slo_latency_ticket`, …
fn alert_name(sli: Sli, severity: Severity) -> String {
    format!("slo_{}_{}", sli.as_str(), severity.as_str())
}

impl Platform {
    /// The objectives of an app: those of the release it serves (defaults before any).
    pub async fn slo_spec(&self, app: &str) -> Result<SloSpec, ApiError> {
        let Some(row) = self.store.app(app).await? else {
            return Err(ApiError::app_not_found(app));
        };
        Ok(match row.current_release {
            Some(v) => self
                .store
                .release(app, v)
                .await?
                .map(|r| r.config.slo)
                .unwrap_or_default(),
            None => SloSpec::default(),
        })
    }

    /// Adds the responses since the last sample to the store.
    pub async fn sample_slo(&self) -> Result<(), ApiError> {
        let file = self.cfg.edge_metrics_file();
        let Some(snap) =
            tokio::task::spawn_blocking(move || berth_edge::metrics::read_snapshot(&file))
                .await
                .map_err(|e| ApiError::internal("reading the edge's counters", e))?
        else {
            return Ok(());
        };
        let mut thresholds = HashMap::new();
        for s in &snap.series {
            if !thresholds.contains_key(&s.app) {
                let spec = self.slo_spec(&s.app).await.unwrap_or_default();
                thresholds.insert(s.app.clone(), spec.latency_threshold());
            }
        }
        let deltas = match self.slo_cursor.lock() {
            Ok(mut c) => c.advance(&snap, &|app| {
                thresholds
                    .get(app)
                    .copied()
                    .unwrap_or(SloSpec::default().latency_threshold())
            }),
            Err(_) => return Ok(()),
        };
        let now = crate::now_secs();
        for (app, counts) in deltas {
            if counts.requests > 0 {
                self.store.insert_slo_sample(&app, now, counts).await?;
            }
        }
        Ok(())
    }

    /// The objectives of an app and how they stand.
    pub async fn slo_view(&self, app: &str) -> Result<SloView, ApiError> {
        let spec = self.slo_spec(app).await?;
        let scale = self.cfg.slo_time_scale;
        let now = crate::now_secs();
        let mut counts = HashMap::new();
        for w in windows().into_iter().chain([BUDGET_WINDOW]) {
            let scaled = ((w as f64 * scale).round() as i64).max(1);
            counts.insert(scaled, self.store.slo_counts(app, now - scaled).await?);
        }
        let lookup = |w: i64| counts.get(&w).copied().unwrap_or_default();
        Ok(SloView {
            app: app.to_string(),
            spec,
            time_scale: scale,
            slis: [Sli::Availability, Sli::Latency]
                .into_iter()
                .map(|sli| evaluate(&spec, sli, scale, &lookup))
                .collect(),
        })
    }

    /// Prometheus recording and alerting rules for the objectives of `app` (or every app).
    pub async fn slo_rules(&self, app: Option<&str>) -> Result<String, ApiError> {
        let mut specs = Vec::new();
        for a in self.store.apps().await? {
            if app.is_none() || app == Some(a.name.as_str()) {
                let spec = self.slo_spec(&a.name).await?;
                specs.push((a.name, spec));
            }
        }
        if let Some(only) = app {
            if specs.is_empty() {
                return Err(ApiError::app_not_found(only));
            }
        }
        Ok(berth_core::slo::prometheus_rules(&specs))
    }

    /// Evaluates every app's objectives and raises or resolves their alerts.
    pub async fn evaluate_slos(&self) -> Result<(), ApiError> {
        let now = crate::now_secs();
        for app in self.store.apps().await? {
            if app.current_release.is_none() {
                continue;
            }
            let view = self.slo_view(&app.name).await?;
            for status in &view.slis {
                for severity in [Severity::Page, Severity::Ticket] {
                    let name = alert_name(status.sli, severity);
                    if status.firing.contains(&severity) {
                        let burn = status
                            .burn_rates
                            .iter()
                            .filter_map(|(w, b)| b.map(|b| format!("{w} {b:.1}×")))
                            .collect::<Vec<_>>()
                            .join(", ");
                        let summary = format!(
                            "{} is burning its {} error budget too fast (objective {:.3}%; burn rates {burn})",
                            app.name,
                            status.sli.as_str(),
                            status.objective * 100.0
                        );
                        if self
                            .store
                            .raise_alert(&app.name, &name, severity.as_str(), &summary, now)
                            .await?
                        {
                            tracing::warn!(app = %app.name, alert = %name, "{summary}");
                            self.queue_delivery(&app.name, &name).await;
                        }
                    } else if self.store.resolve_alert(&app.name, &name, now).await? {
                        tracing::info!(app = %app.name, alert = %name, "alert resolved");
                        self.queue_delivery(&app.name, &name).await;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Samples and evaluates until shutdown.
pub async fn run_slo(platform: Arc<Platform>) {
    let mut passes: u64 = 0;
    loop {
        tokio::select! {
            _ = platform.shutdown.cancelled() => return,
            _ = tokio::time::sleep(platform.cfg.slo_sample_interval) => {}
        }
        if let Err(e) = platform.sample_slo().await {
            tracing::warn!(error = %e.message, "sampling request counts failed");
        }
        if let Err(e) = platform.evaluate_slos().await {
            tracing::warn!(error = %e.message, "evaluating SLOs failed");
        }
        if let Err(e) = platform.evaluate_health().await {
            tracing::warn!(error = %e.message, "evaluating operational alerts failed");
        }
        platform.deliver_alerts().await;
        passes += 1;
        if passes >= 360 {
            passes = 0;
            let keep = (BUDGET_WINDOW as f64 * platform.cfg.slo_time_scale) as i64 + 86_400;
            let _ = platform
                .store
                .prune_slo_samples(crate::now_secs() - keep)
                .await;
            let _ = platform
                .store
                .prune_idempotent_answers(crate::now_secs() - crate::idempotency::KEEP_SECS)
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::metrics::RequestSeries;

    fn series(app: &str, release: u32, ok: u64, errors: u64, slow: u64) -> RequestSeries {
        let mut buckets = vec![0; LATENCY_BUCKETS.len() + 1];
        buckets[0] = ok + errors - slow;
        buckets[LATENCY_BUCKETS.len()] = slow;
        RequestSeries {
            app: app.into(),
            release,
            responses: [0, ok, 0, 0, errors],
            latency_buckets: buckets,
            latency_sum_seconds: 0.0,
        }
    }

    #[test]
    fn the_cursor_turns_counters_into_deltas_across_restarts() {
        let mut c = SloCursor::default();
        let t = |_: &str| 0.3;
        let snap = |started, s: Vec<RequestSeries>| EdgeMetricsSnapshot {
            started_at: started,
            written_at: 0,
            series: s,
        };
        // The first pass is the baseline.
        let d = c.advance(&snap(100, vec![series("shop", 1, 50, 5, 2)]), &t);
        assert_eq!(d["shop"], Counts::default());
        // Then only what is new, summed over releases; a new release counts from zero.
        let d = c.advance(
            &snap(
                100,
                vec![series("shop", 1, 60, 6, 2), series("shop", 2, 3, 1, 1)],
            ),
            &t,
        );
        assert_eq!(
            d["shop"],
            Counts {
                requests: 15,
                errors: 2,
                slow: 1
            }
        );
        // The edge restarted: its counters are new in full.
        let d = c.advance(&snap(200, vec![series("shop", 2, 4, 0, 0)]), &t);
        assert_eq!(d["shop"].requests, 4);
    }
}

//! Canary rollouts: the new release's healthy instances get a growing share of the app's
//! requests, step by step; after each step the edge's counters of both releases over that
//! step are compared (`berth_core::canary::analyse`), and a canary that does worse is
//! rolled back with the reason — automatically, or when someone runs `berth abort`;
//! `berth promote` ends the steps early and gives it everything.

use crate::deploy::{DeployFailure, Events};
use crate::error::ApiError;
use crate::platform::Platform;
use axum::http::StatusCode;
use berth_core::api::{DeployEvent, ReleaseView};
use berth_core::canary::{analyse, CanarySpec, Window};
use berth_core::metrics::EdgeMetricsSnapshot;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// What someone asked of a running canary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Give it all the traffic now.
    Promote(String),
    /// Roll it back now.
    Abort(String),
}

/// The canaries under way, one per app, and the way to reach them.
#[derive(Default)]
pub struct CanaryControls {
    running: Mutex<HashMap<String, watch::Sender<Option<Command>>>>,
}

impl CanaryControls {
    fn begin(&self, app: &str) -> watch::Receiver<Option<Command>> {
        let (tx, rx) = watch::channel(None);
        if let Ok(mut r) = self.running.lock() {
            r.insert(app.to_string(), tx);
        }
        rx
    }

    fn end(&self, app: &str) {
        if let Ok(mut r) = self.running.lock() {
            r.remove(app);
        }
    }

    /// Hands `command` to `app`'s canary; false when it has none under way.
    pub fn signal(&self, app: &str, command: Command) -> bool {
        self.running
            .lock()
            .ok()
            .and_then(|r| r.get(app).map(|tx| tx.send(Some(command)).is_ok()))
            .unwrap_or(false)
    }
}

fn log(events: &Events, line: String) {
    let _ = events.send(DeployEvent::Log {
        line: format!("-----> {line}"),
    });
}

impl Platform {
    /// The edge's latest request counters, if it wrote any.
    pub(crate) async fn edge_counters(&self) -> Option<EdgeMetricsSnapshot> {
        let file = self.cfg.edge_metrics_file();
        tokio::task::spawn_blocking(move || berth_edge::metrics::read_snapshot(&file))
            .await
            .ok()
            .flatten()
    }

    /// Runs the canary steps of `release`, whose instances are healthy but not yet serving,
    /// against the serving release `stable`. Ok: it may take all the traffic.
    pub(crate) async fn canary_steps(
        self: &Arc<Self>,
        app: &str,
        release: &ReleaseView,
        stable: u32,
        spec: &CanarySpec,
        events: &Events,
    ) -> Result<(), DeployFailure> {
        let mut commands = self.canaries.begin(app);
        let result = self
            .run_steps(app, release, stable, spec, events, &mut commands)
            .await;
        self.canaries.end(app);
        self.routes.set_canary(app, None);
        if result.is_err() {
            // The serving release takes every request again before anything is stopped.
            self.publish_network().await?;
        }
        result
    }

    async fn run_steps(
        self: &Arc<Self>,
        app: &str,
        release: &ReleaseView,
        stable: u32,
        spec: &CanarySpec,
        events: &Events,
        commands: &mut watch::Receiver<Option<Command>>,
    ) -> Result<(), DeployFailure> {
        let version = release.version;
        let objective = release.config.slo.availability / 100.0;
        for &weight in &spec.steps {
            let before = self.edge_counters().await;
            self.routes.set_canary(
                app,
                Some(crate::routing::CanaryShare {
                    release: version,
                    weight,
                    sticky: spec.sticky,
                }),
            );
            self.publish_network().await?;
            log(
                events,
                format!(
                    "canary: v{version} gets {weight}% of requests for {} s (berth promote {app} / berth abort {app})",
                    spec.step_secs
                ),
            );
            let step = tokio::time::sleep(Duration::from_secs(spec.step_secs));
            tokio::pin!(step);
            loop {
                tokio::select! {
                    _ = &mut step => break,
                    changed = commands.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let command = commands.borrow_and_update().clone();
                        match command {
                            Some(Command::Promote(who)) => {
                                log(events, format!("canary: promoted by {who}"));
                                return Ok(());
                            }
                            Some(Command::Abort(who)) => {
                                return Err(ApiError::new(
                                    StatusCode::CONFLICT,
                                    "canary_aborted",
                                    format!("the canary of v{version} was aborted by {who}"),
                                )
                                .hint(format!("v{stable} keeps serving; deploy again to retry"))
                                .into());
                            }
                            None => {}
                        }
                    }
                    _ = self.shutdown.cancelled() => {
                        return Err(ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "shutting_down",
                            format!("berth is stopping; the canary of v{version} is rolled back"),
                        )
                        .into());
                    }
                }
            }
            let after = self.edge_counters().await;
            let window = |r: u32| {
                let find = |s: &Option<EdgeMetricsSnapshot>| {
                    s.as_ref().and_then(|s| {
                        s.series
                            .iter()
                            .find(|x| x.app == app && x.release == r)
                            .cloned()
                    })
                };
                Window::between(find(&before).as_ref(), find(&after).as_ref())
            };
            match analyse(window(version), window(stable), objective, version, stable) {
                Ok(summary) => log(events, format!("canary at {weight}%: {summary}")),
                Err(why) => {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "canary_failed",
                        format!("canary rolled back at {weight}%: {why}"),
                    )
                    .hint(format!(
                        "v{stable} keeps serving; see `berth logs {app}` for v{version}'s errors"
                    ))
                    .into());
                }
            }
        }
        log(events, format!("canary: v{version} passed every step"));
        Ok(())
    }
}

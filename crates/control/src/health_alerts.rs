//! Alerts about how apps and the platform run, evaluated with the SLOs at each pass:
//!
//! - `app_down` (page): an app's serving release has a `web` process and none of its
//!   instances runs;
//! - `crash_loop` / `oom_loop` (page): an instance restarted 3 times within ten `--alert-for`
//!   periods (OOM when its last exit was the out-of-memory killer);
//! - `certificate_expiring` (ticket): a certificate berth serves expires within 7 days
//!   (renewal starts well before, so this means renewals fail);
//! - `disk_filling` (ticket at 90% used, page at 95%): the data directory's filesystem;
//! - `backup_failing` (ticket): the last scheduled backup failed (raised by the schedule);
//! - `probe_failing` (page): the last blackbox probe of one of an app's public URLs got no
//!   answer or a server error (see `berth probes APP`).
//!
//! A condition must hold for `--alert-for` before it is raised, so a restart in progress
//! does not page; it resolves as soon as it stops holding.

use crate::platform::Platform;
use berth_core::model::InstanceState;
use std::collections::{HashMap, VecDeque};

/// Default time a condition must hold before it alerts.
pub const DEFAULT_ALERT_FOR: std::time::Duration = std::time::Duration::from_secs(30);
/// Restarts within the crash-loop window that make a loop.
const LOOP_RESTARTS: usize = 3;
/// Certificates closer to expiry than this alert.
const CERT_WARNING: i64 = 7 * 86_400;
/// The app name platform-wide alerts are filed under.
pub const PLATFORM: &str = "platform";

/// What the evaluator remembers between passes.
#[derive(Debug, Default)]
pub struct HealthMemory {
    /// Since when each (app, alert) condition has held.
    pending: HashMap<(String, String), i64>,
    /// Per instance: restarts seen last, and when each new one was seen.
    restarts: HashMap<String, (u32, VecDeque<i64>)>,
}

/// One condition that holds now.
struct Holds {
    app: String,
    name: &'static str,
    severity: &'static str,
    summary: String,
}

impl Platform {
    /// Raises and resolves the operational alerts.
    pub async fn evaluate_health(&self) -> Result<(), crate::ApiError> {
        let now = crate::now_secs();
        let alert_for = self.cfg.alert_for.as_secs() as i64;
        let loop_window = (alert_for * 10).max(10);
        let mut holds: Vec<Holds> = Vec::new();
        let instances = self.store.instances(None).await?;

        // Restart bookkeeping, per instance.
        let loops: Vec<(String, String, bool, usize)> = {
            let Ok(mut mem) = self.health_memory.lock() else {
                return Ok(());
            };
            let mut out = Vec::new();
            for i in &instances {
                let (seen, times) = mem
                    .restarts
                    .entry(i.id.clone())
                    .or_insert((i.restarts, VecDeque::new()));
                for _ in *seen..i.restarts {
                    times.push_back(now);
                }
                *seen = i.restarts;
                while times.front().is_some_and(|t| now - t > loop_window) {
                    times.pop_front();
                }
                if times.len() >= LOOP_RESTARTS {
                    let oom = i.last_exit_reason.as_deref() == Some("oom_killed");
                    out.push((i.app.clone(), i.id.clone(), oom, times.len()));
                }
            }
            let live: std::collections::HashSet<&str> =
                instances.iter().map(|i| i.id.as_str()).collect();
            mem.restarts.retain(|id, _| live.contains(id.as_str()));
            out
        };
        for (app, id, oom, n) in loops {
            holds.push(Holds {
                app: app.clone(),
                name: if oom { "oom_loop" } else { "crash_loop" },
                severity: "page",
                summary: format!(
                    "{app}: instance {id} restarted {n} times in the last {loop_window}s{}",
                    if oom {
                        ", killed for going past its memory limit"
                    } else {
                        ""
                    }
                ),
            });
        }

        for app in self.store.apps().await? {
            let Some(v) = app.current_release else {
                continue;
            };
            let Some(release) = self.store.release(&app.name, v).await? else {
                continue;
            };
            if !release.config.processes.contains_key("web") {
                continue;
            }
            let running = instances.iter().any(|i| {
                i.app == app.name
                    && i.release == v
                    && i.process == "web"
                    && i.state == InstanceState::Running
            });
            if !running {
                holds.push(Holds {
                    app: app.name.clone(),
                    name: "app_down",
                    severity: "page",
                    summary: format!("{}: no instance of v{v}'s web process is running", app.name),
                });
            }
        }

        let mut failing: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (app, r) in self.probes.latest() {
            if !r.ok() {
                let why = match (&r.error, r.status) {
                    (Some(e), _) => e.clone(),
                    (None, Some(s)) => format!("HTTP {s}"),
                    (None, None) => "no answer".into(),
                };
                failing
                    .entry(app)
                    .or_default()
                    .push(format!("{} ({why})", r.url));
            }
        }
        for (app, urls) in failing {
            holds.push(Holds {
                summary: format!(
                    "{app}: {} of its public URLs fail{} when probed through the edge: {}",
                    urls.len(),
                    if urls.len() == 1 { "s" } else { "" },
                    urls.join(", ")
                ),
                app,
                name: "probe_failing",
                severity: "page",
            });
        }

        let domains = self.store.domains(None).await?;
        for cert in self.store.certificates().await? {
            if cert.not_after - now < CERT_WARNING {
                let app = domains
                    .iter()
                    .find(|d| d.name == cert.name)
                    .map(|d| d.app.clone())
                    .unwrap_or_else(|| PLATFORM.to_string());
                holds.push(Holds {
                    app,
                    name: "certificate_expiring",
                    severity: "ticket",
                    summary: format!(
                        "the certificate of {} expires {} (renewals are failing?)",
                        cert.name,
                        if cert.not_after <= now {
                            "now".to_string()
                        } else {
                            format!("in {}h", (cert.not_after - now) / 3_600)
                        }
                    ),
                });
            }
        }

        if let Ok(s) = nix::sys::statvfs::statvfs(&self.cfg.data_dir) {
            let total = s.blocks() as f64;
            let avail = s.blocks_available() as f64;
            if total > 0.0 {
                let used = 1.0 - avail / total;
                if used >= 0.90 {
                    holds.push(Holds {
                        app: PLATFORM.into(),
                        name: "disk_filling",
                        severity: if used >= 0.95 { "page" } else { "ticket" },
                        summary: format!(
                            "the data directory's filesystem ({}) is {:.0}% full",
                            self.cfg.data_dir.display(),
                            used * 100.0
                        ),
                    });
                }
            }
        }

        // Raise what has held long enough; resolve what no longer holds.
        let held: std::collections::HashSet<(String, &str)> =
            holds.iter().map(|h| (h.app.clone(), h.name)).collect();
        let ready: Vec<&Holds> = {
            let Ok(mut mem) = self.health_memory.lock() else {
                return Ok(());
            };
            mem.pending
                .retain(|(app, name), _| held.contains(&(app.clone(), name.as_str())));
            holds
                .iter()
                .filter(|h| {
                    let since = *mem
                        .pending
                        .entry((h.app.clone(), h.name.to_string()))
                        .or_insert(now);
                    now - since >= alert_for
                })
                .collect()
        };
        for h in ready {
            if self
                .store
                .raise_alert(&h.app, h.name, h.severity, &h.summary, now)
                .await?
            {
                tracing::warn!(app = %h.app, alert = h.name, "{}", h.summary);
                self.queue_delivery(&h.app, h.name).await;
            }
        }
        for open in self.store.alerts(None).await? {
            let ours = matches!(
                open.name.as_str(),
                "app_down"
                    | "crash_loop"
                    | "oom_loop"
                    | "certificate_expiring"
                    | "disk_filling"
                    | "probe_failing"
            );
            if ours
                && !held.contains(&(open.app.clone(), open.name.as_str()))
                && self.store.resolve_alert(&open.app, &open.name, now).await?
            {
                tracing::info!(app = %open.app, alert = %open.name, "alert resolved");
                self.queue_delivery(&open.app, &open.name).await;
            }
        }
        Ok(())
    }

    /// Records how the last scheduled backup went (`backup_failing`).
    pub async fn backup_outcome(&self, failure: Option<&str>) {
        let now = crate::now_secs();
        let changed = match failure {
            Some(why) => {
                self.store
                    .raise_alert(
                        PLATFORM,
                        "backup_failing",
                        "ticket",
                        &format!("the scheduled backup failed: {why}"),
                        now,
                    )
                    .await
            }
            None => {
                self.store
                    .resolve_alert(PLATFORM, "backup_failing", now)
                    .await
            }
        };
        match changed {
            Ok(true) => self.queue_delivery(PLATFORM, "backup_failing").await,
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "recording the backup's outcome failed"),
        }
    }
}

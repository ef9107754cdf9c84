//! Blackbox probes: every public URL of every awake app, requested through the edge the way
//! clients reach it (HTTP, and HTTPS when the edge serves it) on a schedule; the last
//! results of each URL kept for `berth probes APP`. An app that sleeps when idle
//! (`[scale] min = 0`) is not probed: the probes would wake it, and keep it awake.

use crate::platform::Platform;
use berth_core::api::ProbeResult;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Results kept per URL.
const KEPT: usize = 30;
/// Longest a probe waits for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The last results of each URL, by app.
#[derive(Debug, Default)]
pub struct ProbeLog(Mutex<BTreeMap<String, BTreeMap<String, VecDeque<ProbeResult>>>>);

impl ProbeLog {
    fn record(&self, app: &str, result: ProbeResult) {
        if let Ok(mut all) = self.0.lock() {
            let runs = all
                .entry(app.to_string())
                .or_default()
                .entry(result.url.clone())
                .or_default();
            if runs.len() == KEPT {
                runs.pop_front();
            }
            runs.push_back(result);
        }
    }

    /// An app's URLs with their results, oldest first.
    pub fn of(&self, app: &str) -> BTreeMap<String, Vec<ProbeResult>> {
        self.0
            .lock()
            .ok()
            .and_then(|all| {
                all.get(app).map(|urls| {
                    urls.iter()
                        .map(|(u, r)| (u.clone(), r.iter().cloned().collect()))
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    /// The latest result of every URL of every app: (app, result).
    pub fn latest(&self) -> Vec<(String, ProbeResult)> {
        self.0
            .lock()
            .map(|all| {
                all.iter()
                    .flat_map(|(app, urls)| {
                        urls.values()
                            .filter_map(|r| r.back().map(|r| (app.clone(), r.clone())))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn forget_others(&self, apps: &[String]) {
        if let Ok(mut all) = self.0.lock() {
            all.retain(|a, _| apps.contains(a));
        }
    }
}

fn loopback(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

impl Platform {
    /// Probes every public URL of every awake app once.
    pub async fn probe_all(self: &Arc<Self>) -> Result<(), crate::ApiError> {
        let apps = self.store.apps().await?;
        let domains = self.certificates_domains().await?;
        let names: Vec<String> = apps.iter().map(|a| a.name.clone()).collect();
        self.probes.forget_others(&names);
        for app in apps {
            if app.current_release.is_none() || self.routes.is_sleeping(&app.name) {
                continue;
            }
            let path = match self.serving_release(&app.name).await? {
                Some(r) if r.config.idle_secs.is_none() => {
                    r.config.health.path.clone().unwrap_or_else(|| "/".into())
                }
                _ => continue,
            };
            let hosts: Vec<String> = self
                .cfg
                .app_hosts(&app.name)
                .into_iter()
                .chain(
                    domains
                        .iter()
                        .filter(|(_, a)| *a == app.name)
                        .map(|(d, _)| d.clone()),
                )
                .collect();
            for host in hosts {
                let mut targets = vec![(loopback(self.cfg.edge_listen), false)];
                if let Some(tls) = self.cfg.edge_tls_listen {
                    targets.push((loopback(tls), true));
                }
                for (addr, tls) in targets {
                    let result =
                        berth_edge::probe::probe(addr, &host, &path, tls, PROBE_TIMEOUT).await;
                    if !result.ok() {
                        tracing::warn!(app = %app.name, url = %result.url, status = ?result.status, error = ?result.error, "probe failed");
                    }
                    self.probes.record(&app.name, result);
                }
            }
        }
        Ok(())
    }

    async fn certificates_domains(&self) -> Result<Vec<(String, String)>, crate::ApiError> {
        Ok(self
            .store
            .domains(None)
            .await?
            .into_iter()
            .map(|d| (d.name, d.app))
            .collect())
    }
}

/// Probes on `every` until shutdown.
pub async fn run_probes(platform: Arc<Platform>, every: Duration) {
    loop {
        tokio::select! {
            _ = platform.shutdown.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = platform.probe_all().await {
            tracing::warn!(error = %e.message, "probing failed");
        }
    }
}

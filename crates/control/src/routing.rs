//! Publishes the edge's route table: computed from the state store (each app's serving
//! release → its running `web` instances), written atomically as a snapshot file the edge
//! follows, then confirmed by waiting until the edge reports it serves that generation.

use crate::config::PlatformConfig;
use crate::store::Store;
use berth_core::model::{InstanceState, WEB_PROCESS};
use berth_edge::routes::{Route, RouteSnapshot};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long to wait for the edge to confirm a new table.
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// A canary's place in an app's routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanaryShare {
    pub release: u32,
    /// Percent of requests (or of clients, when sticky).
    pub weight: u8,
    pub sticky: bool,
}

/// Writes route snapshots for the edge.
#[derive(Debug)]
pub struct RoutePublisher {
    cfg: PlatformConfig,
    last_generation: AtomicU64,
    lock: tokio::sync::Mutex<()>,
    /// ACME HTTP-01 answers the edge serves while an order is validated.
    challenges: std::sync::Mutex<BTreeMap<String, String>>,
    /// Releases under canary analysis: app → (release, percent of requests).
    canaries: std::sync::Mutex<BTreeMap<String, CanaryShare>>,
    /// Apps asleep: no web instance while idle, woken by the next request.
    sleeping: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl RoutePublisher {
    /// A publisher for the platform's edge files.
    pub fn new(cfg: PlatformConfig) -> Self {
        let last = RouteSnapshot::load(&Self::routes_file_of(&cfg))
            .map(|s| s.generation)
            .unwrap_or(0);
        Self {
            cfg,
            last_generation: AtomicU64::new(last),
            lock: tokio::sync::Mutex::new(()),
            challenges: std::sync::Mutex::new(BTreeMap::new()),
            canaries: std::sync::Mutex::new(BTreeMap::new()),
            sleeping: std::sync::Mutex::new(std::collections::BTreeSet::new()),
        }
    }

    /// Marks `app` asleep (its routes wake it) or awake, from the next publish on.
    pub fn set_sleeping(&self, app: &str, asleep: bool) {
        if let Ok(mut s) = self.sleeping.lock() {
            if asleep {
                s.insert(app.to_string());
            } else {
                s.remove(app);
            }
        }
    }

    /// Whether `app` is asleep.
    pub fn is_sleeping(&self, app: &str) -> bool {
        self.sleeping.lock().is_ok_and(|s| s.contains(app))
    }

    /// The file the edge writes to wake `app`, and the directory of them.
    pub fn wake_dir_of(cfg: &PlatformConfig) -> PathBuf {
        cfg.edge_dir().join("wake")
    }

    /// Gives `release` of `app` `weight` percent of its requests from the next publish on
    /// (`None`: none, the canary is over).
    pub fn set_canary(&self, app: &str, canary: Option<CanaryShare>) {
        if let Ok(mut c) = self.canaries.lock() {
            match canary {
                Some(c2) => {
                    c.insert(app.to_string(), c2);
                }
                None => {
                    c.remove(app);
                }
            }
        }
    }

    /// Adds ACME challenge answers (token → key authorization) to the next publication.
    pub fn add_challenges(&self, answers: &[(String, String)]) {
        let mut c = self.challenges.lock().unwrap_or_else(|e| e.into_inner());
        c.extend(answers.iter().cloned());
    }

    /// Withdraws ACME challenge answers.
    pub fn remove_challenges(&self, tokens: &[String]) {
        let mut c = self.challenges.lock().unwrap_or_else(|e| e.into_inner());
        for t in tokens {
            c.remove(t);
        }
    }

    fn routes_file_of(cfg: &PlatformConfig) -> PathBuf {
        cfg.edge_dir().join("routes.json")
    }

    /// The snapshot file.
    pub fn routes_file(&self) -> PathBuf {
        Self::routes_file_of(&self.cfg)
    }

    /// The file the edge confirms generations in.
    pub fn applied_file(&self) -> PathBuf {
        self.cfg.edge_dir().join("applied")
    }

    /// The generation the edge last confirmed.
    pub fn applied_generation(&self) -> Option<u64> {
        std::fs::read_to_string(self.applied_file())
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Computes the table from the store, writes it, and waits for the edge to serve it.
    /// Returns false when the edge did not confirm in time (it will pick the table up when
    /// it comes back; nothing is lost).
    pub async fn publish(&self, store: &Store) -> Result<bool, crate::ApiError> {
        let _guard = self.lock.lock().await;
        let mut routes = BTreeMap::new();
        let instances = store.instances(None).await?;
        let domains = store.domains(None).await?;
        for app in store.apps().await? {
            let Some(current) = app.current_release else {
                continue;
            };
            let web_of = |release: u32| {
                instances
                    .iter()
                    .filter(|i| {
                        i.app == app.name
                            && i.release == release
                            && i.process == WEB_PROCESS
                            && i.state == InstanceState::Running
                    })
                    .filter_map(|i| format!("{}:{}", i.address, i.port).parse().ok())
                    .collect::<Vec<_>>()
            };
            let upstreams = web_of(current);
            // An app that has instances again (a deploy, a wake-up) is awake.
            let sleeping = if upstreams.is_empty() {
                self.is_sleeping(&app.name)
            } else {
                self.set_sleeping(&app.name, false);
                false
            };
            let canary = self
                .canaries
                .lock()
                .ok()
                .and_then(|c| c.get(&app.name).copied())
                .filter(|c| c.release != current)
                .map(|c| berth_edge::routes::CanaryRoute {
                    release: c.release,
                    upstreams: web_of(c.release),
                    weight: c.weight,
                    sticky: c.sticky,
                });
            let own = self
                .cfg
                .app_hosts(&app.name)
                .into_iter()
                .map(|h| (h, false));
            let custom = domains
                .iter()
                .filter(|d| d.app == app.name)
                .map(|d| (d.name.clone(), d.https_redirect));
            for (host, https_redirect) in own.chain(custom) {
                routes.insert(
                    host,
                    Route {
                        app: app.name.clone(),
                        release: current,
                        upstreams: upstreams.clone(),
                        https_redirect: https_redirect && self.cfg.edge_tls_listen.is_some(),
                        canary: canary.clone(),
                        sleeping,
                    },
                );
            }
        }
        // The platform's own host names: the API, over HTTPS when the edge serves it.
        for host in self.cfg.platform_hosts() {
            routes.insert(
                host,
                Route {
                    app: berth_core::names::PLATFORM_LABEL.into(),
                    release: 0,
                    upstreams: vec![self.cfg.api_upstream()],
                    https_redirect: self.cfg.edge_tls_listen.is_some(),
                    canary: None,
                    sleeping: false,
                },
            );
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let generation = now_ms.max(self.last_generation.load(Ordering::SeqCst) + 1);
        self.last_generation.store(generation, Ordering::SeqCst);
        let acme_challenges = self
            .challenges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let snapshot = RouteSnapshot {
            generation,
            routes,
            acme_challenges,
        };
        let path = self.routes_file();
        let write = tokio::task::spawn_blocking(move || snapshot.save(&path)).await;
        match write {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(crate::ApiError::internal("writing routes", e)),
            Err(e) => return Err(crate::ApiError::internal("writing routes", e)),
        }
        berth_edge::nudge::send(&berth_edge::nudge::routes_socket(&self.routes_file()));
        let deadline = Instant::now() + APPLY_TIMEOUT;
        while Instant::now() < deadline {
            if self.applied_generation().is_some_and(|g| g >= generation) {
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::warn!(
            generation,
            "the edge did not confirm the new routes in time"
        );
        Ok(false)
    }
}

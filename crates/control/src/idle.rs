//! Scale to zero: an app whose serving release says `[scale] min = 0` has its web
//! instances stopped once no request reached it for its idle time; its routes then say it
//! sleeps, and the edge holds the next request, asks for the app (a file named after it in
//! `<data>/edge/wake/`), and forwards the request once an instance answers.

use crate::platform::Platform;
use crate::routing::RoutePublisher;
use crate::store::InstanceRow;
use berth_core::model::WEB_PROCESS;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often wake requests are looked for.
const WAKE_POLL: Duration = Duration::from_millis(50);
/// How often idleness is checked.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// How long the steps of a wake-up took, each from its start.
#[derive(Debug, Clone, Copy)]
pub struct WakeSteps {
    /// Until the instances ran (the store's rows, their network policy, the runtime).
    pub started: Duration,
    /// Until they answered their health check.
    pub answered: Duration,
    /// Until their routes were published and confirmed by the edge.
    pub routed: Duration,
    /// How many instances had been prepared while the app slept (see
    /// [`PreparedInstances`]).
    pub prepared: usize,
}

/// What the loop remembers of an app: its request count and when it last changed.
struct Seen {
    requests: u64,
    changed: Instant,
}

/// Runs until shutdown: wakes apps the edge asks for, and puts idle ones to sleep.
pub async fn run_idle(platform: Arc<Platform>) {
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut last_check = Instant::now();
    let mut first = true;
    // The edge nudges after asking for an app: looked at now, not at the poll.
    let wake_dir = RoutePublisher::wake_dir_of(&platform.cfg);
    let _ = std::fs::create_dir_all(&wake_dir);
    let nudges = berth_edge::nudge::Listener::bind(&berth_edge::nudge::wake_socket(&wake_dir))
        .map_err(|e| tracing::debug!(error = %e, "no wake nudges; polling only"))
        .ok();
    loop {
        tokio::select! {
            _ = platform.shutdown.cancelled() => break,
            _ = berth_edge::nudge::or_poll(nudges.as_ref(), WAKE_POLL) => {}
        }
        if let Err(e) = wake_requested(&platform, &mut seen).await {
            tracing::warn!(error = %e.message, "waking an app failed");
        }
        if last_check.elapsed() >= IDLE_CHECK {
            last_check = Instant::now();
            if let Err(e) = sleep_idle(&platform, &mut seen, first).await {
                tracing::warn!(error = %e.message, "putting an idle app to sleep failed");
            }
            first = false;
        }
    }
}

async fn wake_requested(
    platform: &Arc<Platform>,
    seen: &mut HashMap<String, Seen>,
) -> Result<(), crate::ApiError> {
    let dir = RoutePublisher::wake_dir_of(&platform.cfg);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let _ = std::fs::remove_file(entry.path());
        let Some(app) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !platform.routes.is_sleeping(&app) {
            continue;
        }
        let started = Instant::now();
        if let Some(steps) = platform.wake(&app).await? {
            tracing::info!(
                %app,
                took_ms = started.elapsed().as_millis() as u64,
                started_ms = steps.started.as_millis() as u64,
                answered_ms = steps.answered.as_millis() as u64,
                routed_ms = steps.routed.as_millis() as u64,
                prepared = steps.prepared,
                "woke a sleeping app"
            );
        }
        seen.insert(
            app,
            Seen {
                requests: u64::MAX,
                changed: Instant::now(),
            },
        );
    }
    Ok(())
}

async fn sleep_idle(
    platform: &Arc<Platform>,
    seen: &mut HashMap<String, Seen>,
    first: bool,
) -> Result<(), crate::ApiError> {
    let counters = platform.edge_counters().await;
    let mut totals: HashMap<&str, u64> = HashMap::new();
    for s in counters.iter().flat_map(|c| c.series.iter()) {
        *totals.entry(s.app.as_str()).or_default() += s.count();
    }
    let instances = platform.store.instances(None).await?;
    for (app, release) in platform.serving_releases().await? {
        let current = release.version;
        let Some(idle) = release.config.idle_secs else {
            continue;
        };
        let web = instances
            .iter()
            .filter(|i| i.app == app.name && i.release == current && i.process == WEB_PROCESS)
            .count();
        if platform.routes.is_sleeping(&app.name) {
            continue;
        }
        if web == 0 {
            if first {
                // Asleep when the control plane stopped: its routes wake it again.
                platform.routes.set_sleeping(&app.name, true);
                platform.publish_network().await?;
            }
            continue;
        }
        let requests = totals.get(app.name.as_str()).copied().unwrap_or(0);
        let entry = seen.entry(app.name.clone()).or_insert(Seen {
            requests,
            changed: Instant::now(),
        });
        if entry.requests != requests {
            entry.requests = requests;
            entry.changed = Instant::now();
            continue;
        }
        if entry.changed.elapsed() >= Duration::from_secs(idle) {
            platform.put_to_sleep(&app.name).await?;
            seen.remove(&app.name);
        }
    }
    Ok(())
}

/// Instances of sleeping (trusted) apps made ready to start: network namespace configured,
/// container created, no process of the app's running. A wake-up then only starts them.
#[derive(Default)]
pub struct PreparedInstances {
    by_app: std::sync::Mutex<HashMap<String, Vec<InstanceRow>>>,
}

impl PreparedInstances {
    fn add(&self, inst: InstanceRow) {
        if let Ok(mut m) = self.by_app.lock() {
            m.entry(inst.app.clone()).or_default().push(inst);
        }
    }

    /// How many instances of `app` are prepared.
    pub fn count(&self, app: &str) -> usize {
        self.by_app
            .lock()
            .map(|m| m.get(app).map_or(0, Vec::len))
            .unwrap_or(0)
    }

    /// Hands back (and forgets) `app`'s prepared instances.
    pub fn take(&self, app: &str) -> Vec<InstanceRow> {
        self.by_app
            .lock()
            .ok()
            .and_then(|mut m| m.remove(app))
            .unwrap_or_default()
    }
}

impl Platform {
    /// Removes `app`'s prepared instances (its containers, namespaces and files).
    pub(crate) async fn discard_prepared(&self, app: &str) {
        for inst in self.prepared.take(app) {
            self.blocking(move |l| l.discard(&inst.id)).await;
        }
    }

    /// Prepares `app`'s sleeping web instances (one per address it slept at) so that the
    /// wake-up only has to start them; a failure only costs the wake-up its head start.
    async fn prepare_for_wake(self: &Arc<Self>, app: &str, addresses: &[String]) {
        let prepared = async {
            let Some(mut release) = self.serving_release(app).await? else {
                return Ok(());
            };
            if release.config.isolation != berth_core::policy::Isolation::Trusted {
                return Ok(());
            }
            release
                .config
                .processes
                .retain(|kind, _| kind == WEB_PROCESS);
            let attach = Arc::new(self.attachments(app, &release).await?);
            let port = release.config.port.unwrap_or(crate::config::APP_PORT);
            for (index, address) in (0u32..).zip(addresses) {
                let id = berth_core::model::instance_id(
                    app,
                    release.version,
                    WEB_PROCESS,
                    index,
                    &crate::random_id(3),
                );
                let inst = InstanceRow::starting(
                    id,
                    app,
                    release.version,
                    WEB_PROCESS,
                    index,
                    address.clone(),
                    port,
                );
                let (i, r, a) = (inst.clone(), release.clone(), attach.clone());
                match self.blocking(move |l| l.prepare(&i, &r, &a)).await {
                    Ok(true) => self.prepared.add(inst),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(%app, error = %e, "preparing the wake-up failed; it will start the instance in full")
                    }
                }
            }
            Ok::<(), crate::ApiError>(())
        };
        if let Err(e) = prepared.await {
            tracing::warn!(%app, error = %e.message, "preparing the wake-up failed");
        }
    }

    /// Starts web instances of `app`'s serving release outside a rollout (a wake-up, the
    /// autoscaler): `count` of them (default: the release's), numbered from `first_index`,
    /// and waits — at most the health check's time — until each answers, so that the next
    /// publish routes only answering instances (the supervisor looks after one that died).
    /// Returns how long they took to run, and to answer.
    pub(crate) async fn start_web(
        self: &Arc<Self>,
        app: &str,
        count: Option<u32>,
        first_index: u32,
    ) -> Result<(Duration, Duration), crate::ApiError> {
        let begun = Instant::now();
        let Some(mut release) = self.serving_release(app).await? else {
            return Ok((begun.elapsed(), begun.elapsed()));
        };
        release
            .config
            .processes
            .retain(|kind, _| kind == WEB_PROCESS);
        if let (Some(n), Some(web)) = (count, release.config.processes.get_mut(WEB_PROCESS)) {
            web.instances = n;
        }
        let attach = Arc::new(self.attachments(app, &release).await?);
        let started = self
            .start_instances(app, &release, &attach, first_index)
            .await
            .map_err(|f| f.error)?;
        let running = begun.elapsed();
        let health = release.config.health.clone();
        let deadline = Instant::now() + Duration::from_secs(health.timeout_secs);
        for inst in &started {
            while Instant::now() < deadline
                && !crate::deploy::probe(&inst.address, inst.port, health.path.as_deref()).await
            {
                // A request may be held for it: asked often while it is new.
                let pause = if begun.elapsed() < Duration::from_millis(200) {
                    1
                } else {
                    5
                };
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }
        Ok((running, begun.elapsed()))
    }

    /// Stops `app`'s web instances and marks it asleep (unless a deploy holds it now).
    pub async fn put_to_sleep(self: &Arc<Self>, app: &str) -> Result<(), crate::ApiError> {
        let lock = self.app_lock(app);
        let Ok(_guard) = lock.try_lock() else {
            return Ok(());
        };
        let Some(current) = self.store.app(app).await?.and_then(|a| a.current_release) else {
            return Ok(());
        };
        let web: Vec<_> = self
            .store
            .instances(Some(app))
            .await?
            .into_iter()
            .filter(|i| i.release == current && i.process == WEB_PROCESS)
            .collect();
        // Routed away first, then stopped; their addresses stay the app's (in its rules,
        // from other instances) for the wake-up.
        self.routes.set_sleeping(app, true);
        for inst in &web {
            if let Ok(address) = inst.address.parse() {
                self.policy.reserve(app, current, address);
            }
            self.store.instance_stopping(&inst.id).await?;
        }
        self.publish_network().await?;
        self.stop_instances(&web, self.cfg.stop_timeout).await?;
        let addresses: Vec<String> = web.iter().map(|i| i.address.clone()).collect();
        self.prepare_for_wake(app, &addresses).await;
        tracing::info!(%app, instances = web.len(), "idle: the app sleeps until its next request");
        Ok(())
    }

    /// Starts `app`'s web instances again and routes to them once they answer; `None` when
    /// it was awake already.
    pub async fn wake(self: &Arc<Self>, app: &str) -> Result<Option<WakeSteps>, crate::ApiError> {
        let lock = self.app_lock(app);
        let _guard = lock.lock().await;
        if !self.routes.is_sleeping(app) {
            return Ok(None);
        }
        let begun = Instant::now();
        let prepared = self.prepared.count(app);
        let (started, answered) = self.start_web(app, None, 0).await?;
        self.routes.set_sleeping(app, false);
        // The instances' network policy was put in force before they started
        // (`start_instances`), and the app's names and certificates did not change while it
        // slept: only its routes are published again, and the held requests go on.
        self.routes.publish(&self.store).await?;
        Ok(Some(WakeSteps {
            started,
            answered,
            routed: begun.elapsed(),
            prepared,
        }))
    }
}

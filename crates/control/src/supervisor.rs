//! Keeps instances running: notices exits (by PID identity, so it works for containers
//! started before a restart of berth), records the exit code the container's init left
//! behind, restarts with exponential backoff, and keeps the edge's routes in step. Also
//! drives the log ingester.

use crate::platform::Platform;
use crate::store::InstanceRow;
use berth_core::model::{InstanceState, WEB_PROCESS};
use berth_observe::LogRecord;
use berth_runtime::proc::ProcessIdentity;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often instances are checked.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// How often logs are ingested.
pub const INGEST_INTERVAL: Duration = Duration::from_millis(200);
/// How often log retention is enforced.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(60);
/// Longest wait before a restart.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Delay before restart number `restarts + 1`: 1 s, 2 s, 4 s, … up to [`MAX_BACKOFF`].
pub fn backoff(restarts: u32) -> Duration {
    let secs = 1u64.checked_shl(restarts.min(16)).unwrap_or(u64::MAX);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

fn event(app: &str, release: u32, process: &str, index: u32, line: String) -> LogRecord {
    LogRecord {
        ts: berth_observe::now_millis(),
        project: "default".into(),
        app: app.to_string(),
        commit: None,
        release,
        process: process.to_string(),
        index,
        stream: "platform".into(),
        source: None,
        line: format!("[berth] {line}"),
    }
}

/// berth's note about an instance, in its app's log.
fn note(platform: &Platform, inst: &InstanceRow, line: String) {
    let _ = platform.logs.append(&[event(
        &inst.app,
        inst.release,
        &inst.process,
        inst.index,
        line,
    )]);
}

impl Platform {
    /// Drops the segments of each app's log past its retention (berth.toml `[logs]`, else the
    /// platform's).
    pub async fn enforce_log_retention(&self) -> Result<(), sqlx::Error> {
        let default = self.cfg.log_retention;
        let mut plans = Vec::new();
        for app in self.logs.apps() {
            let mut keep = default;
            if let Some(row) = self.store.app(&app).await? {
                if let Some(v) = row.current_release {
                    if let Some(r) = self.store.release(&app, v).await? {
                        let (age, size) = r.config.log_retention;
                        keep.max_age_ms = age.unwrap_or(keep.max_age_ms);
                        keep.max_bytes = size.unwrap_or(keep.max_bytes);
                    }
                }
            }
            plans.push((app, keep));
        }
        let logs = self.logs.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let now = berth_observe::now_millis();
            for (app, keep) in plans {
                let freed = logs.enforce_retention(&app, keep, now);
                if freed > 0 {
                    tracing::info!(%app, freed_bytes = freed, "old log segments removed");
                }
            }
        })
        .await;
        Ok(())
    }
}

/// Runs the supervisor and the ingester until shutdown.
/// A restart that could not start the instance: it goes back to crashed (keeping why it last
/// exited) and is tried again after the next backoff; the reason is in the app's log.
async fn restart_failed(
    platform: &Platform,
    inst: &InstanceRow,
    error: &str,
) -> Result<(), sqlx::Error> {
    tracing::warn!(instance = %inst.id, %error, "restart failed");
    platform.store.instance_restart_failed(&inst.id).await?;
    let line = format!(
        "{}.{} could not be restarted: {error}; trying again",
        inst.process, inst.index
    );
    note(platform, inst, line);
    Ok(())
}

pub async fn run(platform: Arc<Platform>) {
    let ingest = {
        let platform = platform.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = platform.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(INGEST_INTERVAL) => {}
                }
                let ing = platform.ingester.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    if let Ok(mut i) = ing.lock() {
                        i.poll();
                    }
                })
                .await;
            }
        })
    };
    let retention = {
        let platform = platform.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = platform.enforce_log_retention().await {
                    tracing::warn!(error = %e, "log retention failed");
                }
                tokio::select! {
                    _ = platform.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(RETENTION_INTERVAL) => {}
                }
            }
        })
    };
    let mut due: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = platform.shutdown.cancelled() => break,
            _ = tokio::time::sleep(CHECK_INTERVAL) => {}
        }
        if let Err(e) = check(&platform, &mut due).await {
            tracing::warn!(error = %e, "supervisor check failed");
        }
    }
    let _ = ingest.await;
    let _ = retention.await;
}

async fn check(
    platform: &Arc<Platform>,
    due: &mut HashMap<String, Instant>,
) -> Result<(), crate::ApiError> {
    let mut routes_dirty = false;
    for inst in platform.store.instances(None).await? {
        match inst.state {
            InstanceState::Running => {
                let alive = inst
                    .pid
                    .map(|(pid, start_ticks)| ProcessIdentity { pid, start_ticks }.alive())
                    .unwrap_or(false);
                if alive {
                    continue;
                }
                let id = inst.id.clone();
                let exit = platform.blocking(move |l| l.exit_info(&id)).await;
                if !platform
                    .store
                    .instance_crashed(&inst.id, exit.code, exit.reason())
                    .await?
                {
                    continue; // being stopped on purpose
                }
                let wait = backoff(inst.restarts);
                due.insert(inst.id.clone(), Instant::now() + wait);
                routes_dirty = true;
                let how = match (exit.oom_killed, exit.code) {
                    (true, _) => format!(
                        "was killed for going past its memory limit of {} (OOMKilled)",
                        berth_core::limits::format_memory(exit.memory_limit)
                    ),
                    (false, Some(137)) => "was killed (SIGKILL)".to_string(),
                    (false, Some(c)) => format!("exited with code {c}"),
                    (false, None) => "stopped".to_string(),
                };
                let line = format!(
                    "{}.{} {how}; restarting in {} s (restart #{})",
                    inst.process,
                    inst.index,
                    wait.as_secs(),
                    inst.restarts + 1
                );
                tracing::warn!(app = %inst.app, "{line}");
                // The app's last words first, then berth's note about them.
                let ing = platform.ingester.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    if let Ok(mut i) = ing.lock() {
                        i.poll();
                    }
                })
                .await;
                note(platform, &inst, line);
            }
            InstanceState::Crashed => {
                let when = *due
                    .entry(inst.id.clone())
                    .or_insert_with(|| Instant::now() + backoff(inst.restarts));
                if Instant::now() < when {
                    continue;
                }
                due.remove(&inst.id);
                let Some(release) = platform.store.release(&inst.app, inst.release).await? else {
                    continue;
                };
                if !platform.store.instance_restarting(&inst.id).await? {
                    continue;
                }
                let attach = match platform.attachments(&inst.app, &release).await {
                    Ok(a) => a,
                    Err(e) => {
                        restart_failed(platform, &inst, &e.message).await?;
                        continue;
                    }
                };
                let health = release.config.health.clone();
                let (i, r) = (inst.clone(), release);
                match platform.blocking(move |l| l.start(&i, &r, &attach)).await {
                    Ok(pid) if inst.process == WEB_PROCESS => {
                        // Routed only once it answers, as a deploy's instances are: until
                        // then it stays `starting`, which the edge does not see.
                        let (platform, inst) = (platform.clone(), inst.clone());
                        tokio::spawn(async move {
                            let deadline =
                                Instant::now() + Duration::from_secs(health.timeout_secs);
                            while Instant::now() < deadline
                                && !crate::deploy::probe(
                                    &inst.address,
                                    inst.port,
                                    health.path.as_deref(),
                                )
                                .await
                            {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            // Answering or not, the supervisor watches it from here: one that
                            // died is restarted, one that lives is routed.
                            let marked = platform
                                .store
                                .instance_running(
                                    &inst.id,
                                    pid.map(|p| (p.pid, p.start_ticks)),
                                    crate::now_secs(),
                                )
                                .await;
                            if marked.is_ok() {
                                if let Err(e) = platform.publish_network().await {
                                    tracing::warn!(error = %e.message, "publishing routes failed");
                                }
                            }
                        });
                    }
                    Ok(pid) => {
                        platform
                            .store
                            .instance_running(
                                &inst.id,
                                pid.map(|p| (p.pid, p.start_ticks)),
                                crate::now_secs(),
                            )
                            .await?;
                        routes_dirty = true;
                    }
                    Err(e) => {
                        restart_failed(platform, &inst, &e.to_string()).await?;
                    }
                }
            }
            _ => {}
        }
    }
    if routes_dirty {
        platform.publish_network().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(10), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}

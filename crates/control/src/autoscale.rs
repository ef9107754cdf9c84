//! The autoscaler: the web instances of an app whose serving release has `[scale]
//! target_concurrency` or `target_cpu` follow its load. Requests: the edge's own count —
//! the time its requests spent under way per second of wall time is, by Little's law, how
//! many were under way on average. CPU: the CPU time the web instances' cgroups used per
//! second. More than the target per instance (either signal) adds instances at once (up to
//! `max`); less for `cooldown` removes them (down to `min`), drained like a deploy's.

use crate::platform::Platform;
use berth_core::model::{InstanceState, WEB_PROCESS};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the load is read.
const TICK: Duration = Duration::from_secs(2);
/// Least time between two changes of one app.
const SETTLE: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Load {
    /// Seconds spent under way by the app's requests, as last read.
    busy_seconds: f64,
    read_at: Option<Instant>,
    /// Smoothed requests under way.
    concurrency: f64,
    /// CPU seconds each web instance had used, as last read.
    cpu_seconds: HashMap<String, f64>,
    /// Smoothed CPUs busy, all web instances together.
    cpu_used: f64,
    /// Since when fewer instances would do.
    low_since: Option<Instant>,
    last_change: Option<Instant>,
}

/// Runs until shutdown.
pub async fn run_autoscale(platform: Arc<Platform>) {
    let mut loads: HashMap<String, Load> = HashMap::new();
    loop {
        tokio::select! {
            _ = platform.shutdown.cancelled() => break,
            _ = tokio::time::sleep(TICK) => {}
        }
        if let Err(e) = tick(&platform, &mut loads).await {
            tracing::warn!(error = %e.message, "autoscaling failed");
        }
    }
}

async fn tick(
    platform: &Arc<Platform>,
    loads: &mut HashMap<String, Load>,
) -> Result<(), crate::ApiError> {
    let Some(counters) = platform.edge_counters().await else {
        return Ok(());
    };
    let instances = platform.store.instances(None).await?;
    for (app, release) in platform.serving_releases().await? {
        let current = release.version;
        let Some(scale) = release.config.autoscale else {
            loads.remove(&app.name);
            continue;
        };
        if platform.routes.is_sleeping(&app.name) {
            continue;
        }
        let busy: f64 = counters
            .series
            .iter()
            .filter(|s| s.app == app.name)
            .map(|s| s.latency_sum_seconds)
            .sum();
        let load = loads.entry(app.name.clone()).or_default();
        let now = Instant::now();
        let web: Vec<_> = instances
            .iter()
            .filter(|i| {
                i.app == app.name
                    && i.release == current
                    && i.process == WEB_PROCESS
                    && matches!(
                        i.state,
                        InstanceState::Running | InstanceState::Starting | InstanceState::Crashed
                    )
            })
            .collect();
        let cpu_now: HashMap<String, f64> = if scale.target_cpu.is_some() {
            web.iter()
                .filter_map(|i| {
                    berth_runtime::cgroups::usage(&crate::launcher::cgroup_path(&i.id))
                        .map(|u| (i.id.clone(), u.cpu_seconds))
                })
                .collect()
        } else {
            HashMap::new()
        };
        if let Some(at) = load.read_at {
            let elapsed = now.duration_since(at).as_secs_f64().max(0.001);
            let sample = ((busy - load.busy_seconds) / elapsed).max(0.0);
            load.concurrency = 0.5 * load.concurrency + 0.5 * sample;
            // Per instance: a new or restarted one counts from its first reading.
            let cpu: f64 = cpu_now
                .iter()
                .filter_map(|(id, s)| load.cpu_seconds.get(id).map(|before| (s - before).max(0.0)))
                .sum::<f64>()
                / elapsed;
            load.cpu_used = 0.5 * load.cpu_used + 0.5 * cpu;
        }
        load.busy_seconds = busy;
        load.cpu_seconds = cpu_now;
        load.read_at = Some(now);
        let have = web.len() as u32;
        let cpu_limit = release
            .config
            .processes
            .get(WEB_PROCESS)
            .map_or(1.0, |p| f64::from(p.limits.cpu_millis) / 1000.0);
        let want = scale.desired(load.concurrency, load.cpu_used, cpu_limit);
        let settled = load.last_change.is_none_or(|t| t.elapsed() >= SETTLE);
        if want > have && settled {
            load.low_since = None;
            load.last_change = Some(now);
            let next_index = web.iter().map(|i| i.index + 1).max().unwrap_or(0);
            tracing::info!(app = %app.name, concurrency = load.concurrency, cpu = load.cpu_used, from = have, to = want, "autoscale: adding web instances");
            platform
                .scale_out(&app.name, want - have, next_index)
                .await?;
        } else if want < have {
            let low_since = *load.low_since.get_or_insert(now);
            if low_since.elapsed() >= Duration::from_secs(scale.cooldown_secs) && settled {
                load.low_since = None;
                load.last_change = Some(now);
                tracing::info!(app = %app.name, concurrency = load.concurrency, cpu = load.cpu_used, from = have, to = want, "autoscale: removing web instances");
                let mut newest: Vec<_> = web.into_iter().cloned().collect();
                newest.sort_by_key(|i| std::cmp::Reverse(i.index));
                newest.truncate((have - want) as usize);
                platform.scale_in(&app.name, newest).await?;
            }
        } else {
            load.low_since = None;
        }
    }
    Ok(())
}

impl Platform {
    /// Starts `count` more web instances of `app`'s serving release and routes to them
    /// once they answer.
    async fn scale_out(
        self: &Arc<Self>,
        app: &str,
        count: u32,
        first_index: u32,
    ) -> Result<(), crate::ApiError> {
        let lock = self.app_lock(app);
        let Ok(_guard) = lock.try_lock() else {
            return Ok(());
        };
        self.start_web(app, Some(count), first_index).await?;
        self.publish_network().await
    }

    /// Drains and stops the given web instances of `app`.
    async fn scale_in(
        self: &Arc<Self>,
        app: &str,
        instances: Vec<crate::store::InstanceRow>,
    ) -> Result<(), crate::ApiError> {
        let lock = self.app_lock(app);
        let Ok(_guard) = lock.try_lock() else {
            return Ok(());
        };
        for inst in &instances {
            self.store.instance_stopping(&inst.id).await?;
        }
        self.publish_network().await?;
        let platform = self.clone();
        self.tasks.spawn(async move {
            tokio::time::sleep(platform.cfg.drain_grace).await;
            let _ = platform
                .stop_instances(&instances, platform.cfg.stop_timeout)
                .await;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use berth_core::model::Autoscale;

    #[test]
    fn the_wanted_instances_follow_concurrency_within_bounds() {
        let s = Autoscale {
            min: 1,
            max: 4,
            target_concurrency: 10,
            target_cpu: None,
            cooldown_secs: 60,
        };
        assert_eq!(s.desired(0.0, 9.0, 1.0), 1, "CPU is no signal here");
        assert_eq!(s.desired(10.0, 0.0, 1.0), 1);
        assert_eq!(s.desired(10.5, 0.0, 1.0), 2);
        assert_eq!(s.desired(35.0, 0.0, 1.0), 4);
        assert_eq!(s.desired(1000.0, 0.0, 1.0), 4);
    }

    #[test]
    fn cpu_asks_for_instances_by_the_share_of_their_limit_in_use() {
        let s = Autoscale {
            min: 1,
            max: 6,
            target_concurrency: 0,
            target_cpu: Some(50),
            cooldown_secs: 60,
        };
        // Instances of half a CPU each, aimed at 50%: a quarter CPU per instance.
        assert_eq!(s.desired(100.0, 0.2, 0.5), 1, "requests are no signal here");
        assert_eq!(s.desired(0.0, 0.3, 0.5), 2);
        assert_eq!(s.desired(0.0, 1.0, 0.5), 4);
        assert_eq!(s.desired(0.0, 9.0, 0.5), 6);
        let both = Autoscale {
            target_concurrency: 10,
            ..s
        };
        assert_eq!(
            both.desired(35.0, 0.3, 0.5),
            4,
            "the larger of the two wins"
        );
        assert_eq!(both.desired(5.0, 1.2, 0.5), 5);
    }
}

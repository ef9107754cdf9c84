//! `/metrics`: gathers what a scrape reads (apps, the edge's latest request counts, each
//! instance's cgroup usage) and renders it with the platform counters of
//! `berth_observe::metrics`.

use crate::error::ApiError;
use crate::platform::Platform;
use berth_core::model::InstanceState;
use berth_observe::metrics::{Format, InstanceSample, Scrape};

impl Platform {
    /// Everything `/metrics` shows, in `format`.
    pub async fn render_metrics(&self, format: Format) -> Result<String, ApiError> {
        let apps = self
            .store
            .apps()
            .await?
            .into_iter()
            .map(|a| (a.name, a.current_release))
            .collect();
        let rows = self.store.instances(None).await?;
        let dora = self.dora_everywhere().await?;
        let probes = self.probes.latest();
        let edge_file = self.cfg.edge_metrics_file();
        let scrape = tokio::task::spawn_blocking(move || {
            let instances = rows
                .into_iter()
                .map(|r| {
                    let usage = berth_runtime::cgroups::usage(&crate::launcher::cgroup_path(&r.id));
                    InstanceSample {
                        running: r.state == InstanceState::Running,
                        cpu_seconds: usage.map(|u| u.cpu_seconds),
                        memory_bytes: usage.map(|u| u.memory_bytes),
                        oom_kills: usage.map(|u| u.oom_kills),
                        app: r.app,
                        release: r.release,
                        process: r.process,
                        instance: r.id,
                        restarts: r.restarts,
                    }
                })
                .collect();
            Scrape {
                edge: berth_edge::metrics::read_snapshot(&edge_file),
                instances,
                apps,
                dora,
                probes,
            }
        })
        .await
        .map_err(|e| ApiError::internal("reading metrics", e))?;
        Ok(self.metrics.render(scrape, format))
    }
}

//! Volumes as the control plane handles them: checks before anything is made, the
//! filesystem work on the blocking pool (`berth_data::volumes`), and the release that
//! mounts a new volume into (or takes a destroyed one out of) a running app.

use crate::deploy::{DeployFailure, Events, STORED_ONLY};
use crate::error::ApiError;
use crate::platform::Platform;
use crate::store::VolumeRow;
use axum::http::StatusCode;
use berth_core::api::DeployEvent;
use berth_core::model::InstanceState;
use berth_core::state::{self, SnapshotView, VolumeCreate, VolumeView};
use berth_data::volumes::VolumeStore;
use berth_runtime::bundle::{APP_GID, APP_UID};
use std::sync::Arc;

fn not_found(app: &str, name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "volume_not_found",
        format!("{app} has no volume named {name:?}"),
    )
    .hint(format!("list volumes with `berth volumes list {app}`"))
}

/// What is wrong with a volume request (its name, size and mount path), all of it at
/// once; else its size in bytes.
pub fn check_volume_request(req: &VolumeCreate) -> Result<u64, ApiError> {
    let mut problems = Vec::new();
    if let Err(e) = state::validate_volume_name(&req.name) {
        problems.push(format!("name: {e}"));
    }
    let size = state::parse_volume_size(&req.size)
        .map_err(|e| problems.push(format!("size: {e}")))
        .ok();
    if let Err(e) = state::validate_mount_path(&req.mount) {
        problems.push(format!("mount: {e}"));
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid("invalid_volume", problems.join("; ")));
    }
    Ok(size.unwrap_or(state::MIN_VOLUME_BYTES))
}

impl Platform {
    async fn volume_fs<T: Send + 'static>(
        &self,
        f: impl FnOnce(&VolumeStore) -> Result<T, berth_data::volumes::VolumeError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = self.volumes.clone();
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e @ berth_data::volumes::VolumeError::NoSnapshot { .. })) => {
                Err(
                    ApiError::new(StatusCode::NOT_FOUND, "snapshot_not_found", e.to_string())
                        .hint("list snapshots with `berth volumes list APP`"),
                )
            }
            Ok(Err(e)) => Err(ApiError::internal("volume", e)),
            Err(e) => Err(ApiError::internal("volume", e)),
        }
    }

    /// Volumes of an app with their use and snapshots.
    pub async fn list_volumes(&self, app: &str) -> Result<Vec<VolumeView>, ApiError> {
        let instances = self.instance_views(app).await?;
        let mut out = Vec::new();
        for v in self.store.volumes(Some(app)).await? {
            let (a, n) = (app.to_string(), v.name.clone());
            let (usage, snapshots) = self
                .volume_fs(move |s| Ok((s.usage(&a, &n), s.snapshots(&a, &n))))
                .await?;
            out.push(VolumeView {
                app: app.to_string(),
                used_bytes: usage.map(|u| u.0),
                mount: v.mount_path.clone(),
                exclusive: v.exclusive,
                mounted_by: instances
                    .iter()
                    .map(|i| format!("{}.{}[v{}]", i.process, i.index, i.release))
                    .collect(),
                snapshots: snapshots
                    .into_iter()
                    .map(|s| SnapshotView {
                        id: s.id,
                        disk_bytes: s.disk_bytes,
                        created_at: s.created_at,
                    })
                    .collect(),
                created_at: v.created_at,
                size_bytes: v.size_bytes,
                name: v.name,
            });
        }
        Ok(out)
    }

    /// Creates a volume; when a release serves, a new release mounts it (zero downtime
    /// unless the volume is exclusive). Fails whole: no volume is left behind.
    pub async fn create_volume(
        self: &Arc<Self>,
        app: &str,
        req: VolumeCreate,
        actor: String,
        events: Events,
    ) -> Result<(u32, String), DeployFailure> {
        let size = check_volume_request(&req)?;
        let lock = self.app_lock(app);
        let _guard = lock.lock().await;
        if self.store.app(app).await?.is_none() {
            return Err(ApiError::app_not_found(app).into());
        }
        let existing = self.store.volumes(Some(app)).await?;
        if existing.iter().any(|v| v.name == req.name) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "volume_exists",
                format!("{app} already has a volume named {:?}", req.name),
            )
            .hint("pick another name, or `berth volumes destroy` the old one first")
            .into());
        }
        if let Some(v) = existing
            .iter()
            .find(|v| state::mount_paths_overlap(&v.mount_path, &req.mount))
        {
            return Err(ApiError::invalid(
                "invalid_volume",
                format!(
                    "mount: {} overlaps volume {} mounted at {}",
                    req.mount, v.name, v.mount_path
                ),
            )
            .into());
        }
        if existing.len() >= state::MAX_VOLUMES_PER_APP {
            return Err(ApiError::invalid(
                "too_many_volumes",
                format!("an app has at most {} volumes", state::MAX_VOLUMES_PER_APP),
            )
            .into());
        }
        let current = self.serving_release(app).await?;
        if req.exclusive {
            if let Some(r) = &current {
                let total: u32 = r.config.processes.values().map(|p| p.instances).sum();
                if total > 1 {
                    return Err(ApiError::invalid(
                        "exclusive_volume",
                        format!("an exclusive volume is used by one instance at a time, and {app} runs {total}"),
                    )
                    .hint("create it without --exclusive, or run one instance")
                    .into());
                }
            }
        }
        // On a cluster the release's PersistentVolumeClaim is the volume.
        let here = self.kube.is_none();
        if here {
            let (a, n) = (app.to_string(), req.name.clone());
            self.volume_fs(move |s| s.create(&a, &n, size, APP_UID, APP_GID))
                .await?;
        }
        let row = VolumeRow {
            app: app.to_string(),
            name: req.name.clone(),
            size_bytes: size,
            mount_path: req.mount.clone(),
            exclusive: req.exclusive,
            created_at: crate::now_secs(),
        };
        if let Err(e) = self.store.insert_volume(&row).await {
            if here {
                let (a, n) = (app.to_string(), req.name.clone());
                let _ = self.volume_fs(move |s| s.destroy(&a, &n)).await;
            }
            return Err(e.into());
        }
        let Some(release) = current else {
            return Ok((
                STORED_ONLY,
                format!(
                    "volume {} created ({}, at {}); it is mounted from {app}'s first deploy on",
                    req.name,
                    berth_core::limits::format_memory(size),
                    req.mount
                ),
            ));
        };
        let _ = events.send(DeployEvent::Step {
            step: "release".into(),
        });
        let result = self
            .deploy_config(
                app,
                &release.image,
                release.config.clone(),
                &format!("volume {} at {}", req.name, req.mount),
                &actor,
                &events,
            )
            .await;
        if result.is_err() {
            // Nothing changed: the volume goes again (on a cluster, the serving release's
            // objects were applied again and its claim was never made).
            self.store.delete_volume(app, &req.name).await?;
            if here {
                let (a, n) = (app.to_string(), req.name.clone());
                let _ = self.volume_fs(move |s| s.destroy(&a, &n)).await;
            }
        }
        result
    }

    /// Takes a consistent snapshot of a volume.
    pub async fn snapshot_volume(&self, app: &str, name: &str) -> Result<SnapshotView, ApiError> {
        self.not_on_cluster(
            "a volume snapshot",
            crate::kube_backend::VOLUME_SNAPSHOT_HINT,
        )?;
        self.existing_volume(app, name).await?;
        let (a, n) = (app.to_string(), name.to_string());
        let s = self.volume_fs(move |s| s.snapshot(&a, &n)).await?;
        Ok(SnapshotView {
            id: s.id,
            disk_bytes: s.disk_bytes,
            created_at: s.created_at,
        })
    }

    async fn existing_volume(&self, app: &str, name: &str) -> Result<VolumeRow, ApiError> {
        if self.store.app(app).await?.is_none() {
            return Err(ApiError::app_not_found(app));
        }
        self.store
            .volumes(Some(app))
            .await?
            .into_iter()
            .find(|v| v.name == name)
            .ok_or_else(|| not_found(app, name))
    }

    /// The instances using an app's volumes: its running containers here, its pods on a
    /// cluster (as `process.index`).
    async fn volume_users(&self, app: &str) -> Result<Vec<String>, ApiError> {
        Ok(self
            .instance_views(app)
            .await?
            .into_iter()
            .map(|i| format!("{}.{}", i.process, i.index))
            .collect())
    }

    async fn running_instances(
        &self,
        app: &str,
    ) -> Result<Vec<crate::store::InstanceRow>, ApiError> {
        Ok(self
            .store
            .instances(Some(app))
            .await?
            .into_iter()
            .filter(|i| i.state != InstanceState::Stopped)
            .collect())
    }

    /// Puts a snapshot back. While instances use the volume this needs `force`: they are
    /// stopped, the volume restored, and the serving release started again.
    pub async fn restore_volume(
        self: &Arc<Self>,
        app: &str,
        name: &str,
        snapshot: &str,
        force: bool,
    ) -> Result<(), DeployFailure> {
        self.not_on_cluster(
            "a volume restore",
            crate::kube_backend::VOLUME_SNAPSHOT_HINT,
        )?;
        let lock = self.app_lock(app);
        let _guard = lock.lock().await;
        self.existing_volume(app, name).await?;
        let (a, n, id) = (app.to_string(), name.to_string(), snapshot.to_string());
        let known = self
            .volume_fs(move |s| Ok(s.snapshots(&a, &n).iter().any(|x| x.id == id)))
            .await?;
        if !known {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "snapshot_not_found",
                format!("volume {name} of {app} has no snapshot {snapshot:?}"),
            )
            .hint(format!("list snapshots with `berth volumes list {app}`"))
            .into());
        }
        let running = self.running_instances(app).await?;
        if !running.is_empty() && !force {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "volume_in_use",
                format!(
                    "volume {name} is in use by {} instance(s) of {app}",
                    running.len()
                ),
            )
            .hint("add --force to stop the app, restore, and start it again (brief downtime)")
            .into());
        }
        let serving = self.store.app(app).await?.and_then(|a| a.current_release);
        self.stop_instances(&running, self.cfg.stop_timeout).await?;
        let (a, n, id) = (app.to_string(), name.to_string(), snapshot.to_string());
        let restored = self.volume_fs(move |s| s.restore(&a, &n, &id)).await;
        if let (Some(v), false) = (serving, running.is_empty()) {
            self.restart_release(app, v).await?;
        }
        restored?;
        Ok(())
    }

    /// Deletes a volume and its snapshots. While instances use it this needs `force`: a
    /// new release without the volume rolls out first.
    pub async fn destroy_volume(
        self: &Arc<Self>,
        app: &str,
        name: &str,
        force: bool,
        actor: String,
        events: Events,
    ) -> Result<(u32, String), DeployFailure> {
        let lock = self.app_lock(app);
        let _guard = lock.lock().await;
        let row = self.existing_volume(app, name).await?;
        let running = self.volume_users(app).await?;
        if !running.is_empty() && !force {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "volume_in_use",
                format!(
                    "volume {name} is mounted by {} running instance(s) of {app}",
                    running.len()
                ),
            )
            .hint("add --force to redeploy the app without it, then delete it and its snapshots")
            .into());
        }
        self.store.delete_volume(app, name).await?;
        let mut result = Ok((STORED_ONLY, format!("volume {name} of {app} destroyed")));
        // On a cluster a release without the volume deletes its claim (and its data).
        if !running.is_empty() || self.kube.is_some() {
            if let Some(release) = self.serving_release(app).await? {
                result = self
                    .deploy_config(
                        app,
                        &release.image,
                        release.config.clone(),
                        &format!("volume {name} removed"),
                        &actor,
                        &events,
                    )
                    .await;
            }
        }
        if result.is_err() {
            // The app still mounts it: keep it.
            self.store.insert_volume(&row).await?;
            return result;
        }
        if self.kube.is_some() {
            return result;
        }
        // Old instances drain in the background; their mounts go with them.
        let (a, n) = (app.to_string(), name.to_string());
        let grace = self.cfg.drain_grace + self.cfg.stop_timeout;
        let store = self.volumes.clone();
        self.tasks.spawn(async move {
            if !running.is_empty() {
                tokio::time::sleep(grace).await;
            }
            let _ = tokio::task::spawn_blocking(move || store.destroy(&a, &n)).await;
        });
        result
    }
}

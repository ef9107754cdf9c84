//! Disk hygiene: the images of old releases (beyond the newest [`KEEP_RELEASES`] of each
//! app, and never one a current release or a running instance uses), the root filesystems
//! unpacked from images no longer kept, and build caches of apps that are gone or that grew
//! past [`BUILD_CACHE_CAP`]. Run by `berth gc` (`--dry-run` says what would go) and once an
//! hour by the control plane, with what was freed in its log.

use crate::platform::Platform;
use crate::ApiError;
use berth_core::model::InstanceState;
use serde::Serialize;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Releases per app whose images are kept.
pub const KEEP_RELEASES: usize = 10;
/// Largest build cache of one app kept (bytes).
pub const BUILD_CACHE_CAP: u64 = 2 << 30;
/// How often the control plane collects.
const EVERY: Duration = Duration::from_secs(3600);

/// One thing collected (or that would be).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GcItem {
    /// `image`, `root filesystem` or `build cache`.
    pub kind: String,
    /// The app it belonged to (none for a root filesystem no app keeps).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The image's tag and digest, or the directory.
    pub name: String,
    pub bytes: u64,
}

/// What a collection freed.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct GcReport {
    pub dry_run: bool,
    pub items: Vec<GcItem>,
    pub freed_bytes: u64,
    /// Apps skipped because a deploy held them.
    pub busy: Vec<String>,
}

/// Bytes under `path` (files only, not following links).
fn size_of(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|d| d.flatten().map(|e| size_of(&e.path())).sum())
        .unwrap_or(0)
}

impl Platform {
    /// Collects (or, with `dry_run`, lists) what no release needs any more.
    pub async fn gc(self: &Arc<Self>, dry_run: bool) -> Result<GcReport, ApiError> {
        let mut report = GcReport {
            dry_run,
            ..Default::default()
        };
        let apps = self.store.apps().await?;
        let instances = self.store.instances(None).await?;
        let mut kept_digests: HashSet<String> = HashSet::new();
        let mut known_apps = HashSet::new();
        for app in &apps {
            known_apps.insert(app.name.clone());
            let lock = self.app_lock(&app.name);
            let Ok(_guard) = lock.try_lock() else {
                report.busy.push(app.name.clone());
                // Everything it has stays this time.
                for r in self.store.releases(&app.name).await? {
                    kept_digests.insert(r.image.digest);
                }
                continue;
            };
            let mut releases = self.store.releases(&app.name).await?;
            releases.sort_by_key(|r| std::cmp::Reverse(r.version));
            let in_use: HashSet<u32> = instances
                .iter()
                .filter(|i| i.app == app.name && i.state != InstanceState::Stopped)
                .map(|i| i.release)
                .chain(app.current_release)
                .collect();
            let keep: HashSet<String> = releases
                .iter()
                .enumerate()
                .filter(|(n, r)| *n < KEEP_RELEASES || in_use.contains(&r.version))
                .map(|(_, r)| r.image.digest.clone())
                .collect();
            kept_digests.extend(keep.iter().cloned());
            let images = self.factory.images().clone();
            let name = app.name.clone();
            let collected =
                tokio::task::spawn_blocking(move || images.collect(&name, &keep, dry_run))
                    .await
                    .map_err(|e| ApiError::internal("collecting images", e))?
                    .map_err(|e| ApiError::internal("collecting images", e))?;
            for (tag, digest, bytes) in collected.images {
                report.items.push(GcItem {
                    kind: "image".into(),
                    app: Some(app.name.clone()),
                    name: format!("{tag} ({digest})"),
                    bytes,
                });
            }
            report.freed_bytes += collected.bytes;
        }
        // Root filesystems of images no app keeps (not those being unpacked).
        if let Ok(dir) = std::fs::read_dir(self.cfg.rootfs_dir()) {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.contains(".tmp-") || kept_digests.contains(&format!("sha256:{name}")) {
                    continue;
                }
                let bytes = size_of(&e.path());
                if !dry_run {
                    let _ = std::fs::remove_dir_all(e.path());
                }
                report.freed_bytes += bytes;
                report.items.push(GcItem {
                    kind: "root filesystem".into(),
                    app: None,
                    name,
                    bytes,
                });
            }
        }
        // Build caches: of apps that are gone, or grown past the cap (the next build
        // starts a fresh one).
        for root in [
            self.cfg.cache_dir(),
            self.cfg.build_user_dir().join("cache"),
        ] {
            let Ok(dir) = std::fs::read_dir(&root) else {
                continue;
            };
            for e in dir.flatten() {
                let app = e.file_name().to_string_lossy().into_owned();
                if report.busy.contains(&app) {
                    continue;
                }
                let bytes = size_of(&e.path());
                if known_apps.contains(&app) && bytes <= BUILD_CACHE_CAP {
                    continue;
                }
                let lock = self.app_lock(&app);
                let Ok(_guard) = lock.try_lock() else {
                    continue;
                };
                if !dry_run {
                    let _ = std::fs::remove_dir_all(e.path());
                }
                report.freed_bytes += bytes;
                report.items.push(GcItem {
                    kind: "build cache".into(),
                    app: Some(app),
                    name: e.path().display().to_string(),
                    bytes,
                });
            }
        }
        if !dry_run && !report.items.is_empty() {
            tracing::info!(
                freed_bytes = report.freed_bytes,
                freed = %crate::doctor::human(report.freed_bytes),
                items = report.items.len(),
                "gc: collected what no release needs"
            );
        }
        Ok(report)
    }
}

/// Collects once an hour until shutdown.
pub async fn run_gc(platform: Arc<Platform>) {
    loop {
        tokio::select! {
            _ = platform.shutdown.cancelled() => break,
            _ = tokio::time::sleep(EVERY) => {}
        }
        if let Err(e) = platform.gc(false).await {
            tracing::warn!(error = %e.message, "gc failed");
        }
    }
}

//! Writing a backup from the running platform, and the backup schedule of `berth up`.

use super::view;
use crate::error::ApiError;
use crate::platform::Platform;
use berth_core::state::{BackupCreate, BackupView};
use berth_data::backup::archive::{compress_file, hash_file, pack_dir, Written};
use berth_data::backup::location::Location;
use berth_data::backup::manifest::{
    keys_aad, DatabaseEntry, ImageEntry, Manifest, Part, VolumeEntry, FORMAT, KEYS_PART, MANIFEST,
    STATE_PART,
};
use berth_data::backup::passphrase::{check_new, Kdf};
use berth_data::backup::retention::Retention;
use berth_data::backup::BackupError;
use berth_data::postgres::AppDatabase;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What `berth up --backup-to` does.
#[derive(Debug, Clone)]
pub struct BackupSchedule {
    /// Where: a directory or `s3://bucket/prefix`.
    pub to: String,
    /// How often.
    pub every: Duration,
    /// File holding the passphrase (read at every backup).
    pub passphrase_file: PathBuf,
    /// What to keep afterwards.
    pub retention: Retention,
}

/// Reads a passphrase file (one line; surrounding whitespace dropped).
pub fn read_passphrase_file(path: &Path) -> Result<zeroize::Zeroizing<String>, String> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
    );
    let pass = zeroize::Zeroizing::new(text.trim().to_string());
    check_new(&pass).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(pass)
}

fn blocking_err(e: tokio::task::JoinError) -> ApiError {
    ApiError::internal("the backup", e)
}

/// Runs blocking work of the backup on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BackupError> + Send + 'static,
) -> Result<T, ApiError> {
    Ok(tokio::task::spawn_blocking(f)
        .await
        .map_err(blocking_err)??)
}

impl Platform {
    fn backup_scratch(&self) -> PathBuf {
        self.cfg.data_dir.join("backups/work")
    }

    /// Writes one backup of the whole platform and applies the retention policy.
    pub async fn create_backup(&self, req: BackupCreate) -> Result<BackupView, ApiError> {
        check_new(&req.passphrase)?;
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let location = Location::parse(&req.to, &cwd)?;
        if let Location::Dir(dir) = &location {
            if dir.starts_with(&self.cfg.data_dir) {
                return Err(ApiError::invalid(
                    "backup_location",
                    format!(
                        "{} is inside the data directory; a backup there is lost with it",
                        dir.display()
                    ),
                )
                .hint("back up to another disk, or to s3://bucket/prefix"));
            }
            std::fs::create_dir_all(dir).map_err(|e| {
                ApiError::from(BackupError::Location {
                    location: location.to_string(),
                    message: e.to_string(),
                })
            })?;
        }
        let _one_at_a_time = self.backup_lock.lock().await;
        let created_at = crate::now_secs();
        let id = format!("{created_at}-{}", crate::random_id(2));
        let scratch = self.backup_scratch();
        let staging = location.staging_dir(&id, &scratch);
        let work = scratch.join(format!("{id}.work"));
        let written = self
            .write_backup(&id, created_at, &req.passphrase, &staging, &work)
            .await;
        let _ = std::fs::remove_dir_all(&work);
        let (manifest, parts) = match written {
            Ok(done) => done,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        if let Err(e) = location.publish(&id, &staging, &parts).await {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e.into());
        }
        let mut out = view(&location, &manifest);
        let policy = Retention {
            keep_daily: req.keep_daily,
            keep_weekly: req.keep_weekly,
        };
        out.pruned = super::prune(&location, policy).await?;
        tracing::info!(backup = %id, location = %location, bytes = out.bytes, pruned = out.pruned.len(), "backup written");
        Ok(out)
    }

    /// Writes every part and the manifest into `staging`.
    async fn write_backup(
        &self,
        id: &str,
        created_at: i64,
        passphrase: &str,
        staging: &Path,
        work: &Path,
    ) -> Result<(Manifest, Vec<String>), ApiError> {
        let io = |what: &Path| {
            let what = what.display().to_string();
            move |e: std::io::Error| ApiError::internal(&format!("the backup ({what})"), e)
        };
        for dir in [staging, work] {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let mut parts: Vec<Part> = Vec::new();
        let add = |parts: &mut Vec<Part>, path: String, w: Written| {
            parts.push(Part {
                path,
                bytes: w.bytes,
                sha256: w.sha256,
            })
        };

        // The state store, online: VACUUM INTO is one read transaction.
        let db = work.join("state.db");
        self.store.snapshot_into(&db).await?;
        let apps: Vec<String> = self
            .store
            .apps()
            .await?
            .into_iter()
            .map(|a| a.name)
            .collect();
        let volumes = self.store.volumes(None).await?;
        let databases = self.store.databases().await?;
        let out = staging.join(STATE_PART);
        let w = blocking(move || compress_file(&db, &out)).await?;
        add(&mut parts, STATE_PART.into(), w);

        // The keyring, under the passphrase.
        let kdf = Kdf::fresh();
        let exported = self.keyring.read().await.export();
        let (kdf2, pass) = (kdf.clone(), zeroize::Zeroizing::new(passphrase.to_string()));
        let key = blocking(move || kdf2.derive(&pass)).await?;
        let keys_file = staging.join(KEYS_PART);
        std::fs::write(&keys_file, key.seal(&keys_aad(id), &exported)).map_err(io(&keys_file))?;
        add(&mut parts, KEYS_PART.into(), hash_file(&keys_file)?);

        // Volumes, each from a frozen copy: the apps keep running.
        let mut volume_entries = Vec::new();
        for v in volumes {
            let rel = format!("volumes/{}/{}.tar.zst", v.app, v.name);
            let out = staging.join(&rel);
            std::fs::create_dir_all(out.parent().unwrap_or(staging)).map_err(io(&out))?;
            let (store, work) = (self.volumes.clone(), work.to_path_buf());
            let (app, name) = (v.app.clone(), v.name.clone());
            let started = std::time::Instant::now();
            let (w, owner) = tokio::task::spawn_blocking(move || {
                store.read_consistent(&app, &name, &work, |mnt| {
                    pack_dir(mnt, &out).map_err(|e| e.to_string())
                })
            })
            .await
            .map_err(blocking_err)?
            .map_err(|e| ApiError::internal("backing up a volume", e))?;
            tracing::info!(backup = %id, volume = %format!("{}/{}", v.app, v.name), bytes = w.bytes, ms = started.elapsed().as_millis() as u64, "volume backed up");
            add(&mut parts, rel.clone(), w);
            volume_entries.push(VolumeEntry {
                app: v.app,
                name: v.name,
                size_bytes: v.size_bytes,
                owner,
                part: rel,
            });
        }

        // Databases, dumped by the server.
        let mut database_entries = Vec::new();
        if !databases.is_empty() {
            std::fs::create_dir_all(staging.join("databases")).map_err(io(staging))?;
        }
        for (app, (database, role, _)) in databases {
            let rel = format!("databases/{app}.dump");
            let out = staging.join(&rel);
            let db = AppDatabase {
                database: database.clone(),
                role: role.clone(),
            };
            let pg = self.postgres.clone().ok_or_else(|| {
                ApiError::internal(
                    "backing up databases",
                    "PostgreSQL is not installed on this machine",
                )
            })?;
            let dumped = out.clone();
            tokio::task::spawn_blocking(move || {
                pg.ensure_running()?;
                pg.dump(&db, &dumped)
            })
            .await
            .map_err(blocking_err)?
            .map_err(|e| ApiError::internal(&format!("dumping {app}'s database"), e))?;
            add(&mut parts, rel.clone(), hash_file(&out)?);
            database_entries.push(DatabaseEntry {
                app,
                database,
                role,
                part: rel,
            });
        }

        // Each app's images (its OCI layout), so restored releases run without a rebuild.
        let mut image_entries = Vec::new();
        for app in &apps {
            let layout = self.cfg.images_dir().join(app);
            if !layout.is_dir() {
                continue;
            }
            let rel = format!("images/{app}.tar.zst");
            let out = staging.join(&rel);
            std::fs::create_dir_all(out.parent().unwrap_or(staging)).map_err(io(&out))?;
            let w = blocking(move || pack_dir(&layout, &out)).await?;
            add(&mut parts, rel.clone(), w);
            image_entries.push(ImageEntry {
                app: app.clone(),
                part: rel,
            });
        }

        let mut manifest = Manifest {
            format: FORMAT,
            id: id.to_string(),
            created_at,
            berth_version: env!("CARGO_PKG_VERSION").to_string(),
            kdf,
            apps,
            volumes: volume_entries,
            databases: database_entries,
            images: image_entries,
            parts,
            mac: String::new(),
        };
        let bytes = manifest.sign(&key);
        let names = manifest.parts.iter().map(|p| p.path.clone()).collect();
        let path = staging.join(MANIFEST);
        std::fs::write(&path, bytes).map_err(io(&path))?;
        Ok((manifest, names))
    }
}

/// Backs up on the schedule until shutdown. A failed backup is logged and tried again at
/// the next tick.
pub async fn run_schedule(platform: Arc<Platform>) {
    let Some(schedule) = platform.cfg.backup.clone() else {
        return;
    };
    loop {
        tokio::select! {
            _ = platform.shutdown.cancelled() => return,
            _ = tokio::time::sleep(schedule.every) => {}
        }
        let passphrase = match read_passphrase_file(&schedule.passphrase_file) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "scheduled backup skipped: the passphrase file cannot be used");
                platform.backup_outcome(Some(&e)).await;
                continue;
            }
        };
        let req = BackupCreate {
            to: schedule.to.clone(),
            passphrase: passphrase.to_string(),
            keep_daily: schedule.retention.keep_daily,
            keep_weekly: schedule.retention.keep_weekly,
        };
        match platform.create_backup(req).await {
            Ok(_) => platform.backup_outcome(None).await,
            Err(e) => {
                tracing::error!(error = %e.message, "scheduled backup failed");
                platform.backup_outcome(Some(&e.message)).await;
            }
        }
    }
}

//! Restoring a backup onto a data directory while the platform is down: everything is
//! fetched, checked and unpacked into a staging directory beside the data directory, and
//! only when all of it succeeded does the staging directory take the data directory's
//! place. A damaged backup or a wrong passphrase changes nothing.
//!
//! Databases need their server, which needs the platform's bridge: their dumps wait in
//! `<data>/backups/restore-pending/` and the platform loads them when it next starts,
//! before it serves.

use super::{check_part, latest, manifest, open_keys};
use crate::config::PlatformConfig;
use crate::databases::DATABASE_URL;
use crate::platform::{EdgeProcess, Platform};
use berth_data::backup::archive::{decompress_file, unpack_dir_hashed};
use berth_data::backup::location::Location;
use berth_data::backup::manifest::STATE_PART;
use berth_data::backup::manifest::{Manifest, Part};
use berth_data::backup::BackupError;
use berth_data::postgres::AppDatabase;
use std::path::{Path, PathBuf};

/// Where restored database dumps wait for the platform.
pub const PENDING_DATABASES: &str = "backups/restore-pending";

/// Errors of a restore.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error("{0} is not empty: it holds a platform's data\nhint: restore onto an empty directory (--data-dir), or pass --force to move what is there aside first")]
    NotEmpty(String),
    #[error("berth is running on {0}\nhint: stop `berth up` and run `berth down` first; a restore replaces the whole data directory")]
    Running(String),
    #[error("{0}")]
    Failed(String),
}

/// What to restore, and where.
pub struct RestoreOptions {
    /// Where the backup is.
    pub location: Location,
    /// Which backup (default: the newest).
    pub id: Option<String>,
    /// The data directory to restore into.
    pub data_dir: PathBuf,
    /// Opens the backup's keyring.
    pub passphrase: zeroize::Zeroizing<String>,
    /// Move a non-empty data directory aside instead of refusing.
    pub force: bool,
}

/// What a restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    pub id: String,
    pub data_dir: PathBuf,
    pub apps: Vec<String>,
    pub volumes: Vec<String>,
    pub databases: Vec<String>,
    /// Where the data directory's previous contents went (with --force).
    pub moved_aside: Option<PathBuf>,
}

fn failed(what: &str) -> impl Fn(std::io::Error) -> RestoreError + '_ {
    move |e| RestoreError::Failed(format!("{what}: {e}"))
}

/// Whether a platform still runs on `data_dir`: its API answers or its edge is alive.
fn running(data_dir: &Path) -> bool {
    let cfg = PlatformConfig::new(data_dir.to_path_buf());
    if EdgeProcess::running(&cfg).is_some() {
        return true;
    }
    let Ok(text) = std::fs::read(cfg.api_info_path()) else {
        return false;
    };
    let addr = serde_json::from_slice::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["url"].as_str().map(str::to_string))
        .and_then(|u| u.strip_prefix("http://").map(str::to_string))
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok());
    addr.is_some_and(|a| {
        std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_millis(500)).is_ok()
    })
}

/// Restores a backup (see the module docs).
pub async fn restore(
    opts: RestoreOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<RestoreReport, RestoreError> {
    let data_dir = opts.data_dir.clone();
    if running(&data_dir) {
        return Err(RestoreError::Running(data_dir.display().to_string()));
    }
    let non_empty = std::fs::read_dir(&data_dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if non_empty && !opts.force {
        return Err(RestoreError::NotEmpty(data_dir.display().to_string()));
    }
    let id = match &opts.id {
        Some(id) => id.clone(),
        None => latest(&opts.location).await?,
    };
    let parent = data_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    std::fs::create_dir_all(&parent).map_err(failed("creating the data directory's parent"))?;
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "berth".into());
    let staging = parent.join(format!(".{name}.restore-{id}"));
    let _ = std::fs::remove_dir_all(&staging);
    let result = stage(&opts, &id, &staging, progress).await;
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    // Everything is in place beside the data directory: swap it in.
    let mut moved_aside = None;
    if data_dir.exists() {
        if non_empty {
            let aside = parent.join(format!("{name}.before-restore-{}", crate::now_secs()));
            std::fs::rename(&data_dir, &aside).map_err(failed("moving the old data aside"))?;
            moved_aside = Some(aside);
        } else {
            std::fs::remove_dir(&data_dir).map_err(failed("replacing the empty data directory"))?;
        }
    }
    std::fs::rename(staging.join("data"), &data_dir)
        .map_err(failed("moving the restored data into place"))?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(RestoreReport {
        data_dir,
        moved_aside,
        ..report
    })
}

/// Fetches, checks and unpacks the backup into `<staging>/data`.
async fn stage(
    opts: &RestoreOptions,
    id: &str,
    staging: &Path,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<RestoreReport, RestoreError> {
    use std::os::unix::fs::PermissionsExt;
    let scratch = staging.join("download");
    let data = staging.join("data");
    std::fs::create_dir_all(&scratch).map_err(failed("creating the staging directory"))?;
    std::fs::create_dir_all(&data).map_err(failed("creating the staging directory"))?;
    let _ = std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700));
    let loc = &opts.location;
    let m = manifest(loc, id).await?;
    progress("opening the keyring with the passphrase");
    let keys = open_keys(loc, &m, &opts.passphrase, &scratch).await?;
    // Small parts are checked before anything is unpacked; volume and image archives are
    // checked as they unpack (one read instead of two), into the staging directory only.
    let streamed: std::collections::HashSet<&str> = m
        .volumes
        .iter()
        .map(|v| v.part.as_str())
        .chain(m.images.iter().map(|i| i.part.as_str()))
        .collect();
    let mut files = std::collections::HashMap::new();
    for part in &m.parts {
        progress(&format!("fetching {}", part.path));
        let file = loc.fetch(id, &part.path, &scratch).await?;
        if !streamed.contains(part.path.as_str()) {
            check_part(&m, part, &file)?;
        }
        files.insert(part.path.clone(), file);
    }
    let file = |rel: &str| -> Result<PathBuf, RestoreError> {
        files.get(rel).cloned().ok_or_else(|| {
            RestoreError::Backup(BackupError::Damaged {
                id: id.to_string(),
                message: format!("its manifest lists no part {rel}"),
            })
        })
    };
    let cfg = PlatformConfig::new(data.clone());
    progress("restoring the state store");
    decompress_file(&file(STATE_PART)?, &cfg.db_path())?;
    let key_path = data.join("keys/secrets.json");
    berth_data::secrets::Keyring::install(&key_path, &keys)
        .map_err(|e| RestoreError::Failed(e.to_string()))?;
    for img in &m.images {
        progress(&format!("restoring the images of {}", img.app));
        let dir = cfg.images_dir().join(&img.app);
        std::fs::create_dir_all(&dir).map_err(failed("creating the images directory"))?;
        unpack_checked(&m, m.part(&img.part)?, &file(&img.part)?, &dir)?;
    }
    let volumes = berth_data::volumes::VolumeStore::new(cfg.volumes_dir());
    for v in &m.volumes {
        progress(&format!("restoring volume {}/{}", v.app, v.name));
        let archive = file(&v.part)?;
        let (app, name, size, owner) = (v.app.clone(), v.name.clone(), v.size_bytes, v.owner);
        let (store, manifest, part) = (volumes.clone(), m.clone(), m.part(&v.part)?.clone());
        let mut damage = None;
        let filled = tokio::task::spawn_blocking(move || {
            store
                .create_filled(&app, &name, size, owner, |mnt| {
                    unpack_checked(&manifest, &part, &archive, mnt).map_err(|e| {
                        let text = e.to_string();
                        damage = Some(e);
                        text
                    })
                })
                .map_err(|e| {
                    damage
                        .take()
                        .unwrap_or_else(|| RestoreError::Failed(e.to_string()))
                })
        })
        .await
        .map_err(|e| RestoreError::Failed(e.to_string()))?;
        filled?;
    }
    if !m.databases.is_empty() {
        let pending = data.join(PENDING_DATABASES);
        std::fs::create_dir_all(&pending)
            .map_err(failed("creating the pending databases directory"))?;
        for d in &m.databases {
            std::fs::copy(file(&d.part)?, pending.join(format!("{}.dump", d.app)))
                .map_err(failed("keeping a database dump"))?;
        }
    }
    Ok(RestoreReport {
        id: id.to_string(),
        data_dir: opts.data_dir.clone(),
        apps: m.apps.clone(),
        volumes: m.volume_names(),
        databases: m.database_apps(),
        moved_aside: None,
    })
}

/// Unpacks a part into `dir`, checking it against the manifest as it is read.
fn unpack_checked(
    m: &Manifest,
    part: &Part,
    archive: &Path,
    dir: &Path,
) -> Result<(), RestoreError> {
    let (read, unpacked) = unpack_dir_hashed(archive, dir)?;
    if read.bytes != part.bytes || read.sha256 != part.sha256 {
        return Err(BackupError::Damaged {
            id: m.id.clone(),
            message: format!(
                "its part {} does not match its checksum ({} bytes, expected {})",
                part.path, read.bytes, part.bytes
            ),
        }
        .into());
    }
    Ok(unpacked?)
}

/// The password in a `DATABASE_URL` berth made (`postgres://role:password@host:port/db`).
fn url_password(url: &str) -> Option<String> {
    crate::databases::database_url_parts(url).map(|u| u.password)
}

impl Platform {
    /// Loads the database dumps a restore left for this start: each app's role and
    /// database are made again (with the password its `DATABASE_URL` secret holds) and the
    /// dump is restored. A dump that fails stays for the next start and is logged.
    pub(crate) async fn load_restored_databases(&self) {
        let dir = self.cfg.data_dir.join(PENDING_DATABASES);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let databases = match self.store.databases().await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "restoring databases: the state store failed");
                return;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(app) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".dump"))
                .map(str::to_string)
            else {
                continue;
            };
            let Some((database, role, _)) = databases.get(&app).cloned() else {
                tracing::warn!(%app, "a restored database dump belongs to no database; left in place");
                continue;
            };
            let password = match self.open_secret(&app, DATABASE_URL).await {
                Ok(Some(url)) => url_password(&String::from_utf8_lossy(&url)),
                _ => None,
            };
            let Some(password) = password else {
                tracing::error!(%app, "restoring a database: its {DATABASE_URL} secret does not open");
                continue;
            };
            let db = AppDatabase { database, role };
            let dump = path.clone();
            let loaded = self
                .with_pg(move |pg| {
                    pg.ensure_running()?;
                    if !pg.exists(&db)? {
                        pg.provision(&db, &password)?;
                    }
                    pg.restore(&db, &dump)
                })
                .await;
            match loaded {
                Ok(()) => {
                    let _ = std::fs::remove_file(&path);
                    tracing::info!(%app, "database restored from the backup");
                }
                Err(e) => {
                    tracing::error!(%app, error = %e.message, "restoring a database from the backup failed; it is tried again at the next start")
                }
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_comes_out_of_a_database_url() {
        assert_eq!(
            url_password("postgres://app_shop:s3cr3t@10.0.0.1:5432/app_shop").as_deref(),
            Some("s3cr3t")
        );
        assert_eq!(url_password("postgres://nobody@host/db"), None);
        assert_eq!(url_password("not a url"), None);
    }
}

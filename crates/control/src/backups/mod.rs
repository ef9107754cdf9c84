//! Platform backups: everything an operator needs to bring the platform back on a new
//! machine, in one consistent archive (see `berth_data::backup` for its layout).
//!
//! - [`create`]: the running platform writes a backup: an online snapshot of the state
//!   store, the keyring wrapped under a passphrase (secrets and TLS keys stay sealed in the
//!   state), each volume read from a frozen copy, each database dumped, each app's images;
//!   and the scheduled backups of `berth up --backup-to`.
//! - [`restore`]: puts a backup onto an empty data directory while the platform is down;
//!   databases are loaded by the platform when it next starts.
//! - here: listing, verifying and pruning, which need no running platform.

pub mod create;
pub mod restore;

use crate::error::ApiError;
use axum::http::StatusCode;
use berth_core::state::BackupView;
use berth_data::backup::archive::hash_file;
use berth_data::backup::location::{created_at, Location};
use berth_data::backup::manifest::{Manifest, KEYS_PART};
use berth_data::backup::retention::Retention;
use berth_data::backup::BackupError;
use std::path::Path;

impl From<BackupError> for ApiError {
    fn from(e: BackupError) -> Self {
        match &e {
            BackupError::Location { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "backup_location", e.to_string())
                    .hint("check the directory or the bucket, and the AWS_* settings for S3")
            }
            BackupError::NotFound { location, .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "backup_not_found", e.to_string())
                    .hint(format!("list backups with `berth backup list {location}`"))
            }
            BackupError::Passphrase(_) => ApiError::invalid("passphrase", e.to_string()),
            BackupError::WrongPassphrase { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "wrong_passphrase", e.to_string())
            }
            BackupError::Damaged { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "backup_damaged",
                e.to_string(),
            ),
            BackupError::Io { .. } => ApiError::internal("the backup", e),
        }
    }
}

/// What a manifest says, as the API and CLI show it.
pub fn view(location: &Location, m: &Manifest) -> BackupView {
    BackupView {
        id: m.id.clone(),
        location: location.to_string(),
        created_at: m.created_at,
        berth_version: m.berth_version.clone(),
        apps: m.apps.clone(),
        volumes: m.volume_names(),
        databases: m.database_apps(),
        bytes: m.total_bytes(),
        pruned: Vec::new(),
    }
}

/// Reads a backup's manifest.
pub async fn manifest(location: &Location, id: &str) -> Result<Manifest, BackupError> {
    let bytes = location.manifest_bytes(id).await?;
    Manifest::parse(id, &bytes)
}

/// The complete backups at a location, oldest first. A backup whose manifest does not
/// parse is listed by id with nothing else known, rather than hidden.
pub async fn list(location: &Location) -> Result<Vec<Result<BackupView, String>>, BackupError> {
    let mut out = Vec::new();
    for id in location.list().await? {
        out.push(match manifest(location, &id).await {
            Ok(m) => Ok(view(location, &m)),
            Err(e) => Err(format!("{id}: {e}")),
        });
    }
    Ok(out)
}

/// The newest backup's id, for commands given none.
pub async fn latest(location: &Location) -> Result<String, BackupError> {
    location
        .list()
        .await?
        .pop()
        .ok_or_else(|| BackupError::Location {
            location: location.to_string(),
            message: "it holds no backup".into(),
        })
}

/// Checks that every part is there with its size and SHA-256, and, given the passphrase,
/// that it opens the backup (the manifest's MAC and the keyring). `scratch` receives
/// downloads from a bucket. Returns the manifest.
pub async fn verify(
    location: &Location,
    id: &str,
    passphrase: Option<&str>,
    scratch: &Path,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Manifest, BackupError> {
    let m = manifest(location, id).await?;
    if let Some(pass) = passphrase {
        open_keys(location, &m, pass, scratch).await?;
    }
    for part in &m.parts {
        progress(&format!("checking {}", part.path));
        let file = location.fetch(id, &part.path, scratch).await?;
        check_part(&m, part, &file)?;
    }
    Ok(m)
}

/// Derives the passphrase key, checks the manifest's MAC and opens the keyring part.
pub async fn open_keys(
    location: &Location,
    m: &Manifest,
    passphrase: &str,
    scratch: &Path,
) -> Result<zeroize::Zeroizing<Vec<u8>>, BackupError> {
    let kdf = m.kdf.clone();
    let pass = zeroize::Zeroizing::new(passphrase.to_string());
    let key = tokio::task::spawn_blocking(move || kdf.derive(&pass))
        .await
        .map_err(|e| BackupError::Passphrase(e.to_string()))??;
    m.verify_mac(&key)?;
    let part = m.part(KEYS_PART)?;
    let file = location.fetch(&m.id, KEYS_PART, scratch).await?;
    check_part(m, part, &file)?;
    let sealed = std::fs::read(&file).map_err(|source| BackupError::Io {
        context: format!("reading {}", file.display()),
        source,
    })?;
    key.open(&berth_data::backup::manifest::keys_aad(&m.id), &sealed)
        .ok_or_else(|| BackupError::WrongPassphrase { id: m.id.clone() })
}

/// Checks one part's size and SHA-256.
pub fn check_part(
    m: &Manifest,
    part: &berth_data::backup::manifest::Part,
    file: &Path,
) -> Result<(), BackupError> {
    let damaged = |message: String| BackupError::Damaged {
        id: m.id.clone(),
        message,
    };
    let written = match hash_file(file) {
        Ok(w) => w,
        Err(BackupError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(damaged(format!("its part {} is missing", part.path)))
        }
        Err(e) => return Err(e),
    };
    if written.bytes != part.bytes || written.sha256 != part.sha256 {
        return Err(damaged(format!(
            "its part {} does not match its checksum ({} bytes, expected {})",
            part.path, written.bytes, part.bytes
        )));
    }
    Ok(())
}

/// Deletes the backups `policy` does not keep; returns their ids.
pub async fn prune(location: &Location, policy: Retention) -> Result<Vec<String>, BackupError> {
    let backups: Vec<(String, i64)> = location
        .list()
        .await?
        .into_iter()
        .filter_map(|id| created_at(&id).map(|t| (id, t)))
        .collect();
    let doomed = policy.to_delete(&backups);
    for id in &doomed {
        location.delete(id).await?;
    }
    Ok(doomed)
}

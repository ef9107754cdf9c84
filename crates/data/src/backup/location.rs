//! Where backups live: a local directory (`/srv/backups`) or an S3 bucket and prefix
//! (`s3://bucket/prefix`, through object_store; endpoint and credentials from the standard
//! `AWS_*` environment variables, so MinIO, Ceph and the like work as well as AWS).
//!
//! Each backup is a folder `<id>/` of parts plus `manifest.json`, written last. In a
//! directory the parts are written into `.<id>.partial/` and the folder renamed into place
//! when complete; in a bucket the manifest is uploaded after every part. Either way a
//! backup without a manifest is unfinished and is not listed.

use super::manifest::MANIFEST;
use super::{io, BackupError};
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, WriteMultipart};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes per uploaded chunk (S3 parts are at least 5 MiB).
const CHUNK: usize = 16 << 20;

/// A place that holds backups.
#[derive(Debug, Clone)]
pub enum Location {
    /// A local directory.
    Dir(PathBuf),
    /// An S3 bucket, under a prefix.
    S3 {
        store: Arc<AmazonS3>,
        bucket: String,
        prefix: String,
    },
}

/// A backup id: `<unix seconds>-<4 hex>`, so names sort by time.
pub fn is_backup_id(id: &str) -> bool {
    match id.split_once('-') {
        Some((secs, suffix)) => {
            !secs.is_empty()
                && secs.chars().all(|c| c.is_ascii_digit())
                && suffix.len() == 4
                && suffix.chars().all(|c| c.is_ascii_hexdigit())
        }
        None => false,
    }
}

/// When a backup was made, from its id.
pub fn created_at(id: &str) -> Option<i64> {
    id.split_once('-')?.0.parse().ok()
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Dir(p) => write!(f, "{}", p.display()),
            Location::S3 { bucket, prefix, .. } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, prefix, .. } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

impl Location {
    /// Reads `DIR` or `s3://bucket[/prefix]`. A relative directory is taken from `cwd`.
    pub fn parse(text: &str, cwd: &Path) -> Result<Self, BackupError> {
        let fail = |message: String| BackupError::Location {
            location: text.to_string(),
            message,
        };
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(fail("no bucket: write s3://BUCKET/PREFIX".into()));
            }
            let store = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| fail(format!("{e} (S3 settings come from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ALLOW_HTTP)")))?;
            return Ok(Location::S3 {
                store: Arc::new(store),
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if text.contains("://") {
            return Err(fail(
                "only local directories and s3://BUCKET/PREFIX are supported".into(),
            ));
        }
        if text.trim().is_empty() {
            return Err(fail("empty location".into()));
        }
        Ok(Location::Dir(cwd.join(text)))
    }

    fn key(&self, rel: &str) -> ObjectPath {
        match self {
            Location::S3 { prefix, .. } if !prefix.is_empty() => {
                ObjectPath::from(format!("{prefix}/{rel}"))
            }
            _ => ObjectPath::from(rel),
        }
    }

    fn fail(&self, message: impl std::fmt::Display) -> BackupError {
        BackupError::Location {
            location: self.to_string(),
            message: message.to_string(),
        }
    }

    /// Where to write a new backup's parts before it is published: inside the directory
    /// (so publishing is a rename), else under `scratch`.
    pub fn staging_dir(&self, id: &str, scratch: &Path) -> PathBuf {
        match self {
            Location::Dir(dir) => dir.join(format!(".{id}.partial")),
            Location::S3 { .. } => scratch.join(id),
        }
    }

    /// Makes the backup staged in `staged` (every part, and the manifest) visible as `id`.
    pub async fn publish(
        &self,
        id: &str,
        staged: &Path,
        parts: &[String],
    ) -> Result<(), BackupError> {
        match self {
            Location::Dir(dir) => {
                std::fs::rename(staged, dir.join(id))
                    .map_err(io(format!("moving {} into place", staged.display())))?;
                sync_dir(dir);
                Ok(())
            }
            Location::S3 { store, .. } => {
                for rel in parts.iter().map(String::as_str).chain([MANIFEST]) {
                    self.upload(store, &staged.join(rel), &self.key(&format!("{id}/{rel}")))
                        .await?;
                }
                let _ = std::fs::remove_dir_all(staged);
                Ok(())
            }
        }
    }

    async fn upload(
        &self,
        store: &Arc<AmazonS3>,
        file: &Path,
        key: &ObjectPath,
    ) -> Result<(), BackupError> {
        let upload = store
            .put_multipart(key)
            .await
            .map_err(|e| self.fail(format!("uploading {key}: {e}")))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, CHUNK);
        let mut f = std::fs::File::open(file).map_err(io(format!("opening {}", file.display())))?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = f
                .read(&mut buf)
                .map_err(io(format!("reading {}", file.display())))?;
            if n == 0 {
                break;
            }
            writer
                .wait_for_capacity(4)
                .await
                .map_err(|e| self.fail(format!("uploading {key}: {e}")))?;
            writer.write(&buf[..n]);
        }
        writer
            .finish()
            .await
            .map_err(|e| self.fail(format!("uploading {key}: {e}")))?;
        Ok(())
    }

    /// Ids of the complete backups, oldest first.
    pub async fn list(&self) -> Result<Vec<String>, BackupError> {
        let mut ids: Vec<String> = match self {
            Location::Dir(dir) => match std::fs::read_dir(dir) {
                Ok(entries) => entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .filter(|id| is_backup_id(id) && dir.join(id).join(MANIFEST).is_file())
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(self.fail(e)),
            },
            Location::S3 { store, prefix, .. } => {
                let base = (!prefix.is_empty()).then(|| ObjectPath::from(prefix.as_str()));
                let mut objects = store.list(base.as_ref());
                let mut ids = Vec::new();
                while let Some(meta) = objects.next().await {
                    let meta = meta.map_err(|e| self.fail(e))?;
                    let parts: Vec<_> = meta.location.parts().collect();
                    let n = parts.len();
                    if n >= 2 && parts[n - 1].as_ref() == MANIFEST {
                        let id = parts[n - 2].as_ref().to_string();
                        let depth = if prefix.is_empty() {
                            0
                        } else {
                            prefix.split('/').count()
                        };
                        if n == depth + 2 && is_backup_id(&id) {
                            ids.push(id);
                        }
                    }
                }
                ids
            }
        };
        ids.sort_by_key(|id| (created_at(id), id.clone()));
        ids.dedup();
        Ok(ids)
    }

    /// The manifest's bytes.
    pub async fn manifest_bytes(&self, id: &str) -> Result<Vec<u8>, BackupError> {
        let missing = || BackupError::NotFound {
            location: self.to_string(),
            id: id.to_string(),
        };
        if !is_backup_id(id) {
            return Err(missing());
        }
        match self {
            Location::Dir(dir) => std::fs::read(dir.join(id).join(MANIFEST)).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    missing()
                } else {
                    self.fail(e)
                }
            }),
            Location::S3 { store, .. } => {
                match store.get(&self.key(&format!("{id}/{MANIFEST}"))).await {
                    Ok(got) => Ok(got.bytes().await.map_err(|e| self.fail(e))?.to_vec()),
                    Err(object_store::Error::NotFound { .. }) => Err(missing()),
                    Err(e) => Err(self.fail(e)),
                }
            }
        }
    }

    /// A local file holding part `rel` of backup `id`: the part itself in a directory, a
    /// download into `scratch` from a bucket.
    pub async fn fetch(&self, id: &str, rel: &str, scratch: &Path) -> Result<PathBuf, BackupError> {
        match self {
            Location::Dir(dir) => Ok(dir.join(id).join(rel)),
            Location::S3 { store, .. } => {
                let dest = scratch.join(rel);
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(io(format!("creating {}", parent.display())))?;
                }
                let key = self.key(&format!("{id}/{rel}"));
                let got = match store.get(&key).await {
                    Ok(got) => got,
                    Err(object_store::Error::NotFound { .. }) => {
                        return Err(BackupError::Damaged {
                            id: id.to_string(),
                            message: format!("its part {rel} is missing"),
                        })
                    }
                    Err(e) => return Err(self.fail(format!("downloading {key}: {e}"))),
                };
                let mut out = std::io::BufWriter::new(
                    std::fs::File::create(&dest)
                        .map_err(io(format!("creating {}", dest.display())))?,
                );
                let mut stream = got.into_stream();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| self.fail(format!("downloading {key}: {e}")))?;
                    out.write_all(&chunk)
                        .map_err(io(format!("writing {}", dest.display())))?;
                }
                out.flush()
                    .map_err(io(format!("writing {}", dest.display())))?;
                Ok(dest)
            }
        }
    }

    /// Deletes a backup: its manifest first, so a half-deleted backup is never listed.
    pub async fn delete(&self, id: &str) -> Result<(), BackupError> {
        if !is_backup_id(id) {
            return Err(BackupError::NotFound {
                location: self.to_string(),
                id: id.to_string(),
            });
        }
        match self {
            Location::Dir(dir) => {
                let doomed = dir.join(format!(".{id}.deleting"));
                std::fs::rename(dir.join(id), &doomed).map_err(|e| self.fail(e))?;
                std::fs::remove_dir_all(&doomed).map_err(|e| self.fail(e))
            }
            Location::S3 { store, .. } => {
                store
                    .delete(&self.key(&format!("{id}/{MANIFEST}")))
                    .await
                    .map_err(|e| self.fail(e))?;
                let base = self.key(id);
                let mut objects = store.list(Some(&base));
                while let Some(meta) = objects.next().await {
                    let meta = meta.map_err(|e| self.fail(e))?;
                    store
                        .delete(&meta.location)
                        .await
                        .map_err(|e| self.fail(e))?;
                }
                Ok(())
            }
        }
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_name_their_problem() {
        let cwd = Path::new("/srv");
        assert!(
            matches!(Location::parse("backups", cwd).unwrap(), Location::Dir(p) if p == Path::new("/srv/backups"))
        );
        let s3 = Location::parse("s3://bucket/nightly/", cwd).unwrap();
        assert_eq!(s3.to_string(), "s3://bucket/nightly");
        assert!(Location::parse("s3:///x", cwd)
            .unwrap_err()
            .to_string()
            .contains("no bucket"));
        assert!(Location::parse("ftp://x", cwd)
            .unwrap_err()
            .to_string()
            .contains("s3://"));
        assert!(is_backup_id("1790000000-ab12"));
        for bad in [
            "",
            "x-ab12",
            "1790000000-ab1",
            "../1-ab12",
            "1790000000-zz12",
        ] {
            assert!(!is_backup_id(bad), "{bad}");
        }
        assert_eq!(created_at("1790000000-ab12"), Some(1_790_000_000));
    }

    #[tokio::test]
    async fn a_directory_lists_only_finished_backups() {
        let d = tempfile::tempdir().unwrap();
        let loc = Location::Dir(d.path().to_path_buf());
        assert!(loc.list().await.unwrap().is_empty());
        let staged = loc.staging_dir("1790000000-ab12", d.path());
        std::fs::create_dir_all(&staged).unwrap();
        std::fs::write(staged.join("state.db.zst"), b"x").unwrap();
        assert!(loc.list().await.unwrap().is_empty(), "unfinished");
        std::fs::write(staged.join(MANIFEST), b"{}").unwrap();
        loc.publish("1790000000-ab12", &staged, &["state.db.zst".into()])
            .await
            .unwrap();
        assert_eq!(
            loc.list().await.unwrap(),
            vec!["1790000000-ab12".to_string()]
        );
        assert_eq!(loc.manifest_bytes("1790000000-ab12").await.unwrap(), b"{}");
        assert!(matches!(
            loc.manifest_bytes("1790000001-ab12").await,
            Err(BackupError::NotFound { .. })
        ));
        loc.delete("1790000000-ab12").await.unwrap();
        assert!(loc.list().await.unwrap().is_empty());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }
}

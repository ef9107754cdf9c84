//! Deploy keys: an ed25519 key pair per app, made by berth, whose public half is added to a
//! private repository as a read-only deploy key so that `berth git connect` reads it over
//! ssh. The private half is sealed by the keyring in `git_deploy_keys` and written (mode
//! 0600, in the secrets tmpfs) only while git runs; the servers' host keys are remembered
//! in `<data>/git/known_hosts` (trusted on first use, held to that key afterwards).

use crate::error::ApiError;
use crate::platform::Platform;
use berth_core::git::DeployKeyView;
use berth_data::secrets::{Keyring, Sealed};
use sqlx::Row;
use std::io::Write;
use std::path::PathBuf;

fn context(app: &str) -> String {
    format!("git/deploy-key/{app}")
}

/// A private key written out for one git run; removed when dropped.
pub struct KeyFile {
    file: tempfile::NamedTempFile,
    known_hosts: PathBuf,
}

impl KeyFile {
    /// What git's ssh is handed.
    pub fn ssh(&self) -> berth_factory::git::SshKey<'_> {
        berth_factory::git::SshKey {
            key: self.file.path(),
            known_hosts: &self.known_hosts,
        }
    }
}

/// A new ed25519 key pair: (public key line, fingerprint, private key in OpenSSH form).
fn generate(app: &str) -> Result<(String, String, zeroize::Zeroizing<String>), ApiError> {
    let mut key =
        ssh_key::PrivateKey::random(&mut ssh_key::rand_core::OsRng, ssh_key::Algorithm::Ed25519)
            .map_err(|e| ApiError::internal("making a deploy key", e))?;
    key.set_comment(format!("berth deploy key for {app}"));
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| ApiError::internal("writing a deploy key", e))?;
    let fingerprint = key
        .public_key()
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string();
    let private = key
        .to_openssh(ssh_key::LineEnding::LF)
        .map_err(|e| ApiError::internal("writing a deploy key", e))?;
    Ok((public, fingerprint, private))
}

impl Platform {
    /// `app`'s deploy key, made now if it has none (or a new one with `rotate`).
    pub async fn deploy_key(&self, app: &str, rotate: bool) -> Result<DeployKeyView, ApiError> {
        if !rotate {
            if let Some(view) = self.deploy_key_view(app).await? {
                return Ok(view);
            }
        }
        let (public, fingerprint, private) = generate(app)?;
        let sealed = self
            .keyring
            .read()
            .await
            .seal(&context(app), private.as_bytes())
            .map_err(|e| ApiError::internal("sealing a deploy key", e))?;
        let now = crate::now_secs();
        sqlx::query(
            "INSERT INTO git_deploy_keys (app, public_key, fingerprint, key_id, sealed_secret, created_at) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (app) DO UPDATE SET public_key = excluded.public_key, \
             fingerprint = excluded.fingerprint, key_id = excluded.key_id, \
             sealed_secret = excluded.sealed_secret, created_at = excluded.created_at",
        )
        .bind(app)
        .bind(&public)
        .bind(&fingerprint)
        .bind(&sealed.key_id)
        .bind(&sealed.data)
        .bind(now)
        .execute(&self.store.pool)
        .await?;
        tracing::info!(%app, %fingerprint, rotate, "made a deploy key");
        Ok(DeployKeyView {
            app: app.into(),
            public_key: public,
            fingerprint,
            created_at: now,
            created: true,
        })
    }

    /// `app`'s deploy key as shown, if it has one.
    pub async fn deploy_key_view(&self, app: &str) -> Result<Option<DeployKeyView>, ApiError> {
        let row = sqlx::query(
            "SELECT public_key, fingerprint, created_at FROM git_deploy_keys WHERE app = ?",
        )
        .bind(app)
        .fetch_optional(&self.store.pool)
        .await?;
        Ok(row
            .map(|r| -> Result<DeployKeyView, sqlx::Error> {
                Ok(DeployKeyView {
                    app: app.into(),
                    public_key: r.try_get("public_key")?,
                    fingerprint: r.try_get("fingerprint")?,
                    created_at: r.try_get("created_at")?,
                    created: false,
                })
            })
            .transpose()?)
    }

    /// For an ssh `url`, `app`'s deploy key written out for one git run (`None`: another
    /// transport, or no key — git then uses what the machine's user has).
    pub async fn deploy_key_file(&self, app: &str, url: &str) -> Result<Option<KeyFile>, ApiError> {
        if !url.starts_with("ssh://") {
            return Ok(None);
        }
        let row = sqlx::query("SELECT key_id, sealed_secret FROM git_deploy_keys WHERE app = ?")
            .bind(app)
            .fetch_optional(&self.store.pool)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let sealed = Sealed {
            key_id: row.try_get("key_id")?,
            data: row.try_get("sealed_secret")?,
        };
        let private = self
            .keyring
            .read()
            .await
            .open_sealed(&context(app), &sealed)
            .map(|v| zeroize::Zeroizing::new(v.to_vec()))
            .map_err(|e| ApiError::internal("opening a deploy key", e))?;
        let dir = self.cfg.secrets_runtime_dir();
        let git_dir = self.cfg.data_dir.join("git");
        let write = move || -> std::io::Result<KeyFile> {
            std::fs::create_dir_all(&dir)?;
            std::fs::create_dir_all(&git_dir)?;
            let mut file = tempfile::Builder::new()
                .prefix("deploy-key-")
                .tempfile_in(&dir)?;
            file.write_all(&private)?;
            file.flush()?;
            Ok(KeyFile {
                file,
                known_hosts: git_dir.join("known_hosts"),
            })
        };
        write()
            .map(Some)
            .map_err(|e| ApiError::internal("writing a deploy key for git", e))
    }

    /// Re-seals every deploy key under the ring's active key.
    pub async fn reseal_deploy_keys(&self, ring: &Keyring) -> Result<usize, ApiError> {
        let rows = sqlx::query("SELECT app, key_id, sealed_secret FROM git_deploy_keys")
            .fetch_all(&self.store.pool)
            .await?;
        let rows: Vec<(String, Sealed)> = rows
            .iter()
            .map(|r| -> Result<_, sqlx::Error> {
                Ok((
                    r.try_get("app")?,
                    Sealed {
                        key_id: r.try_get("key_id")?,
                        data: r.try_get("sealed_secret")?,
                    },
                ))
            })
            .collect::<Result<_, _>>()?;
        self.reseal_secrets_of("git_deploy_keys", "app", context, rows, ring)
            .await
    }
}

//! Credentials for the registries berth pushes to and pulls from (`berth registry login`):
//! the password sealed by the platform's keyring (re-sealed by key rotation, carried by
//! backups), opened only to write a short-lived auth file for one push or pull, in the
//! RAM-backed secrets directory.

use crate::error::ApiError;
use crate::platform::Platform;
use berth_core::registries::{check_login, RegistryLogin, RegistryView};
use berth_data::secrets::{Keyring, Sealed};
use sqlx::Row;
use std::path::PathBuf;

fn context(host: &str) -> String {
    format!("registry:{host}")
}

/// An auth file for one push, removed when dropped.
pub struct AuthFile(pub PathBuf);

impl Drop for AuthFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Platform {
    /// Keeps credentials for a registry (replacing earlier ones).
    pub async fn registry_login(
        &self,
        login: &RegistryLogin,
        actor: &str,
    ) -> Result<RegistryView, ApiError> {
        check_login(login).map_err(|e| ApiError::invalid("invalid_registry_login", e))?;
        let sealed = self
            .keyring
            .read()
            .await
            .seal(&context(&login.host), login.password.as_bytes())
            .map_err(|e| ApiError::internal("sealing registry credentials", e))?;
        let now = crate::now_secs();
        sqlx::query(
            "INSERT INTO registry_credentials (host, username, key_id, sealed, created_at, created_by) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (host) DO UPDATE SET username = excluded.username, \
             key_id = excluded.key_id, sealed = excluded.sealed, created_at = excluded.created_at, \
             created_by = excluded.created_by",
        )
        .bind(&login.host)
        .bind(&login.username)
        .bind(&sealed.key_id)
        .bind(&sealed.data)
        .bind(now)
        .bind(actor)
        .execute(&self.store.pool)
        .await?;
        Ok(RegistryView {
            host: login.host.clone(),
            username: login.username.clone(),
            created_at: now,
            created_by: actor.to_string(),
        })
    }

    /// The registries berth holds credentials for.
    pub async fn registries(&self) -> Result<Vec<RegistryView>, ApiError> {
        let rows = sqlx::query(
            "SELECT host, username, created_at, created_by FROM registry_credentials ORDER BY host",
        )
        .fetch_all(&self.store.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RegistryView {
                    host: r.try_get("host")?,
                    username: r.try_get("username")?,
                    created_at: r.try_get("created_at")?,
                    created_by: r.try_get("created_by")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ApiError::from)
    }

    /// Forgets a registry's credentials.
    pub async fn registry_logout(&self, host: &str) -> Result<(), ApiError> {
        let done = sqlx::query("DELETE FROM registry_credentials WHERE host = ?")
            .bind(host)
            .execute(&self.store.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "registry_not_found",
                format!("berth holds no credentials for {host:?}"),
            )
            .hint("`berth registry list` shows the registries it has credentials for"));
        }
        Ok(())
    }

    /// An auth file (containers-auth.json) for pushing to `host`, if berth holds
    /// credentials for it.
    pub async fn registry_auth_file(&self, host: &str) -> Result<Option<AuthFile>, ApiError> {
        self.auth_file_for(Some(host)).await
    }

    /// An auth file with every registry credential berth holds (pulls of images and
    /// Dockerfile bases), if it holds any.
    pub async fn registries_auth_file(&self) -> Result<Option<AuthFile>, ApiError> {
        self.auth_file_for(None).await
    }

    async fn auth_file_for(&self, host: Option<&str>) -> Result<Option<AuthFile>, ApiError> {
        let rows = sqlx::query(
            "SELECT host, username, key_id, sealed FROM registry_credentials \
             WHERE ?1 IS NULL OR host = ?1",
        )
        .bind(host)
        .fetch_all(&self.store.pool)
        .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        use base64::Engine as _;
        let mut auths = serde_json::Map::new();
        for row in rows {
            let host: String = row.try_get("host")?;
            let username: String = row.try_get("username")?;
            let password = self
                .keyring
                .read()
                .await
                .open_sealed(
                    &context(&host),
                    &Sealed {
                        key_id: row.try_get("key_id")?,
                        data: row.try_get("sealed")?,
                    },
                )
                .map_err(|e| ApiError::internal("opening registry credentials", e))?;
            let mut pair = zeroize::Zeroizing::new(username.into_bytes());
            pair.push(b':');
            pair.extend_from_slice(&password);
            let auth = base64::engine::general_purpose::STANDARD.encode(&*pair);
            auths.insert(host, serde_json::json!({ "auth": auth }));
        }
        let body = zeroize::Zeroizing::new(serde_json::json!({ "auths": auths }).to_string());
        let dir = self.cfg.secrets_runtime_dir();
        let path = dir.join(format!("registry-auth-{}.json", crate::random_id(6)));
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| ApiError::internal("writing a registry auth file", e))?;
            f.write_all(body.as_bytes())
                .map_err(|e| ApiError::internal("writing a registry auth file", e))?;
        }
        Ok(Some(AuthFile(path)))
    }

    /// Re-seals every registry password under the ring's active key (key rotation).
    pub async fn reseal_registry_credentials(&self, ring: &Keyring) -> Result<usize, ApiError> {
        let rows = sqlx::query("SELECT host, key_id, sealed FROM registry_credentials")
            .fetch_all(&self.store.pool)
            .await?;
        let mut tx = self.store.begin_write().await?;
        for r in &rows {
            let host: String = r.try_get("host")?;
            let s = ring
                .reseal(
                    &context(&host),
                    &Sealed {
                        key_id: r.try_get("key_id")?,
                        data: r.try_get("sealed")?,
                    },
                )
                .map_err(|e| ApiError::internal("re-sealing registry credentials", e))?;
            sqlx::query("UPDATE registry_credentials SET key_id = ?, sealed = ? WHERE host = ?")
                .bind(&s.key_id)
                .bind(&s.data)
                .bind(&host)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }
}

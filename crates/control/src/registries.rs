//! Credentials for the registries berth pushes to and pulls from (`berth registry login`):
//! the password sealed by the platform's keyring (re-sealed by key rotation, carried by
//! backups), opened only to write a short-lived auth file for one push or pull, in the
//! RAM-backed secrets directory. Each credential belongs to a scope — the platform, a
//! tenant or a project — and a deploy's pulls use only those its project may use (the most
//! specific one per host).

use crate::error::ApiError;
use crate::platform::Platform;
use berth_core::registries::{check_login, RegistryLogin, RegistryScope, RegistryView};
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
        let scope = self.registry_scope(login.scope.as_deref()).await?;
        let sealed = self
            .keyring
            .read()
            .await
            .seal(&context(&login.host), login.password.as_bytes())
            .map_err(|e| ApiError::internal("sealing registry credentials", e))?;
        let now = crate::now_secs();
        sqlx::query(
            "INSERT INTO registry_credentials (host, scope, username, key_id, sealed, created_at, created_by) \
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (host, scope) DO UPDATE SET username = excluded.username, \
             key_id = excluded.key_id, sealed = excluded.sealed, created_at = excluded.created_at, \
             created_by = excluded.created_by",
        )
        .bind(&login.host)
        .bind(scope.as_text())
        .bind(&login.username)
        .bind(&sealed.key_id)
        .bind(&sealed.data)
        .bind(now)
        .bind(actor)
        .execute(&self.store.pool)
        .await?;
        Ok(RegistryView {
            host: login.host.clone(),
            scope: scope.as_text(),
            username: login.username.clone(),
            created_at: now,
            created_by: actor.to_string(),
        })
    }

    /// The registries berth holds credentials for.
    pub async fn registries(&self) -> Result<Vec<RegistryView>, ApiError> {
        let rows = sqlx::query(
            "SELECT host, scope, username, created_at, created_by FROM registry_credentials ORDER BY host, scope",
        )
        .fetch_all(&self.store.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RegistryView {
                    host: r.try_get("host")?,
                    scope: r.try_get("scope")?,
                    username: r.try_get("username")?,
                    created_at: r.try_get("created_at")?,
                    created_by: r.try_get("created_by")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(ApiError::from)
    }

    /// Checks a scope asked for (none: the platform's); a tenant or project must exist.
    async fn registry_scope(&self, asked: Option<&str>) -> Result<RegistryScope, ApiError> {
        let scope = match asked {
            None => RegistryScope::Platform,
            Some(text) => RegistryScope::parse(text)
                .map_err(|e| ApiError::invalid("invalid_registry_scope", e))?,
        };
        let known = match &scope {
            RegistryScope::Platform => true,
            RegistryScope::Tenant(t) => self.store.tenant_quota(t).await?.is_some(),
            RegistryScope::Project(p) => self.store.project_quota(p).await?.is_some(),
        };
        if !known {
            return Err(ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "invalid_registry_scope",
                format!("there is no {}", scope.as_text().replacen(':', " ", 1)),
            )
            .hint("`berth tenants list` and `berth projects` show them"));
        }
        Ok(scope)
    }

    /// Forgets a registry's credentials in one scope (none: the platform's).
    pub async fn registry_logout(&self, host: &str, scope: Option<&str>) -> Result<(), ApiError> {
        let scope = match scope {
            None => RegistryScope::Platform,
            Some(text) => RegistryScope::parse(text)
                .map_err(|e| ApiError::invalid("invalid_registry_scope", e))?,
        };
        let done = sqlx::query("DELETE FROM registry_credentials WHERE host = ? AND scope = ?")
            .bind(host)
            .bind(scope.as_text())
            .execute(&self.store.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "registry_not_found",
                format!(
                    "berth holds no credentials for {host:?} in scope {}",
                    scope.as_text()
                ),
            )
            .hint("`berth registry list` shows the registries it has credentials for"));
        }
        Ok(())
    }

    /// An auth file (containers-auth.json) for the platform pushing to `host`, if it holds
    /// platform credentials for it.
    pub async fn registry_auth_file(&self, host: &str) -> Result<Option<AuthFile>, ApiError> {
        let rows = sqlx::query(
            "SELECT host, scope, username, key_id, sealed FROM registry_credentials \
             WHERE host = ? AND scope = 'platform'",
        )
        .bind(host)
        .fetch_all(&self.store.pool)
        .await?;
        self.auth_file_of(rows).await
    }

    /// An auth file with the registry credentials a deploy of `project` may use (pulls of
    /// images and Dockerfile bases): the platform's, its tenant's and its own — per host the
    /// most specific — if there are any.
    pub async fn registries_auth_file(&self, project: &str) -> Result<Option<AuthFile>, ApiError> {
        let tenant = self.store.project_tenant(project).await?;
        let usable = [
            Some(RegistryScope::Platform.as_text()),
            tenant.map(|t| RegistryScope::Tenant(t).as_text()),
            Some(RegistryScope::Project(project.to_string()).as_text()),
        ];
        let rows = sqlx::query(
            "SELECT host, scope, username, key_id, sealed FROM registry_credentials \
             WHERE scope IN (?, ?, ?)",
        )
        .bind(&usable[0])
        .bind(&usable[1])
        .bind(&usable[2])
        .fetch_all(&self.store.pool)
        .await?;
        // Per host, the most specific scope's (project over tenant over platform).
        let rank = |scope: &str| usable.iter().position(|u| u.as_deref() == Some(scope));
        let mut best: std::collections::BTreeMap<String, (Option<usize>, sqlx::sqlite::SqliteRow)> =
            std::collections::BTreeMap::new();
        for row in rows {
            let host: String = row.try_get("host")?;
            let scope: String = row.try_get("scope")?;
            let r = rank(&scope);
            if best.get(&host).is_none_or(|(have, _)| r > *have) {
                best.insert(host, (r, row));
            }
        }
        self.auth_file_of(best.into_values().map(|(_, row)| row).collect())
            .await
    }

    async fn auth_file_of(
        &self,
        rows: Vec<sqlx::sqlite::SqliteRow>,
    ) -> Result<Option<AuthFile>, ApiError> {
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
        let rows = sqlx::query("SELECT host, scope, key_id, sealed FROM registry_credentials")
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
            let scope: String = r.try_get("scope")?;
            sqlx::query(
                "UPDATE registry_credentials SET key_id = ?, sealed = ? WHERE host = ? AND scope = ?",
            )
            .bind(&s.key_id)
            .bind(&s.data)
            .bind(&host)
            .bind(&scope)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }
}

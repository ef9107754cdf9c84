//! `POST /v1/apps`: an app with its domains, secrets, volumes and database, created all at
//! once or not at all. Everything is checked before anything is made; a step that fails
//! half-way (say, the database server refuses) undoes the ones before it, leaving no app, no
//! volume, no role. With an `Idempotency-Key`, a retry gets the first answer and creates
//! nothing twice.

use crate::error::ApiError;
use crate::platform::Platform;
use axum::http::StatusCode;
use berth_core::state::{self, AppCreate, AppCreated, SecretChange};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Longest accepted Idempotency-Key.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// What identifies a request for idempotency: everything but secret values (which are never
/// stored, not even hashed).
fn request_hash(req: &AppCreate) -> String {
    let mut shape = req.clone();
    for v in shape.secrets.values_mut() {
        v.clear();
    }
    let json = serde_json::to_vec(&shape).unwrap_or_default();
    hex::encode(Sha256::digest(json))
}

impl Platform {
    /// Checks a create request; every problem named at once.
    async fn check_create(&self, req: &AppCreate) -> Result<(), ApiError> {
        let name = berth_core::AppName::parse(&req.name)
            .map_err(|e| ApiError::invalid("invalid_app_name", format!("name: {e}")))?;
        let app = name.as_str();
        if self.store.app(app).await?.is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "app_exists",
                format!("app {app:?} already exists"),
            )
            .hint("pick another name, or change the app with `berth domains`, `berth secrets`, `berth volumes`, `berth db`"));
        }
        let mut problems = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for d in &req.domains {
            match self.check_new_domain(app, d).await {
                Ok(n) if !seen.insert(n.clone()) => {
                    problems.push(format!("domains: {n} is listed twice"))
                }
                Ok(_) => {}
                Err(e) if e.code == "domain_taken" => {
                    return Err(ApiError {
                        message: format!("domains: {}", e.message),
                        ..e
                    })
                }
                Err(e) => problems.push(format!("domains: {}", e.message)),
            }
        }
        for (k, v) in &req.secrets {
            if let Err(e) = state::validate_secret_name(k) {
                problems.push(format!("secrets: {e}"));
            }
            if let Err(e) = state::validate_secret_value(k, v) {
                problems.push(format!("secrets: {e}"));
            }
        }
        if req.database && req.secrets.contains_key(crate::databases::DATABASE_URL) {
            problems.push(format!(
                "secrets: {} is set by the database; leave it out",
                crate::databases::DATABASE_URL
            ));
        }
        if req.volumes.len() > state::MAX_VOLUMES_PER_APP {
            problems.push(format!(
                "volumes: an app has at most {} volumes",
                state::MAX_VOLUMES_PER_APP
            ));
        }
        for (i, v) in req.volumes.iter().enumerate() {
            if let Err(e) = state::validate_volume_name(&v.name) {
                problems.push(format!("volumes: name: {e}"));
            }
            if let Err(e) = state::parse_volume_size(&v.size) {
                problems.push(format!("volumes: {}: size: {e}", v.name));
            }
            if let Err(e) = state::validate_mount_path(&v.mount) {
                problems.push(format!("volumes: {}: mount: {e}", v.name));
            }
            for w in &req.volumes[..i] {
                if w.name == v.name {
                    problems.push(format!("volumes: {} is listed twice", v.name));
                } else if state::mount_paths_overlap(&w.mount, &v.mount) {
                    problems.push(format!(
                        "volumes: {} at {} overlaps {} at {}",
                        v.name, v.mount, w.name, w.mount
                    ));
                }
            }
        }
        if req.database && self.postgres.is_none() {
            problems.push(
                "database: PostgreSQL is not installed on this machine (apt-get install postgresql)"
                    .into(),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid("invalid_app", problems.join("; ")))
        }
    }

    /// Removes whatever a failed create made.
    async fn undo_create(self: &Arc<Self>, app: &str) {
        if let Err(e) = self.drop_database(app).await {
            tracing::warn!(%app, error = %e.message, "undoing a create: dropping the database failed");
        }
        for v in self.store.volumes(Some(app)).await.unwrap_or_default() {
            let (store, a) = (self.volumes.clone(), app.to_string());
            let _ = tokio::task::spawn_blocking(move || store.destroy(&a, &v.name)).await;
        }
        if let Err(e) = self.store.delete_app(app).await {
            tracing::error!(%app, error = %e, "undoing a create: forgetting the app failed");
        }
        if let Err(e) = self.publish_network().await {
            tracing::warn!(%app, error = %e.message, "undoing a create: republishing failed");
        }
    }

    async fn create_steps(self: &Arc<Self>, req: &AppCreate, actor: &str) -> Result<(), ApiError> {
        let app = req.name.as_str();
        let (events, _ignored) = tokio::sync::mpsc::unbounded_channel();
        if !req.secrets.is_empty() {
            let change = SecretChange {
                set: req.secrets.clone(),
                unset: vec![],
                build: false,
            };
            self.change_secrets(app, change, actor.to_string(), events.clone())
                .await
                .map_err(|f| f.error)?;
        }
        for v in &req.volumes {
            self.create_volume(app, v.clone(), actor.to_string(), events.clone())
                .await
                .map_err(|f| f.error)?;
        }
        if req.database {
            self.create_database(app, actor.to_string(), events.clone())
                .await
                .map_err(|f| f.error)?;
        }
        for d in &req.domains {
            let name = self.check_new_domain(app, d).await?;
            self.store
                .insert_domain(&crate::tls_store::DomainRow {
                    name,
                    app: app.to_string(),
                    https_redirect: true,
                    cert_error: None,
                    created_at: crate::now_secs(),
                })
                .await?;
        }
        if !req.domains.is_empty() {
            self.publish_network().await?;
        }
        Ok(())
    }

    /// Creates an app with everything it asks for, or nothing.
    pub async fn create_app(
        self: &Arc<Self>,
        req: &AppCreate,
        actor: &str,
    ) -> Result<AppCreated, ApiError> {
        let _one_at_a_time = self.create_lock.lock().await;
        self.check_create(req).await?;
        let app = req.name.as_str();
        let project = req
            .project
            .clone()
            .unwrap_or_else(|| berth_core::projects::DEFAULT_PROJECT.to_string());
        self.store
            .ensure_app_in(app, &project, crate::now_secs())
            .await?;
        if let Err(e) = self.create_steps(req, actor).await {
            self.undo_create(app).await;
            return Err(ApiError {
                message: format!("{}; nothing was created", e.message),
                ..e
            });
        }
        // Public names get their ACME certificates now (a failure is recorded and retried;
        // the domain is already served with a local certificate).
        if req
            .domains
            .iter()
            .any(|d| self.certificates.issuer_for(d) == crate::certificates::Issuer::Acme)
        {
            if let Err(e) = self.ensure_certificates(true).await {
                tracing::warn!(%app, error = %e.message, "certificate pass after create failed");
            }
        }
        Ok(AppCreated {
            name: app.to_string(),
            url: self.cfg.app_url(app),
            domains: self.list_domains(app).await?,
            secrets: self.store.app_secrets(app).await?.into_keys().collect(),
            volumes: self.list_volumes(app).await?,
            database: self.store.databases().await?.get(app).map(|d| d.0.clone()),
        })
    }

    /// [`Platform::create_app`] under an Idempotency-Key: a retry of the same request gets
    /// the first answer; the key reused for another request is refused.
    pub async fn create_app_idempotent(
        self: &Arc<Self>,
        req: &AppCreate,
        actor: &str,
        key: Option<&str>,
    ) -> Result<(StatusCode, serde_json::Value), ApiError> {
        let Some(key) = key else {
            let created = self.create_app(req, actor).await?;
            return Ok((
                StatusCode::CREATED,
                serde_json::to_value(created).unwrap_or_default(),
            ));
        };
        if key.is_empty()
            || key.len() > MAX_IDEMPOTENCY_KEY
            || !key.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(ApiError::invalid(
                "invalid_idempotency_key",
                format!(
                    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"
                ),
            ));
        }
        let hash = request_hash(req);
        // Retries wait for the first attempt: creates take the same lock.
        let _serial = self.idempotency_lock.lock().await;
        if let Some(kept) = self.store.idempotent_answer(key).await? {
            if kept.request_hash != hash {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    format!("Idempotency-Key {key:?} was used for a different request"),
                )
                .hint("use a new key for a new request"));
            }
            let status = StatusCode::from_u16(kept.status).unwrap_or(StatusCode::OK);
            let body = serde_json::from_str(&kept.response).unwrap_or_default();
            return Ok((status, body));
        }
        let created = self.create_app(req, actor).await?;
        let body = serde_json::to_value(&created).unwrap_or_default();
        self.store
            .keep_idempotent_answer(
                key,
                &crate::store::KeptAnswer {
                    request_hash: hash,
                    status: StatusCode::CREATED.as_u16(),
                    content_type: Some("application/json".into()),
                    location: None,
                    response: body.to_string(),
                },
                crate::now_secs(),
            )
            .await?;
        Ok((StatusCode::CREATED, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_hash_ignores_secret_values_but_not_names() {
        let mut a = AppCreate {
            name: "shop".into(),
            ..Default::default()
        };
        a.secrets.insert("K".into(), "one".into());
        let mut b = a.clone();
        b.secrets.insert("K".into(), "two".into());
        assert_eq!(request_hash(&a), request_hash(&b));
        b.secrets.insert("L".into(), "x".into());
        assert_ne!(request_hash(&a), request_hash(&b));
        b = a.clone();
        b.database = true;
        assert_ne!(request_hash(&a), request_hash(&b));
    }
}

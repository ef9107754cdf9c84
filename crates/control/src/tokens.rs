//! API tokens: the bootstrap token of `berth up` (admin) and tokens made with `berth tokens
//! create` — random, shown once, stored as their SHA-256, with a role, revocable — and the
//! principal a request acts as.

use crate::error::ApiError;
use crate::store::Store;
use axum::http::StatusCode;
use berth_core::auth::{check_token_name, Role, TokenCreate, TokenCreated, TokenView};
use sha2::{Digest, Sha256};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

/// Tokens start with this, so that a leaked one is recognisable (secret scanners).
pub const TOKEN_PREFIX: &str = "berth_";

/// What the token id of a signed-in person starts with (`oidc:alice@example.com`).
pub const PERSON_ID_PREFIX: &str = "oidc:";

/// The id of the bootstrap token (in the audit log).
pub const BOOTSTRAP_ID: &str = "bootstrap";

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    /// The token's name: the actor in the audit log.
    pub name: String,
    pub role: Role,
    /// The one project whose apps the token may reach (`None`: the whole platform).
    pub project: Option<String>,
    /// The one tenant whose projects the token may reach (`None`: the whole platform).
    pub tenant: Option<String>,
}

impl Principal {
    /// A principal with a stored scope (`platform`, `tenant:NAME`, `project:NAME`).
    pub fn scoped(token_id: &str, name: &str, role: Role, scope: &str) -> Self {
        Self {
            token_id: token_id.to_string(),
            name: name.to_string(),
            role,
            project: scope.strip_prefix("project:").map(str::to_string),
            tenant: scope.strip_prefix("tenant:").map(str::to_string),
        }
    }

    /// Whether it is a person signed in with the OIDC provider (not a token).
    pub fn is_person(&self) -> bool {
        self.token_id.starts_with(PERSON_ID_PREFIX)
    }

    /// How messages name it: `token "ci"`, or the person's identity.
    pub fn describe(&self) -> String {
        if self.is_person() {
            self.name.clone()
        } else {
            format!("token {:?}", self.name)
        }
    }

    /// Its scope as stored.
    pub fn scope(&self) -> String {
        match (&self.project, &self.tenant) {
            (Some(p), _) => format!("project:{p}"),
            (None, Some(t)) => format!("tenant:{t}"),
            (None, None) => "platform".into(),
        }
    }

    /// The bootstrap token's principal.
    pub fn bootstrap() -> Self {
        Self {
            token_id: BOOTSTRAP_ID.into(),
            name: "admin".into(),
            role: Role::Admin,
            project: None,
            tenant: None,
        }
    }
}

/// What a presented token turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    Valid(Principal),
    /// A token berth made, revoked or expired: who it was, for the audit log.
    Revoked(Principal),
    Unknown,
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn view_from_row(r: &SqliteRow) -> Result<TokenView, sqlx::Error> {
    let role: String = r.try_get("role")?;
    Ok(TokenView {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        role: Role::parse(&role).map_err(|e| sqlx::Error::Decode(e.into()))?,
        scope: r.try_get("scope")?,
        created_at: r.try_get("created_at")?,
        created_by: r.try_get("created_by")?,
        expires_at: r.try_get("expires_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

impl Store {
    /// Every token made, newest first.
    pub async fn tokens(&self) -> Result<Vec<TokenView>, sqlx::Error> {
        sqlx::query("SELECT * FROM api_tokens ORDER BY created_at DESC, name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(view_from_row)
            .collect()
    }

    /// Resolves a presented token (not the bootstrap one).
    pub async fn presented_token(&self, token: &str, now: i64) -> Result<Presented, sqlx::Error> {
        let Some(row) = sqlx::query("SELECT * FROM api_tokens WHERE hash = ?")
            .bind(hash(token))
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(Presented::Unknown);
        };
        let v = view_from_row(&row)?;
        let who = Principal::scoped(&v.id, &v.name, v.role, &v.scope);
        if v.revoked_at.is_some() || v.expires_at.is_some_and(|e| e <= now) {
            return Ok(Presented::Revoked(who));
        }
        // Last use to the minute: not a write per request.
        if v.last_used_at.is_none_or(|t| now - t >= 60) {
            sqlx::query("UPDATE api_tokens SET last_used_at = ? WHERE id = ?")
                .bind(now)
                .bind(&v.id)
                .execute(&self.pool)
                .await?;
        }
        Ok(Presented::Valid(who))
    }

    /// The scope of a token or a person: the whole platform, one tenant or one project
    /// (which must exist).
    pub async fn scope_of(
        &self,
        project: Option<&str>,
        tenant: Option<&str>,
    ) -> Result<String, ApiError> {
        Ok(match (project, tenant) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(
                    "invalid_scope",
                    "a token or a person is limited to a project or to a tenant, not both",
                ))
            }
            (None, None) => "platform".to_string(),
            (None, Some(tenant)) => {
                if self.tenant_quota(tenant).await?.is_none() {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "tenant_not_found",
                        format!("no tenant named {tenant:?}"),
                    )
                    .hint("make it first: `berth tenants create NAME`"));
                }
                format!("tenant:{tenant}")
            }
            (Some(project), None) => {
                if self.project_quota(project).await?.is_none() {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "project_not_found",
                        format!("no project named {project:?}"),
                    )
                    .hint("make it first: `berth projects create NAME`"));
                }
                format!("project:{project}")
            }
        })
    }

    /// Makes a token; returns it (the only time it is seen).
    pub async fn create_token(
        &self,
        req: &TokenCreate,
        created_by: &str,
        now: i64,
    ) -> Result<TokenCreated, ApiError> {
        check_token_name(&req.name).map_err(|e| ApiError::invalid("invalid_token_name", e))?;
        if req.expires_in == Some(0) {
            return Err(ApiError::invalid(
                "invalid_expiry",
                "expires_in must be at least 1 second",
            ));
        }
        let scope = self
            .scope_of(req.project.as_deref(), req.tenant.as_deref())
            .await?;
        let token = format!("{TOKEN_PREFIX}{}", crate::random_id(32));
        let view = TokenView {
            id: crate::random_id(8),
            name: req.name.clone(),
            role: req.role,
            scope,
            created_at: now,
            created_by: created_by.to_string(),
            expires_at: req
                .expires_in
                .map(|s| now.saturating_add(i64::try_from(s).unwrap_or(i64::MAX))),
            last_used_at: None,
            revoked_at: None,
        };
        let inserted = sqlx::query(
            "INSERT INTO api_tokens (id, name, role, scope, hash, created_at, created_by, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&view.id)
        .bind(&view.name)
        .bind(view.role.as_str())
        .bind(&view.scope)
        .bind(hash(&token))
        .bind(view.created_at)
        .bind(&view.created_by)
        .bind(view.expires_at)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(TokenCreated { token, view }),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(ApiError::new(
                StatusCode::CONFLICT,
                "token_exists",
                format!("a token named {:?} exists", req.name),
            )
            .hint("pick another name, or revoke the old token first")),
            Err(e) => Err(e.into()),
        }
    }

    /// Revokes a token by name (it stays listed, revoked).
    pub async fn revoke_token(&self, name: &str, now: i64) -> Result<TokenView, ApiError> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(name)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT * FROM api_tokens WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        match (row, done.rows_affected()) {
            (Some(r), 1) => Ok(view_from_row(&r)?),
            (Some(_), _) => Err(ApiError::new(
                StatusCode::CONFLICT,
                "token_revoked",
                format!("token {name:?} is already revoked"),
            )),
            (None, _) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "token_not_found",
                format!("no token named {name:?}"),
            )
            .hint("`berth tokens list` shows the tokens")),
        }
    }
}

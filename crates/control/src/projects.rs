//! Tenants and projects in the state store: making and listing them, which project an app
//! is in and which tenant a project is in, what each uses, and their quotas — a change is
//! checked against its project's and its tenant's before anything is changed.

use crate::error::ApiError;
use crate::store::Store;
use axum::http::StatusCode;
use berth_core::model::ReleaseConfig;
use berth_core::projects::{
    check_project_name, check_tenant_name, ProjectCreate, ProjectView, Quota, TenantCreate,
    TenantPolicy, TenantView, Usage, DEFAULT_PROJECT, DEFAULT_TENANT,
};
use sqlx::Row;

/// What a change would add to a project.
#[derive(Debug, Clone, Default)]
pub struct Growth<'a> {
    /// A new app.
    pub new_app: bool,
    /// The app whose serving release `config` would replace.
    pub app: Option<&'a str>,
    /// The release to come.
    pub config: Option<&'a ReleaseConfig>,
    /// More volume bytes.
    pub volume_bytes: u64,
}

/// The quota column of a tenant or project row (an unreadable one limits nothing).
fn quota_of(row: &sqlx::sqlite::SqliteRow) -> Quota {
    row.try_get::<String, _>("quota")
        .ok()
        .and_then(|q| serde_json::from_str(&q).ok())
        .unwrap_or_default()
}

/// How making a tenant or project named `name` went: a name taken is a 409
/// (`tenant_exists`, `project_exists`).
fn made(
    inserted: Result<sqlx::sqlite::SqliteQueryResult, sqlx::Error>,
    kind: &'static str,
    name: &str,
) -> Result<(), ApiError> {
    match inserted {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(ApiError::new(
            StatusCode::CONFLICT,
            if kind == "tenant" {
                "tenant_exists"
            } else {
                "project_exists"
            },
            format!("{kind} {name:?} exists"),
        )),
        Err(e) => Err(e.into()),
    }
}

fn footprint(config: &ReleaseConfig) -> (u32, u64) {
    config.processes.values().fold((0, 0), |(n, m), p| {
        (
            n + p.instances,
            m + u64::from(p.instances) * p.limits.memory_bytes,
        )
    })
}

impl Store {
    /// Makes a tenant.
    pub async fn create_tenant(&self, req: &TenantCreate, now: i64) -> Result<(), ApiError> {
        check_tenant_name(&req.name).map_err(|e| ApiError::invalid("invalid_tenant_name", e))?;
        let policy = req
            .policy
            .normalized()
            .map_err(|e| ApiError::invalid("invalid_tenant_policy", e))?;
        let quota = serde_json::to_string(&req.quota).unwrap_or_else(|_| "{}".into());
        let policy = serde_json::to_string(&policy).unwrap_or_else(|_| "{}".into());
        let inserted = sqlx::query(
            "INSERT INTO tenants (id, name, created_at, quota, policy) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&req.name)
        .bind(&req.name)
        .bind(now)
        .bind(quota)
        .bind(policy)
        .execute(&self.pool)
        .await;
        made(inserted, "tenant", &req.name)
    }

    /// A tenant's quota, if the tenant exists.
    pub async fn tenant_quota(&self, name: &str) -> Result<Option<Quota>, sqlx::Error> {
        let row = sqlx::query("SELECT quota FROM tenants WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| quota_of(&r)))
    }

    /// The tenant a project is in and what that tenant holds its apps to (the default
    /// tenant's, for a project not found).
    pub async fn project_policy(
        &self,
        project: &str,
    ) -> Result<(String, TenantPolicy), sqlx::Error> {
        let row = sqlx::query(
            "SELECT t.name AS tenant, t.policy AS policy FROM projects p \
             JOIN tenants t ON p.tenant_id = t.id WHERE p.name = ?",
        )
        .bind(project)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => {
                let policy: String = r.try_get("policy")?;
                Ok((
                    r.try_get("tenant")?,
                    serde_json::from_str(&policy).unwrap_or_default(),
                ))
            }
            None => Ok((DEFAULT_TENANT.to_string(), TenantPolicy::default())),
        }
    }

    /// The tenant a project is in.
    pub async fn project_tenant(&self, project: &str) -> Result<Option<String>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT t.name AS tenant FROM projects p JOIN tenants t ON p.tenant_id = t.id WHERE p.name = ?",
        )
        .bind(project)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.try_get("tenant")).transpose()
    }

    /// Every tenant with its quota, its projects and what they use.
    pub async fn tenants(&self) -> Result<Vec<TenantView>, sqlx::Error> {
        let rows = sqlx::query("SELECT name, created_at, quota, policy FROM tenants ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        let projects = self.projects().await?;
        let mut out = Vec::new();
        for r in rows {
            let name: String = r.try_get("name")?;
            let quota: String = r.try_get("quota")?;
            let policy: String = r.try_get("policy")?;
            let mut usage = Usage::default();
            let mut names = Vec::new();
            for p in projects.iter().filter(|p| p.tenant == name) {
                usage.add(&p.usage);
                names.push(p.name.clone());
            }
            out.push(TenantView {
                created_at: r.try_get("created_at")?,
                quota: serde_json::from_str(&quota).unwrap_or_default(),
                policy: serde_json::from_str(&policy).unwrap_or_default(),
                usage,
                projects: names,
                name,
            });
        }
        Ok(out)
    }

    /// Makes a project.
    pub async fn create_project(&self, req: &ProjectCreate, now: i64) -> Result<(), ApiError> {
        check_project_name(&req.name).map_err(|e| ApiError::invalid("invalid_project_name", e))?;
        let tenant = req.tenant.as_deref().unwrap_or(DEFAULT_TENANT);
        if self.tenant_quota(tenant).await?.is_none() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "tenant_not_found",
                format!("no tenant named {tenant:?}"),
            )
            .hint(
                "`berth tenants list` shows them; an admin makes one with `berth tenants create`",
            ));
        }
        let quota = serde_json::to_string(&req.quota).unwrap_or_else(|_| "{}".into());
        let inserted = sqlx::query(
            "INSERT INTO projects (id, tenant_id, name, created_at, quota) \
             SELECT ?, id, ?, ?, ? FROM tenants WHERE name = ?",
        )
        .bind(&req.name)
        .bind(&req.name)
        .bind(now)
        .bind(quota)
        .bind(tenant)
        .execute(&self.pool)
        .await;
        made(inserted, "project", &req.name)
    }

    /// A project's quota, if the project exists.
    pub async fn project_quota(&self, name: &str) -> Result<Option<Quota>, sqlx::Error> {
        let row = sqlx::query("SELECT quota FROM projects WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| quota_of(&r)))
    }

    /// The project an app is in.
    pub async fn app_project(&self, app: &str) -> Result<Option<String>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT p.name AS project FROM apps a JOIN projects p ON a.project_id = p.id WHERE a.name = ?",
        )
        .bind(app)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.try_get("project")).transpose()
    }

    /// Adds an app to a project if it does not exist yet.
    pub async fn ensure_app_in(
        &self,
        app: &str,
        project: &str,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO apps (name, project_id, env, created_at) \
             SELECT ?, id, '{}', ? FROM projects WHERE name = ? ON CONFLICT (name) DO NOTHING",
        )
        .bind(app)
        .bind(now)
        .bind(project)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The names of a project's apps.
    pub async fn project_apps(&self, project: &str) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query(
            "SELECT a.name FROM apps a JOIN projects p ON a.project_id = p.id WHERE p.name = ? ORDER BY a.name",
        )
        .bind(project)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.try_get("name"))
        .collect()
    }

    /// What a project's apps use now.
    pub async fn project_usage(&self, project: &str) -> Result<Usage, sqlx::Error> {
        let apps = self.project_apps(project).await?;
        let mut usage = Usage {
            apps: apps.len() as u32,
            ..Default::default()
        };
        for app in &apps {
            if let Some(v) = self.app(app).await?.and_then(|a| a.current_release) {
                if let Some(r) = self.release(app, v).await? {
                    let (n, m) = footprint(&r.config);
                    usage.instances += n;
                    usage.memory_bytes += m;
                }
            }
            for vol in self.volumes(Some(app)).await? {
                usage.volume_bytes += vol.size_bytes;
            }
        }
        Ok(usage)
    }

    /// Every project with its quota and use.
    pub async fn projects(&self) -> Result<Vec<ProjectView>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT p.name, p.created_at, p.quota, t.name AS tenant FROM projects p \
             JOIN tenants t ON p.tenant_id = t.id ORDER BY p.name",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let name: String = r.try_get("name")?;
            let quota: String = r.try_get("quota")?;
            out.push(ProjectView {
                tenant: r.try_get("tenant")?,
                usage: self.project_usage(&name).await?,
                created_at: r.try_get("created_at")?,
                quota: serde_json::from_str(&quota).unwrap_or_default(),
                name,
            });
        }
        Ok(out)
    }

    /// Refuses a change that would take `project` past its quota (nothing is changed).
    pub async fn check_quota(&self, project: &str, growth: Growth<'_>) -> Result<(), ApiError> {
        let Some(quota) = self.project_quota(project).await? else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "project_not_found",
                format!("no project named {project:?}"),
            )
            .hint(
                "`berth projects list` shows them; an admin makes one with `berth projects create`",
            ));
        };
        let tenant = self.project_tenant(project).await?;
        let tenant_quota = match &tenant {
            Some(t) => self.tenant_quota(t).await?.unwrap_or_default(),
            None => Quota::default(),
        };
        if quota == Quota::default() && tenant_quota == Quota::default() {
            return Ok(());
        }
        let now = self.project_usage(project).await?;
        let growth_usage = self.grown(&now, &growth).await?;
        if let Some(what) = quota.exceeded_by(&growth_usage) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "quota_exceeded",
                format!("project {project:?} would have {what}"),
            )
            .hint("free something in the project, or ask an admin to raise its quota"));
        }
        if let (Some(tenant), false) = (tenant, tenant_quota == Quota::default()) {
            // The tenant's use: its other projects as they are, this one grown.
            let mut usage = growth_usage;
            for other in self.projects().await? {
                if other.tenant == tenant && other.name != project {
                    usage.add(&other.usage);
                }
            }
            if let Some(what) = tenant_quota.exceeded_by(&usage) {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "quota_exceeded",
                    format!("tenant {tenant:?} would have {what}"),
                )
                .hint(
                    "free something in the tenant's projects, or ask an admin to raise its quota",
                ));
            }
        }
        Ok(())
    }

    /// A project's use after `growth`.
    async fn grown(&self, now: &Usage, growth: &Growth<'_>) -> Result<Usage, ApiError> {
        let mut usage = now.clone();
        if growth.new_app {
            usage.apps += 1;
        }
        if let Some(config) = growth.config {
            if let Some(app) = growth.app {
                if let Some(v) = self.app(app).await?.and_then(|a| a.current_release) {
                    if let Some(r) = self.release(app, v).await? {
                        let (n, m) = footprint(&r.config);
                        usage.instances -= n.min(usage.instances);
                        usage.memory_bytes -= m.min(usage.memory_bytes);
                    }
                }
            }
            let (n, m) = footprint(config);
            usage.instances += n;
            usage.memory_bytes += m;
        }
        usage.volume_bytes += growth.volume_bytes;
        Ok(usage)
    }
}

/// The project a new app goes to: the one asked for, else the token's, else `default`;
/// a token limited to a project cannot put apps elsewhere, and one limited to a tenant must
/// name one of the tenant's projects.
pub async fn project_for_new_app(
    store: &Store,
    asked: Option<&str>,
    token_project: Option<&str>,
    token_tenant: Option<&str>,
) -> Result<String, ApiError> {
    if let Some(tenant) = token_tenant {
        let Some(asked) = asked else {
            return Err(ApiError::invalid(
                "project_required",
                format!("a token limited to tenant {tenant:?} must say which of its projects a new app goes to"),
            )
            .hint("add --project NAME"));
        };
        return match store.project_tenant(asked).await? {
            Some(of) if of == tenant => Ok(asked.to_string()),
            _ => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "project_not_found",
                format!("tenant {tenant:?} has no project named {asked:?}"),
            )),
        };
    }
    match (asked, token_project) {
        (Some(a), Some(t)) if a != t => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this token is limited to project {t:?}"),
        )),
        (Some(a), _) => Ok(a.to_string()),
        (None, Some(t)) => Ok(t.to_string()),
        (None, None) => Ok(DEFAULT_PROJECT.to_string()),
    }
}

impl crate::platform::Platform {
    /// The isolation an app of `project` runs and builds at: what its berth.toml asks, else
    /// the platform's default, never below its tenant's least; and its capabilities within
    /// the tenant's. A berth.toml asking for less than the tenant allows is refused, naming
    /// the tenant and what it holds to.
    pub async fn isolation_for(
        &self,
        project: &str,
        toml: &berth_core::spec::BerthToml,
    ) -> Result<berth_core::policy::Isolation, ApiError> {
        let (tenant, policy) = self.store.project_policy(project).await?;
        let isolation = policy
            .isolation(&tenant, toml.isolation(), self.cfg.default_isolation)
            .map_err(|e| {
                ApiError::invalid("isolation_below_tenant", e)
                    .hint("remove `isolation` from berth.toml (the tenant's level applies), or ask an admin")
            })?;
        let asked = toml.capabilities();
        let refused = policy.refused_capabilities(&asked);
        if !refused.is_empty() {
            return Err(ApiError::invalid(
                "capability_not_allowed",
                format!(
                    "tenant {tenant} does not let its apps keep {}",
                    refused.join(", ")
                ),
            )
            .hint("remove them from security.capabilities, or ask an admin"));
        }
        Ok(isolation)
    }
}

//! The state store: SQLite in WAL mode, schema applied from numbered migrations, queries in
//! portable SQL so PostgreSQL can take over for larger installs.

use berth_core::api::{InstanceView, ReleaseView};
use berth_core::model::{ImageRef, InstanceState, ReleaseConfig, ReleaseStatus};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, SqlitePool};
use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// Migrations, in order; each runs once, in a transaction.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_initial.sql")),
    (2, include_str!("../migrations/0002_app_state.sql")),
    (3, include_str!("../migrations/0003_databases.sql")),
    (4, include_str!("../migrations/0004_domains.sql")),
    (5, include_str!("../migrations/0005_idempotency.sql")),
    (6, include_str!("../migrations/0006_dora.sql")),
    (7, include_str!("../migrations/0007_slo_alerts.sql")),
    (8, include_str!("../migrations/0008_alert_outbox.sql")),
    (9, include_str!("../migrations/0009_tokens_audit.sql")),
    (
        10,
        include_str!("../migrations/0010_idempotent_answers.sql"),
    ),
    (11, include_str!("../migrations/0011_project_quotas.sql")),
    (12, include_str!("../migrations/0012_tenant_quotas.sql")),
    (13, include_str!("../migrations/0013_people.sql")),
    (
        14,
        include_str!("../migrations/0014_registry_credentials.sql"),
    ),
    (15, include_str!("../migrations/0015_signing_key.sql")),
    (16, include_str!("../migrations/0016_dns_records.sql")),
    (17, include_str!("../migrations/0017_git_connections.sql")),
    (18, include_str!("../migrations/0018_declared_apps.sql")),
    (19, include_str!("../migrations/0019_gitops.sql")),
    (20, include_str!("../migrations/0020_git_deploy_keys.sql")),
    (
        21,
        include_str!("../migrations/0021_idempotent_locations.sql"),
    ),
    (
        22,
        include_str!("../migrations/0022_scoped_registries_and_tenant_policy.sql"),
    ),
    (
        23,
        include_str!("../migrations/0023_build_identities_and_secrets.sql"),
    ),
];

/// An answer kept for an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptAnswer {
    pub request_hash: String,
    pub status: u16,
    pub content_type: Option<String>,
    /// Where a redirect sent the client.
    pub location: Option<String>,
    pub response: String,
}

/// Handle to the state store.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: SqlitePool,
}

/// An app row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRow {
    /// Name.
    pub name: String,
    /// Environment set with `berth env`.
    pub env: BTreeMap<String, String>,
    /// Version serving now.
    pub current_release: Option<u32>,
    /// Unix seconds.
    pub created_at: i64,
}

/// An instance row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRow {
    /// Container id.
    pub id: String,
    /// App.
    pub app: String,
    /// Release version.
    pub release: u32,
    /// Process type.
    pub process: String,
    /// Index.
    pub index: u32,
    /// IPv4 address on the bridge.
    pub address: String,
    /// Port the app listens on.
    pub port: u16,
    /// State.
    pub state: InstanceState,
    /// Restarts after exits.
    pub restarts: u32,
    /// Last exit code.
    pub last_exit: Option<i32>,
    /// Why it last exited, when known beyond the code (`oom_killed`).
    pub last_exit_reason: Option<String>,
    /// Unix seconds of the current start.
    pub started_at: i64,
    /// Host PID of the container init and its start ticks (for liveness checks).
    pub pid: Option<(u32, u64)>,
}

impl InstanceRow {
    /// A new instance `id` of `app`'s release `release` — process `process` number `index`
    /// at `address`, listening on `port` —, about to start.
    pub fn starting(
        id: String,
        app: &str,
        release: u32,
        process: &str,
        index: u32,
        address: String,
        port: u16,
    ) -> Self {
        Self {
            id,
            app: app.to_string(),
            release,
            process: process.to_string(),
            index,
            address,
            port,
            state: InstanceState::Starting,
            restarts: 0,
            last_exit: None,
            last_exit_reason: None,
            started_at: crate::now_secs(),
            pid: None,
        }
    }

    /// As shown by the API.
    pub fn view(&self) -> InstanceView {
        InstanceView {
            id: self.id.clone(),
            release: self.release,
            process: self.process.clone(),
            index: self.index,
            state: self.state,
            address: format!("{}:{}", self.address, self.port),
            restarts: self.restarts,
            last_exit: self.last_exit,
            last_exit_reason: self.last_exit_reason.clone(),
            started_at: self.started_at,
        }
    }
}

fn release_from_row(r: &SqliteRow) -> Result<ReleaseView, sqlx::Error> {
    let config: String = r.try_get("config")?;
    let status: String = r.try_get("status")?;
    Ok(ReleaseView {
        app: r.try_get("app")?,
        version: r.try_get::<i64, _>("version")? as u32,
        image: ImageRef {
            repository: r.try_get("image_repository")?,
            tag: r.try_get("image_tag")?,
            digest: r.try_get("image_digest")?,
        },
        config: serde_json::from_str::<ReleaseConfig>(&config)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        description: r.try_get("description")?,
        status: ReleaseStatus::parse(&status).unwrap_or(ReleaseStatus::Failed),
        actor: r.try_get("actor")?,
        created_at: r.try_get("created_at")?,
        failure: r.try_get("failure")?,
    })
}

fn instance_from_row(r: &SqliteRow) -> Result<InstanceRow, sqlx::Error> {
    let state: String = r.try_get("state")?;
    let pid: Option<i64> = r.try_get("pid")?;
    let pid_start: Option<i64> = r.try_get("pid_start")?;
    Ok(InstanceRow {
        id: r.try_get("id")?,
        app: r.try_get("app")?,
        release: r.try_get::<i64, _>("release_version")? as u32,
        process: r.try_get("process")?,
        index: r.try_get::<i64, _>("idx")? as u32,
        address: r.try_get("address")?,
        port: r.try_get::<i64, _>("port")? as u16,
        state: InstanceState::parse(&state).unwrap_or(InstanceState::Crashed),
        restarts: r.try_get::<i64, _>("restarts")? as u32,
        last_exit: r.try_get::<Option<i64>, _>("last_exit")?.map(|c| c as i32),
        last_exit_reason: r.try_get("last_exit_reason")?,
        started_at: r.try_get("started_at")?,
        pid: pid.zip(pid_start).map(|(p, s)| (p as u32, s as u64)),
    })
}

/// Makes the database file (if missing) and its journal files readable by their owner
/// only: the store holds apps' environment, tokens' hashes and the audit log. SQLite gives
/// its `-wal` and `-shm` files the main file's mode.
fn restrict(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the database and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self, sqlx::Error> {
        restrict(path)?;
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Starts a transaction that holds the write lock from its first statement
    /// (`BEGIN IMMEDIATE`). A deferred transaction that reads first and writes later
    /// fails with "database is locked" (SQLITE_BUSY_SNAPSHOT) whenever another
    /// connection wrote in between, and the busy timeout cannot help it.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    async fn migrate(&self) -> Result<(), sqlx::Error> {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)")
            .execute(&self.pool)
            .await?;
        // A store a newer berth wrote may hold what this one does not understand: it is
        // left as it is.
        let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
            .fetch_one(&self.pool)
            .await?;
        let known = MIGRATIONS.last().map_or(0, |(v, _)| *v);
        if let Some(newest) = newest.filter(|n| *n > known) {
            return Err(sqlx::Error::Configuration(
                format!(
                    "it was written by a newer berth (state schema {newest}; this berth knows up to {known}): refusing to start rather than risk it; run the newer berth again, or restore a backup this berth made"
                )
                .into(),
            ));
        }
        for (version, sql) in MIGRATIONS {
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = ?")
                    .bind(version)
                    .fetch_optional(&self.pool)
                    .await?;
            if done.is_some() {
                continue;
            }
            let mut tx = self.begin_write().await?;
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_migrations (version) VALUES (?)")
                .bind(version)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Writes a consistent copy of the whole database to `path` while it stays in use
    /// (`VACUUM INTO`: one read transaction).
    pub async fn snapshot_into(&self, path: &Path) -> Result<(), sqlx::Error> {
        let _ = std::fs::remove_file(path);
        sqlx::query("VACUUM INTO ?")
            .bind(path.display().to_string())
            .execute(&self.pool)
            .await?;
        // The copy holds what the store holds: as private as it.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(())
    }

    // ---- apps

    /// Every app, by name.
    pub async fn apps(&self) -> Result<Vec<AppRow>, sqlx::Error> {
        let rows =
            sqlx::query("SELECT name, env, current_release, created_at FROM apps ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(app_from_row).collect()
    }

    /// One app.
    pub async fn app(&self, name: &str) -> Result<Option<AppRow>, sqlx::Error> {
        let row =
            sqlx::query("SELECT name, env, current_release, created_at FROM apps WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(app_from_row).transpose()
    }

    /// Creates an app in the default project if it does not exist.
    pub async fn ensure_app(&self, name: &str, now: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO apps (name, project_id, env, created_at) VALUES (?, 'default', '{}', ?) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Replaces an app's user-set environment.
    pub async fn set_app_env(
        &self,
        name: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE apps SET env = ? WHERE name = ?")
            .bind(serde_json::to_string(env).unwrap_or_else(|_| "{}".into()))
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes an app and its records.
    pub async fn delete_app(&self, name: &str) -> Result<(), sqlx::Error> {
        self.delete_app_records(name, true).await
    }

    /// Deletes an app and its records; with `links`, also what points at it from outside
    /// (its git connection and deploy key, its place in a platform definition) — without,
    /// those stay for the next try (a first deploy that failed).
    pub async fn delete_app_records(&self, name: &str, links: bool) -> Result<(), sqlx::Error> {
        let mut tx = self.begin_write().await?;
        let own = [
            "instances",
            "deploys",
            "builds",
            "releases",
            "app_secrets",
            "app_build_secrets",
            "build_identities",
            "secret_versions",
            "volumes",
            "databases",
        ];
        // Else a push or the poll would bring a destroyed app back.
        let linked = ["git_connections", "git_deploy_keys", "declared_apps"];
        for table in own.iter().chain(linked.iter().filter(|_| links)) {
            sqlx::query(&format!("DELETE FROM {table} WHERE app = ?"))
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "DELETE FROM certificates WHERE name IN (SELECT name FROM domains WHERE app = ?)",
        )
        .bind(name)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM domains WHERE app = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM apps WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    // ---- releases

    /// Creates the next release of an app (status `deploying`) and returns its version.
    pub async fn create_release(
        &self,
        app: &str,
        image: &ImageRef,
        config: &ReleaseConfig,
        description: &str,
        actor: &str,
        now: i64,
    ) -> Result<u32, sqlx::Error> {
        let mut tx = self.begin_write().await?;
        let max: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM releases WHERE app = ?")
                .bind(app)
                .fetch_one(&mut *tx)
                .await?;
        let version = max.unwrap_or(0) + 1;
        sqlx::query(
            "INSERT INTO releases (app, version, image_repository, image_tag, image_digest, config, \
             description, status, actor, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'deploying', ?, ?)",
        )
        .bind(app)
        .bind(version)
        .bind(&image.repository)
        .bind(&image.tag)
        .bind(&image.digest)
        .bind(serde_json::to_string(config).unwrap_or_default())
        .bind(description)
        .bind(actor)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(version as u32)
    }

    /// All releases of an app, newest first.
    pub async fn releases(&self, app: &str) -> Result<Vec<ReleaseView>, sqlx::Error> {
        let rows = sqlx::query("SELECT * FROM releases WHERE app = ? ORDER BY version DESC")
            .bind(app)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(release_from_row).collect()
    }

    /// One release.
    pub async fn release(
        &self,
        app: &str,
        version: u32,
    ) -> Result<Option<ReleaseView>, sqlx::Error> {
        let row = sqlx::query("SELECT * FROM releases WHERE app = ? AND version = ?")
            .bind(app)
            .bind(version as i64)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(release_from_row).transpose()
    }

    /// Marks a release failed with a reason.
    pub async fn fail_release(
        &self,
        app: &str,
        version: u32,
        why: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE releases SET status = 'failed', failure = ? WHERE app = ? AND version = ?",
        )
        .bind(why)
        .bind(app)
        .bind(version as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Makes a release the one serving: the previous one becomes superseded.
    pub async fn activate_release(&self, app: &str, version: u32) -> Result<(), sqlx::Error> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE releases SET status = 'superseded' WHERE app = ? AND status = 'active'",
        )
        .bind(app)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE releases SET status = 'active' WHERE app = ? AND version = ?")
            .bind(app)
            .bind(version as i64)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE apps SET current_release = ? WHERE name = ?")
            .bind(version as i64)
            .bind(app)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    // ---- builds

    /// Records a build.
    pub async fn insert_build(
        &self,
        id: &str,
        app: &str,
        source: &str,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO builds (id, app, source_id, status, created_at) VALUES (?, ?, ?, 'running', ?)")
            .bind(id)
            .bind(app)
            .bind(source)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks the builds a restart cut off as failed; returns how many.
    pub async fn fail_interrupted_builds(&self, now: i64) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE builds SET status = 'failed', finished_at = ? WHERE status = 'running'",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Records a build's end.
    pub async fn finish_build(&self, id: &str, status: &str, now: i64) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE builds SET status = ?, finished_at = ? WHERE id = ?")
            .bind(status)
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The id of an app's latest build.
    pub async fn latest_build(&self, app: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT id FROM builds WHERE app = ? ORDER BY created_at DESC, rowid DESC LIMIT 1",
        )
        .bind(app)
        .fetch_optional(&self.pool)
        .await
    }

    // ---- deploys

    /// Records the start of a deploy.
    pub async fn insert_deploy(
        &self,
        id: &str,
        app: &str,
        version: u32,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO deploys (id, app, release_version, step, status, started_at) VALUES (?, ?, ?, 'start', 'running', ?)")
            .bind(id)
            .bind(app)
            .bind(version as i64)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records what made a release and, for a git checkout, when its commit was made.
    pub async fn mark_release(
        &self,
        app: &str,
        version: u32,
        kind: berth_core::dora::ReleaseKind,
        commit_time: Option<i64>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE releases SET kind = ?, commit_time = ? WHERE app = ? AND version = ?")
            .bind(kind.as_str())
            .bind(commit_time)
            .bind(app)
            .bind(version as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Finished rollouts that started at `since` or later (all apps, or one), for DORA.
    pub async fn rollouts(
        &self,
        app: Option<&str>,
        since: i64,
    ) -> Result<Vec<berth_core::dora::Rollout>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT d.app, d.release_version, d.status, d.started_at, d.finished_at, r.kind, r.commit_time \
             FROM deploys d JOIN releases r ON r.app = d.app AND r.version = d.release_version \
             WHERE d.started_at >= ? AND d.status IN ('succeeded', 'failed') AND (? IS NULL OR d.app = ?) \
             ORDER BY d.started_at",
        )
        .bind(since)
        .bind(app)
        .bind(app)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind")?;
                let status: String = r.try_get("status")?;
                Ok(berth_core::dora::Rollout {
                    app: r.try_get("app")?,
                    release: r.try_get::<i64, _>("release_version")? as u32,
                    kind: berth_core::dora::ReleaseKind::parse(&kind),
                    commit_time: r.try_get("commit_time")?,
                    started_at: r.try_get("started_at")?,
                    finished_at: r.try_get("finished_at")?,
                    succeeded: status == "succeeded",
                })
            })
            .collect()
    }

    /// Records the responses an app got since the previous sample.
    pub async fn insert_slo_sample(
        &self,
        app: &str,
        at: i64,
        counts: berth_core::slo::Counts,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO slo_samples (app, at, requests, errors, slow) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(app)
        .bind(at)
        .bind(counts.requests as i64)
        .bind(counts.errors as i64)
        .bind(counts.slow as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The responses an app got after `since` (Unix seconds).
    pub async fn slo_counts(
        &self,
        app: &str,
        since: i64,
    ) -> Result<berth_core::slo::Counts, sqlx::Error> {
        let r = sqlx::query(
            "SELECT COALESCE(SUM(requests), 0) AS r, COALESCE(SUM(errors), 0) AS e, COALESCE(SUM(slow), 0) AS s \
             FROM slo_samples WHERE app = ? AND at > ?",
        )
        .bind(app)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(berth_core::slo::Counts {
            requests: r.try_get::<i64, _>("r")?.max(0) as u64,
            errors: r.try_get::<i64, _>("e")?.max(0) as u64,
            slow: r.try_get::<i64, _>("s")?.max(0) as u64,
        })
    }

    /// An app's requests, 5xx answers and answers slower than its latency objective per
    /// `bucket` seconds from `since` on, one entry per bucket (empty buckets included),
    /// oldest first.
    pub async fn request_series(
        &self,
        app: &str,
        since: i64,
        until: i64,
        bucket: i64,
    ) -> Result<Vec<(i64, i64, i64)>, sqlx::Error> {
        let bucket = bucket.max(1);
        let rows = sqlx::query(
            "SELECT (at - ?) / ? AS b, SUM(requests) AS r, SUM(errors) AS e, SUM(slow) AS s FROM slo_samples \
             WHERE app = ? AND at >= ? AND at < ? GROUP BY b",
        )
        .bind(since)
        .bind(bucket)
        .bind(app)
        .bind(since)
        .bind(until)
        .fetch_all(&self.pool)
        .await?;
        let n = ((until - since) / bucket).max(0) as usize;
        let mut out = vec![(0, 0, 0); n];
        for r in rows {
            let b: i64 = r.try_get("b")?;
            if let Some(slot) = usize::try_from(b).ok().and_then(|b| out.get_mut(b)) {
                *slot = (r.try_get("r")?, r.try_get("e")?, r.try_get("s")?);
            }
        }
        Ok(out)
    }

    /// Forgets samples older than `before`.
    pub async fn prune_slo_samples(&self, before: i64) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM slo_samples WHERE at < ?")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Alerts: the open ones, and with `resolved_since` also those resolved after it.
    pub async fn alerts(
        &self,
        resolved_since: Option<i64>,
    ) -> Result<Vec<berth_core::alerts::AlertView>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT * FROM alerts WHERE resolved_at IS NULL OR resolved_at >= ? ORDER BY started_at DESC",
        )
        .bind(resolved_since.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(berth_core::alerts::AlertView {
                    id: r.try_get("id")?,
                    app: r.try_get("app")?,
                    name: r.try_get("name")?,
                    severity: r.try_get("severity")?,
                    summary: r.try_get("summary")?,
                    started_at: r.try_get("started_at")?,
                    resolved_at: r.try_get("resolved_at")?,
                })
            })
            .collect()
    }

    /// SLO pages that started at `since` or later (for DORA's change failure rate).
    pub async fn slo_pages(&self, since: i64) -> Result<Vec<berth_core::dora::Page>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT app, started_at FROM alerts WHERE name LIKE 'slo\\_%\\_page' ESCAPE '\\' AND started_at >= ?",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(berth_core::dora::Page {
                    app: r.try_get("app")?,
                    started_at: r.try_get("started_at")?,
                })
            })
            .collect()
    }

    /// Opens an alert, or updates the open one of the same app and name (severity, summary);
    /// returns whether it is new.
    pub async fn raise_alert(
        &self,
        app: &str,
        name: &str,
        severity: &str,
        summary: &str,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin_write().await?;
        let open: Option<String> = sqlx::query_scalar(
            "SELECT id FROM alerts WHERE app = ? AND name = ? AND resolved_at IS NULL",
        )
        .bind(app)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        let new = open.is_none();
        match open {
            Some(id) => {
                sqlx::query("UPDATE alerts SET severity = ?, summary = ? WHERE id = ?")
                    .bind(severity)
                    .bind(summary)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            None => {
                sqlx::query("INSERT INTO alerts (id, app, name, severity, summary, started_at) VALUES (?, ?, ?, ?, ?, ?)")
                    .bind(crate::random_id(8))
                    .bind(app)
                    .bind(name)
                    .bind(severity)
                    .bind(summary)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(new)
    }

    /// Resolves the open alert of an app and name; returns whether there was one.
    pub async fn resolve_alert(
        &self,
        app: &str,
        name: &str,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let r = sqlx::query(
            "UPDATE alerts SET resolved_at = ? WHERE app = ? AND name = ? AND resolved_at IS NULL",
        )
        .bind(now)
        .bind(app)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Queues a webhook delivery of the latest alert of `app` and `name`, in its state now.
    pub async fn queue_alert_delivery(
        &self,
        app: &str,
        name: &str,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO alert_outbox (alert_id, state, queued_at, next_at) \
             SELECT id, CASE WHEN resolved_at IS NULL THEN 'firing' ELSE 'resolved' END, ?, ? \
             FROM alerts WHERE app = ? AND name = ? ORDER BY started_at DESC LIMIT 1",
        )
        .bind(now)
        .bind(now)
        .bind(app)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deliveries due now, oldest first: (delivery id, the alert as it was queued, attempts).
    pub async fn due_alert_deliveries(
        &self,
        now: i64,
    ) -> Result<Vec<(i64, berth_core::alerts::AlertView, u32)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT o.id AS delivery, o.state, o.attempts, a.* FROM alert_outbox o JOIN alerts a ON a.id = o.alert_id \
             WHERE o.delivered_at IS NULL AND o.next_at <= ? ORDER BY o.id LIMIT 100",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                Ok((
                    r.try_get("delivery")?,
                    berth_core::alerts::AlertView {
                        id: r.try_get("id")?,
                        app: r.try_get("app")?,
                        name: r.try_get("name")?,
                        severity: r.try_get("severity")?,
                        summary: r.try_get("summary")?,
                        started_at: r.try_get("started_at")?,
                        resolved_at: if state == "resolved" {
                            r.try_get("resolved_at")?
                        } else {
                            None
                        },
                    },
                    r.try_get::<i64, _>("attempts")?.max(0) as u32,
                ))
            })
            .collect()
    }

    /// Marks a delivery done.
    pub async fn alert_delivered(&self, id: i64, at: i64) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE alert_outbox SET delivered_at = ?, last_error = NULL WHERE id = ?")
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a failed attempt; the next one is at `next_at`.
    pub async fn alert_delivery_failed(
        &self,
        id: i64,
        error: &str,
        next_at: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE alert_outbox SET attempts = attempts + 1, last_error = ?, next_at = ? WHERE id = ?")
            .bind(error)
            .bind(next_at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a deploy's step.
    pub async fn deploy_step(&self, id: &str, step: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE deploys SET step = ? WHERE id = ?")
            .bind(step)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a deploy's end.
    pub async fn finish_deploy(
        &self,
        id: &str,
        status: &str,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE deploys SET status = ?, error = ?, finished_at = ? WHERE id = ?")
            .bind(status)
            .bind(error)
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deploys that were running when the platform stopped: (deploy id, app, release, step).
    pub async fn interrupted_deploys(
        &self,
    ) -> Result<Vec<(String, String, u32, String)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, app, release_version, step FROM deploys WHERE status = 'running'",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    r.try_get("app")?,
                    r.try_get::<i64, _>("release_version")? as u32,
                    r.try_get("step")?,
                ))
            })
            .collect()
    }

    // ---- instances

    /// Records a new instance.
    pub async fn insert_instance(&self, i: &InstanceRow) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO instances (id, app, release_version, process, idx, address, port, state, restarts, started_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
        )
        .bind(&i.id)
        .bind(&i.app)
        .bind(i.release as i64)
        .bind(&i.process)
        .bind(i.index as i64)
        .bind(&i.address)
        .bind(i.port as i64)
        .bind(i.state.as_str())
        .bind(i.started_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Instances of one app, or of all apps.
    pub async fn instances(&self, app: Option<&str>) -> Result<Vec<InstanceRow>, sqlx::Error> {
        let rows = match app {
            Some(a) => {
                sqlx::query(
                    "SELECT * FROM instances WHERE app = ? ORDER BY release_version, process, idx",
                )
                .bind(a)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query("SELECT * FROM instances ORDER BY app, release_version, process, idx")
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(instance_from_row).collect()
    }

    /// Addresses in use.
    pub async fn used_addresses(&self) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT address FROM instances")
            .fetch_all(&self.pool)
            .await
    }

    /// Marks an instance running with its init's PID.
    pub async fn instance_running(
        &self,
        id: &str,
        pid: Option<(u32, u64)>,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE instances SET state = 'running', pid = ?, pid_start = ?, started_at = ? WHERE id = ? AND state != 'stopped'")
            .bind(pid.map(|p| p.0 as i64))
            .bind(pid.map(|p| p.1 as i64))
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks a running instance crashed; false if it was not running (e.g. being stopped).
    pub async fn instance_crashed(
        &self,
        id: &str,
        exit: Option<i32>,
        reason: Option<&str>,
    ) -> Result<bool, sqlx::Error> {
        let r = sqlx::query("UPDATE instances SET state = 'crashed', last_exit = ?, last_exit_reason = ?, pid = NULL, pid_start = NULL WHERE id = ? AND state IN ('running', 'starting')")
            .bind(exit.map(i64::from))
            .bind(reason)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Puts an instance whose restart failed back to crashed, keeping why it last exited
    /// (the restart's own failure is logged, not recorded as the app's exit).
    pub async fn instance_restart_failed(&self, id: &str) -> Result<bool, sqlx::Error> {
        let r = sqlx::query("UPDATE instances SET state = 'crashed', pid = NULL, pid_start = NULL WHERE id = ? AND state IN ('running', 'starting')")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Claims a crashed instance for a restart; false if something else changed it.
    pub async fn instance_restarting(&self, id: &str) -> Result<bool, sqlx::Error> {
        let r = sqlx::query("UPDATE instances SET state = 'starting', restarts = restarts + 1 WHERE id = ? AND state = 'crashed'")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Marks an instance as stopping on purpose, so nothing restarts it.
    pub async fn instance_stopping(&self, id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE instances SET state = 'stopped' WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets an instance.
    pub async fn delete_instance(&self, id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM instances WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Which of an app's secret sets: what its releases get, or what its builds get.
#[derive(Debug, Clone, Copy)]
enum SecretSet {
    Release,
    Build,
}

impl SecretSet {
    fn table(self) -> &'static str {
        match self {
            SecretSet::Release => "app_secrets",
            SecretSet::Build => "app_build_secrets",
        }
    }
}

/// A sealed secret version as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRow {
    /// App.
    pub app: String,
    /// Name.
    pub name: String,
    /// Version.
    pub version: u32,
    /// Key that sealed it.
    pub key_id: String,
    /// base64(nonce ‖ ciphertext).
    pub sealed: String,
    /// Who set it.
    pub actor: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A volume row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRow {
    /// App.
    pub app: String,
    /// Name.
    pub name: String,
    /// Size, bytes.
    pub size_bytes: u64,
    /// Mount path inside containers.
    pub mount_path: String,
    /// One instance at a time.
    pub exclusive: bool,
    /// Unix seconds.
    pub created_at: i64,
}

fn secret_from_row(r: &SqliteRow) -> Result<SecretRow, sqlx::Error> {
    Ok(SecretRow {
        app: r.try_get("app")?,
        name: r.try_get("name")?,
        version: r.try_get::<i64, _>("version")? as u32,
        key_id: r.try_get("key_id")?,
        sealed: r.try_get("sealed")?,
        actor: r.try_get("actor")?,
        created_at: r.try_get("created_at")?,
    })
}

fn volume_from_row(r: &SqliteRow) -> Result<VolumeRow, sqlx::Error> {
    Ok(VolumeRow {
        app: r.try_get("app")?,
        name: r.try_get("name")?,
        size_bytes: r.try_get::<i64, _>("size_bytes")? as u64,
        mount_path: r.try_get("mount_path")?,
        exclusive: r.try_get::<i64, _>("exclusive")? != 0,
        created_at: r.try_get("created_at")?,
    })
}

impl Store {
    // ---- secrets

    /// The highest version of a secret ever stored (0: none).
    pub async fn max_secret_version(&self, app: &str, name: &str) -> Result<u32, sqlx::Error> {
        let max: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(version) FROM secret_versions WHERE app = ? AND name = ?",
        )
        .bind(app)
        .bind(name)
        .fetch_one(&self.pool)
        .await?;
        Ok(max.unwrap_or(0) as u32)
    }

    /// Stores new sealed versions, all or none, without changing which versions the app
    /// uses.
    pub async fn insert_secret_versions(&self, rows: &[SecretRow]) -> Result<(), sqlx::Error> {
        let mut tx = self.begin_write().await?;
        for r in rows {
            sqlx::query(
                "INSERT INTO secret_versions (app, name, version, key_id, sealed, actor, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&r.app)
            .bind(&r.name)
            .bind(r.version as i64)
            .bind(&r.key_id)
            .bind(&r.sealed)
            .bind(&r.actor)
            .bind(r.created_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// The secret versions the app's next release gets: name → version.
    pub async fn app_secrets(&self, app: &str) -> Result<BTreeMap<String, u32>, sqlx::Error> {
        self.secret_set(SecretSet::Release, app).await
    }

    /// Replaces the set of secret versions the app's next release gets.
    pub async fn set_app_secrets(
        &self,
        app: &str,
        secrets: &BTreeMap<String, u32>,
    ) -> Result<(), sqlx::Error> {
        self.replace_secret_set(SecretSet::Release, app, secrets)
            .await
    }

    /// The secret versions the app's builds get: name → version.
    pub async fn app_build_secrets(&self, app: &str) -> Result<BTreeMap<String, u32>, sqlx::Error> {
        self.secret_set(SecretSet::Build, app).await
    }

    /// Replaces the set of secret versions the app's builds get.
    pub async fn set_app_build_secrets(
        &self,
        app: &str,
        secrets: &BTreeMap<String, u32>,
    ) -> Result<(), sqlx::Error> {
        self.replace_secret_set(SecretSet::Build, app, secrets)
            .await
    }

    async fn secret_set(
        &self,
        set: SecretSet,
        app: &str,
    ) -> Result<BTreeMap<String, u32>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT name, version FROM {} WHERE app = ?",
            set.table()
        ))
        .bind(app)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>("name")?,
                    r.try_get::<i64, _>("version")? as u32,
                ))
            })
            .collect()
    }

    async fn replace_secret_set(
        &self,
        set: SecretSet,
        app: &str,
        secrets: &BTreeMap<String, u32>,
    ) -> Result<(), sqlx::Error> {
        let table = set.table();
        let mut tx = self.begin_write().await?;
        sqlx::query(&format!("DELETE FROM {table} WHERE app = ?"))
            .bind(app)
            .execute(&mut *tx)
            .await?;
        for (name, version) in secrets {
            sqlx::query(&format!(
                "INSERT INTO {table} (app, name, version) VALUES (?, ?, ?)"
            ))
            .bind(app)
            .bind(name)
            .bind(*version as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// The app's build identity slot, if it has built.
    pub async fn existing_build_slot(&self, app: &str) -> Result<Option<u32>, sqlx::Error> {
        let slot: Option<i64> =
            sqlx::query_scalar("SELECT slot FROM build_identities WHERE app = ?")
                .bind(app)
                .fetch_optional(&self.pool)
                .await?;
        Ok(slot.map(|s| s as u32))
    }

    /// The build identity slots apps hold.
    pub async fn build_slots(&self) -> Result<std::collections::BTreeSet<u32>, sqlx::Error> {
        let slots: Vec<i64> = sqlx::query_scalar("SELECT slot FROM build_identities")
            .fetch_all(&self.pool)
            .await?;
        Ok(slots.into_iter().map(|s| s as u32).collect())
    }

    /// Gives `app` build identity slot `slot`; false when another holds it (or the app
    /// already has one).
    pub async fn claim_build_slot(&self, app: &str, slot: u32) -> Result<bool, sqlx::Error> {
        let done = sqlx::query("INSERT OR IGNORE INTO build_identities (slot, app) VALUES (?, ?)")
            .bind(i64::from(slot))
            .bind(app)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Frees the app's build identity slot.
    pub async fn release_build_slot(&self, app: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM build_identities WHERE app = ?")
            .bind(app)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sealed versions of an app's secrets: those named in `which`.
    pub async fn secret_rows(
        &self,
        app: &str,
        which: &BTreeMap<String, u32>,
    ) -> Result<Vec<SecretRow>, sqlx::Error> {
        let mut out = Vec::new();
        for (name, version) in which {
            let row = sqlx::query(
                "SELECT * FROM secret_versions WHERE app = ? AND name = ? AND version = ?",
            )
            .bind(app)
            .bind(name)
            .bind(*version as i64)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(r) = row {
                out.push(secret_from_row(&r)?);
            }
        }
        Ok(out)
    }

    /// Forgets secret versions that were stored but never used (a change whose deploy
    /// failed).
    pub async fn delete_secret_versions(
        &self,
        app: &str,
        which: &BTreeMap<String, u32>,
    ) -> Result<(), sqlx::Error> {
        for (name, version) in which {
            sqlx::query("DELETE FROM secret_versions WHERE app = ? AND name = ? AND version = ?")
                .bind(app)
                .bind(name)
                .bind(*version as i64)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Every sealed version of every app (key rotation).
    pub async fn all_secret_rows(&self) -> Result<Vec<SecretRow>, sqlx::Error> {
        let rows = sqlx::query("SELECT * FROM secret_versions ORDER BY app, name, version")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(secret_from_row).collect()
    }

    /// Replaces sealed values in one transaction (key rotation): all or nothing.
    pub async fn reseal_secrets(&self, rows: &[SecretRow]) -> Result<(), sqlx::Error> {
        let mut tx = self.begin_write().await?;
        for r in rows {
            sqlx::query(
                "UPDATE secret_versions SET key_id = ?, sealed = ? WHERE app = ? AND name = ? AND version = ?",
            )
            .bind(&r.key_id)
            .bind(&r.sealed)
            .bind(&r.app)
            .bind(&r.name)
            .bind(r.version as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    // ---- databases

    /// Records an app's database.
    pub async fn insert_database(
        &self,
        app: &str,
        database: &str,
        role: &str,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO databases (app, database_name, role_name, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(app)
        .bind(database)
        .bind(role)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Apps that have a database: app → (database, role, created_at).
    pub async fn databases(&self) -> Result<BTreeMap<String, (String, String, i64)>, sqlx::Error> {
        let rows = sqlx::query("SELECT * FROM databases ORDER BY app")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>("app")?,
                    (
                        r.try_get("database_name")?,
                        r.try_get("role_name")?,
                        r.try_get("created_at")?,
                    ),
                ))
            })
            .collect()
    }

    /// Forgets an app's database.
    pub async fn delete_database(&self, app: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM databases WHERE app = ?")
            .bind(app)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- volumes

    /// Records a volume.
    pub async fn insert_volume(&self, v: &VolumeRow) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO volumes (app, name, size_bytes, mount_path, exclusive, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&v.app)
        .bind(&v.name)
        .bind(v.size_bytes as i64)
        .bind(&v.mount_path)
        .bind(i64::from(v.exclusive))
        .bind(v.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Volumes of one app, or of every app.
    pub async fn volumes(&self, app: Option<&str>) -> Result<Vec<VolumeRow>, sqlx::Error> {
        let rows = match app {
            Some(a) => {
                sqlx::query("SELECT * FROM volumes WHERE app = ? ORDER BY name")
                    .bind(a)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM volumes ORDER BY app, name")
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(volume_from_row).collect()
    }

    /// Forgets a volume.
    pub async fn delete_volume(&self, app: &str, name: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM volumes WHERE app = ? AND name = ?")
            .bind(app)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- idempotency keys

    /// The answer kept for a key with its content type: (request hash, status, content
    /// type, body).
    pub async fn idempotent_answer(&self, key: &str) -> Result<Option<KeptAnswer>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT request_hash, status, content_type, location, response FROM idempotency_keys WHERE key = ?",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(KeptAnswer {
                request_hash: r.try_get("request_hash")?,
                status: r.try_get::<i64, _>("status")? as u16,
                content_type: r.try_get("content_type")?,
                location: r.try_get("location")?,
                response: r.try_get("response")?,
            })
        })
        .transpose()
    }

    /// Keeps an answer.
    pub async fn keep_idempotent_answer(
        &self,
        key: &str,
        answer: &KeptAnswer,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO idempotency_keys (key, request_hash, status, content_type, location, response, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(key)
        .bind(&answer.request_hash)
        .bind(i64::from(answer.status))
        .bind(&answer.content_type)
        .bind(&answer.location)
        .bind(&answer.response)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets the answers kept before `before` (Unix seconds); returns how many.
    pub async fn prune_idempotent_answers(&self, before: i64) -> Result<u64, sqlx::Error> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ?")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

fn app_from_row(r: &SqliteRow) -> Result<AppRow, sqlx::Error> {
    let env: String = r.try_get("env")?;
    Ok(AppRow {
        name: r.try_get("name")?,
        env: serde_json::from_str(&env).unwrap_or_default(),
        current_release: r
            .try_get::<Option<i64>, _>("current_release")?
            .map(|v| v as u32),
        created_at: r.try_get("created_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store as the previous berth (the schema before the newest) left it, with an app.
    async fn previous_schema_store(path: &Path) {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .unwrap()
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new().connect_with(opts).await.unwrap();
        sqlx::query("CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY)")
            .execute(&pool)
            .await
            .unwrap();
        for (version, sql) in &MIGRATIONS[..MIGRATIONS.len() - 1] {
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
            sqlx::query("INSERT INTO schema_migrations (version) VALUES (?)")
                .bind(version)
                .execute(&pool)
                .await
                .unwrap();
        }
        sqlx::query("INSERT INTO apps (name, project_id, env, current_release, created_at) VALUES ('shop', 'default', '{}', NULL, 5)")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }

    #[tokio::test]
    async fn a_store_of_the_previous_schema_is_migrated_forward_with_its_data() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("state.db");
        previous_schema_store(&path).await;
        let s = Store::open(&path).await.unwrap();
        let apps = s.apps().await.unwrap();
        assert_eq!(apps.len(), 1);
        assert_eq!(apps[0].name, "shop");
        let newest: i64 = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
            .fetch_one(&s.pool)
            .await
            .unwrap();
        assert_eq!(newest, MIGRATIONS.last().unwrap().0);
        // The new column is there and usable.
        let kept = KeptAnswer {
            request_hash: "h".into(),
            status: 303,
            content_type: None,
            location: Some("/ui/apps/shop".into()),
            response: String::new(),
        };
        s.keep_idempotent_answer("t:k", &kept, 1).await.unwrap();
        assert_eq!(s.idempotent_answer("t:k").await.unwrap(), Some(kept));
    }

    #[tokio::test]
    async fn a_store_of_a_newer_berth_is_refused_and_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("state.db");
        let s = Store::open(&path).await.unwrap();
        sqlx::query("INSERT INTO schema_migrations (version) VALUES (99)")
            .execute(&s.pool)
            .await
            .unwrap();
        s.pool.close().await;
        let err = Store::open(&path).await.unwrap_err().to_string();
        assert!(
            err.contains("written by a newer berth (state schema 99; this berth knows up to"),
            "{err}"
        );
        // Left as it was: the newer berth's record of its schema is still there.
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display())).unwrap();
        let pool = SqlitePoolOptions::new().connect_with(opts).await.unwrap();
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
                .fetch_all(&pool)
                .await
                .unwrap();
        let mut expected: Vec<i64> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
        expected.push(99);
        assert_eq!(versions, expected);
    }

    #[tokio::test]
    async fn idempotent_answers_are_forgotten_after_their_time() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("b.db")).await.unwrap();
        let answer = |content_type: Option<&str>, location: Option<&str>| KeptAnswer {
            request_hash: "h".into(),
            status: 200,
            content_type: content_type.map(str::to_string),
            location: location.map(str::to_string),
            response: "{}".into(),
        };
        s.keep_idempotent_answer("t:old", &answer(None, None), 100)
            .await
            .unwrap();
        let new = answer(Some("application/json"), Some("/ui/apps/a"));
        s.keep_idempotent_answer("t:new", &new, 200).await.unwrap();
        assert_eq!(s.prune_idempotent_answers(150).await.unwrap(), 1);
        assert!(s.idempotent_answer("t:old").await.unwrap().is_none());
        assert_eq!(s.idempotent_answer("t:new").await.unwrap(), Some(new));
    }

    #[tokio::test]
    async fn releases_number_up_and_activation_supersedes() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("b.db")).await.unwrap();
        // Migrations are idempotent.
        let s2 = Store::open(&d.path().join("b.db")).await.unwrap();
        s.ensure_app("hello", 1).await.unwrap();
        s.ensure_app("hello", 2).await.unwrap();
        assert_eq!(s2.apps().await.unwrap().len(), 1);
        let img = ImageRef {
            repository: "hello".into(),
            tag: "t".into(),
            digest: "sha256:x".into(),
        };
        let v1 = s
            .create_release("hello", &img, &ReleaseConfig::default(), "build", "me", 1)
            .await
            .unwrap();
        let v2 = s
            .create_release("hello", &img, &ReleaseConfig::default(), "build", "me", 2)
            .await
            .unwrap();
        assert_eq!((v1, v2), (1, 2));
        s.activate_release("hello", 1).await.unwrap();
        s.activate_release("hello", 2).await.unwrap();
        let rs = s.releases("hello").await.unwrap();
        assert_eq!(rs[0].status, ReleaseStatus::Active);
        assert_eq!(rs[1].status, ReleaseStatus::Superseded);
        assert_eq!(
            s.app("hello").await.unwrap().unwrap().current_release,
            Some(2)
        );
        s.delete_app("hello").await.unwrap();
        assert!(s.app("hello").await.unwrap().is_none());
        assert!(s.releases("hello").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn crashed_instances_are_claimed_once() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("b.db")).await.unwrap();
        let i = InstanceRow {
            id: "a-v1-web-0-x".into(),
            app: "a".into(),
            release: 1,
            process: "web".into(),
            index: 0,
            address: "10.0.0.2".into(),
            port: 8000,
            state: InstanceState::Starting,
            restarts: 0,
            last_exit: None,
            last_exit_reason: None,
            started_at: 0,
            pid: None,
        };
        s.insert_instance(&i).await.unwrap();
        s.instance_running(&i.id, Some((5, 6)), 1).await.unwrap();
        assert!(s
            .instance_crashed(&i.id, Some(137), Some("oom_killed"))
            .await
            .unwrap());
        assert!(!s.instance_crashed(&i.id, Some(3), None).await.unwrap());
        assert!(s.instance_restarting(&i.id).await.unwrap());
        // A restart that could not start keeps why the app last exited.
        assert!(s.instance_restart_failed(&i.id).await.unwrap());
        assert!(!s.instance_restart_failed(&i.id).await.unwrap());
        let rows = s.instances(Some("a")).await.unwrap();
        assert_eq!(rows[0].state, InstanceState::Crashed);
        assert_eq!(rows[0].last_exit_reason.as_deref(), Some("oom_killed"));
        assert!(s.instance_restarting(&i.id).await.unwrap());
        assert!(!s.instance_restarting(&i.id).await.unwrap());
        s.instance_stopping(&i.id).await.unwrap();
        assert!(
            !s.instance_crashed(&i.id, None, None).await.unwrap(),
            "stopped instances are not crashes"
        );
        let rows = s.instances(Some("a")).await.unwrap();
        assert_eq!(rows[0].restarts, 2);
        assert_eq!(rows[0].last_exit, Some(137));
    }
}

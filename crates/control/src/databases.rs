//! Apps' PostgreSQL databases: the platform's server (`berth_data::postgres`) started on
//! first use, one database and role per app, `DATABASE_URL` handed to the app as a secret
//! (so it is sealed at rest and redacted from logs), the firewall opened from that app's
//! instances to the server only, backups with pg_dump and restores with pg_restore.

use crate::deploy::{DeployFailure, Events, STORED_ONLY};
use crate::error::ApiError;
use crate::platform::Platform;
use axum::http::StatusCode;
use berth_core::state::{DatabaseBackupView, DatabaseView, SecretChange};
use berth_data::postgres::{AppDatabase, PgError, Postgres};
use std::path::PathBuf;
use std::sync::Arc;

/// The secret that carries an app's connection URL.
pub const DATABASE_URL: &str = "DATABASE_URL";

/// The parts of a `DATABASE_URL` berth made (`postgres://role:password@host:port/db`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    pub role: String,
    pub password: String,
    pub host: String,
    pub port: String,
    pub database: String,
}

/// Splits a `DATABASE_URL` berth made; `None` for anything else.
pub fn database_url_parts(url: &str) -> Option<DatabaseUrl> {
    let rest = url.split_once("://")?.1;
    let (userinfo, location) = rest.rsplit_once('@')?;
    let (role, password) = userinfo.split_once(':')?;
    let (address, database) = location.split_once('/')?;
    let (host, port) = address.rsplit_once(':')?;
    Some(DatabaseUrl {
        role: role.into(),
        password: password.into(),
        host: host.trim_start_matches('[').trim_end_matches(']').into(),
        port: port.into(),
        database: database.split('?').next().unwrap_or_default().into(),
    })
}

fn pg_error(e: PgError) -> ApiError {
    match e {
        PgError::NotInstalled => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            e.to_string(),
        )
        .hint("install PostgreSQL (`apt-get install postgresql`) and try again"),
        PgError::Failed(_) => ApiError::internal("the database server", e),
    }
}

fn no_database(app: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "database_not_found",
        format!("{app} has no database"),
    )
    .hint(format!("create one with `berth db create {app}`"))
}

impl Platform {
    /// Runs blocking work against the database server.
    pub(crate) async fn with_pg<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Postgres) -> Result<T, PgError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let pg = self
            .postgres
            .clone()
            .ok_or_else(|| pg_error(PgError::NotInstalled))?;
        tokio::task::spawn_blocking(move || f(&pg))
            .await
            .map_err(|e| ApiError::internal("the database server", e))?
            .map_err(pg_error)
    }

    fn backups_dir(&self, app: &str) -> PathBuf {
        self.cfg.data_dir.join("backups/databases").join(app)
    }

    /// Creates the app's database and role, and gives the app `DATABASE_URL` (a new release
    /// when it runs). All or nothing: a failure leaves no database, role or secret.
    pub async fn create_database(
        self: &Arc<Self>,
        app: &str,
        actor: String,
        events: Events,
    ) -> Result<(u32, String), DeployFailure> {
        let lock = self.app_lock(app);
        let _guard = lock.lock().await;
        if self.store.app(app).await?.is_none() {
            return Err(ApiError::app_not_found(app).into());
        }
        if let Some((db, _, _)) = self.store.databases().await?.get(app) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "database_exists",
                format!("{app} already has a database ({db}); an app has one"),
            )
            .hint(format!("see `berth db info {app}`"))
            .into());
        }
        if self
            .store
            .app_secrets(app)
            .await?
            .contains_key(DATABASE_URL)
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "database_url_taken",
                format!("{app} already has a secret named {DATABASE_URL}"),
            )
            .hint(format!(
                "berth sets {DATABASE_URL} itself; `berth secrets unset {app} {DATABASE_URL}` first"
            ))
            .into());
        }
        if self.kube.is_some() {
            return self.create_cluster_database(app, actor, events).await;
        }
        let db = AppDatabase::for_app(app);
        let password = crate::random_id(24);
        let _ = events.send(berth_core::api::DeployEvent::Step {
            step: "database".into(),
        });
        {
            let (db, password) = (db.clone(), password.clone());
            self.with_pg(move |pg| {
                pg.ensure_running()?;
                if pg.exists(&db)? {
                    return Err(PgError::Failed(format!(
                        "a database named {} is already on the server",
                        db.database
                    )));
                }
                pg.provision(&db, &password)
            })
            .await?;
        }
        let undo = |platform: Arc<Self>, db: AppDatabase| async move {
            let _ = platform.store.delete_database(app).await;
            let _ = platform.with_pg(move |pg| pg.deprovision(&db)).await;
            let _ = platform.publish_network().await;
        };
        if let Err(e) = self
            .store
            .insert_database(app, &db.database, &db.role, crate::now_secs())
            .await
        {
            undo(self.clone(), db).await;
            return Err(e.into());
        }
        if let Err(e) = self.publish_network().await {
            undo(self.clone(), db).await;
            return Err(e.into());
        }
        let (host, port) = self
            .postgres
            .as_ref()
            .map(|p| p.address())
            .ok_or_else(|| pg_error(PgError::NotInstalled))?;
        let url = format!(
            "postgres://{}:{password}@{host}:{port}/{}",
            db.role, db.database
        );
        let change = SecretChange {
            set: [(DATABASE_URL.to_string(), url)].into(),
            unset: vec![],
            build: false,
        };
        match self.change_secrets_locked(app, change, actor, events).await {
            Ok((STORED_ONLY, _)) => Ok((
                STORED_ONLY,
                format!(
                    "database {} created; {app} gets {DATABASE_URL} from its first deploy on",
                    db.database
                ),
            )),
            Ok(done) => Ok(done),
            Err(f) => {
                undo(self.clone(), db).await;
                Err(f)
            }
        }
    }

    /// The app's database, its server and backups.
    pub async fn database_info(&self, app: &str) -> Result<DatabaseView, ApiError> {
        let dbs = self.store.databases().await?;
        let (database, role, created_at) = dbs.get(app).cloned().ok_or_else(|| no_database(app))?;
        if self.kube.is_some() {
            return self
                .cluster_database_info(app, database, role, created_at)
                .await;
        }
        let running = self.with_pg(|pg| Ok(pg.is_running())).await?;
        let (host, port) = self
            .postgres
            .as_ref()
            .map(|p| p.address())
            .ok_or_else(|| pg_error(PgError::NotInstalled))?;
        let mut backups: Vec<DatabaseBackupView> = std::fs::read_dir(self.backups_dir(app))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let id = name.strip_suffix(".dump")?.to_string();
                Some(DatabaseBackupView {
                    created_at: id.split('-').next()?.parse().ok()?,
                    bytes: e.metadata().ok()?.len(),
                    id,
                })
            })
            .collect();
        backups.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(DatabaseView {
            app: app.to_string(),
            database,
            role,
            host: host.to_string(),
            port,
            server_running: running,
            backups,
            created_at,
        })
    }

    /// Dumps the app's database (pg_dump custom format) into the data directory.
    pub async fn backup_database(&self, app: &str) -> Result<DatabaseBackupView, ApiError> {
        self.not_on_cluster(
            "a database backup",
            crate::kube_backend::DATABASE_BACKUP_HINT,
        )?;
        let (database, role, _) = self
            .store
            .databases()
            .await?
            .get(app)
            .cloned()
            .ok_or_else(|| no_database(app))?;
        let dir = self.backups_dir(app);
        std::fs::create_dir_all(&dir).map_err(|e| ApiError::internal("backup directory", e))?;
        let created_at = crate::now_secs();
        let id = format!("{created_at}-{}", crate::random_id(2));
        let path = dir.join(format!("{id}.dump"));
        let out = path.clone();
        self.with_pg(move |pg| {
            pg.ensure_running()?;
            pg.dump(&AppDatabase { database, role }, &out)
        })
        .await?;
        Ok(DatabaseBackupView {
            bytes: std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
            id,
            created_at,
        })
    }

    /// Replaces the app's database contents with a backup, in one transaction.
    pub async fn restore_database(&self, app: &str, backup: &str) -> Result<(), ApiError> {
        self.not_on_cluster(
            "a database restore",
            crate::kube_backend::DATABASE_BACKUP_HINT,
        )?;
        let (database, role, _) = self
            .store
            .databases()
            .await?
            .get(app)
            .cloned()
            .ok_or_else(|| no_database(app))?;
        let path = self.backups_dir(app).join(format!("{backup}.dump"));
        if backup.contains('/') || backup.starts_with('.') || !path.exists() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "backup_not_found",
                format!("{app}'s database has no backup {backup:?}"),
            )
            .hint(format!("list backups with `berth db info {app}`")));
        }
        self.with_pg(move |pg| {
            pg.ensure_running()?;
            pg.restore(&AppDatabase { database, role }, &path)
        })
        .await
    }

    /// Drops the app's database and role (the app is being destroyed).
    pub async fn drop_database(&self, app: &str) -> Result<(), ApiError> {
        let Some((database, role, _)) = self.store.databases().await?.get(app).cloned() else {
            return Ok(());
        };
        if self.kube.is_some() {
            // Its Cluster went with the app's objects.
            self.store.delete_database(app).await?;
            return Ok(());
        }
        self.with_pg(move |pg| {
            pg.ensure_running()?;
            pg.deprovision(&AppDatabase { database, role })
        })
        .await?;
        self.store.delete_database(app).await?;
        let _ = std::fs::remove_dir_all(self.backups_dir(app));
        Ok(())
    }
}

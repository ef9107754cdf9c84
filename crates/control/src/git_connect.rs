//! Apps deployed from a branch of a remote repository (`berth git connect APP URL`): the
//! connection (its webhook secret sealed by the keyring), the deploy of a pushed commit —
//! fetched by the platform, packed and deployed like an upload, as `git:<trigger>` —, and
//! the poll that catches pushes no webhook announced. A commit is acted on once: a failed
//! deploy is not retried by the poll (push again, or redeliver the webhook).

use crate::error::ApiError;
use crate::platform::Platform;
use axum::http::StatusCode;
use berth_core::git::{GitConnect, GitConnected, GitConnectionView};
use berth_core::names::AppName;
use berth_data::secrets::{Keyring, Sealed};
use sqlx::Row;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Longest a fetch or an `ls-remote` may take.
const GIT_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest the check of a new connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time between polls of every connected branch.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);

/// A connection as stored.
#[derive(Debug, Clone)]
pub struct ConnectionRow {
    pub app: String,
    pub url: String,
    pub branch: String,
    pub project: String,
    sealed: Sealed,
    pub created_by: String,
    pub created_at: i64,
    pub last_commit: Option<String>,
    pub last_outcome: Option<String>,
    pub last_at: Option<i64>,
    pub last_trigger: Option<String>,
}

fn context(app: &str) -> String {
    format!("git-webhook:{app}")
}

fn row_of(r: &sqlx::sqlite::SqliteRow) -> Result<ConnectionRow, sqlx::Error> {
    Ok(ConnectionRow {
        app: r.try_get("app")?,
        url: r.try_get("url")?,
        branch: r.try_get("branch")?,
        project: r.try_get("project")?,
        sealed: Sealed {
            key_id: r.try_get("key_id")?,
            data: r.try_get("sealed_secret")?,
        },
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        last_commit: r.try_get("last_commit")?,
        last_outcome: r.try_get("last_outcome")?,
        last_at: r.try_get("last_at")?,
        last_trigger: r.try_get("last_trigger")?,
    })
}

/// The webhook endpoints, by provider.
pub fn hooks() -> BTreeMap<String, String> {
    [
        ("github", "/hooks/github"),
        ("gitea", "/hooks/gitea"),
        ("forgejo", "/hooks/gitea"),
        ("gitlab", "/hooks/gitlab"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl ConnectionRow {
    pub fn view(&self) -> GitConnectionView {
        GitConnectionView {
            app: self.app.clone(),
            url: self.url.clone(),
            branch: self.branch.clone(),
            created_by: self.created_by.clone(),
            created_at: self.created_at,
            last_commit: self.last_commit.clone(),
            last_outcome: self.last_outcome.clone(),
            last_at: self.last_at,
            last_trigger: self.last_trigger.clone(),
            hooks: hooks(),
        }
    }
}

pub(crate) fn git_refused(e: berth_factory::git::GitError) -> ApiError {
    use berth_factory::git::GitError;
    match e {
        GitError::BadUrl(_) => ApiError::invalid("invalid_git_url", e.to_string()),
        GitError::PasswordInUrl(_) => ApiError::invalid("invalid_git_url", e.to_string())
            .hint("use an ssh:// URL with the app's deploy key (`berth git key APP`), or a public https:// URL"),
        GitError::BadRef(_) => ApiError::invalid("invalid_branch", e.to_string()),
        GitError::Missing => ApiError::internal("git", e),
        GitError::Fetch { .. } | GitError::Timeout(..) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "repository_unreachable",
            e.to_string(),
        )
        .hint("check the URL and the branch, and that this machine can reach the repository (a private one over ssh needs a key)"),
    }
}

impl Platform {
    /// Every connection.
    pub async fn git_connections(&self) -> Result<Vec<ConnectionRow>, ApiError> {
        let rows = sqlx::query("SELECT * FROM git_connections ORDER BY app")
            .fetch_all(&self.store.pool)
            .await?;
        Ok(rows.iter().map(row_of).collect::<Result<_, _>>()?)
    }

    /// An app's connection.
    pub async fn git_connection(&self, app: &str) -> Result<Option<ConnectionRow>, ApiError> {
        let row = sqlx::query("SELECT * FROM git_connections WHERE app = ?")
            .bind(app)
            .fetch_optional(&self.store.pool)
            .await?;
        Ok(row.as_ref().map(row_of).transpose()?)
    }

    /// The webhook secret of a connection.
    pub async fn webhook_secret(
        &self,
        row: &ConnectionRow,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, ApiError> {
        self.open_webhook_secret(&context(&row.app), &row.sealed)
            .await
    }

    /// A new webhook secret, and its sealed form under `context`.
    pub(crate) async fn new_webhook_secret(
        &self,
        context: &str,
    ) -> Result<(String, Sealed), ApiError> {
        let secret = crate::random_id(24);
        let sealed = self
            .keyring
            .read()
            .await
            .seal(context, secret.as_bytes())
            .map_err(|e| ApiError::internal("sealing the webhook secret", e))?;
        Ok((secret, sealed))
    }

    /// A sealed webhook secret, opened.
    pub(crate) async fn open_webhook_secret(
        &self,
        context: &str,
        sealed: &Sealed,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, ApiError> {
        self.keyring
            .read()
            .await
            .open_sealed(context, sealed)
            .map(|v| zeroize::Zeroizing::new(v.to_vec()))
            .map_err(|e| ApiError::internal("opening a webhook secret", e))
    }

    /// Connects `app` to a branch of a repository (replacing an earlier connection), after
    /// checking that the branch can be read; deploys its head in the background.
    pub async fn git_connect(
        self: &Arc<Self>,
        app: &AppName,
        req: &GitConnect,
        project: String,
        actor: &str,
    ) -> Result<GitConnected, ApiError> {
        let req = &GitConnect {
            url: berth_factory::git::normalize_url(&req.url),
            branch: req.branch.clone(),
        };
        berth_factory::git::check_url(&req.url).map_err(git_refused)?;
        berth_factory::git::check_ref(&req.branch).map_err(git_refused)?;
        let (url, branch) = (req.url.clone(), req.branch.clone());
        let key = self.deploy_key_file(app.as_str(), &url).await?;
        let has_key = key.is_some();
        let head = tokio::task::spawn_blocking(move || {
            berth_factory::git::remote_head_with(
                &url,
                &branch,
                CONNECT_TIMEOUT,
                key.as_ref().map(|k| k.ssh()),
            )
        })
        .await
        .map_err(|e| ApiError::internal("reading the repository", e))?
        .map_err(|e| {
            let refused = git_refused(e);
            if req.url.starts_with("ssh://") && refused.code == "repository_unreachable" {
                let hint = if has_key {
                    format!("check that berth's deploy key (`berth git key {app}`) is added to the repository, and the URL and branch")
                } else {
                    format!("a private repository over ssh needs a deploy key: `berth git key {app}` makes one; add it to the repository (read access), then connect again")
                };
                refused.hint(hint)
            } else {
                refused
            }
        })?;
        let (secret, sealed) = self.new_webhook_secret(&context(app.as_str())).await?;
        let now = crate::now_secs();
        sqlx::query(
            "INSERT INTO git_connections (app, url, branch, project, key_id, sealed_secret, created_by, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (app) DO UPDATE SET url = excluded.url, \
             branch = excluded.branch, project = excluded.project, key_id = excluded.key_id, \
             sealed_secret = excluded.sealed_secret, created_by = excluded.created_by, \
             created_at = excluded.created_at, last_commit = NULL, last_outcome = NULL, \
             last_at = NULL, last_trigger = NULL",
        )
        .bind(app.as_str())
        .bind(&req.url)
        .bind(&req.branch)
        .bind(&project)
        .bind(&sealed.key_id)
        .bind(&sealed.data)
        .bind(actor)
        .bind(now)
        .execute(&self.store.pool)
        .await?;
        tracing::info!(%app, url = %req.url, branch = %req.branch, %head, "connected to a repository");
        self.trigger_commit(app.to_string(), head, "connect");
        let row = self
            .git_connection(app.as_str())
            .await?
            .ok_or_else(|| ApiError::internal("connecting", "the connection vanished"))?;
        Ok(GitConnected {
            connection: row.view(),
            webhook_secret: secret,
        })
    }

    /// Removes an app's connection.
    pub async fn git_disconnect(&self, app: &str) -> Result<(), ApiError> {
        let done = sqlx::query("DELETE FROM git_connections WHERE app = ?")
            .bind(app)
            .execute(&self.store.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_connected(app));
        }
        tracing::info!(%app, "disconnected from its repository");
        Ok(())
    }

    async fn record_git_outcome(
        &self,
        app: &str,
        commit: &str,
        outcome: &str,
        trigger: &str,
    ) -> Result<(), ApiError> {
        sqlx::query(
            "UPDATE git_connections SET last_commit = ?, last_outcome = ?, last_at = ?, last_trigger = ? WHERE app = ?",
        )
        .bind(commit)
        .bind(outcome)
        .bind(crate::now_secs())
        .bind(trigger)
        .bind(app)
        .execute(&self.store.pool)
        .await?;
        Ok(())
    }

    /// Deploys `commit` of `app`'s connected branch in the background.
    pub fn trigger_commit(self: &Arc<Self>, app: String, commit: String, trigger: &'static str) {
        let platform = self.clone();
        self.tasks.spawn(async move {
            if let Err(e) = platform.deploy_commit(&app, &commit, trigger).await {
                tracing::warn!(%app, %commit, %trigger, error = %e.message, "deploying a pushed commit failed");
            }
        });
    }

    /// Fetches the connected branch (at `commit` or newer) and deploys it.
    pub async fn deploy_commit(
        self: &Arc<Self>,
        app: &str,
        commit: &str,
        trigger: &str,
    ) -> Result<(), ApiError> {
        let Some(conn) = self.git_connection(app).await? else {
            return Err(not_connected(app));
        };
        if conn.last_commit.as_deref() == Some(commit)
            && conn
                .last_outcome
                .as_deref()
                .is_some_and(|o| o.starts_with("deployed") || o == "deploying")
        {
            tracing::info!(%app, %commit, %trigger, "commit already deployed (or deploying); nothing to do");
            return Ok(());
        }
        self.record_git_outcome(app, commit, "deploying", trigger)
            .await?;
        let outcome = self.fetch_and_deploy(&conn, trigger).await;
        let (sha, text) = match &outcome {
            Ok((sha, version)) => (sha.clone(), format!("deployed v{version}")),
            Err((sha, e)) => (
                sha.clone().unwrap_or_else(|| commit.to_string()),
                format!("failed: {}", e.message),
            ),
        };
        self.record_git_outcome(app, &sha, &text, trigger).await?;
        match outcome {
            Ok(_) => {
                tracing::info!(%app, commit = %sha, %trigger, "{text}");
                Ok(())
            }
            Err((_, e)) => Err(e),
        }
    }

    async fn fetch_and_deploy(
        self: &Arc<Self>,
        conn: &ConnectionRow,
        trigger: &str,
    ) -> Result<(String, u32), (Option<String>, ApiError)> {
        let name = AppName::parse(&conn.app)
            .map_err(|e| (None, ApiError::invalid("invalid_app_name", e.to_string())))?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let app_name = conn.app.clone();
        let drain = tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                if let berth_core::api::DeployEvent::Step { step } = event {
                    tracing::info!(app = %app_name, %step, "git deploy");
                }
            }
        });
        let result = self
            .deploy_git_ref(
                &name,
                &conn.url,
                &conn.branch,
                Some(&conn.project),
                format!("git:{trigger}"),
                tx,
            )
            .await;
        let _ = drain.await;
        result
    }

    /// Fetches `git_ref` of `url` (with the app's deploy key over ssh) and deploys it;
    /// the commit deployed and the release, or the commit (when it got that far) and why
    /// not.
    pub async fn deploy_git_ref(
        self: &Arc<Self>,
        name: &AppName,
        url: &str,
        git_ref: &str,
        project: Option<&str>,
        actor: String,
        events: crate::deploy::Events,
    ) -> Result<(String, u32), (Option<String>, ApiError)> {
        let url = berth_factory::git::normalize_url(url);
        let dir =
            tempfile::tempdir().map_err(|e| (None, ApiError::internal("a work directory", e)))?;
        let limit = self.cfg.upload_limit;
        let key = self
            .deploy_key_file(name.as_str(), &url)
            .await
            .map_err(|e| (None, e))?;
        let _ = events.send(berth_core::api::DeployEvent::Step {
            step: "fetch".into(),
        });
        let (u, r, into) = (url.clone(), git_ref.to_string(), dir.path().to_path_buf());
        let fetched = tokio::task::spawn_blocking(move || {
            berth_factory::git::fetch_with(
                &u,
                &r,
                &into,
                GIT_TIMEOUT,
                key.as_ref().map(|k| k.ssh()),
            )?;
            let sha = berth_factory::source::git_commit(&into);
            let time = berth_factory::source::git_commit_time(&into);
            let archive = berth_factory::source::pack(&into, limit).map_err(|e| {
                berth_factory::git::GitError::Fetch {
                    url: u.clone(),
                    git_ref: r.clone(),
                    detail: format!("packing it: {e}"),
                }
            })?;
            Ok::<_, berth_factory::git::GitError>((sha, time, archive))
        })
        .await
        .map_err(|e| (None, ApiError::internal("fetching", e)))?;
        let (sha, commit_time, archive) = fetched.map_err(|e| (None, git_refused(e)))?;
        let sha = sha.ok_or_else(|| {
            (
                None,
                ApiError::internal("fetching", "the checkout names no commit"),
            )
        })?;
        let fail = |e: ApiError| (Some(sha.clone()), e);
        let toml = crate::deploy::spec_of(&archive).map_err(fail)?;
        let result = self
            .deploy_archive(
                name,
                bytes::Bytes::from(archive),
                toml,
                sha.clone(),
                commit_time,
                project,
                actor,
                events,
            )
            .await;
        match result {
            Ok(version) => Ok((sha, version)),
            Err(f) => Err(fail(f.error)),
        }
    }

    /// One poll: every connected branch whose head moved is deployed.
    pub async fn poll_git(self: &Arc<Self>) -> Result<(), ApiError> {
        for conn in self.git_connections().await? {
            let (url, branch) = (conn.url.clone(), conn.branch.clone());
            let key = self.deploy_key_file(&conn.app, &conn.url).await?;
            let head = tokio::task::spawn_blocking(move || {
                berth_factory::git::remote_head_with(
                    &url,
                    &branch,
                    GIT_TIMEOUT,
                    key.as_ref().map(|k| k.ssh()),
                )
            })
            .await
            .map_err(|e| ApiError::internal("polling", e))?;
            match head {
                Ok(head) if conn.last_commit.as_deref() != Some(head.as_str()) => {
                    tracing::info!(app = %conn.app, %head, "the connected branch moved");
                    if let Err(e) = self.deploy_commit(&conn.app, &head, "poll").await {
                        tracing::warn!(app = %conn.app, %head, error = %e.message, "deploying a polled commit failed");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(app = %conn.app, url = %conn.url, error = %e, "polling the repository failed")
                }
            }
        }
        Ok(())
    }

    /// Re-seals every webhook secret of git connections under the ring's active key.
    pub async fn reseal_webhook_secrets(&self, ring: &Keyring) -> Result<usize, ApiError> {
        let rows: Vec<(String, Sealed)> = self
            .git_connections()
            .await?
            .into_iter()
            .map(|r| (r.app, r.sealed))
            .collect();
        self.reseal_secrets_of("git_connections", "app", context, rows, ring)
            .await
    }

    /// Re-seals the `key_id`/`sealed_secret` of each (key, sealed) row of `table` (one of
    /// berth's own), each under its `context`.
    pub(crate) async fn reseal_secrets_of(
        &self,
        table: &'static str,
        key_column: &'static str,
        context: fn(&str) -> String,
        rows: Vec<(String, Sealed)>,
        ring: &Keyring,
    ) -> Result<usize, ApiError> {
        let mut tx = self.store.begin_write().await?;
        for (key, sealed) in &rows {
            let s = ring
                .reseal(&context(key), sealed)
                .map_err(|e| ApiError::internal("re-sealing a webhook secret", e))?;
            sqlx::query(&format!(
                "UPDATE {table} SET key_id = ?, sealed_secret = ? WHERE {key_column} = ?"
            ))
            .bind(&s.key_id)
            .bind(&s.data)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }
}

fn not_connected(app: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_connected",
        format!("app {app} is not connected to a repository"),
    )
    .hint(format!(
        "connect it with `berth git connect {app} URL --branch main`"
    ))
}

/// Polls every connected branch on `every` until shutdown (`every` zero: never).
pub async fn run_git_poll(platform: Arc<Platform>, every: Duration) {
    if every.is_zero() {
        return;
    }
    loop {
        tokio::select! {
            _ = platform.shutdown.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = platform.poll_git().await {
            tracing::warn!(error = %e.message, "polling repositories failed");
        }
        if let Err(e) = platform.poll_gitops().await {
            tracing::warn!(error = %e.message, "polling GitOps repositories failed");
        }
    }
}

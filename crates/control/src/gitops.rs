//! GitOps: a platform definition (see [`crate::declarative`]) kept in a directory of a git
//! repository, applied on every commit of a branch — announced by a push webhook or found by
//! the poll. A commit whose definition is invalid is refused whole (nothing applied; the
//! outcome names the files); the releases of an applied commit record it. The last applied
//! commit's checkout is kept (`<data>/gitops/NAME`), so `berth gitops status` can show drift:
//! what was changed by hand since.

use crate::error::ApiError;
use crate::platform::Platform;
use axum::http::StatusCode;
use berth_core::declare::{GitopsAdd, GitopsAdded, GitopsView};
use berth_data::secrets::{Keyring, Sealed};
use sqlx::Row;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const GIT_TIMEOUT: Duration = Duration::from_secs(300);
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// A source as stored.
#[derive(Debug, Clone)]
pub struct SourceRow {
    pub name: String,
    pub url: String,
    pub path: String,
    pub branch: String,
    pub prune: bool,
    sealed: Sealed,
    pub created_by: String,
    pub created_at: i64,
    pub last_commit: Option<String>,
    pub last_outcome: Option<String>,
    pub last_at: Option<i64>,
    pub last_trigger: Option<String>,
}

fn context(name: &str) -> String {
    format!("gitops-webhook:{name}")
}

fn row_of(r: &sqlx::sqlite::SqliteRow) -> Result<SourceRow, sqlx::Error> {
    Ok(SourceRow {
        name: r.try_get("name")?,
        url: r.try_get("url")?,
        path: r.try_get("path")?,
        branch: r.try_get("branch")?,
        prune: r.try_get::<i64, _>("prune")? != 0,
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

/// A path inside the repository: relative, without `..`.
fn check_path(path: &str) -> Result<String, ApiError> {
    let p = path.trim().trim_matches('/');
    let ok = !p.split('/').any(|c| c == ".." || (c == "." && p != "."))
        && !p.contains('\0')
        && !p.starts_with('-')
        && p.len() <= 512;
    if ok {
        Ok(p.to_string())
    } else {
        Err(ApiError::invalid(
            "invalid_path",
            format!("{path:?} is not a directory inside the repository"),
        )
        .hint("give a relative path such as platform/"))
    }
}

/// The definition at `path` of a checkout, read beneath it: the directory is reached without
/// links (a `platform -> /` in the repository is refused, never followed onto the host).
fn read_definition(
    checkout: &Path,
    path: &str,
    limit: u64,
) -> Result<Vec<crate::declarative::DeclaredApp>, Vec<String>> {
    use berth_factory::tree::{SourceTree, TreeError};
    let tree = SourceTree::open(checkout).map_err(|e| vec![e.to_string()])?;
    let rel = path.trim_matches('/');
    let sub = if rel.is_empty() || rel == "." {
        tree
    } else {
        match tree.subtree(rel) {
            Ok(t) => t,
            Err(TreeError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(vec![format!(
                    "the repository has no directory {rel:?} at this commit"
                )])
            }
            Err(e) => return Err(vec![e.to_string()]),
        }
    };
    crate::declarative::read_platform_tree(&sub, limit)
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "gitops_not_found",
        format!("no GitOps source named {name:?}"),
    )
    .hint("list them with `berth gitops status`")
}

impl Platform {
    fn gitops_checkout(&self, name: &str) -> PathBuf {
        self.cfg.data_dir.join("gitops").join(name)
    }

    /// Every source.
    pub async fn gitops_sources(&self) -> Result<Vec<SourceRow>, ApiError> {
        let rows = sqlx::query("SELECT * FROM gitops_sources ORDER BY name")
            .fetch_all(&self.store.pool)
            .await?;
        Ok(rows.iter().map(row_of).collect::<Result<_, _>>()?)
    }

    async fn gitops_source(&self, name: &str) -> Result<Option<SourceRow>, ApiError> {
        let row = sqlx::query("SELECT * FROM gitops_sources WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.store.pool)
            .await?;
        Ok(row.as_ref().map(row_of).transpose()?)
    }

    /// The webhook secret of a source.
    pub async fn gitops_secret(
        &self,
        row: &SourceRow,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, ApiError> {
        self.open_webhook_secret(&context(&row.name), &row.sealed)
            .await
    }

    /// A source as shown, with its drift.
    pub async fn gitops_view(&self, row: &SourceRow) -> Result<GitopsView, ApiError> {
        let applied = row
            .last_outcome
            .as_deref()
            .is_some_and(|o| o.starts_with("applied"));
        let drift = if applied {
            let checkout = self.gitops_checkout(&row.name);
            let path = row.path.clone();
            let limit = self.cfg.upload_limit;
            let apps =
                tokio::task::spawn_blocking(move || read_definition(&checkout, &path, limit))
                    .await
                    .map_err(|e| ApiError::internal("reading the applied definition", e))?;
            match apps {
                Ok(apps) => self.plan_platform(&apps, row.prune).await?.changes,
                Err(_) => Vec::new(),
            }
        } else {
            Vec::new()
        };
        Ok(GitopsView {
            name: row.name.clone(),
            url: row.url.clone(),
            path: row.path.clone(),
            branch: row.branch.clone(),
            prune: row.prune,
            created_by: row.created_by.clone(),
            created_at: row.created_at,
            last_commit: row.last_commit.clone(),
            last_outcome: row.last_outcome.clone(),
            last_at: row.last_at,
            last_trigger: row.last_trigger.clone(),
            drift,
        })
    }

    /// Adds a source after checking its branch can be read; applies its head.
    pub async fn gitops_add(
        self: &Arc<Self>,
        req: &GitopsAdd,
        actor: &str,
    ) -> Result<GitopsAdded, ApiError> {
        use crate::git_connect::git_refused;
        berth_factory::git::check_url(&req.url).map_err(git_refused)?;
        berth_factory::git::check_ref(&req.branch).map_err(git_refused)?;
        let path = check_path(&req.path)?;
        let raw_name = req
            .name
            .clone()
            .or_else(|| berth_factory::git::suggested_app_name(&req.url))
            .unwrap_or_else(|| "platform".into());
        let name = berth_core::AppName::parse(&raw_name)
            .map_err(|e| {
                ApiError::invalid("invalid_name", format!("{raw_name:?}: {e}"))
                    .hint("name the source with --name (lowercase letters, digits, '-')")
            })?
            .to_string();
        if self.gitops_source(&name).await?.is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "gitops_exists",
                format!("a GitOps source named {name} exists"),
            )
            .hint("remove it first, or give another --name"));
        }
        let (url, branch) = (req.url.clone(), req.branch.clone());
        let head = tokio::task::spawn_blocking(move || {
            berth_factory::git::remote_head(&url, &branch, CHECK_TIMEOUT)
        })
        .await
        .map_err(|e| ApiError::internal("reading the repository", e))?
        .map_err(git_refused)?;
        let (secret, sealed) = self.new_webhook_secret(&context(&name)).await?;
        sqlx::query(
            "INSERT INTO gitops_sources (name, url, path, branch, prune, key_id, sealed_secret, created_by, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&name)
        .bind(&req.url)
        .bind(&path)
        .bind(&req.branch)
        .bind(i64::from(req.prune))
        .bind(&sealed.key_id)
        .bind(&sealed.data)
        .bind(actor)
        .bind(crate::now_secs())
        .execute(&self.store.pool)
        .await?;
        tracing::info!(%name, url = %req.url, %path, branch = %req.branch, %head, "GitOps source added");
        self.trigger_sync(name.clone(), head, "add");
        let row = self
            .gitops_source(&name)
            .await?
            .ok_or_else(|| ApiError::internal("adding", "the source vanished"))?;
        Ok(GitopsAdded {
            source: self.gitops_view(&row).await?,
            webhook_secret: secret,
        })
    }

    /// Removes a source (the apps it made stay).
    pub async fn gitops_remove(&self, name: &str) -> Result<(), ApiError> {
        let done = sqlx::query("DELETE FROM gitops_sources WHERE name = ?")
            .bind(name)
            .execute(&self.store.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found(name));
        }
        let _ = std::fs::remove_dir_all(self.gitops_checkout(name));
        Ok(())
    }

    async fn record_sync(
        &self,
        name: &str,
        commit: &str,
        outcome: &str,
        trigger: &str,
    ) -> Result<(), ApiError> {
        sqlx::query(
            "UPDATE gitops_sources SET last_commit = ?, last_outcome = ?, last_at = ?, last_trigger = ? WHERE name = ?",
        )
        .bind(commit)
        .bind(outcome)
        .bind(crate::now_secs())
        .bind(trigger)
        .bind(name)
        .execute(&self.store.pool)
        .await?;
        Ok(())
    }

    /// Applies `commit` (or the branch's newer head) of a source in the background.
    pub fn trigger_sync(self: &Arc<Self>, name: String, commit: String, trigger: &'static str) {
        let platform = self.clone();
        self.tasks.spawn(async move {
            if let Err(e) = platform.sync(&name, &commit, trigger).await {
                tracing::warn!(source = %name, %commit, %trigger, error = %e.message, "GitOps sync failed");
            }
        });
    }

    /// Fetches the branch and applies its definition, whole or not at all.
    pub async fn sync(
        self: &Arc<Self>,
        name: &str,
        commit: &str,
        trigger: &str,
    ) -> Result<(), ApiError> {
        let Some(src) = self.gitops_source(name).await? else {
            return Err(not_found(name));
        };
        if src.last_commit.as_deref() == Some(commit)
            && src.last_outcome.as_deref().is_some_and(|o| {
                o == "applying" || o.starts_with("applied") || o.starts_with("refused")
            })
        {
            return Ok(());
        }
        self.record_sync(name, commit, "applying", trigger).await?;
        // Beside the kept checkout, so that keeping it is a rename.
        let base = self.cfg.data_dir.join("gitops");
        std::fs::create_dir_all(&base).map_err(|e| ApiError::internal("a work directory", e))?;
        let work = tempfile::Builder::new()
            .prefix(".sync-")
            .tempdir_in(&base)
            .map_err(|e| ApiError::internal("a work directory", e))?;
        let checkout = work.path().join("checkout");
        let (url, branch, into) = (src.url.clone(), src.branch.clone(), checkout.clone());
        let fetched = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&into).map_err(|e| berth_factory::git::GitError::Fetch {
                url: url.clone(),
                git_ref: branch.clone(),
                detail: e.to_string(),
            })?;
            berth_factory::git::fetch(&url, &branch, &into, GIT_TIMEOUT)?;
            Ok::<_, berth_factory::git::GitError>((
                berth_factory::source::git_commit(&into),
                berth_factory::source::git_commit_time(&into),
            ))
        })
        .await
        .map_err(|e| ApiError::internal("fetching", e))?;
        let (sha, time) = match fetched {
            Ok((Some(sha), time)) => (sha, time),
            Ok((None, _)) => {
                let e = ApiError::internal("fetching", "the checkout names no commit");
                self.record_sync(name, commit, &format!("failed: {}", e.message), trigger)
                    .await?;
                return Err(e);
            }
            Err(e) => {
                let e = crate::git_connect::git_refused(e);
                self.record_sync(name, commit, &format!("failed: {}", e.message), trigger)
                    .await?;
                return Err(e);
            }
        };
        let limit = self.cfg.upload_limit;
        let (read_checkout, read_path) = (checkout.clone(), src.path.clone());
        let apps =
            tokio::task::spawn_blocking(move || read_definition(&read_checkout, &read_path, limit))
                .await
                .map_err(|e| ApiError::internal("reading the definition", e))?;
        let apps = match apps {
            Ok(apps) => apps,
            Err(problems) => {
                let outcome = format!("refused: {}", problems.join("; "));
                tracing::warn!(source = %name, commit = %sha, "{outcome}");
                self.record_sync(name, &sha, &outcome, trigger).await?;
                return Ok(());
            }
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let source_name = name.to_string();
        let drain = tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                if let berth_core::api::DeployEvent::Step { step } = event {
                    tracing::info!(source = %source_name, %step, "GitOps apply");
                }
            }
        });
        let result = self
            .apply_platform(
                apps,
                src.prune,
                format!("gitops:{trigger}"),
                Some((sha.clone(), time)),
                tx,
            )
            .await;
        let _ = drain.await;
        match result {
            Ok(summary) => {
                keep_checkout(&checkout, &self.gitops_checkout(name));
                tracing::info!(source = %name, commit = %sha, "{summary}");
                self.record_sync(name, &sha, &summary, trigger).await
            }
            Err(f) => {
                let outcome = format!("failed: {}", f.error.message);
                self.record_sync(name, &sha, &outcome, trigger).await?;
                Err(f.error)
            }
        }
    }

    /// One poll of every source's branch.
    pub async fn poll_gitops(self: &Arc<Self>) -> Result<(), ApiError> {
        for src in self.gitops_sources().await? {
            let (url, branch) = (src.url.clone(), src.branch.clone());
            let head = tokio::task::spawn_blocking(move || {
                berth_factory::git::remote_head(&url, &branch, GIT_TIMEOUT)
            })
            .await
            .map_err(|e| ApiError::internal("polling", e))?;
            match head {
                Ok(head) if src.last_commit.as_deref() != Some(head.as_str()) => {
                    if let Err(e) = self.sync(&src.name, &head, "poll").await {
                        tracing::warn!(source = %src.name, error = %e.message, "GitOps sync failed");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(source = %src.name, error = %e, "polling the repository failed")
                }
            }
        }
        Ok(())
    }

    /// Re-seals every GitOps webhook secret under the ring's active key.
    pub async fn reseal_gitops_secrets(&self, ring: &Keyring) -> Result<usize, ApiError> {
        let rows: Vec<(String, Sealed)> = self
            .gitops_sources()
            .await?
            .into_iter()
            .map(|r| (r.name, r.sealed))
            .collect();
        self.reseal_secrets_of("gitops_sources", "name", context, rows, ring)
            .await
    }
}

/// Keeps the applied checkout (for drift), replacing the one before.
fn keep_checkout(from: &Path, to: &Path) {
    if let Some(parent) = to.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let _ = std::fs::remove_dir_all(to);
    if std::fs::rename(from, to).is_err() {
        tracing::warn!(to = %to.display(), "keeping the applied checkout failed; drift is not shown");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_definition_path_that_is_a_link_is_refused_never_followed() {
        let checkout = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(checkout.path().join("apps/web")).unwrap();
        std::fs::write(checkout.path().join("apps/web/index.html"), "hi").unwrap();
        // `platform -> /`: the host's directories would read as apps.
        symlink("/", checkout.path().join("platform")).unwrap();
        let problems = read_definition(checkout.path(), "platform", 1 << 20).unwrap_err();
        assert!(problems[0].contains("platform"), "{problems:?}");
        let problems = read_definition(checkout.path(), "missing/", 1 << 20).unwrap_err();
        assert!(problems[0].contains("no directory"), "{problems:?}");
        let apps = read_definition(checkout.path(), "apps", 1 << 20).unwrap();
        assert_eq!(apps.len(), 1);
    }

    #[test]
    fn an_apps_berth_toml_linked_out_is_refused_by_name_and_not_echoed() {
        let checkout = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "TOP-SECRET = [").unwrap();
        std::fs::create_dir_all(checkout.path().join("apps/web")).unwrap();
        std::fs::write(checkout.path().join("apps/web/index.html"), "hi").unwrap();
        symlink(
            outside.path().join("secret"),
            checkout.path().join("apps/web/berth.toml"),
        )
        .unwrap();
        // An app directory that is a link is not an app.
        symlink("/etc", checkout.path().join("apps/etc")).unwrap();
        let problems = read_definition(checkout.path(), "apps", 1 << 20).unwrap_err();
        let all = problems.join("; ");
        assert!(all.contains("web/") && all.contains("berth.toml"), "{all}");
        assert!(!all.contains("TOP-SECRET") && !all.contains("etc"), "{all}");
    }
}

//! The declarative platform: a directory with one subdirectory per app (its source and
//! berth.toml) planned against what runs and applied. What the last apply deployed of each
//! app — its berth.toml, the digest of its code, the release it made — is kept in
//! `declared_apps`, so a plan says exactly what changed (berth.toml field by field, the
//! code as a whole) and notices drift: a release made outside the definition (a deploy,
//! scale, env change or rollback by hand) is undone by the next apply. Everything is read
//! and checked before anything changes; `--prune` removes apps an earlier apply made that
//! the definition no longer has, never an app made by hand.

use crate::deploy::{DeployFailure, Events, SourceRef};
use crate::error::ApiError;
use crate::platform::Platform;
use berth_core::api::DeployEvent;
use berth_core::declare::{diff, flatten, AppChange, FieldChange, PlanView};
use berth_core::spec::BerthToml;
use berth_core::AppName;
use sqlx::Row;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// One app of a platform definition, read and checked.
#[derive(Debug, Clone)]
pub struct DeclaredApp {
    pub name: AppName,
    /// Its directory, relative to the definition's root.
    pub dir: String,
    pub archive: Vec<u8>,
    pub toml_text: String,
    pub toml: BerthToml,
    /// berth.toml flattened.
    pub fields: BTreeMap<String, String>,
    /// Digest of everything but berth.toml.
    pub code: String,
}

/// What the last apply deployed of an app.
#[derive(Debug, Clone)]
struct AppliedRow {
    berth_toml: String,
    code: String,
    release: i64,
}

/// Reads every app directory under `root`; every problem at once, each naming its file.
pub fn read_platform(root: &Path, limit: u64) -> Result<Vec<DeclaredApp>, Vec<String>> {
    match berth_factory::tree::SourceTree::open(root) {
        Ok(tree) => read_platform_tree(&tree, limit),
        Err(e) => Err(vec![e.to_string()]),
    }
}

/// Reads every app directory of `tree`: apps are its directories (never links), their
/// berth.toml and score.yaml read beneath them (regular files of at most 1 MiB; a link out
/// of the definition is refused by name, never followed).
pub fn read_platform_tree(
    tree: &berth_factory::tree::SourceTree,
    limit: u64,
) -> Result<Vec<DeclaredApp>, Vec<String>> {
    use berth_factory::tree::Kind;
    let root = tree.path();
    let mut problems = Vec::new();
    let mut dirs: Vec<String> = match tree.read_dir("") {
        Ok(entries) => entries
            .into_iter()
            .filter(|(name, kind)| *kind == Kind::Dir && !name.starts_with('.'))
            .map(|(name, _)| name)
            .collect(),
        Err(e) => return Err(vec![format!("{}: {e}", root.display())]),
    };
    dirs.sort();
    let mut apps: Vec<DeclaredApp> = Vec::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for rel in dirs {
        let app_tree = match tree.subtree(&rel) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{rel}: {e}"));
                continue;
            }
        };
        let dir = app_tree.path().to_path_buf();
        let toml_text = match app_tree.read_spec("berth.toml") {
            Ok(text) => text.unwrap_or_default(),
            Err(e) => {
                problems.push(format!("{rel}/: {e}"));
                continue;
            }
        };
        let toml = match BerthToml::parse(&toml_text) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{rel}/berth.toml: {e}"));
                continue;
            }
        };
        // A score.yaml is part of the definition: planned field by field under `score.`.
        let score_doc = match app_tree.read_spec("score.yaml") {
            Ok(Some(text)) => match serde_yaml_ng::from_str::<serde_json::Value>(&text)
                .map_err(|e| e.to_string())
                .and_then(|v| toml::Value::try_from(v).map_err(|e| e.to_string()))
            {
                Ok(v) => Some(v),
                Err(e) => {
                    problems.push(format!("{rel}/score.yaml: {e}"));
                    continue;
                }
            },
            Ok(None) => None,
            Err(e) => {
                problems.push(format!("{rel}/: {e}"));
                continue;
            }
        };
        let score_name = score_doc
            .as_ref()
            .and_then(|d| d.get("metadata")?.get("name")?.as_str().map(str::to_string));
        let raw_name = toml
            .name
            .clone()
            .or(score_name)
            .unwrap_or_else(|| rel.clone());
        let name = match AppName::parse(&raw_name) {
            Ok(n) => n,
            Err(e) => {
                problems.push(format!(
                    "{rel}: {e} (the app is named by berth.toml's name, else its directory)"
                ));
                continue;
            }
        };
        if let Some(other) = seen.insert(name.to_string(), rel.clone()) {
            problems.push(format!(
                "{other}/ and {rel}/ are both app {name}: an app is declared once"
            ));
            continue;
        }
        let archive = match berth_factory::source::pack(&dir, limit) {
            Ok(a) => a,
            Err(e) => {
                problems.push(format!("{rel}: {e}"));
                continue;
            }
        };
        // app.json fills in what berth.toml leaves unset.
        let toml = match crate::deploy::spec_of(&archive) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{rel}: {}", e.message));
                continue;
            }
        };
        let code =
            match berth_factory::source::digest_except(&archive, &["berth.toml", "score.yaml"]) {
                Ok(c) => c,
                Err(e) => {
                    problems.push(format!("{rel}: {e}"));
                    continue;
                }
            };
        let mut value: toml::Value =
            toml::from_str(&toml_text).unwrap_or(toml::Value::Table(Default::default()));
        let toml_text = match (score_doc, value.as_table_mut()) {
            (Some(doc), Some(table)) => {
                table.insert("score".into(), doc);
                toml::to_string(&value).unwrap_or(toml_text)
            }
            _ => toml_text,
        };
        apps.push(DeclaredApp {
            name,
            dir: rel,
            archive,
            toml_text,
            toml,
            fields: flatten(&value),
            code,
        });
    }
    if apps.is_empty() && problems.is_empty() {
        problems.push(format!(
            "{} holds no app directories: give each app a directory with its source and berth.toml",
            root.display()
        ));
    }
    if problems.is_empty() {
        Ok(apps)
    } else {
        Err(problems)
    }
}

fn short(digest: &str) -> String {
    digest
        .trim_start_matches("sha256-")
        .chars()
        .take(12)
        .collect()
}

fn flat_of(text: &str) -> BTreeMap<String, String> {
    toml::from_str::<toml::Value>(text)
        .map(|v| flatten(&v))
        .unwrap_or_default()
}

impl Platform {
    async fn applied_rows(&self) -> Result<BTreeMap<String, AppliedRow>, ApiError> {
        let rows = sqlx::query("SELECT * FROM declared_apps")
            .fetch_all(&self.store.pool)
            .await?;
        let mut out = BTreeMap::new();
        for r in rows {
            out.insert(
                r.try_get::<String, _>("app")?,
                AppliedRow {
                    berth_toml: r.try_get("berth_toml")?,
                    code: r.try_get("code_digest")?,
                    release: r.try_get("release")?,
                },
            );
        }
        Ok(out)
    }

    /// What applying `apps` would change.
    pub async fn plan_platform(
        &self,
        apps: &[DeclaredApp],
        prune: bool,
    ) -> Result<PlanView, ApiError> {
        let applied = self.applied_rows().await?;
        let mut changes = Vec::new();
        let mut unchanged = Vec::new();
        for app in apps {
            let current = self.store.app(app.name.as_str()).await?;
            let added = |fields: &BTreeMap<String, String>| -> Vec<FieldChange> {
                diff(&BTreeMap::new(), fields)
            };
            let (action, mut fields) = match (&current, applied.get(app.name.as_str())) {
                (None, _) => ("create", added(&app.fields)),
                (Some(_), None) => ("adopt", added(&app.fields)),
                (Some(cur), Some(row)) => {
                    let mut fields = diff(&flat_of(&row.berth_toml), &app.fields);
                    if row.code != app.code {
                        fields.push(FieldChange {
                            field: "source".into(),
                            before: Some(short(&row.code)),
                            after: Some(short(&app.code)),
                        });
                    }
                    let serving = cur.current_release.map_or(0, i64::from);
                    if serving != row.release {
                        let by = match cur.current_release {
                            Some(v) => self
                                .store
                                .release(app.name.as_str(), v)
                                .await?
                                .map(|r| format!("v{v}: {} by {}", r.description, r.actor))
                                .unwrap_or_else(|| format!("v{v}")),
                            None => "nothing serving".into(),
                        };
                        fields.push(FieldChange {
                            field: "release".into(),
                            before: Some(format!("{by} (made outside the definition)")),
                            after: Some(format!("v{} as declared", row.release)),
                        });
                    }
                    ("update", fields)
                }
            };
            // Variables set with `berth env` outlive deploys: on a declared app they are drift
            // the apply removes (berth.toml's [env] is the definition).
            if let Some(cur) = &current {
                for (k, v) in &cur.env {
                    let field = format!("env.{k}");
                    fields.retain(|f| f.field != field);
                    fields.push(FieldChange {
                        before: Some(format!("{:?} (set with berth env)", v)),
                        after: app.fields.get(&field).cloned(),
                        field,
                    });
                }
            }
            if action != "update" || !fields.is_empty() {
                if action != "update" {
                    fields.push(FieldChange {
                        field: "source".into(),
                        before: None,
                        after: Some(short(&app.code)),
                    });
                }
                changes.push(AppChange {
                    app: app.name.to_string(),
                    action: action.into(),
                    dir: Some(app.dir.clone()),
                    fields,
                });
            } else {
                unchanged.push(app.name.to_string());
            }
        }
        if prune {
            for name in applied.keys() {
                if apps.iter().any(|a| a.name.as_str() == name) {
                    continue;
                }
                if self.store.app(name).await?.is_some() {
                    changes.push(AppChange {
                        app: name.clone(),
                        action: "delete".into(),
                        dir: None,
                        fields: Vec::new(),
                    });
                }
            }
        }
        Ok(PlanView { changes, unchanged })
    }

    /// Applies `apps`: each change of the plan in order (deletes last). Stops at the first
    /// failure, saying what was applied before it and what was not attempted. `commit`:
    /// the commit (and its time) the definition comes from, which the releases record.
    pub async fn apply_platform(
        self: &Arc<Self>,
        apps: Vec<DeclaredApp>,
        prune: bool,
        actor: String,
        commit: Option<(String, Option<i64>)>,
        events: Events,
    ) -> Result<String, DeployFailure> {
        let plan = self.plan_platform(&apps, prune).await?;
        let mut done: Vec<String> = Vec::new();
        let total = plan.changes.len();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, change) in plan.changes.iter().enumerate() {
            let _ = events.send(DeployEvent::Step {
                step: format!("{} {} ({}/{total})", change.action, change.app, i + 1),
            });
            let result: Result<(), DeployFailure> = if change.action == "delete" {
                match self.destroy(&change.app).await {
                    Ok(()) => self.forget_declared(&change.app).await.map_err(Into::into),
                    Err(e) => Err(e.into()),
                }
            } else {
                let Some(app) = apps.iter().find(|a| a.name.as_str() == change.app) else {
                    continue;
                };
                self.apply_app(app, &actor, commit.as_ref(), &events).await
            };
            if let Err(mut f) = result {
                let rest: Vec<&str> = plan.changes[i + 1..]
                    .iter()
                    .map(|c| c.app.as_str())
                    .collect();
                f.error.message = format!(
                    "applying {} ({}) failed: {}; applied before it: {}; not attempted: {}",
                    change.app,
                    change.action,
                    f.error.message,
                    if done.is_empty() {
                        "none".into()
                    } else {
                        done.join(", ")
                    },
                    if rest.is_empty() {
                        "none".into()
                    } else {
                        rest.join(", ")
                    },
                );
                return Err(f);
            }
            *counts.entry(change.action.as_str()).or_default() += 1;
            done.push(change.app.clone());
        }
        if total == 0 {
            return Ok(format!(
                "no changes: {} app(s) are as declared",
                plan.unchanged.len()
            ));
        }
        let summary: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
        Ok(format!(
            "applied: {}; {} unchanged",
            summary.join(", "),
            plan.unchanged.len()
        ))
    }

    async fn apply_app(
        self: &Arc<Self>,
        app: &DeclaredApp,
        actor: &str,
        commit: Option<&(String, Option<i64>)>,
        events: &Events,
    ) -> Result<(), DeployFailure> {
        // The definition's [env] is the app's environment: what `berth env` set goes.
        if self.store.app(app.name.as_str()).await?.is_some() {
            self.store
                .set_app_env(app.name.as_str(), &BTreeMap::new())
                .await
                .map_err(ApiError::from)?;
        }
        let (source, commit_time) = match commit {
            Some((sha, time)) => (sha.clone(), *time),
            None => (berth_factory::source::content_id(&app.archive), None),
        };
        let version = self
            .deploy_archive(
                &app.name,
                bytes::Bytes::from(app.archive.clone()),
                app.toml.clone(),
                source,
                commit_time,
                None,
                actor.to_string(),
                events.clone(),
            )
            .await?;
        sqlx::query(
            "INSERT INTO declared_apps (app, dir, berth_toml, code_digest, release, applied_at) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (app) DO UPDATE SET dir = excluded.dir, berth_toml = excluded.berth_toml, \
             code_digest = excluded.code_digest, release = excluded.release, applied_at = excluded.applied_at",
        )
        .bind(app.name.as_str())
        .bind(&app.dir)
        .bind(&app.toml_text)
        .bind(&app.code)
        .bind(i64::from(version))
        .bind(crate::now_secs())
        .execute(&self.store.pool)
        .await
        .map_err(ApiError::from)?;
        Ok(())
    }

    async fn forget_declared(&self, app: &str) -> Result<(), ApiError> {
        sqlx::query("DELETE FROM declared_apps WHERE app = ?")
            .bind(app)
            .execute(&self.store.pool)
            .await?;
        Ok(())
    }

    /// Deploys a packed source as `actor` — what an upload does, for sources the platform
    /// holds itself (a fetched commit, a platform definition). The release's version.
    #[allow(clippy::too_many_arguments)]
    pub async fn deploy_archive(
        self: &Arc<Self>,
        name: &AppName,
        archive: bytes::Bytes,
        toml: BerthToml,
        source_id: String,
        commit_time: Option<i64>,
        project: Option<&str>,
        actor: String,
        events: Events,
    ) -> Result<u32, DeployFailure> {
        let project = crate::api::deploy_checks(self, name, project, &None, &toml).await?;
        let (version, _url) = self
            .deploy_source(
                name.clone(),
                archive,
                SourceRef {
                    id: source_id,
                    commit_time,
                    project,
                },
                toml,
                actor,
                events,
            )
            .await?;
        Ok(version)
    }
}

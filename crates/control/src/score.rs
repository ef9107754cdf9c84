//! A score.yaml's resources provided and its variables resolved, before the build: the
//! app's database (`postgres`), its volumes mounted where the container says (`volume`),
//! its host name (`dns`), a domain routed to it (`route`) and its own variables and secrets
//! (`environment`). What exists already is used as it is; everything is checked before
//! anything is made, so a placeholder that resolves to nothing changes nothing. A variable
//! whose value comes from a secret (the database password, an app secret) becomes one of
//! the app's secrets, sealed at rest and redacted from logs; the others are plain
//! environment.

use crate::databases::{database_url_parts, DATABASE_URL};
use crate::deploy::{DeployFailure, Events};
use crate::error::ApiError;
use crate::platform::Platform;
use berth_core::domains::DomainAdd;
use berth_core::score::{Resource, Score, Template};
use berth_core::spec::BerthToml;
use berth_core::state::{SecretChange, VolumeCreate};
use berth_core::AppName;
use std::collections::BTreeMap;
use std::sync::Arc;

fn unresolved(message: String) -> ApiError {
    ApiError::invalid("score_unresolved", message)
        .hint("set what it names (berth env set / berth secrets set) or fix score.yaml, then deploy again")
}

impl Platform {
    /// Provides the resources of `score` for `app` (made in `project` when new) and answers
    /// the variables that are plain environment.
    pub(crate) async fn provide_score(
        self: &Arc<Self>,
        app: &AppName,
        project: &str,
        score: &Score,
        toml: &BerthToml,
        actor: &str,
        events: &Events,
    ) -> Result<BTreeMap<String, String>, DeployFailure> {
        let name = app.as_str();
        // Everything is checked before anything is made.
        let env = self
            .store
            .app(name)
            .await?
            .map(|a| a.env)
            .unwrap_or_default();
        let secrets = self.store.app_secrets(name).await?;
        let pending: Vec<(&String, &Template)> = score.pending_variables(toml).collect();
        let hosts: Vec<(&String, &Template)> = score
            .resources
            .iter()
            .filter_map(|(n, r)| match r {
                Resource::Route { host, .. } => Some((n, host)),
                _ => None,
            })
            .collect();
        for (field, t) in pending
            .iter()
            .map(|(k, t)| (format!("variables.{k}"), *t))
            .chain(
                hosts
                    .iter()
                    .map(|(n, t)| (format!("resources.{n}.params.host"), *t)),
            )
        {
            for r in t.refs() {
                let is_environment = r.len() == 3
                    && matches!(score.resources.get(&r[1]), Some(Resource::Environment));
                if is_environment && !env.contains_key(&r[2]) && !secrets.contains_key(&r[2]) {
                    return Err(unresolved(format!(
                        "score.yaml: {field}: ${{{}}} resolves to nothing: {name} has no variable or secret {}",
                        r.join("."),
                        r[2]
                    ))
                    .into());
                }
            }
        }
        let volumes = self.store.volumes(Some(name)).await?;
        for m in &score.mounts {
            if let Some(v) = volumes.iter().find(|v| v.name == m.resource) {
                if v.mount_path != m.target {
                    return Err(ApiError::invalid(
                        "score_volume_moved",
                        format!(
                            "score.yaml mounts volume {} at {}, and {name} has it at {}",
                            m.resource, m.target, v.mount_path
                        ),
                    )
                    .hint("mount it where it is, or move its data yourself: a volume does not move")
                    .into());
                }
            }
        }
        self.store
            .ensure_app_in(name, project, crate::now_secs())
            .await?;
        for m in &score.mounts {
            if volumes.iter().any(|v| v.name == m.resource) {
                continue;
            }
            let size = match score.resources.get(&m.resource) {
                Some(Resource::Volume { size }) => size.clone(),
                _ => berth_core::score::DEFAULT_VOLUME_SIZE.into(),
            };
            let req = VolumeCreate {
                name: m.resource.clone(),
                size,
                mount: m.target.clone(),
                exclusive: false,
            };
            self.create_volume(name, req, actor.into(), events.clone())
                .await?;
        }
        let wants_database = score.resources.values().any(|r| *r == Resource::Postgres);
        if wants_database && !self.store.databases().await?.contains_key(name) {
            self.create_database(name, actor.into(), events.clone())
                .await?;
        }
        let database = match self.open_secret(name, DATABASE_URL).await? {
            Some(url) if wants_database => database_url_parts(&String::from_utf8_lossy(&url)),
            _ => None,
        };
        let host = self
            .cfg
            .app_hosts(name)
            .pop()
            .unwrap_or_else(|| format!("{name}.localhost"));
        let mut opened: BTreeMap<String, Option<String>> = BTreeMap::new();
        for (_, t) in &pending {
            for r in t.refs() {
                if r.len() == 3 && secrets.contains_key(&r[2]) && !env.contains_key(&r[2]) {
                    let value = self
                        .open_secret(name, &r[2])
                        .await?
                        .map(|v| String::from_utf8_lossy(&v).to_string());
                    opened.insert(r[2].clone(), value);
                }
            }
        }
        let lookup = |r: &[String]| -> Option<(String, bool)> {
            let (res, out) = (r.get(1)?, r.get(2)?);
            match score.resources.get(res)? {
                Resource::Postgres => {
                    let db = database.as_ref()?;
                    let value = match out.as_str() {
                        "host" => db.host.clone(),
                        "port" => db.port.clone(),
                        "name" | "database" => db.database.clone(),
                        "username" => db.role.clone(),
                        "password" => return Some((db.password.clone(), true)),
                        _ => return None,
                    };
                    Some((value, false))
                }
                Resource::Dns => (out == "host").then(|| (host.clone(), false)),
                Resource::Environment => match env.get(out.as_str()) {
                    Some(v) => Some((v.clone(), false)),
                    None => opened
                        .get(out.as_str())
                        .cloned()
                        .flatten()
                        .map(|v| (v, true)),
                },
                Resource::Volume { .. } | Resource::Route { .. } => None,
            }
        };
        for (res, t) in &hosts {
            let (domain, _) = t
                .resolve(&lookup)
                .map_err(|e| unresolved(format!("score.yaml: resources.{res}.params.host: {e}")))?;
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            let known = self.cfg.app_hosts(name).contains(&domain)
                || self
                    .list_domains(name)
                    .await?
                    .iter()
                    .any(|d| d.name == domain);
            if !known {
                self.add_domain(
                    name,
                    &DomainAdd {
                        name: domain,
                        https_redirect: true,
                    },
                )
                .await?;
            }
        }
        let mut plain = BTreeMap::new();
        let mut sealed = BTreeMap::new();
        for (k, t) in &pending {
            let (value, secret) = t
                .resolve(&lookup)
                .map_err(|e| unresolved(format!("score.yaml: variables.{k}: {e}")))?;
            if secret {
                sealed.insert((*k).clone(), value);
            } else {
                plain.insert((*k).clone(), value);
            }
        }
        // Only what changed is sealed again (an unchanged secret makes no release).
        let mut change = SecretChange {
            set: BTreeMap::new(),
            unset: vec![],
            build: false,
        };
        for (k, v) in sealed {
            let now = self.open_secret(name, &k).await?;
            if now.as_ref().map(|n| n.as_slice()) != Some(v.as_bytes()) {
                change.set.insert(k, v);
            }
        }
        if !change.set.is_empty() {
            self.change_secrets(name, change, actor.into(), events.clone())
                .await?;
        }
        Ok(plain)
    }
}

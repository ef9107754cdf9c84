//! A declared app (its berth.toml and Procfile) as the cluster needs it.

use crate::render::{KubeApp, KubeDatabase, KubeProcess, KubeVolume};
use berth_core::score::{Part, Resource, Score, Template};
use berth_core::spec::BerthToml;
use std::collections::BTreeMap;

/// The port apps listen on unless berth.toml says otherwise (as on berth's own runtime).
pub const DEFAULT_PORT: u16 = 8000;

/// The disk of an app's database.
pub const DATABASE_SIZE: u64 = 1 << 30;

/// A score.yaml variable as the pods' value: `${resources.DB.OUTPUT}` of the app's
/// postgres as `$(BERTH_DB_…)` (the kubelet expands it from the database's Secret), `dns`'s
/// host as the app's host; a literal `$(` is escaped.
fn cluster_value(template: &Template, score: &Score, hosts: &[String]) -> Result<String, String> {
    let mut out = String::new();
    for part in &template.0 {
        match part {
            Part::Text(t) => out.push_str(&t.replace("$(", "$$(")),
            Part::Ref(path) => {
                let resource = match path.as_slice() {
                    [r, name, output] if r == "resources" => {
                        score.resources.get(name).map(|res| (res, output.as_str()))
                    }
                    _ => None,
                };
                let value = match resource {
                    Some((Resource::Postgres, output)) => match output {
                        "host" => Some("$(BERTH_DB_HOST)".to_string()),
                        "port" => Some("$(BERTH_DB_PORT)".to_string()),
                        "name" | "database" => Some("$(BERTH_DB_NAME)".to_string()),
                        "username" => Some("$(BERTH_DB_USERNAME)".to_string()),
                        "password" => Some("$(BERTH_DB_PASSWORD)".to_string()),
                        _ => None,
                    },
                    Some((Resource::Dns, "host")) => hosts.first().cloned(),
                    _ => None,
                };
                match value {
                    Some(v) => out.push_str(&v),
                    None => {
                        return Err(format!(
                            "${{{}}} has no value in a cluster (a database's connection and the app's host do; secrets are set with `berth secrets set` on a platform that runs apps in the cluster)",
                            path.join(".")
                        ))
                    }
                }
            }
        }
    }
    Ok(out)
}

/// What a declared app renders from.
pub struct Declared<'a> {
    pub name: &'a str,
    /// Its project's namespace.
    pub namespace: &'a str,
    pub image: String,
    pub toml: &'a BerthToml,
    /// The Procfile's process types and commands.
    pub procfile: BTreeMap<String, String>,
    /// Host names the app answers to.
    pub hosts: Vec<String>,
    /// The StorageClass of its volumes' claims (none: the cluster's default).
    pub storage_class: Option<String>,
}

/// The app, or every problem with it (each naming its field).
pub fn kube_app(d: Declared) -> Result<KubeApp, Vec<String>> {
    let mut kinds: Vec<String> = d.procfile.keys().cloned().collect();
    kinds.extend(d.toml.processes.keys().cloned());
    kinds.sort();
    kinds.dedup();
    if kinds.is_empty() {
        // Nothing declared: web, with the command the build (or the image) sets.
        kinds.push("web".into());
    }
    let mut problems = Vec::new();
    let mut processes = BTreeMap::new();
    for kind in kinds {
        let declared = d.toml.processes.get(&kind);
        let limits = match d.toml.limits(&kind) {
            Ok(l) => l,
            Err(p) => {
                problems.extend(p);
                continue;
            }
        };
        processes.insert(
            kind.clone(),
            KubeProcess {
                command: declared
                    .and_then(|p| p.command.clone())
                    .or_else(|| d.procfile.get(&kind).cloned()),
                instances: declared.and_then(|p| p.instances).unwrap_or(1),
                limits,
            },
        );
    }
    // A score.yaml's volumes: a claim each, mounted where its container says.
    let mut volumes = Vec::new();
    if let Some(score) = &d.toml.score {
        for m in &score.mounts {
            if let Some(Resource::Volume { size }) = score.resources.get(&m.resource) {
                match berth_core::state::parse_volume_size(size) {
                    Ok(size_bytes) => volumes.push(KubeVolume {
                        name: m.resource.clone(),
                        mount: m.target.clone(),
                        size_bytes,
                        storage_class: d.storage_class.clone(),
                    }),
                    Err(e) => problems.push(format!("score.yaml: resources.{}: {e}", m.resource)),
                }
            }
        }
    }
    // A score.yaml's postgres: the app's database, its connection in the variables.
    let mut database = None;
    let mut derived_env = BTreeMap::new();
    if let Some(score) = &d.toml.score {
        if score
            .resources
            .values()
            .any(|r| matches!(r, Resource::Postgres))
        {
            database = Some(KubeDatabase {
                size_bytes: DATABASE_SIZE,
                storage_class: d.storage_class.clone(),
            });
        }
        for (var, template) in score.pending_variables(d.toml) {
            match cluster_value(template, score, &d.hosts) {
                Ok(v) => {
                    derived_env.insert(var.clone(), v);
                }
                Err(e) => problems.push(format!("score.yaml: variables.{var}: {e}")),
            }
        }
    }
    let metrics_path = d.toml.metrics.path.clone();
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(KubeApp {
        name: d.name.to_string(),
        namespace: d.namespace.to_string(),
        image: d.image,
        port: d.toml.port.unwrap_or(DEFAULT_PORT),
        processes,
        env: d.toml.env.clone(),
        has_secrets: !d.toml.required_env.is_empty(),
        secret_files: d.toml.secrets.files.clone(),
        volumes,
        hosts: d.hosts,
        isolation: d.toml.isolation().unwrap_or_default(),
        health_path: d.toml.health_check().path,
        canary: d.toml.canary(),
        secrets_version: None,
        pull_secret: None,
        database,
        slo: d.toml.slo(),
        metrics_path,
        derived_env,
    })
}

//! A declared app (its berth.toml and Procfile) as the cluster needs it.

use crate::render::{KubeApp, KubeProcess, KubeVolume};
use berth_core::score::Resource;
use berth_core::spec::BerthToml;
use std::collections::BTreeMap;

/// The port apps listen on unless berth.toml says otherwise (as on berth's own runtime).
pub const DEFAULT_PORT: u16 = 8000;

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
                    }),
                    Err(e) => problems.push(format!("score.yaml: resources.{}: {e}", m.resource)),
                }
            }
        }
    }
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
    })
}

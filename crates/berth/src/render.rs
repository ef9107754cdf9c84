//! `berth render -f DIR --out OUT`: a platform definition (one directory per app, as `berth
//! plan` reads it) as Kubernetes objects in a kustomize tree, for Argo CD or Flux — read and
//! checked whole first; nothing is written when an app has a problem.

use crate::cli::Global;
use crate::output;
use anyhow::{anyhow, Result};
use berth_kube::spec::{kube_app, Declared};
use std::path::Path;

/// What `berth render` is told besides the directories.
pub struct RenderArgs<'a> {
    pub dir: &'a Path,
    pub out: &'a Path,
    pub project: &'a str,
    pub base_domain: &'a str,
    pub registry: &'a str,
}

pub fn render(g: &Global, a: RenderArgs) -> Result<i32> {
    if !a.dir.is_dir() {
        return Err(anyhow!("{} is not a directory", a.dir.display()));
    }
    berth_core::projects::check_project_name(a.project).map_err(|e| anyhow!("--project: {e}"))?;
    let declared = berth_control::declarative::read_platform(
        a.dir,
        berth_factory::source::DEFAULT_UPLOAD_LIMIT,
    )
    .map_err(|p| {
        anyhow!(
            "{} is not a valid platform definition:\n  {}",
            a.dir.display(),
            p.join("\n  ")
        )
    })?;
    let mut objects = berth_kube::project_objects(a.project);
    let mut problems = Vec::new();
    for app in &declared {
        let name = app.name.as_str();
        // app.json and score.yaml fill in what berth.toml leaves unset, as on deploy.
        let toml = match berth_control::deploy::spec_of(&app.archive) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{}/: {}", app.dir, e.message));
                continue;
            }
        };
        let procfile = match berth_factory::source::read_file(&app.archive, "Procfile") {
            Ok(Some(text)) => match berth_core::procfile::parse(&text) {
                Ok(p) => p,
                Err(e) => {
                    problems.push(format!("{}/Procfile: {e}", app.dir));
                    continue;
                }
            },
            Ok(None) => Default::default(),
            Err(e) => {
                problems.push(format!("{}/: {e}", app.dir));
                continue;
            }
        };
        let image = match &toml.image {
            Some(i) => i.clone(),
            None => format!(
                "{}/{name}:{}",
                a.registry.trim_end_matches('/'),
                app.code.get(..12).unwrap_or(&app.code)
            ),
        };
        match kube_app(Declared {
            name,
            project: a.project,
            image,
            toml: &toml,
            procfile,
            hosts: vec![format!("{name}.{}", a.base_domain)],
        }) {
            Ok(k) => objects.extend(berth_kube::app_objects(&k)),
            Err(p) => problems.extend(p.into_iter().map(|p| format!("{}/: {p}", app.dir))),
        }
    }
    if !problems.is_empty() {
        return Err(anyhow!(
            "nothing was written; fix these first:\n  {}",
            problems.join("\n  ")
        ));
    }
    berth_kube::kustomize::write_tree(a.out, &objects)?;
    if g.json {
        let list: Vec<_> = objects
            .iter()
            .map(|m| {
                serde_json::json!({
                    "apiVersion": m.api_version,
                    "kind": m.kind,
                    "namespace": m.namespace,
                    "name": m.name,
                })
            })
            .collect();
        output::json(&list);
    } else {
        for m in &objects {
            println!(
                "{:<22} {}{}",
                m.kind,
                m.namespace
                    .as_deref()
                    .map(|n| format!("{n}/"))
                    .unwrap_or_default(),
                m.name
            );
        }
        println!(
            "{} objects of {} app(s) in {}; apply with: kubectl apply --server-side --field-manager berth -k {}",
            objects.len(),
            declared.len(),
            a.out.display(),
            a.out.join(berth_kube::kustomize::OVERLAY).display()
        );
    }
    Ok(0)
}

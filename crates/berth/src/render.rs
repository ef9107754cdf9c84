//! `berth render -f DIR --out OUT`: a platform definition (one directory per app, as `berth
//! plan` reads it) as Kubernetes objects in a kustomize tree, for Argo CD or Flux; `berth
//! kube plan|apply -f DIR`: the same objects compared with a cluster and applied to it. The
//! definition is read and checked whole first: nothing is done when an app has a problem.

use crate::cli::{ClusterTarget, Definition, Global, KubeCommand};
use crate::output;
use anyhow::{anyhow, Result};
use berth_kube::cluster::Cluster;
use berth_kube::spec::{kube_app, Declared};
use berth_kube::stack::{apply_stack, GitSource, Stack};
use berth_kube::{KubeApp, Manifest};
use std::path::Path;

/// Every app DIR declares, read and checked whole, with its project's namespace.
fn apps_of(d: &Definition) -> Result<(String, Vec<KubeApp>)> {
    let dir = d.dir.as_path();
    if !dir.is_dir() {
        return Err(anyhow!("{} is not a directory", dir.display()));
    }
    berth_core::projects::check_project_name(&d.project).map_err(|e| anyhow!("--project: {e}"))?;
    let namespace = berth_kube::namespace_of(&d.project).map_err(|e| anyhow!("--project: {e}"))?;
    let declared =
        berth_control::declarative::read_platform(dir, berth_factory::source::DEFAULT_UPLOAD_LIMIT)
            .map_err(|p| {
                anyhow!(
                    "{} is not a valid platform definition:\n  {}",
                    dir.display(),
                    p.join("\n  ")
                )
            })?;
    let mut apps = Vec::new();
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
                d.registry.trim_end_matches('/'),
                app.code.get(..12).unwrap_or(&app.code)
            ),
        };
        match kube_app(Declared {
            name,
            namespace: &namespace,
            image,
            toml: &toml,
            procfile,
            hosts: vec![format!("{name}.{}", d.base_domain)],
            storage_class: d.storage_class.clone(),
        }) {
            Ok(k) => apps.push(k),
            Err(p) => problems.extend(p.into_iter().map(|p| format!("{}/: {p}", app.dir))),
        }
    }
    if !problems.is_empty() {
        return Err(anyhow!(
            "nothing was done; fix these first:\n  {}",
            problems.join("\n  ")
        ));
    }
    Ok((namespace, apps))
}

/// The objects of `apps` for a cluster with `stack` (the namespace's first); refused whole
/// when an app needs a part of the stack the cluster lacks (`whose`: "the cluster" or
/// "--stack").
fn objects_of(
    namespace: &str,
    apps: &[KubeApp],
    stack: &Stack,
    whose: &str,
) -> Result<Vec<Manifest>> {
    let lacking: Vec<&str> = apps
        .iter()
        .filter(|a| a.database.is_some() && !stack.cloudnative_pg)
        .map(|a| a.name.as_str())
        .collect();
    if !lacking.is_empty() {
        return Err(anyhow!(
            "nothing was done: {} ask(s) for a postgres database (score.yaml), which berth makes in a cluster with CloudNativePG, and {whose} has none\nhint: install CloudNativePG's operator (the CRD {}), or render with --stack cloudnative-pg",
            lacking.join(", "),
            berth_kube::stack::CLOUDNATIVE_PG_CRD
        ));
    }
    let mut objects = berth_kube::project_objects(namespace, None);
    for app in apps {
        objects.extend(apply_stack(app, stack, berth_kube::app_objects(app)));
    }
    Ok(objects)
}

fn describe(m: &Manifest) -> String {
    format!(
        "{:<22} {}{}",
        m.kind,
        m.namespace
            .as_deref()
            .map(|n| format!("{n}/"))
            .unwrap_or_default(),
        m.name
    )
}

/// `berth render -f DIR --out OUT` (with `git`, the Argo CD Applications too).
pub fn render(
    g: &Global,
    d: &Definition,
    stack: &str,
    git: Option<GitSource>,
    out: &Path,
) -> Result<i32> {
    let stack = Stack::parse(stack, &d.cluster_issuer).map_err(|e| anyhow!(e))?;
    match (stack.argo_cd, &git) {
        (true, None) => {
            return Err(anyhow!(
            "--stack argo-cd needs --repo: the git repository Argo CD syncs the rendered tree from"
        ))
        }
        (false, Some(_)) => {
            return Err(anyhow!(
                "--repo is for GitOps with Argo CD: add argo-cd to --stack"
            ))
        }
        _ => {}
    }
    let (namespace, declared) = apps_of(d)?;
    let objects = objects_of(&namespace, &declared, &stack, "--stack")?;
    let apps = declared.len();
    let applications = match &git {
        Some(git) => {
            let mut dirs: Vec<String> = objects
                .iter()
                .map(berth_kube::kustomize::object_dir)
                .collect();
            dirs.sort();
            dirs.dedup();
            berth_kube::stack::argo_applications(&dirs, git)
        }
        None => Vec::new(),
    };
    berth_kube::kustomize::write_tree(out, &objects, &applications)?;
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
            println!("{}", describe(m));
        }
        println!(
            "{} objects of {apps} app(s) in {}; apply with: kubectl apply --server-side --field-manager berth -k {}",
            objects.len(),
            out.display(),
            out.join(berth_kube::kustomize::OVERLAY).display()
        );
        if let (Some(git), Some(root)) = (&git, applications.last()) {
            println!(
                "{} Argo CD Application(s) in {}; commit {} to {} ({}), then once: kubectl apply -f {} (the Application {} syncs the rest)",
                applications.len(),
                out.join(berth_kube::kustomize::ARGO_DIR).display(),
                out.display(),
                git.repo,
                git.revision,
                out.join(berth_kube::kustomize::ARGO_ROOT).display(),
                root.name
            );
        }
    }
    Ok(0)
}

/// A cluster and what DIR declares for it.
struct Target {
    cluster: Cluster,
    stack: Stack,
    namespace: String,
    objects: Vec<Manifest>,
    apps: usize,
}

/// DIR's apps (read and checked before the cluster is asked anything), the cluster, what it
/// has of the stack (said on stderr), and the apps' objects for it.
async fn connect(t: &ClusterTarget, d: &Definition) -> Result<Target> {
    let (namespace, apps) = apps_of(d)?;
    let cluster = Cluster::connect(t.kubeconfig.as_deref(), t.context.as_deref()).await?;
    let stack = cluster.stack(&d.cluster_issuer).await?;
    if !stack.names().is_empty() {
        eprintln!(
            "the cluster has {}: berth uses it",
            stack.names().join(", ")
        );
    }
    if stack.argo_cd {
        eprintln!(
            "the cluster has Argo CD: for GitOps, commit `berth render --stack argo-cd --repo URL` instead (berth applies directly now)"
        );
    }
    Ok(Target {
        objects: objects_of(&namespace, &apps, &stack, "the cluster")?,
        apps: apps.len(),
        cluster,
        stack,
        namespace,
    })
}

fn print_changes<'a>(changes: impl IntoIterator<Item = (&'a str, &'a str, &'a [String])>) {
    for (action, object, fields) in changes {
        let sign = match action {
            "create" => "+",
            "delete" => "-",
            _ => "~",
        };
        println!("{sign} {action} {object}");
        for f in fields {
            println!("    ~ {f}");
        }
    }
}

/// `berth kube drift [APP]`: the platform's own apps against the cluster.
async fn drift(g: &Global, app: Option<String>) -> Result<i32> {
    let client = crate::client::discover(g)?;
    let apps: Vec<String> = match app {
        Some(a) => vec![a],
        None => client
            .get_json::<Vec<berth_core::api::AppSummary>>("/v1/apps")
            .await?
            .into_iter()
            .filter(|a| a.current_release.is_some())
            .map(|a| a.name)
            .collect(),
    };
    let mut all = std::collections::BTreeMap::new();
    for a in &apps {
        let d: Vec<berth_core::api::DriftView> = client
            .get_json(&berth_client::app_path(a, "/drift"))
            .await?;
        all.insert(a.clone(), d);
    }
    let drifted = all.values().any(|d| !d.is_empty());
    if g.json {
        output::json(&all);
    } else if !drifted {
        println!(
            "no drift: the cluster has {} as berth applied {}",
            match apps.len() {
                1 => format!("{}'s objects", apps[0]),
                n => format!("the objects of {n} apps"),
            },
            if apps.len() == 1 { "it" } else { "them" }
        );
    } else {
        for (a, d) in all.iter().filter(|(_, d)| !d.is_empty()) {
            println!("{a}:");
            print_changes(
                d.iter()
                    .map(|c| (c.action.as_str(), c.object.as_str(), c.fields.as_slice())),
            );
        }
        println!("put an app back as berth applied it: berth kube restore APP");
    }
    Ok(if drifted { 2 } else { 0 })
}

/// `berth kube plan|apply|drift|restore`.
pub async fn kube(g: &Global, cmd: KubeCommand) -> Result<i32> {
    match cmd {
        KubeCommand::Drift { app } => drift(g, app).await,
        KubeCommand::Restore { app } => {
            let client = crate::client::discover(g)?;
            if !g.json {
                eprintln!("restoring {app}'s objects and waiting for its rollout …");
            }
            let restored: Vec<berth_core::api::DriftView> = client
                .post_json(
                    &berth_client::app_path(&app, "/drift/restore"),
                    &serde_json::json!({}),
                )
                .await?;
            if g.json {
                output::json(&restored);
            } else if restored.is_empty() {
                println!("nothing to restore: the cluster has {app} as berth applied it");
            } else {
                print_changes(
                    restored
                        .iter()
                        .map(|c| (c.action.as_str(), c.object.as_str(), c.fields.as_slice())),
                );
                println!("restored {app} as its serving release has it");
            }
            Ok(0)
        }
        KubeCommand::Plan {
            definition,
            target,
            prune,
        } => {
            let Target {
                cluster,
                stack,
                namespace,
                objects,
                ..
            } = connect(&target, &definition).await?;
            let mut changes = cluster.plan(&objects).await?;
            if prune {
                for (ar, name) in cluster.unkept(&namespace, &objects, &stack).await? {
                    changes.push(berth_kube::cluster::Change {
                        object: format!("{} {namespace}/{name}", ar.kind),
                        action: "delete".into(),
                        fields: Vec::new(),
                    });
                }
            }
            if g.json {
                output::json(&changes);
            } else if changes.is_empty() {
                println!(
                    "no changes: the cluster at {} has the {} objects as {} declares",
                    cluster.url,
                    objects.len(),
                    definition.dir.display()
                );
            } else {
                print_changes(
                    changes
                        .iter()
                        .map(|c| (c.action.as_str(), c.object.as_str(), c.fields.as_slice())),
                );
                let count = |a: &str| changes.iter().filter(|c| c.action == a).count();
                println!(
                    "plan: {} to create, {} to update, {} to delete; {} unchanged",
                    count("create"),
                    count("update"),
                    count("delete"),
                    objects.len() - count("create") - count("update")
                );
            }
            Ok(if changes.is_empty() { 0 } else { 2 })
        }
        KubeCommand::Apply {
            definition,
            target,
            prune,
            force_conflicts,
            wait,
            timeout,
        } => {
            let Target {
                cluster,
                stack,
                namespace,
                objects,
                apps,
            } = connect(&target, &definition).await?;
            let applied = cluster.apply(&objects, force_conflicts).await?;
            if wait {
                cluster
                    .wait_rolled_out(&objects, timeout, |line| eprintln!("  {line}"))
                    .await?;
            }
            let pruned = if prune {
                cluster.prune(&namespace, &objects, &stack).await?
            } else {
                Vec::new()
            };
            if g.json {
                output::json(&serde_json::json!({
                    "cluster": cluster.url,
                    "applied": applied,
                    "pruned": pruned,
                }));
            } else {
                for p in &pruned {
                    println!("- deleted {p}");
                }
                println!(
                    "applied {applied} objects of {apps} app(s) to {} (field manager berth){}",
                    cluster.url,
                    if prune {
                        format!(", {} pruned", pruned.len())
                    } else {
                        String::new()
                    }
                );
            }
            Ok(0)
        }
    }
}

//! `berth plan -f DIR` and `berth apply -f DIR`: the platform definition packed and sent to
//! the platform, which reads, checks, plans and applies it (see
//! `berth_control::declarative`).

use crate::cli::Global;
use crate::output;
use anyhow::{anyhow, Result};
use berth_core::declare::PlanView;
use std::path::Path;

fn pack(dir: &Path) -> Result<Vec<u8>> {
    if !dir.is_dir() {
        return Err(anyhow!("{} is not a directory", dir.display()));
    }
    let limit = std::env::var("BERTH_UPLOAD_LIMIT")
        .ok()
        .and_then(|s| berth_core::limits::parse_memory(&s).ok())
        .unwrap_or(berth_factory::source::DEFAULT_UPLOAD_LIMIT);
    berth_factory::source::pack(dir, limit).map_err(|e| anyhow!("packing {}: {e}", dir.display()))
}

fn path(action: &str, prune: bool) -> String {
    format!(
        "/v1/platform/{action}{}",
        if prune { "?prune=true" } else { "" }
    )
}

fn print_changes(changes: &[berth_core::declare::AppChange]) {
    for c in changes {
        let sign = match c.action.as_str() {
            "create" => "+",
            "delete" => "-",
            "adopt" => "*",
            _ => "~",
        };
        let dir = c
            .dir
            .as_deref()
            .map(|d| format!(" ({d}/)"))
            .unwrap_or_default();
        println!("{sign} {} {}{dir}", c.action, c.app);
        for f in &c.fields {
            match (&f.before, &f.after) {
                (None, Some(a)) => println!("    + {} = {a}", f.field),
                (Some(b), None) => println!("    - {} = {b}", f.field),
                (Some(b), Some(a)) => println!("    ~ {}: {b} → {a}", f.field),
                (None, None) => {}
            }
        }
    }
}

fn print_plan(plan: &PlanView) {
    print_changes(&plan.changes);
    let count = |a: &str| plan.changes.iter().filter(|c| c.action == a).count();
    println!(
        "plan: {} to create, {} to update, {} to adopt, {} to delete; {} unchanged",
        count("create"),
        count("update"),
        count("adopt"),
        count("delete"),
        plan.unchanged.len()
    );
}

/// `berth plan -f DIR`: 0 no changes, 2 changes.
pub async fn plan(g: &Global, dir: &Path, prune: bool) -> Result<i32> {
    let archive = pack(dir)?;
    let client = crate::client::discover(g)?;
    let plan: PlanView = client
        .post_bytes_json(&path("plan", prune), archive, "application/gzip")
        .await?;
    if g.json {
        output::json(&plan);
    } else if plan.changes.is_empty() {
        println!(
            "no changes: {} app(s) are as {} declares",
            plan.unchanged.len(),
            dir.display()
        );
    } else {
        print_plan(&plan);
    }
    Ok(if plan.changes.is_empty() { 0 } else { 2 })
}

/// `berth apply -f DIR`.
pub async fn apply(g: &Global, dir: &Path, prune: bool) -> Result<i32> {
    let archive = pack(dir)?;
    let client = crate::client::discover(g)?;
    crate::commands::stream_workflow(
        g,
        &client,
        reqwest::Method::POST,
        &path("apply", prune),
        Some((reqwest::Body::from(archive), "application/gzip")),
        None,
    )
    .await
}

/// `berth gitops …`.
pub async fn gitops(g: &Global, cmd: crate::cli::GitopsCommand) -> Result<i32> {
    use crate::cli::GitopsCommand;
    use berth_core::declare::{GitopsAdded, GitopsView};
    let client = crate::client::discover(g)?;
    match cmd {
        GitopsCommand::Add {
            url,
            path,
            branch,
            name,
            prune,
        } => {
            let done: GitopsAdded = client
                .post_json(
                    "/v1/gitops",
                    &serde_json::json!({
                        "url": url, "path": path, "branch": branch, "name": name, "prune": prune
                    }),
                )
                .await?;
            if g.json {
                output::json(&done);
                return Ok(0);
            }
            let base = crate::git::webhook_base(&client).await;
            println!(
                "GitOps source {}: {url} {}/ ({branch}); its head is being applied (`berth gitops status`)",
                done.source.name,
                done.source.path
            );
            crate::git::print_webhooks(&base, &done.webhook_secret);
            Ok(0)
        }
        GitopsCommand::Status => {
            let list: Vec<GitopsView> = client.get_json("/v1/gitops").await?;
            if g.json {
                output::json(&list);
            } else if list.is_empty() {
                println!("no GitOps sources; add one with `berth gitops add URL --path DIR`");
            }
            let mut bad = false;
            for s in &list {
                let failed = s
                    .last_outcome
                    .as_deref()
                    .is_some_and(|o| o.starts_with("refused") || o.starts_with("failed"));
                bad |= failed || !s.drift.is_empty();
                if g.json {
                    continue;
                }
                println!("{}: {} {}/ ({})", s.name, s.url, s.path, s.branch);
                match crate::git::last_acted_on(
                    &s.last_commit,
                    &s.last_outcome,
                    &s.last_trigger,
                    s.last_at,
                ) {
                    Some(line) => println!("  last commit {line}"),
                    None => println!("  no commit applied yet"),
                }
                if s.drift.is_empty() {
                    println!("  no drift");
                } else {
                    println!("  drift (changed by hand since; the next commit applied undoes it):");
                    print_changes(&s.drift);
                }
            }
            Ok(i32::from(bad))
        }
        GitopsCommand::Remove { name } => {
            client
                .delete(&format!("/v1/gitops/{}", berth_client::path_segment(&name)))
                .await?;
            if g.json {
                output::json(&serde_json::json!({ "removed": name }));
            } else {
                println!("{name} is no longer applied (the apps it made stay)");
            }
            Ok(0)
        }
    }
}

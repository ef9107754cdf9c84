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

fn print_plan(plan: &PlanView) {
    for c in &plan.changes {
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

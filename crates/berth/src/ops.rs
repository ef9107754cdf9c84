//! Commands for operating berth on a machine: `status`, `doctor`, `man`.

use crate::cli::Global;
use crate::output;
use anyhow::{Context, Result};
use berth_control::doctor::{Check, Level};
use serde::Serialize;
use std::path::Path;

#[derive(Serialize)]
struct Report<'a> {
    healthy: bool,
    checks: &'a [Check],
}

/// Prints checks as a table (or JSON); exit 1 when one failed.
fn report(g: &Global, checks: &[Check]) -> i32 {
    let healthy = checks.iter().all(|c| c.level != Level::Fail);
    if g.json {
        output::json(&Report { healthy, checks });
    } else {
        let rows: Vec<Vec<String>> = checks
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.level.as_str().to_string(),
                    c.detail.clone(),
                    c.fix.clone().unwrap_or_default(),
                ]
            })
            .collect();
        output::table(&["CHECK", "STATUS", "DETAIL", "FIX"], &rows);
    }
    if healthy {
        0
    } else {
        1
    }
}

pub fn status(g: &Global) -> Result<i32> {
    let cfg = berth_control::PlatformConfig::new(crate::client::data_dir(g));
    match berth_control::status::status(&cfg) {
        Some(checks) => Ok(report(g, &checks)),
        None => {
            if g.json {
                output::json(
                    &serde_json::json!({ "healthy": false, "checks": [], "running": false }),
                );
            } else {
                println!(
                    "no platform ran from {} (no berth up recorded there)\nhint: start one with `berth up`, or pass --data-dir",
                    cfg.data_dir.display()
                );
            }
            Ok(1)
        }
    }
}

pub fn doctor(g: &Global, api_port: u16, edge_port: u16, edge_tls_port: u16) -> Result<i32> {
    let mut ports = vec![("API", api_port), ("edge (HTTP)", edge_port)];
    if edge_tls_port != 0 {
        ports.push(("edge (HTTPS)", edge_tls_port));
    }
    let checks = berth_control::doctor::check_host(&crate::client::data_dir(g), &ports);
    Ok(report(g, &checks))
}

/// `berth config`: what `berth up` would run with here, and where each setting comes from.
pub fn config(g: &Global, explicit: Option<&Path>) -> Result<i32> {
    use crate::platform_config as pc;
    let path = pc::path(explicit, &crate::client::data_dir(g));
    let settings = match &path {
        Some(p) => pc::load(p).map_err(|problems| {
            anyhow::anyhow!(
                "the config file {} has {} problem(s):\n  {}",
                p.display(),
                problems.len(),
                problems.join("\n  ")
            )
        })?,
        None => Vec::new(),
    };
    let effective = pc::effective(&settings, path.as_deref());
    if g.json {
        output::json(&serde_json::json!({ "file": path, "settings": effective }));
        return Ok(0);
    }
    match &path {
        Some(p) => println!("config file: {}", p.display()),
        None => println!(
            "config file: none (<data dir>/berth.toml or {} would be read)",
            pc::SYSTEM_CONFIG
        ),
    }
    let rows: Vec<Vec<String>> = effective
        .iter()
        .map(|e| {
            vec![
                e.key.clone(),
                e.value.clone().unwrap_or_else(|| "-".into()),
                e.source.clone(),
            ]
        })
        .collect();
    output::table(&["SETTING", "VALUE", "FROM"], &rows);
    Ok(0)
}

/// `berth probes APP`: each public URL's last probe and its success over the kept ones.
pub async fn probes(g: &Global, app: &str) -> Result<i32> {
    let client = crate::client::discover(g)?;
    let urls: serde_json::Value = client
        .get_json(&berth_client::app_path(app, "/probes"))
        .await?;
    if g.json {
        output::json(&urls);
        return Ok(0);
    }
    let list = urls.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("{app} has not been probed yet (every --probe-interval, 30s by default; a sleeping app is not probed)");
        return Ok(0);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|u| {
            let results = u["results"].as_array().cloned().unwrap_or_default();
            let last = results.last().cloned().unwrap_or_default();
            let outcome = match (last["status"].as_u64(), last["error"].as_str()) {
                (Some(s), _) => s.to_string(),
                (None, Some(e)) => e.to_string(),
                _ => "-".into(),
            };
            let tls = last["tls_expires_at"].as_i64().map_or_else(
                || "-".to_string(),
                |t| format!("{} days", (t - now) / 86_400),
            );
            vec![
                u["url"].as_str().unwrap_or("").to_string(),
                outcome,
                format!("{:.1} ms", last["latency_ms"].as_f64().unwrap_or(0.0)),
                format!(
                    "{:.0}% of {}",
                    u["success_ratio"].as_f64().unwrap_or(0.0) * 100.0,
                    results.len()
                ),
                tls,
                last["at"].as_i64().map_or_else(String::new, output::ago),
            ]
        })
        .collect();
    output::table(
        &["URL", "LAST", "LATENCY", "SUCCESS", "CERT EXPIRES", "WHEN"],
        &rows,
    );
    Ok(0)
}

/// `berth gc`: what was (or would be) collected.
pub async fn gc(g: &Global, dry_run: bool) -> Result<i32> {
    let client = crate::client::discover(g)?;
    let report: serde_json::Value = client
        .post_json("/v1/gc", &serde_json::json!({ "dry_run": dry_run }))
        .await?;
    if g.json {
        output::json(&report);
        return Ok(0);
    }
    let items = report["items"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| {
            vec![
                i["kind"].as_str().unwrap_or("").to_string(),
                i["app"].as_str().unwrap_or("-").to_string(),
                i["name"].as_str().unwrap_or("").to_string(),
                berth_control::doctor::human(i["bytes"].as_u64().unwrap_or(0)),
            ]
        })
        .collect();
    if !rows.is_empty() {
        output::table(&["KIND", "APP", "WHAT", "SIZE"], &rows);
    }
    let freed = berth_control::doctor::human(report["freed_bytes"].as_u64().unwrap_or(0));
    match (dry_run, rows.is_empty()) {
        (_, true) => println!("nothing to collect"),
        (true, false) => println!("would free {freed} (dry run: nothing removed)"),
        (false, false) => println!("freed {freed}"),
    }
    if let Some(busy) = report["busy"].as_array().filter(|b| !b.is_empty()) {
        let names: Vec<&str> = busy.iter().filter_map(|b| b.as_str()).collect();
        println!("skipped while they deploy: {}", names.join(", "));
    }
    Ok(0)
}

/// One man page per command and subcommand (`berth.1`, `berth-deploy.1`, …).
pub fn man_pages(out: &Path) -> Result<i32> {
    let written = man_pages_quiet(out)?;
    println!("wrote {written} man pages to {}", out.display());
    Ok(0)
}

/// [`man_pages`] without a word; returns how many it wrote.
pub fn man_pages_quiet(out: &Path) -> Result<usize> {
    use clap::CommandFactory;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = 0;
    let mut stack = vec![(String::from("berth"), crate::cli::Cli::command())];
    while let Some((name, cmd)) = stack.pop() {
        if cmd.is_hide_set() {
            continue;
        }
        let cmd = cmd.name(name.clone());
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone())
            .render(&mut page)
            .with_context(|| format!("rendering the man page of {name}"))?;
        let path = out.join(format!("{name}.1"));
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
        written += 1;
        for sub in cmd.get_subcommands() {
            stack.push((format!("{name}-{}", sub.get_name()), sub.clone()));
        }
    }
    Ok(written)
}

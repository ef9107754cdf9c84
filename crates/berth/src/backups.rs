//! `berth backup …`: `create` asks the running platform; `list`, `verify`, `prune` and
//! `restore` read the backups themselves, so they work when the platform is gone.

use crate::cli::{BackupCommand, Global, PassphraseArgs};
use crate::client::data_dir;
use crate::output;
use anyhow::{anyhow, Result};
use berth_control::backups;
use berth_core::state::{BackupCreate, BackupView};
use berth_data::backup::location::Location;
use berth_data::backup::retention::Retention;
use std::io::IsTerminal;
use zeroize::Zeroizing;

const PASSPHRASE_ENV: &str = "BERTH_BACKUP_PASSPHRASE";

fn passphrase(args: &PassphraseArgs) -> Result<Zeroizing<String>> {
    if let Some(file) = &args.passphrase_file {
        return backups::create::read_passphrase_file(file)
            .map_err(|e| anyhow!("--passphrase-file: {e}"));
    }
    match std::env::var(PASSPHRASE_ENV) {
        Ok(p) if !p.trim().is_empty() => Ok(Zeroizing::new(p.trim().to_string())),
        _ => Err(anyhow!(
            "a backup needs its passphrase\nhint: pass --passphrase-file FILE or set {PASSPHRASE_ENV}"
        )),
    }
}

fn location(text: &str) -> Result<Location> {
    Ok(Location::parse(text, &std::env::current_dir()?)?)
}

fn describe(b: &BackupView) -> String {
    format!(
        "backup {} at {}: {} app(s), {} volume(s), {} database(s), {}",
        b.id,
        b.location,
        b.apps.len(),
        b.volumes.len(),
        b.databases.len(),
        human_bytes(b.bytes)
    )
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// Progress on stderr when a person watches.
fn progress(json: bool) -> impl Fn(&str) + Sync {
    let show = !json && std::io::stderr().is_terminal();
    move |step: &str| {
        if show {
            eprintln!("-----> {step}");
        }
    }
}

fn scratch() -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new().prefix("berth-backup-").tempdir()?)
}

/// `berth backup …`.
pub async fn backup(g: &Global, cmd: BackupCommand) -> Result<i32> {
    match cmd {
        BackupCommand::Create {
            to,
            passphrase: pass,
            keep_daily,
            keep_weekly,
        } => {
            let pass = passphrase(&pass)?;
            let client = crate::client::discover(g)?;
            // A relative directory means the caller's, not the platform's working directory.
            let to = match location(&to)? {
                Location::Dir(d) => d.display().to_string(),
                Location::S3 { .. } => to,
            };
            let spinner = (!g.json && std::io::stderr().is_terminal()).then(|| {
                let s = indicatif::ProgressBar::new_spinner();
                s.set_message(format!("backing up to {to} (apps keep serving)…"));
                s.enable_steady_tick(std::time::Duration::from_millis(120));
                s
            });
            let req = BackupCreate {
                to,
                passphrase: pass.to_string(),
                keep_daily,
                keep_weekly,
            };
            let result: Result<BackupView> = client
                .post_json("/v1/backups", &serde_json::to_value(&req)?)
                .await;
            if let Some(s) = spinner {
                s.finish_and_clear();
            }
            let b = result?;
            if g.json {
                output::json(&b);
            } else {
                println!("{}", describe(&b));
                for id in &b.pruned {
                    println!("pruned {id} (retention: {keep_daily} daily, {keep_weekly} weekly)");
                }
            }
            Ok(0)
        }
        BackupCommand::List { location: text } => {
            let loc = location(&text)?;
            let all = backups::list(&loc).await?;
            if g.json {
                let ok: Vec<&BackupView> = all.iter().filter_map(|b| b.as_ref().ok()).collect();
                output::json(&ok);
                return Ok(0);
            }
            if all.is_empty() {
                println!("no backups at {loc}");
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|b| match b {
                    Ok(b) => vec![
                        b.id.clone(),
                        output::ago(b.created_at),
                        b.apps.join(","),
                        b.volumes.len().to_string(),
                        b.databases.len().to_string(),
                        human_bytes(b.bytes),
                    ],
                    Err(e) => vec![
                        e.clone(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                    ],
                })
                .collect();
            output::table(
                &["ID", "CREATED", "APPS", "VOLUMES", "DATABASES", "SIZE"],
                &rows,
            );
            Ok(0)
        }
        BackupCommand::Verify {
            location: text,
            id,
            passphrase: pass,
        } => {
            let loc = location(&text)?;
            let pass = match (&pass.passphrase_file, std::env::var(PASSPHRASE_ENV)) {
                (None, Err(_)) => None,
                _ => Some(passphrase(&pass)?),
            };
            let id = match id {
                Some(id) => id,
                None => backups::latest(&loc).await?,
            };
            let dir = scratch()?;
            let m = backups::verify(
                &loc,
                &id,
                pass.as_ref().map(|p| p.as_str()),
                dir.path(),
                &progress(g.json),
            )
            .await?;
            let view = backups::view(&loc, &m);
            if g.json {
                output::json(&serde_json::json!({
                    "backup": view,
                    "parts": m.parts.len(),
                    "passphrase_checked": pass.is_some(),
                }));
            } else {
                println!(
                    "backup {id} is intact: {} parts, {} checked{}",
                    m.parts.len(),
                    human_bytes(m.total_bytes()),
                    if pass.is_some() {
                        "; the passphrase opens it"
                    } else {
                        " (give the passphrase to check it opens too)"
                    }
                );
            }
            Ok(0)
        }
        BackupCommand::Prune {
            location: text,
            keep_daily,
            keep_weekly,
        } => {
            let policy = Retention {
                keep_daily,
                keep_weekly,
            };
            if !policy.is_set() {
                return Err(anyhow!(
                    "prune needs a policy\nhint: e.g. --keep-daily 7 --keep-weekly 4"
                ));
            }
            let loc = location(&text)?;
            let pruned = backups::prune(&loc, policy).await?;
            if g.json {
                output::json(&serde_json::json!({ "pruned": pruned }));
            } else if pruned.is_empty() {
                println!("nothing to prune at {loc}");
            } else {
                for id in &pruned {
                    println!("pruned {id}");
                }
            }
            Ok(0)
        }
        BackupCommand::Restore {
            location: text,
            id,
            passphrase: pass,
            force,
        } => {
            let loc = location(&text)?;
            let opts = backups::restore::RestoreOptions {
                location: loc,
                id,
                data_dir: data_dir(g),
                passphrase: passphrase(&pass)?,
                force,
            };
            let report = backups::restore::restore(opts, &progress(g.json)).await?;
            if g.json {
                output::json(&report);
            } else {
                println!(
                    "restored backup {} into {}: {} app(s), {} volume(s), {} database(s)",
                    report.id,
                    report.data_dir.display(),
                    report.apps.len(),
                    report.volumes.len(),
                    report.databases.len()
                );
                if let Some(old) = &report.moved_aside {
                    println!("what was there before is in {}", old.display());
                }
                println!(
                    "start the platform with `berth up --data-dir {}`: apps start again and databases are loaded",
                    report.data_dir.display()
                );
            }
            Ok(0)
        }
    }
}

//! Commands for an app's state: `create`, `secrets`, `volumes`.

use crate::cli::{DbCommand, Global, SecretsCommand, VolumesCommand};
use crate::commands::stream_workflow;
use crate::output;
use anyhow::{anyhow, bail, Context, Result};
use berth_core::state::{DatabaseBackupView, DatabaseView, SecretView, SnapshotView, VolumeView};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};

/// Parses `NAME:SIZE:MOUNT[:exclusive]`.
fn parse_volume_arg(text: &str) -> Result<serde_json::Value> {
    let parts: Vec<&str> = text.split(':').collect();
    let (name, size, mount, exclusive) = match parts.as_slice() {
        [n, s, m] => (n, s, m, false),
        [n, s, m, "exclusive"] => (n, s, m, true),
        _ => bail!("--volume {text:?}: expected NAME:SIZE:MOUNT (e.g. data:1G:/data), optionally :exclusive"),
    };
    Ok(serde_json::json!({ "name": name, "size": size, "mount": mount, "exclusive": exclusive }))
}

/// `berth create APP [--domain …] [--secret …] [--volume …] [--database]`.
pub async fn create(g: &Global, args: CreateArgs<'_>) -> Result<i32> {
    let app = args.app;
    berth_core::AppName::parse(app).map_err(|e| anyhow!(e))?;
    // Names are checked by the platform, with every other problem of the request.
    let mut secrets = BTreeMap::new();
    for pair in args.secrets {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| anyhow!("--secret {pair:?}: expected NAME=VALUE"))?;
        if secrets.insert(k.to_string(), v.to_string()).is_some() {
            bail!("secret {k} is given twice");
        }
    }
    let volumes = args
        .volumes
        .iter()
        .map(|v| parse_volume_arg(v))
        .collect::<Result<Vec<_>>>()?;
    let body = serde_json::json!({
        "name": app,
        "domains": args.domains,
        "secrets": secrets,
        "volumes": volumes,
        "database": args.database,
        "project": args.project,
    });
    let client = crate::client::discover(g)?;
    let headers: Vec<(&str, &str)> = args
        .idempotency_key
        .map(|k| ("idempotency-key", k))
        .into_iter()
        .collect();
    let v: berth_core::state::AppCreated =
        client.post_json_with("/v1/apps", &body, &headers).await?;
    if g.json {
        output::json(&v);
        return Ok(0);
    }
    println!("created {app}");
    for d in &v.domains {
        println!(
            "  domain   {} ({})",
            d.url,
            d.certificate
                .as_ref()
                .map_or("no certificate yet", |c| if c.source == "acme" {
                    "ACME certificate"
                } else {
                    "local CA certificate"
                })
        );
    }
    for s in &v.secrets {
        println!("  secret   {s}");
    }
    for vol in &v.volumes {
        println!(
            "  volume   {} ({}, at {})",
            vol.name,
            berth_core::limits::format_memory(vol.size_bytes),
            vol.mount
        );
    }
    if let Some(db) = &v.database {
        println!("  database {db} (DATABASE_URL)");
    }
    println!("deploy it with `berth deploy DIR --app {app}`");
    Ok(0)
}

/// What `berth create` was given.
pub struct CreateArgs<'a> {
    pub app: &'a str,
    pub domains: &'a [String],
    pub secrets: &'a [String],
    pub volumes: &'a [String],
    pub database: bool,
    pub idempotency_key: Option<&'a str>,
    pub project: Option<&'a str>,
}

/// Collects NAME=VALUE pairs from the arguments, files and standard input.
fn secret_values(
    pairs: &[String],
    files: &[String],
    stdin: Option<&str>,
) -> Result<BTreeMap<String, String>> {
    let mut set = BTreeMap::new();
    let mut put = |name: &str, value: String| -> Result<()> {
        berth_core::state::validate_secret_name(name).map_err(|e| anyhow!(e))?;
        if set.insert(name.to_string(), value).is_some() {
            bail!("secret {name} is given twice");
        }
        Ok(())
    };
    for p in pairs {
        let (k, v) = p.split_once('=').ok_or_else(|| {
            anyhow!("{p:?} is not NAME=VALUE\nhint: to read a value from a file use --file NAME=PATH, from standard input --stdin NAME")
        })?;
        put(k, v.to_string())?;
    }
    for f in files {
        let (k, path) = f
            .split_once('=')
            .ok_or_else(|| anyhow!("--file {f:?} is not NAME=PATH"))?;
        let bytes =
            std::fs::read(path).with_context(|| format!("reading {path} for secret {k}"))?;
        let value = String::from_utf8(bytes).map_err(|_| {
            anyhow!("{path}: secret {k} must be UTF-8 text (base64-encode binary data)")
        })?;
        put(k, value)?;
    }
    if let Some(k) = stdin {
        let mut value = String::new();
        std::io::stdin()
            .read_to_string(&mut value)
            .context("reading the secret from standard input")?;
        let trimmed = value.strip_suffix('\n').unwrap_or(&value);
        let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed).to_string();
        put(k, trimmed)?;
    }
    if set.is_empty() {
        bail!("nothing to set: give NAME=VALUE, --file NAME=PATH or --stdin NAME");
    }
    Ok(set)
}

/// `berth secrets …`.
pub async fn secrets(g: &Global, cmd: SecretsCommand) -> Result<i32> {
    let client = crate::client::discover(g)?;
    match cmd {
        SecretsCommand::List { app } => {
            let list: Vec<SecretView> = client
                .get_json(&berth_client::app_path(&app, "/secrets"))
                .await?;
            if g.json {
                output::json(&list);
            } else if list.is_empty() {
                println!("{app} has no secrets; set one with `berth secrets set {app} NAME=VALUE`");
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|s| {
                        vec![
                            s.name.clone(),
                            format!("v{}", s.version),
                            s.injected_as.clone(),
                            s.updated_by.clone(),
                            output::ago(s.updated_at),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "VERSION", "AS", "SET BY", "UPDATED"], &rows);
            }
            Ok(0)
        }
        SecretsCommand::Set {
            app,
            pairs,
            files,
            stdin,
            build,
        } => {
            let set = secret_values(&pairs, &files, stdin.as_deref())?;
            let body = serde_json::json!({ "set": set, "build": build });
            stream_workflow(
                g,
                &client,
                reqwest::Method::POST,
                &berth_client::app_path(&app, "/secrets"),
                None,
                Some(body),
            )
            .await
        }
        SecretsCommand::Unset { app, names, build } => {
            for k in &names {
                berth_core::state::validate_secret_name(k).map_err(|e| anyhow!(e))?;
            }
            let body = serde_json::json!({ "unset": names, "build": build });
            stream_workflow(
                g,
                &client,
                reqwest::Method::POST,
                &berth_client::app_path(&app, "/secrets"),
                None,
                Some(body),
            )
            .await
        }
        SecretsCommand::RotateKey => {
            let report: serde_json::Value = client
                .post_json("/v1/secrets/rotate-key", &serde_json::json!({}))
                .await?;
            if g.json {
                output::json(&report);
            } else {
                println!(
                    "every secret ({}) and TLS key ({}) is now sealed with key {}; the old key is retired",
                    report["resealed"],
                    report["tls_keys"],
                    report["key_id"].as_str().unwrap_or("?")
                );
            }
            Ok(0)
        }
    }
}

/// Asks the person at the terminal to type `word`; false when they do not, or when there
/// is no terminal.
fn confirm(prompt: &str, word: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("{prompt}\nrefusing without confirmation: there is no terminal to ask\nhint: pass --yes to confirm");
    }
    eprint!("{prompt}\ntype {word:?} to confirm: ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(answer.trim() == word)
}

/// `berth volumes …`.
pub async fn volumes(g: &Global, cmd: VolumesCommand) -> Result<i32> {
    let client = crate::client::discover(g)?;
    match cmd {
        VolumesCommand::List { app } => {
            let list: Vec<VolumeView> = client
                .get_json(&berth_client::app_path(&app, "/volumes"))
                .await?;
            if g.json {
                output::json(&list);
            } else if list.is_empty() {
                println!("{app} has no volumes; create one with `berth volumes create {app} data --size 1G --mount /data`");
            } else {
                let fmt = berth_core::limits::format_memory;
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|v| {
                        vec![
                            v.name.clone(),
                            fmt(v.size_bytes),
                            v.used_bytes.map(fmt).unwrap_or_else(|| "-".into()),
                            v.mount.clone(),
                            if v.exclusive { "exclusive" } else { "shared" }.into(),
                            v.snapshots
                                .iter()
                                .map(|s| s.id.clone())
                                .collect::<Vec<_>>()
                                .join(" "),
                        ]
                    })
                    .collect();
                output::table(
                    &["NAME", "SIZE", "USED", "MOUNT", "ACCESS", "SNAPSHOTS"],
                    &rows,
                );
            }
            Ok(0)
        }
        VolumesCommand::Create {
            app,
            name,
            size,
            mount,
            exclusive,
        } => {
            let body = serde_json::json!({
                "name": name, "size": size, "mount": mount, "exclusive": exclusive,
            });
            stream_workflow(
                g,
                &client,
                reqwest::Method::POST,
                &berth_client::app_path(&app, "/volumes"),
                None,
                Some(body),
            )
            .await
        }
        VolumesCommand::Snapshot { app, name } => {
            let s: SnapshotView = client
                .post_json(
                    &berth_client::app_path(&app, &format!("/volumes/{name}/snapshots")),
                    &serde_json::json!({}),
                )
                .await?;
            if g.json {
                output::json(&s);
            } else {
                println!(
                    "snapshot {} of {app}/{name} taken ({} on disk); restore it with `berth volumes restore {app} {name} {}`",
                    s.id,
                    berth_core::limits::format_memory(s.disk_bytes),
                    s.id
                );
            }
            Ok(0)
        }
        VolumesCommand::Restore {
            app,
            name,
            snapshot,
            force,
        } => {
            client
                .post_empty(
                    &berth_client::app_path(&app, &format!("/volumes/{name}/restore")),
                    &serde_json::json!({ "snapshot": snapshot, "force": force }),
                )
                .await?;
            if g.json {
                output::json(&serde_json::json!({ "restored": snapshot }));
            } else {
                println!("volume {app}/{name} holds snapshot {snapshot} again");
            }
            Ok(0)
        }
        VolumesCommand::Destroy {
            app,
            name,
            yes,
            force,
        } => {
            if !yes
                && !confirm(
                    &format!("this deletes volume {name} of {app} and all its snapshots; its data cannot be recovered"),
                    &name,
                )?
            {
                bail!("not confirmed; volume {name} is untouched");
            }
            stream_workflow(
                g,
                &client,
                reqwest::Method::DELETE,
                &berth_client::app_path(&app, &format!("/volumes/{name}?force={force}")),
                None,
                None,
            )
            .await
        }
    }
}

/// `berth db …`.
pub async fn db(g: &Global, cmd: DbCommand) -> Result<i32> {
    let client = crate::client::discover(g)?;
    match cmd {
        DbCommand::Create { app } => {
            stream_workflow(
                g,
                &client,
                reqwest::Method::POST,
                &berth_client::app_path(&app, "/database"),
                None,
                None,
            )
            .await
        }
        DbCommand::Info { app } => {
            let v: DatabaseView = client
                .get_json(&berth_client::app_path(&app, "/database"))
                .await?;
            if g.json {
                output::json(&v);
            } else {
                println!("database  {}", v.database);
                println!("role      {}", v.role);
                println!(
                    "server    {}:{} ({})",
                    v.host,
                    v.port,
                    if v.server_running {
                        "running"
                    } else {
                        "not running"
                    }
                );
                println!("created   {}", output::ago(v.created_at));
                if v.backups.is_empty() {
                    println!("backups   none; take one with `berth db backup {app}`");
                } else {
                    for b in &v.backups {
                        println!(
                            "backup    {}  {}  {}",
                            b.id,
                            berth_core::limits::format_memory(b.bytes),
                            output::ago(b.created_at)
                        );
                    }
                }
            }
            Ok(0)
        }
        DbCommand::Backup { app } => {
            let b: DatabaseBackupView = client
                .post_json(
                    &berth_client::app_path(&app, "/database/backups"),
                    &serde_json::json!({}),
                )
                .await?;
            if g.json {
                output::json(&b);
            } else {
                println!(
                    "backup {} of {app}'s database taken ({} bytes); restore it with `berth db restore {app} {}`",
                    b.id, b.bytes, b.id
                );
            }
            Ok(0)
        }
        DbCommand::Restore { app, backup } => {
            client
                .post_empty(
                    &berth_client::app_path(&app, "/database/restore"),
                    &serde_json::json!({ "backup": backup }),
                )
                .await?;
            if g.json {
                output::json(&serde_json::json!({ "restored": backup }));
            } else {
                println!("{app}'s database holds backup {backup} again");
            }
            Ok(0)
        }
        DbCommand::Psql { app, args } => {
            let v: DatabaseView = client
                .get_json(&berth_client::app_path(&app, "/database"))
                .await?;
            let data = crate::client::data_dir(g);
            let layout = berth_data::postgres::PgLayout {
                data_root: data.join("postgres"),
                run_root: berth_data::postgres::default_run_root(&data),
                listen: std::net::Ipv4Addr::UNSPECIFIED,
                subnet: String::new(),
            };
            let pg = berth_data::postgres::Postgres::locate(layout).map_err(|e| anyhow!(e))?;
            let mut cmd = pg.psql_command(&berth_data::postgres::AppDatabase {
                database: v.database,
                role: v.role,
            });
            let status = cmd
                .args(&args)
                .status()
                .context("running psql (it runs on the machine berth runs on, as root)")?;
            Ok(status.code().unwrap_or(1))
        }
    }
}

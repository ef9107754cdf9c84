//! `berth domains …` and `berth ca …`.

use crate::cli::{CaCommand, DomainsCommand, Global};
use crate::output;
use anyhow::{Context, Result};
use berth_core::domains::DomainView;

fn describe(d: &DomainView) -> String {
    let cert = match &d.certificate {
        Some(c) => format!(
            "certificate from {} ({}), expires {}",
            if c.source == "acme" {
                "the ACME directory"
            } else {
                "berth's local CA"
            },
            c.issuer,
            output::until(c.not_after)
        ),
        None => "no certificate yet".into(),
    };
    let mut out = format!("{} → {}: {}", d.name, d.url, cert);
    if let Some(e) = &d.error {
        out.push_str(&format!("\nwarning: the ACME directory did not certify it yet: {e}\nhint: check that {} resolves to this machine and port 80 reaches the edge; berth retries", d.name));
    }
    out
}

/// `berth domains …`.
pub async fn domains(g: &Global, cmd: DomainsCommand) -> Result<i32> {
    let client = crate::client::discover(g)?;
    match cmd {
        DomainsCommand::Add {
            app,
            domain,
            no_redirect,
        } => {
            if !g.json && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                eprintln!(
                    "adding {domain} to {app} (an ACME certificate can take up to a minute)…"
                );
            }
            let d: DomainView = client
                .post_json(
                    &berth_client::app_path(&app, "/domains"),
                    &serde_json::json!({ "name": domain, "https_redirect": !no_redirect }),
                )
                .await?;
            if g.json {
                output::json(&d);
            } else {
                println!("{}", describe(&d));
                if d.https_redirect {
                    println!("plain HTTP to {} is redirected to HTTPS", d.name);
                }
            }
            Ok(0)
        }
        DomainsCommand::List { app } => {
            let list: Vec<DomainView> = client
                .get_json(&berth_client::app_path(&app, "/domains"))
                .await?;
            if g.json {
                output::json(&list);
            } else if list.is_empty() {
                println!(
                    "{app} has no domains; add one with `berth domains add {app} shop.example.com`"
                );
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|d| {
                        vec![
                            d.name.clone(),
                            d.url.clone(),
                            d.certificate
                                .as_ref()
                                .map(|c| c.source.clone())
                                .unwrap_or_else(|| "-".into()),
                            d.certificate
                                .as_ref()
                                .map(|c| output::until(c.not_after))
                                .unwrap_or_else(|| "-".into()),
                            if d.https_redirect { "yes" } else { "no" }.into(),
                            d.dns
                                .as_ref()
                                .map(|r| r.state.clone())
                                .unwrap_or_else(|| "-".into()),
                            [
                                d.error.as_deref(),
                                d.dns.as_ref().and_then(|r| r.error.as_deref()),
                            ]
                            .into_iter()
                            .flatten()
                            .collect::<Vec<_>>()
                            .join("; "),
                        ]
                    })
                    .collect();
                output::table(
                    &[
                        "DOMAIN",
                        "URL",
                        "CERTIFICATE",
                        "EXPIRES",
                        "REDIRECT",
                        "DNS",
                        "ERROR",
                    ],
                    &rows,
                );
            }
            Ok(0)
        }
        DomainsCommand::Remove { app, domain } => {
            client
                .delete(&berth_client::app_path(&app, &format!("/domains/{domain}")))
                .await?;
            if g.json {
                output::json(&serde_json::json!({ "removed": domain, "app": app }));
            } else {
                println!("{domain} no longer routes to {app}");
            }
            Ok(0)
        }
    }
}

/// `berth dns`: where berth publishes records and how each name stands.
pub async fn dns(g: &Global) -> Result<i32> {
    let client = crate::client::discover(g)?;
    let status: berth_core::domains::DnsStatus = client.get_json("/v1/dns").await?;
    if g.json {
        output::json(&status);
        return Ok(0);
    }
    println!(
        "zone {} at {} ({}), names point at {}",
        status.zone,
        status.server,
        status
            .key
            .as_deref()
            .map_or("unsigned".to_string(), |k| format!("TSIG key {k}")),
        status.records.join(", ")
    );
    if status.names.is_empty() {
        println!("no names in the zone yet: add a domain in it with `berth domains add APP NAME`");
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = status
        .names
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.app.clone(),
                n.state.clone(),
                n.records.join(", "),
                match (&n.error, n.attempts) {
                    (Some(e), a) => format!("{e} (failed {a}×, retried)"),
                    (None, _) => String::new(),
                },
            ]
        })
        .collect();
    output::table(&["NAME", "APP", "STATE", "RECORDS", "ERROR"], &rows);
    Ok(i32::from(status.names.iter().any(|n| n.state == "failed")))
}

/// `berth ca …`.
pub async fn ca(g: &Global, cmd: CaCommand) -> Result<i32> {
    let client = crate::client::discover(g)?;
    match cmd {
        CaCommand::Export { out } => {
            let v: serde_json::Value = client.get_json("/v1/ca").await?;
            let pem = v["certificate_pem"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            match out {
                Some(path) => {
                    std::fs::write(&path, &pem)
                        .with_context(|| format!("writing {}", path.display()))?;
                    if g.json {
                        output::json(&serde_json::json!({ "written": path }));
                    } else {
                        eprintln!("wrote berth's root certificate to {}", path.display());
                    }
                }
                None if g.json => output::json(&v),
                None => print!("{pem}"),
            }
            Ok(0)
        }
    }
}

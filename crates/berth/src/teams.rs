//! `berth tokens` and `berth audit`.

use crate::cli::{Global, TokensCommand};
use crate::output;
use anyhow::{anyhow, Context, Result};
use berth_core::auth::{AuditEntry, Role, TokenCreated, TokenView};

pub async fn tokens(g: &Global, cmd: TokensCommand) -> Result<i32> {
    let client = crate::client::discover(g)?;
    match cmd {
        TokensCommand::Create {
            name,
            role,
            expires,
        } => {
            let role = Role::parse(&role).map_err(|e| anyhow!("--role: {e}"))?;
            berth_core::auth::check_token_name(&name).map_err(|e| anyhow!(e))?;
            let expires_in = expires
                .map(|e| humantime::parse_duration(&e).context("--expires"))
                .transpose()?
                .map(|d| d.as_secs().max(1));
            let body = serde_json::json!({ "name": name, "role": role, "expires_in": expires_in });
            let created: TokenCreated = client.post_json("/v1/tokens", &body).await?;
            if g.json {
                output::json(&created);
            } else {
                println!("{}", created.token);
                eprintln!(
                    "token {:?} ({}) made; it is shown only now. Use it with BERTH_TOKEN=<token> (and BERTH_API_URL on another machine).",
                    created.view.name,
                    created.view.role.as_str()
                );
            }
            Ok(0)
        }
        TokensCommand::List => {
            let list: Vec<TokenView> = client.get_json("/v1/tokens").await?;
            if g.json {
                output::json(&list);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        t.role.as_str().to_string(),
                        t.created_by.clone(),
                        output::ago(t.created_at),
                        t.last_used_at.map_or_else(|| "never".into(), output::ago),
                        match (t.revoked_at, t.expires_at) {
                            (Some(r), _) => format!("revoked {}", output::ago(r)),
                            (None, Some(e)) => match output::until(e) {
                                expired if expired == "expired" => expired,
                                left => format!("expires {left}"),
                            },
                            (None, None) => "active".into(),
                        },
                    ]
                })
                .collect();
            output::table(
                &["NAME", "ROLE", "MADE BY", "MADE", "LAST USED", "STATE"],
                &rows,
            );
            Ok(0)
        }
        TokensCommand::Revoke { name } => {
            client.delete(&format!("/v1/tokens/{name}")).await?;
            println!("revoked {name}");
            Ok(0)
        }
    }
}

pub async fn audit(
    g: &Global,
    since: Option<String>,
    actor: Option<String>,
    app: Option<String>,
    lines: u32,
) -> Result<i32> {
    let client = crate::client::discover(g)?;
    let mut url = reqwest::Url::parse("http://berth/v1/audit").context("building the query")?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("limit", &lines.to_string());
        for (k, v) in [("since", &since), ("actor", &actor), ("app", &app)] {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
    }
    let path = format!("{}?{}", url.path(), url.query().unwrap_or_default());
    let entries: Vec<AuditEntry> = client.get_json(&path).await?;
    if g.json {
        output::json(&entries);
        return Ok(0);
    }
    if entries.is_empty() {
        println!("no audit entries");
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let refs = e
                .refs
                .iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}={}", &s[..s.len().min(19)]),
                    other => format!("{k}={other}"),
                })
                .collect::<Vec<_>>()
                .join(" ");
            vec![
                output::ago(e.at),
                match &e.client {
                    Some(c) => format!("{} ({c})", e.actor),
                    None => e.actor.clone(),
                },
                e.action.clone(),
                e.target.clone().unwrap_or_default(),
                e.outcome.clone(),
                match (&e.detail, refs.is_empty()) {
                    (Some(d), _) => d.clone(),
                    (None, false) => refs,
                    (None, true) => String::new(),
                },
                e.request_id.clone(),
            ]
        })
        .collect();
    output::table(
        &[
            "WHEN", "ACTOR", "ACTION", "TARGET", "OUTCOME", "DETAIL", "REQUEST",
        ],
        &rows,
    );
    Ok(0)
}

//! `berth tokens`, `berth audit`, `berth projects` and `berth tenants`.

use crate::cli::{
    Global, ProjectsCommand, QuotaArgs, RegistryCommand, TenantsCommand, TokensCommand,
};
use crate::output;
use anyhow::{anyhow, Context, Result};
use berth_core::auth::{AuditEntry, Role, TokenCreated, TokenView};

pub async fn tokens(g: &Global, cmd: TokensCommand) -> Result<i32> {
    let client = crate::client::discover(g)?;
    match cmd {
        TokensCommand::Create {
            name,
            role,
            project,
            tenant,
            expires,
        } => {
            let role = Role::parse(&role).map_err(|e| anyhow!("--role: {e}"))?;
            berth_core::auth::check_token_name(&name).map_err(|e| anyhow!(e))?;
            let expires_in = expires
                .map(|e| humantime::parse_duration(&e).context("--expires"))
                .transpose()?
                .map(|d| d.as_secs().max(1));
            let body = serde_json::json!({ "name": name, "role": role, "project": project, "tenant": tenant, "expires_in": expires_in });
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
                        t.scope.clone(),
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
                &[
                    "NAME",
                    "ROLE",
                    "SCOPE",
                    "MADE BY",
                    "MADE",
                    "LAST USED",
                    "STATE",
                ],
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
    let path = berth_client::with_query(
        "/v1/audit",
        &[
            ("limit", Some(lines.to_string())),
            ("since", since),
            ("actor", actor),
            ("app", app),
        ],
    );
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

fn quota_of(q: QuotaArgs) -> Result<berth_core::projects::Quota> {
    let size = |flag: &str, v: Option<String>| -> Result<Option<u64>> {
        v.map(|s| berth_core::limits::parse_memory(&s).map_err(|e| anyhow!("{flag}: {e}")))
            .transpose()
    };
    Ok(berth_core::projects::Quota {
        max_apps: q.max_apps,
        max_instances: q.max_instances,
        max_memory_bytes: size("--max-memory", q.max_memory)?,
        max_volume_bytes: size("--max-volume", q.max_volume)?,
    })
}

/// Use against quota, as a table's cells: apps, instances, memory, volumes.
fn usage_cells(
    usage: &berth_core::projects::Usage,
    quota: &berth_core::projects::Quota,
) -> Vec<String> {
    let of = |used: String, max: Option<String>| match max {
        Some(m) => format!("{used}/{m}"),
        None => used,
    };
    vec![
        of(
            usage.apps.to_string(),
            quota.max_apps.map(|m| m.to_string()),
        ),
        of(
            usage.instances.to_string(),
            quota.max_instances.map(|m| m.to_string()),
        ),
        of(
            format!("{}M", usage.memory_bytes >> 20),
            quota.max_memory_bytes.map(|m| format!("{}M", m >> 20)),
        ),
        of(
            format!("{}M", usage.volume_bytes >> 20),
            quota.max_volume_bytes.map(|m| format!("{}M", m >> 20)),
        ),
    ]
}

pub async fn projects(g: &Global, cmd: ProjectsCommand) -> Result<i32> {
    use berth_core::projects::ProjectView;
    let client = crate::client::discover(g)?;
    match cmd {
        ProjectsCommand::Create {
            name,
            tenant,
            quota,
        } => {
            berth_core::projects::check_project_name(&name).map_err(|e| anyhow!(e))?;
            let quota = quota_of(quota)?;
            let view: ProjectView = client
                .post_json(
                    "/v1/projects",
                    &serde_json::json!({ "name": name, "quota": quota, "tenant": tenant }),
                )
                .await?;
            if g.json {
                output::json(&view);
            } else {
                println!("project {} made in tenant {}", view.name, view.tenant);
            }
            Ok(0)
        }
        ProjectsCommand::List => {
            let list: Vec<ProjectView> = client.get_json("/v1/projects").await?;
            if g.json {
                output::json(&list);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|p| {
                    let mut row = vec![p.name.clone(), p.tenant.clone()];
                    row.extend(usage_cells(&p.usage, &p.quota));
                    row
                })
                .collect();
            output::table(
                &[
                    "PROJECT",
                    "TENANT",
                    "APPS",
                    "INSTANCES",
                    "MEMORY",
                    "VOLUMES",
                ],
                &rows,
            );
            Ok(0)
        }
    }
}

pub async fn tenants(g: &Global, cmd: TenantsCommand) -> Result<i32> {
    use berth_core::projects::TenantView;
    let client = crate::client::discover(g)?;
    match cmd {
        TenantsCommand::Create {
            name,
            quota,
            isolation,
            capabilities,
        } => {
            berth_core::projects::check_tenant_name(&name).map_err(|e| anyhow!(e))?;
            let quota = quota_of(quota)?;
            let policy = berth_core::projects::TenantPolicy {
                min_isolation: isolation
                    .map(|l| berth_core::policy::Isolation::parse(&l))
                    .transpose()
                    .map_err(|e| anyhow!("--isolation: {e}"))?,
                capabilities: capabilities.map(|c| {
                    c.split(',')
                        .map(str::trim)
                        .filter(|c| !c.is_empty() && *c != "none")
                        .map(str::to_string)
                        .collect()
                }),
            }
            .normalized()
            .map_err(|e| anyhow!("--capabilities: {e}"))?;
            let view: TenantView = client
                .post_json(
                    "/v1/tenants",
                    &serde_json::json!({ "name": name, "quota": quota, "policy": policy }),
                )
                .await?;
            if g.json {
                output::json(&view);
            } else {
                println!("tenant {} made", view.name);
            }
            Ok(0)
        }
        TenantsCommand::List => {
            let list: Vec<TenantView> = client.get_json("/v1/tenants").await?;
            if g.json {
                output::json(&list);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|t| {
                    let mut row = vec![t.name.clone(), t.projects.join(",")];
                    row.extend(usage_cells(&t.usage, &t.quota));
                    row.push(
                        t.policy
                            .min_isolation
                            .map_or("-", |i| i.as_str())
                            .to_string(),
                    );
                    row.push(match &t.policy.capabilities {
                        None => "-".into(),
                        Some(c) if c.is_empty() => "none".into(),
                        Some(c) => c.join(","),
                    });
                    row
                })
                .collect();
            output::table(
                &[
                    "TENANT",
                    "PROJECTS",
                    "APPS",
                    "INSTANCES",
                    "MEMORY",
                    "VOLUMES",
                    "LEAST ISOLATION",
                    "CAPABILITIES",
                ],
                &rows,
            );
            Ok(0)
        }
    }
}

/// `berth registry …`.
pub async fn registry(g: &Global, cmd: RegistryCommand) -> Result<i32> {
    use berth_core::registries::{RegistryLogin, RegistryView};
    let client = crate::client::discover(g)?;
    match cmd {
        RegistryCommand::Login {
            host,
            username,
            password_stdin,
            scope,
        } => {
            let password = if password_stdin {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .context("reading the password from standard input")?;
                text.trim_end_matches(['\n', '\r']).to_string()
            } else {
                std::env::var("BERTH_REGISTRY_PASSWORD").map_err(|_| {
                    anyhow!("no password: pass --password-stdin, or set BERTH_REGISTRY_PASSWORD")
                })?
            };
            let login = RegistryLogin {
                host,
                username,
                password,
                scope: scope.scope(),
            };
            berth_core::registries::check_login(&login).map_err(|e| anyhow!(e))?;
            let v: RegistryView = client
                .post_json("/v1/registries", &serde_json::to_value(&login)?)
                .await?;
            if g.json {
                output::json(&v);
            } else {
                println!(
                    "credentials for {} ({}) kept, for the deploys of {}",
                    v.host,
                    v.username,
                    v.scope.replacen(':', " ", 1)
                );
            }
            Ok(0)
        }
        RegistryCommand::List => {
            let list: Vec<RegistryView> = client.get_json("/v1/registries").await?;
            if g.json {
                output::json(&list);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|r| {
                    vec![
                        r.host.clone(),
                        r.scope.clone(),
                        r.username.clone(),
                        r.created_by.clone(),
                    ]
                })
                .collect();
            output::table(&["REGISTRY", "SCOPE", "USER", "GIVEN BY"], &rows);
            Ok(0)
        }
        RegistryCommand::Logout { host, scope } => {
            let path = berth_client::with_query(
                &format!("/v1/registries/{}", berth_client::path_segment(&host)),
                &[("scope", scope.scope())],
            );
            client.delete(&path).await?;
            println!("credentials for {host} forgotten");
            Ok(0)
        }
    }
}

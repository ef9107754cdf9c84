//! berth's MCP server. Its tools are the platform's HTTP API, called with the caller's
//! token: the same roles decide what an agent may do, the same validation refuses bad
//! input, and every change lands in the audit log (as client `mcp`). Errors come back as
//! tool results an agent can act on: `{"code", "message", "hint"}`, with the API's stable
//! codes. Secret values never come out, only their names.
#![forbid(unsafe_code)]

pub mod resources;

use berth_client::{app_path, with_query, ApiFailure, Client};
use berth_core::api::DeployEvent;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ServerCapabilities, ServerConfig};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{schemars, tool, tool_handler, tool_router, ErrorData, ServerHandler, ServiceExt};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

type ToolResult = Result<CallToolResult, ErrorData>;

/// The longest a deploy waits for a repository to be fetched.
const GIT_FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The API client for a tool call, or the tool's answer saying why there is none.
macro_rules! client_or_answer {
    ($server:expr, $ctx:expr) => {
        match $server.client(&$ctx) {
            Ok(c) => c,
            Err(r) => return Ok(r),
        }
    };
}

/// Whose API client a tool call uses.
#[derive(Clone)]
enum Caller {
    /// `berth mcp` on stdio: the CLI's client (its token); deploys may name a directory.
    Local(Arc<Client>),
    /// `/mcp` over HTTP: a client of the API at this address with the token of each HTTP
    /// request; deploys bring their source as an archive (never a path on the server).
    Remote { api: String },
}

/// The MCP server.
#[derive(Clone)]
pub struct BerthMcp {
    caller: Caller,
    tool_router: ToolRouter<Self>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct AppArg {
    /// The app's name.
    pub app: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct DeployArgs {
    /// A directory holding the app's source (a Procfile, berth.toml, requirements.txt,
    /// package.json, Cargo.toml, index.html, …), on the machine `berth mcp` runs on (stdio
    /// only).
    #[serde(default)]
    pub path: Option<String>,
    /// The source as a gzip-compressed tar archive, base64-encoded (needs `app`).
    #[serde(default)]
    pub archive_base64: Option<String>,
    /// A git repository to build from (https://, http://, git:// or ssh://); the release
    /// records the commit.
    #[serde(default)]
    pub git_url: Option<String>,
    /// With `git_url`: the branch, tag or commit to build (default: the repository's
    /// default branch).
    #[serde(default)]
    pub git_ref: Option<String>,
    /// An image in an OCI registry to deploy instead of building (`HOST[:PORT]/PATH:TAG`
    /// or `…@sha256:…`); the platform pulls it with the credentials it holds and pins the
    /// release to its digest (needs `app`).
    #[serde(default)]
    pub image: Option<String>,
    /// The app's name (default with `path`: `name` in berth.toml, else the directory's name).
    #[serde(default)]
    pub app: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ScaleArgs {
    pub app: String,
    /// Instances per process type, e.g. {"web": 3} (web at least 1, any type at most 16).
    pub processes: std::collections::BTreeMap<String, u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RollbackArgs {
    pub app: String,
    /// The release to return to (default: the one before the serving one).
    #[serde(default)]
    pub to: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct LogArgs {
    pub app: String,
    /// From this long ago (`30m`, `2h`) or this time (`2026-11-29T10:00:00Z`).
    #[serde(default)]
    pub since: Option<String>,
    /// Until this long ago or this time.
    #[serde(default)]
    pub until: Option<String>,
    /// A regular expression the line must match.
    #[serde(default)]
    pub grep: Option<String>,
    /// `runtime` (the app's output), `build`, `access` (the edge's log of its requests) or
    /// `platform` (crashes, restarts).
    #[serde(default)]
    pub stream: Option<String>,
    /// A process type, e.g. `web`.
    #[serde(default)]
    pub process: Option<String>,
    /// One release's lines.
    #[serde(default)]
    pub release: Option<u32>,
    /// At most this many lines, the most recent (default 100).
    #[serde(default)]
    pub lines: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ChangeArgs {
    pub app: String,
    /// Names and values to set.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Names to remove.
    #[serde(default)]
    pub unset: Vec<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct DoraArgs {
    /// One app (default: the whole platform).
    #[serde(default)]
    pub app: Option<String>,
    /// One project's apps together (instead of an app).
    #[serde(default)]
    pub project: Option<String>,
}

/// A failed call as a tool result an agent can act on.
fn failure(e: anyhow::Error) -> CallToolResult {
    let body = match e.downcast_ref::<ApiFailure>() {
        Some(f) => json!({ "code": f.body.code, "message": f.body.message, "hint": f.body.hint }),
        None => json!({ "code": "unavailable", "message": format!("{e:#}") }),
    };
    CallToolResult::structured_error(body)
}

fn answer(result: anyhow::Result<Value>) -> ToolResult {
    Ok(match result {
        Ok(v) => CallToolResult::structured(match v {
            // Structured content must be an object.
            Value::Object(_) => v,
            other => json!({ "items": other }),
        }),
        Err(e) => failure(e),
    })
}

/// A tool's failure before the API was called.
fn refused(code: &str, message: impl Into<String>, hint: &str) -> CallToolResult {
    CallToolResult::structured_error(
        json!({ "code": code, "message": message.into(), "hint": hint }),
    )
}

impl BerthMcp {
    /// A server whose tools call the API through `client` (stdio).
    pub fn local(client: Client) -> Self {
        Self {
            caller: Caller::Local(Arc::new(client)),
            tool_router: Self::tool_router(),
        }
    }

    /// A server whose tools call the API at `api` with each HTTP request's token.
    pub fn remote(api: &str) -> Self {
        Self {
            caller: Caller::Remote {
                api: api.to_string(),
            },
            tool_router: Self::tool_router(),
        }
    }

    /// The API client for this call.
    fn client(&self, ctx: &RequestContext<RoleServer>) -> Result<Arc<Client>, CallToolResult> {
        match &self.caller {
            Caller::Local(c) => Ok(c.clone()),
            Caller::Remote { api } => {
                let parts = ctx.extensions.get::<http::request::Parts>();
                let token = parts
                    .and_then(|p| p.headers.get("authorization"))
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .ok_or_else(|| {
                        refused(
                            "unauthorized",
                            "no API token",
                            "send Authorization: Bearer <token>",
                        )
                    })?;
                let agent: String = parts
                    .and_then(|p| p.headers.get("user-agent"))
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .chars()
                    .filter(|c| c.is_ascii_graphic() || *c == ' ')
                    .take(40)
                    .collect();
                Client::new(api, token.trim(), format!("mcp-http {agent}").trim())
                    .map(Arc::new)
                    .map_err(|e| refused("unavailable", format!("{e:#}"), "try again"))
            }
        }
    }

    /// The API client for a resource request; without a token, an MCP error.
    fn resource_client(&self, ctx: &RequestContext<RoleServer>) -> Result<Arc<Client>, ErrorData> {
        self.client(ctx).map_err(|_| {
            ErrorData::invalid_request(
                "no usable API token",
                Some(
                    json!({ "code": "unauthorized", "hint": "send Authorization: Bearer <token>" }),
                ),
            )
        })
    }

    /// One commit of a git repository, fetched and packed like a directory.
    async fn from_git(
        url: String,
        git_ref: Option<String>,
        app: Option<String>,
        by_platform: bool,
    ) -> Result<berth_client::upload::Upload, CallToolResult> {
        let git_ref = git_ref.unwrap_or_else(|| "HEAD".into());
        // By default the app is named after the repository.
        let app = app.or_else(|| berth_factory::git::suggested_app_name(&url));
        tokio::task::spawn_blocking(move || {
            let dir = tempfile::tempdir()
                .map_err(|e| failure(anyhow::anyhow!("a work directory: {e}")))?;
            // Over HTTP the platform fetches: with none of the host user's credentials.
            let fetched = if by_platform {
                berth_factory::git::fetch_with(&url, &git_ref, dir.path(), GIT_FETCH_TIMEOUT, None)
            } else {
                berth_factory::git::fetch(&url, &git_ref, dir.path(), GIT_FETCH_TIMEOUT)
            };
            fetched.map_err(|e| {
                let code = match e {
                    berth_factory::git::GitError::BadUrl(_) => "invalid_git_url",
                    berth_factory::git::GitError::BadRef(_) => "invalid_git_ref",
                    _ => "git_fetch_failed",
                };
                refused(
                    code,
                    e.to_string(),
                    "give a repository this platform can reach and a branch, tag or commit in it",
                )
            })?;
            let limit = berth_factory::source::DEFAULT_UPLOAD_LIMIT;
            berth_client::upload::prepare(dir.path(), app, limit).map_err(failure)
        })
        .await
        .map_err(|e| failure(anyhow::anyhow!("fetching failed: {e}")))?
    }

    /// The source a deploy brings: a packed directory (stdio), an archive, or a commit of a
    /// git repository.
    async fn source(&self, a: DeployArgs) -> Result<berth_client::upload::Upload, CallToolResult> {
        if let Some(url) = a.git_url {
            if a.path.is_some() || a.archive_base64.is_some() {
                return Err(refused(
                    "invalid_arguments",
                    "give one of path, archive_base64 or git_url",
                    "git_url (with git_ref) builds a commit of a repository",
                ));
            }
            let by_platform = matches!(self.caller, Caller::Remote { .. });
            return Self::from_git(url, a.git_ref, a.app, by_platform).await;
        }
        match (a.path, a.archive_base64) {
            (Some(_), Some(_)) => Err(refused(
                "invalid_arguments",
                "give either path or archive_base64, not both",
                "path for a directory on this machine, archive_base64 for a .tar.gz",
            )),
            (Some(path), None) => {
                if matches!(self.caller, Caller::Remote { .. }) {
                    return Err(refused(
                        "path_not_allowed",
                        "a deploy over HTTP cannot name a directory on the server",
                        "send the source as archive_base64 (a base64 .tar.gz) with app",
                    ));
                }
                let limit = berth_factory::source::DEFAULT_UPLOAD_LIMIT;
                let app = a.app;
                tokio::task::spawn_blocking(move || {
                    berth_client::upload::prepare(std::path::Path::new(&path), app, limit)
                })
                .await
                .map_err(|e| failure(anyhow::anyhow!("packing failed: {e}")))?
                .map_err(failure)
            }
            (None, Some(b64)) => {
                let Some(app) = a.app else {
                    return Err(refused(
                        "invalid_arguments",
                        "a deploy of an archive needs app",
                        "name the app (a DNS label)",
                    ));
                };
                let app = berth_core::AppName::parse(&app).map_err(|e| {
                    refused(
                        "invalid_app_name",
                        e.to_string(),
                        "app names are DNS labels",
                    )
                })?;
                use base64::Engine as _;
                let archive = base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|e| {
                        refused(
                            "invalid_archive",
                            format!("archive_base64: {e}"),
                            "base64 of a .tar.gz",
                        )
                    })?;
                Ok(berth_client::upload::Upload {
                    path: format!("/v1/apps/{app}/deploys"),
                    app,
                    archive,
                    commit: None,
                })
            }
            (None, None) => Err(refused(
                "invalid_arguments",
                "a deploy needs path or archive_base64",
                "path for a directory on this machine, archive_base64 for a .tar.gz",
            )),
        }
    }

    /// Runs a workflow and sums it up: the release and URL, or the error and the last lines
    /// of output.
    async fn workflow(
        client: &Client,
        method: reqwest::Method,
        path: &str,
        body: Option<(reqwest::Body, &'static str)>,
        json_body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut steps: Vec<String> = Vec::new();
        let last = client
            .workflow(method, path, body, json_body, |e| {
                if let DeployEvent::Step { step } = e {
                    steps.push(step.clone());
                }
            })
            .await?;
        match last {
            DeployEvent::Done { release, url } => {
                Ok(json!({ "release": release, "url": url, "steps": steps }))
            }
            DeployEvent::Stored { message } => Ok(json!({ "stored": true, "message": message })),
            DeployEvent::Failed { error, log_tail } => Err(anyhow::Error::new(ApiFailure {
                body: berth_core::api::ErrorBody {
                    hint: Some(match error.hint {
                        Some(h) => format!("{h}; last output: {}", log_tail.join(" | ")),
                        None => format!("last output: {}", log_tail.join(" | ")),
                    }),
                    ..error
                },
            })),
            other => Err(anyhow::anyhow!("unexpected event {other:?}")),
        }
    }
}

#[tool_router]
impl BerthMcp {
    #[tool(
        description = "List the apps: name, URL, serving release, running instances, isolation."
    )]
    async fn list_apps(&self, ctx: RequestContext<RoleServer>) -> ToolResult {
        let client = client_or_answer!(self, ctx);
        answer(client.get_json::<Value>("/v1/apps").await)
    }

    #[tool(description = "One app's state: its releases (newest first) and its instances.")]
    async fn app_status(
        &self,
        Parameters(a): Parameters<AppArg>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let client = client_or_answer!(self, ctx);
        let both = async {
            let releases = client
                .get_json::<Value>(&app_path(&a.app, "/releases"))
                .await?;
            let instances = client
                .get_json::<Value>(&app_path(&a.app, "/instances"))
                .await?;
            Ok(json!({ "releases": releases, "instances": instances }))
        };
        answer(both.await)
    }

    #[tool(
        description = "Build and deploy an app (created if new) from a directory on this machine (stdio), a base64 .tar.gz archive (a Dockerfile in it is built with buildah), or a git repository URL and ref (the release records the commit); or deploy an image from an OCI registry (`image`, pinned by digest). Zero-downtime; a failed build or health check leaves the serving release alone. Returns the release and its URL."
    )]
    async fn deploy(
        &self,
        Parameters(a): Parameters<DeployArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let client = client_or_answer!(self, ctx);
        if let Some(image) = a.image.clone() {
            if a.path.is_some() || a.archive_base64.is_some() || a.git_url.is_some() {
                return Ok(refused(
                    "invalid_arguments",
                    "give either image or a source (path, archive_base64, git_url), not both",
                    "image deploys an image from a registry; the others build a source",
                ));
            }
            let Some(app) = a.app.clone() else {
                return Ok(refused(
                    "invalid_arguments",
                    "deploying an image needs app",
                    "name the app, e.g. {\"image\": \"registry.example.com/team/web:1.4\", \"app\": \"web\"}",
                ));
            };
            return answer(
                Self::workflow(
                    &client,
                    reqwest::Method::POST,
                    &app_path(&app, "/deploys/image"),
                    None,
                    Some(json!({ "image": image })),
                )
                .await
                .map(|mut v| {
                    v["app"] = json!(app);
                    v
                }),
            );
        }
        // Fetching a URL is a deployer's act: a viewer never makes the platform connect
        // anywhere (the deploy it would lead to is refused anyway, but only after).
        if a.git_url.is_some() {
            match client
                .get_json::<berth_core::auth::WhoAmI>("/v1/whoami")
                .await
            {
                Ok(who) if who.role >= berth_core::auth::Role::Deployer => {}
                Ok(who) => {
                    return Ok(refused(
                        "forbidden",
                        format!(
                            "{} ({}) may not deploy from a git URL: fetching needs role deployer or above",
                            who.name,
                            who.role.as_str()
                        ),
                        "use a deployer's token",
                    ))
                }
                Err(e) => return Ok(failure(e)),
            }
        }
        let upload = match self.source(a).await {
            Ok(u) => u,
            Err(r) => return Ok(r),
        };
        answer(
            Self::workflow(
                &client,
                reqwest::Method::POST,
                &upload.path,
                Some((reqwest::Body::from(upload.archive), "application/gzip")),
                None,
            )
            .await
            .map(|mut v| {
                v["app"] = json!(upload.app.as_str());
                v
            }),
        )
    }

    #[tool(
        description = "Go back to an earlier release (default: the previous one) without rebuilding."
    )]
    async fn rollback(
        &self,
        Parameters(a): Parameters<RollbackArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let client = client_or_answer!(self, ctx);
        let path = app_path(&a.app, "/rollback");
        answer(
            Self::workflow(
                &client,
                reqwest::Method::POST,
                &path,
                None,
                Some(json!({ "to": a.to })),
            )
            .await,
        )
    }

    #[tool(
        description = "Run more or fewer instances of an app's process types, e.g. {\"app\": \"shop\", \"processes\": {\"web\": 3}}: a new release of the same image, rolled out without downtime; the edge spreads requests over the web instances."
    )]
    async fn scale(
        &self,
        Parameters(a): Parameters<ScaleArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let client = client_or_answer!(self, ctx);
        answer(
            Self::workflow(
                &client,
                reqwest::Method::POST,
                &app_path(&a.app, "/scale"),
                None,
                Some(json!({ "processes": a.processes })),
            )
            .await,
        )
    }

    #[tool(description = "An app's releases: version, image, what made it, status, who, when.")]
    async fn releases(
        &self,
        Parameters(a): Parameters<AppArg>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let client = client_or_answer!(self, ctx);
        answer(
            client
                .get_json::<Value>(&app_path(&a.app, "/releases"))
                .await,
        )
    }

    #[tool(
        description = "Search an app's logs by time, text (regex), stream (runtime, build, access, platform), process and release; the most recent lines first limited by `lines`, returned oldest first."
    )]
    async fn logs(
        &self,
        Parameters(a): Parameters<LogArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let client = client_or_answer!(self, ctx);
        let path = with_query(
            &app_path(&a.app, "/logs"),
            &[
                ("lines", Some(a.lines.unwrap_or(100).to_string())),
                ("since", a.since),
                ("until", a.until),
                ("grep", a.grep),
                ("stream", a.stream),
                ("process", a.process),
                ("release", a.release.map(|r| r.to_string())),
            ],
        );
        let mut lines: Vec<Value> = Vec::new();
        let read = client
            .get_lines(&path, |l| {
                let v: Value = serde_json::from_str(l)?;
                lines.push(json!({
                    "ts": v["ts"], "release": v["release"], "process": v["process"],
                    "instance": v["index"], "stream": v["stream"], "line": v["line"],
                }));
                Ok(())
            })
            .await;
        answer(read.map(|_| json!({ "lines": lines })))
    }

    #[tool(description = "The output of an app's last build.")]
    async fn build_log(
        &self,
        Parameters(a): Parameters<AppArg>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let client = client_or_answer!(self, ctx);
        let text = client
            .get_text(&app_path(&a.app, "/builds/latest/log"))
            .await;
        answer(text.map(|t| json!({ "log": t })))
    }

    #[tool(description = "An app's environment variables (secrets are not among them).")]
    async fn env_list(
        &self,
        Parameters(a): Parameters<AppArg>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let client = client_or_answer!(self, ctx);
        answer(client.get_json::<Value>(&app_path(&a.app, "/env")).await)
    }

    #[tool(description = "Set and/or unset environment variables: a new release, zero downtime.")]
    async fn env_change(
        &self,
        Parameters(a): Parameters<ChangeArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let client = client_or_answer!(self, ctx);
        let path = app_path(&a.app, "/env");
        let body = json!({ "set": a.set, "unset": a.unset });
        answer(Self::workflow(&client, reqwest::Method::POST, &path, None, Some(body)).await)
    }

    #[tool(description = "An app's secrets: names and versions only (values never come out).")]
    async fn secrets_list(
        &self,
        Parameters(a): Parameters<AppArg>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let client = client_or_answer!(self, ctx);
        answer(
            client
                .get_json::<Value>(&app_path(&a.app, "/secrets"))
                .await,
        )
    }

    #[tool(
        description = "Set and/or unset secrets (encrypted at rest, redacted from logs): a new release, zero downtime. The values are never shown again."
    )]
    async fn secrets_change(
        &self,
        Parameters(a): Parameters<ChangeArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let client = client_or_answer!(self, ctx);
        let path = app_path(&a.app, "/secrets");
        let body = json!({ "set": a.set, "unset": a.unset });
        answer(Self::workflow(&client, reqwest::Method::POST, &path, None, Some(body)).await)
    }

    #[tool(description = "An app's domains and their certificates.")]
    async fn domains_list(
        &self,
        Parameters(a): Parameters<AppArg>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let client = client_or_answer!(self, ctx);
        answer(
            client
                .get_json::<Value>(&app_path(&a.app, "/domains"))
                .await,
        )
    }

    #[tool(description = "An app's volumes: size, use, mount point, snapshots.")]
    async fn volumes_list(
        &self,
        Parameters(a): Parameters<AppArg>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let client = client_or_answer!(self, ctx);
        answer(
            client
                .get_json::<Value>(&app_path(&a.app, "/volumes"))
                .await,
        )
    }

    #[tool(description = "An app's PostgreSQL database, if it has one (never its password).")]
    async fn database_info(
        &self,
        Parameters(a): Parameters<AppArg>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let client = client_or_answer!(self, ctx);
        answer(
            client
                .get_json::<Value>(&app_path(&a.app, "/database"))
                .await,
        )
    }

    #[tool(
        description = "On a platform whose apps run in a Kubernetes cluster: what differs between the cluster and what berth applied for an app (fields changed by hand, objects deleted or left over; empty: nothing). Secret values never come out."
    )]
    async fn cluster_drift(
        &self,
        Parameters(a): Parameters<AppArg>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let client = client_or_answer!(self, ctx);
        answer(client.get_json::<Value>(&app_path(&a.app, "/drift")).await)
    }

    #[tool(description = "An app's SLOs: objectives, error budget left, burn rates.")]
    async fn slo(
        &self,
        Parameters(a): Parameters<AppArg>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let client = client_or_answer!(self, ctx);
        answer(client.get_json::<Value>(&app_path(&a.app, "/slo")).await)
    }

    #[tool(
        description = "DORA four keys (deployment frequency, lead time, change failure rate, time to restore) with their performance band, for an app, a project or the platform."
    )]
    async fn dora(
        &self,
        Parameters(a): Parameters<DoraArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult {
        let client = client_or_answer!(self, ctx);
        answer(
            client
                .get_json::<Value>(&with_query(
                    "/v1/dora",
                    &[("app", a.app), ("project", a.project)],
                ))
                .await,
        )
    }

    #[tool(
        description = "Alerts firing now (SLO burn, app down, crash loops, disk, certificates, backups)."
    )]
    async fn alerts(&self, ctx: RequestContext<RoleServer>) -> ToolResult {
        let client = client_or_answer!(self, ctx);
        answer(client.get_json::<Value>("/v1/alerts").await)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for BerthMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_instructions(
            "berth runs apps on this platform: deploy a directory, read logs, roll back, change env and secrets, read SLOs and DORA. Each app's spec is a resource, berth://apps/NAME. What you may do depends on your token's role (viewer, deployer, admin); every change is audited. Errors carry a stable `code`, a `message` and a `hint`.",
        )
    }

    async fn list_resources(
        &self,
        _request: Option<rmcp::model::PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourcesResult, ErrorData> {
        let client = self.resource_client(&ctx)?;
        resources::list(&client).await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<rmcp::model::PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourceTemplatesResult, ErrorData> {
        Ok(resources::templates())
    }

    async fn read_resource(
        &self,
        request: rmcp::model::ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ReadResourceResponse, ErrorData> {
        let client = self.resource_client(&ctx)?;
        resources::read(&client, &request.uri).await.map(Into::into)
    }
}

/// The MCP service mounted at `/mcp`.
pub type HttpService = rmcp::transport::streamable_http_server::StreamableHttpService<
    BerthMcp,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
>;

/// The streamable-HTTP MCP service for `/mcp`: each tool call acts with the bearer token of
/// the HTTP request that carries it, against the API at `api`. Requests whose Host is not
/// one of `hosts` are refused (DNS rebinding).
pub fn http_service(
    api: &str,
    hosts: Vec<String>,
    stop: tokio_util::sync::CancellationToken,
) -> HttpService {
    let api = api.to_string();
    rmcp::transport::streamable_http_server::StreamableHttpService::new(
        move || Ok(BerthMcp::remote(&api)),
        Default::default(),
        rmcp::transport::streamable_http_server::StreamableHttpServerConfig::default()
            .with_allowed_hosts(hosts)
            .with_cancellation_token(stop),
    )
}

/// Serves MCP over stdin/stdout until the client goes away.
pub async fn serve_stdio(client: Client) -> anyhow::Result<()> {
    let service = BerthMcp::local(client)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| anyhow::anyhow!("starting the MCP server: {e}"))?;
    service
        .waiting()
        .await
        .map_err(|e| anyhow::anyhow!("the MCP session failed: {e}"))?;
    Ok(())
}

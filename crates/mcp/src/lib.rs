//! berth's MCP server. Its tools are the platform's HTTP API, called with the caller's
//! token: the same roles decide what an agent may do, the same validation refuses bad
//! input, and every change lands in the audit log (as client `mcp`). Errors come back as
//! tool results an agent can act on: `{"code", "message", "hint"}`, with the API's stable
//! codes. Secret values never come out, only their names.
#![forbid(unsafe_code)]

use berth_client::{ApiFailure, Client};
use berth_core::api::DeployEvent;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ServerCapabilities, ServerConfig};
use rmcp::{schemars, tool, tool_handler, tool_router, ErrorData, ServerHandler, ServiceExt};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

type ToolResult = Result<CallToolResult, ErrorData>;

/// The MCP server over one API client.
#[derive(Clone)]
pub struct BerthMcp {
    client: Arc<Client>,
    tool_router: ToolRouter<Self>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct AppArg {
    /// The app's name.
    pub app: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct DeployArgs {
    /// A directory on this machine holding the app's source (a Procfile, berth.toml,
    /// requirements.txt, package.json, Cargo.toml, index.html, …).
    pub path: String,
    /// The app's name (default: `name` in berth.toml, else the directory's name).
    #[serde(default)]
    pub app: Option<String>,
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

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let q: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect();
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

/// Percent-encodes a query value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An app name as a path segment: anything else is refused by the API as it is.
fn seg(app: &str) -> String {
    encode(app)
}

impl BerthMcp {
    /// A server whose tools call the API through `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client: Arc::new(client),
            tool_router: Self::tool_router(),
        }
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.client.get_json(path).await
    }

    /// Runs a workflow and sums it up: the release and URL, or the error and the last lines
    /// of output.
    async fn workflow(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(reqwest::Body, &'static str)>,
        json_body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut steps: Vec<String> = Vec::new();
        let last = self
            .client
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
    async fn list_apps(&self) -> ToolResult {
        answer(self.get("/v1/apps").await)
    }

    #[tool(description = "One app's state: its releases (newest first) and its instances.")]
    async fn app_status(&self, Parameters(a): Parameters<AppArg>) -> ToolResult {
        let app = seg(&a.app);
        let both = async {
            let releases = self.get(&format!("/v1/apps/{app}/releases")).await?;
            let instances = self.get(&format!("/v1/apps/{app}/instances")).await?;
            Ok(json!({ "releases": releases, "instances": instances }))
        };
        answer(both.await)
    }

    #[tool(
        description = "Build and deploy a directory on this machine as an app (created if new). Zero-downtime; a failed build or health check leaves the serving release alone. Returns the release and its URL."
    )]
    async fn deploy(&self, Parameters(a): Parameters<DeployArgs>) -> ToolResult {
        let limit = berth_factory_limit();
        let path = std::path::PathBuf::from(&a.path);
        let prepared =
            tokio::task::spawn_blocking(move || berth_client::upload::prepare(&path, a.app, limit))
                .await;
        let upload = match prepared {
            Ok(Ok(u)) => u,
            Ok(Err(e)) => return Ok(failure(e)),
            Err(e) => return Ok(failure(anyhow::anyhow!("packing failed: {e}"))),
        };
        answer(
            self.workflow(
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
    async fn rollback(&self, Parameters(a): Parameters<RollbackArgs>) -> ToolResult {
        let path = format!("/v1/apps/{}/rollback", seg(&a.app));
        answer(
            self.workflow(
                reqwest::Method::POST,
                &path,
                None,
                Some(json!({ "to": a.to })),
            )
            .await,
        )
    }

    #[tool(description = "An app's releases: version, image, what made it, status, who, when.")]
    async fn releases(&self, Parameters(a): Parameters<AppArg>) -> ToolResult {
        answer(
            self.get(&format!("/v1/apps/{}/releases", seg(&a.app)))
                .await,
        )
    }

    #[tool(
        description = "Search an app's logs by time, text (regex), stream (runtime, build, access, platform), process and release; the most recent lines first limited by `lines`, returned oldest first."
    )]
    async fn logs(&self, Parameters(a): Parameters<LogArgs>) -> ToolResult {
        let path = format!(
            "/v1/apps/{}/logs{}",
            seg(&a.app),
            query(&[
                ("lines", Some(a.lines.unwrap_or(100).to_string())),
                ("since", a.since),
                ("until", a.until),
                ("grep", a.grep),
                ("stream", a.stream),
                ("process", a.process),
                ("release", a.release.map(|r| r.to_string())),
            ])
        );
        let mut lines: Vec<Value> = Vec::new();
        let read = self
            .client
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
    async fn build_log(&self, Parameters(a): Parameters<AppArg>) -> ToolResult {
        let text = self
            .client
            .get_text(&format!("/v1/apps/{}/builds/latest/log", seg(&a.app)))
            .await;
        answer(text.map(|t| json!({ "log": t })))
    }

    #[tool(description = "An app's environment variables (secrets are not among them).")]
    async fn env_list(&self, Parameters(a): Parameters<AppArg>) -> ToolResult {
        answer(self.get(&format!("/v1/apps/{}/env", seg(&a.app))).await)
    }

    #[tool(description = "Set and/or unset environment variables: a new release, zero downtime.")]
    async fn env_change(&self, Parameters(a): Parameters<ChangeArgs>) -> ToolResult {
        let path = format!("/v1/apps/{}/env", seg(&a.app));
        let body = json!({ "set": a.set, "unset": a.unset });
        answer(
            self.workflow(reqwest::Method::POST, &path, None, Some(body))
                .await,
        )
    }

    #[tool(description = "An app's secrets: names and versions only (values never come out).")]
    async fn secrets_list(&self, Parameters(a): Parameters<AppArg>) -> ToolResult {
        answer(self.get(&format!("/v1/apps/{}/secrets", seg(&a.app))).await)
    }

    #[tool(
        description = "Set and/or unset secrets (encrypted at rest, redacted from logs): a new release, zero downtime. The values are never shown again."
    )]
    async fn secrets_change(&self, Parameters(a): Parameters<ChangeArgs>) -> ToolResult {
        let path = format!("/v1/apps/{}/secrets", seg(&a.app));
        let body = json!({ "set": a.set, "unset": a.unset });
        answer(
            self.workflow(reqwest::Method::POST, &path, None, Some(body))
                .await,
        )
    }

    #[tool(description = "An app's domains and their certificates.")]
    async fn domains_list(&self, Parameters(a): Parameters<AppArg>) -> ToolResult {
        answer(self.get(&format!("/v1/apps/{}/domains", seg(&a.app))).await)
    }

    #[tool(description = "An app's volumes: size, use, mount point, snapshots.")]
    async fn volumes_list(&self, Parameters(a): Parameters<AppArg>) -> ToolResult {
        answer(self.get(&format!("/v1/apps/{}/volumes", seg(&a.app))).await)
    }

    #[tool(description = "An app's PostgreSQL database, if it has one (never its password).")]
    async fn database_info(&self, Parameters(a): Parameters<AppArg>) -> ToolResult {
        answer(
            self.get(&format!("/v1/apps/{}/database", seg(&a.app)))
                .await,
        )
    }

    #[tool(description = "An app's SLOs: objectives, error budget left, burn rates.")]
    async fn slo(&self, Parameters(a): Parameters<AppArg>) -> ToolResult {
        answer(self.get(&format!("/v1/apps/{}/slo", seg(&a.app))).await)
    }

    #[tool(
        description = "DORA four keys (deployment frequency, lead time, change failure rate, time to restore) with their performance band, for an app or the platform."
    )]
    async fn dora(&self, Parameters(a): Parameters<DoraArgs>) -> ToolResult {
        answer(
            self.get(&format!("/v1/dora{}", query(&[("app", a.app)])))
                .await,
        )
    }

    #[tool(
        description = "Alerts firing now (SLO burn, app down, crash loops, disk, certificates, backups)."
    )]
    async fn alerts(&self) -> ToolResult {
        answer(self.get("/v1/alerts").await)
    }
}

/// The upload limit for deploys (as the CLI's).
fn berth_factory_limit() -> u64 {
    std::env::var("BERTH_UPLOAD_LIMIT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(berth_factory::source::DEFAULT_UPLOAD_LIMIT)
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for BerthMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_instructions(
            "berth runs apps on this platform: deploy a directory, read logs, roll back, change env and secrets, read SLOs and DORA. What you may do depends on your token's role (viewer, deployer, admin); every change is audited. Errors carry a stable `code`, a `message` and a `hint`.",
        )
    }
}

/// Serves MCP over stdin/stdout until the client goes away.
pub async fn serve_stdio(client: Client) -> anyhow::Result<()> {
    let service = BerthMcp::new(client)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| anyhow::anyhow!("starting the MCP server: {e}"))?;
    service
        .waiting()
        .await
        .map_err(|e| anyhow::anyhow!("the MCP session failed: {e}"))?;
    Ok(())
}

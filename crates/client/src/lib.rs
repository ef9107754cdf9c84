//! The HTTP API client of the CLI and the MCP server: finds the API address and token,
//! sends requests, and turns API errors into messages with hints.
#![forbid(unsafe_code)]

pub mod credentials;
pub mod load;
pub mod upload;

use anyhow::{anyhow, Context, Result};
use berth_core::api::{ErrorBody, ACTOR_HEADER};
use futures_util::StreamExt;
use std::path::PathBuf;

/// An error the API returned.
#[derive(Debug, thiserror::Error)]
#[error("{}", .body.message)]
pub struct ApiFailure {
    /// Structured error.
    pub body: ErrorBody,
}

/// `path?key=value&…` with the pairs that have a value, encoded.
pub fn with_query(path: &str, pairs: &[(&str, Option<String>)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (k, v) in pairs {
        if let Some(v) = v {
            q.append_pair(k, v);
            any = true;
        }
    }
    if any {
        format!("{path}?{}", q.finish())
    } else {
        path.to_string()
    }
}

/// `text` encoded as one path segment.
pub fn path_segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// An app's API path, `/v1/apps/<app>` then `rest` (the name encoded as a path segment).
pub fn app_path(app: &str, rest: &str) -> String {
    format!("/v1/apps/{}{rest}", path_segment(app))
}

/// The default data directory: `$XDG_DATA_HOME/berth`, else `~/.local/share/berth`.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("berth");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    home.join(".local/share/berth")
}

/// Where the API is and how to call it.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// The data directory of the platform (where `berth up` writes api.json and api-token).
    pub data_dir: Option<PathBuf>,
    /// The API's URL, instead of the data directory's api.json.
    pub api_url: Option<String>,
    /// The token, instead of the data directory's api-token.
    pub token: Option<String>,
    /// What this client calls itself in the audit log, before `user@host`.
    pub client: String,
}

impl Target {
    /// The API's base URL: `--api-url`/`BERTH_API_URL`, else the data directory's api.json.
    pub fn api_base(&self) -> Result<String> {
        let dir = self.data_dir();
        Ok(match &self.api_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => {
                let info = dir.join("api.json");
                let text = std::fs::read_to_string(&info).map_err(|_| {
                    anyhow!(
                        "berth does not seem to be running: {} not found\nhint: start it with `berth up` (or pass --data-dir / BERTH_API_URL)",
                        info.display()
                    )
                })?;
                let v: serde_json::Value = serde_json::from_str(&text)
                    .with_context(|| format!("reading {}", info.display()))?;
                v["url"]
                    .as_str()
                    .ok_or_else(|| anyhow!("{} has no url", info.display()))?
                    .to_string()
            }
        })
    }

    /// The data directory, made absolute.
    pub fn data_dir(&self) -> PathBuf {
        let d = self.data_dir.clone().unwrap_or_else(default_data_dir);
        if d.is_absolute() {
            d
        } else {
            std::env::current_dir().map(|c| c.join(&d)).unwrap_or(d)
        }
    }
}

/// API client.
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
    actor: String,
}

impl Client {
    /// Finds the API: `--api-url`/`BERTH_API_URL` and `--token`/`BERTH_TOKEN`, else the files
    /// `berth up` wrote into the data directory.
    pub fn discover(target: &Target) -> Result<Self> {
        let dir = target.data_dir();
        let base = target.api_base()?;
        // A token given outright, else a person's sign-in (`berth login`) for this API, else
        // the data directory's admin token.
        let signed_in = || credentials::load(&base).ok().flatten();
        let token = match (&target.token, signed_in()) {
            (Some(t), _) => t.clone(),
            (None, Some(login)) => login.id_token,
            (None, None) => {
                let path = dir.join("api-token");
                std::fs::read_to_string(&path)
                    .map_err(|e| {
                        anyhow!(
                            "cannot read the API token {}: {e}\nhint: run as the user that runs `berth up`, or set BERTH_TOKEN",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| {
                nix::unistd::User::from_uid(nix::unistd::getuid())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .unwrap_or_else(|| "unknown".into());
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        Ok(Self {
            base,
            token,
            http: reqwest::Client::builder()
                .build()
                .context("creating the HTTP client")?,
            actor: format!("{} {user}@{}", target.client, host.trim()),
        })
    }

    /// The API's base URL (`http://127.0.0.1:7070`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The token this client presents.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// A client of the API at `base` with `token`, calling itself `actor` in the audit log.
    pub fn new(base: &str, token: &str, actor: &str) -> Result<Self> {
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: reqwest::Client::builder()
                .build()
                .context("creating the HTTP client")?,
            actor: actor.to_string(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header(ACTOR_HEADER, &self.actor)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| {
            anyhow!(
                "cannot reach the berth API at {}: {e}\nhint: is `berth up` running?",
                self.base
            )
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => Err(ApiFailure { body }.into()),
            Err(_) => Err(anyhow!("the API answered {status}: {}", text.trim())),
        }
    }

    /// GET returning JSON.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.send(self.request(reqwest::Method::GET, path)).await?;
        resp.json().await.context("reading the API's answer")
    }

    /// GET returning text.
    pub async fn get_text(&self, path: &str) -> Result<String> {
        let resp = self.send(self.request(reqwest::Method::GET, path)).await?;
        resp.text().await.context("reading the API's answer")
    }

    /// POST JSON, returning JSON.
    pub async fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T> {
        let resp = self
            .send(self.request(reqwest::Method::POST, path).json(body))
            .await?;
        resp.json().await.context("reading the API's answer")
    }

    /// POST JSON with extra headers, returning JSON.
    /// POST a body of `content_type`; the answer as JSON.
    pub async fn post_bytes_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<T> {
        let req = self
            .request(reqwest::Method::POST, path)
            .header("content-type", content_type)
            .body(body);
        let resp = self.send(req).await?;
        resp.json().await.context("reading the API's answer")
    }

    pub async fn post_json_with<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> Result<T> {
        let mut req = self.request(reqwest::Method::POST, path).json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self.send(req).await?;
        resp.json().await.context("reading the API's answer")
    }

    /// POST JSON, expecting no content.
    pub async fn post_empty(&self, path: &str, body: &serde_json::Value) -> Result<()> {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await?;
        Ok(())
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.send(self.request(reqwest::Method::DELETE, path))
            .await?;
        Ok(())
    }

    /// POST (or `method`) a body; the answer is an NDJSON stream handed to `on_line` line by
    /// line.
    pub async fn send_lines(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(reqwest::Body, &'static str)>,
        json: Option<serde_json::Value>,
        on_line: impl FnMut(&str) -> Result<()>,
    ) -> Result<()> {
        let mut req = self.request(method, path);
        if let Some((b, ct)) = body {
            req = req.header("content-type", ct).body(b);
        }
        if let Some(j) = json {
            req = req.json(&j);
        }
        let resp = self.send(req).await?;
        read_lines(resp, on_line).await
    }

    /// Runs a deploy-like workflow (its answer a stream of deploy events), handing each
    /// step and log line to `on_event`; returns the final event (done, stored or failed).
    pub async fn workflow(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(reqwest::Body, &'static str)>,
        json: Option<serde_json::Value>,
        mut on_event: impl FnMut(&berth_core::api::DeployEvent),
    ) -> Result<berth_core::api::DeployEvent> {
        use berth_core::api::DeployEvent;
        let mut outcome: Option<DeployEvent> = None;
        self.send_lines(method, path, body, json, |line| {
            let event: DeployEvent = serde_json::from_str(line)
                .with_context(|| format!("unexpected line from the API: {line}"))?;
            match &event {
                DeployEvent::Step { .. } | DeployEvent::Log { .. } => on_event(&event),
                _ => outcome = Some(event),
            }
            Ok(())
        })
        .await?;
        outcome.ok_or_else(|| {
            anyhow!("the API closed the connection before the result arrived\nhint: see `berth releases` and the output of `berth up`")
        })
    }

    /// GET an NDJSON stream.
    pub async fn get_lines(
        &self,
        path: &str,
        on_line: impl FnMut(&str) -> Result<()>,
    ) -> Result<()> {
        let resp = self.send(self.request(reqwest::Method::GET, path)).await?;
        read_lines(resp, on_line).await
    }
}

async fn read_lines(
    resp: reqwest::Response,
    mut on_line: impl FnMut(&str) -> Result<()>,
) -> Result<()> {
    let mut stream = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("the connection to the API broke")?;
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end();
            if !text.is_empty() {
                on_line(text)?;
            }
        }
    }
    if !buf.is_empty() {
        on_line(String::from_utf8_lossy(&buf).trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries_are_encoded() {
        assert_eq!(
            with_query(
                "/v1/audit",
                &[("since", Some("1h".into())), ("actor", None)]
            ),
            "/v1/audit?since=1h"
        );
        assert_eq!(
            with_query("/x", &[("grep", Some("a b&c=(".into()))]),
            "/x?grep=a+b%26c%3D%28"
        );
        assert_eq!(with_query("/x", &[("a", None)]), "/x");
        assert_eq!(app_path("shop", "/logs"), "/v1/apps/shop/logs");
        assert_eq!(app_path("a/../b", ""), "/v1/apps/a%2F%2E%2E%2Fb");
    }
}

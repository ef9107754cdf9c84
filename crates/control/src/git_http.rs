//! `git push` to berth: git's smart HTTP protocol at `/git/APP.git`, served by `git
//! http-backend` (CGI) over each app's bare repository (`berth_factory::git_repos`). The API's
//! guard has already checked the token (git sends it as the password of HTTP Basic auth):
//! fetching needs a viewer, pushing a deployer. A push runs the repository's `pre-receive`
//! hook (`berth git-hook`), which deploys the pushed commit through the API *as the pusher*
//! — the hook gets the pusher's own token — and streams the build to them; a failed deploy
//! rejects the push, so the branch never names a commit that did not deploy.

use crate::error::ApiError;
use crate::platform::Platform;
use crate::tokens::Principal;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use berth_core::auth::Role;
use berth_core::names::AppName;
use serde::Deserialize;
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The services git asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    /// Fetch and clone.
    UploadPack,
    /// Push.
    ReceivePack,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Self::UploadPack => "git-upload-pack",
            Self::ReceivePack => "git-receive-pack",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "git-upload-pack" => Some(Self::UploadPack),
            "git-receive-pack" => Some(Self::ReceivePack),
            _ => None,
        }
    }
}

/// `?service=` of `info/refs`.
#[derive(Debug, Deserialize)]
pub struct InfoRefsQuery {
    service: Option<String>,
}

/// The app of `APP.git`.
fn repo_app(repo: &str) -> Result<AppName, ApiError> {
    let stem = repo.strip_suffix(".git").unwrap_or(repo);
    AppName::parse(stem).map_err(|e| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "repository_not_found",
            format!("{repo:?} is no app repository: {e}"),
        )
        .hint("the remote is /git/APP.git; `berth git remote APP` prints it")
    })
}

/// The token the request came with (Basic password or Bearer), for the hook to act as the
/// pusher.
fn presented_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(t) = value.strip_prefix("Bearer ") {
        return Some(t.trim().to_string());
    }
    crate::guard::basic_password(value)
}

/// Pushing deploys: a deployer's. (A token limited to a project reaches only its apps: the
/// guard answers others as if they did not exist.)
fn may_push(who: &Principal) -> Result<(), ApiError> {
    if who.role < Role::Deployer {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{} ({}) may not push: deploying needs role deployer or above",
                who.name,
                who.role.as_str()
            ),
        )
        .hint("push with a deployer's token"));
    }
    Ok(())
}

/// `GET /git/{repo}/info/refs?service=…`: the refs, first message of a fetch or a push.
pub async fn info_refs(
    State(p): State<Arc<Platform>>,
    Path(repo): Path<String>,
    Query(q): Query<InfoRefsQuery>,
    who: Option<axum::Extension<Principal>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let app = repo_app(&repo)?;
    let service = q.service.as_deref().and_then(Service::parse).ok_or_else(|| {
        ApiError::invalid(
            "dumb_http",
            "berth serves git's smart HTTP protocol only (info/refs?service=git-upload-pack or git-receive-pack)",
        )
        .hint("use git 1.6.6 or later")
    })?;
    let who = who.map(|axum::Extension(w)| w).ok_or_else(unauthorized)?;
    if service == Service::ReceivePack {
        may_push(&who)?;
        let (repos, berth) = (p.git_repos.clone(), p.cfg.berth_binary.clone());
        let name = app.to_string();
        tokio::task::spawn_blocking(move || repos.ensure(&name, &berth))
            .await
            .map_err(|e| ApiError::internal("making the repository", e))?
            .map_err(|e| ApiError::internal("making the repository", e))?;
    } else if !p.git_repos.exists(app.as_str()) {
        return Err(no_repository(&app));
    }
    backend(
        &p,
        &app,
        &who,
        "GET",
        "info/refs",
        &format!("service={}", service.name()),
        &headers,
        Bytes::new(),
    )
    .await
}

/// `POST /git/{repo}/git-upload-pack`: a fetch.
pub async fn upload_pack(
    State(p): State<Arc<Platform>>,
    Path(repo): Path<String>,
    who: Option<axum::Extension<Principal>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    pack(&p, &repo, who, &headers, body, Service::UploadPack).await
}

/// `POST /git/{repo}/git-receive-pack`: a push (the hook deploys it).
pub async fn receive_pack(
    State(p): State<Arc<Platform>>,
    Path(repo): Path<String>,
    who: Option<axum::Extension<Principal>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    pack(&p, &repo, who, &headers, body, Service::ReceivePack).await
}

/// The pack exchange of a fetch or a push, on an existing repository.
async fn pack(
    p: &Platform,
    repo: &str,
    who: Option<axum::Extension<Principal>>,
    headers: &HeaderMap,
    body: Bytes,
    service: Service,
) -> Result<Response, ApiError> {
    let app = repo_app(repo)?;
    let who = who.map(|axum::Extension(w)| w).ok_or_else(unauthorized)?;
    if service == Service::ReceivePack {
        may_push(&who)?;
    }
    if !p.git_repos.exists(app.as_str()) {
        return Err(no_repository(&app));
    }
    backend(p, &app, &who, "POST", service.name(), "", headers, body).await
}

fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong API token",
    )
}

fn no_repository(app: &AppName) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "repository_not_found",
        format!("app {app} has no repository yet"),
    )
    .hint(format!(
        "push to it first: git push $(berth git remote {app}) main"
    ))
}

/// The API's address for the hook (loopback when the API listens on every address).
fn api_url(p: &Platform) -> String {
    format!("http://{}", p.cfg.api_upstream())
}

/// Runs `git http-backend` for one request and streams its answer.
#[allow(clippy::too_many_arguments)]
async fn backend(
    p: &Platform,
    app: &AppName,
    who: &Principal,
    method: &str,
    rest: &str,
    query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let header_str = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", p.git_repos.root())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_PROJECT_ROOT", p.git_repos.root())
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("REQUEST_METHOD", method)
        .env("PATH_INFO", format!("/{app}.git/{rest}"))
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header_str(header::CONTENT_TYPE))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", &who.name)
        .env("REMOTE_ADDR", "127.0.0.1")
        // For the hook: whom to ask, as whom, for which app.
        .env("BERTH_API_URL", api_url(p))
        .env("BERTH_GIT_APP", app.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(token) = presented_token(headers) {
        cmd.env("BERTH_TOKEN", token);
    }
    let encoding = header_str(header::CONTENT_ENCODING);
    if !encoding.is_empty() {
        cmd.env("HTTP_CONTENT_ENCODING", encoding);
    }
    let protocol = headers
        .get("git-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !protocol.is_empty() {
        cmd.env("GIT_PROTOCOL", protocol);
    }
    let mut child = cmd.spawn().map_err(|e| {
        ApiError::internal(
            "starting git http-backend (is the git package installed?)",
            e,
        )
    })?;
    let (Some(mut stdin), Some(stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(ApiError::internal("starting git http-backend", "no pipes"));
    };
    tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let app_name = app.to_string();
    tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        let status = child.wait().await;
        if !text.trim().is_empty() || !status.as_ref().is_ok_and(|s| s.success()) {
            tracing::warn!(app = %app_name, ?status, stderr = %text.trim(), "git http-backend");
        }
    });
    // CGI: header lines, an empty line, then the body.
    let mut out = BufReader::new(stdout);
    let mut response = Response::builder();
    let mut status = StatusCode::OK;
    loop {
        let mut line = String::new();
        let n = out
            .read_line(&mut line)
            .await
            .map_err(|e| ApiError::internal("reading git http-backend", e))?;
        let line = line.trim_end();
        if n == 0 || line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            status = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse::<u16>().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::BAD_GATEWAY);
        } else if let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response = response.header(n, v);
        }
    }
    response
        .status(status)
        .body(Body::from_stream(tokio_util::io::ReaderStream::new(out)))
        .map_err(|e| ApiError::internal("answering git", e))
}

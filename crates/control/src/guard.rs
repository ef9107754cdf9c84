//! The API's gate: every call is authenticated (the bootstrap token or a token from
//! `berth tokens create`), authorized (the token's role against the endpoint), and — when it
//! changes something — audited with its outcome, including calls that were refused.

use crate::audit::{outcome_of, CallContext};
use crate::error::ApiError;
use crate::platform::Platform;
use crate::tokens::{Presented, Principal};
use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_core::api::ACTOR_HEADER;
use std::net::SocketAddr;
use std::sync::Arc;

/// The header that carries a request's id (taken from the client when it sends a sane one).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Largest error body read back for the audit log's detail.
const DETAIL_BODY_LIMIT: usize = 64 * 1024;

/// Constant-time comparison, so a token cannot be guessed byte by byte from timings.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the client says it is (`berth-cli (user@host)`, an MCP client), kept printable.
pub fn client_of(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get(ACTOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            s.chars()
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .take(64)
                .collect::<String>()
        })
        .filter(|s| !s.trim().is_empty())
}

/// The app, token or other object a path acts on, decoded as the handlers see it (a name
/// sent percent-encoded is the same name).
fn target_of(path: &str) -> Option<String> {
    let mut parts = path.trim_start_matches('/').split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("v1" | "ui"), Some("apps" | "tokens"), Some(name)) if !name.is_empty() => Some(
            percent_encoding::percent_decode_str(name)
                .decode_utf8_lossy()
                .chars()
                .take(128)
                .collect(),
        ),
        (Some("git"), Some(repo), _) if !repo.is_empty() => {
            // Decoded first, then the suffix taken off: as the handler reads it.
            let decoded = percent_encoding::percent_decode_str(repo).decode_utf8_lossy();
            Some(
                decoded
                    .strip_suffix(".git")
                    .unwrap_or(&decoded)
                    .chars()
                    .take(128)
                    .collect(),
            )
        }
        _ => None,
    }
}

/// The password of an HTTP Basic `Authorization` value (git sends the token that way).
pub fn basic_password(value: &str) -> Option<String> {
    use base64::Engine;
    let encoded = value.strip_prefix("Basic ")?.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(password.trim().to_string()).filter(|p| !p.is_empty())
}

/// Asks a git client for credentials on a refusal (else it gives up without asking).
fn ask_git_for_credentials(mut resp: Response, route: &str) -> Response {
    if route.starts_with("/git/") && resp.status() == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Basic realm=\"berth\", charset=\"UTF-8\""),
        );
    }
    resp
}

fn request_id(req: &Request) -> String {
    req.headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        })
        .map_or_else(|| crate::random_id(8), str::to_string)
}

fn with_request_id(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}

/// Authenticates, authorizes and audits one call.
pub async fn guard(State(p): State<Arc<Platform>>, mut req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_string(), |m| m.as_str().to_string());
    // MCP messages are not changes themselves: each tool's API call is audited on its own.
    // Nor is a git fetch or a plan, which come as POSTs.
    let mutating = !matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS")
        && !route.starts_with("/mcp")
        && !route.ends_with("/git-upload-pack")
        && route != "/v1/platform/plan";
    let id = request_id(&req);
    let source = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let (client, target) = (client_of(req.headers()), target_of(req.uri().path()));
    let call = |who: Principal| {
        CallContext::new(
            who,
            client.clone(),
            id.clone(),
            source.clone(),
            format!("{method} {route}"),
            target.clone(),
        )
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .map(|t| t.trim().to_string())
                .or_else(|| {
                    route
                        .starts_with("/git/")
                        .then(|| basic_password(v))
                        .flatten()
                })
        });
    let presented = match &given {
        None => Presented::Unknown,
        Some(t) if same(t.as_bytes(), p.token.as_bytes()) => {
            Presented::Valid(Principal::bootstrap())
        }
        Some(t) if p.oidc.is_some() && crate::oidc::looks_like_jwt(t) => {
            match signed_in(&p, t).await {
                Ok(who) => Presented::Valid(who),
                Err(err) => {
                    if mutating {
                        tracing::warn!(%route, source = ?source, error = %err.message, "a sign-in token was refused");
                    }
                    return with_request_id(err.into_response(), &id);
                }
            }
        }
        Some(t) => match p.store.presented_token(t, crate::now_secs()).await {
            Ok(found) => found,
            Err(e) => {
                return with_request_id(ApiError::from(e).into_response(), &id);
            }
        },
    };
    let who = match presented {
        Presented::Valid(who) => who,
        Presented::Revoked(who) => {
            let err = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "token_revoked",
                format!("token {:?} was revoked or has expired", who.name),
            )
            .hint("ask an admin for a new token (`berth tokens create`)");
            if mutating {
                record(&p, &call(who), 401, None, Some(err.message.clone())).await;
            }
            return with_request_id(ask_git_for_credentials(err.into_response(), &route), &id);
        }
        Presented::Unknown => {
            if mutating {
                tracing::warn!(%route, source = ?source, "an unauthenticated call was refused");
            }
            return with_request_id(
                ask_git_for_credentials(
                    ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "missing or wrong API token",
                    )
                    .hint("the CLI reads the token from <data dir>/api-token; or set BERTH_TOKEN")
                    .into_response(),
                    &route,
                ),
                &id,
            );
        }
    };
    if !who.role.allows(&method, &route) {
        let needed = berth_core::auth::Role::needed(&method, &route);
        let err = ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{} ({}) may not {method} {route}",
                who.describe(),
                who.role.as_str()
            ),
        )
        .hint(if who.is_person() {
            format!(
                "this needs role {} or above; an admin gives it with `berth people add {} --role {}`",
                needed.as_str(),
                who.name,
                needed.as_str()
            )
        } else {
            format!("this needs a token with role {} or above", needed.as_str())
        });
        if mutating {
            record(&p, &call(who), 403, None, Some(err.message.clone())).await;
        }
        return with_request_id(err.into_response(), &id);
    }
    if let Some(limit) = Limit::of(&who) {
        if let Err(err) = within(&p, &limit, &method, &route, req.uri()).await {
            if mutating {
                record(&p, &call(who), err.status, None, Some(err.message.clone())).await;
            }
            return with_request_id(err.into_response(), &id);
        }
    }
    if !mutating {
        req.extensions_mut().insert(who);
        return with_request_id(next.run(req).await, &id);
    }
    let ctx = call(who.clone());
    req.extensions_mut().insert(who);
    let resp = ctx.clone().scope(next.run(req)).await;
    if ctx.is_deferred() {
        return with_request_id(resp, &id);
    }
    let status = resp.status().as_u16();
    let replayed = resp
        .headers()
        .contains_key(crate::idempotency::REPLAYED_HEADER);
    let (resp, detail) = if replayed {
        (
            resp,
            Some("a retry: the first answer given again (Idempotency-Key)".to_string()),
        )
    } else if status >= 400 {
        // The error's message, for the log; the answer goes out unchanged.
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, DETAIL_BODY_LIMIT)
            .await
            .unwrap_or_default();
        let detail = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string));
        (Response::from_parts(parts, Body::from(bytes)), detail)
    } else {
        (resp, None)
    };
    record(&p, &ctx, status, None, detail).await;
    with_request_id(resp, &id)
}

/// The person an OIDC ID token names, with the role an admin gave them.
async fn signed_in(p: &Platform, token: &str) -> Result<Principal, ApiError> {
    let Some(oidc) = &p.oidc else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API token",
        ));
    };
    let identity = oidc.verify(token).await.map_err(|e| match e {
        crate::oidc::OidcError::Expired => {
            ApiError::new(StatusCode::UNAUTHORIZED, "token_expired", e.to_string())
                .hint("sign in again with `berth login`")
        }
        crate::oidc::OidcError::Invalid(_) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", e.to_string())
                .hint("sign in with `berth login`")
        }
        crate::oidc::OidcError::Provider(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "oidc_unavailable",
            e.to_string(),
        )
        .hint("check that the OIDC provider answers, then try again"),
    })?;
    p.store.person(&identity).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "no_role",
            format!("{identity} signed in but has no role on this platform"),
        )
        .hint(format!(
            "an admin gives one with `berth people add {identity} --role viewer`"
        ))
    })
}

/// What a limited token reaches: one project's apps, or the apps of one tenant's projects.
pub enum Limit {
    Project(String),
    Tenant(String),
}

impl Limit {
    /// The limit of a principal (`None`: the whole platform).
    pub fn of(who: &Principal) -> Option<Self> {
        match (&who.project, &who.tenant) {
            (Some(project), _) => Some(Self::Project(project.clone())),
            (None, Some(tenant)) => Some(Self::Tenant(tenant.clone())),
            (None, None) => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Project(p) => format!("project {p:?}"),
            Self::Tenant(t) => format!("tenant {t:?}"),
        }
    }

    /// Whether the limit reaches `project`.
    pub async fn reaches(&self, p: &Platform, project: &str) -> Result<bool, sqlx::Error> {
        Ok(match self {
            Self::Project(own) => own == project,
            Self::Tenant(tenant) => {
                p.store.project_tenant(project).await?.as_deref() == Some(tenant.as_str())
            }
        })
    }
}

/// Whether a limited token may make this call: calls on an app beyond its reach are
/// answered as if the app did not exist (names do not leak), and platform-wide endpoints are
/// refused.
async fn within(
    p: &Platform,
    limit: &Limit,
    method: &str,
    route: &str,
    uri: &axum::http::Uri,
) -> Result<(), ApiError> {
    let project = limit.describe();
    let app = if route.starts_with("/v1/apps/{app}")
        || route.starts_with("/ui/apps/{app}")
        || route.starts_with("/git/{repo}")
    {
        target_of(uri.path())
    } else if route == "/v1/dora" {
        let query = uri.query().unwrap_or_default();
        let asked = |key: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(key))
                .map(|v| {
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned()
                })
        };
        if let Some(project) = asked("project=") {
            return if limit.reaches(p, &project).await? {
                Ok(())
            } else {
                Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "project_not_found",
                    format!("no project {project}"),
                ))
            };
        }
        asked("app=").or(Some(String::new()))
    } else if matches!(
        route,
        "/v1/apps"
            | "/v1/projects"
            | "/v1/whoami"
            | "/ui"
            | "/ui/deploy"
            | "/ui/upload"
            | "/ui/alerts"
    ) || route.starts_with("/mcp")
        // The page itself shows only a project the token reaches.
        || route == "/ui/projects/{project}"
    {
        None
    } else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("a token limited to {project} may not use {route}: it is platform-wide"),
        )
        .hint("use a platform token"));
    };
    let Some(app) = app else { return Ok(()) };
    if app.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("a token limited to {project} must name one of its apps"),
        ));
    }
    match p.store.app_project(&app).await? {
        Some(of) if !limit.reaches(p, &of).await? => Err(ApiError::app_not_found(&app)),
        Some(_) => Ok(()),
        // An app that does not exist yet is reached only by the calls that make one (in
        // the token's project); every other call on it is answered as unknown here, so no
        // handler ever acts on a name the guard did not place.
        None if makes_an_app(method, route, uri) => Ok(()),
        None => Err(ApiError::app_not_found(&app)),
    }
}

/// Whether a call may name an app that does not exist yet: a deploy makes it, so do a git
/// connection and its deploy key, and a push (its first step, the refs of the repository
/// to push to, too); a dashboard run follows the first deploy of a new app until it exists.
fn makes_an_app(method: &str, route: &str, uri: &axum::http::Uri) -> bool {
    match (method, route) {
        (
            "POST",
            "/v1/apps/{app}/deploys"
            | "/v1/apps/{app}/deploys/image"
            | "/v1/apps/{app}/git"
            | "/v1/apps/{app}/git/key"
            | "/git/{repo}/git-receive-pack",
        )
        | ("GET", "/ui/apps/{app}/runs/{id}" | "/ui/apps/{app}/runs/{id}/live") => true,
        ("GET", "/git/{repo}/info/refs") => uri
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "service=git-receive-pack")),
        _ => false,
    }
}

/// Appends the outcome of a call to the audit log.
pub async fn record(
    p: &Platform,
    ctx: &CallContext,
    status: u16,
    refs: Option<serde_json::Map<String, serde_json::Value>>,
    detail: Option<String>,
) {
    let entry = ctx.entry(
        outcome_of(status),
        Some(status),
        refs.unwrap_or_default(),
        detail,
    );
    if let Err(e) = p.store.record_audit(&entry).await {
        tracing::error!(error = %e, action = %entry.action, "writing the audit log failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_come_from_the_path() {
        assert_eq!(target_of("/v1/apps/shop/deploys").as_deref(), Some("shop"));
        assert_eq!(target_of("/v1/tokens/ci").as_deref(), Some("ci"));
        // As the handlers see it: a name sent percent-encoded is the same name.
        assert_eq!(target_of("/v1/apps/%6Fne/env").as_deref(), Some("one"));
        assert_eq!(target_of("/v1/apps/my%2Dapp").as_deref(), Some("my-app"));
        assert_eq!(target_of("/v1/apps"), None);
        assert_eq!(target_of("/v1/backups"), None);
    }
}

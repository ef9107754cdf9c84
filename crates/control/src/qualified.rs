//! Apps named with their project: `PROJECT/APP` (sent as one path segment,
//! `/v1/apps/shop%2Fweb/...`). Before routing, the name is checked against the app's
//! project and the request goes on with the plain name; an app that is not in that project
//! is answered as unknown, and a new app deployed as `PROJECT/APP` is made in that project.

use crate::error::ApiError;
use crate::platform::Platform;
use axum::extract::{Request, State};
use axum::http::{Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_core::names::split_qualified;
use std::sync::Arc;

/// Rewrites `PROJECT/APP` in an app's path to `APP`, or refuses it.
pub async fn qualified(State(p): State<Arc<Platform>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let Some(rest) = path.strip_prefix("/v1/apps/") else {
        return next.run(req).await;
    };
    let (segment, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let decoded = percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .to_string();
    let (Some(project), app) = split_qualified(&decoded) else {
        return next.run(req).await;
    };
    match resolve(&p, project, app, req.method(), tail).await {
        Ok(new_app) => {
            let mut query: Vec<String> = req
                .uri()
                .query()
                .map(|q| q.split('&').map(str::to_string).collect())
                .unwrap_or_default();
            if new_app {
                query.retain(|kv| !kv.starts_with("project="));
                query.push(format!("project={project}"));
            }
            let mut rewritten = format!("/v1/apps/{app}{tail}");
            if !query.is_empty() {
                rewritten.push('?');
                rewritten.push_str(&query.join("&"));
            }
            match rewritten.parse::<Uri>() {
                Ok(uri) => {
                    *req.uri_mut() = uri;
                    next.run(req).await
                }
                Err(_) => ApiError::invalid("invalid_app_name", "the app's path is malformed")
                    .into_response(),
            }
        }
        Err(e) => e.into_response(),
    }
}

/// Whether `PROJECT/APP` names a new app (a deploy that will make it); an error when it
/// names nothing.
async fn resolve(
    p: &Platform,
    project: &str,
    app: &str,
    method: &Method,
    tail: &str,
) -> Result<bool, ApiError> {
    berth_core::AppName::parse(app).map_err(|e| {
        ApiError::invalid("invalid_app_name", e.to_string())
            .hint("name an app as APP or PROJECT/APP")
    })?;
    berth_core::projects::check_project_name(project)
        .map_err(|e| ApiError::invalid("invalid_project_name", e))?;
    // Worded as the guard words an app beyond a token's reach, so that the answer tells
    // nothing of which project an app is in.
    let unknown = || ApiError::app_not_found(app);
    match p.store.app_project(app).await? {
        Some(of) if of == project => Ok(false),
        Some(_) => Err(unknown()),
        None if method == Method::POST && tail == "/deploys" => Ok(true),
        None => Err(unknown()),
    }
}

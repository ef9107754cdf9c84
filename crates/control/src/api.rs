//! The HTTP API: JSON over HTTP with a bearer token. The CLI, the web UI and the MCP server
//! are all clients of this API; nothing else reads or writes the platform's state.
//!
//! Long operations (deploy, rollback, env changes) answer with a stream of newline-delimited
//! JSON [`DeployEvent`]s, so clients can show progress; the work itself continues even if
//! the client goes away.

use crate::deploy::{finish, DeployFailure, Events};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::platform::Platform;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_core::api::{
    AppSummary, DeployEvent, DriftView, EnvChange, InstanceView, ReleaseView, RollbackRequest,
};
use berth_core::domains::{DnsStatus, DomainAdd, DomainView};
use berth_core::git::{
    DeployKeyRequest, DeployKeyView, GitConnect, GitConnected, GitConnectionView,
};
use berth_core::model::InstanceState;
use berth_core::policy::Isolation;
use berth_core::spec::BerthToml;
use berth_core::state::{
    AppCreate, DatabaseBackupView, DatabaseRestore, DatabaseView, SecretChange, SecretView,
    SnapshotView, VolumeCreate, VolumeRestore, VolumeView,
};
use berth_core::AppName;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

type Shared = State<Arc<Platform>>;

/// Largest webhook delivery taken (GitHub caps its payloads at 25 MB).
const WEBHOOK_BODY_LIMIT: usize = 25 << 20;

/// The API router.
pub fn router(platform: Arc<Platform>) -> Router {
    let limit = platform.cfg.upload_limit as usize;
    let api = Router::new()
        .route("/v1/apps", get(list_apps).post(create_app))
        .route(
            "/v1/apps/{app}/secrets",
            get(secrets_list).post(secrets_change),
        )
        .route("/v1/secrets/rotate-key", post(secrets_rotate_key))
        .route("/v1/gc", post(gc))
        .route("/v1/dns", get(dns_status))
        .route(
            "/v1/apps/{app}/domains",
            get(domains_list).post(domains_add),
        )
        .route(
            "/v1/apps/{app}/domains/{name}",
            axum::routing::delete(domains_remove),
        )
        .route("/v1/ca", get(ca_certificate))
        .route("/v1/backups", post(backup_create))
        .route("/metrics", get(metrics))
        .route("/v1/dora", get(dora))
        .route("/v1/apps/{app}/slo", get(slo))
        .route("/v1/slo/rules", get(slo_rules))
        .route("/v1/alerts", get(alerts))
        .route(
            "/v1/apps/{app}/database",
            get(database_info).post(database_create),
        )
        .route("/v1/apps/{app}/database/backups", post(database_backup))
        .route("/v1/apps/{app}/database/restore", post(database_restore))
        .route(
            "/v1/apps/{app}/volumes",
            get(volumes_list).post(volumes_create),
        )
        .route(
            "/v1/apps/{app}/volumes/{name}",
            axum::routing::delete(volumes_destroy),
        )
        .route(
            "/v1/apps/{app}/volumes/{name}/snapshots",
            post(volumes_snapshot),
        )
        .route(
            "/v1/apps/{app}/volumes/{name}/restore",
            post(volumes_restore),
        )
        .route("/v1/apps/{app}", axum::routing::delete(destroy_app))
        .route(
            "/v1/apps/{app}/deploys",
            post(deploy).layer(DefaultBodyLimit::max(limit)),
        )
        .route("/v1/apps/{app}/deploys/image", post(deploy_image))
        .route("/v1/apps/{app}/releases", get(releases))
        .route("/v1/apps/{app}/images", get(images))
        .route("/v1/apps/{app}/releases/{version}/sbom", get(release_sbom))
        .route("/v1/apps/{app}/rollback", post(rollback))
        .route("/v1/apps/{app}/env", get(env_list).post(env_change))
        .route("/v1/apps/{app}/scale", post(scale))
        .route("/v1/apps/{app}/redeploy", post(redeploy))
        .route(
            "/v1/apps/{app}/instances/{instance}/kill",
            post(kill_instance),
        )
        .route("/v1/apps/{app}/canary/{action}", post(canary_command))
        .route("/v1/apps/{app}/instances", get(instances))
        .route("/v1/apps/{app}/drift", get(drift))
        .route("/v1/apps/{app}/drift/restore", post(drift_restore))
        .route("/v1/apps/{app}/probes", get(probes))
        .route("/v1/apps/{app}/logs", get(logs))
        .route("/v1/apps/{app}/logs/events", get(log_events))
        .route("/v1/apps/{app}/builds/latest/log", get(build_log))
        .route("/v1/tokens", get(tokens_list).post(tokens_create))
        .route("/v1/tokens/{name}", axum::routing::delete(tokens_revoke))
        .route("/v1/audit", get(audit_list))
        .route("/v1/projects", get(projects_list).post(projects_create))
        .route("/v1/tenants", get(tenants_list).post(tenants_create))
        .route("/v1/people", get(people_list).post(people_add))
        .route(
            "/v1/people/{identity}",
            axum::routing::delete(people_remove),
        )
        .route("/v1/whoami", get(whoami))
        .route(
            "/v1/registries",
            get(registries_list).post(registries_login),
        )
        .route(
            "/v1/registries/{host}",
            axum::routing::delete(registries_logout),
        )
        .route("/v1/gitops", get(gitops_list).post(gitops_add))
        .route("/v1/gitops/{name}", axum::routing::delete(gitops_remove))
        .route(
            "/v1/platform/plan",
            post(platform_plan).layer(DefaultBodyLimit::max(limit)),
        )
        .route(
            "/v1/platform/apply",
            post(platform_apply).layer(DefaultBodyLimit::max(limit)),
        )
        .route(
            "/v1/apps/{app}/git",
            get(git_connection).post(git_connect).delete(git_disconnect),
        )
        .route(
            "/v1/apps/{app}/git/key",
            get(deploy_key_get).post(deploy_key_make),
        )
        .route("/git/{repo}/info/refs", get(crate::git_http::info_refs))
        .route(
            "/git/{repo}/git-upload-pack",
            post(crate::git_http::upload_pack).layer(DefaultBodyLimit::max(limit)),
        )
        .route(
            "/git/{repo}/git-receive-pack",
            post(crate::git_http::receive_pack).layer(DefaultBodyLimit::max(limit)),
        )
        .nest_service("/mcp", mcp_service(&platform))
        .merge(crate::ui::guarded_routes(limit))
        .route_layer(middleware::from_fn_with_state(
            platform.clone(),
            crate::idempotency::idempotent,
        ))
        .route_layer(middleware::from_fn_with_state(
            platform.clone(),
            crate::guard::guard,
        ));
    let routes = Router::new()
        .route("/v1/health", get(crate::openapi::health))
        .route("/openapi.json", get(crate::openapi::document))
        .route("/v1/login", get(login_info))
        .route("/v1/login/token", post(login_token))
        // Git hosts' push webhooks prove themselves with their signature, not a token.
        // GitHub sends up to 25 MB (a push of many commits); axum's default is 2 MB.
        .route(
            "/hooks/github",
            post(crate::webhooks::github).layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT)),
        )
        .route(
            "/hooks/gitea",
            post(crate::webhooks::gitea).layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT)),
        )
        .route(
            "/hooks/gitlab",
            post(crate::webhooks::gitlab).layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT)),
        )
        .merge(crate::ui::public_routes())
        .merge(api)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such API endpoint")
                .hint("the API lives under /v1/")
        })
        .with_state(platform.clone());
    // `PROJECT/APP` names are rewritten before the routes are matched: the inner router is
    // the fallback of an outer one whose only layer does that.
    Router::new()
        .fallback_service(routes)
        .layer(middleware::from_fn_with_state(
            platform,
            crate::qualified::qualified,
        ))
        // Names in paths are decoded once, before routing and the guard.
        .layer(middleware::from_fn(crate::request_path::decode_once))
        // The dashboard's session cookie becomes the token the guard reads.
        .layer(middleware::from_fn(crate::ui::session))
}

/// MCP over streamable HTTP: its tools call this API over loopback with the caller's token.
fn mcp_service(p: &Platform) -> berth_mcp::HttpService {
    let upstream = p.cfg.api_upstream();
    let api = format!("http://{upstream}");
    let mut hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    hosts.push(upstream.ip().to_string());
    // Agents elsewhere reach it through the edge, at the platform's own host names.
    hosts.extend(p.cfg.platform_hosts());
    berth_mcp::http_service(&api, hosts, p.shutdown.child_token())
}

/// Who made a change, for the release record: the token's name and what the client said
/// it was.
pub(crate) fn actor(headers: &HeaderMap) -> String {
    let who = crate::audit::CallContext::current()
        .map_or_else(|| "api".to_string(), |c| c.principal.name.clone());
    match crate::guard::client_of(headers) {
        Some(client) => format!("{who} ({client})"),
        None => who,
    }
}

pub(crate) fn app_name(raw: &str) -> Result<AppName, ApiError> {
    AppName::parse(raw).map_err(|e| {
        ApiError::invalid("invalid_app_name", e.to_string()).hint(
            "app names are DNS labels: lowercase letters, digits and '-', at most 63 characters",
        )
    })
}

pub(crate) async fn existing_app(p: &Platform, raw: &str) -> Result<AppName, ApiError> {
    let name = app_name(raw)?;
    if p.store.app(name.as_str()).await?.is_none() {
        return Err(ApiError::app_not_found(name.as_str()));
    }
    Ok(name)
}

fn ndjson<T: serde::Serialize>(value: &T) -> Bytes {
    let mut v = serde_json::to_vec(value).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// Streams events to the client while `work` runs in a tracked task of its own; with an
/// OTLP endpoint, the events also make the operation's trace (a span per step).
fn stream_workflow<F>(p: &Arc<Platform>, operation: &str, app: &str, work: F) -> Response
where
    F: FnOnce(
        Events,
    )
        -> futures_util::future::BoxFuture<'static, Result<(u32, String), DeployFailure>>,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<DeployEvent>();
    let trace = p.traces.as_ref().map(|t| t.operation(operation, app));
    let call = crate::audit::CallContext::defer();
    let tx = if trace.is_some() || call.is_some() {
        observed(p.clone(), trace, call, tx)
    } else {
        tx
    };
    let fut = work(tx.clone());
    p.tasks.spawn(async move {
        let result = fut.await;
        finish(&tx, result);
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|e| (Ok::<_, Infallible>(ndjson(&e)), rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A sender whose events pass on to `to` and, on their way, make the operation's trace
/// (steps become spans) and its audit entry (the outcome, the release made and its image).
fn observed(
    p: Arc<Platform>,
    mut trace: Option<berth_observe::traces::Operation>,
    call: Option<crate::audit::CallContext>,
    to: Events,
) -> Events {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<DeployEvent>();
    let tasks = p.tasks.clone();
    tasks.spawn(async move {
        let (mut release, mut error, mut stored) = (None, None, false);
        while let Some(e) = rx.recv().await {
            match &e {
                DeployEvent::Step { step } => {
                    if let Some(t) = trace.as_mut() {
                        t.step(step);
                    }
                }
                DeployEvent::Done { release: r, .. } => release = Some(*r),
                DeployEvent::Failed { error: body, .. } => error = Some(body.message.clone()),
                DeployEvent::Stored { .. } => stored = true,
                DeployEvent::Log { .. } => {}
            }
            let _ = to.send(e);
        }
        if let Some(t) = trace {
            t.finish(release, error.as_deref());
        }
        if let Some(call) = call {
            let mut refs = serde_json::Map::new();
            if let (Some(v), Some(app)) = (release, call.target()) {
                refs.insert("release".into(), v.into());
                if let Ok(Some(r)) = p.store.release(&app, v).await {
                    refs.insert("image".into(), r.image.digest.into());
                }
            }
            let outcome = match (&error, release.is_some() || stored) {
                (Some(_), _) => "failed",
                (None, true) => "succeeded",
                (None, false) => "failed",
            };
            let entry = call.entry(outcome, Some(200), refs, error);
            if let Err(e) = p.store.record_audit(&entry).await {
                tracing::error!(error = %e, "writing the audit log failed");
            }
        }
    });
    tx
}

#[utoipa::path(
    get,
    path = "/v1/projects",
    tag = "teams",
    responses((status = 200, description = "Projects with their quotas and usage", body = [berth_core::projects::ProjectView]))
)]
async fn projects_list(
    State(p): Shared,
    caller: Caller,
) -> Result<Json<Vec<berth_core::projects::ProjectView>>, ApiError> {
    let mut visible = Vec::new();
    for v in p.store.projects().await? {
        if reaches(&p, &caller, &v.name).await? {
            visible.push(v);
        }
    }
    Ok(Json(visible))
}

#[utoipa::path(
    post,
    path = "/v1/projects",
    tag = "teams",
    request_body = berth_core::projects::ProjectCreate,
    responses((status = 201, description = "Created", body = berth_core::projects::ProjectView))
)]
async fn projects_create(
    State(p): Shared,
    caller: Caller,
    body: Result<
        Json<berth_core::projects::ProjectCreate>,
        axum::extract::rejection::JsonRejection,
    >,
) -> Result<(StatusCode, Json<berth_core::projects::ProjectView>), ApiError> {
    let Json(req) = body.map_err(|e| {
        ApiError::invalid("invalid_project_request", e.body_text()).hint(
            r#"send {"name": "shop", "quota": {"max_apps": 5, "max_instances": 10, "max_memory_bytes": …, "max_volume_bytes": …}}"#,
        )
    })?;
    let mut req = req;
    crate::audit::CallContext::set_target(&req.name);
    if let Some(own) = caller_project(&caller) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("a token limited to project {own:?} cannot make projects"),
        ));
    }
    if let Some(tenant) = caller_tenant(&caller) {
        match &req.tenant {
            Some(asked) if *asked != tenant => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("a token limited to tenant {tenant:?} makes projects in it only"),
                ))
            }
            _ => req.tenant = Some(tenant),
        }
    }
    p.store.create_project(&req, crate::now_secs()).await?;
    let view = p
        .store
        .projects()
        .await?
        .into_iter()
        .find(|v| v.name == req.name)
        .ok_or_else(|| ApiError::internal("projects", "the new project is missing"))?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(
    get,
    path = "/v1/tenants",
    tag = "teams",
    responses((status = 200, description = "Tenants with their quotas, projects and usage", body = [berth_core::projects::TenantView]))
)]
async fn tenants_list(
    State(p): Shared,
) -> Result<Json<Vec<berth_core::projects::TenantView>>, ApiError> {
    Ok(Json(p.store.tenants().await?))
}

#[utoipa::path(
    post,
    path = "/v1/tenants",
    tag = "teams",
    request_body = berth_core::projects::TenantCreate,
    responses((status = 201, description = "Created", body = berth_core::projects::TenantView))
)]
async fn tenants_create(
    State(p): Shared,
    ApiJson(req): ApiJson<berth_core::projects::TenantCreate>,
) -> Result<(StatusCode, Json<berth_core::projects::TenantView>), ApiError> {
    crate::audit::CallContext::set_target(&req.name);
    p.store.create_tenant(&req, crate::now_secs()).await?;
    let view = p
        .store
        .tenants()
        .await?
        .into_iter()
        .find(|v| v.name == req.name)
        .ok_or_else(|| ApiError::internal("tenants", "the new tenant is missing"))?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(
    get,
    path = "/v1/login",
    tag = "teams",
    security(()),
    responses((status = 200, description = "How people sign in here", body = berth_core::auth::LoginInfo))
)]
async fn login_info(State(p): Shared) -> Json<berth_core::auth::LoginInfo> {
    Json(berth_core::auth::LoginInfo {
        oidc: p.oidc.as_ref().map(|o| berth_core::auth::OidcInfo {
            issuer: o.issuer.clone(),
            client_id: o.client_id.clone(),
        }),
    })
}

#[utoipa::path(
    post,
    path = "/v1/login/token",
    tag = "teams",
    security(()),
    request_body = berth_core::auth::LoginExchange,
    responses(
        (status = 200, description = "The ID token for this sign-in", body = berth_core::auth::LoginToken),
        (status = 400, description = "The exchange was refused", body = berth_core::api::ErrorBody),
        (status = 404, description = "No sign-in provider is configured", body = berth_core::api::ErrorBody),
        (status = 415, description = "Not a JSON body", body = berth_core::api::ErrorBody),
        (status = 503, description = "The provider did not answer", body = berth_core::api::ErrorBody)
    )
)]
async fn login_token(
    State(p): Shared,
    ApiJson(req): ApiJson<berth_core::auth::LoginExchange>,
) -> Result<Json<berth_core::auth::LoginToken>, ApiError> {
    let Some(oidc) = &p.oidc else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_sign_in",
            "this platform has no sign-in provider",
        )
        .hint("start it with --oidc-issuer and --oidc-client-id"));
    };
    match oidc
        .exchange(&req.code, &req.redirect_uri, &req.code_verifier)
        .await
    {
        Ok(id_token) => Ok(Json(berth_core::auth::LoginToken { id_token })),
        Err(e @ crate::oidc::OidcError::Provider(_)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "oidc_unavailable",
            e.to_string(),
        )),
        Err(e) => Err(ApiError::invalid("sign_in_refused", e.to_string())
            .hint("sign in again with `berth login`")),
    }
}

#[utoipa::path(
    get,
    path = "/v1/whoami",
    tag = "teams",
    responses((status = 200, description = "Who the caller is to the platform", body = berth_core::auth::WhoAmI))
)]
async fn whoami(caller: Caller) -> Result<Json<berth_core::auth::WhoAmI>, ApiError> {
    let Some(axum::Extension(who)) = caller else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API token",
        ));
    };
    Ok(Json(berth_core::auth::WhoAmI {
        name: who.name.clone(),
        role: who.role,
        scope: who.scope(),
        via: if who.is_person() {
            "oidc".into()
        } else {
            "token".into()
        },
    }))
}

#[utoipa::path(
    get,
    path = "/v1/registries",
    tag = "factory",
    responses((status = 200, description = "Registries berth holds credentials for (never the passwords)", body = [berth_core::registries::RegistryView]))
)]
async fn registries_list(
    State(p): Shared,
) -> Result<Json<Vec<berth_core::registries::RegistryView>>, ApiError> {
    Ok(Json(p.registries().await?))
}

#[utoipa::path(
    post,
    path = "/v1/registries",
    tag = "factory",
    request_body = berth_core::registries::RegistryLogin,
    responses((status = 201, description = "Kept, sealed", body = berth_core::registries::RegistryView))
)]
async fn registries_login(
    State(p): Shared,
    headers: HeaderMap,
    ApiJson(req): ApiJson<berth_core::registries::RegistryLogin>,
) -> Result<(StatusCode, Json<berth_core::registries::RegistryView>), ApiError> {
    crate::audit::CallContext::set_target(&req.host);
    let view = p.registry_login(&req, &actor(&headers)).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(
    delete,
    path = "/v1/registries/{host}",
    tag = "factory",
    params(
        ("host" = String, Path, description = "The registry's host[:port]"),
        RegistryScopeQuery
    ),
    responses((status = 204, description = "Forgotten"))
)]
async fn registries_logout(
    State(p): Shared,
    ApiPath(host): ApiPath<String>,
    ApiQuery(q): ApiQuery<RegistryScopeQuery>,
) -> Result<StatusCode, ApiError> {
    crate::audit::CallContext::set_target(&host);
    p.registry_logout(&host, q.scope.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `?scope=` of a registry's credentials.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct RegistryScopeQuery {
    /// `platform` (the default), `tenant:NAME` or `project:NAME`.
    scope: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/people",
    tag = "teams",
    responses((status = 200, description = "People with a role", body = [berth_core::auth::PersonView]))
)]
async fn people_list(
    State(p): Shared,
) -> Result<Json<Vec<berth_core::auth::PersonView>>, ApiError> {
    Ok(Json(p.store.people().await?))
}

#[utoipa::path(
    post,
    path = "/v1/people",
    tag = "teams",
    request_body = berth_core::auth::PersonAdd,
    responses((status = 201, description = "They have this role now", body = berth_core::auth::PersonView))
)]
async fn people_add(
    State(p): Shared,
    headers: HeaderMap,
    ApiJson(req): ApiJson<berth_core::auth::PersonAdd>,
) -> Result<(StatusCode, Json<berth_core::auth::PersonView>), ApiError> {
    crate::audit::CallContext::set_target(&req.identity);
    let view = p
        .store
        .add_person(&req, &actor(&headers), crate::now_secs())
        .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(
    delete,
    path = "/v1/people/{identity}",
    tag = "teams",
    params(("identity" = String, Path, description = "The person's identity")),
    responses((status = 204, description = "They have no role any more"))
)]
async fn people_remove(
    State(p): Shared,
    ApiPath(identity): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    crate::audit::CallContext::set_target(&identity);
    p.store.remove_person(&identity).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    since: Option<String>,
    actor: Option<String>,
    app: Option<String>,
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "teams",
    params(AuditQuery),
    responses((status = 200, description = "Audit entries, newest first", body = [berth_core::auth::AuditEntry]))
)]
async fn audit_list(
    State(p): Shared,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<berth_core::auth::AuditEntry>>, ApiError> {
    let since = q
        .since
        .as_deref()
        .map(|t| log_time("since", t).map(|ms| ms / 1000))
        .transpose()?;
    let filter = crate::audit::AuditFilter {
        since,
        actor: q.actor,
        target: q.app,
        limit: q.limit.map(|l| l.min(100_000)),
    };
    Ok(Json(p.store.audit(&filter).await?))
}

#[utoipa::path(
    get,
    path = "/v1/tokens",
    tag = "teams",
    responses((status = 200, description = "Tokens (never their secrets)", body = [berth_core::auth::TokenView]))
)]
async fn tokens_list(State(p): Shared) -> Result<Json<Vec<berth_core::auth::TokenView>>, ApiError> {
    Ok(Json(p.store.tokens().await?))
}

#[utoipa::path(
    post,
    path = "/v1/tokens",
    tag = "teams",
    request_body = berth_core::auth::TokenCreate,
    responses((status = 201, description = "Created; the secret is shown this once", body = berth_core::auth::TokenCreated))
)]
async fn tokens_create(
    State(p): Shared,
    headers: HeaderMap,
    body: Result<Json<berth_core::auth::TokenCreate>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<berth_core::auth::TokenCreated>), ApiError> {
    let Json(req) = body.map_err(|e| {
        ApiError::invalid("invalid_token_request", e.body_text())
            .hint(r#"send {"name": "ci", "role": "viewer" | "deployer" | "admin"}"#)
    })?;
    crate::audit::CallContext::set_target(&req.name);
    let created = p
        .store
        .create_token(&req, &actor(&headers), crate::now_secs())
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    delete,
    path = "/v1/tokens/{name}",
    tag = "teams",
    params(("name" = String, Path, description = "The token")),
    responses((status = 200, description = "Revoked", body = berth_core::auth::TokenView))
)]
async fn tokens_revoke(
    State(p): Shared,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<berth_core::auth::TokenView>, ApiError> {
    Ok(Json(p.store.revoke_token(&name, crate::now_secs()).await?))
}

/// The caller (the guard puts it on every request).
pub(crate) type Caller = Option<axum::Extension<crate::tokens::Principal>>;

/// The project a caller is limited to.
fn caller_project(c: &Caller) -> Option<String> {
    c.as_ref().and_then(|axum::Extension(p)| p.project.clone())
}

fn caller_tenant(c: &Caller) -> Option<String> {
    c.as_ref().and_then(|axum::Extension(p)| p.tenant.clone())
}

pub(crate) fn caller_limit(c: &Caller) -> Option<crate::guard::Limit> {
    c.as_ref()
        .and_then(|axum::Extension(p)| crate::guard::Limit::of(p))
}

/// An app that exists must be in a project the caller reaches; otherwise it is answered
/// as one that does not exist — before anything else about it is looked at.
pub(crate) async fn reach_existing(
    p: &Platform,
    caller: &Caller,
    app: &AppName,
) -> Result<(), ApiError> {
    match p.store.app_project(app.as_str()).await? {
        Some(of) if !reaches(p, caller, &of).await? => Err(ApiError::app_not_found(app.as_str())),
        _ => Ok(()),
    }
}

/// Whether the caller's token reaches `project`.
pub(crate) async fn reaches(
    p: &Platform,
    caller: &Caller,
    project: &str,
) -> Result<bool, ApiError> {
    match caller_limit(caller) {
        None => Ok(true),
        Some(limit) => Ok(limit.reaches(p, project).await?),
    }
}

#[utoipa::path(
    get,
    path = "/v1/apps",
    tag = "apps",
    responses((status = 200, description = "Apps the token can see", body = [AppSummary]))
)]
async fn list_apps(State(p): Shared, caller: Caller) -> Result<Json<Vec<AppSummary>>, ApiError> {
    Ok(Json(app_summaries(&p, &caller).await?))
}

/// The apps `caller` can see, with their state.
pub(crate) async fn app_summaries(
    p: &Platform,
    caller: &Caller,
) -> Result<Vec<AppSummary>, ApiError> {
    let instances = p.store.instances(None).await?;
    let mut apps = Vec::new();
    for a in p.store.apps().await? {
        let project = p.store.app_project(&a.name).await?.unwrap_or_default();
        if !reaches(p, caller, &project).await? {
            continue;
        }
        let isolation = match a.current_release {
            Some(v) => p
                .store
                .release(&a.name, v)
                .await?
                .map(|r| r.config.isolation.as_str().to_string()),
            None => None,
        };
        let running = if p.kube.is_some() {
            // Its pods: a cluster that does not answer shows none rather than no apps.
            p.kube_instances(&a.name)
                .await
                .unwrap_or_default()
                .iter()
                .filter(|i| i.state == InstanceState::Running)
                .count()
        } else {
            instances
                .iter()
                .filter(|i| i.app == a.name && i.state == InstanceState::Running)
                .count()
        };
        apps.push(AppSummary {
            url: p.cfg.app_url(&a.name),
            running: running as u32,
            current_release: a.current_release,
            created_at: a.created_at,
            isolation,
            project,
            // Asleep once its web instances are gone, not while they are being stopped.
            sleeping: p.routes.is_sleeping(&a.name)
                && !instances
                    .iter()
                    .any(|i| i.app == a.name && i.process == berth_core::model::WEB_PROCESS),
            name: a.name,
        });
    }
    Ok(apps)
}

#[utoipa::path(
    post,
    path = "/v1/apps",
    tag = "apps",
    request_body = AppCreate,
    responses((status = 201, description = "Created with everything it asked for", body = berth_core::state::AppCreated), (status = 200, description = "It existed already with exactly this", body = berth_core::state::AppCreated))
)]
async fn create_app(
    State(p): Shared,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(mut body): ApiJson<AppCreate>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    crate::audit::CallContext::set_target(&body.name);
    let project = crate::projects::project_for_new_app(
        &p.store,
        body.project.as_deref(),
        caller_project(&caller).as_deref(),
        caller_tenant(&caller).as_deref(),
    )
    .await?;
    if p.store.app(&body.name).await?.is_none() {
        let mut volume_bytes = 0;
        for v in &body.volumes {
            volume_bytes += berth_core::limits::parse_memory(&v.size).unwrap_or(0);
        }
        p.store
            .check_quota(
                &project,
                crate::projects::Growth {
                    new_app: true,
                    volume_bytes,
                    ..Default::default()
                },
            )
            .await?;
    }
    body.project = Some(project);
    let key = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str().map_err(|_| {
                ApiError::invalid(
                    "invalid_idempotency_key",
                    "Idempotency-Key must be printable ASCII",
                )
            })
        })
        .transpose()?;
    let (status, body) = p
        .create_app_idempotent(&body, &actor(&headers), key)
        .await?;
    Ok((status, Json(body)))
}

#[utoipa::path(
    get,
    path = "/v1/apps/{app}/secrets",
    tag = "secrets",
    params(("app" = String, Path, description = "The app's name")),
    responses((status = 200, description = "Secret names and versions, never values", body = [SecretView]))
)]
async fn secrets_list(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
) -> Result<Json<Vec<SecretView>>, ApiError> {
    let name = existing_app(&p, &app).await?;
    Ok(Json(p.list_secrets(name.as_str()).await?))
}

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/secrets",
    tag = "secrets",
    params(("app" = String, Path, description = "The app's name")),
    request_body = SecretChange,
    responses((status = 200, description = "Progress as newline-delimited JSON events; the last one is `done`, `stored` or `failed`", content_type = "application/x-ndjson", body = DeployEvent))
)]
async fn secrets_change(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(change): ApiJson<SecretChange>,
) -> Result<Response, ApiError> {
    let name = existing_app(&p, &app).await?;
    let who = actor(&headers);
    let platform = p.clone();
    Ok(stream_workflow(&p, "secrets", &app, move |events| {
        Box::pin(async move {
            platform
                .change_secrets(name.as_str(), change, who, events)
                .await
        })
    }))
}

/// One public URL of an app and its last probes.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
struct ProbedUrl {
    url: String,
    /// Share of its kept probes that got an answer that is not a server error.
    success_ratio: f64,
    /// Oldest first.
    results: Vec<berth_core::api::ProbeResult>,
}

#[utoipa::path(
    get,
    path = "/v1/apps/{app}/probes",
    tag = "apps",
    params(("app" = String, Path, description = "The app's name")),
    responses((status = 200, description = "Each public URL with its last blackbox probes (through the edge, on `--probe-interval`)", body = [ProbedUrl]))
)]
async fn probes(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
) -> Result<Json<Vec<ProbedUrl>>, ApiError> {
    let name = existing_app(&p, &app).await?;
    Ok(Json(
        p.probes
            .of(name.as_str())
            .into_iter()
            .map(|(url, results)| ProbedUrl {
                success_ratio: results.iter().filter(|r| r.ok()).count() as f64
                    / results.len().max(1) as f64,
                url,
                results,
            })
            .collect(),
    ))
}

/// Body of `POST /v1/gc`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct GcRequest {
    /// Only say what would go.
    #[serde(default)]
    dry_run: bool,
}

#[utoipa::path(
    post,
    path = "/v1/gc",
    tag = "platform",
    request_body = GcRequest,
    responses((status = 200, description = "What was collected (or, with dry_run, would be): old releases' images, unneeded root filesystems, oversized or orphaned build caches", body = crate::gc::GcReport))
)]
async fn gc(
    State(p): Shared,
    ApiJson(request): ApiJson<GcRequest>,
) -> Result<Json<crate::gc::GcReport>, ApiError> {
    Ok(Json(p.gc(request.dry_run).await?))
}

#[utoipa::path(
    post,
    path = "/v1/secrets/rotate-key",
    tag = "secrets",
    responses((status = 200, description = "Every value re-sealed with a new key", body = crate::secrets::RotationReport))
)]
async fn secrets_rotate_key(
    State(p): Shared,
) -> Result<Json<crate::secrets::RotationReport>, ApiError> {
    Ok(Json(p.rotate_secrets_key().await?))
}

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/database",
    tag = "databases",
    params(("app" = String, Path, description = "The app's name")),
    responses((status = 200, description = "Progress as newline-delimited JSON events; the last one is `done`, `stored` or `failed`", content_type = "application/x-ndjson", body = DeployEvent))
)]
async fn database_create(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = existing_app(&p, &app).await?;
    let who = actor(&headers);
    let platform = p.clone();
    Ok(stream_workflow(&p, "database", &app, move |events| {
        Box::pin(async move { platform.create_database(name.as_str(), who, events).await })
    }))
}

#[utoipa::path(
    get,
    path = "/v1/dns",
    tag = "domains",
    responses(
        (status = 200, description = "Where berth publishes DNS records and the state of each name", body = DnsStatus),
        (status = 404, description = "berth publishes no DNS records (no `--dns`)", body = berth_core::api::ErrorBody)
    )
)]
async fn dns_status(State(p): Shared) -> Result<Json<DnsStatus>, ApiError> {
    p.dns_status().await?.map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "dns_not_configured",
            "berth publishes no DNS records on this platform",
        )
        .hint("start berth up with --dns rfc2136://SERVER?zone=ZONE&target=ADDRESS and --dns-tsig-key")
    })
}

#[utoipa::path(
    get,
    path = "/v1/apps/{app}/domains",
    tag = "domains",
    params(("app" = String, Path, description = "The app's name")),
    responses((status = 200, description = "Custom domains and their certificates", body = [DomainView]))
)]
async fn domains_list(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
) -> Result<Json<Vec<DomainView>>, ApiError> {
    let name = existing_app(&p, &app).await?;
    Ok(Json(p.list_domains(name.as_str()).await?))
}

#[utoipa::path(
    post,
    path = "/v1/gitops",
    tag = "deploys",
    request_body = berth_core::declare::GitopsAdd,
    responses(
        (status = 201, description = "Added; its branch's head is applied in the background. The webhook secret is shown this once", body = berth_core::declare::GitopsAdded),
        (status = 409, description = "A source of that name exists", body = berth_core::api::ErrorBody),
        (status = 422, description = "The repository or the branch cannot be read from this machine", body = berth_core::api::ErrorBody)
    )
)]
async fn gitops_add(
    State(p): Shared,
    headers: HeaderMap,
    ApiJson(req): ApiJson<berth_core::declare::GitopsAdd>,
) -> Result<(StatusCode, Json<berth_core::declare::GitopsAdded>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(p.gitops_add(&req, &actor(&headers)).await?),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/gitops",
    tag = "deploys",
    responses((status = 200, description = "Every GitOps source: the last commit, what came of it, and drift", body = [berth_core::declare::GitopsView]))
)]
async fn gitops_list(
    State(p): Shared,
) -> Result<Json<Vec<berth_core::declare::GitopsView>>, ApiError> {
    let mut out = Vec::new();
    for row in p.gitops_sources().await? {
        out.push(p.gitops_view(&row).await?);
    }
    Ok(Json(out))
}

#[utoipa::path(
    delete,
    path = "/v1/gitops/{name}",
    tag = "deploys",
    params(("name" = String, Path, description = "The source")),
    responses(
        (status = 204, description = "Removed; the apps it made stay"),
        (status = 404, description = "No such source", body = berth_core::api::ErrorBody)
    )
)]
async fn gitops_remove(
    State(p): Shared,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    p.gitops_remove(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct PlatformQuery {
    /// Also delete the apps an earlier apply made that the definition no longer has.
    #[serde(default)]
    prune: bool,
}

/// Reads the platform definition of an upload: every app directory, checked.
async fn platform_definition(
    p: &Platform,
    body: Result<Bytes, BytesRejection>,
) -> Result<(tempfile::TempDir, Vec<crate::declarative::DeclaredApp>), ApiError> {
    let body = body.map_err(|e| ApiError::invalid("bad_upload", e.body_text()))?;
    if body.is_empty() {
        return Err(ApiError::invalid(
            "bad_upload",
            "the upload is empty; send the platform directory as a gzipped tar archive",
        ));
    }
    let dir = tempfile::tempdir().map_err(|e| ApiError::internal("a work directory", e))?;
    let root = dir.path().to_path_buf();
    let limit = p.cfg.upload_limit;
    let read = tokio::task::spawn_blocking(move || {
        berth_factory::source::unpack(&body, &root)
            .map_err(|e| vec![e.to_string()])
            .and_then(|()| crate::declarative::read_platform(&root, limit))
    })
    .await
    .map_err(|e| ApiError::internal("reading the platform definition", e))?;
    match read {
        Ok(apps) => Ok((dir, apps)),
        Err(problems) => Err(ApiError::invalid("invalid_platform", problems.join("\n"))
            .hint("fix these and plan again; nothing was changed")),
    }
}

#[utoipa::path(
    post,
    path = "/v1/platform/plan",
    tag = "deploys",
    params(PlatformQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The platform directory (one subdirectory per app) as a .tar.gz"),
    responses(
        (status = 200, description = "What applying it would change, field by field", body = berth_core::declare::PlanView),
        (status = 400, description = "The definition is invalid (every problem named with its file)", body = berth_core::api::ErrorBody)
    )
)]
async fn platform_plan(
    State(p): Shared,
    ApiQuery(q): ApiQuery<PlatformQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<berth_core::declare::PlanView>, ApiError> {
    let (_dir, apps) = platform_definition(&p, body).await?;
    Ok(Json(p.plan_platform(&apps, q.prune).await?))
}

#[utoipa::path(
    post,
    path = "/v1/platform/apply",
    tag = "deploys",
    params(PlatformQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The platform directory (one subdirectory per app) as a .tar.gz"),
    responses((status = 200, description = "Progress as newline-delimited JSON events; the last one is `stored` (what was applied) or `failed`", content_type = "application/x-ndjson", body = DeployEvent))
)]
async fn platform_apply(
    State(p): Shared,
    ApiQuery(q): ApiQuery<PlatformQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (dir, apps) = platform_definition(&p, body).await?;
    let who = actor(&headers);
    let platform = p.clone();
    let prune = q.prune;
    Ok(stream_workflow(&p, "apply", "platform", move |events| {
        Box::pin(async move {
            let _keep = dir;
            let summary = platform
                .apply_platform(apps, prune, format!("declarative:{who}"), None, events)
                .await?;
            Ok((crate::deploy::STORED_ONLY, summary))
        })
    }))
}

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/git",
    tag = "deploys",
    params(("app" = String, Path, description = "The app's name")),
    request_body = GitConnect,
    responses(
        (status = 201, description = "Connected; the branch's head deploys in the background. The webhook secret is shown this once", body = GitConnected),
        (status = 422, description = "The repository or the branch cannot be read from this machine", body = berth_core::api::ErrorBody)
    )
)]
async fn git_connect(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(req): ApiJson<GitConnect>,
) -> Result<(StatusCode, Json<GitConnected>), ApiError> {
    let name = app_name(&app)?;
    let project = deploy_checks(&p, &name, None, &caller, &BerthToml::default()).await?;
    Ok((
        StatusCode::CREATED,
        Json(
            p.git_connect(&name, &req, project, &actor(&headers))
                .await?,
        ),
    ))
}

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/git/key",
    tag = "deploys",
    params(("app" = String, Path, description = "The app's name (it need not exist yet)")),
    request_body = DeployKeyRequest,
    responses(
        (status = 200, description = "The app's deploy key: made now (`created`), or the one it has; add the public key to the repository as a read-only deploy key", body = DeployKeyView)
    )
)]
async fn deploy_key_make(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
    caller: Caller,
    ApiJson(req): ApiJson<DeployKeyRequest>,
) -> Result<Json<DeployKeyView>, ApiError> {
    let name = app_name(&app)?;
    // A key for an app not made yet makes the app (in the caller's project): the key is
    // its, and no token of another project can connect the repository it opens.
    if p.store.app(name.as_str()).await?.is_none() {
        let project = deploy_checks(&p, &name, None, &caller, &BerthToml::default()).await?;
        p.store
            .ensure_app_in(name.as_str(), &project, crate::now_secs())
            .await?;
    }
    Ok(Json(p.deploy_key(name.as_str(), req.rotate).await?))
}

#[utoipa::path(
    get,
    path = "/v1/apps/{app}/git/key",
    tag = "deploys",
    params(("app" = String, Path, description = "The app's name")),
    responses(
        (status = 200, description = "The app's deploy key (its public half)", body = DeployKeyView),
        (status = 404, description = "The app has no deploy key", body = berth_core::api::ErrorBody)
    )
)]
async fn deploy_key_get(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
) -> Result<Json<DeployKeyView>, ApiError> {
    let name = app_name(&app)?;
    p.deploy_key_view(name.as_str())
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_deploy_key",
                format!("app {name} has no deploy key"),
            )
            .hint(format!("make one with `berth git key {name}`"))
        })
}

#[utoipa::path(
    get,
    path = "/v1/apps/{app}/git",
    tag = "deploys",
    params(("app" = String, Path, description = "The app's name")),
    responses(
        (status = 200, description = "The app's git connection and what its last push did", body = GitConnectionView),
        (status = 404, description = "The app is not connected to a repository", body = berth_core::api::ErrorBody)
    )
)]
async fn git_connection(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
) -> Result<Json<GitConnectionView>, ApiError> {
    let name = app_name(&app)?;
    p.git_connection(name.as_str())
        .await?
        .map(|c| Json(c.view()))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_connected",
                format!("app {name} is not connected to a repository"),
            )
            .hint(format!(
                "connect it with `berth git connect {name} URL --branch main`"
            ))
        })
}

#[utoipa::path(
    delete,
    path = "/v1/apps/{app}/git",
    tag = "deploys",
    params(("app" = String, Path, description = "The app's name")),
    responses(
        (status = 204, description = "Disconnected: pushes deploy nothing any more"),
        (status = 404, description = "The app is not connected to a repository", body = berth_core::api::ErrorBody)
    )
)]
async fn git_disconnect(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let name = app_name(&app)?;
    p.git_disconnect(name.as_str()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/domains",
    tag = "domains",
    params(("app" = String, Path, description = "The app's name")),
    request_body = DomainAdd,
    responses((status = 201, description = "Added; its certificate is issued", body = DomainView))
)]
async fn domains_add(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
    ApiJson(req): ApiJson<DomainAdd>,
) -> Result<(StatusCode, Json<DomainView>), ApiError> {
    let name = existing_app(&p, &app).await?;
    Ok((
        StatusCode::CREATED,
        Json(p.add_domain(name.as_str(), &req).await?),
    ))
}

#[utoipa::path(
    delete,
    path = "/v1/apps/{app}/domains/{name}",
    tag = "domains",
    params(("app" = String, Path, description = "The app's name"), ("name" = String, Path, description = "The domain")),
    responses((status = 204, description = "Removed"))
)]
async fn domains_remove(
    State(p): Shared,
    ApiPath((app, domain)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let name = existing_app(&p, &app).await?;
    p.remove_domain(name.as_str(), &domain).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The local CA's certificate, for clients to trust the edge's certificates.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct CaCertificate {
    /// PEM.
    pub certificate_pem: String,
}

#[utoipa::path(
    get,
    path = "/v1/ca",
    tag = "domains",
    responses((status = 200, description = "The local CA's certificate (PEM)", body = CaCertificate))
)]
async fn ca_certificate(State(p): Shared) -> Result<Json<CaCertificate>, ApiError> {
    Ok(Json(CaCertificate {
        certificate_pem: p.ca_certificate().await?,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/apps/{app}/database",
    tag = "databases",
    params(("app" = String, Path, description = "The app's name")),
    responses((status = 200, description = "The app's database", body = DatabaseView))
)]
async fn database_info(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
) -> Result<Json<DatabaseView>, ApiError> {
    let name = existing_app(&p, &app).await?;
    Ok(Json(p.database_info(name.as_str()).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DoraQuery {
    /// One app (default: the whole platform).
    app: Option<String>,
    /// One project's apps together (not with `app`).
    project: Option<String>,
    /// One window (default: 1d, 7d and 30d).
    window: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/dora",
    tag = "observe",
    params(DoraQuery),
    responses((status = 200, description = "The four keys per window", body = [berth_core::dora::DoraView]))
)]
async fn dora(
    State(p): Shared,
    ApiQuery(q): ApiQuery<DoraQuery>,
) -> Result<Json<Vec<berth_core::dora::DoraView>>, ApiError> {
    use crate::dora::DoraScope;
    let scope = match (q.app.as_deref(), q.project.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "invalid_scope",
                "ask for one app or one project, not both",
            ))
        }
        (Some(a), None) => DoraScope::App(a),
        (None, Some(project)) => DoraScope::Project(project),
        (None, None) => DoraScope::Platform,
    };
    Ok(Json(p.dora(scope, q.window.as_deref()).await?))
}

#[utoipa::path(
    get,
    path = "/v1/apps/{app}/slo",
    tag = "observe",
    params(("app" = String, Path, description = "The app's name")),
    responses((status = 200, description = "Objectives, error budgets and burn rates", body = berth_core::slo::SloView))
)]
async fn slo(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
) -> Result<Json<berth_core::slo::SloView>, ApiError> {
    let name = existing_app(&p, &app).await?;
    Ok(Json(p.slo_view(name.as_str()).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct RulesQuery {
    app: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/slo/rules",
    tag = "observe",
    params(RulesQuery),
    responses((status = 200, description = "Prometheus recording and alerting rules", content_type = "application/yaml", body = Object))
)]
async fn slo_rules(
    State(p): Shared,
    ApiQuery(q): ApiQuery<RulesQuery>,
) -> Result<Response, ApiError> {
    let rules = p.slo_rules(q.app.as_deref()).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/yaml; charset=utf-8")],
        rules,
    )
        .into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AlertsQuery {
    /// Also alerts resolved in the last day.
    #[serde(default)]
    all: bool,
}

#[utoipa::path(
    get,
    path = "/v1/alerts",
    tag = "observe",
    params(AlertsQuery),
    responses((status = 200, description = "Firing alerts (and, with all, recently resolved ones)", body = [berth_core::alerts::AlertView]))
)]
async fn alerts(
    State(p): Shared,
    ApiQuery(q): ApiQuery<AlertsQuery>,
) -> Result<Json<Vec<berth_core::alerts::AlertView>>, ApiError> {
    let since = q.all.then(|| crate::now_secs() - 86_400);
    Ok(Json(p.store.alerts(since).await?))
}

/// Prometheus scrape: OpenMetrics when asked for, else the classic text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "observe",
    responses((status = 200, description = "Prometheus text format, or OpenMetrics when asked", content_type = "text/plain", body = String))
)]
async fn metrics(State(p): Shared, headers: HeaderMap) -> Result<Response, ApiError> {
    let format = berth_observe::metrics::Format::negotiate(
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()),
    );
    let body = p.render_metrics(format).await?;
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/backups",
    tag = "backups",
    request_body = berth_core::state::BackupCreate,
    responses((status = 201, description = "Written and verified", body = berth_core::state::BackupView))
)]
async fn backup_create(
    State(p): Shared,
    ApiJson(req): ApiJson<berth_core::state::BackupCreate>,
) -> Result<(StatusCode, Json<berth_core::state::BackupView>), ApiError> {
    Ok((StatusCode::CREATED, Json(p.create_backup(req).await?)))
}

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/database/backups",
    tag = "databases",
    params(("app" = String, Path, description = "The app's name")),
    responses((status = 201, description = "Backed up", body = DatabaseBackupView))
)]
async fn database_backup(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
) -> Result<(StatusCode, Json<DatabaseBackupView>), ApiError> {
    let name = existing_app(&p, &app).await?;
    Ok((
        StatusCode::CREATED,
        Json(p.backup_database(name.as_str()).await?),
    ))
}

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/database/restore",
    tag = "databases",
    params(("app" = String, Path, description = "The app's name")),
    request_body = DatabaseRestore,
    responses((status = 204, description = "Restored"))
)]
async fn database_restore(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
    ApiJson(req): ApiJson<DatabaseRestore>,
) -> Result<StatusCode, ApiError> {
    let name = existing_app(&p, &app).await?;
    p.restore_database(name.as_str(), &req.backup).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/apps/{app}/volumes",
    tag = "volumes",
    params(("app" = String, Path, description = "The app's name")),
    responses((status = 200, description = "The app's volumes", body = [VolumeView]))
)]
async fn volumes_list(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
) -> Result<Json<Vec<VolumeView>>, ApiError> {
    let name = existing_app(&p, &app).await?;
    Ok(Json(p.list_volumes(name.as_str()).await?))
}

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/volumes",
    tag = "volumes",
    params(("app" = String, Path, description = "The app's name")),
    request_body = VolumeCreate,
    responses((status = 200, description = "Progress as newline-delimited JSON events; the last one is `done`, `stored` or `failed`", content_type = "application/x-ndjson", body = DeployEvent))
)]
async fn volumes_create(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<VolumeCreate>,
) -> Result<Response, ApiError> {
    let name = existing_app(&p, &app).await?;
    if let Some(project) = p.store.app_project(name.as_str()).await? {
        p.store
            .check_quota(
                &project,
                crate::projects::Growth {
                    volume_bytes: berth_core::limits::parse_memory(&req.size).unwrap_or(0),
                    ..Default::default()
                },
            )
            .await?;
    }
    let who = actor(&headers);
    let platform = p.clone();
    Ok(stream_workflow(&p, "volume_create", &app, move |events| {
        Box::pin(async move {
            platform
                .create_volume(name.as_str(), req, who, events)
                .await
        })
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ForceQuery {
    force: Option<bool>,
}

#[utoipa::path(
    delete,
    path = "/v1/apps/{app}/volumes/{name}",
    tag = "volumes",
    params(("app" = String, Path, description = "The app's name"), ("name" = String, Path, description = "The volume"), ForceQuery),
    responses((status = 200, description = "Progress as newline-delimited JSON events; the last one is `done`, `stored` or `failed`", content_type = "application/x-ndjson", body = DeployEvent))
)]
async fn volumes_destroy(
    State(p): Shared,
    ApiPath((app, volume)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<ForceQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = existing_app(&p, &app).await?;
    let who = actor(&headers);
    let platform = p.clone();
    let force = q.force.unwrap_or(false);
    Ok(stream_workflow(&p, "volume_destroy", &app, move |events| {
        Box::pin(async move {
            platform
                .destroy_volume(name.as_str(), &volume, force, who, events)
                .await
        })
    }))
}

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/volumes/{name}/snapshots",
    tag = "volumes",
    params(("app" = String, Path, description = "The app's name"), ("name" = String, Path, description = "The volume")),
    responses((status = 201, description = "Snapshot taken", body = SnapshotView))
)]
async fn volumes_snapshot(
    State(p): Shared,
    ApiPath((app, volume)): ApiPath<(String, String)>,
) -> Result<(StatusCode, Json<SnapshotView>), ApiError> {
    let name = existing_app(&p, &app).await?;
    Ok((
        StatusCode::CREATED,
        Json(p.snapshot_volume(name.as_str(), &volume).await?),
    ))
}

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/volumes/{name}/restore",
    tag = "volumes",
    params(("app" = String, Path, description = "The app's name"), ("name" = String, Path, description = "The volume")),
    request_body = VolumeRestore,
    responses((status = 204, description = "Restored"))
)]
async fn volumes_restore(
    State(p): Shared,
    ApiPath((app, volume)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<VolumeRestore>,
) -> Result<StatusCode, ApiError> {
    let name = existing_app(&p, &app).await?;
    p.restore_volume(name.as_str(), &volume, &req.snapshot, req.force)
        .await
        .map_err(|f| f.error)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    delete,
    path = "/v1/apps/{app}",
    tag = "apps",
    params(("app" = String, Path, description = "The app's name")),
    responses((status = 204, description = "Destroyed with its instances, releases, volumes and database"))
)]
async fn destroy_app(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let name = app_name(&app)?;
    p.destroy(name.as_str()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DeployQuery {
    /// Git commit sha of the source, when it is a clean checkout.
    commit: Option<String>,
    /// When that commit was made (Unix seconds), for lead time.
    commit_time: Option<i64>,
    /// The project of a new app.
    project: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/deploys",
    tag = "deploys",
    params(("app" = String, Path, description = "The app's name"), DeployQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The source as a .tar.gz (the CLI sends it as application/gzip)"),
    responses((status = 200, description = "Progress as newline-delimited JSON events; the last one is `done`, `stored` or `failed`", content_type = "application/x-ndjson", body = DeployEvent))
)]
async fn deploy(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeployQuery>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let name = app_name(&app)?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "upload_too_large",
                format!("the upload is over the limit of {} bytes", p.cfg.upload_limit),
            )
            .hint("exclude build outputs and dependencies with .gitignore or .dockerignore, or start berth with a larger --upload-limit")
        } else {
            ApiError::invalid("bad_upload", e.body_text())
        }
    })?;
    if body.is_empty() {
        return Err(ApiError::invalid(
            "bad_upload",
            "the upload is empty; send the app directory as a gzipped tar archive",
        ));
    }
    let toml = crate::deploy::spec_of(&body)?;
    let project = deploy_checks(&p, &name, q.project.as_deref(), &caller, &toml).await?;
    let source_id = match q.commit {
        Some(c) if c.len() == 40 && c.chars().all(|ch| ch.is_ascii_hexdigit()) => {
            c.to_ascii_lowercase()
        }
        Some(c) => {
            return Err(ApiError::invalid(
                "invalid_commit",
                format!("commit {c:?} is not a 40-character hex sha"),
            ))
        }
        None => berth_factory::source::content_id(&body),
    };
    let commit_time = match q.commit_time {
        Some(t) if t <= 0 || t > crate::now_secs() + 86_400 => {
            return Err(ApiError::invalid(
                "invalid_commit_time",
                format!("commit_time {t} is not a time in the past (Unix seconds)"),
            ))
        }
        t => t,
    };
    let who = actor(&headers);
    let platform = p.clone();
    Ok(stream_workflow(&p, "deploy", &app, move |events| {
        Box::pin(async move {
            platform
                .deploy_source(
                    name,
                    body,
                    crate::deploy::SourceRef {
                        id: source_id,
                        commit_time,
                        project,
                    },
                    toml,
                    who,
                    events,
                )
                .await
        })
    }))
}

/// What every deploy checks before it starts: the app's project (an existing app's own; a
/// new app's as asked, within its quota), the isolation level's runtime, the apps its
/// network policy names. The project.
pub(crate) async fn deploy_checks(
    p: &Arc<Platform>,
    name: &AppName,
    asked_project: Option<&str>,
    caller: &Caller,
    toml: &BerthToml,
) -> Result<String, ApiError> {
    // What app.json requires must be set before the deploy.
    if !toml.required_env.is_empty() {
        let env = p
            .store
            .app(name.as_str())
            .await?
            .map(|a| a.env)
            .unwrap_or_default();
        let secrets = p.store.app_secrets(name.as_str()).await?;
        let missing: Vec<&str> = toml
            .required_env
            .iter()
            .filter(|k| !env.contains_key(*k) && !secrets.contains_key(*k))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(ApiError::invalid(
                "required_env_missing",
                format!(
                    "app.json requires {} and the app has no value for it",
                    missing.join(", ")
                ),
            )
            .hint(format!(
                "set it first: berth secrets set {name} {}=… (or berth env set)",
                missing[0]
            )));
        }
    }
    // The project: an existing app's own; a new app's as asked, within its quota.
    let project = match p.store.app_project(name.as_str()).await? {
        Some(of) => {
            if asked_project.is_some_and(|asked| asked != of) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "app_in_other_project",
                    format!("app {name} belongs to project {of:?}"),
                ));
            }
            of
        }
        None => {
            let project = crate::projects::project_for_new_app(
                &p.store,
                asked_project,
                caller_project(caller).as_deref(),
                caller_tenant(caller).as_deref(),
            )
            .await?;
            p.store
                .check_quota(
                    &project,
                    crate::projects::Growth {
                        new_app: true,
                        ..Default::default()
                    },
                )
                .await?;
            project
        }
    };
    let isolation = p.isolation_for(&project, toml).await?;
    if isolation == Isolation::Sandbox {
        if !toml.capabilities().is_empty() {
            return Err(ApiError::invalid(
                "invalid_berth_toml",
                "berth.toml: security.capabilities: this app runs sandboxed (the platform's or its tenant's default), \
                 and sandboxed apps keep no capabilities",
            )
            .hint("remove security.capabilities, or set isolation = \"trusted\""));
        }
        let launcher = p.launcher.clone();
        let ready = tokio::task::spawn_blocking(move || launcher.check_isolation(isolation))
            .await
            .map_err(|e| ApiError::internal("checking the sandbox runtime", e))?;
        if let Err(e) = ready {
            return Err(ApiError::invalid(
                "isolation_unavailable",
                format!("isolation \"sandbox\" needs gVisor on this host: {e}"),
            )
            .hint("install gVisor (`apt-get install runsc`), or set isolation = \"trusted\""));
        }
    }
    if let Ok(policy) = toml.network_policy() {
        for other in &policy.allow {
            if other != name.as_str() {
                allowed_app_check(p, name, &project, other, caller).await?;
            }
        }
    }
    Ok(project)
}

/// `[network] allow` of app `name` (in `project`) naming `other`: it must exist, and be of
/// the same project or accept `project/name` in its own `[network] accept_from`. An app of
/// a project the caller does not reach is answered as one that does not exist.
async fn allowed_app_check(
    p: &Arc<Platform>,
    name: &AppName,
    project: &str,
    other: &str,
    caller: &Caller,
) -> Result<(), ApiError> {
    let missing = || {
        ApiError::invalid(
            "invalid_berth_toml",
            format!("berth.toml: network.allow: there is no app named {other:?}"),
        )
        .hint("deploy that app first, or remove it from network.allow")
    };
    let (Some(row), Some(of)) = (p.store.app(other).await?, p.store.app_project(other).await?)
    else {
        return Err(missing());
    };
    if of == project {
        return Ok(());
    }
    let accepts = match row.current_release {
        Some(v) => p
            .store
            .release(other, v)
            .await?
            .is_some_and(|r| r.config.network.accepts(&of, project, name.as_str())),
        None => false,
    };
    if accepts {
        return Ok(());
    }
    if !reaches(p, caller, &of).await? {
        return Err(missing());
    }
    Err(ApiError::invalid(
        "network_not_accepted",
        format!(
            "berth.toml: network.allow: app {other} (project {of}) does not accept connections from {name} (project {project})"
        ),
    )
    .hint(format!(
        "apps reach only apps of their own project, unless the target names the caller: add accept_from = [\"{project}/{name}\"] to {other}'s [network]"
    )))
}

/// Body of `POST /v1/apps/{app}/deploys/image`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ImageDeploy {
    /// The image: `HOST[:PORT]/PATH:TAG` or `…@sha256:…`.
    image: String,
    /// The project of a new app.
    #[serde(default)]
    project: Option<String>,
    /// berth.toml text (its `image` is replaced by the one above).
    #[serde(default)]
    berth_toml: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/deploys/image",
    tag = "deploys",
    params(("app" = String, Path, description = "The app's name")),
    request_body = ImageDeploy,
    responses((status = 200, description = "Progress as newline-delimited JSON events; the last one is `done`, `stored` or `failed`", content_type = "application/x-ndjson", body = DeployEvent))
)]
async fn deploy_image(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ImageDeploy>,
) -> Result<Response, ApiError> {
    let name = app_name(&app)?;
    let mut toml = match &req.berth_toml {
        Some(text) => BerthToml::parse(text).map_err(|e| {
            ApiError::invalid("invalid_berth_toml", e.to_string())
                .hint("fix berth.toml and deploy again")
        })?,
        None => BerthToml::default(),
    };
    toml.image = Some(req.image.clone());
    toml.build = Default::default();
    let problems = toml.validate();
    if !problems.is_empty() {
        return Err(
            ApiError::invalid("invalid_image_reference", problems.join("; "))
                .hint("give HOST[:PORT]/PATH:TAG, e.g. registry.example.com/team/web:1.4"),
        );
    }
    let project = deploy_checks(&p, &name, req.project.as_deref(), &caller, &toml).await?;
    use sha2::Digest as _;
    let source_id = format!(
        "sha256-{}",
        hex::encode(sha2::Sha256::digest(req.image.as_bytes()))
    );
    let who = actor(&headers);
    let platform = p.clone();
    Ok(stream_workflow(&p, "deploy", &app, move |events| {
        Box::pin(async move {
            platform
                .deploy_source(
                    name,
                    Bytes::new(),
                    crate::deploy::SourceRef {
                        id: source_id,
                        commit_time: None,
                        project,
                    },
                    toml,
                    who,
                    events,
                )
                .await
        })
    }))
}

#[utoipa::path(
    get,
    path = "/v1/apps/{app}/releases",
    tag = "deploys",
    params(("app" = String, Path, description = "The app's name")),
    responses((status = 200, description = "Releases, newest first", body = [ReleaseView]))
)]
async fn releases(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
) -> Result<Json<Vec<ReleaseView>>, ApiError> {
    let name = existing_app(&p, &app).await?;
    Ok(Json(p.store.releases(name.as_str()).await?))
}

#[utoipa::path(
    get,
    path = "/v1/apps/{app}/images",
    tag = "deploys",
    params(("app" = String, Path, description = "The app's name")),
    responses((status = 200, description = "The app's images, newest release first: digest, size, SBOM and signature", body = [berth_core::api::ImageView]))
)]
async fn images(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
) -> Result<Json<Vec<berth_core::api::ImageView>>, ApiError> {
    let name = existing_app(&p, &app).await?;
    let releases = p.store.releases(name.as_str()).await?;
    let factory = p.factory.clone();
    let views = tokio::task::spawn_blocking(move || {
        let mut views: Vec<berth_core::api::ImageView> = Vec::new();
        for r in releases {
            if let Some(v) = views.iter_mut().find(|v| v.digest == r.image.digest) {
                v.releases.push(r.version);
                continue;
            }
            let images = factory.images();
            // Collected by `berth gc`: no longer held.
            if !images.holds(&r.image) {
                continue;
            }
            let signature = match factory.verify(&r.image) {
                Ok(berth_factory::signing::Verdict::Verified) => "verified".to_string(),
                Ok(berth_factory::signing::Verdict::Unsigned) => "unsigned".to_string(),
                Ok(berth_factory::signing::Verdict::Invalid(why)) => format!("invalid: {why}"),
                Err(e) => format!("invalid: {e}"),
            };
            views.push(berth_core::api::ImageView {
                digest: r.image.digest.clone(),
                tag: r.image.tag.clone(),
                size: images.size(&r.image).unwrap_or(0),
                releases: vec![r.version],
                sbom_packages: factory
                    .sbom(&r.image)
                    .ok()
                    .flatten()
                    .and_then(|d| d["packages"].as_array().map(Vec::len)),
                signature,
            });
        }
        views
    })
    .await
    .map_err(|e| ApiError::internal("listing images", e))?;
    Ok(Json(views))
}

#[utoipa::path(
    get,
    path = "/v1/apps/{app}/releases/{version}/sbom",
    tag = "deploys",
    params(("app" = String, Path, description = "The app's name"), ("version" = u32, Path, description = "The release")),
    responses((status = 200, description = "The SPDX 2.3 JSON document of the release's image", content_type = "application/spdx+json", body = Object))
)]
async fn release_sbom(
    State(p): Shared,
    ApiPath((app, version)): ApiPath<(String, u32)>,
) -> Result<Response, ApiError> {
    let name = existing_app(&p, &app).await?;
    let release = p
        .store
        .release(name.as_str(), version)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "release_not_found",
                format!("{name} has no release v{version}"),
            )
            .hint(format!("see `berth releases {name}`"))
        })?;
    let factory = p.factory.clone();
    let doc = tokio::task::spawn_blocking(move || factory.sbom(&release.image))
        .await
        .map_err(|e| ApiError::internal("reading the SBOM", e))?
        .map_err(|e| ApiError::internal("reading the SBOM", e))?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "sbom_not_found",
                format!("the image of {name} v{version} has no SBOM (it was built before berth made them)"),
            )
            .hint("deploy again to build an image with an SBOM")
        })?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/spdx+json")],
        doc.to_string(),
    )
        .into_response())
}

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/rollback",
    tag = "deploys",
    params(("app" = String, Path, description = "The app's name")),
    request_body(content = Option<RollbackRequest>, description = "Which release; none: the one before the current"),
    responses((status = 200, description = "Progress as newline-delimited JSON events; the last one is `done`, `stored` or `failed`", content_type = "application/x-ndjson", body = DeployEvent))
)]
async fn rollback(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = existing_app(&p, &app).await?;
    // The body is optional: none means the release before the current one.
    let to = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<RollbackRequest>(&body)
            .map_err(|e| {
                ApiError::invalid("invalid_json", format!("the rollback request: {e}"))
                    .hint(r#"send {"to": VERSION}, or no body for the release before"#)
            })?
            .to
    };
    let who = actor(&headers);
    let platform = p.clone();
    Ok(stream_workflow(&p, "rollback", &app, move |events| {
        Box::pin(async move { platform.rollback(name.as_str(), to, who, events).await })
    }))
}

#[utoipa::path(
    get,
    path = "/v1/apps/{app}/env",
    tag = "deploys",
    params(("app" = String, Path, description = "The app's name")),
    responses((status = 200, description = "The current release's environment", body = std::collections::BTreeMap<String, String>))
)]
async fn env_list(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
) -> Result<Json<BTreeMap<String, String>>, ApiError> {
    let name = existing_app(&p, &app).await?;
    let row = p
        .store
        .app(name.as_str())
        .await?
        .ok_or_else(|| ApiError::app_not_found(&app))?;
    let env = match row.current_release {
        Some(v) => p
            .store
            .release(name.as_str(), v)
            .await?
            .map(|r| r.config.env)
            .unwrap_or_default(),
        None => row.env,
    };
    Ok(Json(env))
}

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/env",
    tag = "deploys",
    params(("app" = String, Path, description = "The app's name")),
    request_body = EnvChange,
    responses((status = 200, description = "Progress as newline-delimited JSON events; the last one is `done`, `stored` or `failed`", content_type = "application/x-ndjson", body = DeployEvent))
)]
async fn env_change(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(change): ApiJson<EnvChange>,
) -> Result<Response, ApiError> {
    let name = existing_app(&p, &app).await?;
    let who = actor(&headers);
    let platform = p.clone();
    Ok(stream_workflow(&p, "env", &app, move |events| {
        Box::pin(async move {
            platform
                .change_env(name.as_str(), change, who, events)
                .await
        })
    }))
}

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/scale",
    tag = "deploys",
    params(("app" = String, Path, description = "The app's name")),
    request_body = berth_core::api::ScaleChange,
    responses((status = 200, description = "Progress as newline-delimited JSON events; the last one is `done`, `stored` or `failed`", content_type = "application/x-ndjson", body = DeployEvent))
)]
async fn scale(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(change): ApiJson<berth_core::api::ScaleChange>,
) -> Result<Response, ApiError> {
    let name = existing_app(&p, &app).await?;
    let who = actor(&headers);
    let platform = p.clone();
    Ok(stream_workflow(&p, "scale", &app, move |events| {
        Box::pin(async move { platform.scale(name.as_str(), change, who, events).await })
    }))
}

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/redeploy",
    tag = "deploys",
    params(("app" = String, Path, description = "The app's name")),
    responses((status = 200, description = "A new release of the serving one's image and settings, rolled out like a deploy (new instances, health checks, switch, drain). Progress as newline-delimited JSON events; the last one is `done`, `stored` or `failed`", content_type = "application/x-ndjson", body = DeployEvent))
)]
async fn redeploy(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = existing_app(&p, &app).await?;
    let who = actor(&headers);
    let platform = p.clone();
    Ok(stream_workflow(&p, "redeploy", &app, move |events| {
        Box::pin(async move { platform.redeploy(name.as_str(), who, events).await })
    }))
}

/// Answer of `POST /v1/apps/{app}/instances/{instance}/kill`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
struct Killed {
    app: String,
    /// The container killed.
    instance: String,
}

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/instances/{instance}/kill",
    tag = "apps",
    params(
        ("app" = String, Path, description = "The app's name"),
        ("instance" = String, Path, description = "The instance: its id, or `PROCESS.INDEX` of the serving release (`web.0`)")
    ),
    responses(
        (status = 200, description = "Killed (SIGKILL, as a crash): the supervisor restarts it as it would a crashed instance", body = Killed),
        (status = 404, description = "No running instance of that name", body = berth_core::api::ErrorBody)
    )
)]
async fn kill_instance(
    State(p): Shared,
    ApiPath((app, instance)): ApiPath<(String, String)>,
) -> Result<Json<Killed>, ApiError> {
    let name = existing_app(&p, &app).await?;
    let serving = p.serving_release(name.as_str()).await?.map(|r| r.version);
    let running: Vec<_> = p
        .store
        .instances(Some(name.as_str()))
        .await?
        .into_iter()
        .filter(|i| i.state == InstanceState::Running)
        .collect();
    let found = running.iter().find(|i| {
        i.id == instance
            || (Some(i.release) == serving && format!("{}.{}", i.process, i.index) == instance)
    });
    let Some(found) = found else {
        let names: Vec<String> = running
            .iter()
            .filter(|i| Some(i.release) == serving)
            .map(|i| format!("{}.{}", i.process, i.index))
            .collect();
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "instance_not_found",
            format!("{app} has no running instance {instance:?}"),
        )
        .hint(if names.is_empty() {
            format!("{app} has no running instance; see `berth ps {app}`")
        } else {
            format!("its running instances: {}", names.join(", "))
        }));
    };
    let id = found.id.clone();
    let launcher = p.launcher.clone();
    let target = id.clone();
    tokio::task::spawn_blocking(move || launcher.kill(&target))
        .await
        .map_err(|e| ApiError::internal("killing an instance", e))?
        .map_err(|e| ApiError::internal("killing an instance", e))?;
    tracing::info!(app = %app, instance = %id, "instance killed on request");
    Ok(Json(Killed { app, instance: id }))
}

/// Answer of a canary command.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
struct CanaryAnswer {
    app: String,
    /// `promote` or `abort`, handed to the canary under way.
    action: String,
}

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/canary/{action}",
    tag = "deploys",
    params(
        ("app" = String, Path, description = "The app's name"),
        ("action" = String, Path, description = "`promote` (all requests to the canary now) or `abort` (roll it back now)")
    ),
    responses(
        (status = 200, description = "Handed to the canary; its deploy stream says what happened (409 when none is under way)", body = CanaryAnswer)
    )
)]
async fn canary_command(
    State(p): Shared,
    ApiPath((app, action)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<CanaryAnswer>, ApiError> {
    let name = existing_app(&p, &app).await?;
    let who = actor(&headers);
    let command = match action.as_str() {
        "promote" => crate::canary::Command::Promote(who),
        "abort" => crate::canary::Command::Abort(who),
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_action",
                format!("{other:?} is not a canary action"),
            )
            .hint("use promote or abort"))
        }
    };
    // On a cluster, the canary is the app's Argo Rollouts Rollout.
    let handed = if p.kube.is_some() {
        let abort = matches!(command, crate::canary::Command::Abort(_));
        p.kube_canary_command(name.as_str(), abort).await?
    } else {
        p.canaries.signal(name.as_str(), command)
    };
    if !handed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_canary",
            format!("{name} has no canary under way"),
        )
        .hint("a canary runs during a deploy with strategy = \"canary\" in berth.toml"));
    }
    Ok(Json(CanaryAnswer {
        app: name.to_string(),
        action,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/apps/{app}/drift",
    tag = "deploys",
    params(("app" = String, Path, description = "The app's name")),
    responses(
        (status = 200, description = "What differs between the app's objects in the cluster and its serving release (empty: nothing); the Kubernetes backend only", body = [DriftView]),
        (status = 400, description = "This platform runs its apps itself", body = berth_core::api::ErrorBody)
    )
)]
async fn drift(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
) -> Result<Json<Vec<DriftView>>, ApiError> {
    let name = existing_app(&p, &app).await?;
    Ok(Json(p.kube_drift(name.as_str()).await?))
}

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/drift/restore",
    tag = "deploys",
    params(("app" = String, Path, description = "The app's name")),
    responses(
        (status = 200, description = "The app's objects put back as its serving release has them (changes by hand taken back, rollout waited for); what was restored", body = [DriftView]),
        (status = 400, description = "This platform runs its apps itself", body = berth_core::api::ErrorBody)
    )
)]
async fn drift_restore(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
) -> Result<Json<Vec<DriftView>>, ApiError> {
    let name = existing_app(&p, &app).await?;
    Ok(Json(p.kube_restore(name.as_str()).await?))
}

#[utoipa::path(
    get,
    path = "/v1/apps/{app}/instances",
    tag = "deploys",
    params(("app" = String, Path, description = "The app's name")),
    responses((status = 200, description = "Instances of the app", body = [InstanceView]))
)]
async fn instances(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
) -> Result<Json<Vec<InstanceView>>, ApiError> {
    let name = existing_app(&p, &app).await?;
    Ok(Json(p.instance_views(name.as_str()).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LogQuery {
    lines: Option<usize>,
    follow: Option<bool>,
    /// A duration ago (`1h`) or a time (`2026-11-29T10:00:00Z`).
    since: Option<String>,
    until: Option<String>,
    release: Option<u32>,
    process: Option<String>,
    stream: Option<String>,
    /// A regular expression the line must match.
    grep: Option<String>,
}

/// A time given as a duration ago or an RFC 3339 time, in ms.
fn log_time(field: &'static str, text: &str) -> Result<i64, ApiError> {
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(berth_observe::now_millis() - d.as_millis() as i64);
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        if let Ok(d) = t.duration_since(std::time::UNIX_EPOCH) {
            return Ok(d.as_millis() as i64);
        }
    }
    Err(ApiError::invalid(
        "invalid_time",
        format!("{field}: {text:?} is neither a duration (30s, 1h, 2d) nor a time (2026-11-29T10:00:00Z)"),
    ))
}

impl LogQuery {
    /// The filter the query asks for (`None`: all lines).
    fn filter(&self) -> Result<Option<berth_observe::LogFilter>, ApiError> {
        let grep = match &self.grep {
            Some(g) => Some(
                regex::RegexBuilder::new(g)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| {
                        ApiError::invalid(
                            "invalid_grep",
                            format!("grep: {g:?} is not a regular expression: {e}"),
                        )
                        .hint(
                            "regular expressions as in ripgrep, e.g. 'ERROR|WARN' or '(?i)timeout'",
                        )
                    })?,
            ),
            None => None,
        };
        if let Some(s) = &self.stream {
            if !["runtime", "build", "access", "platform"].contains(&s.as_str()) {
                return Err(ApiError::invalid(
                    "invalid_stream",
                    format!("stream: {s:?} is not one of runtime, build, access, platform"),
                ));
            }
        }
        let f = berth_observe::LogFilter {
            since: self
                .since
                .as_deref()
                .map(|t| log_time("since", t))
                .transpose()?,
            until: self
                .until
                .as_deref()
                .map(|t| log_time("until", t))
                .transpose()?,
            release: self.release,
            process: self.process.clone(),
            stream: self.stream.clone(),
            grep,
        };
        let any = f.since.is_some()
            || f.until.is_some()
            || f.release.is_some()
            || f.process.is_some()
            || f.stream.is_some()
            || f.grep.is_some();
        Ok(any.then_some(f))
    }
}

#[utoipa::path(
    get,
    path = "/v1/apps/{app}/logs",
    tag = "observe",
    params(("app" = String, Path, description = "The app's name"), LogQuery),
    responses((status = 200, description = "Log lines as newline-delimited JSON (with follow, the stream stays open)", content_type = "application/x-ndjson", body = String))
)]
async fn logs(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> Result<Response, ApiError> {
    let filter = q.filter()?;
    let name = existing_app(&p, &app).await?;
    let lines = q.lines.unwrap_or(100).min(100_000);
    let logs = p.logs.clone();
    let app = name.to_string();
    let (records, offset) = {
        let (logs, app, filter) = (logs.clone(), app.clone(), filter.clone());
        tokio::task::spawn_blocking(move || match &filter {
            None => logs.tail(&app, lines),
            Some(f) => {
                let (_, end) = logs.tail(&app, 0)?;
                Ok((logs.query(&app, f, lines)?, end))
            }
        })
        .await
        .map_err(|e| ApiError::internal("reading logs", e))?
        .map_err(|e| ApiError::internal("reading logs", e))?
    };
    let first: Vec<Bytes> = records.iter().map(ndjson).collect();
    let follow = q.follow.unwrap_or(false);
    let shutdown = p.shutdown.clone();
    let stream = futures_util::stream::unfold(
        (first.into_iter(), offset, follow),
        move |(mut pending, mut offset, follow)| {
            let (logs, app, shutdown) = (logs.clone(), app.clone(), shutdown.clone());
            let filter = filter.clone();
            async move {
                loop {
                    if let Some(line) = pending.next() {
                        return Some((Ok::<_, Infallible>(line), (pending, offset, follow)));
                    }
                    if !follow {
                        return None;
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    }
                    let (l, a) = (logs.clone(), app.clone());
                    let read = tokio::task::spawn_blocking(move || l.read_from(&a, offset)).await;
                    if let Ok(Ok((recs, next))) = read {
                        offset = next;
                        pending = recs
                            .iter()
                            .filter(|r| filter.as_ref().is_none_or(|f| f.matches(r)))
                            .map(ndjson)
                            .collect::<Vec<_>>()
                            .into_iter();
                    }
                }
            }
        },
    );
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Resume after this position (what `Last-Event-ID` carries); default: the end now.
    after: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    filter: LogQuery,
}

/// Live tail as server-sent events: each line an event whose id is the position after it,
/// so a client that reconnects with `Last-Event-ID` (or `?after=`) gets exactly the lines it
/// has not seen — none missed, none repeated.
#[utoipa::path(
    get,
    path = "/v1/apps/{app}/logs/events",
    tag = "observe",
    params(("app" = String, Path, description = "The app's name"), EventsQuery, LogQuery),
    responses((status = 200, description = "Live tail as server-sent events; the id of each is where to resume (Last-Event-ID)", content_type = "text/event-stream", body = String))
)]
async fn log_events(
    State(p): Shared,
    ApiPath(app): ApiPath<String>,
    ApiQuery(q): ApiQuery<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let filter = q.filter.filter()?;
    let name = existing_app(&p, &app).await?;
    let app = name.to_string();
    let start = resume_position(&p, &app, &headers, q.after).await?;
    let stream = futures_util::StreamExt::map(follow_logs(&p, app, start, filter), |(r, c)| {
        Ok::<_, Infallible>(
            Event::default()
                .id(c.to_string())
                .data(serde_json::to_string(&r).unwrap_or_default()),
        )
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Where a follower of an app's log starts: where its browser or client says it stopped
/// (`Last-Event-ID`, else `after`), or the end of the log now.
pub(crate) async fn resume_position(
    p: &Platform,
    app: &str,
    headers: &HeaderMap,
    after: Option<String>,
) -> Result<berth_observe::Cursor, ApiError> {
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(after);
    match resume {
        Some(c) => c.parse::<berth_observe::Cursor>().map_err(|e| {
            ApiError::invalid("invalid_position", format!("Last-Event-ID / after: {e}"))
        }),
        None => {
            let (l, a) = (p.logs.clone(), app.to_string());
            Ok(tokio::task::spawn_blocking(move || l.tail(&a, 0))
                .await
                .map_err(|e| ApiError::internal("reading logs", e))?
                .map_err(|e| ApiError::internal("reading logs", e))?
                .1)
        }
    }
}

/// An app's log entries from `start` on, each with the position after it, as they come
/// (until the platform shuts down); `filter` keeps those it matches.
pub(crate) fn follow_logs(
    p: &Platform,
    app: String,
    start: berth_observe::Cursor,
    filter: Option<berth_observe::store::LogFilter>,
) -> impl futures_util::Stream<Item = (berth_observe::LogRecord, berth_observe::Cursor)> {
    let (logs, shutdown) = (p.logs.clone(), p.shutdown.clone());
    futures_util::stream::unfold(
        (
            Vec::<(berth_observe::LogRecord, berth_observe::Cursor)>::new().into_iter(),
            start,
        ),
        move |(mut pending, mut at)| {
            let (logs, app, shutdown, filter) =
                (logs.clone(), app.clone(), shutdown.clone(), filter.clone());
            async move {
                loop {
                    if let Some(next) = pending.next() {
                        return Some((next, (pending, at)));
                    }
                    let (l, a) = (logs.clone(), app.clone());
                    if let Ok(Ok((entries, next))) =
                        tokio::task::spawn_blocking(move || l.entries_from(&a, at)).await
                    {
                        at = next;
                        pending = entries
                            .into_iter()
                            .filter(|(r, _)| filter.as_ref().is_none_or(|f| f.matches(r)))
                            .collect::<Vec<_>>()
                            .into_iter();
                        if pending.len() > 0 {
                            continue;
                        }
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    }
                }
            }
        },
    )
}

#[utoipa::path(
    get,
    path = "/v1/apps/{app}/builds/latest/log",
    tag = "deploys",
    params(("app" = String, Path, description = "The app's name")),
    responses((status = 200, description = "The latest build's log", content_type = "text/plain", body = String))
)]
async fn build_log(State(p): Shared, ApiPath(app): ApiPath<String>) -> Result<Response, ApiError> {
    let name = app_name(&app)?;
    let Some(build) = p.store.latest_build(name.as_str()).await? else {
        return Err(if p.store.app(name.as_str()).await?.is_none() {
            ApiError::app_not_found(name.as_str())
        } else {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_builds",
                format!("{name} has no builds"),
            )
        });
    };
    let text = tokio::fs::read_to_string(p.logs.build_path(&build))
        .await
        .unwrap_or_default();
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

//! The dashboard's handlers: each gathers what its page shows from the platform (the same
//! calls the API makes) and renders it. They run behind the guard, so the caller's role and
//! project hold as they do for the API; a change (a rollback) is a form with the session's
//! CSRF token, checked before anything happens.

use super::pages::{self, AppPage, Chrome};
use crate::api::{actor, app_summaries, existing_app, Caller};
use crate::dora::DoraScope;
use crate::error::ApiError;
use crate::platform::Platform;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use berth_core::auth::Role;
use berth_core::dora::DoraView;
use std::sync::Arc;

type Shared = State<Arc<Platform>>;

/// The header of the caller's pages.
fn chrome<'a>(caller: &Caller, csrf: &'a str) -> Chrome<'a> {
    let (who, admin, deployer) = match caller {
        Some(axum::Extension(p)) => (
            format!("{} ({})", p.name, p.role.as_str()),
            p.role == Role::Admin,
            p.role != Role::Viewer,
        ),
        None => ("?".into(), false, false),
    };
    Chrome {
        who,
        csrf,
        admin,
        deployer,
    }
}

fn csrf(headers: &HeaderMap) -> String {
    super::session_token(headers)
        .map(|t| super::csrf_of(&t))
        .unwrap_or_default()
}

#[derive(serde::Deserialize)]
pub struct Fragment {
    #[serde(default)]
    fragment: Option<String>,
    #[serde(default)]
    notice: Option<String>,
}

/// Requests and 5xx answers per minute over the last hour.
async fn last_hour(p: &Platform, app: &str) -> Result<pages::Series, ApiError> {
    let now = crate::now_secs();
    // Whole minutes, the current one included.
    let until = (now / 60 + 1) * 60;
    Ok(p.store.request_series(app, until - 3600, until, 60).await?)
}

/// How many days the dashboard's DORA charts cover.
const TREND_DAYS: i64 = 30;

/// A scope's keys over 30 days and day by day.
async fn dora_of(
    p: &Platform,
    scope: DoraScope<'_>,
) -> Result<Option<(DoraView, Vec<(i64, DoraView)>)>, ApiError> {
    let keys = p.dora(scope, Some("30d")).await?.into_iter().next();
    let trend = p.dora_trend(scope, TREND_DAYS).await?;
    Ok(keys.map(|k| (k, trend)))
}

async fn traffic_of(
    p: &Platform,
    apps: &[berth_core::api::AppSummary],
) -> Result<std::collections::BTreeMap<String, pages::Series>, ApiError> {
    let mut traffic = std::collections::BTreeMap::new();
    for a in apps {
        traffic.insert(a.name.clone(), last_hour(p, &a.name).await?);
    }
    Ok(traffic)
}

/// `/ui`: the apps (the table alone for htmx's refresh).
pub async fn apps(
    State(p): Shared,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<Fragment>,
) -> Result<Response, ApiError> {
    let apps = app_summaries(&p, &caller).await?;
    let traffic = traffic_of(&p, &apps).await?;
    if q.fragment.is_some() {
        return Ok(
            Html(pages::apps_table(&apps, &traffic, "/ui?fragment=1").into_string())
                .into_response(),
        );
    }
    // The platform's keys are for those who see the whole platform.
    let platform = match crate::api::caller_limit(&caller) {
        None => dora_of(&p, DoraScope::Platform).await?,
        Some(_) => None,
    };
    let token = csrf(&headers);
    Ok(pages::apps(
        &chrome(&caller, &token),
        &apps,
        &traffic,
        platform
            .as_ref()
            .map(|(keys, trend)| pages::Dora { keys, trend }),
    )
    .into_response())
}

/// `/ui/projects/{project}`: a project's quota and use, its apps, and their DORA keys
/// together.
pub async fn project(
    State(p): Shared,
    caller: Caller,
    headers: HeaderMap,
    Path(project): Path<String>,
    Query(q): Query<Fragment>,
) -> Result<Response, ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "project_not_found",
            format!("no project {project}"),
        )
        .hint("the apps page links each app's project")
    };
    if !crate::api::reaches(&p, &caller, &project).await? {
        return Err(not_found());
    }
    let view = p
        .store
        .projects()
        .await?
        .into_iter()
        .find(|v| v.name == project)
        .ok_or_else(not_found)?;
    let apps: Vec<_> = app_summaries(&p, &caller)
        .await?
        .into_iter()
        .filter(|a| a.project == project)
        .collect();
    let traffic = traffic_of(&p, &apps).await?;
    if q.fragment.is_some() {
        let refresh = format!("/ui/projects/{project}?fragment=1");
        return Ok(
            Html(pages::apps_table(&apps, &traffic, &refresh).into_string()).into_response(),
        );
    }
    let (keys, trend) = dora_of(&p, DoraScope::Project(&project))
        .await?
        .ok_or_else(not_found)?;
    let token = csrf(&headers);
    Ok(pages::project(
        &chrome(&caller, &token),
        &view,
        &apps,
        &traffic,
        pages::Dora {
            keys: &keys,
            trend: &trend,
        },
    )
    .into_response())
}

/// `/ui/apps/{app}`.
pub async fn app(
    State(p): Shared,
    caller: Caller,
    headers: HeaderMap,
    Path(app): Path<String>,
    Query(q): Query<Fragment>,
) -> Result<Response, ApiError> {
    let name = existing_app(&p, &app).await?;
    let summary = app_summaries(&p, &caller)
        .await?
        .into_iter()
        .find(|a| a.name == name.as_str())
        .ok_or_else(|| ApiError::app_not_found(name.as_str()))?;
    let releases = p.store.releases(name.as_str()).await?;
    let instances = p.instance_views(name.as_str()).await?;
    let domains = p.list_domains(name.as_str()).await?;
    let volumes = p.list_volumes(name.as_str()).await?;
    let serving = match summary.current_release {
        Some(v) => p.store.release(name.as_str(), v).await?,
        None => None,
    };
    let env = serving
        .as_ref()
        .map(|r| r.config.env.clone())
        .unwrap_or_default();
    let processes: Vec<(String, u32)> = serving
        .as_ref()
        .map(|r| {
            r.config
                .processes
                .iter()
                .map(|(k, p)| (k.clone(), p.instances))
                .collect()
        })
        .unwrap_or_default();
    let secrets: Vec<String> = p
        .store
        .app_secrets(name.as_str())
        .await?
        .into_keys()
        .collect();
    let traffic = last_hour(&p, name.as_str()).await?;
    let slo = p.slo_view(name.as_str()).await.ok();
    let dora = dora_of(&p, DoraScope::App(name.as_str())).await?;
    let database = if p.store.databases().await?.contains_key(name.as_str()) {
        Some(p.database_info(name.as_str()).await?)
    } else {
        None
    };
    let token = csrf(&headers);
    Ok(pages::app(
        &chrome(&caller, &token),
        &AppPage {
            summary: &summary,
            releases: &releases,
            instances: &instances,
            domains: &domains,
            volumes: &volumes,
            env: &env,
            secrets: &secrets,
            notice: q.notice.as_deref(),
            health: pages::Health {
                traffic: &traffic,
                slo: slo.as_ref(),
                dora: dora.as_ref().map(|(keys, _)| keys),
                trend: dora.as_ref().map(|(_, t)| t.as_slice()).unwrap_or_default(),
            },
            processes: &processes,
            database: database.as_ref(),
        },
    )
    .into_response())
}

#[derive(serde::Deserialize)]
pub struct RollbackTo {
    to: u32,
}

/// `/ui/apps/{app}/rollback?to=N`: what a rollback does, and the button that does it.
pub async fn rollback_confirm(
    State(p): Shared,
    caller: Caller,
    headers: HeaderMap,
    Path(app): Path<String>,
    Query(q): Query<RollbackTo>,
) -> Result<Response, ApiError> {
    let name = existing_app(&p, &app).await?;
    let current = p
        .store
        .app(name.as_str())
        .await?
        .and_then(|a| a.current_release);
    if p.store.release(name.as_str(), q.to).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "release_not_found",
            format!("{name} has no release v{}", q.to),
        ));
    }
    let token = csrf(&headers);
    Ok(
        pages::rollback_confirm(&chrome(&caller, &token), name.as_str(), current, q.to)
            .into_response(),
    )
}

#[derive(serde::Deserialize)]
pub struct RollbackForm {
    #[serde(default)]
    csrf: String,
    to: u32,
}

/// The rollback itself (a deployer's): the CSRF token first, then the same workflow as the
/// API's; its outcome is shown on the app's page.
pub async fn rollback(
    State(p): Shared,
    headers: HeaderMap,
    Path(app): Path<String>,
    Form(f): Form<RollbackForm>,
) -> Result<Response, ApiError> {
    if !super::csrf_ok(&headers, &f.csrf) {
        return Err(forged());
    }
    let name = existing_app(&p, &app).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let result = p
        .rollback(name.as_str(), Some(f.to), actor(&headers), tx)
        .await;
    let _ = drain.await;
    let notice = match result {
        Ok((version, _)) => format!("Rolled back to v{}: release v{version} serves now.", f.to),
        Err(failure) => return Err(failure.error),
    };
    let target = format!(
        "/ui/apps/{name}?notice={}",
        percent_encoding::utf8_percent_encode(&notice, percent_encoding::NON_ALPHANUMERIC)
    );
    Ok(Redirect::to(&target).into_response())
}

#[derive(serde::Deserialize)]
pub struct LogsQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    stream: String,
    /// `15m`, `1h`, `24h`, `7d`: lines from that long ago on.
    #[serde(default)]
    since: String,
}

/// How many lines a logs page shows.
const LOG_LINES: usize = 300;

/// `/ui/apps/{app}/logs`: the newest lines (live), or those a search finds.
pub async fn logs(
    State(p): Shared,
    caller: Caller,
    headers: HeaderMap,
    Path(app): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let name = existing_app(&p, &app).await?;
    let grep = if q.q.is_empty() {
        None
    } else {
        Some(regex::Regex::new(&q.q).map_err(|e| {
            ApiError::invalid(
                "invalid_search",
                format!("{:?} is not a regular expression: {e}", q.q),
            )
        })?)
    };
    let stream = (!q.stream.is_empty()).then(|| q.stream.clone());
    let since = if q.since.is_empty() {
        None
    } else {
        let back = humantime::parse_duration(&q.since).map_err(|e| {
            ApiError::invalid(
                "invalid_since",
                format!("{:?} is not a time span: {e}", q.since),
            )
        })?;
        Some(crate::now_secs().saturating_sub(back.as_secs() as i64) * 1000)
    };
    let filter = (grep.is_some() || stream.is_some() || since.is_some()).then(|| {
        berth_observe::store::LogFilter {
            grep,
            stream,
            since,
            ..Default::default()
        }
    });
    let (logs, a) = (p.logs.clone(), name.to_string());
    // Unfiltered, the page is live: it follows on from the end of the lines it shows.
    let (records, live) = tokio::task::spawn_blocking(move || match &filter {
        None => logs.tail(&a, LOG_LINES).map(|(r, end)| (r, Some(end))),
        Some(f) => logs.query(&a, f, LOG_LINES).map(|r| (r, None)),
    })
    .await
    .map_err(|e| ApiError::internal("reading logs", e))?
    .map_err(|e| ApiError::internal("reading logs", e))?;
    let token = csrf(&headers);
    Ok(pages::logs(
        &chrome(&caller, &token),
        name.as_str(),
        &q.q,
        &q.stream,
        &q.since,
        &records,
        live.as_ref(),
    )
    .into_response())
}

#[derive(serde::Deserialize)]
pub struct After {
    #[serde(default)]
    after: Option<String>,
}

/// `/ui/apps/{app}/logs/live?after=POSITION`: the app's new log lines as server-sent events
/// (`line`, each the markup of one line, its id the position after it), so a browser that
/// reconnects resumes where it was.
pub async fn logs_live(
    State(p): Shared,
    headers: HeaderMap,
    Path(app): Path<String>,
    Query(q): Query<After>,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let name = existing_app(&p, &app).await?;
    let start = crate::api::resume_position(&p, name.as_str(), &headers, q.after).await?;
    let lines = crate::api::follow_logs(&p, name.to_string(), start, None);
    let events = futures_util::StreamExt::map(lines, |(record, at)| {
        Ok::<_, std::convert::Infallible>(
            Event::default()
                .event("line")
                .id(at.to_string())
                .data(pages::log_line(&record).into_string()),
        )
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[derive(serde::Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    target: String,
}

/// `/ui/audit` (an admin's): the newest entries, filtered by actor and target.
pub async fn audit(
    State(p): Shared,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let filter = crate::audit::AuditFilter {
        since: None,
        actor: (!q.actor.is_empty()).then(|| q.actor.clone()),
        target: (!q.target.is_empty()).then(|| q.target.clone()),
        limit: Some(200),
    };
    let entries = p.store.audit(&filter).await?;
    let token = csrf(&headers);
    Ok(pages::audit(&chrome(&caller, &token), &entries, &q.actor, &q.target).into_response())
}

fn forged() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "csrf",
        "this form did not come from one of your berth pages",
    )
    .hint("open the page again and use its button")
}

/// Runs a workflow to its end, then back to the app's page with its outcome.
async fn settle(
    app: &str,
    run: impl std::future::Future<Output = Result<(u32, String), crate::deploy::DeployFailure>>,
) -> Result<Response, ApiError> {
    let (_, summary) = run.await.map_err(|f| f.error)?;
    notice(app, &summary)
}

/// A channel whose events nobody reads (the page shows the outcome).
fn quiet() -> crate::deploy::Events {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    tx
}

#[derive(serde::Deserialize)]
pub struct DeployForm {
    #[serde(default)]
    csrf: String,
    app: String,
    url: String,
    #[serde(rename = "ref", default)]
    git_ref: String,
}

/// Deploys a branch, tag or commit of a repository (a new app or an existing one); the
/// build is followed on the run's page.
pub async fn deploy(
    State(p): Shared,
    caller: Caller,
    headers: HeaderMap,
    Form(f): Form<DeployForm>,
) -> Result<Response, ApiError> {
    if !super::csrf_ok(&headers, &f.csrf) {
        return Err(forged());
    }
    let name = crate::api::app_name(f.app.trim())?;
    let url = berth_factory::git::normalize_url(&f.url);
    let git_ref = if f.git_ref.trim().is_empty() {
        "main".to_string()
    } else {
        f.git_ref.trim().to_string()
    };
    berth_factory::git::check_url(&url)
        .and_then(|_| berth_factory::git::check_ref(&git_ref))
        .map_err(|e| ApiError::invalid("invalid_git_source", e.to_string()))?;
    crate::api::reach_existing(&p, &caller, &name).await?;
    let project = crate::api::deploy_checks(&p, &name, None, &caller, &Default::default()).await?;
    if !crate::api::reaches(&p, &caller, &project).await? {
        return Err(ApiError::app_not_found(name.as_str()));
    }
    let who = actor(&headers);
    let platform = p.clone();
    let label = name.to_string();
    let id = spawn_run(&p, &label, format!("deploy {url} {git_ref}"), move |tx| {
        Box::pin(async move {
            platform
                .deploy_git_ref(&name, &url, &git_ref, Some(&project), who, tx)
                .await
                .map(|(sha, version)| {
                    format!(
                        "release v{version} of commit {} serves now",
                        sha.get(..12).unwrap_or(&sha)
                    )
                })
                .map_err(|(_, e)| e)
        })
    });
    Ok(Redirect::to(&format!("/ui/apps/{}/runs/{id}", f.app.trim())).into_response())
}

/// A workflow's outcome: what serves now, or why it failed.
type RunFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, ApiError>> + Send>>;

/// Starts a workflow that outlives the request, its events kept for the run's page; the
/// run's id.
fn spawn_run(
    p: &Arc<Platform>,
    app: &str,
    what: String,
    work: impl FnOnce(crate::deploy::Events) -> RunFuture + Send + 'static,
) -> String {
    let id = super::runs::start(app, what);
    let run = id.clone();
    p.tasks.spawn(async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let follow = {
            let run = run.clone();
            tokio::spawn(async move {
                while let Some(event) = rx.recv().await {
                    super::runs::record(&run, &event);
                }
            })
        };
        let result = work(tx).await;
        let _ = follow.await;
        super::runs::finish(
            &run,
            result.map_err(|e| match e.hint {
                Some(h) => format!("{} ({h})", e.message),
                None => e.message,
            }),
        );
    });
    id
}

/// The summary of a workflow that made a release.
fn released(
    result: Result<(u32, String), crate::deploy::DeployFailure>,
) -> Result<String, ApiError> {
    result.map(|(_, summary)| summary).map_err(|f| f.error)
}

/// The fields of a form with a file (`multipart/form-data`): the text fields, and the
/// file's bytes (the upload limit holds).
struct Upload {
    fields: std::collections::BTreeMap<String, String>,
    file: Option<bytes::Bytes>,
}

async fn read_upload(mut form: axum::extract::Multipart, limit: u64) -> Result<Upload, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "upload_too_large",
            format!("the upload is over the limit of {limit} bytes"),
        )
        .hint("leave build outputs and dependencies out of the archive, or start berth with a larger --upload-limit")
    };
    let bad = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::invalid("bad_upload", e.body_text())
        }
    };
    let mut upload = Upload {
        fields: Default::default(),
        file: None,
    };
    while let Some(field) = form.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_string();
        if field.file_name().is_some() {
            upload.file = Some(field.bytes().await.map_err(bad)?);
        } else {
            let text = field.text().await.map_err(bad)?;
            upload.fields.insert(name, text);
        }
    }
    Ok(upload)
}

/// Deploys an uploaded source archive (a gzipped tar of the app's directory, as `berth
/// deploy` or `git archive --format=tar.gz` makes it) to a new or existing app; the build is
/// followed on the run's page.
pub async fn upload(
    State(p): Shared,
    caller: Caller,
    headers: HeaderMap,
    form: axum::extract::Multipart,
) -> Result<Response, ApiError> {
    let upload = read_upload(form, p.cfg.upload_limit).await?;
    let field = |k: &str| upload.fields.get(k).map(|v| v.trim()).unwrap_or_default();
    if !super::csrf_ok(&headers, field("csrf")) {
        return Err(forged());
    }
    let name = crate::api::app_name(field("app"))?;
    let archive = upload
        .file
        .clone()
        .filter(|f| !f.is_empty())
        .ok_or_else(|| {
            ApiError::invalid("bad_upload", "no archive was chosen, or it is empty")
                .hint("pick a .tar.gz of the app's directory: tar czf app.tar.gz -C DIR .")
        })?;
    crate::api::reach_existing(&p, &caller, &name).await?;
    let toml = crate::deploy::spec_of(&archive)?;
    let project = crate::api::deploy_checks(&p, &name, None, &caller, &toml).await?;
    if !crate::api::reaches(&p, &caller, &project).await? {
        return Err(ApiError::app_not_found(name.as_str()));
    }
    let source = crate::deploy::SourceRef {
        id: berth_factory::source::content_id(&archive),
        commit_time: None,
        project,
    };
    let who = actor(&headers);
    let platform = p.clone();
    let app = name.to_string();
    let what = format!("deploy of an uploaded archive ({} bytes)", archive.len());
    let id = spawn_run(&p, &app, what, move |tx| {
        Box::pin(async move {
            platform
                .deploy_source(name, archive, source, toml, who, tx)
                .await
                .map(|(version, url)| format!("release v{version} serves at {url}"))
                .map_err(|f| f.error)
        })
    });
    Ok(Redirect::to(&format!("/ui/apps/{app}/runs/{id}")).into_response())
}

#[derive(serde::Deserialize)]
pub struct VolumeForm {
    #[serde(default)]
    csrf: String,
    name: String,
    mount: String,
    size: String,
}

/// Adds a volume (a new release mounts it); followed on the run's page.
pub async fn add_volume(
    State(p): Shared,
    headers: HeaderMap,
    Path(app): Path<String>,
    Form(f): Form<VolumeForm>,
) -> Result<Response, ApiError> {
    if !super::csrf_ok(&headers, &f.csrf) {
        return Err(forged());
    }
    let name = existing_app(&p, &app).await?;
    let req = berth_core::state::VolumeCreate {
        name: f.name.trim().to_string(),
        mount: f.mount.trim().to_string(),
        size: f.size.trim().to_string(),
        exclusive: false,
    };
    let bytes = crate::volumes::check_volume_request(&req)?;
    if let Some(project) = p.store.app_project(name.as_str()).await? {
        let growth = crate::projects::Growth {
            volume_bytes: bytes,
            ..Default::default()
        };
        p.store.check_quota(&project, growth).await?;
    }
    let (who, platform) = (actor(&headers), p.clone());
    let what = format!("add volume {} at {}", req.name, req.mount);
    let label = name.to_string();
    let id = spawn_run(&p, &label, what, move |tx| {
        Box::pin(async move { released(platform.create_volume(name.as_str(), req, who, tx).await) })
    });
    Ok(Redirect::to(&format!("/ui/apps/{app}/runs/{id}")).into_response())
}

#[derive(serde::Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

/// Takes a snapshot of a volume now.
pub async fn snapshot_volume(
    State(p): Shared,
    headers: HeaderMap,
    Path((app, volume)): Path<(String, String)>,
    Form(f): Form<CsrfOnly>,
) -> Result<Response, ApiError> {
    if !super::csrf_ok(&headers, &f.csrf) {
        return Err(forged());
    }
    let name = existing_app(&p, &app).await?;
    let snap = p.snapshot_volume(name.as_str(), &volume).await?;
    notice(
        &app,
        &format!(
            "Snapshot {} of volume {volume} taken ({}).",
            snap.id,
            berth_core::limits::format_memory(snap.disk_bytes)
        ),
    )
}

/// Makes the app's PostgreSQL database (a new release has `DATABASE_URL`); followed on the
/// run's page.
pub async fn add_database(
    State(p): Shared,
    headers: HeaderMap,
    Path(app): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Result<Response, ApiError> {
    if !super::csrf_ok(&headers, &f.csrf) {
        return Err(forged());
    }
    let name = existing_app(&p, &app).await?;
    let (who, platform) = (actor(&headers), p.clone());
    let label = name.to_string();
    let id = spawn_run(&p, &label, "create database".into(), move |tx| {
        Box::pin(async move { released(platform.create_database(name.as_str(), who, tx).await) })
    });
    Ok(Redirect::to(&format!("/ui/apps/{app}/runs/{id}")).into_response())
}

/// Backs the app's database up now.
pub async fn backup_database(
    State(p): Shared,
    headers: HeaderMap,
    Path(app): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Result<Response, ApiError> {
    if !super::csrf_ok(&headers, &f.csrf) {
        return Err(forged());
    }
    let name = existing_app(&p, &app).await?;
    let backup = p.backup_database(name.as_str()).await?;
    notice(
        &app,
        &format!(
            "Backup {} of the database taken ({}).",
            backup.id,
            berth_core::limits::format_memory(backup.bytes)
        ),
    )
}

/// Back to the app's page with `text` at its top.
fn notice(app: &str, text: &str) -> Result<Response, ApiError> {
    let target = format!(
        "/ui/apps/{app}?notice={}",
        percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC)
    );
    Ok(Redirect::to(&target).into_response())
}

#[derive(serde::Deserialize)]
pub struct FromLine {
    #[serde(default)]
    from: usize,
}

/// `/ui/apps/{app}/runs/{id}/live?from=N`: a run's lines from line N on as server-sent
/// events (`line`), then its outcome (`done`) and the end of the stream.
pub async fn run_live(
    State(p): Shared,
    Path((app, id)): Path<(String, String)>,
    Query(q): Query<FromLine>,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let name = crate::api::app_name(&app)?;
    let run = super::runs::get(&id)
        .filter(|r| r.app == name.as_str())
        .ok_or_else(|| run_not_found(&name, &id))?;
    let app = name.to_string();
    // (next line to send, whether the outcome went out)
    let shutdown = p.shutdown.clone();
    let events = futures_util::stream::unfold((q.from, false), move |(from, ended)| {
        let (id, app, what) = (id.clone(), app.clone(), run.what.clone());
        let shutdown = shutdown.clone();
        async move {
            if ended {
                return None;
            }
            loop {
                let (lines, next, outcome) = super::runs::since(&id, from)?;
                if !lines.is_empty() {
                    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
                    let markup = maud::html! { (text) }.into_string();
                    let event = Event::default().event("line").data(markup);
                    return Some((Ok::<_, std::convert::Infallible>(event), (next, false)));
                }
                if let Some(outcome) = outcome {
                    let ended = super::runs::Run {
                        app: app.clone(),
                        what,
                        lines: Vec::new(),
                        dropped: 0,
                        outcome: Some(outcome),
                    };
                    let markup = pages::run_outcome(&app, &ended).into_string();
                    let event = Event::default().event("done").data(markup);
                    return Some((Ok(event), (next, true)));
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                }
            }
        }
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn run_not_found(app: &berth_core::AppName, id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "run_not_found",
        format!("no run {id} of {app}"),
    )
    .hint("runs are kept while the platform runs, the newest 50")
}

/// `/ui/apps/{app}/runs/{id}`: a run's steps and output as they come.
pub async fn run(
    State(p): Shared,
    caller: Caller,
    headers: HeaderMap,
    Path((app, id)): Path<(String, String)>,
    Query(q): Query<Fragment>,
) -> Result<Response, ApiError> {
    let name = crate::api::app_name(&app)?;
    let run = super::runs::get(&id)
        .filter(|r| r.app == name.as_str())
        .ok_or_else(|| run_not_found(&name, &id))?;
    // A new app exists once its build is through; until then the run is all there is.
    let _ = p.store.app(name.as_str()).await?;
    if q.fragment.is_some() {
        return Ok(Html(pages::run_body(name.as_str(), &id, &run).into_string()).into_response());
    }
    let token = csrf(&headers);
    Ok(pages::run(&chrome(&caller, &token), name.as_str(), &id, &run).into_response())
}

#[derive(serde::Deserialize)]
pub struct ScaleForm {
    #[serde(default)]
    csrf: String,
    process: String,
    instances: String,
}

/// Sets a process type's instances.
pub async fn scale(
    State(p): Shared,
    headers: HeaderMap,
    Path(app): Path<String>,
    Form(f): Form<ScaleForm>,
) -> Result<Response, ApiError> {
    if !super::csrf_ok(&headers, &f.csrf) {
        return Err(forged());
    }
    let name = existing_app(&p, &app).await?;
    let n: u32 = f.instances.trim().parse().map_err(|_| {
        ApiError::invalid(
            "invalid_scale",
            format!("{:?} is not a number of instances (0 to 16)", f.instances),
        )
    })?;
    let change = berth_core::api::ScaleChange {
        processes: [(f.process.clone(), n)].into(),
    };
    settle(
        name.as_str(),
        p.scale(name.as_str(), change, actor(&headers), quiet()),
    )
    .await
}

#[derive(serde::Deserialize)]
pub struct VariableForm {
    #[serde(default)]
    csrf: String,
    /// `set` or `unset`.
    action: String,
    key: String,
    #[serde(default)]
    value: String,
}

impl VariableForm {
    /// What the form sets and removes: one name, with its value or without.
    fn change(self) -> (std::collections::BTreeMap<String, String>, Vec<String>) {
        let key = self.key.trim().to_string();
        match self.action.as_str() {
            "unset" => (Default::default(), vec![key]),
            _ => ([(key, self.value)].into(), vec![]),
        }
    }
}

/// Sets or removes an environment variable.
pub async fn env(
    State(p): Shared,
    headers: HeaderMap,
    Path(app): Path<String>,
    Form(f): Form<VariableForm>,
) -> Result<Response, ApiError> {
    if !super::csrf_ok(&headers, &f.csrf) {
        return Err(forged());
    }
    let name = existing_app(&p, &app).await?;
    let (set, unset) = f.change();
    let change = berth_core::api::EnvChange { set, unset };
    let run = p.change_env(name.as_str(), change, actor(&headers), quiet());
    settle(name.as_str(), run).await
}

/// Sets or removes a secret (its value is never shown again).
pub async fn secrets(
    State(p): Shared,
    headers: HeaderMap,
    Path(app): Path<String>,
    Form(f): Form<VariableForm>,
) -> Result<Response, ApiError> {
    if !super::csrf_ok(&headers, &f.csrf) {
        return Err(forged());
    }
    let name = existing_app(&p, &app).await?;
    let (set, unset) = f.change();
    let change = berth_core::state::SecretChange {
        set,
        unset,
        build: false,
    };
    let run = p.change_secrets(name.as_str(), change, actor(&headers), quiet());
    settle(name.as_str(), run).await
}

/// `/ui/alerts`: what fires, and what resolved in the last day (of the apps the caller
/// reaches).
pub async fn alerts(
    State(p): Shared,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let visible: std::collections::BTreeSet<String> = app_summaries(&p, &caller)
        .await?
        .into_iter()
        .map(|a| a.name)
        .collect();
    let platform_wide = caller
        .as_ref()
        .is_some_and(|axum::Extension(who)| who.project.is_none() && who.tenant.is_none());
    let alerts: Vec<_> = p
        .store
        .alerts(Some(crate::now_secs() - 86_400))
        .await?
        .into_iter()
        .filter(|a| visible.contains(&a.app) || (platform_wide && a.app.is_empty()))
        .collect();
    let token = csrf(&headers);
    Ok(pages::alerts(&chrome(&caller, &token), &alerts).into_response())
}

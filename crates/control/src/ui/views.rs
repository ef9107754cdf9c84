//! The dashboard's handlers: each gathers what its page shows from the platform (the same
//! calls the API makes) and renders it. They run behind the guard, so the caller's role and
//! project hold as they do for the API; a change (a rollback) is a form with the session's
//! CSRF token, checked before anything happens.

use super::pages::{self, AppPage, Chrome};
use crate::api::{actor, app_summaries, existing_app, Caller};
use crate::error::ApiError;
use crate::platform::Platform;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use berth_core::auth::Role;
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

/// Code deploys that went live per day over the last 30 days (UTC days, oldest first).
async fn deploys_per_day(p: &Platform, app: &str) -> Result<Vec<(String, u64)>, ApiError> {
    let today = crate::now_secs().div_euclid(86_400);
    let first = today - 29;
    let mut days: Vec<(String, u64)> = (first..=today)
        .map(|d| (pages::when(d * 86_400)[..10].to_string(), 0))
        .collect();
    for r in p.store.rollouts(Some(app), first * 86_400).await? {
        if r.kind != berth_core::dora::ReleaseKind::Deploy || !r.succeeded {
            continue;
        }
        let Some(at) = r.finished_at else { continue };
        if let Some(slot) = usize::try_from(at.div_euclid(86_400) - first)
            .ok()
            .and_then(|i| days.get_mut(i))
        {
            slot.1 += 1;
        }
    }
    Ok(days)
}

/// `/ui`: the apps (the table alone for htmx's refresh).
pub async fn apps(
    State(p): Shared,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<Fragment>,
) -> Result<Response, ApiError> {
    let apps = app_summaries(&p, &caller).await?;
    let mut traffic = std::collections::BTreeMap::new();
    for a in &apps {
        traffic.insert(a.name.clone(), last_hour(&p, &a.name).await?);
    }
    if q.fragment.is_some() {
        return Ok(Html(pages::apps_table(&apps, &traffic).into_string()).into_response());
    }
    let platform = p.dora(None, Some("30d")).await?.into_iter().next();
    let token = csrf(&headers);
    Ok(pages::apps(&chrome(&caller, &token), &apps, &traffic, platform.as_ref()).into_response())
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
    let instances: Vec<_> = p
        .store
        .instances(Some(name.as_str()))
        .await?
        .iter()
        .map(|i| i.view())
        .collect();
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
    let dora = p
        .dora(Some(name.as_str()), Some("30d"))
        .await?
        .into_iter()
        .next();
    let per_day = deploys_per_day(&p, name.as_str()).await?;
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
                dora: dora.as_ref(),
                deploys_per_day: &per_day,
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
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "this form did not come from one of your berth pages",
        )
        .hint("open the page again and use its button"));
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
    #[serde(default)]
    fragment: Option<String>,
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
    let records = tokio::task::spawn_blocking(move || match &filter {
        None => logs.tail(&a, LOG_LINES).map(|(r, _)| r),
        Some(f) => logs.query(&a, f, LOG_LINES),
    })
    .await
    .map_err(|e| ApiError::internal("reading logs", e))?
    .map_err(|e| ApiError::internal("reading logs", e))?;
    if q.fragment.is_some() {
        return Ok(
            Html(pages::log_lines(name.as_str(), &records, true).into_string()).into_response(),
        );
    }
    let token = csrf(&headers);
    Ok(pages::logs(
        &chrome(&caller, &token),
        name.as_str(),
        &q.q,
        &q.stream,
        &q.since,
        &records,
    )
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
    let target = format!(
        "/ui/apps/{app}?notice={}",
        percent_encoding::utf8_percent_encode(&summary, percent_encoding::NON_ALPHANUMERIC)
    );
    Ok(Redirect::to(&target).into_response())
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
    let project = crate::api::deploy_checks(&p, &name, None, &caller, &Default::default()).await?;
    if !crate::api::reaches(&p, &caller, &project).await? {
        return Err(ApiError::app_not_found(name.as_str()));
    }
    let id = super::runs::start(name.as_str(), format!("deploy {url} {git_ref}"));
    let who = actor(&headers);
    let (platform, run) = (p.clone(), id.clone());
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
        let result = platform
            .deploy_git_ref(&name, &url, &git_ref, Some(&project), who, tx)
            .await;
        let _ = follow.await;
        super::runs::finish(
            &run,
            match result {
                Ok((sha, version)) => Ok(format!(
                    "release v{version} of commit {} serves now",
                    sha.get(..12).unwrap_or(&sha)
                )),
                Err((_, e)) => Err(match e.hint {
                    Some(h) => format!("{} ({h})", e.message),
                    None => e.message,
                }),
            },
        );
    });
    Ok(Redirect::to(&format!("/ui/apps/{}/runs/{id}", f.app.trim())).into_response())
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
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "run_not_found",
                format!("no run {id} of {name}"),
            )
            .hint("runs are kept while the platform runs, the newest 50")
        })?;
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
    let change = berth_core::state::SecretChange { set, unset };
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

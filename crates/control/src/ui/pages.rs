//! The dashboard's pages as maud templates: every value is escaped by construction (an app
//! name, a log line or an env value is text, never markup). No inline script or style: the
//! Content-Security-Policy forbids them.

use super::charts;
use axum::http::StatusCode;
use axum::response::Html;
use berth_core::api::{AppSummary, ReleaseView};
use berth_core::auth::AuditEntry;
use maud::{html, Markup, DOCTYPE};
use std::collections::BTreeMap;

/// Requests per minute over the last hour (oldest first): (requests, 5xx answers, answers
/// slower than the latency objective).
pub type Series = Vec<(i64, i64, i64)>;

fn requests_label(series: &Series) -> String {
    let total: i64 = series.iter().map(|(r, _, _)| r).sum();
    let errors: i64 = series.iter().map(|(_, e, _)| e).sum();
    let peak = series.iter().map(|(r, _, _)| *r).max().unwrap_or(0);
    format!("{total} requests ({errors} answered 5xx) in the last hour; busiest minute {peak}")
}

/// Requests per minute, and in red the 5xx answers among them.
fn requests_chart(series: &Series, width: u32, height: u32) -> Markup {
    let requests: Vec<f64> = series.iter().map(|(r, _, _)| *r as f64).collect();
    let errors: Vec<f64> = series.iter().map(|(_, e, _)| *e as f64).collect();
    charts::lines(
        &[(&requests, charts::BLUE), (&errors, charts::RED)],
        width,
        height,
        &requests_label(series),
    )
}

/// What every signed-in page shows in its header.
pub struct Chrome<'a> {
    /// `alice (deployer)`.
    pub who: String,
    pub csrf: &'a str,
    /// Admins see the audit log.
    pub admin: bool,
    /// Deployers (and admins) see the forms that change things.
    pub deployer: bool,
}

fn page(title: &str, chrome: Option<&Chrome>, body: Markup) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // htmx without eval or inline styles, so the CSP holds.
                meta name="htmx-config" content=r#"{"allowEval":false,"includeIndicatorStyles":false,"allowScriptTags":false}"#;
                title { (title) " · berth" }
                link rel="stylesheet" href="/ui/assets/berth.css";
                script src="/ui/assets/htmx.min.js" defer {}
                script src="/ui/assets/htmx-sse.min.js" defer {}
            }
            body {
                header {
                    nav aria-label="berth" {
                        a.brand href="/ui" { "berth" }
                        @if let Some(c) = chrome {
                            a href="/ui" { "Apps" }
                            a href="/ui/alerts" { "Alerts" }
                            @if c.admin { a href="/ui/audit" { "Audit" } }
                            span.who { (c.who) }
                            form.inline method="post" action="/ui/logout" {
                                input type="hidden" name="csrf" value=(c.csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main id="main" { (body) }
            }
        }
    };
    Html(markup.into_string())
}

/// When, as people read it (UTC).
pub fn when(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rest = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

pub fn login(failed: bool, oidc: bool, csrf: &str) -> Html<String> {
    page(
        "Sign in",
        None,
        html! {
            h1 { "Sign in to berth" }
            @if failed {
                p.error role="alert" { "That token is unknown, revoked or expired. Sign in again." }
            }
            @if oidc {
                p { a.button href="/ui/login/oidc" { "Sign in with your organisation's account" } }
                p { "Or with an API token:" }
            }
            form method="post" action="/ui/login" {
                input type="hidden" name="csrf" value=(csrf);
                label for="token" { "API token" }
                input id="token" name="token" type="password" autocomplete="current-password" required;
                p.hint { "On the platform's machine: " code { "cat <data dir>/api-token" } ", or make one with " code { "berth tokens create NAME --role viewer" } "." }
                button type="submit" { "Sign in" }
            }
        },
    )
}

pub fn error(status: StatusCode, message: &str, hint: Option<&str>) -> Html<String> {
    let title = match status {
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        s if s.is_client_error() => "Refused",
        _ => "Failed",
    };
    page(
        title,
        None,
        html! {
            h1 { (title) }
            p.error role="alert" { (message) }
            @if let Some(h) = hint { p.hint { (h) } }
            p { a href="/ui" { "Back to the apps" } }
        },
    )
}

fn status_of(a: &AppSummary) -> (&'static str, String) {
    match (a.current_release, a.sleeping, a.running) {
        (None, _, _) => ("idle", "no release yet".into()),
        (Some(_), true, _) => ("idle", "asleep".into()),
        (Some(_), false, 0) => ("bad", "down".into()),
        (Some(_), false, n) => ("ok", format!("{n} running")),
    }
}

/// The apps table; `refresh` is where htmx fetches it again (the page's own address with
/// `fragment=1`).
pub fn apps_table(
    apps: &[AppSummary],
    traffic: &BTreeMap<String, Series>,
    refresh: &str,
) -> Markup {
    html! {
        table id="apps" hx-get=(refresh) hx-trigger="every 5s" hx-swap="outerHTML" {
            caption { "Apps (" (apps.len()) ")" }
            thead { tr { th scope="col" { "App" } th scope="col" { "Status" } th scope="col" { "Release" } th scope="col" { "Requests, last hour" } th scope="col" { "Isolation" } th scope="col" { "Project" } th scope="col" { "URL" } } }
            tbody {
                @for a in apps {
                    @let (class, text) = status_of(a);
                    tr {
                        td { a href={ "/ui/apps/" (a.name) } { (a.name) } }
                        td { span class={ "status " (class) } { (text) } }
                        td { @if let Some(v) = a.current_release { "v" (v) } @else { "—" } }
                        td { @if let Some(series) = traffic.get(&a.name) { (requests_chart(series, 120, 24)) } }
                        td { (a.isolation.as_deref().unwrap_or("—")) }
                        td { a href={ "/ui/projects/" (a.project) } { (a.project) } }
                        td { a href=(a.url) { (a.url) } }
                    }
                }
                @if apps.is_empty() {
                    tr { td colspan="7" { "No apps yet: " code { "berth deploy DIR" } " makes one." } }
                }
            }
        }
    }
}

/// A scope's DORA keys over 30 days and their trend, day by day.
pub struct Dora<'a> {
    pub keys: &'a berth_core::dora::DoraView,
    pub trend: &'a [(i64, berth_core::dora::DoraView)],
}

pub fn apps(
    chrome: &Chrome,
    apps: &[AppSummary],
    traffic: &BTreeMap<String, Series>,
    platform: Option<Dora>,
) -> Html<String> {
    page(
        "Apps",
        Some(chrome),
        html! {
            h1 { "Apps" }
            (apps_table(apps, traffic, "/ui?fragment=1"))
            @if let Some(d) = platform {
                section aria-labelledby="platform-dora" {
                    h2 id="platform-dora" { "The platform's DORA four keys (" (d.keys.window) ")" }
                    (dora_keys(d.keys))
                    (dora_trend(d.trend))
                }
            }
            @if chrome.deployer {
                section aria-labelledby="new" {
                    h2 id="new" { "Deploy from a git repository" }
                    (deploy_form(chrome.csrf, None))
                    h2 id="new-upload" { "Deploy an archive" }
                    (upload_form(chrome.csrf, None))
                }
            }
        },
    )
}

fn used(used: String, max: Option<String>) -> String {
    match max {
        Some(m) => format!("{used} of {m}"),
        None => format!("{used} (no limit)"),
    }
}

pub fn project(
    chrome: &Chrome,
    project: &berth_core::projects::ProjectView,
    apps: &[AppSummary],
    traffic: &BTreeMap<String, Series>,
    dora: Dora,
) -> Html<String> {
    let (q, u) = (&project.quota, &project.usage);
    let memory = berth_core::limits::format_memory;
    page(
        &format!("Project {}", project.name),
        Some(chrome),
        html! {
            h1 { "Project " (project.name) }
            p { "Tenant " (project.tenant) @if project.created_at > 0 { " · made " (when(project.created_at)) } }
            section aria-labelledby="quota" {
                h2 id="quota" { "Quota" }
                dl {
                    dt { "Apps" } dd { (used(u.apps.to_string(), q.max_apps.map(|m| m.to_string()))) }
                    dt { "Instances" } dd { (used(u.instances.to_string(), q.max_instances.map(|m| m.to_string()))) }
                    dt { "Memory" } dd { (used(memory(u.memory_bytes), q.max_memory_bytes.map(memory))) }
                    dt { "Volumes" } dd { (used(memory(u.volume_bytes), q.max_volume_bytes.map(memory))) }
                }
            }
            (apps_table(apps, traffic, &format!("/ui/projects/{}?fragment=1", project.name)))
            section aria-labelledby="project-dora" {
                h2 id="project-dora" { "DORA four keys of the project's apps (" (dora.keys.window) ")" }
                (dora_keys(dora.keys))
                (dora_trend(dora.trend))
            }
        },
    )
}

/// The form that deploys a branch, tag or commit of a repository (to `app`, or to an app
/// named in the form).
fn deploy_form(csrf: &str, app: Option<&str>) -> Markup {
    html! {
        form.search method="post" action={ "/ui/deploy" (super::once()) } {
            input type="hidden" name="csrf" value=(csrf);
            @match app {
                Some(a) => { input type="hidden" name="app" value=(a); }
                None => {
                    div { label for="deploy-app" { "App" } input id="deploy-app" name="app" required; }
                }
            }
            div { label for="deploy-url" { "Repository (https, git or ssh)" } input id="deploy-url" name="url" type="url" required placeholder="https://git.example.com/team/shop.git"; }
            div { label for="deploy-ref" { "Branch, tag or commit" } input id="deploy-ref" name="ref" value="main"; }
            button type="submit" { "Deploy" }
        }
    }
}

/// How a run ended (or nothing while it runs).
pub fn run_outcome(app: &str, run: &super::runs::Run) -> Markup {
    html! {
        @match &run.outcome {
            Some(Ok(done)) => { p.notice role="status" { "Done: " (done) } }
            Some(Err(why)) => { p.error role="alert" { "Failed: " (why) } }
            None => {}
        }
        p { a href={ "/ui/apps/" (app) } { "Back to " (app) } }
    }
}

/// The form that deploys an uploaded archive of the app's directory (to `app`, or to an app
/// named in the form).
fn upload_form(csrf: &str, app: Option<&str>) -> Markup {
    html! {
        form.search method="post" action={ "/ui/upload" (super::once()) } enctype="multipart/form-data" {
            input type="hidden" name="csrf" value=(csrf);
            @match app {
                Some(a) => { input type="hidden" name="app" value=(a); }
                None => {
                    div { label for="upload-app" { "App" } input id="upload-app" name="app" required; }
                }
            }
            div {
                label for="upload-archive" { "Source archive (.tar.gz)" }
                input id="upload-archive" name="archive" type="file" accept=".tar.gz,.tgz,application/gzip" required;
            }
            button type="submit" { "Upload and deploy" }
        }
        p.hint { "Make one with " code { "tar czf app.tar.gz -C DIR ." } " or " code { "git archive --format=tar.gz -o app.tar.gz HEAD" } "." }
    }
}

/// A run's steps and output; streamed (server-sent events) while it runs, its outcome
/// swapped in when it ends.
pub fn run_body(app: &str, id: &str, run: &super::runs::Run) -> Markup {
    html! {
        @if run.outcome.is_none() {
            div id="run" hx-ext="sse" sse-connect={ "/ui/apps/" (app) "/runs/" (id) "/live?from=" (run.dropped + run.lines.len()) } sse-close="done" {
                div sse-swap="done" {
                    p role="status" { "Running… " a href={ "/ui/apps/" (app) "/runs/" (id) } { "refresh" } }
                }
                pre sse-swap="line" hx-swap="beforeend" { @for l in &run.lines { (l) "\n" } }
            }
        } @else {
            div id="run" {
                (run_outcome(app, run))
                pre { @for l in &run.lines { (l) "\n" } }
            }
        }
    }
}

pub fn run(chrome: &Chrome, app: &str, id: &str, run: &super::runs::Run) -> Html<String> {
    page(
        &format!("{app}: {}", run.what),
        Some(chrome),
        html! {
            h1 { (app) " · " (run.what) }
            (run_body(app, id, run))
        },
    )
}

fn slow_label(series: &Series) -> String {
    let total: i64 = series.iter().map(|(r, _, _)| r).sum();
    let slow: i64 = series.iter().map(|(_, _, s)| s).sum();
    format!("{slow} of {total} answers slower than the latency objective in the last hour")
}

/// The share of each minute's answers slower than the latency objective.
fn slow_chart(series: &Series, width: u32) -> Markup {
    let values: Vec<f64> = series
        .iter()
        .map(|(r, _, s)| if *r > 0 { *s as f64 / *r as f64 } else { 0.0 })
        .collect();
    charts::sparkline(&values, width, 48, &slow_label(series))
}

/// An app's health: its traffic, its objectives' error budgets, and its DORA keys.
pub struct Health<'a> {
    pub traffic: &'a Series,
    pub slo: Option<&'a berth_core::slo::SloView>,
    pub dora: Option<&'a berth_core::dora::DoraView>,
    /// The four keys day by day over the last 30 days (oldest first), with each day's start.
    pub trend: &'a [(i64, berth_core::dora::DoraView)],
}

fn duration(secs: f64) -> String {
    let s = secs.round() as i64;
    match s {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

fn dora_keys(d: &berth_core::dora::DoraView) -> Markup {
    let band = |b: Option<berth_core::dora::Band>| b.map(|b| b.as_str()).unwrap_or("—");
    html! {
        dl {
            dt { "Deployment frequency" } dd { (format!("{:.2} per day", d.deployments_per_day)) " · " (band(d.bands.deployment_frequency)) }
            dt { "Lead time for changes" } dd { (d.lead_time_seconds.map(duration).unwrap_or_else(|| "—".into())) " · " (band(d.bands.lead_time)) }
            dt { "Change failure rate" } dd { (d.change_failure_rate.map(|r| format!("{:.0}%", r * 100.0)).unwrap_or_else(|| "—".into())) " · " (band(d.bands.change_failure_rate)) }
            dt { "Time to restore" } dd { (d.time_to_restore_seconds.map(duration).unwrap_or_else(|| "—".into())) " · " (band(d.bands.time_to_restore)) }
            dt { "Performance" } dd { strong { (band(d.bands.overall)) } }
        }
    }
}

/// The four keys day by day: a chart each (a day without a value has no bar).
fn dora_trend(trend: &[(i64, berth_core::dora::DoraView)]) -> Markup {
    let day = |start: &i64| when(*start)[..10].to_string();
    let plural = |n: u64, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let deploys: Vec<u64> = trend.iter().map(|(_, v)| v.deployments).collect();
    let deploy_titles: Vec<String> = trend
        .iter()
        .map(|(d, v)| format!("{}: {}", day(d), plural(v.deployments, "deploy")))
        .collect();
    let total: u64 = deploys.iter().sum();
    let lead: Vec<Option<f64>> = trend.iter().map(|(_, v)| v.lead_time_seconds).collect();
    let lead_titles: Vec<String> = trend
        .iter()
        .map(|(d, v)| match v.lead_time_seconds {
            Some(s) => format!("{}: median lead time {}", day(d), duration(s)),
            None => format!("{}: no lead time measured", day(d)),
        })
        .collect();
    let failure: Vec<Option<f64>> = trend
        .iter()
        .map(|(_, v)| v.change_failure_rate.map(|r| r * 100.0))
        .collect();
    let failure_titles: Vec<String> = trend
        .iter()
        .map(|(d, v)| {
            format!(
                "{}: {} of {} failed",
                day(d),
                v.failures,
                plural(v.attempts, "deploy")
            )
        })
        .collect();
    let (failed, tried): (u64, u64) = trend
        .iter()
        .fold((0, 0), |(f, t), (_, v)| (f + v.failures, t + v.attempts));
    let restore: Vec<Option<f64>> = trend
        .iter()
        .map(|(_, v)| v.time_to_restore_seconds)
        .collect();
    let restore_titles: Vec<String> = trend
        .iter()
        .map(|(d, v)| match v.time_to_restore_seconds {
            Some(s) => format!("{}: service restored in {} (median)", day(d), duration(s)),
            None => format!("{}: nothing to restore", day(d)),
        })
        .collect();
    let measured = |v: &[Option<f64>]| v.iter().flatten().count();
    let deploys_label = format!("{} in the last 30 days", plural(total, "deploy"));
    let lead_label = format!("measured on {} of the last 30 days", measured(&lead));
    let failure_label = format!(
        "{failed} of {} failed in the last 30 days",
        plural(tried, "deploy")
    );
    let restore_label = format!(
        "service restored on {} of the last 30 days",
        measured(&restore)
    );
    html! {
        div.trend {
            figure {
                figcaption { "Deploys per day" }
                (charts::bars(&deploys, &deploy_titles, 300, 40, &format!("{deploys_label}, per day")))
                p.hint { (deploys_label) }
            }
            figure {
                figcaption { "Lead time for changes (median per day)" }
                (charts::columns(&lead, &lead_titles, 300, 40, &format!("lead time {lead_label}")))
                p.hint { "Lead time " (lead_label) }
            }
            figure {
                figcaption { "Change failure rate per day" }
                (charts::columns(&failure, &failure_titles, 300, 40, &format!("{failure_label}, per day")))
                p.hint { (failure_label) }
            }
            figure {
                figcaption { "Time to restore service (median per day)" }
                (charts::columns(&restore, &restore_titles, 300, 40, &restore_label))
                p.hint { (restore_label) }
            }
        }
    }
}

fn health(h: &Health) -> Markup {
    html! {
        section aria-labelledby="health" {
            h2 id="health" { "Health" }
            h3 { "Requests per minute" }
            figure {
                (requests_chart(h.traffic, 360, 48))
                figcaption.hint { (requests_label(h.traffic)) " (5xx in red)" }
            }
            h3 { "Slow answers (share per minute)" }
            figure {
                (slow_chart(h.traffic, 360))
                figcaption.hint { (slow_label(h.traffic)) }
            }
            @if let Some(slo) = h.slo {
                h3 { "Error budgets (30 days)" }
                table {
                    thead { tr { th scope="col" { "Objective" } th scope="col" { "Target" } th scope="col" { "Budget left" } th scope="col" { "Alerts" } } }
                    tbody {
                        @for sli in &slo.slis {
                            tr {
                                td { (sli.sli.as_str()) }
                                td { (format!("{:.2}%", sli.objective * 100.0)) }
                                td {
                                    @match sli.budget_remaining {
                                        Some(left) => {
                                            (charts::budget(left, &format!("{:.0}% of the {} error budget left", left * 100.0, sli.sli.as_str())))
                                            " " (format!("{:.0}%", left * 100.0))
                                        }
                                        None => { "no traffic yet" }
                                    }
                                }
                                td {
                                    @if sli.firing.is_empty() { "none" }
                                    @for f in &sli.firing { span.status.bad { (f.as_str()) } " " }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(d) = h.dora {
                h3 { "DORA four keys (" (d.window) ")" }
                (dora_keys(d))
                (dora_trend(h.trend))
            }
        }
    }
}

/// What the app page shows.
pub struct AppPage<'a> {
    pub summary: &'a AppSummary,
    pub releases: &'a [ReleaseView],
    pub instances: &'a [berth_core::api::InstanceView],
    pub domains: &'a [berth_core::domains::DomainView],
    pub volumes: &'a [berth_core::state::VolumeView],
    pub env: &'a std::collections::BTreeMap<String, String>,
    pub secrets: &'a [String],
    pub notice: Option<&'a str>,
    pub health: Health<'a>,
    /// The serving release's process types and their instances.
    pub processes: &'a [(String, u32)],
    pub database: Option<&'a berth_core::state::DatabaseView>,
}

pub fn app(chrome: &Chrome, v: &AppPage) -> Html<String> {
    let a = v.summary;
    let (class, text) = status_of(a);
    page(
        &a.name,
        Some(chrome),
        html! {
            h1 { (a.name) " " span class={ "status " (class) } { (text) } }
            @if let Some(n) = v.notice { p.notice role="status" { (n) } }
            p { a href=(a.url) { (a.url) } " · project " (a.project) " · " a href={ "/ui/apps/" (a.name) "/logs" } { "Logs" } }
            (health(&v.health))
            section aria-labelledby="releases" {
                h2 id="releases" { "Releases" }
                table {
                    thead { tr { th scope="col" { "Release" } th scope="col" { "Status" } th scope="col" { "What" } th scope="col" { "Who" } th scope="col" { "When" } th scope="col" { span.visually-hidden { "Action" } } } }
                    tbody {
                        @for r in v.releases {
                            tr {
                                td { "v" (r.version) }
                                td { (r.status.as_str()) }
                                td { (r.description) @if let Some(f) = &r.failure { br; span.error { (f) } } }
                                td { (r.actor) }
                                td { (when(r.created_at)) }
                                td {
                                    @if chrome.deployer && Some(r.version) != a.current_release && r.status.as_str() == "superseded" {
                                        a.button href={ "/ui/apps/" (a.name) "/rollback?to=" (r.version) } { "Roll back to v" (r.version) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if chrome.deployer {
                section aria-labelledby="deploy" {
                    h2 id="deploy" { "Deploy from git" }
                    (deploy_form(chrome.csrf, Some(&a.name)))
                    h3 { "Or an archive" }
                    (upload_form(chrome.csrf, Some(&a.name)))
                }
            }
            section aria-labelledby="instances" {
                h2 id="instances" { "Instances" }
                @if chrome.deployer {
                    @for (kind, n) in v.processes {
                        form.search method="post" action={ "/ui/apps/" (a.name) "/scale" (super::once()) } {
                            input type="hidden" name="csrf" value=(chrome.csrf);
                            input type="hidden" name="process" value=(kind);
                            div { label for={ "scale-" (kind) } { (kind) " instances" } input id={ "scale-" (kind) } name="instances" type="number" min="0" max="16" value=(n); }
                            button type="submit" { "Scale " (kind) }
                        }
                    }
                }
                table {
                    thead { tr { th scope="col" { "Instance" } th scope="col" { "Release" } th scope="col" { "State" } th scope="col" { "Restarts" } } }
                    tbody {
                        @for i in v.instances {
                            tr { td { (i.process) "." (i.index) } td { "v" (i.release) } td { (i.state.as_str()) } td { (i.restarts) } }
                        }
                    }
                }
            }
            section aria-labelledby="domains" {
                h2 id="domains" { "Domains" }
                @if v.domains.is_empty() { p { "None; " code { "berth domains add " (a.name) " NAME" } " adds one." } }
                ul {
                    @for d in v.domains {
                        li {
                            a href=(d.url) { (d.name) }
                            @match &d.certificate {
                                Some(c) => { " · certificate from " (c.issuer) " (" (c.source) "), valid until " (when(c.not_after)) }
                                None => { " · no certificate yet" }
                            }
                            @if let Some(e) = &d.error { br; span.error { (e) } }
                            @if let Some(dns) = &d.dns { " · DNS " (dns.state) }
                        }
                    }
                }
            }
            section aria-labelledby="database" {
                h2 id="database" { "Database" }
                @match v.database {
                    Some(db) => {
                        p {
                            "PostgreSQL database " code { (db.database) } " (role " code { (db.role) } ") at " (db.host) ":" (db.port)
                            @if db.server_running { " · running" } @else { span.error { " · the server is down" } }
                            " · " (db.backups.len()) @if db.backups.len() == 1 { " backup" } @else { " backups" } "; the app has it as " code { "DATABASE_URL" } "."
                        }
                        @if chrome.deployer {
                            form.inline method="post" action={ "/ui/apps/" (a.name) "/database/backup" (super::once()) } {
                                input type="hidden" name="csrf" value=(chrome.csrf);
                                button type="submit" { "Back up now" }
                            }
                        }
                    }
                    None => {
                        p { "None; " code { "berth db create " (a.name) } " makes one." }
                        @if chrome.deployer {
                            form.inline method="post" action={ "/ui/apps/" (a.name) "/database" (super::once()) } {
                                input type="hidden" name="csrf" value=(chrome.csrf);
                                button type="submit" { "Create a PostgreSQL database" }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="volumes" {
                h2 id="volumes" { "Volumes" }
                @if v.volumes.is_empty() { p { "None." } }
                ul {
                    @for vol in v.volumes {
                        li {
                            (vol.name) " at " code { (vol.mount) } " (" (berth_core::limits::format_memory(vol.size_bytes)) ")"
                            @if chrome.deployer {
                                " "
                                form.inline method="post" action={ "/ui/apps/" (a.name) "/volumes/" (vol.name) "/snapshot" (super::once()) } {
                                    input type="hidden" name="csrf" value=(chrome.csrf);
                                    button type="submit" aria-label={ "Snapshot " (vol.name) } { "Snapshot" }
                                }
                            }
                        }
                    }
                }
                @if chrome.deployer {
                    form.search method="post" action={ "/ui/apps/" (a.name) "/volumes" (super::once()) } {
                        input type="hidden" name="csrf" value=(chrome.csrf);
                        div { label for="volume-name" { "Name" } input id="volume-name" name="name" required; }
                        div { label for="volume-mount" { "Mount path" } input id="volume-mount" name="mount" required placeholder="/data"; }
                        div { label for="volume-size" { "Size" } input id="volume-size" name="size" value="1G" required; }
                        button type="submit" { "Add volume" }
                    }
                }
            }
            section aria-labelledby="env" {
                h2 id="env" { "Environment" }
                dl {
                    @for (k, val) in v.env {
                        dt { (k) }
                        dd {
                            code { (val) }
                            @if chrome.deployer { " " (remove_form(chrome.csrf, &a.name, "env", k)) }
                        }
                    }
                }
                @if chrome.deployer { (set_form(chrome.csrf, &a.name, "env", "Set variable", false)) }
                h3 { "Secrets" }
                p.hint { "Names only: values never leave the platform's keyring." }
                ul {
                    @for s in v.secrets {
                        li { code { (s) } @if chrome.deployer { " " (remove_form(chrome.csrf, &a.name, "secrets", s)) } }
                    }
                }
                @if chrome.deployer { (set_form(chrome.csrf, &a.name, "secrets", "Set secret", true)) }
            }
        },
    )
}

/// A button removing variable or secret `key` (`what`: `env` or `secrets`).
fn remove_form(csrf: &str, app: &str, what: &str, key: &str) -> Markup {
    html! {
        form.inline method="post" action={ "/ui/apps/" (app) "/" (what) (super::once()) } {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="action" value="unset";
            input type="hidden" name="key" value=(key);
            button type="submit" aria-label={ "Remove " (key) } { "Remove" }
        }
    }
}

/// A form setting a variable or secret (a secret's value is typed unseen).
fn set_form(csrf: &str, app: &str, what: &str, label: &str, secret: bool) -> Markup {
    html! {
        form.search method="post" action={ "/ui/apps/" (app) "/" (what) (super::once()) } {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="action" value="set";
            div { label for={ (what) "-key" } { "Name" } input id={ (what) "-key" } name="key" required; }
            div {
                label for={ (what) "-value" } { "Value" }
                @if secret { input id={ (what) "-value" } name="value" type="password" autocomplete="off" required; }
                @else { input id={ (what) "-value" } name="value"; }
            }
            button type="submit" { (label) }
        }
    }
}

pub fn rollback_confirm(chrome: &Chrome, app: &str, current: Option<u32>, to: u32) -> Html<String> {
    page(
        "Roll back",
        Some(chrome),
        html! {
            h1 { "Roll " (app) " back to v" (to) "?" }
            p {
                "A new release runs v" (to) "'s image and settings"
                @if let Some(c) = current { " in place of v" (c) }
                ", rolled out like a deploy: health-checked, then switched, without downtime."
            }
            form method="post" action={ "/ui/apps/" (app) "/rollback" (super::once()) } {
                input type="hidden" name="csrf" value=(chrome.csrf);
                input type="hidden" name="to" value=(to);
                button type="submit" { "Roll back to v" (to) }
                " "
                a href={ "/ui/apps/" (app) } { "Cancel" }
            }
        },
    )
}

/// The log lines a page shows; when `live` (with the position after them), new lines are
/// streamed in as server-sent events.
pub fn log_lines(
    app: &str,
    lines: &[berth_observe::store::LogRecord],
    live: Option<&berth_observe::Cursor>,
) -> Markup {
    html! {
        @if let Some(after) = live {
            div id="log" role="log" hx-ext="sse" sse-connect={ "/ui/apps/" (app) "/logs/live?after=" (after.to_string()) } {
                pre sse-swap="line" hx-swap="beforeend" { @for l in lines { (log_line(l)) } }
            }
        } @else {
            div id="log" role="log" {
                @if lines.is_empty() { p { "No lines." } }
                pre { @for l in lines { (log_line(l)) } }
            }
        }
    }
}

/// One log line: where and when it came from, then its text.
pub fn log_line(l: &berth_observe::store::LogRecord) -> Markup {
    html! {
        span.meta { (when(l.ts / 1000)) " " (l.process) "." (l.index) " v" (l.release) " " (l.stream) " " }
        (l.line) "\n"
    }
}

pub fn logs(
    chrome: &Chrome,
    app: &str,
    q: &str,
    stream: &str,
    since: &str,
    lines: &[berth_observe::store::LogRecord],
    live: Option<&berth_observe::Cursor>,
) -> Html<String> {
    page(
        &format!("{app} logs"),
        Some(chrome),
        html! {
            h1 { a href={ "/ui/apps/" (app) } { (app) } " · logs" }
            form.search method="get" action={ "/ui/apps/" (app) "/logs" } {
                label for="q" { "Search (regular expression)" }
                input id="q" name="q" type="search" value=(q);
                label for="since" { "From" }
                select id="since" name="since" {
                    @for (v, t) in [("", "any time"), ("15m", "15 minutes ago"), ("1h", "1 hour ago"), ("24h", "1 day ago"), ("7d", "7 days ago")] {
                        option value=(v) selected[v == since] { (t) }
                    }
                }
                label for="stream" { "Stream" }
                select id="stream" name="stream" {
                    @for s in ["", "runtime", "build", "access", "platform"] {
                        option value=(s) selected[s == stream] { @if s.is_empty() { "all" } @else { (s) } }
                    }
                }
                button type="submit" { "Search" }
            }
            @if live.is_some() { p.hint { "Live: new lines appear as they come." } }
            (log_lines(app, lines, live))
        },
    )
}

pub fn alerts(chrome: &Chrome, alerts: &[berth_core::alerts::AlertView]) -> Html<String> {
    let firing: Vec<_> = alerts.iter().filter(|a| a.resolved_at.is_none()).collect();
    let resolved: Vec<_> = alerts.iter().filter(|a| a.resolved_at.is_some()).collect();
    page(
        "Alerts",
        Some(chrome),
        html! {
            h1 { "Alerts" }
            div id="alerts" hx-get="/ui/alerts" hx-select="#alerts" hx-trigger="every 10s" hx-swap="outerHTML" {
                h2 { "Firing (" (firing.len()) ")" }
                @if firing.is_empty() { p { "Nothing fires." } }
                ul {
                    @for a in &firing {
                        li { span class={ "status " @if a.severity == "page" { "bad" } @else { "idle" } } { (a.severity) } " " a href={ "/ui/apps/" (a.app) } { (a.app) } " · " (a.name) ": " (a.summary) " (since " (when(a.started_at)) ")" }
                    }
                }
                h2 { "Resolved in the last day (" (resolved.len()) ")" }
                ul {
                    @for a in &resolved {
                        li { (a.app) " · " (a.name) ": " (a.summary) " (" (when(a.started_at)) " – " (a.resolved_at.map(when).unwrap_or_default()) ")" }
                    }
                }
            }
        },
    )
}

pub fn audit(chrome: &Chrome, entries: &[AuditEntry], actor: &str, target: &str) -> Html<String> {
    page(
        "Audit",
        Some(chrome),
        html! {
            h1 { "Audit log" }
            form.search method="get" action="/ui/audit" {
                label for="actor" { "Actor" }
                input id="actor" name="actor" value=(actor);
                label for="target" { "App or object" }
                input id="target" name="target" value=(target);
                button type="submit" { "Filter" }
            }
            table {
                thead { tr { th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "What" } th scope="col" { "On" } th scope="col" { "Outcome" } } }
                tbody {
                    @for e in entries {
                        tr {
                            td { (when(e.at)) }
                            td { (e.actor) }
                            td { code { (e.action) } }
                            td { (e.target.as_deref().unwrap_or("")) }
                            td { (e.outcome) @if let Some(d) = &e.detail { br; span.hint { (d) } } }
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_as_people_write_them() {
        assert_eq!(when(0), "1970-01-01 00:00 UTC");
        assert_eq!(when(1_795_995_711), "2026-11-29 23:41 UTC");
    }

    #[test]
    fn hostile_text_is_escaped() {
        let page = error(
            StatusCode::BAD_REQUEST,
            "<script>alert(1)</script>",
            Some("\"><img src=x onerror=alert(1)>"),
        )
        .0;
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(!page.contains("<img src=x"), "{page}");
        assert!(page.contains("&lt;script&gt;"), "{page}");
    }
}

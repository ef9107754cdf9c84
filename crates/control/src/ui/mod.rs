//! berth's web dashboard at `/ui` on the API port (and at the platform's own host name over
//! HTTPS): server-rendered pages (maud, escaped by construction) that read without
//! JavaScript, with htmx (vendored, served from the binary) for live updates. Signing in
//! stores the API token in an HttpOnly, SameSite=Strict cookie; every page then passes the
//! same guard as the API (the token's role and project, the audit log). Forms carry a CSRF
//! token derived from the session; a strict Content-Security-Policy allows nothing but
//! berth's own scripts and styles.

mod charts;
mod pages;
mod runs;
mod sign_in;
mod views;

use crate::platform::Platform;
use axum::body::Body;
use axum::extract::{Form, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use sha2::Digest as _;
use std::sync::Arc;

/// The session cookie: the API token, for `/ui` only.
const COOKIE: &str = "berth_session";
/// How long a session lasts in the browser.
pub(crate) const SESSION_SECS: u64 = 12 * 3600;

const HTMX: &[u8] = include_bytes!("assets/htmx.min.js");
/// htmx's server-sent events extension (npm `htmx-ext-sse`), for live logs and runs.
const HTMX_SSE: &[u8] = include_bytes!("assets/htmx-sse.min.js");
const CSS: &str = include_str!("assets/berth.css");

/// Nothing but berth's own scripts, styles and images; no framing, no form elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The pages behind the guard (a GET needs a viewer, a POST a deployer, the audit an
/// admin).
pub fn guarded_routes(upload_limit: usize) -> Router<Arc<Platform>> {
    Router::new()
        .route("/ui", get(views::apps))
        .route("/ui/apps/{app}", get(views::app))
        .route("/ui/projects/{project}", get(views::project))
        .route("/ui/apps/{app}/logs", get(views::logs))
        .route("/ui/apps/{app}/logs/live", get(views::logs_live))
        .route("/ui/apps/{app}/runs/{id}/live", get(views::run_live))
        .route(
            "/ui/apps/{app}/rollback",
            get(views::rollback_confirm).post(views::rollback),
        )
        .route("/ui/audit", get(views::audit))
        .route("/ui/alerts", get(views::alerts))
        .route("/ui/deploy", post(views::deploy))
        .route(
            "/ui/upload",
            post(views::upload).layer(axum::extract::DefaultBodyLimit::max(upload_limit)),
        )
        .route("/ui/apps/{app}/volumes", post(views::add_volume))
        .route(
            "/ui/apps/{app}/volumes/{volume}/snapshot",
            post(views::snapshot_volume),
        )
        .route("/ui/apps/{app}/database", post(views::add_database))
        .route(
            "/ui/apps/{app}/database/backup",
            post(views::backup_database),
        )
        .route("/ui/apps/{app}/runs/{id}", get(views::run))
        .route("/ui/apps/{app}/scale", post(views::scale))
        .route("/ui/apps/{app}/env", post(views::env))
        .route("/ui/apps/{app}/secrets", post(views::secrets))
}

/// The pages anyone may open: signing in and out, and the assets.
pub fn public_routes() -> Router<Arc<Platform>> {
    Router::new()
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/login/oidc", get(sign_in::start))
        .route("/ui/login/callback", get(sign_in::callback))
        .route("/ui/logout", post(logout))
        .route("/ui/assets/htmx.min.js", get(htmx))
        .route("/ui/assets/htmx-sse.min.js", get(htmx_sse))
        .route("/ui/assets/berth.css", get(css))
}

/// A cookie's value.
pub(crate) fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// The session's token, from its cookie.
pub(crate) fn session_token(headers: &HeaderMap) -> Option<String> {
    // Two session cookies mean one was set by someone else (an app of the same base
    // domain can set one for a longer path): no session at all, rather than a guess.
    let sent = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter(|kv| kv.trim().split_once('=').is_some_and(|(k, _)| k == COOKIE))
        .count();
    if sent > 1 {
        return None;
    }
    cookie_value(headers, COOKIE)
}

/// The CSRF token of a session: only a page berth rendered for it carries it.
pub(crate) fn csrf_of(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(format!("berth-ui-csrf\0{token}")))
}

/// Whether a form came from one of this session's pages.
pub(crate) fn csrf_ok(headers: &HeaderMap, given: &str) -> bool {
    session_token(headers).is_some_and(|t| same_secret(&csrf_of(&t), given))
}

/// The query a form's action carries so that submitting it twice (a double click, a
/// resubmitted page) does the work once: `?once=KEY`, new for each page. The session
/// layer makes it the request's `Idempotency-Key`, so the second submission gets the
/// first one's answer (the same run, the same notice), as an API client's retry would.
pub(crate) fn once() -> String {
    format!("?once={}", crate::random_id(20))
}

/// The `once` key of a form's submission, as an `Idempotency-Key`.
fn once_key(req: &Request) -> Option<HeaderValue> {
    let key = req
        .uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("once="))?;
    if key.is_empty() || key.len() > 64 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    HeaderValue::from_str(&format!("ui-{key}")).ok()
}

/// Puts the session's token where the guard reads it, turns the guard's refusals into
/// pages (sign in again; not allowed) and sets the security headers. Only for `/ui`.
pub async fn session(mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path != "/ui" && !path.starts_with("/ui/") {
        return next.run(req).await;
    }
    let public = path == "/ui/login"
        || path == "/ui/logout"
        || path.starts_with("/ui/login/")
        || path.starts_with("/ui/assets/");
    if !public {
        match session_token(req.headers()) {
            Some(token) => {
                if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
                    req.headers_mut().insert(header::AUTHORIZATION, v);
                }
                if req.method() == axum::http::Method::POST {
                    if let Some(key) = once_key(&req) {
                        req.headers_mut()
                            .insert(crate::idempotency::KEY_HEADER, key);
                    }
                }
            }
            None => return secured(Redirect::to("/ui/login").into_response()),
        }
    }
    let resp = next.run(req).await;
    if resp.status() == StatusCode::UNAUTHORIZED && !public {
        // Unknown, revoked or expired: sign in again.
        let mut r = Redirect::to("/ui/login?failed=1").into_response();
        r.headers_mut()
            .insert(header::SET_COOKIE, cookie("", 0, false));
        return secured(r);
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json && (resp.status().is_client_error() || resp.status().is_server_error()) {
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 10)
            .await
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let page = pages::error(
            status,
            v["message"].as_str().unwrap_or("the request failed"),
            v["hint"].as_str(),
        );
        return secured((status, page).into_response());
    }
    secured(resp)
}

pub(crate) fn secured(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// The session cookie (an empty value and no age: removed). `Secure` when the page came
/// over HTTPS (through the edge).
pub(crate) fn cookie(token: &str, max_age: u64, https: bool) -> HeaderValue {
    cookie_header(COOKIE, token, "/ui", "Strict", max_age, https)
}

/// An HttpOnly cookie (an empty value and no age: removed).
pub(crate) fn cookie_header(
    name: &str,
    value: &str,
    path: &str,
    same_site: &str,
    max_age: u64,
    https: bool,
) -> HeaderValue {
    let secure = if https { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite={same_site}; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("berth_session=; Path=/ui; Max-Age=0"))
}

pub(crate) fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes() == b"https")
}

#[derive(serde::Deserialize)]
pub(crate) struct LoginPage {
    #[serde(default)]
    failed: Option<String>,
}

/// The cookie that ties a sign-in form to the browser it was shown to.
const LOGIN_COOKIE: &str = "berth_login";

/// The sign-in page, with a fresh value in a cookie and the same in the form (a sign-in
/// posted from another site has the cookie's value nowhere to copy from).
async fn login_page(
    axum::extract::State(p): axum::extract::State<Arc<Platform>>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<LoginPage>,
) -> Response {
    let nonce = crate::random_id(32);
    let mut r = pages::login(q.failed.is_some(), p.oidc.is_some(), &nonce).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        cookie_header(
            LOGIN_COOKIE,
            &nonce,
            "/ui/login",
            "Strict",
            600,
            over_https(&headers),
        ),
    );
    secured(r)
}

#[derive(serde::Deserialize)]
pub(crate) struct LoginForm {
    token: String,
    #[serde(default)]
    csrf: String,
}

/// Whether a browser says the request comes from another origin (`Sec-Fetch-Site`):
/// another site, or another host of this one — an app at `APP.<base domain>` is the same
/// site as the dashboard at `berth.<base domain>`, and may set cookies for the whole base
/// domain, so only the dashboard's own origin (or the user typing the address) counts.
fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .is_some_and(|v| !matches!(v.as_bytes(), b"same-origin" | b"none"))
}

/// Constant-time equality of two secrets' texts.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Signing in: the token goes into the session cookie; the guard judges it on the next
/// page (an unknown one comes back here). Only from the sign-in form berth showed this
/// browser: another site cannot sign a visitor in as someone else (login CSRF).
async fn login(headers: HeaderMap, Form(f): Form<LoginForm>) -> Response {
    let shown = cookie_value(&headers, LOGIN_COOKIE);
    let from_our_form = shown.is_some_and(|n| !f.csrf.is_empty() && same_secret(&n, &f.csrf));
    if !from_our_form || cross_site(&headers) {
        return secured(
            (
                StatusCode::FORBIDDEN,
                "this sign-in did not come from berth's sign-in page: open /ui/login and sign in there",
            )
                .into_response(),
        );
    }
    let token = f.token.trim();
    let plausible = !token.is_empty()
        && token.len() <= 4096
        && token
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b',');
    if !plausible {
        return secured(Redirect::to("/ui/login?failed=1").into_response());
    }
    let mut r = Redirect::to("/ui").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        cookie(token, SESSION_SECS, over_https(&headers)),
    );
    secured(r)
}

#[derive(serde::Deserialize)]
pub(crate) struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// Signing out, from one of the session's own pages only.
async fn logout(headers: HeaderMap, Form(f): Form<LogoutForm>) -> Response {
    if session_token(&headers).is_some() && (!csrf_ok(&headers, &f.csrf) || cross_site(&headers)) {
        return secured(
            (
                StatusCode::FORBIDDEN,
                "this sign-out did not come from a berth page: use the Sign out button",
            )
                .into_response(),
        );
    }
    let mut r = Redirect::to("/ui/login").into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, cookie("", 0, false));
    secured(r)
}

fn asset(body: Body, kind: &'static str) -> Response {
    let mut r = Response::new(body);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r
}

async fn htmx() -> Response {
    asset(Body::from(HTMX), "text/javascript; charset=utf-8")
}

async fn htmx_sse() -> Response {
    asset(Body::from(HTMX_SSE), "text/javascript; charset=utf-8")
}

async fn css() -> Response {
    asset(Body::from(CSS), "text/css; charset=utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_and_its_csrf_token_come_from_the_cookie() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("other=1; berth_session=tok_abc; x=2"),
        );
        assert_eq!(session_token(&h).as_deref(), Some("tok_abc"));
        assert!(csrf_ok(&h, &csrf_of("tok_abc")));
        assert!(!csrf_ok(&h, &csrf_of("tok_other")));
        assert!(!csrf_ok(&h, ""));
        assert!(!csrf_ok(&HeaderMap::new(), &csrf_of("tok_abc")));
    }
}

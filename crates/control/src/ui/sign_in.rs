//! Signing in to the dashboard with the platform's OpenID Connect provider (`berth up
//! --oidc-issuer`): the browser goes to the provider with a PKCE challenge and a state kept
//! in a short-lived cookie, comes back to `/ui/login/callback`, and the platform exchanges
//! the code (with its client secret, which never leaves it) for an ID token — the session.
//! The address the provider sends the browser back to is one berth serves (the platform's
//! own HTTPS host name, or the API port on loopback), never one a request names.

use super::{cookie_header, over_https, secured, SESSION_SECS};
use crate::error::ApiError;
use crate::platform::Platform;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::Digest as _;
use std::sync::Arc;

/// The cookie holding a sign-in's state and PKCE verifier while the browser is away.
const PENDING: &str = "berth_oidc";

fn no_provider() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_sign_in",
        "this platform has no sign-in provider",
    )
    .hint("sign in with an API token, or start berth with --oidc-issuer and --oidc-client-id")
}

/// The dashboard's address as the browser reached it, if berth serves it there.
fn origin(p: &Platform, headers: &HeaderMap) -> Result<String, ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let port = p.cfg.api_listen.port();
    let mut known = vec![
        format!("http://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
    ];
    if let Some(url) = p.cfg.platform_url() {
        known.push(url.trim_end_matches('/').to_string());
    }
    let scheme = if over_https(headers) { "https" } else { "http" };
    let asked = format!("{scheme}://{host}");
    known.into_iter().find(|k| *k == asked).ok_or_else(|| {
        ApiError::invalid(
            "unknown_origin",
            format!("{asked} is not an address the dashboard signs in at"),
        )
        .hint("open the dashboard at the address `berth up` printed")
    })
}

/// `/ui/login/oidc`: off to the provider.
pub async fn start(
    State(p): State<Arc<Platform>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let oidc = p.oidc.as_ref().ok_or_else(no_provider)?;
    let redirect = format!("{}/ui/login/callback", origin(&p, &headers)?);
    let endpoint = oidc.authorization_endpoint().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "oidc_unavailable",
            e.to_string(),
        )
    })?;
    let verifier = crate::random_id(32);
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let state = crate::random_id(16);
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &oidc.client_id)
        .append_pair("redirect_uri", &redirect)
        .append_pair("scope", "openid email profile")
        .append_pair("state", &state)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    let sep = if endpoint.contains('?') { '&' } else { '?' };
    let mut r = Redirect::to(&format!("{endpoint}{sep}{query}")).into_response();
    // Lax: the provider's redirect back is a top-level navigation from elsewhere.
    r.headers_mut().insert(
        header::SET_COOKIE,
        cookie_header(
            PENDING,
            &format!("{state}.{verifier}"),
            "/ui/login",
            "Lax",
            600,
            over_https(&headers),
        ),
    );
    Ok(secured(r))
}

#[derive(serde::Deserialize)]
pub struct Callback {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

fn refused(why: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "sign_in_refused", why)
        .hint("sign in again from the dashboard's sign-in page")
}

/// `/ui/login/callback`: the provider's answer, exchanged for the session.
pub async fn callback(
    State(p): State<Arc<Platform>>,
    headers: HeaderMap,
    Query(cb): Query<Callback>,
) -> Result<Response, ApiError> {
    let oidc = p.oidc.as_ref().ok_or_else(no_provider)?;
    if let Some(e) = cb.error {
        return Err(refused(format!(
            "the provider refused the sign-in: {}",
            cb.error_description.unwrap_or(e)
        )));
    }
    let pending = super::cookie_value(&headers, PENDING).ok_or_else(|| {
        refused("this sign-in was not started here (or took longer than 10 minutes)")
    })?;
    let (state, verifier) = pending.split_once('.').unwrap_or_default();
    if cb.state.as_deref() != Some(state) || state.is_empty() {
        return Err(refused(
            "the sign-in's state does not match: it was not started here",
        ));
    }
    let code = cb
        .code
        .ok_or_else(|| refused("the provider sent no code"))?;
    let redirect = format!("{}/ui/login/callback", origin(&p, &headers)?);
    let id_token = oidc
        .exchange_at(&code, &redirect, verifier)
        .await
        .map_err(|e| refused(e.to_string()))?;
    let mut r = Redirect::to("/ui").into_response();
    let https = over_https(&headers);
    let h = r.headers_mut();
    h.append(
        header::SET_COOKIE,
        super::cookie(&id_token, SESSION_SECS, https),
    );
    h.append(
        header::SET_COOKIE,
        cookie_header(PENDING, "", "/ui/login", "Lax", 0, https),
    );
    Ok(secured(r))
}

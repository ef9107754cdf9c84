//! `berth login`, `berth logout`, `berth whoami` and `berth people`: people sign in with the
//! platform's OpenID Connect provider (authorization code with PKCE, the browser sent back
//! to a listener on 127.0.0.1), and act with the role an admin gave them.

use crate::cli::{Global, PeopleCommand};
use crate::output;
use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use berth_client::credentials::{self, Login};
use berth_core::auth::{LoginInfo, PersonView, Role, WhoAmI};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// How long `berth login` waits for the browser to come back.
const WAIT_FOR_BROWSER: Duration = Duration::from_secs(300);

#[derive(serde::Deserialize)]
struct Discovery {
    authorization_endpoint: String,
}

/// What came back to the listener.
#[derive(Debug, serde::Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn random(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// The claims of a JWT, read without checking it (the platform checks it; the CLI only
/// reads its nonce, identity and expiry).
fn claims(jwt: &str) -> Result<serde_json::Value> {
    let payload = jwt
        .split('.')
        .nth(1)
        .ok_or_else(|| anyhow!("the provider's ID token is not a JWT"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .context("the provider's ID token")?;
    serde_json::from_slice(&bytes).context("the provider's ID token")
}

/// Waits for the provider to send the browser back with a code.
async fn callback(listener: tokio::net::TcpListener) -> Result<Callback> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Callback>(1);
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::get(
            move |axum::extract::Query(cb): axum::extract::Query<Callback>| {
                let tx = tx.clone();
                async move {
                    let page = if cb.error.is_some() {
                        "<!doctype html><title>berth</title><p>Sign-in failed; see the terminal.</p>"
                    } else {
                        "<!doctype html><title>berth</title><p>Signed in to berth. You can close this tab.</p>"
                    };
                    let _ = tx.send(cb).await;
                    axum::response::Html(page)
                }
            },
        ),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let server = {
        let stop = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        })
    };
    let got = tokio::time::timeout(WAIT_FOR_BROWSER, rx.recv()).await;
    stop.cancel();
    let _ = server.await;
    match got {
        Ok(Some(cb)) => Ok(cb),
        _ => bail!(
            "nobody came back from the sign-in page within {} minutes",
            WAIT_FOR_BROWSER.as_secs() / 60
        ),
    }
}

/// `berth login`.
pub async fn login(g: &Global, no_browser: bool, callback_port: Option<u16>) -> Result<i32> {
    let base = crate::client::target(g).api_base()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let info: LoginInfo = http
        .get(format!("{base}/v1/login"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("asking {base} how to sign in"))?
        .json()
        .await?;
    let Some(oidc) = info.oidc else {
        bail!("this platform has no sign-in provider\nhint: its operator starts it with --oidc-issuer and --oidc-client-id; until then use an API token (BERTH_TOKEN)");
    };
    let discovery: Discovery = http
        .get(format!(
            "{}/.well-known/openid-configuration",
            oidc.issuer.trim_end_matches('/')
        ))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("reading the provider's configuration at {}", oidc.issuer))?
        .json()
        .await
        .context("the provider's configuration")?;

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", callback_port.unwrap_or(0)))
        .await
        .context("listening on 127.0.0.1 for the browser to come back")?;
    let redirect = format!(
        "http://127.0.0.1:{}/callback",
        listener.local_addr()?.port()
    );
    let verifier = random(48);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let (state, nonce) = (random(16), random(16));
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &oidc.client_id)
        .append_pair("redirect_uri", &redirect)
        .append_pair("scope", "openid email profile")
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    let sep = if discovery.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!("{}{sep}{query}", discovery.authorization_endpoint);
    eprintln!("Open this address in a browser to sign in:\n\n  {url}\n");
    if !no_browser {
        let _ = std::process::Command::new("xdg-open")
            .arg(&url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    eprintln!("Waiting for the browser to come back…");

    let cb = callback(listener).await?;
    if let Some(e) = cb.error {
        bail!(
            "the provider refused the sign-in: {e}{}",
            cb.error_description
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        );
    }
    if cb.state.as_deref() != Some(state.as_str()) {
        bail!("the sign-in answer does not belong to this login (state mismatch); try again");
    }
    let code = cb
        .code
        .ok_or_else(|| anyhow!("the provider sent the browser back without a code"))?;
    // The platform exchanges the code: it holds the client secret, if there is one.
    let exchange = berth_core::auth::LoginExchange {
        code,
        redirect_uri: redirect,
        code_verifier: verifier,
    };
    let resp = http
        .post(format!("{base}/v1/login/token"))
        .json(&exchange)
        .send()
        .await
        .context("handing the sign-in to the platform")?;
    if !resp.status().is_success() {
        let body: berth_core::api::ErrorBody = resp
            .json()
            .await
            .context("the platform's answer to the sign-in")?;
        bail!(
            "{}{}",
            body.message,
            body.hint
                .map(|h| format!("\nhint: {h}"))
                .unwrap_or_default()
        );
    }
    let berth_core::auth::LoginToken { id_token } = resp
        .json()
        .await
        .context("the platform's answer to the sign-in")?;
    let c = claims(&id_token)?;
    if c["nonce"].as_str() != Some(nonce.as_str()) {
        bail!("the ID token was not made for this login (nonce mismatch); try again");
    }
    // As the platform maps it: the email only when the provider vouches for it.
    let identity = match (c["email"].as_str(), c["email_verified"].as_bool()) {
        (Some(email), Some(true)) if !email.is_empty() => email,
        _ => c["sub"].as_str().unwrap_or("?"),
    }
    .to_string();
    let expires_at = c["exp"].as_i64().unwrap_or(0);
    credentials::save(
        &base,
        Login {
            identity: identity.clone(),
            id_token,
            expires_at,
        },
    )?;
    // What the platform makes of it.
    let client = crate::client::discover(g)?;
    match client.get_json::<WhoAmI>("/v1/whoami").await {
        Ok(me) => {
            if g.json {
                output::json(&me);
            } else {
                println!(
                    "signed in as {} ({}, {})",
                    me.name,
                    me.role.as_str(),
                    me.scope
                );
            }
            Ok(0)
        }
        Err(e) => {
            println!("signed in as {identity}");
            eprintln!("but the platform says: {e:#}");
            Ok(1)
        }
    }
}

/// `berth logout`.
pub async fn logout(g: &Global) -> Result<i32> {
    let base = crate::client::target(g).api_base()?;
    if credentials::forget(&base)? {
        println!("signed out of {base}");
    } else {
        println!("not signed in to {base}");
    }
    Ok(0)
}

/// `berth whoami`.
pub async fn whoami(g: &Global) -> Result<i32> {
    let me: WhoAmI = crate::client::discover(g)?.get_json("/v1/whoami").await?;
    if g.json {
        output::json(&me);
    } else {
        println!(
            "{} ({}, {}, by {})",
            me.name,
            me.role.as_str(),
            me.scope,
            me.via
        );
    }
    Ok(0)
}

/// `berth people …`.
pub async fn people(g: &Global, cmd: PeopleCommand) -> Result<i32> {
    let client = crate::client::discover(g)?;
    match cmd {
        PeopleCommand::Add {
            identity,
            role,
            project,
            tenant,
        } => {
            let role = Role::parse(&role).map_err(|e| anyhow!("--role: {e}"))?;
            berth_core::auth::check_identity(&identity).map_err(|e| anyhow!(e))?;
            let body = serde_json::json!({ "identity": identity, "role": role, "project": project, "tenant": tenant });
            let v: PersonView = client.post_json("/v1/people", &body).await?;
            if g.json {
                output::json(&v);
            } else {
                println!("{} is {} ({})", v.identity, v.role.as_str(), v.scope);
            }
            Ok(0)
        }
        PeopleCommand::List => {
            let list: Vec<PersonView> = client.get_json("/v1/people").await?;
            if g.json {
                output::json(&list);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|p| {
                    vec![
                        p.identity.clone(),
                        p.role.as_str().to_string(),
                        p.scope.clone(),
                        p.created_by.clone(),
                    ]
                })
                .collect();
            output::table(&["IDENTITY", "ROLE", "SCOPE", "GIVEN BY"], &rows);
            Ok(0)
        }
        PeopleCommand::Remove { identity } => {
            let path = format!("/v1/people/{}", berth_client::path_segment(&identity));
            client.delete(&path).await?;
            println!("{identity} has no role any more");
            Ok(0)
        }
    }
}

//! Sign-in with an OpenID Connect provider: the API accepts the ID tokens the platform's
//! provider (`--oidc-issuer`) issues to berth's client (`--oidc-client-id`) as bearer
//! tokens. Each is checked like a relying party must — signature against the provider's
//! published keys (RS/ES/PS algorithms only), issuer, audience, expiry — and names a person
//! by their verified email (else their subject); what they may do is the role an admin
//! gave that identity (`berth people add`). The platform is the provider's client: `berth
//! login` hands it the authorization code (with its PKCE verifier), and the platform
//! exchanges it — with the client secret, when there is one, which never leaves the
//! platform.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Why an ID token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the identity token has expired")]
    Expired,
    #[error("the identity token is not valid: {0}")]
    Invalid(String),
    #[error("the OIDC provider could not be asked: {0}")]
    Provider(String),
}

/// Keys are fetched again at most this often (a token signed with an unknown key).
const REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(30);

/// The provider and what berth knows of it.
pub struct Oidc {
    /// Issuer URL, as tokens name it.
    pub issuer: String,
    /// berth's client id: the audience of the tokens it accepts.
    pub client_id: String,
    secret: Option<String>,
    http: reqwest::Client,
    keys: Mutex<Option<(JwkSet, Instant)>>,
}

#[derive(Deserialize)]
struct Discovery {
    jwks_uri: String,
    token_endpoint: String,
    authorization_endpoint: String,
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<bool>,
}

/// Whether a bearer token looks like a JWT rather than a berth token.
pub fn looks_like_jwt(token: &str) -> bool {
    !token.starts_with(crate::tokens::TOKEN_PREFIX)
        && token.split('.').count() == 3
        && token.starts_with("eyJ")
}

impl Oidc {
    /// The provider at `issuer`, for tokens issued to `client_id`.
    pub fn new(issuer: &str, client_id: &str, secret: Option<String>) -> Result<Self, OidcError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| OidcError::Provider(e.to_string()))?;
        Ok(Self {
            issuer: issuer.trim_end_matches('/').to_string(),
            client_id: client_id.to_string(),
            secret,
            http,
            keys: Mutex::new(None),
        })
    }

    async fn discovery(&self) -> Result<Discovery, OidcError> {
        self.http
            .get(format!("{}/.well-known/openid-configuration", self.issuer))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| OidcError::Provider(format!("discovery: {e}")))?
            .json()
            .await
            .map_err(|e| OidcError::Provider(format!("discovery: {e}")))
    }

    async fn fetch_keys(&self) -> Result<JwkSet, OidcError> {
        let discovery = self.discovery().await?;
        self.http
            .get(&discovery.jwks_uri)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| OidcError::Provider(format!("keys: {e}")))?
            .json()
            .await
            .map_err(|e| OidcError::Provider(format!("keys: {e}")))
    }

    /// The key a token names; the keys are fetched again when it is unknown (the provider
    /// rotated them), at most every few seconds.
    async fn key(&self, kid: Option<&str>) -> Result<DecodingKey, OidcError> {
        let mut cached = self.keys.lock().await;
        let find = |set: &JwkSet| match kid {
            Some(k) => set.find(k).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        if let Some((set, _)) = cached.as_ref() {
            if let Some(jwk) = find(set) {
                return DecodingKey::from_jwk(&jwk).map_err(|e| OidcError::Invalid(e.to_string()));
            }
        }
        let stale = cached
            .as_ref()
            .is_none_or(|(_, at)| at.elapsed() >= REFRESH_AT_MOST_EVERY);
        if stale {
            let set = self.fetch_keys().await?;
            *cached = Some((set, Instant::now()));
        }
        let jwk = cached
            .as_ref()
            .and_then(|(set, _)| find(set))
            .ok_or_else(|| {
                OidcError::Invalid("it is signed with a key the provider does not publish".into())
            })?;
        DecodingKey::from_jwk(&jwk).map_err(|e| OidcError::Invalid(e.to_string()))
    }

    /// Exchanges an authorization code that came back to `redirect_uri` (a loopback address:
    /// only the CLI's own listener) for an ID token, checked before it is handed over.
    pub async fn exchange(
        &self,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<String, OidcError> {
        let loopback = redirect_uri
            .strip_prefix("http://127.0.0.1:")
            .or_else(|| redirect_uri.strip_prefix("http://localhost:"))
            .is_some_and(|rest| {
                rest.split_once('/')
                    .is_some_and(|(port, _)| port.parse::<u16>().is_ok())
            });
        if !loopback {
            return Err(OidcError::Invalid(format!(
                "{redirect_uri:?} is not a loopback address; sign-ins come back to the CLI's own listener"
            )));
        }
        self.exchange_at(code, redirect_uri, verifier).await
    }

    /// Where the provider signs people in (its discovery's `authorization_endpoint`).
    pub async fn authorization_endpoint(&self) -> Result<String, OidcError> {
        Ok(self.discovery().await?.authorization_endpoint)
    }

    /// [`Oidc::exchange`] for a `redirect_uri` the platform chose itself (the dashboard's
    /// own address), which is not checked again.
    pub async fn exchange_at(
        &self,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<String, OidcError> {
        let discovery = self.discovery().await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        let mut req = self.http.post(&discovery.token_endpoint);
        match &self.secret {
            Some(secret) => req = req.basic_auth(&self.client_id, Some(secret)),
            None => form.push(("client_id", &self.client_id)),
        }
        let answer: TokenAnswer = req
            .form(&form)
            .send()
            .await
            .map_err(|e| OidcError::Provider(format!("token: {e}")))?
            .json()
            .await
            .map_err(|e| OidcError::Provider(format!("token: {e}")))?;
        let Some(id_token) = answer.id_token else {
            return Err(OidcError::Invalid(format!(
                "the provider gave no ID token: {}",
                answer
                    .error_description
                    .or(answer.error)
                    .unwrap_or_else(|| "no reason given".into())
            )));
        };
        self.verify(&id_token).await?;
        Ok(id_token)
    }

    /// The identity an ID token vouches for: the verified email, else the subject.
    pub async fn verify(&self, token: &str) -> Result<String, OidcError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| OidcError::Invalid(e.to_string()))?;
        let allowed = [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
            Algorithm::ES256,
            Algorithm::ES384,
        ];
        if !allowed.contains(&header.alg) {
            return Err(OidcError::Invalid(format!(
                "it is signed with {:?}; only public-key signatures are accepted",
                header.alg
            )));
        }
        let key = self.key(header.kid.as_deref()).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => OidcError::Expired,
            _ => OidcError::Invalid(e.to_string()),
        })?;
        let c = data.claims;
        // An email is the identity only when the provider vouches for it: a missing
        // `email_verified` is not a yes (a provider letting anyone type any address would
        // otherwise let them sign in as whoever holds it here).
        Ok(match c.email {
            Some(email) if c.email_verified == Some(true) && !email.is_empty() => email,
            _ => c.sub,
        })
    }
}

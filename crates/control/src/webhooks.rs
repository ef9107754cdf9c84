//! Push webhooks of git hosts, outside the token guard — each delivery proves itself:
//!
//! - `/hooks/github`: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`,
//!   `X-GitHub-Event`, `X-GitHub-Delivery`;
//! - `/hooks/gitea` (Gitea and Forgejo): `X-Gitea-Signature` / `X-Forgejo-Signature` (hex
//!   HMAC-SHA256 of the body), `X-Gitea-Event` / `X-Forgejo-Event`, `X-Gitea-Delivery` /
//!   `X-Forgejo-Delivery`;
//! - `/hooks/gitlab`: `X-Gitlab-Token` (the secret itself), `X-Gitlab-Event`,
//!   `X-Gitlab-Event-UUID`.
//!
//! The repository named in the payload picks the connections; a delivery that verifies with
//! none of their secrets is refused (401) and logged, and so is a delivery id seen before
//! (409). A verified push to a connected branch deploys that commit (202, in the
//! background: hosts give up on slow answers).

use crate::platform::Platform;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;

/// A git host's webhook dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    Gitea,
    GitLab,
}

impl Provider {
    fn name(self) -> &'static str {
        match self {
            Self::GitHub => "github",
            Self::Gitea => "gitea",
            Self::GitLab => "gitlab",
        }
    }

    fn header<'a>(self, headers: &'a HeaderMap, names: &[&str]) -> Option<&'a str> {
        names
            .iter()
            .find_map(|n| headers.get(*n).and_then(|v| v.to_str().ok()))
    }

    fn event(self, headers: &HeaderMap) -> Option<String> {
        let names: &[&str] = match self {
            Self::GitHub => &["x-github-event"],
            Self::Gitea => &["x-gitea-event", "x-forgejo-event", "x-gogs-event"],
            Self::GitLab => &["x-gitlab-event"],
        };
        self.header(headers, names).map(str::to_string)
    }

    fn delivery(self, headers: &HeaderMap) -> Option<String> {
        let names: &[&str] = match self {
            Self::GitHub => &["x-github-delivery"],
            Self::Gitea => &["x-gitea-delivery", "x-forgejo-delivery", "x-gogs-delivery"],
            Self::GitLab => &["x-gitlab-event-uuid", "x-gitlab-webhook-uuid"],
        };
        self.header(headers, names).map(|d| {
            d.chars()
                .filter(|c| c.is_ascii_graphic())
                .take(128)
                .collect()
        })
    }

    fn is_push(self, event: &str) -> bool {
        match self {
            Self::GitHub | Self::Gitea => event == "push",
            Self::GitLab => event == "Push Hook",
        }
    }

    /// Whether the delivery carries proof of `secret`.
    fn verifies(self, headers: &HeaderMap, body: &[u8], secret: &[u8]) -> bool {
        let hmac_hex = |given: &str| {
            let Ok(given) = hex::decode(given.trim()) else {
                return false;
            };
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
                return false;
            };
            mac.update(body);
            mac.verify_slice(&given).is_ok()
        };
        match self {
            Self::GitHub => self
                .header(headers, &["x-hub-signature-256"])
                .and_then(|s| s.strip_prefix("sha256="))
                .is_some_and(hmac_hex),
            Self::Gitea => self
                .header(
                    headers,
                    &[
                        "x-gitea-signature",
                        "x-forgejo-signature",
                        "x-gogs-signature",
                    ],
                )
                .is_some_and(hmac_hex),
            Self::GitLab => self
                .header(headers, &["x-gitlab-token"])
                .is_some_and(|t| constant_time_eq(t.as_bytes(), secret)),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a push payload says: the ref, the new commit and the repository's URLs.
#[derive(Debug, PartialEq, Eq)]
pub struct Push {
    pub git_ref: String,
    pub after: String,
    pub urls: Vec<String>,
}

/// Reads a push payload (GitHub's and Gitea's share a shape; GitLab's names differ).
pub fn parse_push(provider: Provider, body: &[u8]) -> Result<Push, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the payload is not JSON: {e}"))?;
    let text = |p: &str| v.pointer(p).and_then(|x| x.as_str()).map(str::to_string);
    let git_ref = text("/ref").ok_or("the payload has no \"ref\"")?;
    let after = match provider {
        Provider::GitLab => text("/checkout_sha").or_else(|| text("/after")),
        _ => text("/after"),
    }
    .ok_or("the payload has no \"after\" commit")?;
    let fields: &[&str] = match provider {
        Provider::GitLab => &[
            "/project/git_http_url",
            "/project/git_ssh_url",
            "/project/web_url",
            "/repository/git_http_url",
            "/repository/git_ssh_url",
            "/repository/homepage",
        ],
        _ => &[
            "/repository/clone_url",
            "/repository/ssh_url",
            "/repository/git_url",
            "/repository/html_url",
        ],
    };
    let urls: Vec<String> = fields.iter().filter_map(|f| text(f)).collect();
    if urls.is_empty() {
        return Err("the payload names no repository URL".into());
    }
    Ok(Push {
        git_ref,
        after: after.to_ascii_lowercase(),
        urls,
    })
}

/// A repository URL reduced to `host/path` (no scheme, user, port or `.git`), so that the
/// https, ssh and scp-like forms of one repository compare equal.
pub fn repo_key(url: &str) -> Option<String> {
    let u = url.trim().trim_end_matches('/');
    let u = u.strip_suffix(".git").unwrap_or(u);
    let (host, path) = if let Some((_, rest)) = u.split_once("://") {
        let (authority, path) = rest.split_once('/')?;
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = if let Some(v6) = host.strip_prefix('[') {
            v6.split(']').next().unwrap_or(v6)
        } else {
            host.split(':').next().unwrap_or(host)
        };
        (host.to_string(), path.to_string())
    } else {
        let (user_host, path) = u.split_once(':')?;
        let host = user_host.rsplit_once('@').map_or(user_host, |(_, h)| h);
        (host.to_string(), path.to_string())
    };
    let path = path.trim_matches('/').to_ascii_lowercase();
    (!host.is_empty() && !path.is_empty()).then(|| format!("{}/{path}", host.to_ascii_lowercase()))
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

async fn handle(p: Arc<Platform>, provider: Provider, headers: HeaderMap, body: Bytes) -> Response {
    let name = provider.name();
    let Some(event) = provider.event(&headers) else {
        return answer(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"code": "not_a_webhook", "message": format!("no {name} event header: this endpoint takes {name}'s push webhooks")}),
        );
    };
    let connections = match p.git_connections().await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    // The connections this delivery proves itself to.
    let mut verified = Vec::new();
    for conn in connections {
        let Ok(secret) = p.webhook_secret(&conn).await else {
            continue;
        };
        if provider.verifies(&headers, &body, &secret) {
            verified.push(conn);
        }
    }
    let mut verified_sources = Vec::new();
    for src in p.gitops_sources().await.unwrap_or_default() {
        let Ok(secret) = p.gitops_secret(&src).await else {
            continue;
        };
        if provider.verifies(&headers, &body, &secret) {
            verified_sources.push(src);
        }
    }
    if verified.is_empty() && verified_sources.is_empty() {
        tracing::warn!(provider = name, %event, "a webhook delivery was refused: its signature verifies with no connection's secret (forged, or the secret is wrong)");
        return answer(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"code": "bad_signature", "message": "the delivery's signature does not verify", "hint": "set the webhook's secret to the one `berth git connect` printed"}),
        );
    }
    // Replays are known by what the signature covers — the body — and by the delivery id
    // the host sends (unsigned: changing or dropping it alone does not make a replay new).
    let digest = hex::encode(<Sha256 as sha2::Digest>::digest(&body));
    let mut seen = vec![(
        format!("{name}:body:{digest}"),
        format!("body sha256:{digest}"),
    )];
    if let Some(id) = provider.delivery(&headers) {
        seen.push((format!("{name}:{id}"), format!("delivery {id}")));
    }
    for (key, what) in seen {
        let fresh = sqlx::query(
            "INSERT OR IGNORE INTO webhook_deliveries (id, provider, received_at) VALUES (?, ?, ?)",
        )
        .bind(key)
        .bind(name)
        .bind(crate::now_secs())
        .execute(&p.store.pool)
        .await
        .map(|r| r.rows_affected() == 1);
        match fresh {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(provider = name, delivery = %what, "a webhook delivery was replayed; it triggers nothing");
                return answer(
                    StatusCode::CONFLICT,
                    serde_json::json!({"code": "replayed", "message": format!("{what} was already handled")}),
                );
            }
            Err(e) => return crate::ApiError::from(e).into_response(),
        }
    }
    if !provider.is_push(&event) {
        return answer(
            StatusCode::ACCEPTED,
            serde_json::json!({"ignored": format!("{event} events deploy nothing (only pushes do)")}),
        );
    }
    let push = match parse_push(provider, &body) {
        Ok(push) => push,
        Err(why) => {
            return answer(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"code": "bad_payload", "message": why}),
            )
        }
    };
    let keys: Vec<String> = push.urls.iter().filter_map(|u| repo_key(u)).collect();
    let valid_sha = push.after.len() == 40 && push.after.chars().all(|c| c.is_ascii_hexdigit());
    let mut deploying = Vec::new();
    for conn in verified {
        let same_repo = repo_key(&conn.url).is_some_and(|k| keys.contains(&k));
        let branch = format!("refs/heads/{}", conn.branch);
        if same_repo && push.git_ref == branch && valid_sha && push.after != "0".repeat(40) {
            tracing::info!(app = %conn.app, provider = name, commit = %push.after, "a push webhook: deploying");
            p.trigger_commit(conn.app.clone(), push.after.clone(), name);
            deploying.push(conn.app);
        }
    }
    let mut applying = Vec::new();
    for src in verified_sources {
        let same_repo = repo_key(&src.url).is_some_and(|k| keys.contains(&k));
        let branch = format!("refs/heads/{}", src.branch);
        if same_repo && push.git_ref == branch && valid_sha && push.after != "0".repeat(40) {
            tracing::info!(source = %src.name, provider = name, commit = %push.after, "a push webhook: applying the platform definition");
            p.trigger_sync(src.name.clone(), push.after.clone(), name);
            applying.push(src.name);
        }
    }
    if !applying.is_empty() {
        return answer(
            StatusCode::ACCEPTED,
            serde_json::json!({"deploying": deploying, "applying": applying, "commit": push.after}),
        );
    }
    if deploying.is_empty() {
        return answer(
            StatusCode::ACCEPTED,
            serde_json::json!({"ignored": format!("{} of that repository is not a connected branch", push.git_ref)}),
        );
    }
    answer(
        StatusCode::ACCEPTED,
        serde_json::json!({"deploying": deploying, "commit": push.after}),
    )
}

/// `POST /hooks/github`.
pub async fn github(State(p): State<Arc<Platform>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(p, Provider::GitHub, headers, body).await
}

/// `POST /hooks/gitea` (Gitea, Forgejo).
pub async fn gitea(State(p): State<Arc<Platform>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(p, Provider::Gitea, headers, body).await
}

/// `POST /hooks/gitlab`.
pub async fn gitlab(State(p): State<Arc<Platform>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(p, Provider::GitLab, headers, body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_repository_in_its_many_spellings_is_one_key() {
        let key = Some("github.com/octo/shop".to_string());
        for url in [
            "https://github.com/octo/shop.git",
            "https://github.com/Octo/Shop",
            "git@github.com:octo/shop.git",
            "ssh://git@github.com:22/octo/shop.git",
            "git://github.com/octo/shop.git",
            "https://user:pw@github.com/octo/shop/",
        ] {
            assert_eq!(repo_key(url), key, "{url}");
        }
        assert_ne!(repo_key("https://github.com/octo/shop-admin"), key);
        assert_ne!(repo_key("https://gitlab.com/octo/shop"), key);
        assert_eq!(repo_key("nonsense"), None);
    }

    #[test]
    fn signatures_verify_only_with_the_secret() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        let sig = hex::encode(mac.finalize().into_bytes());
        let mut h = HeaderMap::new();
        h.insert(
            "x-hub-signature-256",
            format!("sha256={sig}").parse().unwrap(),
        );
        assert!(Provider::GitHub.verifies(&h, body, b"s3cret"));
        assert!(!Provider::GitHub.verifies(&h, body, b"other"));
        assert!(!Provider::GitHub.verifies(&h, b"{}", b"s3cret"));
        let mut h = HeaderMap::new();
        h.insert("x-forgejo-signature", sig.parse().unwrap());
        assert!(Provider::Gitea.verifies(&h, body, b"s3cret"));
        let mut h = HeaderMap::new();
        h.insert("x-gitlab-token", "s3cret".parse().unwrap());
        assert!(Provider::GitLab.verifies(&h, body, b"s3cret"));
        assert!(!Provider::GitLab.verifies(&h, body, b"s3cret2"));
        assert!(!Provider::GitHub.verifies(&HeaderMap::new(), body, b"s3cret"));
    }

    #[test]
    fn push_payloads_are_read_per_provider() {
        let gh = br#"{"ref":"refs/heads/main","before":"0000000000000000000000000000000000000000","after":"6113728F27AE82C7B1A177C8D03F9E96E0ADF246","repository":{"clone_url":"https://github.com/octo/shop.git","ssh_url":"git@github.com:octo/shop.git"}}"#;
        let p = parse_push(Provider::GitHub, gh).unwrap();
        assert_eq!(p.git_ref, "refs/heads/main");
        assert_eq!(p.after, "6113728f27ae82c7b1a177c8d03f9e96e0adf246");
        assert_eq!(p.urls.len(), 2);
        let gl = br#"{"object_kind":"push","ref":"refs/heads/main","after":"da1560886d4f094c3e6c9ef40349f7d38b5d27d7","checkout_sha":"da1560886d4f094c3e6c9ef40349f7d38b5d27d7","project":{"git_http_url":"http://example.com/mike/diaspora.git","git_ssh_url":"git@example.com:mike/diaspora.git"}}"#;
        let p = parse_push(Provider::GitLab, gl).unwrap();
        assert_eq!(p.urls[0], "http://example.com/mike/diaspora.git");
        assert!(parse_push(Provider::GitHub, b"not json").is_err());
        assert!(parse_push(Provider::GitHub, br#"{"ref":"x","after":"y"}"#)
            .unwrap_err()
            .contains("no repository"));
    }
}

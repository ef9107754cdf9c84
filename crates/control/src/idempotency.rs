//! `Idempotency-Key` for every change: a retry of a request (same key, same token, same
//! method, path and body) gets the first answer again instead of doing the work twice — a
//! second deploy never happens — and the same key with another request is refused (409).
//! A retry that arrives while the first attempt still runs waits for it. Workflow answers
//! (NDJSON event streams) are read to their end by the platform whether or not the client
//! stays, so a client that lost its connection mid-deploy can retry and get the result.
//! Creating an app keeps its own handling (`create.rs`: secret values never hashed).

use crate::error::ApiError;
use crate::platform::Platform;
use crate::tokens::Principal;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The header clients send.
pub const KEY_HEADER: &str = "idempotency-key";
/// The header on an answer given again.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Longest key.
pub const MAX_KEY: usize = 255;
/// How long answers are kept for retries (a day, as payment APIs do); a key older than that
/// is new again.
pub const KEEP_SECS: i64 = 86_400;

/// Keys whose first attempt is running.
#[derive(Debug, Default)]
pub struct InFlight(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl InFlight {
    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, m| Arc::strong_count(m) > 1);
        map.entry(key.to_string()).or_default().clone()
    }
}

fn bad_key() -> Response {
    ApiError::invalid(
        "invalid_idempotency_key",
        format!("Idempotency-Key must be 1 to {MAX_KEY} printable ASCII characters"),
    )
    .into_response()
}

/// A keyed hash of what was asked (keyed, so that secret values in a body cannot be
/// guessed from it).
fn request_hash(key: &[u8], method: &str, uri: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(method.as_bytes());
    mac.update(b"\n");
    mac.update(uri.as_bytes());
    mac.update(b"\n");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn replay(kept: crate::store::KeptAnswer) -> Response {
    let mut resp = Response::new(Body::from(kept.response));
    *resp.status_mut() = StatusCode::from_u16(kept.status).unwrap_or(StatusCode::OK);
    if let Some(ct) = kept
        .content_type
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    if let Some(to) = kept.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(header::LOCATION, to);
    }
    resp.headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    resp
}

/// The layer, inside the guard (so the caller is known).
pub async fn idempotent(State(p): State<Arc<Platform>>, req: Request, next: Next) -> Response {
    let mutating = !matches!(req.method().as_str(), "GET" | "HEAD" | "OPTIONS");
    let create = req.method() == "POST" && req.uri().path() == "/v1/apps";
    let Some(raw) = req.headers().get(KEY_HEADER).cloned() else {
        return next.run(req).await;
    };
    if !mutating || create || req.uri().path().starts_with("/mcp") {
        return next.run(req).await;
    }
    let Some(key) = raw
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY && k.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
    else {
        return bad_key();
    };
    let who = req
        .extensions()
        .get::<Principal>()
        .map_or_else(|| "-".to_string(), |w| w.token_id.clone());
    let stored_key = format!("{who}:{key}");
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, p.cfg.upload_limit as usize).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::invalid("body_too_large", format!("reading the request: {e}"))
                .into_response()
        }
    };
    let uri = parts.uri.to_string();
    let hash = request_hash(p.token.as_bytes(), parts.method.as_str(), &uri, &body);
    // One attempt per key at a time: a retry waits for the first to finish, then replays.
    let lock = p.in_flight.lock_for(&stored_key);
    let guard = lock.clone().lock_owned().await;
    match p.store.idempotent_answer(&stored_key).await {
        Ok(Some(kept)) => {
            if kept.request_hash != hash {
                return ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_key_reused",
                    format!("Idempotency-Key {key:?} was used for a different request"),
                )
                .hint("use a new key for a new request")
                .into_response();
            }
            return replay(kept);
        }
        Ok(None) => {}
        Err(e) => return ApiError::from(e).into_response(),
    }
    let resp = next.run(Request::from_parts(parts, Body::from(body))).await;
    let status = resp.status().as_u16();
    // Transient failures are not kept: a retry should try again.
    if status >= 500 || status == 429 {
        return resp;
    }
    let header_of = |name: header::HeaderName| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (content_type, location) = (header_of(header::CONTENT_TYPE), header_of(header::LOCATION));
    let (parts, mut body) = resp.into_parts();
    // The answer is read to its end here, whether or not the client stays, and kept.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Bytes, std::io::Error>>();
    let platform = p.clone();
    p.tasks.spawn(async move {
        let _held = guard;
        let mut kept: Vec<u8> = Vec::new();
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    kept.extend_from_slice(&bytes);
                    let _ = tx.send(Ok(bytes));
                }
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string())));
                    return;
                }
            }
        }
        let text = String::from_utf8_lossy(&kept).to_string();
        if let Err(e) = platform
            .store
            .keep_idempotent_answer(
                &stored_key,
                &crate::store::KeptAnswer {
                    request_hash: hash,
                    status,
                    content_type,
                    location,
                    response: text,
                },
                crate::now_secs(),
            )
            .await
        {
            tracing::error!(error = %e, "keeping an idempotent answer failed");
        }
    });
    body = Body::from_stream(tokio_stream_from(rx));
    Response::from_parts(parts, body)
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_depends_on_everything_asked_and_on_the_key() {
        let a = request_hash(b"k", "POST", "/v1/apps/a/env", b"{\"set\":{\"A\":\"1\"}}");
        assert_eq!(
            a,
            request_hash(b"k", "POST", "/v1/apps/a/env", b"{\"set\":{\"A\":\"1\"}}")
        );
        assert_ne!(
            a,
            request_hash(b"k", "POST", "/v1/apps/a/env", b"{\"set\":{\"A\":\"2\"}}")
        );
        assert_ne!(
            a,
            request_hash(b"k", "POST", "/v1/apps/b/env", b"{\"set\":{\"A\":\"1\"}}")
        );
        assert_ne!(
            a,
            request_hash(
                b"other",
                "POST",
                "/v1/apps/a/env",
                b"{\"set\":{\"A\":\"1\"}}"
            )
        );
    }
}

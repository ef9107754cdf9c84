//! Connections to app instances: a small pool of HTTP/1.1 connections per upstream address,
//! built directly on hyper's connection API. A connection goes back to the pool only when the
//! response body has been read to its end, so a pooled connection is always ready for the
//! next request.

use crate::pages::EdgeBody;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// Most idle connections kept per upstream.
const MAX_IDLE: usize = 256;
/// Longest wait for a TCP connection to an instance.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request to an upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made: the request was not sent, so it can go elsewhere.
    #[error("connect to upstream failed: {0}")]
    Connect(String),
    /// The connection failed while the request was under way.
    #[error("upstream request failed: {0}")]
    Request(#[from] hyper::Error),
}

/// Idle connections by upstream address.
#[derive(Default)]
pub struct UpstreamPool {
    idle: Mutex<HashMap<SocketAddr, Vec<SendRequest<EdgeBody>>>>,
    returns: AtomicUsize,
}

impl UpstreamPool {
    fn take_idle(&self, addr: SocketAddr) -> Option<SendRequest<EdgeBody>> {
        self.idle.lock().ok()?.get_mut(&addr)?.pop()
    }

    fn give_back(&self, addr: SocketAddr, sender: SendRequest<EdgeBody>) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            // Now and then, forget connections whose instance went away.
            if self
                .returns
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(4096)
            {
                idle.retain(|_, list| {
                    list.retain(|s| !s.is_closed());
                    !list.is_empty()
                });
            }
            let list = idle.entry(addr).or_default();
            if list.len() < MAX_IDLE {
                list.push(sender);
            }
        }
    }

    async fn connect(addr: SocketAddr) -> Result<SendRequest<EdgeBody>, UpstreamError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| UpstreamError::Connect("timed out".into()))?
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }

    /// Sends `req` to `addr` on a pooled connection (or a new one when `fresh` is set or
    /// none is idle). Returns whether a pooled connection was used, so callers know a failure
    /// may be the pool's fault rather than the upstream's.
    pub async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        req: Request<EdgeBody>,
        fresh: bool,
    ) -> Result<(Response<PooledBody>, bool), (UpstreamError, bool)> {
        let mut reused = None;
        if !fresh {
            while let Some(mut s) = self.take_idle(addr) {
                if s.is_closed() {
                    continue;
                }
                if s.ready().await.is_ok() {
                    reused = Some(s);
                    break;
                }
            }
        }
        let was_reused = reused.is_some();
        let mut sender = match reused {
            Some(s) => s,
            None => Self::connect(addr).await.map_err(|e| (e, false))?,
        };
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| (UpstreamError::Request(e), was_reused))?;
        let upgrade = resp.status() == hyper::StatusCode::SWITCHING_PROTOCOLS;
        // Both framings at once: where this response ends is a guess, so nothing after it
        // on that connection is trusted (it is not pooled).
        let ambiguous = resp
            .headers()
            .contains_key(hyper::header::TRANSFER_ENCODING)
            && resp.headers().contains_key(hyper::header::CONTENT_LENGTH);
        let (parts, body) = resp.into_parts();
        let mut body = PooledBody {
            inner: body,
            give_back: (!upgrade && !ambiguous).then(|| (sender, addr, self.clone())),
        };
        if body.inner.is_end_stream() {
            body.finish();
        }
        Ok((Response::from_parts(parts, body), was_reused))
    }
}

/// A response body that returns its connection to the pool once read to the end.
pub struct PooledBody {
    inner: Incoming,
    give_back: Option<(SendRequest<EdgeBody>, SocketAddr, Arc<UpstreamPool>)>,
}

impl PooledBody {
    fn finish(&mut self) {
        if let Some((sender, addr, pool)) = self.give_back.take() {
            pool.give_back(addr, sender);
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Dropped after the whole body was read: the connection is reusable. Dropped midway:
        // it is not, and closes with the sender.
        if self.inner.is_end_stream() {
            self.finish();
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let res = Pin::new(&mut self.inner).poll_frame(cx);
        match &res {
            Poll::Ready(None) => self.finish(),
            Poll::Ready(Some(Err(_))) => self.give_back = None,
            // Servers stop polling once a sized body reports its end, so look for it here.
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.finish(),
            _ => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

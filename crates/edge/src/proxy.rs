//! The reverse proxy: routes each request by `Host` to one of the app's instances.

use crate::pages::{self, EdgeBody};
use crate::policy::{self, TrustedProxies};
use crate::routes::{InFlight, SharedTable};
use crate::upstream::{PooledBody, UpstreamError, UpstreamPool};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Where ACME HTTP-01 challenges are asked for (RFC 8555 §8.3).
pub(crate) const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// How a request reached the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// Over TLS.
    Https,
}

/// The proxy: the live route table and a pooled upstream client.
#[derive(Clone)]
pub struct Proxy {
    pub(crate) table: SharedTable,
    pool: Arc<UpstreamPool>,
    /// The lean path's connections to instances ([`crate::fast`]).
    pub(crate) raw: Arc<crate::fast::RawPool>,
    pub(crate) https_port: Option<u16>,
    /// Where plain HTTP is served (for `X-Forwarded-Port`).
    pub(crate) http_port: u16,
    /// Peers whose forwarding headers are kept and extended.
    pub(crate) trusted: Arc<TrustedProxies>,
    pub(crate) access: Option<crate::access::WorkerLog>,
    wake_dir: Option<std::path::PathBuf>,
}

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too, except those the message's routing,
    // framing and forwarding depend on (`Connection: close, Host` keeps the Host).
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .filter(|n| policy::connection_may_remove(n.as_str().as_bytes()))
        .collect();
    for n in named {
        headers.remove(n);
    }
    for h in policy::HOP_BY_HOP {
        headers.remove(*h);
    }
}

/// Why a request has no usable host (both answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum HostRefused {
    /// Neither a Host header nor an authority in the target.
    #[error("the request names no host")]
    Missing,
    /// Two Host headers, one that is not `name[:port]`, or one the target contradicts.
    #[error("the request's host is repeated, malformed or contradicted")]
    Invalid,
}

/// The request's host: its one valid `Host` header, or (HTTP/2, absolute form) its URI's
/// authority; both must agree when both are there.
fn request_host(req: &Request<Incoming>) -> Result<String, HostRefused> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(HostRefused::Invalid);
    }
    let authority = req.uri().authority().map(|a| a.as_str());
    let host = match (header, authority) {
        (Some(h), Some(a)) if !h.as_bytes().eq_ignore_ascii_case(a.as_bytes()) => {
            return Err(HostRefused::Invalid)
        }
        (Some(h), _) => h.as_bytes(),
        (None, Some(a)) => a.as_bytes(),
        (None, None) => return Err(HostRefused::Missing),
    };
    if !policy::valid_host(host) {
        return Err(HostRefused::Invalid);
    }
    // Valid hosts are ASCII.
    Ok(String::from_utf8_lossy(host).into_owned())
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// A request whose body is known to be empty can be resent to another instance when the
/// first one refuses the connection.
fn has_no_body(req: &Request<Incoming>) -> bool {
    let len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    !req.headers().contains_key(header::TRANSFER_ENCODING)
        && len.unwrap_or(0) == 0
        && matches!(
            *req.method(),
            Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE
        )
}

/// Longest a request waits for a sleeping app to wake.
pub const WAKE_LIMIT: Duration = Duration::from_secs(60);

/// Largest request body the edge passes on to an app.
pub const MAX_BODY_BYTES: u64 = 100 << 20;

/// Pauses between the tries of [`Proxy::settle`], and the most it waits in all.
pub(crate) const SETTLE_PAUSES_MS: [u64; 5] = [50, 100, 200, 400, 800];
pub(crate) const SETTLE_LIMIT: Duration = Duration::from_secs(2);

/// The request sent to an instance.
fn outgoing(method: &Method, uri: &Uri, headers: &HeaderMap, body: EdgeBody) -> Request<EdgeBody> {
    let mut out = Request::new(body);
    *out.method_mut() = method.clone();
    *out.uri_mut() = uri.clone();
    *out.version_mut() = Version::HTTP_11;
    *out.headers_mut() = headers.clone();
    out
}

impl Proxy {
    /// A proxy over `table`; `https_port` is where HTTPS is served (for redirects).
    pub fn new(table: SharedTable, https_port: Option<u16>) -> Self {
        Self {
            table,
            pool: Arc::new(UpstreamPool::default()),
            raw: Arc::default(),
            https_port,
            http_port: 80,
            trusted: Arc::default(),
            access: None,
            wake_dir: None,
        }
    }

    /// Serves plain HTTP on `port` (what `X-Forwarded-Port` says of such requests).
    pub fn with_http_port(mut self, port: u16) -> Self {
        self.http_port = port;
        self
    }

    /// Keeps and extends the forwarding headers of requests from `trusted` peers.
    pub fn with_trusted_proxies(mut self, trusted: Arc<TrustedProxies>) -> Self {
        self.trusted = trusted;
        self
    }

    /// The edge's port for requests that came in over `scheme`.
    pub(crate) fn port(&self, scheme: Scheme) -> u16 {
        match scheme {
            Scheme::Http => self.http_port,
            Scheme::Https => self.https_port.unwrap_or(443),
        }
    }

    /// Wakes sleeping apps by writing their name in `dir` (the control plane starts them).
    pub fn with_wake_dir(mut self, dir: Option<std::path::PathBuf>) -> Self {
        self.wake_dir = dir;
        self
    }

    /// A sleeping app: asks the control plane to wake it, and waits (at most
    /// [`WAKE_LIMIT`]) for its route to have instances.
    async fn wake(&self, host: &str, app: &str) -> Option<Arc<crate::routes::LiveRoute>> {
        let dir = self.wake_dir.as_ref()?;
        let _ = std::fs::create_dir_all(dir);
        let _ = std::fs::write(dir.join(app), b"");
        crate::nudge::send(&crate::nudge::wake_socket(dir));
        let started = std::time::Instant::now();
        while started.elapsed() < WAKE_LIMIT {
            // Listening for the next table before looking at this one: no change is missed.
            let changed = crate::routes::table_changed().notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let route = self.table.load().lookup(host)?;
            if !route.stable.is_empty() {
                return Some(route);
            }
            if !route.route.sleeping {
                return None;
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        None
    }

    /// Also writes an access log.
    pub fn with_access_log(mut self, access: Option<crate::access::WorkerLog>) -> Self {
        self.access = access;
        self
    }

    /// Proxies one request from `remote` that came in over `scheme`.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        remote: SocketAddr,
        scheme: Scheme,
    ) -> Response<EdgeBody> {
        let host = match request_host(&req) {
            Ok(host) => host,
            Err(HostRefused::Missing) => return pages::bad_request(),
            Err(HostRefused::Invalid) => return pages::bad_host(),
        };
        let table = self.table.load();
        if scheme == Scheme::Http {
            if let Some(token) = req.uri().path().strip_prefix(ACME_CHALLENGE_PREFIX) {
                return match table.acme_answer(token) {
                    Some(answer) => pages::text(answer),
                    None => pages::not_found(&host),
                };
            }
        }
        let Some(mut route) = table.lookup(&host) else {
            return pages::not_found(&host);
        };
        drop(table);
        if route.route.sleeping && route.stable.is_empty() {
            // Held, not failed: the app starts for this request.
            match self.wake(&host, &route.route.app.clone()).await {
                Some(awake) => route = awake,
                None => return pages::unavailable(),
            }
        }
        let started = std::time::Instant::now();
        // Cheap clones (standard methods are constants, a URI shares its bytes).
        let request_line = self
            .access
            .as_ref()
            .map(|_| (req.method().clone(), req.uri().clone()));
        let group = route.choose(remote.ip());
        let resp = self
            .forward(req, &route, group, &host, remote, scheme)
            .await;
        let elapsed = started.elapsed();
        group.series.record(resp.status().as_u16(), elapsed);
        if let (Some(log), Some((method, path))) = (&self.access, request_line) {
            log.record(
                &route.route.app,
                group.release,
                method.as_str(),
                path.path_and_query().map_or("/", |p| p.as_str()),
                resp.status().as_u16(),
                elapsed,
                remote.ip(),
            );
        }
        resp
    }

    /// Answers a request for a known route: a redirect, or the instances' response.
    async fn forward(
        &self,
        mut req: Request<Incoming>,
        route: &crate::routes::LiveRoute,
        group: &crate::routes::Group,
        host: &str,
        remote: SocketAddr,
        scheme: Scheme,
    ) -> Response<EdgeBody> {
        if scheme == Scheme::Http && route.route.https_redirect {
            if let Some(port) = self.https_port {
                let name = crate::routes::strip_port(host);
                let authority = if port == 443 {
                    name.to_string()
                } else {
                    format!("{name}:{port}")
                };
                let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
                return pages::redirect(&format!("https://{authority}{path}"));
            }
        }
        if group.is_empty() {
            return pages::unavailable();
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
            return pages::too_large(MAX_BODY_BYTES);
        }

        let upgrade = is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let retryable = has_no_body(&req);
        // The path as it came (its bytes shared, not parsed again).
        let uri = Uri::from(
            req.uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        let (parts, body) = req.into_parts();
        let method = parts.method;
        let mut headers = parts.headers;
        // HTTP/2 carries the host in the URI; instances speak HTTP/1.1 and need the header.
        let host_value = match headers.get(header::HOST) {
            Some(v) => Some(v.clone()),
            None => HeaderValue::from_str(host).ok().inspect(|v| {
                headers.insert(header::HOST, v.clone());
            }),
        };
        let upgrade_value = headers.get(header::UPGRADE).cloned();
        remove_hop_by_hop(&mut headers);
        if let Some(u) = upgrade_value.filter(|_| upgrade) {
            headers.insert(header::UPGRADE, u);
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        self.write_forwarding(&mut headers, host_value.as_ref(), remote, scheme);

        // A body of unknown length is cut off at the limit (the app sees an aborted upload).
        let mut body = Some(http_body_util::Limited::new(body, MAX_BODY_BYTES as usize).boxed());
        let mut last_failed = false;
        // Whether every failure so far left the request unsent (no connection, or one hyper
        // closed before writing it): only then may another instance get it. A request an
        // instance may have seen (and perhaps crashed on) is not handed to the next one —
        // one bad request must not take every instance down.
        let mut never_sent = true;
        // Instances in the order to try: fewest requests under way first, ejected last.
        'instances: for (upstream, state) in group.pick() {
            let mut fresh = upgrade;
            loop {
                let this_body = if retryable {
                    Empty::<Bytes>::new().map_err(|e| match e {}).boxed()
                } else {
                    match body.take() {
                        Some(b) => b,
                        None => break 'instances,
                    }
                };
                let out = outgoing(&method, &uri, &headers, this_body);
                let under_way = state.begin();
                match self.pool.send(upstream, out, fresh).await {
                    Ok((resp, _)) => {
                        if matches!(resp.status().as_u16(), 502..=504) {
                            state.failed();
                        } else {
                            state.succeeded();
                        }
                        return self.respond(resp, client_upgrade, Some(under_way)).await;
                    }
                    Err((e, reused)) => {
                        tracing::debug!(app = %route.route.app, %upstream, error = %e, "upstream failed");
                        last_failed = true;
                        let unsent = match &e {
                            UpstreamError::Connect(_) => true,
                            UpstreamError::Request(e) => e.is_canceled(),
                        };
                        // A pooled connection that died under us is the pool's doing, not
                        // the instance's.
                        if !reused || unsent {
                            state.failed();
                        }
                        if !retryable {
                            break 'instances;
                        }
                        if unsent && never_sent {
                            continue 'instances;
                        }
                        never_sent = false;
                        if reused && !fresh {
                            // Perhaps only a kept-alive connection the instance had just
                            // closed: once more, on a new connection to the same instance.
                            fresh = true;
                            continue;
                        }
                        break 'instances;
                    }
                }
            }
        }
        if last_failed && retryable && !upgrade {
            // Once an instance may have seen it, only another release (the app was
            // replaced, not merely restarted) may get it again.
            let seen_by = (!never_sent).then_some(group.release);
            if let Some(resp) = self.settle(host, &method, &uri, &headers, seen_by).await {
                return self.respond(resp, None, None).await;
            }
        }
        if last_failed {
            pages::bad_gateway()
        } else {
            pages::unavailable()
        }
    }

    /// Replaces the client's forwarding headers with the edge's (a trusted proxy's are kept
    /// and extended), by the rules of [`policy::Forwarding`].
    fn write_forwarding(
        &self,
        headers: &mut HeaderMap,
        host: Option<&HeaderValue>,
        remote: SocketAddr,
        scheme: Scheme,
    ) {
        let forwarding = policy::Forwarding {
            peer: remote.ip(),
            trusted: self.trusted.contains(remote.ip()),
            host: host.map_or(&b""[..], |h| h.as_bytes()),
            scheme,
            port: self.port(scheme),
        };
        let mut values = Vec::with_capacity(policy::FORWARDING.len());
        for field in 0..policy::FORWARDING.len() {
            let prior = headers
                .iter()
                .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
            let mut value = Vec::new();
            forwarding.value(field, prior, &mut value);
            values.push(value);
        }
        for (name, value) in policy::FORWARDING.iter().zip(values) {
            headers.remove(*name);
            if let Ok(v) = HeaderValue::from_bytes(&value) {
                headers.insert(*name, v);
            }
        }
    }

    /// Every instance failed a body-less request: the app may be between two instances (a
    /// restart, a replaced release, a platform recovering its routes). Asks the route
    /// table again a few times over a moment, so that such a gap costs the client a short
    /// wait, not a 502. A request instances of release `seen_by` may have seen (and perhaps
    /// crashed on) goes only to another release's.
    async fn settle(
        &self,
        host: &str,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        seen_by: Option<u32>,
    ) -> Option<Response<PooledBody>> {
        let started = std::time::Instant::now();
        for pause in SETTLE_PAUSES_MS {
            if started.elapsed() >= SETTLE_LIMIT {
                break;
            }
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let route = self.table.load().lookup(host)?;
            if seen_by == Some(route.route.release) {
                continue;
            }
            for (upstream, _) in route.pick() {
                let empty = Empty::<Bytes>::new().map_err(|e| match e {}).boxed();
                let out = outgoing(method, uri, headers, empty);
                match self.pool.send(upstream, out, true).await {
                    Ok((resp, _)) => return Some(resp),
                    Err((UpstreamError::Connect(_), _)) => {}
                    // It reached an instance this time: not to be sent again.
                    Err(_) => return None,
                }
            }
        }
        None
    }

    /// The instance's response as the client's; `under_way` counts it as an outstanding
    /// request of its instance until its body has gone (or the tunnel closed).
    async fn respond(
        &self,
        mut resp: Response<PooledBody>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        under_way: Option<InFlight>,
    ) -> Response<EdgeBody> {
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                return pages::bad_gateway();
            };
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                if let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await) {
                    let mut client = TokioIo::new(client);
                    let mut upstream = TokioIo::new(upstream);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
                drop(under_way);
            });
            let (parts, _) = resp.into_parts();
            return Response::from_parts(parts, Empty::new().map_err(|e| match e {}).boxed());
        }
        let (mut parts, body) = resp.into_parts();
        // Both framings at once (RFC 9112 §6.3: the chunks win): the length goes, and the
        // client's connection ends with this response, as the lean path's does.
        let ambiguous = parts.headers.contains_key(header::TRANSFER_ENCODING)
            && parts.headers.contains_key(header::CONTENT_LENGTH);
        remove_hop_by_hop(&mut parts.headers);
        if ambiguous {
            parts.headers.remove(header::CONTENT_LENGTH);
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        Response::from_parts(
            parts,
            Holding {
                inner: body,
                _under_way: under_way,
            }
            .map_err(crate::pages::BoxError::from)
            .boxed(),
        )
    }
}

/// A response body that keeps its request counted as under way until it is done.
struct Holding {
    inner: PooledBody,
    _under_way: Option<InFlight>,
}

impl hyper::body::Body for Holding {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get("x-keep").is_some());
    }

    #[test]
    fn connection_cannot_strip_host_framing_or_forwarding_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("close, Host, Content-Length, X-Forwarded-For, x-other"),
        );
        h.insert("host", HeaderValue::from_static("a.test"));
        h.insert("content-length", HeaderValue::from_static("0"));
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.insert("x-other", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert!(h.get("host").is_some());
        assert!(h.get("content-length").is_some());
        assert!(h.get("x-forwarded-for").is_some());
        assert!(h.get("x-other").is_none());
        assert!(h.get("connection").is_none());
    }

    #[test]
    fn detects_upgrades() {
        let mut h = HeaderMap::new();
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(is_upgrade(&h));
        h.remove("upgrade");
        assert!(!is_upgrade(&h));
    }
}

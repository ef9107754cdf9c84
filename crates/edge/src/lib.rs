//! berth's edge: the one stable entry point for HTTP traffic.
//!
//! - [`routes`]: the route table (host name → upstream instances) as an immutable snapshot,
//!   swapped atomically so a request never sees a half-updated table; persisted to a file the
//!   control plane writes, so the edge keeps serving the last known routes while the control
//!   plane is down or restarting.
//! - [`proxy`]: the hyper-based reverse proxy (HTTP/1.1 keep-alive, pooled upstream
//!   connections, WebSocket upgrades, `X-Forwarded-*`), with error pages in [`pages`].
//! - [`policy`]: the request hygiene both of them apply (valid `Host`, hop-by-hop and
//!   forwarding headers, strict `Content-Length`, trusted proxies).
//! - [`fast`]: the lean path for HTTP/1.1 requests without a body, plain or over TLS
//!   (parsed once, forwarded as bytes, the response relayed on the connection's own task;
//!   chunked bodies followed by [`chunked`]); anything else goes to [`proxy`].
//! - [`server`]: the edge process: workers, route file watcher, graceful shutdown; its
//!   listening sockets, one per worker, in [`listen`]; a worker serving kept-alive
//!   connections kept on its own core by [`pinning`].
//! - [`static_files`]: berth's static file server, which static-site apps run.
//! - [`tls`]: HTTPS termination (rustls, SNI, ALPN h2/http1.1) over the certificate snapshot
//!   in [`certs`]; certificates come from berth's [`local_ca`] or an ACME directory
//!   ([`acme`]), both driven by the control plane, never in the request path.
#![deny(unsafe_code)]

pub mod access;
pub mod acme;
pub mod certs;
pub mod chunked;
pub mod coarse_timer;
pub mod dns_update;
pub mod fast;
pub mod handover;
pub mod listen;
pub mod local_ca;
pub mod metrics;
pub mod nudge;
pub mod pages;
pub mod pinning;
pub mod policy;
pub mod probe;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod splice;
pub mod static_files;
pub mod tls;
pub mod upstream;
pub mod uring;

/// Errors of the edge.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("cannot listen on {addr}: {source}; is another berth or web server using that port? choose other ports with --edge-port and --edge-tls-port")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("route snapshot {path}: {message}")]
    Routes { path: String, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

//! The edge process: accepts connections, serves them through the [`Proxy`], and follows
//! the route snapshot file the control plane writes.

use crate::certs::CertSnapshot;
use crate::handover::{self, Successor};
use crate::listen::Listeners;
use crate::metrics::EdgeMetrics;
use crate::proxy::{Proxy, Scheme};
use crate::routes::{RouteSnapshot, SharedTable, Table};
use crate::tls::{CertStore, SharedCerts};
use crate::EdgeError;
use arc_swap::ArcSwap;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How often the route file is checked for changes.
pub const ROUTE_POLL: Duration = Duration::from_millis(50);
/// How long open connections get to finish on shutdown.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Edge settings.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Route snapshot written by the control plane.
    pub routes_file: PathBuf,
    /// File the edge writes the generation it serves to, once it serves it.
    pub applied_file: PathBuf,
    /// HTTPS, when served.
    pub tls: Option<TlsSettings>,
    /// Where request counts are written about once a second (`None`: not written).
    pub metrics_file: Option<PathBuf>,
    /// Where the access log is appended (`None`: no access log).
    pub access_log: Option<PathBuf>,
    /// Where this edge offers its listening sockets to a successor (a graceful upgrade,
    /// see [`crate::handover`]); `None`: it does not.
    pub handover: Option<PathBuf>,
    /// Serve plain HTTP on io_uring where the kernel offers it ([`crate::uring`]); `false`:
    /// on epoll, as HTTPS always is.
    pub io_uring: bool,
    /// Peers (a load balancer, a CDN) whose forwarding headers are kept and extended;
    /// every other client's are replaced.
    pub trusted_proxies: crate::policy::TrustedProxies,
}

/// How often the request counts are written.
pub const METRICS_INTERVAL: Duration = Duration::from_secs(1);

/// Where HTTPS is served and where its certificates come from.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Certificate snapshot written by the control plane.
    pub certs_file: PathBuf,
}

/// How long a connection may still bring its request once the edge stops accepting. A
/// connection accepted just before the stop may not have sent its request yet, or sent it
/// without the edge having read it: closed at once, it would go unanswered — or, with its
/// request unread in the socket, be reset. Requests in flight finish in any case.
pub const LAST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Drives a hyper connection until it ends, or until `stop` fires, then gives it
/// `LAST_REQUEST_GRACE` to bring a request and lets it finish its requests in flight
/// (HTTP/1.1 and HTTP/2 connections share no trait for this).
macro_rules! serve_until {
    ($conn:expr, $stop:expr) => {{
        let mut conn = std::pin::pin!($conn);
        let ended = tokio::select! {
            _ = conn.as_mut() => true,
            _ = $stop.cancelled() => false,
        };
        let ended = ended
            || tokio::select! {
                _ = conn.as_mut() => true,
                _ = tokio::time::sleep(LAST_REQUEST_GRACE) => false,
            };
        if !ended {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }};
}

/// How many workers the edge runs: one per core, each on its own thread.
pub fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Binds one listener, with an error that names the port when it is taken (the static
/// file server's; the edge binds a [`Listeners`] group).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, EdgeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| EdgeError::Bind { addr, source })
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn write_applied(path: &Path, generation: u64) {
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, generation.to_string()).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// Loads the snapshot into the table and reports the generation as applied.
fn reload(cfg: &EdgeConfig, table: &SharedTable, metrics: &EdgeMetrics) {
    match RouteSnapshot::load(&cfg.routes_file) {
        Ok(s) => {
            let previous = table.load();
            table.store(Arc::new(Table::from_snapshot(&s, metrics, Some(&previous))));
            crate::routes::table_changed().notify_waiters();
            write_applied(&cfg.applied_file, s.generation);
            tracing::info!(
                generation = s.generation,
                routes = s.routes.len(),
                "routes applied"
            );
        }
        // Keep serving the last good table.
        Err(e) => {
            tracing::warn!(error = %e, "route snapshot unreadable; keeping the current routes")
        }
    }
}

/// Where the edge confirms the certificate generation it serves.
pub fn certs_applied_file(certs_file: &Path) -> PathBuf {
    certs_file.with_extension("applied")
}

/// Loads the certificate snapshot into the store (entries that do not parse are skipped).
fn reload_certs(path: &Path, certs: &SharedCerts) {
    match CertSnapshot::load(path) {
        Ok(s) => {
            let (store, problems) = CertStore::from_snapshot(&s);
            for p in problems {
                tracing::warn!(problem = %p, "certificate not served");
            }
            certs.store(Arc::new(store));
            write_applied(&certs_applied_file(path), s.generation);
            tracing::info!(generation = s.generation, "certificates applied");
        }
        Err(e) => {
            tracing::warn!(error = %e, "certificate snapshot unreadable; keeping the current ones")
        }
    }
}

/// Runs the edge until `shutdown` fires, then drains open connections. `tls_listeners`
/// are bound to `cfg.tls`'s address when HTTPS is served.
pub async fn run(
    cfg: EdgeConfig,
    listeners: Listeners,
    tls_listeners: Option<Listeners>,
    shutdown: CancellationToken,
) -> Result<(), EdgeError> {
    run_after(cfg, listeners, tls_listeners, None, shutdown).await
}

/// [`run`], for an edge that took its listeners over from `predecessor` (a graceful
/// upgrade): once it serves, the predecessor is told to stop accepting, and the request
/// counts carry on from the predecessor's final ones.
pub async fn run_after(
    cfg: EdgeConfig,
    listeners: Listeners,
    tls_listeners: Option<Listeners>,
    predecessor: Option<Successor>,
    shutdown: CancellationToken,
) -> Result<(), EdgeError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let table: SharedTable = Arc::new(ArcSwap::from_pointee(Table::default()));
    let metrics = Arc::new(EdgeMetrics::default());
    reload(&cfg, &table, &metrics);
    let certs: SharedCerts = Arc::new(ArcSwap::from_pointee(CertStore::default()));
    let certs_file = cfg.tls.as_ref().map(|t| t.certs_file.clone());
    if let Some(f) = &certs_file {
        reload_certs(f, &certs);
    }
    let acceptor = match (&cfg.tls, &tls_listeners) {
        (Some(_), Some(_)) => Some(tokio_rustls::TlsAcceptor::from(
            crate::tls::server_config(certs.clone()).map_err(|e| EdgeError::Io {
                context: "configuring TLS".into(),
                source: std::io::Error::other(e.to_string()),
            })?,
        )),
        _ => None,
    };

    let watcher = {
        let cfg = cfg.clone();
        let metrics = metrics.clone();
        let (table, certs) = (table.clone(), certs.clone());
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut last = stamp(&cfg.routes_file);
            let mut last_certs = certs_file.as_deref().and_then(stamp);
            // The control plane nudges after writing routes: looked at now, not at the poll.
            let nudges =
                crate::nudge::Listener::bind(&crate::nudge::routes_socket(&cfg.routes_file))
                    .map_err(|e| tracing::debug!(error = %e, "no route nudges; polling only"))
                    .ok();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = crate::nudge::or_poll(nudges.as_ref(), ROUTE_POLL) => {}
                }
                // Certificates first: a route to a new domain is served with its certificate.
                if let Some(f) = &certs_file {
                    let now = stamp(f);
                    if now != last_certs {
                        last_certs = now;
                        reload_certs(f, &certs);
                    }
                }
                let now = stamp(&cfg.routes_file);
                if now != last {
                    last = now;
                    reload(&cfg, &table, &metrics);
                }
            }
        })
    };

    // Thread per core: each worker accepts on its own sockets (see [`crate::listen`]) and
    // serves its connections on a single-threaded runtime with its own upstream pool, so a
    // request never crosses threads.
    let workers = workers();
    let mut offered = Vec::new();
    if cfg.handover.is_some() {
        for group in std::iter::once(&listeners).chain(tls_listeners.as_ref()) {
            offered.extend(group.duplicates().map_err(|source| EdgeError::Io {
                context: "sharing the listeners".into(),
                source,
            })?);
        }
    }
    let dealt = |group: Listeners| {
        group.deal(workers).map_err(|source| EdgeError::Io {
            context: "sharing the listeners".into(),
            source,
        })
    };
    let mut plain_hands = dealt(listeners)?.into_iter();
    let mut tls_hands = match (tls_listeners, &acceptor) {
        (Some(group), Some(_)) => Some(dealt(group)?.into_iter()),
        _ => None,
    };
    let https_port = cfg.tls.as_ref().map(|t| t.listen.port());
    let http_port = cfg.listen.port();
    let trusted = Arc::new(cfg.trusted_proxies.clone());
    // Beside the route snapshot: where requests for sleeping apps ask for them.
    let wake_dir = cfg.routes_file.parent().map(|d| d.join("wake"));
    let access = cfg.access_log.clone().map(crate::access::AccessLog::start);
    let mut handles = Vec::new();
    let cores = crate::pinning::cores_for(workers);
    for (index, core) in cores.into_iter().enumerate() {
        let plain = plain_hands.next().unwrap_or_default();
        let tls = match (tls_hands.as_mut(), &acceptor) {
            (Some(hands), Some(a)) => Some((hands.next().unwrap_or_default(), a.clone())),
            _ => None,
        };
        let (table, shutdown, wake_dir) = (table.clone(), shutdown.clone(), wake_dir.clone());
        let trusted = trusted.clone();
        let access = access.as_ref().map(|a| a.worker());
        let io_uring = cfg.io_uring;
        let worker = std::thread::Builder::new().name(format!("edge-worker-{index}"));
        let spawned = worker.spawn(move || {
            let work = move |on_ring: bool| async move {
                if let Some(log) = access.clone() {
                    let stop = shutdown.clone();
                    tokio::spawn(async move {
                        loop {
                            tokio::select! {
                                _ = stop.cancelled() => break,
                                _ = tokio::time::sleep(Duration::from_millis(100)) => log.flush(),
                            }
                        }
                        log.flush();
                    });
                }
                let proxy = Proxy::new(table, https_port)
                    .with_http_port(http_port)
                    .with_trusted_proxies(trusted.clone())
                    .with_access_log(access.clone())
                    .with_wake_dir(wake_dir.clone());
                let load = std::rc::Rc::new(crate::pinning::Load::default());
                if let (true, Some(core)) = (on_ring, core) {
                    tokio::task::spawn_local(keep_on_core(core, load.clone(), shutdown.clone()));
                }
                let mut serving = tokio::task::JoinSet::new();
                for l in plain {
                    if on_ring {
                        serving.spawn_local(serve_on_ring(
                            l,
                            proxy.clone(),
                            load.clone(),
                            shutdown.clone(),
                        ));
                    } else {
                        serving.spawn_local(serve(
                            l,
                            None,
                            proxy.clone(),
                            load.clone(),
                            shutdown.clone(),
                        ));
                    }
                }
                for (l, acceptor) in tls
                    .into_iter()
                    .flat_map(|(ls, a)| ls.into_iter().map(move |l| (l, a.clone())))
                {
                    serving.spawn_local(serve(
                        l,
                        Some(acceptor),
                        proxy.clone(),
                        load.clone(),
                        shutdown.clone(),
                    ));
                }
                serving.join_all().await;
                // What the drained connections logged last.
                if let Some(log) = &access {
                    log.flush();
                }
            };
            let ring = if io_uring {
                crate::uring::runtime()
                    .map_err(|e| {
                        // Said once, not by every worker.
                        static SAID: std::sync::Once = std::sync::Once::new();
                        SAID.call_once(|| {
                            tracing::warn!(
                                error = %e,
                                "io_uring unavailable; serving plain HTTP on epoll \
                                 (io_uring needs Linux 5.19 or later, sysctl \
                                 kernel.io_uring_disabled=0 and no seccomp profile forbidding it)"
                            )
                        });
                    })
                    .ok()
            } else {
                None
            };
            if let Some(ring) = ring {
                return ring.block_on(work(true));
            }
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => tokio::task::LocalSet::new().block_on(&rt, work(false)),
                Err(e) => tracing::error!(error = %e, "cannot start an edge worker"),
            }
        });
        handles.push(spawned.map_err(|source| EdgeError::Io {
            context: "starting an edge worker".into(),
            source,
        })?);
    }
    // Serving: a predecessor may stop accepting now; its counts come once it has drained.
    let carried = predecessor.map(|mut p| {
        if let Err(e) = p.ready() {
            tracing::warn!(error = %e, "the previous edge could not be told to stop");
        }
        tokio::task::spawn_blocking(move || p.final_counts(DRAIN_DEADLINE + PREDECESSOR_SLACK))
    });
    let handed_over = match &cfg.handover {
        Some(path) => match handover::offer(path.clone(), offered, shutdown.clone()) {
            Ok(slot) => Some(slot),
            Err(e) => {
                tracing::warn!(error = %e, "this edge cannot be upgraded gracefully");
                None
            }
        },
        None => None,
    };

    let metrics_writer = cfg.metrics_file.clone().map(|path| {
        let (metrics, shutdown) = (metrics.clone(), shutdown.clone());
        tokio::spawn(async move {
            // Written only once the predecessor's counts are in: a reader never sees the
            // counters go back.
            if let Some(carried) = carried {
                match carried.await {
                    Ok(Some(counts)) => metrics.carry_on(&counts),
                    _ => tracing::warn!("the previous edge sent no final counts; counting from zero"),
                }
            }
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(METRICS_INTERVAL) => {}
                }
                if let Err(e) = metrics.write(&path) {
                    tracing::warn!(error = %e, path = %path.display(), "writing request metrics failed");
                }
            }
        })
    });
    let _ = watcher.await;
    // The workers stop with the same token; wait for their drain off the async threads.
    let _ = tokio::task::spawn_blocking(move || {
        for h in handles {
            let _ = h.join();
        }
    })
    .await;
    if let Some(w) = metrics_writer {
        let _ = w.await;
    }
    // The final counts, drained requests included: to the successor that took over, or to
    // the file.
    let sent = handed_over
        .as_ref()
        .is_some_and(|slot| handover::send_final_counts(slot, &metrics.snapshot()));
    if let (false, Some(path)) = (sent, &cfg.metrics_file) {
        if let Err(e) = metrics.write(path) {
            tracing::warn!(error = %e, path = %path.display(), "writing request metrics failed");
        }
    }
    Ok(())
}

/// How much longer than its drain a successor waits for the predecessor's counts.
const PREDECESSOR_SLACK: Duration = Duration::from_secs(5);

/// Accepts and serves connections (over TLS when given an acceptor) until shutdown, then
/// drains them.
async fn serve(
    listener: std::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    proxy: Proxy,
    load: std::rc::Rc<crate::pinning::Load>,
    shutdown: CancellationToken,
) {
    accept_until_stopped(listener, &shutdown, &load, |stream, remote, connections| {
        let proxy = proxy.clone();
        let stop = shutdown.clone();
        if let Some(acceptor) = &tls {
            connections.spawn(serve_tls(acceptor.clone(), stream, remote, proxy, stop));
            return;
        }
        connections.spawn(async move {
            // The lean path while the requests suit it; the full proxy for the rest.
            let pool = proxy.raw.clone();
            let (stream, read) = match crate::fast::serve(
                stream,
                remote,
                &proxy,
                &stop,
                Scheme::Http,
                &*pool,
                false,
            )
            .await
            {
                // Closed as it drops: nothing is left to write, so the close sends the
                // FIN a shutdown would (one system call less per connection).
                crate::fast::Outcome::Closed
                | crate::fast::Outcome::Answered(_)
                | crate::fast::Outcome::Idle(_) => return,
                crate::fast::Outcome::HandOver(stream, read) => (stream, read),
            };
            full_proxy(stream, read, remote, proxy, stop).await;
        });
    })
    .await;
}

/// Accepts connections on `listener` (counted in the worker's `load`), handing each to
/// `serve_one` with the tracker of the open ones, until `shutdown`; then lets the open ones
/// finish ([`drain`]).
async fn accept_until_stopped(
    listener: std::net::TcpListener,
    shutdown: &CancellationToken,
    load: &crate::pinning::Load,
    mut serve_one: impl FnMut(tokio::net::TcpStream, SocketAddr, &tokio_util::task::TaskTracker),
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "edge worker cannot listen");
            return;
        }
    };
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        load.accepted();
        serve_one(stream, remote, &connections);
    }
    drop(listener);
    drain(connections).await;
}

/// Waits for the open connections to finish, at most [`DRAIN_DEADLINE`].
async fn drain(connections: tokio_util::task::TaskTracker) {
    connections.close();
    tokio::select! {
        _ = connections.wait() => {}
        _ = tokio::time::sleep(DRAIN_DEADLINE) => tracing::warn!("drain deadline passed; closing remaining connections"),
    }
}

/// Plain HTTP with the worker's io_uring ([`crate::uring`]). A connection's first request
/// is served on epoll, as everywhere (most connections that bring one request and close
/// are served best there); a connection kept alive after it moves to the ring, where its
/// further requests go out over a pool of connections to instances on the ring too. One
/// the full proxy is to serve stays on, or goes back to, epoll.
async fn serve_on_ring(
    listener: std::net::TcpListener,
    proxy: Proxy,
    load: std::rc::Rc<crate::pinning::Load>,
    shutdown: CancellationToken,
) {
    use crate::fast::Outcome;
    use crate::uring::{UringStream, BUFFER};
    let ring_pool = std::rc::Rc::new(crate::fast::RawPool::<UringStream>::default());
    accept_until_stopped(listener, &shutdown, &load, |stream, remote, connections| {
        let (proxy, stop, ring_pool) = (proxy.clone(), shutdown.clone(), ring_pool.clone());
        let load = load.clone();
        connections.spawn_local(async move {
            let pool = proxy.raw.clone();
            let (stream, read) =
                match crate::fast::serve(stream, remote, &proxy, &stop, Scheme::Http, &*pool, true)
                    .await
                {
                    Outcome::Closed | Outcome::Answered(_) => return,
                    Outcome::HandOver(stream, read) => (stream, read),
                    Outcome::Idle(stream) => {
                        let on_ring = stream
                            .into_std()
                            .and_then(|s| s.set_nonblocking(false).map(|()| s))
                            .map(|s| UringStream::from_std(s, BUFFER));
                        let stream = match on_ring {
                            Ok(s) => s,
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot move a connection to io_uring");
                                return;
                            }
                        };
                        let counted = load.on_ring();
                        let outcome = crate::fast::serve(
                            stream, remote, &proxy, &stop, Scheme::Http, &*ring_pool, false,
                        )
                        .await;
                        drop(counted);
                        let (stream, read) = match outcome {
                            Outcome::Closed | Outcome::Answered(_) | Outcome::Idle(_) => return,
                            Outcome::HandOver(stream, read) => (stream, read),
                        };
                        match stream.into_tokio() {
                            Ok(stream) => (stream, read),
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot hand a connection to the full proxy");
                                return;
                            }
                        }
                    }
                };
            full_proxy(stream, read, remote, proxy, stop).await;
        });
    })
    .await;
}

/// Keeps the worker on `core` while its work is mostly kept-alive connections on the ring
/// (see [`crate::pinning`]), until shutdown.
async fn keep_on_core(
    core: usize,
    load: std::rc::Rc<crate::pinning::Load>,
    stop: CancellationToken,
) {
    let mut pinning = match crate::pinning::Pinning::new(core) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "the worker's cores cannot be read; it runs on any core");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(crate::pinning::CHECK_EVERY) => {}
        }
        if let Err(e) = pinning.set(load.mostly_kept_alive()) {
            tracing::warn!(error = %e, core, "cannot change the cores the worker runs on; leaving them as they are");
            return;
        }
    }
}

/// The rest of a plain-HTTP connection on the full proxy, starting with the bytes the lean
/// path read: HTTP/1.1, or HTTP/2 with prior knowledge (h2c), told apart by the first bytes.
async fn full_proxy(
    stream: tokio::net::TcpStream,
    read: Vec<u8>,
    remote: SocketAddr,
    proxy: Proxy,
    stop: CancellationToken,
) {
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, remote, Scheme::Http).await) }
    });
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .timer(crate::coarse_timer::CoarseTimer)
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(crate::coarse_timer::CoarseTimer)
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let io = TokioIo::new(crate::fast::Rewind::new(read, stream));
    let conn = builder.serve_connection_with_upgrades(io, service);
    serve_until!(conn, stop);
}

/// Longest a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a client may take to send a request's head (slowloris clients are closed).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers) the edge reads; a larger one is
/// answered 431 (HTTP/1.1) or refused (HTTP/2).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// One HTTPS connection: handshake, then HTTP/2 or HTTP/1.1 as ALPN chose.
async fn serve_tls(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    proxy: Proxy,
    stop: CancellationToken,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    // HTTP/1.1: the lean path while the requests suit it, as on plain HTTP.
    let (tls, read) = if h2 {
        (tls, Vec::new())
    } else {
        let pool = proxy.raw.clone();
        match crate::fast::serve(tls, remote, &proxy, &stop, Scheme::Https, &*pool, false).await {
            crate::fast::Outcome::Closed | crate::fast::Outcome::Idle(_) => return,
            crate::fast::Outcome::Answered(mut tls) => {
                // close_notify: the client knows the response was whole.
                let _ = tokio::time::timeout(
                    HANDSHAKE_TIMEOUT,
                    tokio::io::AsyncWriteExt::shutdown(&mut tls),
                )
                .await;
                return;
            }
            crate::fast::Outcome::HandOver(tls, read) => (tls, read),
        }
    };
    let tls = crate::fast::Rewind::new(read, tls);
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, remote, Scheme::Https).await) }
    });
    // ALPN already chose the protocol: no need to sniff the first bytes.
    if h2 {
        let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(crate::coarse_timer::CoarseTimer)
            .max_header_list_size(MAX_HEADER_BYTES as u32)
            .serve_connection(TokioIo::new(tls), service);
        serve_until!(conn, stop);
    } else {
        // One buffer per response: one TLS record instead of one per header/body slice.
        let conn = http1::Builder::new()
            .keep_alive(true)
            .writev(false)
            .timer(crate::coarse_timer::CoarseTimer)
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_HEADER_BYTES)
            .serve_connection(TokioIo::new(tls), service)
            .with_upgrades();
        serve_until!(conn, stop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connection accepted just before the edge stops, whose request comes a moment
    /// later: it is answered, not closed unanswered.
    #[tokio::test]
    async fn a_request_that_arrives_as_the_edge_stops_is_answered() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let stop = CancellationToken::new();
        stop.cancel();
        let service = service_fn(|_req| async {
            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                bytes::Bytes::from_static(b"served"),
            )))
        });
        let served = tokio::spawn(async move {
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            serve_until!(conn, stop);
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The request may meet a closed socket (old behaviour): then the answer is empty.
        let _ = client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await;
        served.await.unwrap();
        let mut answer = Vec::new();
        let _ = client.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("served"),
            "{answer}"
        );
    }
}

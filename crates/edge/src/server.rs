//! The edge process: accepts connections, serves them through the [`Proxy`], and follows
//! the route snapshot file the control plane writes.

use crate::proxy::Proxy;
use crate::routes::{RouteSnapshot, SharedTable, Table};
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
}

/// Binds the edge's listener, with an error that names the port when it is taken.
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
fn reload(cfg: &EdgeConfig, table: &SharedTable) {
    match RouteSnapshot::load(&cfg.routes_file) {
        Ok(s) => {
            table.store(Arc::new(Table::from_snapshot(&s)));
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

/// Runs the edge until `shutdown` fires, then drains open connections.
pub async fn run(
    cfg: EdgeConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), EdgeError> {
    let table: SharedTable = Arc::new(ArcSwap::from_pointee(Table::default()));
    reload(&cfg, &table);

    let watcher = {
        let cfg = cfg.clone();
        let table = table.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut last = stamp(&cfg.routes_file);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ROUTE_POLL) => {}
                }
                let now = stamp(&cfg.routes_file);
                if now != last {
                    last = now;
                    reload(&cfg, &table);
                }
            }
        })
    };

    // Thread per core: each worker accepts on the shared socket and serves its connections
    // on a single-threaded runtime with its own upstream pool, so a request never crosses
    // threads.
    let std_listener = listener.into_std().map_err(|source| EdgeError::Io {
        context: "preparing the listener".into(),
        source,
    })?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut handles = Vec::new();
    for _ in 0..workers {
        let l = std_listener.try_clone().map_err(|source| EdgeError::Io {
            context: "sharing the listener".into(),
            source,
        })?;
        let (table, shutdown) = (table.clone(), shutdown.clone());
        handles.push(std::thread::spawn(
            move || match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(serve(l, Proxy::new(table), shutdown)),
                Err(e) => tracing::error!(error = %e, "cannot start an edge worker"),
            },
        ));
    }
    drop(std_listener);
    let _ = watcher.await;
    // The workers stop with the same token; wait for their drain off the async threads.
    let _ = tokio::task::spawn_blocking(move || {
        for h in handles {
            let _ = h.join();
        }
    })
    .await;
    Ok(())
}

/// Accepts and serves connections until shutdown, then drains them.
async fn serve(listener: std::net::TcpListener, proxy: Proxy, shutdown: CancellationToken) {
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
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let service = service_fn(move |req| {
            let proxy = proxy.clone();
            async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, remote).await) }
        });
        let conn = http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let stop = shutdown.clone();
        connections.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    connections.close();
    tokio::select! {
        _ = connections.wait() => {}
        _ = tokio::time::sleep(DRAIN_DEADLINE) => tracing::warn!("drain deadline passed; closing remaining connections"),
    }
}

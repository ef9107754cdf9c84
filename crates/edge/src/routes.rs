//! The route table and its snapshot file.

use crate::EdgeError;
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Where one host name's traffic goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// App name (for metrics and messages).
    pub app: String,
    /// Release serving it.
    pub release: u32,
    /// Healthy instances.
    pub upstreams: Vec<SocketAddr>,
    /// Plain-HTTP requests for this name are redirected to HTTPS.
    #[serde(default)]
    pub https_redirect: bool,
}

/// What the control plane hands the edge: a numbered, complete table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSnapshot {
    /// Increases with every change.
    pub generation: u64,
    /// Host name (lowercase, no port) → route.
    pub routes: BTreeMap<String, Route>,
    /// ACME HTTP-01 answers: token → key authorization.
    #[serde(default)]
    pub acme_challenges: BTreeMap<String, String>,
}

impl RouteSnapshot {
    /// Reads a snapshot file; a missing file is an empty table.
    pub fn load(path: &Path) -> Result<Self, EdgeError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| EdgeError::Routes {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(EdgeError::Io {
                context: format!("reading {}", path.display()),
                source,
            }),
        }
    }

    /// Writes the snapshot atomically (write to a temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<(), EdgeError> {
        let io = |source| EdgeError::Io {
            context: format!("writing {}", path.display()),
            source,
        };
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| EdgeError::Routes {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// A compiled route: upstreams plus a round-robin cursor.
#[derive(Debug)]
pub struct LiveRoute {
    /// The route.
    pub route: Route,
    /// Its release's request counters.
    pub series: Arc<crate::metrics::Series>,
    next: AtomicUsize,
}

impl LiveRoute {
    /// Upstreams starting at the next round-robin position (the rest follow, for retries).
    pub fn pick(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        let n = self.route.upstreams.len().max(1);
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        (0..self.route.upstreams.len()).map(move |i| self.route.upstreams[(start + i) % n])
    }
}

/// The table in use: host → live route.
#[derive(Debug, Default)]
pub struct Table {
    /// Generation it came from.
    pub generation: u64,
    hosts: BTreeMap<String, Arc<LiveRoute>>,
    challenges: BTreeMap<String, String>,
}

impl Table {
    /// Compiles a snapshot; its routes count into `metrics`.
    pub fn from_snapshot(s: &RouteSnapshot, metrics: &crate::metrics::EdgeMetrics) -> Self {
        let series = metrics.for_routes(s.routes.values().map(|r| (r.app.as_str(), r.release)));
        Self {
            generation: s.generation,
            hosts: s
                .routes
                .iter()
                .map(|(h, r)| {
                    (
                        h.to_ascii_lowercase(),
                        Arc::new(LiveRoute {
                            route: r.clone(),
                            series: series
                                .get(&(r.app.clone(), r.release))
                                .cloned()
                                .unwrap_or_default(),
                            next: AtomicUsize::new(0),
                        }),
                    )
                })
                .collect(),
            challenges: s.acme_challenges.clone(),
        }
    }

    /// The key authorization to answer an ACME HTTP-01 challenge with.
    pub fn acme_answer(&self, token: &str) -> Option<&str> {
        self.challenges.get(token).map(String::as_str)
    }

    /// The route for a `Host` header value (port and trailing dot ignored).
    pub fn lookup(&self, host: &str) -> Option<Arc<LiveRoute>> {
        let name = strip_port(host).trim_end_matches('.').to_ascii_lowercase();
        self.hosts.get(&name).cloned()
    }
}

/// The host part of a `Host` header value.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// The shared, atomically swapped table.
pub type SharedTable = Arc<ArcSwap<Table>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> RouteSnapshot {
        let mut routes = BTreeMap::new();
        routes.insert(
            "hello.localhost".to_string(),
            Route {
                app: "hello".into(),
                release: 3,
                upstreams: vec![
                    "10.0.0.2:8000".parse().unwrap(),
                    "10.0.0.3:8000".parse().unwrap(),
                ],
                https_redirect: false,
            },
        );
        RouteSnapshot {
            generation: 7,
            routes,
            acme_challenges: BTreeMap::from([("tok".to_string(), "tok.thumb".to_string())]),
        }
    }

    #[test]
    fn lookup_ignores_port_case_and_trailing_dot() {
        let t = Table::from_snapshot(&snapshot(), &crate::metrics::EdgeMetrics::default());
        assert!(t.lookup("hello.localhost:8080").is_some());
        assert!(t.lookup("HELLO.localhost.").is_some());
        assert!(t.lookup("other.localhost").is_none());
        assert_eq!(t.acme_answer("tok"), Some("tok.thumb"));
        assert_eq!(t.acme_answer("other"), None);
    }

    #[test]
    fn round_robin_covers_all_upstreams() {
        let t = Table::from_snapshot(&snapshot(), &crate::metrics::EdgeMetrics::default());
        let r = t.lookup("hello.localhost").unwrap();
        let a: Vec<_> = r.pick().collect();
        let b: Vec<_> = r.pick().collect();
        assert_eq!(a.len(), 2);
        assert_ne!(a[0], b[0]);
    }

    #[test]
    fn snapshot_round_trips_through_its_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("routes.json");
        assert_eq!(RouteSnapshot::load(&p).unwrap(), RouteSnapshot::default());
        snapshot().save(&p).unwrap();
        assert_eq!(RouteSnapshot::load(&p).unwrap(), snapshot());
    }
}

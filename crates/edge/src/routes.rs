//! The route table and its snapshot file.

use crate::EdgeError;
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// A release under canary analysis, which gets a share of the requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryRoute>,
    /// The app sleeps (no instances while idle): a request wakes it and waits for it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sleeping: bool,
}

/// The canary side of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryRoute {
    pub release: u32,
    /// Its healthy instances.
    pub upstreams: Vec<SocketAddr>,
    /// Percent of requests it gets (1-99).
    pub weight: u8,
    /// By client: a client's requests all go to one side, chosen by its address, and a
    /// client on the canary stays there as the weight grows.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sticky: bool,
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

/// Gateway failures in a row that eject an instance.
pub const EJECT_AFTER_FAILURES: u32 = 3;
/// How long a first ejection lasts; each further one in a row doubles it, up to
/// [`MAX_EJECTION`].
pub const BASE_EJECTION: Duration = Duration::from_secs(5);
/// The longest an instance stays ejected.
pub const MAX_EJECTION: Duration = Duration::from_secs(60);

/// Milliseconds since the edge started: the clock ejections are kept in.
fn now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// What the edge knows of one instance: its requests under way and whether it is ejected
/// (outlier detection: after [`EJECT_AFTER_FAILURES`] gateway failures in a row it gets no
/// traffic for a while, then one request decides whether it is back).
#[derive(Debug, Default)]
pub struct UpstreamState {
    in_flight: AtomicUsize,
    failures: AtomicU32,
    ejections: AtomicU32,
    ejected_until: AtomicU64,
}

impl UpstreamState {
    /// Requests sent to it and not yet answered in full.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether it is ejected now.
    pub fn ejected(&self) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_ms()
    }

    /// Counts a request as under way until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// A gateway failure (no connection, a broken one, or a 502/503/504 from the app).
    pub fn failed(&self) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= EJECT_AFTER_FAILURES {
            let n = self.ejections.fetch_add(1, Ordering::Relaxed).min(8);
            let lasts = (BASE_EJECTION * 2u32.pow(n)).min(MAX_EJECTION);
            self.ejected_until
                .store(now_ms() + lasts.as_millis() as u64, Ordering::Relaxed);
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// An answer: the instance is fine again.
    pub fn succeeded(&self) {
        self.failures.store(0, Ordering::Relaxed);
        if self.ejections.load(Ordering::Relaxed) > 0 && !self.ejected() {
            self.ejections.store(0, Ordering::Relaxed);
        }
    }
}

/// One request under way to an instance; dropping it ends it.
#[derive(Debug)]
pub struct InFlight(Arc<UpstreamState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One release's instances in a route, with what the edge knows of each.
#[derive(Debug)]
pub struct Group {
    /// The release.
    pub release: u32,
    /// Its request counters.
    pub series: Arc<crate::metrics::Series>,
    upstreams: Vec<SocketAddr>,
    /// One per upstream, in the same order.
    states: Vec<Arc<UpstreamState>>,
    next: AtomicUsize,
}

impl Group {
    /// Upstreams in the order to try them: instances that are not ejected, fewest requests
    /// under way first (ties in turn), then the ejected ones as a last resort (so that an
    /// app whose every instance failed is still tried).
    pub fn pick(&self) -> Vec<(SocketAddr, Arc<UpstreamState>)> {
        let n = self.upstreams.len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut order: Vec<(SocketAddr, Arc<UpstreamState>)> = (0..n)
            .map(|i| (start + i) % n)
            .map(|i| (self.upstreams[i], self.states[i].clone()))
            .collect();
        // Stable: among equals, the rotation's order.
        order.sort_by_key(|(_, s)| (s.ejected(), s.in_flight()));
        order
    }

    /// The first of [`Group::pick`]'s order, without ordering the rest.
    pub fn best(&self) -> Option<(SocketAddr, &Arc<UpstreamState>)> {
        let n = self.upstreams.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(usize, (bool, usize))> = None;
        for k in 0..n {
            let i = (start + k) % n;
            let key = (self.states[i].ejected(), self.states[i].in_flight());
            if best.is_none_or(|(_, b)| key < b) {
                best = Some((i, key));
            }
        }
        best.map(|(i, _)| (self.upstreams[i], &self.states[i]))
    }

    /// Whether it has no instance.
    pub fn is_empty(&self) -> bool {
        self.upstreams.is_empty()
    }
}

/// A compiled route: the serving release's instances, and a canary's when there is one.
#[derive(Debug)]
pub struct LiveRoute {
    /// The route.
    pub route: Route,
    /// The serving release.
    pub stable: Group,
    /// A release under canary analysis, its share of requests (percent), and whether a
    /// client sticks to its side.
    pub canary: Option<(Group, u8, bool)>,
    requests: AtomicUsize,
}

impl LiveRoute {
    /// The group a request from `client` goes to: the canary for its share of requests
    /// (spread evenly over them, or by client when sticky), else the serving release.
    pub fn choose(&self, client: std::net::IpAddr) -> &Group {
        match &self.canary {
            Some((group, weight, sticky)) if !group.is_empty() => {
                let slot = if *sticky {
                    // The client's place in 0..100, the same for every request and step
                    // of this canary (another canary draws other clients).
                    use std::hash::{Hash, Hasher};
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    (client, group.release).hash(&mut h);
                    (h.finish() % 100) as usize
                } else {
                    let n = self.requests.fetch_add(1, Ordering::Relaxed);
                    // 37 is prime to 100: consecutive requests land all over 0..100.
                    (n * 37) % 100
                };
                if slot < usize::from(*weight) {
                    group
                } else {
                    &self.stable
                }
            }
            _ => &self.stable,
        }
    }

    /// The serving release's upstreams in the order to try them.
    pub fn pick(&self) -> Vec<(SocketAddr, Arc<UpstreamState>)> {
        self.stable.pick()
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
    /// Compiles a snapshot; its routes count into `metrics`. What `previous` knew of an
    /// instance (requests under way, ejection) carries over to the same host and address.
    pub fn from_snapshot(
        s: &RouteSnapshot,
        metrics: &crate::metrics::EdgeMetrics,
        previous: Option<&Table>,
    ) -> Self {
        let series = metrics.for_routes(s.routes.values().flat_map(|r| {
            std::iter::once((r.app.as_str(), r.release))
                .chain(r.canary.as_ref().map(|c| (r.app.as_str(), c.release)))
        }));
        let known = |host: &str, addr: &SocketAddr| -> Arc<UpstreamState> {
            let live = previous.and_then(|t| t.hosts.get(host));
            live.into_iter()
                .flat_map(|l| std::iter::once(&l.stable).chain(l.canary.as_ref().map(|c| &c.0)))
                .find_map(|g| {
                    g.upstreams
                        .iter()
                        .position(|a| a == addr)
                        .map(|i| g.states[i].clone())
                })
                .unwrap_or_default()
        };
        let group = |host: &str, app: &str, release: u32, upstreams: &[SocketAddr]| Group {
            release,
            series: series
                .get(&(app.to_string(), release))
                .cloned()
                .unwrap_or_default(),
            upstreams: upstreams.to_vec(),
            states: upstreams.iter().map(|a| known(host, a)).collect(),
            next: AtomicUsize::new(0),
        };
        Self {
            generation: s.generation,
            hosts: s
                .routes
                .iter()
                .map(|(h, r)| {
                    let host = h.to_ascii_lowercase();
                    let live = LiveRoute {
                        stable: group(&host, &r.app, r.release, &r.upstreams),
                        canary: r.canary.as_ref().map(|c| {
                            (
                                group(&host, &r.app, c.release, &c.upstreams),
                                c.weight,
                                c.sticky,
                            )
                        }),
                        route: r.clone(),
                        requests: AtomicUsize::new(0),
                    };
                    (host, Arc::new(live))
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
        let name = strip_port(host).trim_end_matches('.');
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.hosts.get(&name.to_ascii_lowercase()).cloned();
        }
        self.hosts.get(name).cloned()
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

/// Told each time this process's route table is replaced (requests held for a sleeping
/// app wait on it rather than polling).
pub fn table_changed() -> &'static tokio::sync::Notify {
    static CHANGED: std::sync::LazyLock<tokio::sync::Notify> =
        std::sync::LazyLock::new(tokio::sync::Notify::new);
    &CHANGED
}

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
                canary: None,
                sleeping: false,
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
        let t = Table::from_snapshot(&snapshot(), &crate::metrics::EdgeMetrics::default(), None);
        assert!(t.lookup("hello.localhost:8080").is_some());
        assert!(t.lookup("HELLO.localhost.").is_some());
        assert!(t.lookup("other.localhost").is_none());
        assert_eq!(t.acme_answer("tok"), Some("tok.thumb"));
        assert_eq!(t.acme_answer("other"), None);
    }

    #[test]
    fn idle_instances_take_turns_and_busy_ones_wait() {
        let t = Table::from_snapshot(&snapshot(), &crate::metrics::EdgeMetrics::default(), None);
        let r = t.lookup("hello.localhost").unwrap();
        let a = r.pick();
        let b = r.pick();
        assert_eq!(a.len(), 2);
        assert_ne!(a[0].0, b[0].0, "idle instances take turns");
        // One request under way on the first: the next ones go to the other.
        let busy = a[0].1.begin();
        for _ in 0..4 {
            assert_eq!(r.pick()[0].0, a[1].0);
        }
        drop(busy);
        assert_eq!(a[0].1.in_flight(), 0);
    }

    #[test]
    fn an_instance_failing_in_a_row_is_ejected_then_tried_again() {
        let t = Table::from_snapshot(&snapshot(), &crate::metrics::EdgeMetrics::default(), None);
        let r = t.lookup("hello.localhost").unwrap();
        let (bad, state) = r.pick()[0].clone();
        for _ in 0..EJECT_AFTER_FAILURES - 1 {
            state.failed();
        }
        assert!(
            !state.ejected(),
            "not before {EJECT_AFTER_FAILURES} failures"
        );
        state.failed();
        assert!(state.ejected());
        for _ in 0..4 {
            let order = r.pick();
            assert_ne!(order[0].0, bad, "the ejected instance goes last");
            assert_eq!(order[1].0, bad, "but stays as a last resort");
        }
        // A new table (another deploy) keeps what the edge knew of the same instance.
        let t2 = Table::from_snapshot(
            &snapshot(),
            &crate::metrics::EdgeMetrics::default(),
            Some(&t),
        );
        let r2 = t2.lookup("hello.localhost").unwrap();
        assert_eq!(r2.pick()[1].0, bad);
        // Its time served, it is back.
        state.ejected_until.store(1, Ordering::Relaxed);
        state.succeeded();
        assert!(!state.ejected());
        assert_eq!(state.ejections.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_canary_gets_its_share_of_requests() {
        let mut snap = snapshot();
        if let Some(r) = snap.routes.get_mut("hello.localhost") {
            r.canary = Some(CanaryRoute {
                release: 4,
                upstreams: vec!["10.0.0.9:8000".parse().unwrap()],
                weight: 10,
                sticky: false,
            });
        }
        let t = Table::from_snapshot(&snap, &crate::metrics::EdgeMetrics::default(), None);
        let r = t.lookup("hello.localhost").unwrap();
        let client: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        let to_canary = (0..1000).filter(|_| r.choose(client).release == 4).count();
        assert_eq!(to_canary, 100);
        assert_eq!(r.pick().len(), 2, "retries stay on the serving release");
    }

    #[test]
    fn a_sticky_canary_keeps_each_client_on_its_side_as_it_grows() {
        let at = |weight: u8| {
            let mut snap = snapshot();
            if let Some(r) = snap.routes.get_mut("hello.localhost") {
                r.canary = Some(CanaryRoute {
                    release: 4,
                    upstreams: vec!["10.0.0.9:8000".parse().unwrap()],
                    weight,
                    sticky: true,
                });
            }
            Table::from_snapshot(&snap, &crate::metrics::EdgeMetrics::default(), None)
        };
        let clients: Vec<std::net::IpAddr> = (0..2000u32)
            .map(|i| std::net::Ipv4Addr::from(0x0a00_0000 + i).into())
            .collect();
        let on_canary = |t: &Table| -> Vec<bool> {
            let r = t.lookup("hello.localhost").unwrap();
            clients
                .iter()
                .map(|c| {
                    let first = r.choose(*c).release == 4;
                    // Every request of a client goes the same way.
                    assert!((0..5).all(|_| (r.choose(*c).release == 4) == first));
                    first
                })
                .collect()
        };
        let (ten, fifty) = (on_canary(&at(10)), on_canary(&at(50)));
        let share = |v: &[bool]| v.iter().filter(|b| **b).count() as f64 / v.len() as f64;
        assert!((share(&ten) - 0.10).abs() < 0.03, "{}", share(&ten));
        assert!((share(&fifty) - 0.50).abs() < 0.05, "{}", share(&fifty));
        assert!(
            ten.iter().zip(&fifty).all(|(a, b)| !a || *b),
            "a client on the canary at 10% is still on it at 50%"
        );
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

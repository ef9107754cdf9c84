//! What the edge counts: responses per app and release by status class, and their latency
//! (time to the response's head) in a histogram. Counting is a few relaxed atomic adds on
//! counters each route already holds, so the request path takes no lock. About once a
//! second the counts go to a snapshot file the control plane reads for `/metrics`.

use berth_core::metrics::{status_class, EdgeMetricsSnapshot, RequestSeries, LATENCY_BUCKETS};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the counters of a release no route points at any more are still reported.
const RETIRED_KEPT: Duration = Duration::from_secs(300);

/// The counters of one release of one app.
#[derive(Debug)]
pub struct Series {
    responses: [AtomicU64; 5],
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Default for Series {
    fn default() -> Self {
        Self {
            responses: std::array::from_fn(|_| AtomicU64::new(0)),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Series {
    /// Counts one response.
    pub fn record(&self, status: u16, elapsed: Duration) {
        self.responses[status_class(status)].fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Adds counts read from another edge's snapshot (a predecessor's, after an upgrade).
    fn add(&self, counts: &RequestSeries) {
        for (mine, theirs) in self.responses.iter().zip(counts.responses) {
            mine.fetch_add(theirs, Ordering::Relaxed);
        }
        for (mine, theirs) in self.buckets.iter().zip(&counts.latency_buckets) {
            mine.fetch_add(*theirs, Ordering::Relaxed);
        }
        self.sum_micros.fetch_add(
            (counts.latency_sum_seconds * 1e6).round() as u64,
            Ordering::Relaxed,
        );
    }

    fn read(&self, app: &str, release: u32) -> RequestSeries {
        RequestSeries {
            app: app.to_string(),
            release,
            responses: std::array::from_fn(|i| self.responses[i].load(Ordering::Relaxed)),
            latency_buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            latency_sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

struct Entry {
    series: Arc<Series>,
    /// When no route pointed at it any more.
    retired: Option<std::time::Instant>,
}

/// Every release's counters.
pub struct EdgeMetrics {
    started_at: AtomicI64,
    series: Mutex<BTreeMap<(String, u32), Entry>>,
}

impl Default for EdgeMetrics {
    fn default() -> Self {
        Self {
            started_at: AtomicI64::new(crate::now_millis() / 1000),
            series: Mutex::default(),
        }
    }
}

impl EdgeMetrics {
    /// The counters a new route table uses: those of its releases (created when new);
    /// releases no longer routed are kept a while, then forgotten.
    pub fn for_routes<'a>(
        &self,
        routed: impl Iterator<Item = (&'a str, u32)>,
    ) -> BTreeMap<(String, u32), Arc<Series>> {
        let Ok(mut all) = self.series.lock() else {
            return BTreeMap::new();
        };
        let mut out = BTreeMap::new();
        for (app, release) in routed {
            let key = (app.to_string(), release);
            let e = all.entry(key.clone()).or_insert_with(|| Entry {
                series: Arc::default(),
                retired: None,
            });
            e.retired = None;
            out.insert(key, e.series.clone());
        }
        let now = std::time::Instant::now();
        all.retain(|k, e| {
            if out.contains_key(k) {
                return true;
            }
            let since = *e.retired.get_or_insert(now);
            now.duration_since(since) < RETIRED_KEPT
        });
        out
    }

    /// Carries on from a predecessor's final counts: they are added to this edge's, and
    /// the counters keep the predecessor's start (to readers, one edge that never
    /// restarted). Series no route points at are kept as retired.
    pub fn carry_on(&self, from: &EdgeMetricsSnapshot) {
        let Ok(mut all) = self.series.lock() else {
            return;
        };
        let now = std::time::Instant::now();
        for counts in &from.series {
            let e = all
                .entry((counts.app.clone(), counts.release))
                .or_insert_with(|| Entry {
                    series: Arc::default(),
                    retired: Some(now),
                });
            e.series.add(counts);
        }
        self.started_at.store(from.started_at, Ordering::Relaxed);
    }

    /// Every series' counts now.
    pub fn snapshot(&self) -> EdgeMetricsSnapshot {
        let series = self
            .series
            .lock()
            .map(|all| all.iter().map(|((a, r), e)| e.series.read(a, *r)).collect())
            .unwrap_or_default();
        EdgeMetricsSnapshot {
            started_at: self.started_at.load(Ordering::Relaxed),
            written_at: crate::now_millis() / 1000,
            series,
        }
    }

    /// Writes the snapshot to `path` atomically.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&self.snapshot())?)?;
        std::fs::rename(&tmp, path)
    }
}

/// Reads a snapshot the edge wrote (`None` when there is none, or it does not parse).
pub fn read_snapshot(path: &Path) -> Option<EdgeMetricsSnapshot> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_land_in_their_class_and_bucket_and_survive_a_route_swap() {
        let m = EdgeMetrics::default();
        let routes = m.for_routes([("shop", 1)].into_iter());
        let s = &routes[&("shop".to_string(), 1)];
        s.record(200, Duration::from_millis(3));
        s.record(200, Duration::from_millis(280));
        s.record(503, Duration::from_secs(30));
        // A new table with the same release keeps counting on the same series.
        let again = m.for_routes([("shop", 1), ("blog", 4)].into_iter());
        again[&("shop".to_string(), 1)].record(404, Duration::from_millis(1));
        let snap = m.snapshot();
        let shop = snap.series.iter().find(|s| s.app == "shop").unwrap();
        assert_eq!(shop.responses, [0, 2, 0, 1, 1]);
        assert_eq!(shop.count(), 4);
        let c = shop.cumulative_buckets();
        assert_eq!(c[0].1, 2, "≤ 5 ms");
        assert_eq!(c[6].1, 3, "≤ 300 ms");
        assert_eq!(c[11].1, 3, "≤ 10 s");
        assert_eq!(c[12].1, 4, "+Inf");
        assert!((shop.latency_sum_seconds - 30.284).abs() < 1e-6);
        // Unrouted releases are still reported for a while.
        m.for_routes([("blog", 5)].into_iter());
        assert_eq!(m.snapshot().series.len(), 3);

        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("metrics.json");
        m.write(&path).unwrap();
        assert_eq!(read_snapshot(&path).unwrap().series.len(), 3);
        assert!(read_snapshot(&d.path().join("none.json")).is_none());
    }

    #[test]
    fn a_successor_carries_on_from_its_predecessors_counts() {
        let old = EdgeMetrics::default();
        let routes = old.for_routes([("shop", 1), ("blog", 2)].into_iter());
        routes[&("shop".to_string(), 1)].record(200, Duration::from_millis(3));
        routes[&("blog".to_string(), 2)].record(500, Duration::from_millis(30));
        let mut final_counts = old.snapshot();
        final_counts.started_at -= 3600;

        let new = EdgeMetrics::default();
        let routes = new.for_routes([("shop", 1)].into_iter());
        routes[&("shop".to_string(), 1)].record(404, Duration::from_millis(1));
        new.carry_on(&final_counts);
        let snap = new.snapshot();
        assert_eq!(snap.started_at, final_counts.started_at);
        let shop = snap.series.iter().find(|s| s.app == "shop").unwrap();
        assert_eq!(shop.responses, [0, 1, 0, 1, 0]);
        assert!((shop.latency_sum_seconds - 0.004).abs() < 1e-9);
        let blog = snap.series.iter().find(|s| s.app == "blog").unwrap();
        assert_eq!(
            blog.responses,
            [0, 0, 0, 0, 1],
            "an unrouted release is kept"
        );
    }
}

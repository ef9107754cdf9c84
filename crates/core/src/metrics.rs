//! Request metrics as plain data: what the edge counts per app and release, and hands the
//! control plane in a snapshot file for `/metrics` (and, later, SLO evaluation).

use serde::{Deserialize, Serialize};

/// Upper bounds (seconds) of the latency histogram's buckets; `+Inf` follows. 0.3 s is the
/// default latency objective, so that SLOs read straight off a bucket.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Status classes, in the order of [`RequestSeries::responses`].
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Index into [`STATUS_CLASSES`] of an HTTP status.
pub fn status_class(status: u16) -> usize {
    (usize::from(status / 100)).clamp(1, 5) - 1
}

/// Responses the edge gave for one release of one app since the edge started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestSeries {
    pub app: String,
    pub release: u32,
    /// Responses by status class (see [`STATUS_CLASSES`]).
    pub responses: [u64; 5],
    /// Responses per latency bucket, not cumulative: one per [`LATENCY_BUCKETS`] bound, then
    /// the ones slower than the last.
    pub latency_buckets: Vec<u64>,
    /// Sum of the latencies, seconds.
    pub latency_sum_seconds: f64,
}

impl RequestSeries {
    /// All responses.
    pub fn count(&self) -> u64 {
        self.responses.iter().sum()
    }

    /// Cumulative buckets as Prometheus wants them: (upper bound, responses at most that slow).
    pub fn cumulative_buckets(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        LATENCY_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.latency_buckets.iter().chain(std::iter::repeat(&0)))
            .map(|(bound, n)| {
                total += n;
                (bound, total)
            })
            .collect()
    }
}

/// What the edge writes, about once a second.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EdgeMetricsSnapshot {
    /// When the edge process started (Unix seconds): counters restart from zero with it.
    pub started_at: i64,
    /// When this snapshot was written (Unix seconds).
    pub written_at: i64,
    pub series: Vec<RequestSeries>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_cumulative_buckets() {
        assert_eq!(STATUS_CLASSES[status_class(200)], "2xx");
        assert_eq!(STATUS_CLASSES[status_class(503)], "5xx");
        assert_eq!(STATUS_CLASSES[status_class(101)], "1xx");
        assert_eq!(STATUS_CLASSES[status_class(999)], "5xx");
        let mut s = RequestSeries {
            latency_buckets: vec![0; LATENCY_BUCKETS.len() + 1],
            ..Default::default()
        };
        s.latency_buckets[0] = 2;
        s.latency_buckets[6] = 1;
        s.latency_buckets[12] = 1;
        let c = s.cumulative_buckets();
        assert_eq!(c.len(), 13);
        assert_eq!(c[0], (0.005, 2));
        assert_eq!(c[6], (0.3, 3));
        assert_eq!(c[11], (10.0, 3));
        assert_eq!(c[12].1, 4);
        assert!(c[12].0.is_infinite());
    }
}

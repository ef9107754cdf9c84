//! A bounded HTTP load against one URL: a few clients on kept-alive connections (as
//! browsers and API clients keep them), paced to a total rate, stopped by count and by
//! its owner. Each response is counted in the current window — failed when no answer came
//! or it was a 5xx — with its latency; [`Load::window`] closes a window and opens the next.

use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest a request of the load waits for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub url: reqwest::Url,
    /// Where the URL's host is reached (a `*.localhost` name on this machine's edge).
    pub resolve: Option<(String, SocketAddr)>,
    /// Clients sending at once.
    pub concurrency: usize,
    /// Requests per second, all clients together.
    pub rate: u32,
    /// Most requests sent in all.
    pub max_requests: u64,
}

/// The responses of one window.
#[derive(Debug, Default, Clone)]
pub struct Window {
    pub requests: u64,
    pub failed: u64,
    /// Failures by what happened (`502`, `connect`, `timeout`, …).
    pub failures: BTreeMap<String, u64>,
    latencies: Vec<Duration>,
}

/// A window summed up.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WindowSummary {
    pub requests: u64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Window {
    fn record(&mut self, outcome: Result<u16, String>, latency: Duration) {
        self.requests += 1;
        self.latencies.push(latency);
        let failure = match outcome {
            Ok(status) if status < 500 => None,
            Ok(status) => Some(status.to_string()),
            Err(kind) => Some(kind),
        };
        if let Some(kind) = failure {
            self.failed += 1;
            *self.failures.entry(kind).or_default() += 1;
        }
    }

    /// The latency below which share `p` (0–1) of the responses came, in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1].as_secs_f64() * 1000.0
    }

    pub fn summary(&self) -> WindowSummary {
        WindowSummary {
            requests: self.requests,
            failed: self.failed,
            failures: self.failures.clone(),
            p50_ms: self.percentile_ms(0.5),
            p99_ms: self.percentile_ms(0.99),
            max_ms: self.percentile_ms(1.0),
        }
    }
}

/// A running load.
pub struct Load {
    window: Arc<Mutex<Window>>,
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

fn failure_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else if e.is_body() || e.is_decode() {
        "body".into()
    } else {
        "connection".into()
    }
}

impl Load {
    /// Starts the load (on the current tokio runtime).
    pub fn start(spec: LoadSpec) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("berth-drill/", env!("CARGO_PKG_VERSION")));
        if let Some((host, addr)) = &spec.resolve {
            builder = builder.resolve(host, *addr);
        }
        let http = builder.build()?;
        let window = Arc::new(Mutex::new(Window::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let concurrency = spec.concurrency.max(1);
        // Each client's pause between requests, for the total rate.
        let pause = Duration::from_secs_f64(concurrency as f64 / f64::from(spec.rate.max(1)));
        let clients = (0..concurrency)
            .map(|_| {
                let (http, window, stop, sent) =
                    (http.clone(), window.clone(), stop.clone(), sent.clone());
                let (url, max) = (spec.url.clone(), spec.max_requests);
                tokio::spawn(async move {
                    let mut next = tokio::time::Instant::now();
                    while !stop.load(Ordering::Relaxed)
                        && sent.fetch_add(1, Ordering::Relaxed) < max
                    {
                        let started = Instant::now();
                        let outcome = match http.get(url.clone()).send().await {
                            Ok(resp) => {
                                let status = resp.status().as_u16();
                                match resp.bytes().await {
                                    Ok(_) => Ok(status),
                                    Err(e) => Err(failure_kind(&e)),
                                }
                            }
                            Err(e) => Err(failure_kind(&e)),
                        };
                        if let Ok(mut w) = window.lock() {
                            w.record(outcome, started.elapsed());
                        }
                        next += pause;
                        tokio::time::sleep_until(next).await;
                    }
                })
            })
            .collect();
        Ok(Self {
            window,
            stop,
            clients,
        })
    }

    /// Closes the current window (returning it) and opens the next.
    pub fn window(&self) -> Window {
        self.window
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default()
    }

    /// Stops the clients (requests under way finish) and returns the last window.
    pub async fn stop(mut self) -> Window {
        self.stop.store(true, Ordering::Relaxed);
        for c in std::mem::take(&mut self.clients) {
            let _ = c.await;
        }
        self.window()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_counts_failures_by_kind_and_its_percentiles() {
        let mut w = Window::default();
        for ms in 1..=100 {
            w.record(Ok(200), Duration::from_millis(ms));
        }
        w.record(Ok(404), Duration::from_millis(1));
        w.record(Ok(502), Duration::from_millis(1));
        w.record(Err("connect".into()), Duration::from_millis(1));
        let s = w.summary();
        assert_eq!(s.requests, 103);
        assert_eq!(s.failed, 2, "a 404 is an answer, not a failure");
        assert_eq!(s.failures["502"], 1);
        assert_eq!(s.failures["connect"], 1);
        assert_eq!(s.max_ms, 100.0);
        assert_eq!(s.p50_ms, 49.0);
        assert_eq!(s.p99_ms, 99.0);
        assert_eq!(Window::default().summary().p99_ms, 0.0);
    }
}

//! Canary deploys: the new release gets a growing share of requests in steps, and after
//! each step its responses are compared with the stable release's over the same time —
//! error rate (and what it burns of the SLO's error budget) and latency. Pure functions of
//! the edge's counters, so that the decision is the same wherever it is made.

use crate::metrics::RequestSeries;
use serde::{Deserialize, Serialize};

/// Default steps: share of requests (percent) the canary gets before it takes them all.
pub const DEFAULT_STEPS: [u8; 2] = [10, 50];
/// Default length of a step.
pub const DEFAULT_STEP_SECS: u64 = 30;
/// How much higher (absolute) the canary's 5xx share may be than the stable release's.
pub const ERROR_RATE_MARGIN: f64 = 0.05;
/// How many times the stable release's mean latency (plus [`LATENCY_SLACK_SECS`]) the
/// canary's may be.
pub const LATENCY_FACTOR: f64 = 2.0;
pub const LATENCY_SLACK_SECS: f64 = 0.1;

/// How a release rolls out as a canary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CanarySpec {
    /// Percent of requests at each step, increasing, each below 100.
    pub steps: Vec<u8>,
    /// How long each step lasts before its analysis, seconds.
    pub step_secs: u64,
    /// Clients keep their side (by address) across requests and steps.
    #[serde(default)]
    pub sticky: bool,
}

impl Default for CanarySpec {
    fn default() -> Self {
        Self {
            steps: DEFAULT_STEPS.to_vec(),
            step_secs: DEFAULT_STEP_SECS,
            sticky: false,
        }
    }
}

/// What happened during one step, per release: the counters' growth.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Window {
    pub requests: u64,
    pub errors: u64,
    pub latency_sum_seconds: f64,
}

impl Window {
    /// The growth of a release's counters from `before` to `after` (the edge restarting in
    /// between reads as everything since then).
    pub fn between(before: Option<&RequestSeries>, after: Option<&RequestSeries>) -> Self {
        let Some(after) = after else {
            return Self::default();
        };
        let (requests, errors, latency) = match before {
            Some(b) if b.count() <= after.count() => (
                after.count() - b.count(),
                after.responses[4].saturating_sub(b.responses[4]),
                (after.latency_sum_seconds - b.latency_sum_seconds).max(0.0),
            ),
            _ => (after.count(), after.responses[4], after.latency_sum_seconds),
        };
        Self {
            requests,
            errors,
            latency_sum_seconds: latency,
        }
    }

    fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    fn mean_latency(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.latency_sum_seconds / self.requests as f64
        }
    }
}

/// The verdict on a step: `Err` says why the canary must be rolled back.
pub fn analyse(
    canary: Window,
    stable: Window,
    availability_objective: f64,
    canary_release: u32,
    stable_release: u32,
) -> Result<String, String> {
    if canary.requests == 0 {
        return Ok(format!("v{canary_release} got no requests in this step"));
    }
    let (c_err, s_err) = (canary.error_rate(), stable.error_rate());
    let budget = (1.0 - availability_objective).max(1e-6);
    let burn = c_err / budget;
    if c_err > s_err + ERROR_RATE_MARGIN && burn > 1.0 {
        return Err(format!(
            "v{canary_release} answered 5xx to {:.0}% of {} requests, v{stable_release} to {:.0}% of {} (burning the SLO's error budget {burn:.0}× as fast as it allows)",
            c_err * 100.0,
            canary.requests,
            s_err * 100.0,
            stable.requests
        ));
    }
    let (c_lat, s_lat) = (canary.mean_latency(), stable.mean_latency());
    if stable.requests > 0 && c_lat > s_lat * LATENCY_FACTOR + LATENCY_SLACK_SECS {
        return Err(format!(
            "v{canary_release} took {:.0} ms per request on average, v{stable_release} {:.0} ms",
            c_lat * 1000.0,
            s_lat * 1000.0
        ));
    }
    Ok(format!(
        "v{canary_release}: {} requests, 5xx {:.1}%, {:.0} ms on average; v{stable_release}: {} requests, 5xx {:.1}%, {:.0} ms",
        canary.requests,
        c_err * 100.0,
        c_lat * 1000.0,
        stable.requests,
        s_err * 100.0,
        s_lat * 1000.0
    ))
}

/// Checks steps from berth.toml.
pub fn validate_steps(steps: &[u8]) -> Result<(), String> {
    if steps.is_empty() {
        return Err("deploy.steps: give at least one step, e.g. [10, 50]".into());
    }
    if steps.iter().any(|s| *s == 0 || *s >= 100) {
        return Err(
            "deploy.steps: each step is a percent between 1 and 99 (100 is the end)".into(),
        );
    }
    if steps.windows(2).any(|w| w[0] >= w[1]) {
        return Err("deploy.steps: steps must grow, e.g. [10, 50]".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(requests: u64, errors: u64, latency: f64) -> Window {
        Window {
            requests,
            errors,
            latency_sum_seconds: latency * requests as f64,
        }
    }

    #[test]
    fn a_canary_failing_requests_or_slower_is_rolled_back() {
        let why = analyse(w(50, 24, 0.01), w(450, 0, 0.01), 0.999, 2, 1).unwrap_err();
        assert!(why.contains("5xx to 48% of 50 requests"), "{why}");
        let why = analyse(w(50, 0, 0.9), w(450, 0, 0.01), 0.999, 2, 1).unwrap_err();
        assert!(why.contains("900 ms"), "{why}");
        // As good as the stable one, or slightly worse within the margins: on it goes.
        assert!(analyse(w(50, 1, 0.02), w(450, 5, 0.01), 0.999, 2, 1).is_ok());
        // Errors the stable release has too are not the canary's fault.
        assert!(analyse(w(50, 10, 0.01), w(450, 90, 0.01), 0.999, 2, 1).is_ok());
        // No requests: nothing says it is worse.
        assert!(analyse(w(0, 0, 0.0), w(450, 0, 0.01), 0.999, 2, 1).is_ok());
    }

    #[test]
    fn windows_are_counter_growth_and_survive_an_edge_restart() {
        let s = |n: u64, e: u64| RequestSeries {
            responses: [0, n - e, 0, 0, e],
            latency_sum_seconds: n as f64 * 0.01,
            ..Default::default()
        };
        let win = Window::between(Some(&s(100, 2)), Some(&s(150, 7)));
        assert_eq!((win.requests, win.errors), (50, 5));
        let restarted = Window::between(Some(&s(100, 2)), Some(&s(30, 1)));
        assert_eq!((restarted.requests, restarted.errors), (30, 1));
        assert_eq!(Window::between(None, None), Window::default());
    }

    #[test]
    fn steps_grow_between_1_and_99() {
        assert!(validate_steps(&[10, 50]).is_ok());
        assert!(validate_steps(&[]).is_err());
        assert!(validate_steps(&[50, 10]).is_err());
        assert!(validate_steps(&[10, 100]).is_err());
    }
}

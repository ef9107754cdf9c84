//! Service level objectives of an app and their multi-window, multi-burn-rate alerts, as in
//! the SRE workbook: an availability objective (share of responses that are not 5xx) and a
//! latency objective (share of responses faster than a threshold), each alerting when its
//! error budget burns too fast over a long and a short window at once:
//!
//! | severity | long window | short window | burn rate |
//! |---|---|---|---|
//! | page | 1h | 5m | 14.4 |
//! | page | 6h | 30m | 6 |
//! | ticket | 3d | 6h | 1 |
//!
//! The error budget is counted over 30 days. All windows can be scaled by one factor (for
//! drills); the rules stay the same.

use crate::metrics::LATENCY_BUCKETS;
use serde::{Deserialize, Serialize};

/// Default availability objective, percent.
pub const DEFAULT_AVAILABILITY: f64 = 99.9;
/// Default latency objective: this share of responses…
pub const DEFAULT_LATENCY_P: f64 = 0.99;
/// …faster than this many milliseconds.
pub const DEFAULT_LATENCY_MS: u64 = 300;
/// The error budget's window, seconds.
pub const BUDGET_WINDOW: i64 = 30 * 86_400;

/// An app's objectives.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SloSpec {
    /// Percent of responses that are not 5xx.
    pub availability: f64,
    /// Share of responses (0–1) that must be faster than `latency_ms`.
    pub latency_p: f64,
    /// The latency threshold, milliseconds (one of the histogram's bucket bounds).
    pub latency_ms: u64,
}

// Objectives are validated finite numbers, never NaN, so equality is total.
impl Eq for SloSpec {}

impl Default for SloSpec {
    fn default() -> Self {
        Self {
            availability: DEFAULT_AVAILABILITY,
            latency_p: DEFAULT_LATENCY_P,
            latency_ms: DEFAULT_LATENCY_MS,
        }
    }
}

/// Latency thresholds that can be objectives: the histogram's bucket bounds, in ms.
pub fn latency_thresholds_ms() -> Vec<u64> {
    LATENCY_BUCKETS
        .iter()
        .map(|b| (b * 1000.0).round() as u64)
        .collect()
}

impl SloSpec {
    /// Every problem, each naming its field under `[slo]`.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.availability > 0.0 && self.availability < 100.0) {
            problems.push(format!(
                "slo.availability: {} must be a percentage above 0 and below 100, e.g. 99.9",
                self.availability
            ));
        }
        if !(self.latency_p > 0.0 && self.latency_p < 1.0) {
            problems.push(format!(
                "slo.latency_p: {} must be a share above 0 and below 1, e.g. 0.99",
                self.latency_p
            ));
        }
        let allowed = latency_thresholds_ms();
        if !allowed.contains(&self.latency_ms) {
            problems.push(format!(
                "slo.latency_ms: {} is not one of the latency histogram's bounds ({})",
                self.latency_ms,
                allowed
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        problems
    }

    /// The objective of an SLI as a share (0–1).
    pub fn objective(&self, sli: Sli) -> f64 {
        match sli {
            Sli::Availability => self.availability / 100.0,
            Sli::Latency => self.latency_p,
        }
    }

    /// The latency threshold in seconds.
    pub fn latency_threshold(&self) -> f64 {
        self.latency_ms as f64 / 1000.0
    }
}

/// What an objective is about.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Sli {
    /// Responses that are not 5xx.
    Availability,
    /// Responses faster than the threshold.
    Latency,
}

impl Sli {
    pub fn as_str(self) -> &'static str {
        match self {
            Sli::Availability => "availability",
            Sli::Latency => "latency",
        }
    }
}

/// How urgent an alert is.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Ticket,
    Page,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ticket => "ticket",
            Severity::Page => "page",
        }
    }
}

/// One row of the alert table: long and short window (seconds) and the burn rate both must
/// exceed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurnAlert {
    pub severity: Severity,
    pub long: i64,
    pub short: i64,
    pub factor: f64,
}

/// The SRE workbook's table.
pub const BURN_ALERTS: [BurnAlert; 3] = [
    BurnAlert {
        severity: Severity::Page,
        long: 3_600,
        short: 300,
        factor: 14.4,
    },
    BurnAlert {
        severity: Severity::Page,
        long: 6 * 3_600,
        short: 1_800,
        factor: 6.0,
    },
    BurnAlert {
        severity: Severity::Ticket,
        long: 3 * 86_400,
        short: 6 * 3_600,
        factor: 1.0,
    },
];

/// Every window the alerts look at, seconds (unscaled).
pub fn windows() -> Vec<i64> {
    let mut w: Vec<i64> = BURN_ALERTS.iter().flat_map(|a| [a.long, a.short]).collect();
    w.sort();
    w.dedup();
    w
}

/// A short name for a window: `5m`, `1h`, `3d`.
pub fn window_name(secs: i64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Responses in a window: all, 5xx, slower than the latency threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Counts {
    pub requests: u64,
    pub errors: u64,
    pub slow: u64,
}

impl Counts {
    /// Bad responses for an SLI.
    pub fn bad(&self, sli: Sli) -> u64 {
        match sli {
            Sli::Availability => self.errors,
            Sli::Latency => self.slow,
        }
    }
}

/// How fast the budget burns: the bad share over the budgeted share (1 = exactly on
/// budget). `None` without traffic.
pub fn burn_rate(counts: Counts, sli: Sli, objective: f64) -> Option<f64> {
    (counts.requests > 0)
        .then(|| counts.bad(sli) as f64 / counts.requests as f64 / (1.0 - objective).max(1e-9))
}

/// The state of one SLI of one app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SliStatus {
    pub sli: Sli,
    /// The objective, as a share.
    pub objective: f64,
    /// Burn rate per window name (unscaled names: `5m`, `1h`, …).
    pub burn_rates: Vec<(String, Option<f64>)>,
    /// Share of the 30-day error budget left (may be negative: overspent).
    pub budget_remaining: Option<f64>,
    /// The alerts whose windows both burn too fast (page and ticket alert independently).
    pub firing: Vec<Severity>,
}

/// Evaluates an SLI: `counts(window)` gives the responses of the last `window` seconds
/// (already scaled by the caller's `scale`).
pub fn evaluate(spec: &SloSpec, sli: Sli, scale: f64, counts: &dyn Fn(i64) -> Counts) -> SliStatus {
    let objective = spec.objective(sli);
    let scaled = |w: i64| ((w as f64 * scale).round() as i64).max(1);
    let burn_rates = windows()
        .into_iter()
        .map(|w| (window_name(w), burn_rate(counts(scaled(w)), sli, objective)))
        .collect();
    let mut firing: Vec<Severity> = BURN_ALERTS
        .iter()
        .filter(|a| {
            let over =
                |w| burn_rate(counts(scaled(w)), sli, objective).is_some_and(|b| b > a.factor);
            over(a.long) && over(a.short)
        })
        .map(|a| a.severity)
        .collect();
    firing.sort();
    firing.dedup();
    firing.reverse();
    let budget = counts(scaled(BUDGET_WINDOW));
    let budget_remaining = burn_rate(budget, sli, objective).map(|b| 1.0 - b);
    SliStatus {
        sli,
        objective,
        burn_rates,
        budget_remaining,
        firing,
    }
}

/// `berth slo APP` as the API answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SloView {
    pub app: String,
    pub spec: SloSpec,
    /// Factor the windows are scaled by (1 in production).
    pub time_scale: f64,
    pub slis: Vec<SliStatus>,
}

/// Prometheus recording and alerting rules (YAML) for the objectives of `apps`, in the
/// style of Sloth: the error ratio of each SLI over each window as a recording rule
/// `berth:slo_error_ratio:rate<window>{app, slo}`, then one page and one ticket alert per SLI
/// from the same burn-rate table berth evaluates itself.
pub fn prometheus_rules(apps: &[(String, SloSpec)]) -> String {
    prometheus_rules_for(apps, &RequestMetrics::Edge)
}

/// ingress-nginx's request duration histogram bounds (its defaults), seconds.
pub const INGRESS_NGINX_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Where the rules read an app's requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestMetrics {
    /// berth's edge: `berth_http_requests_total` and `berth_http_request_duration_seconds`
    /// by `app`.
    Edge,
    /// On a cluster, the ingress-nginx controller in front of the app's Ingress (named as
    /// the app, in this namespace): `nginx_ingress_controller_requests` and
    /// `nginx_ingress_controller_request_duration_seconds`, as its ServiceMonitor labels them.
    IngressNginx { namespace: String },
}

impl RequestMetrics {
    /// The latency bound the rules check: the objective's, or where the histogram has no
    /// such bound (ingress-nginx has no 300 ms), the largest one below it — stricter.
    pub fn latency_bound(&self, spec: &SloSpec) -> f64 {
        let want = spec.latency_threshold();
        match self {
            RequestMetrics::Edge => want,
            RequestMetrics::IngressNginx { .. } => INGRESS_NGINX_BUCKETS
                .iter()
                .copied()
                .filter(|b| *b <= want + 1e-9)
                .fold(INGRESS_NGINX_BUCKETS[0], f64::max),
        }
    }

    /// The share of responses that were 5xx over window `w`.
    fn error_ratio(&self, app: &str, w: &str) -> String {
        match self {
            RequestMetrics::Edge => format!(
                "sum(rate(berth_http_requests_total{{app=\"{app}\",code=\"5xx\"}}[{w}])) / sum(rate(berth_http_requests_total{{app=\"{app}\"}}[{w}]))"
            ),
            RequestMetrics::IngressNginx { namespace } => {
                let sel = format!("exported_namespace=\"{namespace}\",ingress=\"{app}\"");
                format!(
                    "sum(rate(nginx_ingress_controller_requests{{{sel},status=~\"5..\"}}[{w}])) / sum(rate(nginx_ingress_controller_requests{{{sel}}}[{w}]))"
                )
            }
        }
    }

    /// The share of responses slower than `bound` over window `w`.
    fn slow_ratio(&self, app: &str, w: &str, bound: f64) -> String {
        let (metric, sel, le) = match self {
            // The edge's exposition writes bounds as `0.3`, `1.0`; Go's as `0.3`, `1`.
            RequestMetrics::Edge => (
                "berth_http_request_duration_seconds",
                format!("app=\"{app}\""),
                format!("{bound:?}"),
            ),
            RequestMetrics::IngressNginx { namespace } => (
                "nginx_ingress_controller_request_duration_seconds",
                format!("exported_namespace=\"{namespace}\",ingress=\"{app}\""),
                format!("{bound}"),
            ),
        };
        format!(
            "1 - (sum(rate({metric}_bucket{{{sel},le=\"{le}\"}}[{w}])) / sum(rate({metric}_count{{{sel}}}[{w}])))"
        )
    }
}

/// [`prometheus_rules`] over the requests `source` counts.
pub fn prometheus_rules_for(apps: &[(String, SloSpec)], source: &RequestMetrics) -> String {
    let mut out = String::from(
        "# SLO rules generated by berth (multi-window, multi-burn-rate; see `berth slo --help`).\ngroups:\n",
    );
    for (app, spec) in apps {
        out.push_str(&format!("  - name: berth-slo-{app}\n    rules:\n"));
        let bound = source.latency_bound(spec);
        for w in windows() {
            let w = window_name(w);
            let availability = source.error_ratio(app, &w);
            let latency = source.slow_ratio(app, &w, bound);
            for (sli, expr) in [(Sli::Availability, availability), (Sli::Latency, latency)] {
                out.push_str(&format!(
                    "      - record: berth:slo_error_ratio:rate{w}\n        expr: {expr}\n        labels:\n          app: {app}\n          slo: {}\n",
                    sli.as_str()
                ));
            }
        }
        for sli in [Sli::Availability, Sli::Latency] {
            let budget = 1.0 - spec.objective(sli);
            for severity in [Severity::Page, Severity::Ticket] {
                let terms: Vec<String> = BURN_ALERTS
                    .iter()
                    .filter(|a| a.severity == severity)
                    .map(|a| {
                        let sel = format!("{{app=\"{app}\",slo=\"{}\"}}", sli.as_str());
                        format!(
                            "(berth:slo_error_ratio:rate{}{sel} > ({} * {budget:.6}) and berth:slo_error_ratio:rate{}{sel} > ({} * {budget:.6}))",
                            window_name(a.long),
                            a.factor,
                            window_name(a.short),
                            a.factor
                        )
                    })
                    .collect();
                let name = format!(
                    "BerthSlo{}{}",
                    if sli == Sli::Availability {
                        "Availability"
                    } else {
                        "Latency"
                    },
                    if severity == Severity::Page {
                        "Page"
                    } else {
                        "Ticket"
                    }
                );
                out.push_str(&format!(
                    "      - alert: {name}\n        expr: {}\n        labels:\n          app: {app}\n          slo: {}\n          severity: {}\n        annotations:\n          summary: \"{app} is burning its {} error budget too fast\"\n",
                    terms.join(" or "),
                    sli.as_str(),
                    severity.as_str(),
                    sli.as_str()
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_name_each_window_and_threshold() {
        let rules = prometheus_rules(&[("shop".into(), SloSpec::default())]);
        assert!(rules.contains("- record: berth:slo_error_ratio:rate5m"));
        assert!(rules.contains("- record: berth:slo_error_ratio:rate3d"));
        assert!(rules.contains("le=\"0.3\""), "{rules}");
        assert!(rules.contains("- alert: BerthSloAvailabilityPage"));
        assert!(
            rules.contains("rate1h{app=\"shop\",slo=\"availability\"} > (14.4 * 0.001000)"),
            "{rules}"
        );
        assert_eq!(rules.matches("- alert: ").count(), 4);
    }

    #[test]
    fn on_a_cluster_the_rules_read_the_ingress_controller() {
        let nginx = RequestMetrics::IngressNginx {
            namespace: "berth-team".into(),
        };
        // No 300 ms bound in ingress-nginx's histogram: 250 ms, stricter; 1 s is there.
        assert_eq!(nginx.latency_bound(&SloSpec::default()), 0.25);
        let one_second = SloSpec {
            latency_ms: 1000,
            ..Default::default()
        };
        assert_eq!(nginx.latency_bound(&one_second), 1.0);
        let rules = prometheus_rules_for(&[("shop".into(), one_second)], &nginx);
        assert!(
            rules.contains("nginx_ingress_controller_requests{exported_namespace=\"berth-team\",ingress=\"shop\",status=~\"5..\"}[5m]"),
            "{rules}"
        );
        assert!(rules.contains("le=\"1\""), "{rules}");
        assert!(!rules.contains("berth_http_requests_total"), "{rules}");
        assert_eq!(rules.matches("- alert: ").count(), 4);
    }

    #[test]
    fn objectives_are_checked_field_by_field() {
        assert!(SloSpec::default().validate().is_empty());
        let bad = SloSpec {
            availability: 120.0,
            latency_p: 1.5,
            latency_ms: 333,
        };
        let p = bad.validate();
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("slo.availability: 120"));
        assert!(p[1].starts_with("slo.latency_p: 1.5"));
        assert!(p[2].contains("300") && p[2].starts_with("slo.latency_ms: 333"));
        assert_eq!(window_name(300), "5m");
        assert_eq!(window_name(259_200), "3d");
        assert_eq!(windows(), vec![300, 1_800, 3_600, 21_600, 259_200]);
    }

    /// Responses per window from a steady error share `bad` over the last `recent` seconds
    /// and none before: 100 requests a second.
    fn steady(bad: f64, recent: i64) -> impl Fn(i64) -> Counts {
        move |w: i64| {
            let secs = w.min(recent) as u64;
            let requests = secs * 100;
            let errors = (requests as f64 * bad) as u64;
            Counts {
                requests,
                errors,
                slow: 0,
            }
        }
    }

    #[test]
    fn a_sudden_outage_pages_and_a_slow_leak_tickets() {
        let spec = SloSpec::default();
        // 50% errors for the last 10 minutes: burn 500 over 5m and over 1h → page.
        let s = evaluate(&spec, Sli::Availability, 1.0, &steady(0.5, 600));
        assert_eq!(s.firing, vec![Severity::Page, Severity::Ticket]);
        let five = s
            .burn_rates
            .iter()
            .find(|(w, _)| w == "5m")
            .unwrap()
            .1
            .unwrap();
        assert!((five - 500.0).abs() < 1e-6, "{five}");
        // 0.2% errors for days: burn 2 over 3d and 6h → ticket, not a page.
        let s = evaluate(&spec, Sli::Availability, 1.0, &steady(0.002, 10 * 86_400));
        assert_eq!(s.firing, vec![Severity::Ticket]);
        assert!(s.budget_remaining.unwrap() < 0.0, "overspent");
        // An outage that ended 40 minutes ago: the short windows (5m, 30m) are clean, so it
        // no longer pages although the last hour still burns; the budget it ate still
        // makes a ticket.
        let stopped = |w: i64| {
            let all = steady(0.5, 3_600)(w);
            if w <= 2_400 {
                Counts { errors: 0, ..all }
            } else {
                all
            }
        };
        let s = evaluate(&spec, Sli::Availability, 1.0, &stopped);
        assert_eq!(s.firing, vec![Severity::Ticket]);
        // No traffic: nothing to say.
        let s = evaluate(&spec, Sli::Latency, 1.0, &|_| Counts::default());
        assert!(s.firing.is_empty());
        assert_eq!(s.budget_remaining, None);
        // Scaled windows ask for scaled counts.
        let asked = std::cell::RefCell::new(Vec::new());
        evaluate(&spec, Sli::Latency, 0.01, &|w| {
            asked.borrow_mut().push(w);
            Counts::default()
        });
        assert!(
            asked.borrow().contains(&3),
            "5m × 0.01 = 3 s: {:?}",
            asked.borrow()
        );
        assert!(asked.borrow().contains(&36));
    }
}

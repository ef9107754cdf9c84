//! The DORA four keys, computed from berth's own records of releases and rollouts:
//!
//! - **deployment frequency**: code deploys (releases built from a source) that went live;
//! - **lead time for changes**: from the commit's time to the release serving (median), for
//!   releases whose source was a git checkout;
//! - **change failure rate**: of the code deploys tried, the share that failed to roll out,
//!   was later rolled back, or fired an SLO page within an hour of going live (before the
//!   next rollout);
//! - **time to restore service**: from a failure (a rollout that failed, or a release going
//!   live that was later rolled back) to the next rollout that succeeded (median).
//!
//! Performance bands follow the DORA report's thresholds (2023): deployments at least daily /
//! weekly / monthly; lead time under a day / a week / a month; failure rate up to 5% / 10% /
//! 15%; restore under an hour / a day / a week — elite / high / medium, else low. The overall
//! band is the lowest of the four that can be judged.

use serde::{Deserialize, Serialize};

const DAY: i64 = 86_400;

/// What made a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseKind {
    /// Built from an uploaded source: a change of code.
    Deploy,
    /// An earlier release again.
    Rollback,
    /// Same image, other settings (env, secrets, volumes, database).
    Config,
}

impl ReleaseKind {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseKind::Deploy => "deploy",
            ReleaseKind::Rollback => "rollback",
            ReleaseKind::Config => "config",
        }
    }

    /// From the store.
    pub fn parse(s: &str) -> Self {
        match s {
            "deploy" => ReleaseKind::Deploy,
            "rollback" => ReleaseKind::Rollback,
            _ => ReleaseKind::Config,
        }
    }
}

/// One rollout of a release, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    pub app: String,
    pub release: u32,
    pub kind: ReleaseKind,
    /// When the release's commit was made (git checkouts only).
    pub commit_time: Option<i64>,
    pub started_at: i64,
    /// When it went live (succeeded) or gave up (failed).
    pub finished_at: Option<i64>,
    pub succeeded: bool,
}

/// An SLO page of an app (when it started), for the change failure rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub app: String,
    pub started_at: i64,
}

/// How long after going live an SLO page still counts against a deploy (unless the app
/// rolled out something else first).
pub const PAGE_WINDOW: i64 = 3_600;

/// A performance band.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Band {
    Low,
    Medium,
    High,
    Elite,
}

impl Band {
    /// As shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Band::Low => "low",
            Band::Medium => "medium",
            Band::High => "high",
            Band::Elite => "elite",
        }
    }
}

/// Bands of each key and overall (`None`: nothing to judge yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Bands {
    pub deployment_frequency: Option<Band>,
    pub lead_time: Option<Band>,
    pub change_failure_rate: Option<Band>,
    pub time_to_restore: Option<Band>,
    pub overall: Option<Band>,
}

/// The four keys of one scope (an app, or the platform) over one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DoraView {
    /// An app's name, or `platform`.
    pub scope: String,
    /// The window, e.g. `7d`.
    pub window: String,
    pub window_seconds: i64,
    /// Code deploys that went live.
    pub deployments: u64,
    pub deployments_per_day: f64,
    /// Median commit → serving, seconds.
    pub lead_time_seconds: Option<f64>,
    /// Code deploys tried (succeeded or failed).
    pub attempts: u64,
    /// Of those, failed or later rolled back.
    pub failures: u64,
    pub change_failure_rate: Option<f64>,
    /// Median failure → next successful rollout, seconds.
    pub time_to_restore_seconds: Option<f64>,
    pub bands: Bands,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The four keys of `scope` over `[now - window, now]`, from `rollouts` (of that scope; any
/// order, older ones included so rollbacks can be traced to what they undid).
pub fn compute(
    scope: &str,
    window: &str,
    window_seconds: i64,
    now: i64,
    rollouts: &[Rollout],
    pages: &[Page],
) -> DoraView {
    let from = now - window_seconds;
    let mut sorted: Vec<&Rollout> = rollouts.iter().collect();
    sorted.sort_by_key(|r| (r.started_at, r.release));
    let in_window = |t: i64| t >= from && t <= now;

    // Which live releases were rolled back, and when: a successful rollback undoes the app's
    // last code deploy that went live before it.
    let mut rolled_back: Vec<(&Rollout, i64)> = Vec::new();
    for (i, r) in sorted.iter().enumerate() {
        if r.kind != ReleaseKind::Rollback || !r.succeeded {
            continue;
        }
        let undone = sorted[..i]
            .iter()
            .rev()
            .find(|p| p.app == r.app && p.succeeded && p.kind == ReleaseKind::Deploy);
        if let (Some(undone), Some(done)) = (undone, r.finished_at) {
            rolled_back.push((undone, done));
        }
    }
    let was_rolled_back = |r: &Rollout| {
        rolled_back
            .iter()
            .any(|(u, _)| u.app == r.app && u.release == r.release)
    };

    // A code deploy that went live and then paged (an SLO page of its app before it was
    // replaced, within an hour) failed too; the page's start is when.
    let paged = |r: &Rollout| -> Option<i64> {
        let live = r.finished_at.filter(|_| r.succeeded)?;
        let replaced = sorted
            .iter()
            .filter(|n| n.app == r.app && n.succeeded && n.started_at > r.started_at)
            .filter_map(|n| n.finished_at)
            .min()
            .unwrap_or(i64::MAX);
        let until = replaced.min(live + PAGE_WINDOW);
        pages
            .iter()
            .filter(|p| p.app == r.app && p.started_at >= live && p.started_at < until)
            .map(|p| p.started_at)
            .min()
    };

    let deploys: Vec<&&Rollout> = sorted
        .iter()
        .filter(|r| r.kind == ReleaseKind::Deploy && in_window(r.started_at))
        .collect();
    let live: Vec<&&Rollout> = deploys.iter().copied().filter(|r| r.succeeded).collect();
    let deployments = live.len() as u64;
    let lead_time_seconds = median(
        live.iter()
            .filter_map(|r| Some((r.finished_at? - r.commit_time?).max(0) as f64))
            .collect(),
    );
    let attempts = deploys.len() as u64;
    let failures = deploys
        .iter()
        .filter(|r| !r.succeeded || was_rolled_back(r) || paged(r).is_some())
        .count() as u64;
    let change_failure_rate = (attempts > 0).then(|| failures as f64 / attempts as f64);

    // Failures and when service came back.
    let next_success = |app: &str, after: i64| {
        sorted
            .iter()
            .filter(|r| r.app == app && r.succeeded)
            .filter_map(|r| r.finished_at)
            .filter(|t| *t >= after)
            .min()
    };
    let mut restores = Vec::new();
    for r in &sorted {
        if !r.succeeded && r.kind == ReleaseKind::Deploy && in_window(r.started_at) {
            if let Some(back) = next_success(&r.app, r.finished_at.unwrap_or(r.started_at)) {
                restores.push((back - r.started_at).max(0) as f64);
            }
        }
    }
    for r in &deploys {
        if was_rolled_back(r) {
            continue;
        }
        if let Some(page) = paged(r) {
            if let Some(back) = next_success(&r.app, page) {
                restores.push((back - page).max(0) as f64);
            }
        }
    }
    for (undone, done) in &rolled_back {
        if let Some(live_at) = undone.finished_at {
            if in_window(live_at) {
                restores.push((done - live_at).max(0) as f64);
            }
        }
    }
    let time_to_restore_seconds = median(restores);

    let days = window_seconds as f64 / DAY as f64;
    let deployments_per_day = deployments as f64 / days.max(1.0 / 24.0);
    let bands = bands(
        deployments_per_day,
        deployments,
        lead_time_seconds,
        change_failure_rate,
        time_to_restore_seconds,
    );
    DoraView {
        scope: scope.to_string(),
        window: window.to_string(),
        window_seconds,
        deployments,
        deployments_per_day,
        lead_time_seconds,
        attempts,
        failures,
        change_failure_rate,
        time_to_restore_seconds,
        bands,
    }
}

fn bands(
    per_day: f64,
    deployments: u64,
    lead: Option<f64>,
    cfr: Option<f64>,
    restore: Option<f64>,
) -> Bands {
    let frequency = (deployments > 0).then(|| match per_day {
        d if d >= 1.0 => Band::Elite,
        d if d >= 1.0 / 7.0 => Band::High,
        d if d >= 1.0 / 30.0 => Band::Medium,
        _ => Band::Low,
    });
    let lead_time = lead.map(|s| match s {
        s if s < DAY as f64 => Band::Elite,
        s if s < 7.0 * DAY as f64 => Band::High,
        s if s < 30.0 * DAY as f64 => Band::Medium,
        _ => Band::Low,
    });
    let change_failure_rate = cfr.map(|r| match r {
        r if r <= 0.05 => Band::Elite,
        r if r <= 0.10 => Band::High,
        r if r <= 0.15 => Band::Medium,
        _ => Band::Low,
    });
    let time_to_restore = restore.map(|s| match s {
        s if s < 3_600.0 => Band::Elite,
        s if s < DAY as f64 => Band::High,
        s if s < 7.0 * DAY as f64 => Band::Medium,
        _ => Band::Low,
    });
    let overall = [frequency, lead_time, change_failure_rate, time_to_restore]
        .into_iter()
        .flatten()
        .min();
    Bands {
        deployment_frequency: frequency,
        lead_time,
        change_failure_rate,
        time_to_restore,
        overall,
    }
}

/// The windows berth reports.
pub const WINDOWS: [(&str, i64); 3] = [("1d", DAY), ("7d", 7 * DAY), ("30d", 30 * DAY)];

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn rollout(release: u32, kind: ReleaseKind, at: i64, took: i64, ok: bool) -> Rollout {
        Rollout {
            app: "shop".into(),
            release,
            kind,
            commit_time: (kind == ReleaseKind::Deploy).then_some(at - 7_200),
            started_at: at,
            finished_at: Some(at + took),
            succeeded: ok,
        }
    }

    #[test]
    fn four_keys_from_deploys_a_failure_and_a_rollback() {
        let h = 3_600;
        let rollouts = vec![
            // Long ago: outside every window, but it is what v4's rollback returns to.
            rollout(1, ReleaseKind::Deploy, NOW - 40 * DAY, 60, true),
            rollout(2, ReleaseKind::Deploy, NOW - 10 * h, 60, true),
            rollout(3, ReleaseKind::Deploy, NOW - 9 * h, 30, false),
            rollout(4, ReleaseKind::Deploy, NOW - 8 * h, 60, true),
            rollout(5, ReleaseKind::Config, NOW - 7 * h, 10, true),
            rollout(6, ReleaseKind::Rollback, NOW - 6 * h, 20, true),
            rollout(7, ReleaseKind::Deploy, NOW - 2 * h, 60, true),
        ];
        let v = compute("shop", "1d", DAY, NOW, &rollouts, &[]);
        assert_eq!(v.deployments, 3, "v2, v4, v7 went live");
        assert_eq!(v.attempts, 4);
        // v3 failed; v4 was rolled back. (v5, a config change on top of v4, is not what the
        // rollback undid: rollbacks undo the last code deploy.)
        assert_eq!(v.failures, 2);
        assert_eq!(v.change_failure_rate, Some(0.5));
        // Commit 2 h before each start, live a minute later.
        assert_eq!(v.lead_time_seconds, Some(7_260.0));
        // v3 was tried at −9 h, v4 went live at −8 h+60 s: 3660 s; v4 live at −8 h+60 s →
        // rollback done at −6 h+20 s: 7160 s. The median of the two.
        assert_eq!(v.time_to_restore_seconds, Some((3_660.0 + 7_160.0) / 2.0));
        assert_eq!(v.bands.deployment_frequency, Some(Band::Elite));
        assert_eq!(v.bands.lead_time, Some(Band::Elite));
        assert_eq!(v.bands.change_failure_rate, Some(Band::Low));
        assert_eq!(v.bands.time_to_restore, Some(Band::High));
        assert_eq!(v.bands.overall, Some(Band::Low));

        let month = compute("shop", "30d", 30 * DAY, NOW, &rollouts, &[]);
        assert_eq!(month.deployments, 3, "v1 is older than 30 days");
        assert!((month.deployments_per_day - 0.1).abs() < 1e-9);
        assert_eq!(month.bands.deployment_frequency, Some(Band::Medium));
    }

    #[test]
    fn a_deploy_that_pages_soon_after_going_live_failed() {
        let h = 3_600;
        let rollouts = vec![
            rollout(1, ReleaseKind::Deploy, NOW - 5 * h, 60, true),
            rollout(2, ReleaseKind::Deploy, NOW - 3 * h, 60, true),
            rollout(3, ReleaseKind::Deploy, NOW - h, 60, true),
        ];
        // v2 paged 10 minutes after going live; a page long after v1 went live (but after
        // v2 replaced it) is v2's, not v1's; v3 paged only after an hour: not its fault.
        let page = |at| Page {
            app: "shop".into(),
            started_at: at,
        };
        let pages = [page(NOW - 3 * h + 60 + 600), page(NOW - h + 60 + h + 1)];
        let v = compute("shop", "1d", DAY, NOW + h, &rollouts, &pages);
        assert_eq!(v.attempts, 3);
        assert_eq!(v.failures, 1, "{v:?}");
        // Restored when v3 went live: 2 h − 10 min after the page.
        assert_eq!(v.time_to_restore_seconds, Some((2 * h - 600) as f64));
        // Another app's page is not shop's.
        let other = [Page {
            app: "blog".into(),
            started_at: NOW - 3 * h + 660,
        }];
        assert_eq!(
            compute("shop", "1d", DAY, NOW + h, &rollouts, &other).failures,
            0
        );
    }

    #[test]
    fn nothing_to_judge_without_deploys() {
        let v = compute("quiet", "7d", 7 * DAY, NOW, &[], &[]);
        assert_eq!(v.deployments, 0);
        assert_eq!(v.change_failure_rate, None);
        assert_eq!(v.lead_time_seconds, None);
        assert_eq!(v.bands, Bands::default());
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(ReleaseKind::parse("rollback"), ReleaseKind::Rollback);
        assert_eq!(ReleaseKind::parse("whatever"), ReleaseKind::Config);
    }
}

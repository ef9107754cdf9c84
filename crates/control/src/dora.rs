//! DORA four keys of an app or the whole platform (see `berth_core::dora` for the
//! definitions), from the store's records of rollouts.

use crate::error::ApiError;
use crate::platform::Platform;
use berth_core::dora::{compute, DoraView, WINDOWS};

/// How far back rollouts are read beyond the window, so that a rollback inside the window
/// can be traced to the deploy it undid.
const LOOKBACK: i64 = 30 * DAY;

const DAY: i64 = 86_400;

/// Reads `1d`, `7d`, `30d` or any duration from an hour to 90 days (`36h`, `2w`).
pub fn parse_window(text: &str) -> Result<(String, i64), ApiError> {
    let bad = || {
        ApiError::invalid(
            "invalid_window",
            format!("window {text:?} is not a duration between 1h and 90d"),
        )
        .hint("e.g. 1d, 7d or 30d")
    };
    let secs = humantime::parse_duration(text)
        .map_err(|_| bad())?
        .as_secs() as i64;
    if !(3_600..=90 * 86_400).contains(&secs) {
        return Err(bad());
    }
    Ok((text.to_string(), secs))
}

/// Whose four keys.
#[derive(Debug, Clone, Copy)]
pub enum DoraScope<'a> {
    Platform,
    App(&'a str),
    /// Every app of a project together.
    Project(&'a str),
}

impl DoraScope<'_> {
    /// The scope's name in a view: an app's or project's name, or `platform`.
    fn name(&self) -> String {
        match self {
            DoraScope::Platform => "platform".into(),
            DoraScope::App(a) => a.to_string(),
            DoraScope::Project(p) => format!("project {p}"),
        }
    }
}

/// Days a trend covers at most.
pub const TREND_DAYS: i64 = 90;

impl Platform {
    /// The scope's rollouts since `since` (and, for a project, whether it exists).
    async fn scoped_rollouts(
        &self,
        scope: DoraScope<'_>,
        since: i64,
    ) -> Result<Vec<berth_core::dora::Rollout>, ApiError> {
        match scope {
            DoraScope::Platform => Ok(self.store.rollouts(None, since).await?),
            DoraScope::App(a) => {
                if self.store.app(a).await?.is_none() {
                    return Err(ApiError::app_not_found(a));
                }
                Ok(self.store.rollouts(Some(a), since).await?)
            }
            DoraScope::Project(project) => {
                if self.store.project_quota(project).await?.is_none() {
                    return Err(ApiError::new(
                        axum::http::StatusCode::NOT_FOUND,
                        "project_not_found",
                        format!("no project {project}"),
                    )
                    .hint("`berth projects list` shows them"));
                }
                let apps = self.store.project_apps(project).await?;
                Ok(self
                    .store
                    .rollouts(None, since)
                    .await?
                    .into_iter()
                    .filter(|r| apps.contains(&r.app))
                    .collect())
            }
        }
    }

    /// The four keys of `scope` over `window` (or each standard window).
    pub async fn dora(
        &self,
        scope: DoraScope<'_>,
        window: Option<&str>,
    ) -> Result<Vec<DoraView>, ApiError> {
        let windows: Vec<(String, i64)> = match window {
            Some(w) => vec![parse_window(w)?],
            None => WINDOWS.iter().map(|(n, s)| (n.to_string(), *s)).collect(),
        };
        let now = crate::now_secs();
        let longest = windows.iter().map(|(_, s)| *s).max().unwrap_or(0);
        let rollouts = self
            .scoped_rollouts(scope, now - longest - LOOKBACK)
            .await?;
        let pages = self.store.slo_pages(now - longest - LOOKBACK).await?;
        let name = scope.name();
        Ok(windows
            .iter()
            .map(|(window, secs)| compute(&name, window, *secs, now, &rollouts, &pages))
            .collect())
    }

    /// The four keys of `scope` day by day over the last `days` UTC days, today included
    /// (oldest first): each day's view is of that day alone, with its start as `window`
    /// (`2026-11-30`) — what the dashboard's 30-day charts draw.
    pub async fn dora_trend(
        &self,
        scope: DoraScope<'_>,
        days: i64,
    ) -> Result<Vec<(i64, DoraView)>, ApiError> {
        let days = days.clamp(1, TREND_DAYS);
        let today = crate::now_secs().div_euclid(DAY);
        let first = today - days + 1;
        let rollouts = self.scoped_rollouts(scope, first * DAY - LOOKBACK).await?;
        let pages = self.store.slo_pages(first * DAY - LOOKBACK).await?;
        let name = scope.name();
        Ok((first..=today)
            .map(|d| {
                let start = d * DAY;
                // The window is the day: [start, start + DAY - 1].
                let view = compute(&name, "1d", DAY - 1, start + DAY - 1, &rollouts, &pages);
                (start, view)
            })
            .collect())
    }

    /// The four keys of every app and of the platform, each standard window (for `/metrics`).
    pub async fn dora_everywhere(&self) -> Result<Vec<DoraView>, ApiError> {
        let now = crate::now_secs();
        let longest = WINDOWS.iter().map(|(_, s)| *s).max().unwrap_or(0);
        let rollouts = self.store.rollouts(None, now - longest - LOOKBACK).await?;
        let pages = self.store.slo_pages(now - longest - LOOKBACK).await?;
        let mut out = Vec::new();
        let mut apps: Vec<String> = rollouts.iter().map(|r| r.app.clone()).collect();
        apps.sort();
        apps.dedup();
        for (name, secs) in WINDOWS {
            out.push(compute("platform", name, secs, now, &rollouts, &pages));
            for app in &apps {
                let mine: Vec<_> = rollouts.iter().filter(|r| &r.app == app).cloned().collect();
                out.push(compute(app, name, secs, now, &mine, &pages));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_durations_within_reason() {
        assert_eq!(parse_window("7d").unwrap().1, 7 * 86_400);
        assert_eq!(parse_window("36h").unwrap().1, 36 * 3_600);
        for bad in ["soon", "10m", "365d", ""] {
            let e = parse_window(bad).unwrap_err();
            assert_eq!(e.code, "invalid_window", "{bad}");
        }
    }
}

//! DORA four keys of an app or the whole platform (see `berth_core::dora` for the
//! definitions), from the store's records of rollouts.

use crate::error::ApiError;
use crate::platform::Platform;
use berth_core::dora::{compute, DoraView, WINDOWS};

/// How far back rollouts are read beyond the window, so that a rollback inside the window
/// can be traced to the deploy it undid.
const LOOKBACK: i64 = 30 * 86_400;

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

impl Platform {
    /// The four keys of `app` (or the platform) over `window` (or each standard window).
    pub async fn dora(
        &self,
        app: Option<&str>,
        window: Option<&str>,
    ) -> Result<Vec<DoraView>, ApiError> {
        let windows: Vec<(String, i64)> = match window {
            Some(w) => vec![parse_window(w)?],
            None => WINDOWS.iter().map(|(n, s)| (n.to_string(), *s)).collect(),
        };
        if let Some(a) = app {
            if self.store.app(a).await?.is_none() {
                return Err(ApiError::app_not_found(a));
            }
        }
        let now = crate::now_secs();
        let longest = windows.iter().map(|(_, s)| *s).max().unwrap_or(0);
        let rollouts = self.store.rollouts(app, now - longest - LOOKBACK).await?;
        let pages = self.store.slo_pages(now - longest - LOOKBACK).await?;
        let scope = app.unwrap_or("platform");
        Ok(windows
            .iter()
            .map(|(name, secs)| compute(scope, name, *secs, now, &rollouts, &pages))
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

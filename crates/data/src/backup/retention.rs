//! Which backups a retention policy keeps: like restic's `forget`, the newest backup of each
//! of the last `keep_daily` days that have one, and of each of the last `keep_weekly` ISO
//! weeks (Monday to Sunday, UTC) that have one. The newest backup is always kept.

/// A retention policy; zero for both keeps everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Days to keep one backup of.
    pub keep_daily: u32,
    /// Weeks to keep one backup of.
    pub keep_weekly: u32,
}

impl Retention {
    /// Whether the policy removes anything at all.
    pub fn is_set(&self) -> bool {
        self.keep_daily > 0 || self.keep_weekly > 0
    }

    /// Of `backups` (id, created at in Unix seconds), the ids to delete.
    pub fn to_delete(&self, backups: &[(String, i64)]) -> Vec<String> {
        if !self.is_set() {
            return Vec::new();
        }
        let mut newest_first: Vec<&(String, i64)> = backups.iter().collect();
        newest_first.sort_by(|a, b| (b.1, &b.0).cmp(&(a.1, &a.0)));
        let day = |t: i64| t.div_euclid(86_400);
        // 1970-01-01 was a Thursday: shifting by 3 days makes weeks start on Monday.
        let week = |t: i64| (day(t) + 3).div_euclid(7);
        let mut keep = std::collections::HashSet::new();
        if let Some(first) = newest_first.first() {
            keep.insert(first.0.clone());
        }
        for (bucket, count) in [
            (&day as &dyn Fn(i64) -> i64, self.keep_daily),
            (&week, self.keep_weekly),
        ] {
            let mut seen = Vec::new();
            for (id, at) in &newest_first {
                let b = bucket(*at);
                if seen.contains(&b) {
                    continue;
                }
                if seen.len() as u32 >= count {
                    break;
                }
                seen.push(b);
                keep.insert(id.clone());
            }
        }
        newest_first
            .iter()
            .filter(|(id, _)| !keep.contains(id))
            .map(|(id, _)| id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    // Monday 2026-11-30 00:00 UTC.
    const MONDAY: i64 = 1_795_996_800;

    fn backups(times: &[i64]) -> Vec<(String, i64)> {
        times.iter().map(|t| (format!("b{t}"), *t)).collect()
    }

    #[test]
    fn keeps_the_newest_of_each_recent_day_and_week() {
        assert_eq!((MONDAY / DAY + 3) % 7, 0, "MONDAY starts a week");
        // Four backups a day for 30 days.
        let times: Vec<i64> = (0..30 * 4).map(|i| MONDAY - i * DAY / 4 - 60).collect();
        let all = backups(&times);
        let policy = Retention {
            keep_daily: 7,
            keep_weekly: 4,
        };
        let deleted = policy.to_delete(&all);
        let kept: Vec<i64> = all
            .iter()
            .filter(|(id, _)| !deleted.contains(id))
            .map(|(_, t)| *t)
            .collect();
        // 7 daily (the newest of each of the last 7 days) + the newest of 3 earlier weeks.
        assert_eq!(kept.len(), 7 + 3, "{kept:?}");
        assert!(kept.contains(&times[0]), "the newest is kept");
        // One per day among the daily ones.
        let days: std::collections::BTreeSet<i64> = kept.iter().map(|t| t / DAY).collect();
        assert_eq!(days.len(), kept.len());
        // Weekly ones start each week's newest: the Sunday before each Monday boundary.
        assert!(kept.contains(&(MONDAY - 7 * DAY - 60)));
        assert!(kept.contains(&(MONDAY - 14 * DAY - 60)));
        assert!(kept.contains(&(MONDAY - 21 * DAY - 60)));
        assert!(!kept.contains(&(MONDAY - 28 * DAY - 60)));
    }

    #[test]
    fn no_policy_deletes_nothing_and_the_newest_always_stays() {
        let all = backups(&[10, 20, 30]);
        assert!(Retention::default().to_delete(&all).is_empty());
        let one_day = Retention {
            keep_daily: 1,
            keep_weekly: 0,
        };
        assert_eq!(
            one_day.to_delete(&all),
            vec!["b20".to_string(), "b10".into()]
        );
        assert!(one_day.to_delete(&[]).is_empty());
    }
}

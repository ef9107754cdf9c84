//! DNS records for app names (`berth up --dns rfc2136://…`): every custom domain and every
//! `APP.<base domain>` inside the zone points at the platform, by signed dynamic updates
//! (see [`berth_edge::dns_update`]). One task converges the zone with what berth serves: after
//! any change of routes (woken) and on a timer; a failed update (server down, key refused,
//! name held by someone else) is recorded, logged and retried with back-off, while the name
//! keeps working through the edge. The state of each name is in `berth dns`, `berth domains
//! list` and `berth status` (from `<data>/dns.json`).

use crate::platform::Platform;
use crate::store::Store;
use berth_core::domains::{DnsRecordView, DnsStatus};
use berth_edge::dns_update::DnsUpdater;
use sqlx::Row;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How often the zone is converged when nothing wakes the task.
const PASS_INTERVAL: Duration = Duration::from_secs(2);
/// Longest wait before a failed name is tried again.
const MAX_BACKOFF_SECS: i64 = 60;

/// A name's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRow {
    pub name: String,
    pub app: String,
    /// The records published, `, `-joined.
    pub records: String,
    pub published: bool,
    pub error: Option<String>,
    pub attempts: i64,
    pub updated_at: i64,
}

impl Store {
    /// Every name berth publishes or tried to.
    pub async fn dns_rows(&self) -> Result<Vec<DnsRow>, sqlx::Error> {
        let rows = sqlx::query("SELECT * FROM dns_records ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DnsRow {
                    name: r.try_get("name")?,
                    app: r.try_get("app")?,
                    records: r.try_get("records")?,
                    published: r.try_get::<i64, _>("published")? != 0,
                    error: r.try_get("error")?,
                    attempts: r.try_get("attempts")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect()
    }

    /// The rows by name.
    pub async fn dns_rows_by_name(&self) -> Result<BTreeMap<String, DnsRow>, sqlx::Error> {
        Ok(self
            .dns_rows()
            .await?
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect())
    }

    async fn put_dns_row(&self, row: &DnsRow) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO dns_records (name, app, records, published, error, attempts, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET app = excluded.app, records = excluded.records, published = excluded.published,
             error = excluded.error, attempts = excluded.attempts, updated_at = excluded.updated_at",
        )
        .bind(&row.name)
        .bind(&row.app)
        .bind(&row.records)
        .bind(i64::from(row.published))
        .bind(&row.error)
        .bind(row.attempts)
        .bind(row.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_dns_row(&self, name: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM dns_records WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Whether a failed row is due for another try.
fn due(row: &DnsRow, now: i64) -> bool {
    if row.error.is_none() {
        return true;
    }
    let backoff = (1i64 << row.attempts.clamp(0, 9)).min(MAX_BACKOFF_SECS);
    now - row.updated_at >= backoff
}

fn state_of(row: Option<&DnsRow>, wanted: &str) -> &'static str {
    match row {
        Some(r) if r.error.is_some() => "failed",
        Some(r) if r.published && r.records == wanted => "published",
        _ => "pending",
    }
}

impl Platform {
    /// The names that should point at the platform: name → app.
    async fn wanted_dns_names(
        &self,
        dns: &DnsUpdater,
    ) -> Result<BTreeMap<String, String>, crate::ApiError> {
        let mut wanted = BTreeMap::new();
        for app in self.store.apps().await? {
            for host in self.cfg.app_hosts(&app.name) {
                if dns.settings().covers(&host) {
                    wanted.insert(host, app.name.clone());
                }
            }
        }
        for d in self.store.domains(None).await? {
            if dns.settings().covers(&d.name) {
                wanted.insert(d.name, d.app);
            }
        }
        Ok(wanted)
    }

    /// One pass: publishes what is missing or changed, withdraws what berth no longer
    /// serves, retries failures that are due (all of them when `retry_all`: the first pass
    /// of a start, whose settings may have changed).
    pub async fn converge_dns(&self, retry_all: bool) -> Result<(), crate::ApiError> {
        let Some(dns) = &self.dns else {
            return Ok(());
        };
        let records = dns.settings().describe().join(", ");
        let wanted = self.wanted_dns_names(dns).await?;
        let rows = self.store.dns_rows_by_name().await?;
        let now = crate::now_secs();
        for (name, app) in &wanted {
            let row = rows.get(name);
            if let Some(r) = row {
                if r.published && r.records == records && r.error.is_none() {
                    if r.app != *app {
                        self.store
                            .put_dns_row(&DnsRow {
                                app: app.clone(),
                                ..r.clone()
                            })
                            .await?;
                    }
                    continue;
                }
                if !retry_all && !due(r, now) {
                    continue;
                }
            }
            let published_before = row.is_some_and(|r| r.published);
            let mut next = DnsRow {
                name: name.clone(),
                app: app.clone(),
                records: row.map(|r| r.records.clone()).unwrap_or_default(),
                published: published_before,
                error: None,
                attempts: 0,
                updated_at: now,
            };
            match dns.publish(name, !published_before).await {
                Ok(()) => {
                    tracing::info!(%name, %app, %records, "published DNS records");
                    next.records = records.clone();
                    next.published = true;
                }
                Err(e) => {
                    tracing::warn!(%name, %app, error = %e, "publishing DNS records failed; retrying");
                    next.error = Some(e.to_string());
                    next.attempts = row.map_or(0, |r| r.attempts) + 1;
                }
            }
            self.store.put_dns_row(&next).await?;
        }
        for (name, row) in rows {
            if wanted.contains_key(&name) {
                continue;
            }
            if !row.published {
                self.store.delete_dns_row(&name).await?;
                continue;
            }
            if !retry_all && !due(&row, now) {
                continue;
            }
            match dns.withdraw(&name).await {
                Ok(()) => {
                    tracing::info!(%name, app = %row.app, "withdrew DNS records");
                    self.store.delete_dns_row(&name).await?;
                }
                Err(e) => {
                    tracing::warn!(%name, error = %e, "withdrawing DNS records failed; retrying");
                    self.store
                        .put_dns_row(&DnsRow {
                            error: Some(e.to_string()),
                            attempts: row.attempts + 1,
                            updated_at: now,
                            ..row
                        })
                        .await?;
                }
            }
        }
        self.write_dns_summary().await
    }

    /// `GET /v1/dns`: `None` when berth publishes no records.
    pub async fn dns_status(&self) -> Result<Option<DnsStatus>, crate::ApiError> {
        let Some(dns) = &self.dns else {
            return Ok(None);
        };
        let s = dns.settings();
        let wanted = self.wanted_dns_names(dns).await?;
        let rows = self.store.dns_rows_by_name().await?;
        let mut names: Vec<DnsRecordView> = wanted
            .iter()
            .map(|(name, app)| self.dns_view(name, app, rows.get(name)))
            .collect();
        // Names being withdrawn (or whose withdrawal fails) are shown too.
        for (name, row) in &rows {
            if !wanted.contains_key(name) {
                let mut v = self.dns_view(name, &row.app, Some(row));
                v.state = if row.error.is_some() {
                    "failed"
                } else {
                    "withdrawing"
                }
                .into();
                names.push(v);
            }
        }
        names.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some(DnsStatus {
            server: s.server.clone(),
            zone: s.zone.clone(),
            key: s
                .key
                .as_ref()
                .map(|k| format!("{} ({})", k.name, k.algorithm)),
            records: s.describe(),
            names,
        }))
    }

    fn dns_view(&self, name: &str, app: &str, row: Option<&DnsRow>) -> DnsRecordView {
        let wanted = self
            .dns
            .as_ref()
            .map(|d| d.settings().describe())
            .unwrap_or_default();
        DnsRecordView {
            name: name.to_string(),
            app: app.to_string(),
            state: state_of(row, &wanted.join(", ")).into(),
            records: match row {
                Some(r) if r.published && r.error.is_none() => {
                    r.records.split(", ").map(str::to_string).collect()
                }
                _ => wanted,
            },
            error: row.and_then(|r| r.error.clone()),
            attempts: row.map_or(0, |r| r.attempts),
            updated_at: row.map_or(0, |r| r.updated_at),
        }
    }

    /// A domain's DNS state, for `berth domains list`.
    pub async fn domain_dns(
        &self,
        name: &str,
        app: &str,
    ) -> Result<Option<DnsRecordView>, crate::ApiError> {
        let Some(dns) = &self.dns else {
            return Ok(None);
        };
        if !dns.settings().covers(name) {
            return Ok(Some(DnsRecordView {
                name: name.to_string(),
                app: app.to_string(),
                state: "outside zone".into(),
                records: Vec::new(),
                error: Some(format!(
                    "berth publishes records only in the zone {}; point {name} at this machine yourself",
                    dns.settings().zone
                )),
                attempts: 0,
                updated_at: 0,
            }));
        }
        let row = self
            .store
            .dns_rows()
            .await?
            .into_iter()
            .find(|r| r.name == name);
        Ok(Some(self.dns_view(name, app, row.as_ref())))
    }

    /// `<data>/dns.json`, which `berth status` reads.
    async fn write_dns_summary(&self) -> Result<(), crate::ApiError> {
        let Some(status) = self.dns_status().await? else {
            return Ok(());
        };
        let path = self.cfg.data_dir.join("dns.json");
        let body = serde_json::to_vec(&status)
            .map_err(|e| crate::ApiError::internal("writing dns.json", e))?;
        // The pass runs every few seconds: write only what changed.
        if std::fs::read(&path).is_ok_and(|old| old == body) {
            return Ok(());
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, body)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| crate::ApiError::internal("writing dns.json", e))
    }
}

/// Converges DNS records until shutdown: at once, when woken, and every pass interval.
pub async fn run_dns(platform: Arc<Platform>) {
    if platform.dns.is_none() {
        // A summary of an earlier run with --dns would mislead `berth status`.
        let _ = std::fs::remove_file(platform.cfg.data_dir.join("dns.json"));
        return;
    }
    let mut first = true;
    loop {
        if let Err(e) = platform.converge_dns(std::mem::take(&mut first)).await {
            tracing::warn!(error = %e.message, "converging DNS records failed");
        }
        tokio::select! {
            _ = platform.shutdown.cancelled() => break,
            _ = platform.dns_wake.notified() => {}
            _ = tokio::time::sleep(PASS_INTERVAL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(error: Option<&str>, attempts: i64, updated_at: i64) -> DnsRow {
        DnsRow {
            name: "shop.example.test".into(),
            app: "shop".into(),
            records: "A 192.0.2.1".into(),
            published: false,
            error: error.map(str::to_string),
            attempts,
            updated_at,
        }
    }

    #[test]
    fn failures_back_off_up_to_a_minute() {
        assert!(due(&row(None, 0, 100), 100));
        assert!(!due(&row(Some("x"), 1, 100), 101));
        assert!(due(&row(Some("x"), 1, 100), 102));
        assert!(!due(&row(Some("x"), 4, 100), 115));
        assert!(due(&row(Some("x"), 4, 100), 116));
        assert!(!due(&row(Some("x"), 40, 100), 159));
        assert!(due(&row(Some("x"), 40, 100), 160));
    }

    #[test]
    fn states_follow_the_row() {
        assert_eq!(state_of(None, "A 192.0.2.1"), "pending");
        assert_eq!(
            state_of(Some(&row(Some("refused"), 1, 0)), "A 192.0.2.1"),
            "failed"
        );
        let published = DnsRow {
            published: true,
            ..row(None, 0, 0)
        };
        assert_eq!(state_of(Some(&published), "A 192.0.2.1"), "published");
        assert_eq!(state_of(Some(&published), "A 192.0.2.2"), "pending");
    }
}

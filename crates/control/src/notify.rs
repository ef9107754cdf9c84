//! Delivering alerts: to an Alertmanager (its v2 API: every firing alert is sent again at
//! each pass, and resolved ones with their end time for a while, so an Alertmanager that was
//! down or restarted catches up — nothing is lost and nothing waits on it) and to a generic
//! webhook (JSON, signed with HMAC-SHA256 over `<timestamp>.<body>`), one delivery per raise
//! and per resolve, kept in an outbox and retried with backoff until it is accepted.

use crate::platform::Platform;
use berth_core::alerts::AlertView;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use std::time::Duration;

/// How long resolved alerts keep being sent to Alertmanager.
const RESOLVED_RESEND: i64 = 300;
/// Longest wait between webhook retries.
const MAX_BACKOFF: i64 = 300;

/// Where alerts go.
#[derive(Debug, Clone, Default)]
pub struct AlertTargets {
    /// Alertmanager base URL, e.g. `http://127.0.0.1:9093`.
    pub alertmanager: Option<String>,
    /// A webhook URL and the secret its deliveries are signed with.
    pub webhook: Option<(String, zeroize::Zeroizing<String>)>,
}

/// `BerthSloAvailabilityPage` from `slo_availability_page`.
pub fn alertname(name: &str) -> String {
    let mut out = String::from("Berth");
    for part in name.split('_') {
        let mut c = part.chars();
        if let Some(first) = c.next() {
            out.extend(first.to_uppercase());
            out.push_str(c.as_str());
        }
    }
    out
}

fn rfc3339(unix: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// An alert as Alertmanager's v2 API takes it.
pub fn alertmanager_alert(a: &AlertView) -> serde_json::Value {
    let mut v = json!({
        "labels": {
            "alertname": alertname(&a.name),
            "app": a.app,
            "severity": a.severity,
            "source": "berth",
        },
        "annotations": { "summary": a.summary },
        "startsAt": rfc3339(a.started_at),
    });
    if let Some(end) = a.resolved_at {
        v["endsAt"] = json!(rfc3339(end));
    }
    v
}

/// The signature header value of a webhook delivery.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default()
}

impl Platform {
    /// Queues a webhook delivery of an alert's new state (when a webhook is configured).
    pub(crate) async fn queue_delivery(&self, app: &str, name: &str) {
        if self.cfg.alert_targets.webhook.is_none() {
            return;
        }
        if let Err(e) = self
            .store
            .queue_alert_delivery(app, name, crate::now_secs())
            .await
        {
            tracing::error!(error = %e, "queueing an alert delivery failed");
        }
    }

    /// One delivery pass: Alertmanager gets the current state, the webhook its outbox.
    pub async fn deliver_alerts(&self) {
        let targets = &self.cfg.alert_targets;
        let now = crate::now_secs();
        if let Some(base) = &targets.alertmanager {
            match self.store.alerts(Some(now - RESOLVED_RESEND)).await {
                Ok(alerts) if !alerts.is_empty() => {
                    let body: Vec<serde_json::Value> =
                        alerts.iter().map(alertmanager_alert).collect();
                    let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
                    match client().post(&url).json(&body).send().await {
                        Ok(r) if r.status().is_success() => {}
                        Ok(r) => {
                            tracing::warn!(%url, status = %r.status(), "Alertmanager refused the alerts; sending them again next pass")
                        }
                        Err(e) => {
                            tracing::warn!(%url, error = %e, "Alertmanager unreachable; sending the alerts again next pass")
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "reading alerts failed"),
            }
        }
        if let Some((url, secret)) = &targets.webhook {
            let due = match self.store.due_alert_deliveries(now).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "reading the alert outbox failed");
                    return;
                }
            };
            for (delivery, alert, attempts) in due {
                let body = json!({
                    "version": 1,
                    "delivery": delivery,
                    "status": if alert.resolved_at.is_some() { "resolved" } else { "firing" },
                    "alert": alert,
                })
                .to_string();
                let ts = crate::now_secs();
                let sent = client()
                    .post(url)
                    .header("content-type", "application/json")
                    .header("x-berth-delivery", delivery.to_string())
                    .header("x-berth-timestamp", ts.to_string())
                    .header(
                        "x-berth-signature",
                        sign(secret.as_bytes(), ts, body.as_bytes()),
                    )
                    .body(body)
                    .send()
                    .await;
                let result = match sent {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("answered {}", r.status())),
                    Err(e) => Err(e.to_string()),
                };
                let outcome = match &result {
                    Ok(()) => self.store.alert_delivered(delivery, ts).await,
                    Err(e) => {
                        let wait = (1i64 << attempts.min(8)).min(MAX_BACKOFF);
                        tracing::warn!(%url, error = %e, retry_in_s = wait, "alert webhook failed");
                        self.store
                            .alert_delivery_failed(delivery, e, ts + wait)
                            .await
                    }
                };
                if let Err(e) = outcome {
                    tracing::error!(error = %e, "recording an alert delivery failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_look_like_alertmanager_wants_them() {
        assert_eq!(
            alertname("slo_availability_page"),
            "BerthSloAvailabilityPage"
        );
        assert_eq!(alertname("app_down"), "BerthAppDown");
        let a = AlertView {
            id: "x".into(),
            app: "shop".into(),
            name: "slo_latency_ticket".into(),
            severity: "ticket".into(),
            summary: "slow".into(),
            started_at: 1_800_000_000,
            resolved_at: None,
        };
        let v = alertmanager_alert(&a);
        assert_eq!(v["labels"]["alertname"], "BerthSloLatencyTicket");
        assert_eq!(v["startsAt"], "2027-01-15T08:00:00Z");
        assert!(v.get("endsAt").is_none());
        let v = alertmanager_alert(&AlertView {
            resolved_at: Some(1_800_000_060),
            ..a
        });
        assert_eq!(v["endsAt"], "2027-01-15T08:01:00Z");
    }

    #[test]
    fn signatures_cover_time_and_body() {
        let s = sign(b"secret", 100, b"{}");
        assert!(s.starts_with("sha256=") && s.len() == 7 + 64);
        assert_ne!(s, sign(b"secret", 101, b"{}"));
        assert_ne!(s, sign(b"other", 100, b"{}"));
        assert_eq!(s, sign(b"secret", 100, b"{}"));
    }
}

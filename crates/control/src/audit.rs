//! The audit log: every mutating call — who (token and client), what (action and target),
//! from where, with which request id, how it ended and what it made (release, image
//! digest). Stored in the state store, append-only (the database refuses updates and
//! deletes), so it travels with backups.

use crate::store::Store;
use crate::tokens::Principal;
use berth_core::auth::AuditEntry;
use sqlx::Row;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What is known of a mutating call while it runs.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub principal: Principal,
    pub client: Option<String>,
    pub request_id: String,
    pub source: Option<String>,
    pub action: String,
    /// What the call acts on; a handler may name it (the app a create makes).
    target: Arc<std::sync::Mutex<Option<String>>>,
    /// Set when the call's outcome is recorded later (a workflow streaming its events).
    deferred: Arc<AtomicBool>,
}

tokio::task_local! {
    static CALL: CallContext;
}

impl CallContext {
    /// A context for a call.
    pub fn new(
        principal: Principal,
        client: Option<String>,
        request_id: String,
        source: Option<String>,
        action: String,
        target: Option<String>,
    ) -> Self {
        Self {
            principal,
            client,
            request_id,
            source,
            action,
            target: Arc::new(std::sync::Mutex::new(target)),
            deferred: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Runs `f` (the handler) with this context reachable through [`CallContext::defer`].
    pub async fn scope<F: std::future::Future>(self, f: F) -> F::Output {
        CALL.scope(self, f).await
    }

    /// Takes over recording the current call (from a handler that finishes its work later):
    /// the caller then records the outcome itself.
    pub fn defer() -> Option<CallContext> {
        CALL.try_with(|c| {
            c.deferred.store(true, Ordering::SeqCst);
            c.clone()
        })
        .ok()
    }

    /// The current call's context, in a handler of a mutating call.
    pub fn current() -> Option<CallContext> {
        CALL.try_with(|c| c.clone()).ok()
    }

    /// Names what the current call acts on (when the path does not say).
    pub fn set_target(target: &str) {
        let _ = CALL.try_with(|c| {
            if let Ok(mut t) = c.target.lock() {
                *t = Some(target.to_string());
            }
        });
    }

    /// What the call acts on.
    pub fn target(&self) -> Option<String> {
        self.target.lock().ok().and_then(|t| t.clone())
    }

    /// Whether a handler took over recording.
    pub fn is_deferred(&self) -> bool {
        self.deferred.load(Ordering::SeqCst)
    }

    /// The entry for this call with its outcome.
    pub fn entry(
        &self,
        outcome: &str,
        status: Option<u16>,
        refs: serde_json::Map<String, serde_json::Value>,
        detail: Option<String>,
    ) -> AuditEntry {
        AuditEntry {
            seq: 0,
            at: crate::now_secs(),
            actor: self.principal.name.clone(),
            token_id: self.principal.token_id.clone(),
            client: self.client.clone(),
            request_id: self.request_id.clone(),
            source: self.source.clone(),
            action: self.action.clone(),
            target: self.target(),
            outcome: outcome.to_string(),
            status,
            refs,
            detail,
        }
    }
}

/// The outcome word for an HTTP status.
pub fn outcome_of(status: u16) -> &'static str {
    match status {
        200..=399 => "ok",
        401 | 403 => "denied",
        400..=499 => "refused",
        _ => "failed",
    }
}

/// Which entries `berth audit` wants.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since: Option<i64>,
    pub actor: Option<String>,
    pub target: Option<String>,
    pub limit: Option<u32>,
}

impl Store {
    /// Appends an entry (its `seq` is assigned).
    pub async fn record_audit(&self, e: &AuditEntry) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO audit (at, actor, token_id, client, request_id, source, action, target, outcome, status, refs, detail) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(e.at)
        .bind(&e.actor)
        .bind(&e.token_id)
        .bind(&e.client)
        .bind(&e.request_id)
        .bind(&e.source)
        .bind(&e.action)
        .bind(&e.target)
        .bind(&e.outcome)
        .bind(e.status.map(i64::from))
        .bind(serde_json::Value::Object(e.refs.clone()).to_string())
        .bind(&e.detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Entries passing `f`, oldest first (the last `limit`).
    pub async fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT * FROM (SELECT * FROM audit WHERE at >= ? AND (? IS NULL OR actor = ?) \
             AND (? IS NULL OR target = ?) ORDER BY seq DESC LIMIT ?) ORDER BY seq",
        )
        .bind(f.since.unwrap_or(0))
        .bind(&f.actor)
        .bind(&f.actor)
        .bind(&f.target)
        .bind(&f.target)
        .bind(i64::from(f.limit.unwrap_or(1000)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let refs: String = r.try_get("refs")?;
                Ok(AuditEntry {
                    seq: r.try_get("seq")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    token_id: r.try_get("token_id")?,
                    client: r.try_get("client")?,
                    request_id: r.try_get("request_id")?,
                    source: r.try_get("source")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    outcome: r.try_get("outcome")?,
                    status: r.try_get::<Option<i64>, _>("status")?.map(|s| s as u16),
                    refs: serde_json::from_str(&refs).unwrap_or_default(),
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_audit_log_refuses_updates_and_deletes() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("state.db")).await.unwrap();
        let ctx = CallContext::new(
            Principal::bootstrap(),
            Some("cli".into()),
            "req-1".into(),
            Some("127.0.0.1".into()),
            "POST /v1/apps/{app}/deploys".into(),
            Some("shop".into()),
        );
        let mut refs = serde_json::Map::new();
        refs.insert("release".into(), 3.into());
        store
            .record_audit(&ctx.entry("succeeded", Some(200), refs, None))
            .await
            .unwrap();
        let got = store.audit(&AuditFilter::default()).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].refs["release"], 3);
        assert_eq!(got[0].actor, "admin");
        let upd = sqlx::query("UPDATE audit SET actor = 'someone else'")
            .execute(&store.pool)
            .await;
        assert!(upd.unwrap_err().to_string().contains("append-only"));
        let del = sqlx::query("DELETE FROM audit").execute(&store.pool).await;
        assert!(del.unwrap_err().to_string().contains("append-only"));
        let only_bob = AuditFilter {
            actor: Some("bob".into()),
            ..Default::default()
        };
        assert!(store.audit(&only_bob).await.unwrap().is_empty());
    }
}

//! Certificates for every host the edge serves: each app's own hosts and its custom domains.
//! Names no public CA certifies (`*.localhost`), and every name when no ACME directory is
//! configured, get certificates from berth's local CA; the others from the ACME directory
//! (HTTP-01, answered by the edge). A new domain is served at once with a local certificate
//! until its ACME certificate arrives. Certificates are renewed when a third of their
//! lifetime is left. Private keys are sealed by the keyring in the store, and handed to the
//! edge only through a file in RAM.

use crate::error::ApiError;
use crate::platform::Platform;
use crate::tls_store::{CertRow, TlsKeyRow};
use berth_core::domains::is_local_only;
use berth_data::secrets::Sealed;
use berth_edge::acme::{Acme, AcmeSettings};
use berth_edge::certs::{facts, CertEntry, CertSnapshot};
use berth_edge::local_ca::LocalCa;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Lifetime of certificates from the local CA.
pub const LOCAL_CERT_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// Default time between renewal checks.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(3600);
/// Longest wait for an ACME directory to validate and issue.
pub const ACME_PATIENCE: Duration = Duration::from_secs(60);
/// Key name of the local CA in the store.
const LOCAL_CA: &str = "local-ca";
/// The name the fallback certificate is issued for.
const FALLBACK_HOST: &str = "localhost";

/// Where a host's certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issuer {
    /// berth's own CA.
    Local,
    /// The configured ACME directory.
    Acme,
}

impl Issuer {
    fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Acme => "acme",
        }
    }
}

/// The certificate manager's settings and state.
pub struct Certificates {
    /// ACME directory, if configured.
    pub acme: Option<AcmeSettings>,
    /// Time between renewal checks.
    pub check_interval: Duration,
    snapshot_path: PathBuf,
    account: tokio::sync::Mutex<Option<Acme>>,
    /// One issuing pass at a time.
    pass: tokio::sync::Mutex<()>,
    last_published: std::sync::Mutex<Option<Vec<u8>>>,
    generation: std::sync::atomic::AtomicU64,
}

impl Certificates {
    /// A manager writing the edge's certificate snapshot to `snapshot_path`.
    pub fn new(
        acme: Option<AcmeSettings>,
        check_interval: Duration,
        snapshot_path: PathBuf,
    ) -> Self {
        Self {
            acme,
            check_interval,
            snapshot_path,
            account: tokio::sync::Mutex::new(None),
            pass: tokio::sync::Mutex::new(()),
            last_published: std::sync::Mutex::new(None),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Where the edge reads certificates from.
    pub fn snapshot_path(&self) -> &std::path::Path {
        &self.snapshot_path
    }

    /// Who certifies `host`.
    pub fn issuer_for(&self, host: &str) -> Issuer {
        if self.acme.is_some() && !is_local_only(host) {
            Issuer::Acme
        } else {
            Issuer::Local
        }
    }
}

fn cert_context(host: &str) -> String {
    format!("tls/cert/{host}")
}

fn key_context(name: &str) -> String {
    format!("tls/key/{name}")
}

/// Whether a certificate is due: a third of its lifetime or less is left.
pub fn due_for_renewal(issued_at: i64, not_after: i64, now: i64) -> bool {
    let lifetime = (not_after - issued_at).max(1);
    not_after - now < lifetime / 3
}

/// What one pass did.
#[derive(Debug, Default)]
pub struct PassReport {
    /// Hosts that got a new certificate.
    pub issued: Vec<String>,
    /// Hosts whose issuance failed, with the reason.
    pub failed: Vec<(String, String)>,
}

impl Platform {
    /// Every host that needs a certificate → (app, https_redirect, is a custom domain).
    async fn wanted_hosts(&self) -> Result<BTreeMap<String, bool>, ApiError> {
        let mut hosts = BTreeMap::new();
        hosts.insert(FALLBACK_HOST.to_string(), false);
        for h in self.cfg.platform_hosts() {
            hosts.insert(h, false);
        }
        for app in self.store.apps().await? {
            for h in self.cfg.app_hosts(&app.name) {
                hosts.insert(h, false);
            }
        }
        for d in self.store.domains(None).await? {
            hosts.insert(d.name, true);
        }
        Ok(hosts)
    }

    /// The local CA, created on first use.
    pub async fn local_ca(&self) -> Result<LocalCa, ApiError> {
        if let Some(row) = self.store.tls_key(LOCAL_CA).await? {
            let key = self
                .keyring
                .read()
                .await
                .open_sealed(
                    &key_context(LOCAL_CA),
                    &Sealed {
                        key_id: row.key_id,
                        data: row.sealed,
                    },
                )
                .map_err(|e| ApiError::internal("opening the local CA key", e))?;
            let key = zeroize::Zeroizing::new(String::from_utf8_lossy(&key).to_string());
            return LocalCa::from_pem(row.public_pem.as_deref().unwrap_or_default(), &key)
                .map_err(|e| ApiError::internal("reading the local CA", e));
        }
        let label = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "berth".into());
        let ca = LocalCa::generate(&label)
            .map_err(|e| ApiError::internal("creating the local CA", e))?;
        let sealed = self
            .keyring
            .read()
            .await
            .seal(&key_context(LOCAL_CA), ca.key_pem().as_bytes())
            .map_err(|e| ApiError::internal("sealing the local CA key", e))?;
        self.store
            .put_tls_key(&TlsKeyRow {
                name: LOCAL_CA.into(),
                public_pem: Some(ca.cert_pem().to_string()),
                key_id: sealed.key_id,
                sealed: sealed.data,
                created_at: crate::now_secs(),
            })
            .await?;
        tracing::info!("created berth's local certificate authority");
        Ok(ca)
    }

    async fn store_certificate(
        &self,
        host: &str,
        issuer: Issuer,
        chain_pem: String,
        key_pem: &str,
    ) -> Result<(), ApiError> {
        let f =
            facts(&chain_pem).map_err(|e| ApiError::internal("reading a new certificate", e))?;
        let sealed = self
            .keyring
            .read()
            .await
            .seal(&cert_context(host), key_pem.as_bytes())
            .map_err(|e| ApiError::internal("sealing a certificate key", e))?;
        self.store
            .put_certificate(&CertRow {
                name: host.to_string(),
                source: issuer.as_str().into(),
                chain_pem,
                key_id: sealed.key_id,
                sealed_key: sealed.data,
                not_after: f.not_after,
                issued_at: crate::now_secs().min(f.not_after),
            })
            .await?;
        Ok(())
    }

    async fn issue_local(&self, ca: &LocalCa, host: &str) -> Result<(), ApiError> {
        let issued = ca
            .issue(&[host.to_string()], LOCAL_CERT_LIFETIME)
            .map_err(|e| ApiError::internal("issuing a local certificate", e))?;
        self.store_certificate(host, Issuer::Local, issued.chain_pem, &issued.key_pem)
            .await
    }

    /// The ACME account, registered on first use (its key sealed in the store).
    async fn acme_account(&self) -> Result<(), String> {
        let Some(settings) = self.certificates.acme.clone() else {
            return Err("no ACME directory is configured".into());
        };
        let mut account = self.certificates.account.lock().await;
        if account.is_some() {
            return Ok(());
        }
        let name = format!("acme:{}", settings.directory);
        let stored = match self.store.tls_key(&name).await.map_err(|e| e.to_string())? {
            Some(row) => {
                let plain = self
                    .keyring
                    .read()
                    .await
                    .open_sealed(
                        &key_context(&name),
                        &Sealed {
                            key_id: row.key_id,
                            data: row.sealed,
                        },
                    )
                    .map_err(|e| e.to_string())?;
                Some(zeroize::Zeroizing::new(
                    String::from_utf8_lossy(&plain).to_string(),
                ))
            }
            None => None,
        };
        let (acme, created) = Acme::connect(&settings, stored.as_deref().map(|s| s.as_str()))
            .await
            .map_err(|e| e.to_string())?;
        if let Some(creds) = created {
            let sealed = self
                .keyring
                .read()
                .await
                .seal(&key_context(&name), creds.as_bytes())
                .map_err(|e| e.to_string())?;
            self.store
                .put_tls_key(&TlsKeyRow {
                    name,
                    public_pem: None,
                    key_id: sealed.key_id,
                    sealed: sealed.data,
                    created_at: crate::now_secs(),
                })
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(directory = %settings.directory, "registered an ACME account");
        }
        *account = Some(acme);
        Ok(())
    }

    /// Gets a certificate for `host` from the ACME directory: the edge answers the HTTP-01
    /// challenge while the directory validates.
    async fn issue_acme(&self, host: &str) -> Result<(), String> {
        self.acme_account().await?;
        let pending = {
            let account = self.certificates.account.lock().await;
            let Some(acme) = account.as_ref() else {
                return Err("no ACME account".into());
            };
            acme.begin(&[host.to_string()])
                .await
                .map_err(|e| e.to_string())?
        };
        let tokens: Vec<String> = pending.challenges.iter().map(|(t, _)| t.clone()).collect();
        self.routes.add_challenges(&pending.challenges);
        let served = self.routes.publish(&self.store).await;
        let result = match served {
            Ok(true) => pending
                .complete(ACME_PATIENCE)
                .await
                .map_err(|e| e.to_string()),
            Ok(false) => Err("the edge did not take the challenge answers in time".into()),
            Err(e) => Err(e.message),
        };
        self.routes.remove_challenges(&tokens);
        if let Err(e) = self.routes.publish(&self.store).await {
            tracing::warn!(error = %e.message, "withdrawing ACME answers from the edge failed");
        }
        let cert = result?;
        self.store_certificate(host, Issuer::Acme, cert.chain_pem, &cert.key_pem)
            .await
            .map_err(|e| e.message)
    }

    /// Issues what is missing or due and forgets certificates no host needs, then hands the
    /// edge the result. With `acme` false only local work is done (fast; used on every
    /// route change); ACME orders run in the renewal loop and when a domain is added.
    pub async fn ensure_certificates(&self, acme: bool) -> Result<PassReport, ApiError> {
        let _pass = self.certificates.pass.lock().await;
        let mut report = PassReport::default();
        let wanted = self.wanted_hosts().await?;
        let existing: BTreeMap<String, CertRow> = self
            .store
            .certificates()
            .await?
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect();
        let now = crate::now_secs();
        let mut ca = None;
        for (host, is_domain) in &wanted {
            let want = self.certificates.issuer_for(host);
            let current = existing.get(host);
            let due = current.is_none_or(|c| due_for_renewal(c.issued_at, c.not_after, now));
            let wrong_source = current.is_some_and(|c| c.source != want.as_str());
            if !due && !wrong_source {
                continue;
            }
            // Served at once by the local CA when there is nothing (usable) yet.
            if current.is_none() || (want == Issuer::Local && (due || wrong_source)) {
                if ca.is_none() {
                    ca = Some(self.local_ca().await?);
                }
                if let Some(ca) = &ca {
                    self.issue_local(ca, host).await?;
                    if want == Issuer::Local {
                        report.issued.push(host.clone());
                    }
                }
            }
            if want == Issuer::Acme && acme {
                match self.issue_acme(host).await {
                    Ok(()) => {
                        tracing::info!(%host, "certificate issued by the ACME directory");
                        report.issued.push(host.clone());
                        if *is_domain {
                            self.store.set_domain_error(host, None).await?;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%host, error = %e, "ACME issuance failed; will retry");
                        if *is_domain {
                            self.store.set_domain_error(host, Some(&e)).await?;
                        }
                        report.failed.push((host.clone(), e));
                    }
                }
            }
        }
        for host in existing.keys() {
            if !wanted.contains_key(host) {
                self.store.delete_certificate(host).await?;
            }
        }
        self.publish_certificates().await?;
        Ok(report)
    }

    /// Writes the certificate snapshot for the edge (only when it changed).
    async fn publish_certificates(&self) -> Result<(), ApiError> {
        let rows = self.store.certificates().await?;
        let mut fallback = None;
        let mut certs = Vec::new();
        {
            let ring = self.keyring.read().await;
            for r in rows {
                let key = ring
                    .open_sealed(
                        &cert_context(&r.name),
                        &Sealed {
                            key_id: r.key_id.clone(),
                            data: r.sealed_key.clone(),
                        },
                    )
                    .map_err(|e| {
                        ApiError::internal(&format!("opening the key of {}", r.name), e)
                    })?;
                let entry = CertEntry {
                    names: vec![r.name.clone()],
                    chain_pem: r.chain_pem.clone(),
                    key_pem: String::from_utf8_lossy(&key).to_string(),
                };
                if r.name == FALLBACK_HOST {
                    fallback = Some(entry);
                } else {
                    certs.push(entry);
                }
            }
        }
        let content = serde_json::to_vec(&(&fallback, &certs))
            .map_err(|e| ApiError::internal("encoding certificates", e))?;
        {
            let last = self
                .certificates
                .last_published
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.as_deref() == Some(content.as_slice()) {
                return Ok(());
            }
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let generation = now_ms.max(
            self.certificates
                .generation
                .load(std::sync::atomic::Ordering::SeqCst)
                + 1,
        );
        self.certificates
            .generation
            .store(generation, std::sync::atomic::Ordering::SeqCst);
        let snapshot = CertSnapshot {
            generation,
            fallback,
            certs,
        };
        let path = self.certificates.snapshot_path.clone();
        tokio::task::spawn_blocking(move || snapshot.save(&path))
            .await
            .map_err(|e| ApiError::internal("writing certificates", e))?
            .map_err(|e| ApiError::internal("writing certificates", e))?;
        // Wait until the edge serves them, so a domain is served with its certificate as
        // soon as the call that added it returns.
        let applied = berth_edge::server::certs_applied_file(&self.certificates.snapshot_path);
        let deadline = std::time::Instant::now() + crate::routing::APPLY_TIMEOUT;
        while self.cfg.edge_tls_listen.is_some() {
            let served = std::fs::read_to_string(&applied)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
            if served.is_some_and(|g| g >= generation) {
                break;
            }
            if std::time::Instant::now() > deadline {
                tracing::warn!(
                    generation,
                    "the edge did not confirm the new certificates in time"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        *self
            .certificates
            .last_published
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(content);
        Ok(())
    }

    /// The local CA's root certificate, for trust stores.
    pub async fn ca_certificate(&self) -> Result<String, ApiError> {
        Ok(self.local_ca().await?.cert_pem().to_string())
    }

    /// Re-seals every TLS key with the keyring's active key (part of key rotation; the
    /// caller holds the keyring's write lock).
    pub async fn reseal_tls(&self, ring: &berth_data::secrets::Keyring) -> Result<usize, ApiError> {
        let mut keys = Vec::new();
        for k in self.store.tls_keys().await? {
            let s = ring
                .reseal(
                    &key_context(&k.name),
                    &Sealed {
                        key_id: k.key_id.clone(),
                        data: k.sealed.clone(),
                    },
                )
                .map_err(|e| ApiError::internal("re-sealing a TLS key", e))?;
            keys.push(TlsKeyRow {
                key_id: s.key_id,
                sealed: s.data,
                ..k
            });
        }
        let mut certs = Vec::new();
        for c in self.store.certificates().await? {
            let s = ring
                .reseal(
                    &cert_context(&c.name),
                    &Sealed {
                        key_id: c.key_id.clone(),
                        data: c.sealed_key.clone(),
                    },
                )
                .map_err(|e| ApiError::internal("re-sealing a certificate key", e))?;
            certs.push(CertRow {
                key_id: s.key_id,
                sealed_key: s.data,
                ..c
            });
        }
        let n = keys.len() + certs.len();
        self.store.reseal_tls(&keys, &certs).await?;
        Ok(n)
    }
}

/// Renews certificates until shutdown: one pass at start, then every check interval.
pub async fn run_renewals(platform: Arc<Platform>) {
    loop {
        if let Err(e) = platform.ensure_certificates(true).await {
            tracing::warn!(error = %e.message, "certificate pass failed");
        }
        tokio::select! {
            _ = platform.shutdown.cancelled() => return,
            _ = tokio::time::sleep(platform.certificates.check_interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_in_the_last_third() {
        assert!(!due_for_renewal(0, 90, 59));
        assert!(due_for_renewal(0, 90, 61));
        assert!(due_for_renewal(0, 90, 100), "expired");
    }
}

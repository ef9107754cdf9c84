//! An app's custom domains: added (refused when malformed or held by another app), served
//! over HTTPS at once (local certificate) and then with a certificate from the ACME directory
//! when one is configured; listed with their certificate; removed.

use crate::error::ApiError;
use crate::platform::Platform;
use crate::tls_store::DomainRow;
use axum::http::StatusCode;
use berth_core::domains::{
    normalize_domain, CertificateView, DomainAdd, DomainView, MAX_DOMAINS_PER_APP,
};

impl Platform {
    /// Who holds `name`: a custom domain of some app, or an app's own host.
    async fn holder_of(&self, name: &str) -> Result<Option<String>, ApiError> {
        if let Some(d) = self.store.domain(name).await? {
            return Ok(Some(d.app));
        }
        for app in self.store.apps().await? {
            if self.cfg.app_hosts(&app.name).iter().any(|h| h == name) {
                return Ok(Some(app.name));
            }
        }
        Ok(None)
    }

    /// Checks a domain can be added to `app`; returns its normal form.
    pub async fn check_new_domain(&self, app: &str, raw: &str) -> Result<String, ApiError> {
        let name = normalize_domain(raw).map_err(|e| {
            ApiError::invalid("invalid_domain", e).hint("give a host name such as shop.example.com")
        })?;
        if let Some(holder) = self.holder_of(&name).await? {
            let message = if holder == app {
                format!("app {app} already has the domain {name}")
            } else {
                format!("domain {name} is already held by app {holder}")
            };
            return Err(
                ApiError::new(StatusCode::CONFLICT, "domain_taken", message).hint(
                    "a domain routes to one app; remove it there first with `berth domains remove`",
                ),
            );
        }
        if self.store.domains(Some(app)).await?.len() >= MAX_DOMAINS_PER_APP {
            return Err(ApiError::invalid(
                "too_many_domains",
                format!("app {app} has {MAX_DOMAINS_PER_APP} domains, the most it may have"),
            ));
        }
        Ok(name)
    }

    /// Adds a domain to an app and gets it a certificate.
    pub async fn add_domain(&self, app: &str, req: &DomainAdd) -> Result<DomainView, ApiError> {
        if self.store.app(app).await?.is_none() {
            return Err(ApiError::app_not_found(app));
        }
        let name = self.check_new_domain(app, &req.name).await?;
        let row = DomainRow {
            name: name.clone(),
            app: app.to_string(),
            https_redirect: req.https_redirect,
            cert_error: None,
            created_at: crate::now_secs(),
        };
        self.store.insert_domain(&row).await.map_err(|e| {
            // Two requests raced for the same name: the store's key decides.
            if e.as_database_error()
                .is_some_and(|d| d.is_unique_violation())
            {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "domain_taken",
                    format!("domain {name} is already held by another app"),
                )
            } else {
                ApiError::internal("recording the domain", e)
            }
        })?;
        // Local certificate and route first, so HTTPS works at once; then ACME, if any.
        self.publish_network().await?;
        if self.certificates.issuer_for(&name) == crate::certificates::Issuer::Acme {
            self.ensure_certificates(true).await?;
        }
        self.domain_view(&name).await
    }

    /// Removes a domain from an app.
    pub async fn remove_domain(&self, app: &str, raw: &str) -> Result<(), ApiError> {
        let name = raw.trim().trim_end_matches('.').to_ascii_lowercase();
        match self.store.domain(&name).await? {
            Some(d) if d.app == app => {}
            _ => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "domain_not_found",
                    format!("app {app} has no domain {name:?}"),
                )
                .hint(format!("list them with `berth domains list {app}`")))
            }
        }
        self.store.delete_domain(&name).await?;
        self.publish_network().await
    }

    /// An app's domains with their certificates.
    pub async fn list_domains(&self, app: &str) -> Result<Vec<DomainView>, ApiError> {
        if self.store.app(app).await?.is_none() {
            return Err(ApiError::app_not_found(app));
        }
        let mut out = Vec::new();
        for d in self.store.domains(Some(app)).await? {
            out.push(self.domain_view(&d.name).await?);
        }
        Ok(out)
    }

    async fn domain_view(&self, name: &str) -> Result<DomainView, ApiError> {
        let d = self.store.domain(name).await?.ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "domain_not_found",
                format!("no domain {name:?}"),
            )
        })?;
        let certificate = self.store.certificate(name).await?.map(|c| {
            let f = berth_edge::certs::facts(&c.chain_pem).ok();
            CertificateView {
                source: c.source,
                issuer: f.as_ref().map(|f| f.issuer.clone()).unwrap_or_default(),
                serial: f.map(|f| f.serial).unwrap_or_default(),
                not_after: c.not_after,
                issued_at: c.issued_at,
            }
        });
        let dns = self.domain_dns(&d.name, &d.app).await?;
        Ok(DomainView {
            url: self
                .cfg
                .https_url(&d.name)
                .unwrap_or_else(|| format!("http://{}:{}/", d.name, self.cfg.edge_listen.port())),
            name: d.name,
            app: d.app,
            https_redirect: d.https_redirect,
            certificate,
            error: d.cert_error,
            dns,
            created_at: d.created_at,
        })
    }
}

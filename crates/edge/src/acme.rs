//! Certificates from any ACME directory (RFC 8555) with HTTP-01 challenges, which the edge
//! answers on its HTTP port. Runs in the control plane, never in the request path: an order
//! is placed ([`Acme::begin`]), the control plane publishes the challenge answers to the
//! edge, then the order is completed ([`PendingOrder::complete`]).

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, Order, OrderStatus, RetryPolicy,
};
use std::path::PathBuf;
use std::time::Duration;
use zeroize::Zeroizing;

/// Errors talking to an ACME directory.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME directory {directory}: {message}")]
    Directory { directory: String, message: String },
    #[error("ACME order for {names}: {message}")]
    Order { names: String, message: String },
    #[error("ACME root certificate {path}: {message}")]
    Root { path: String, message: String },
}

/// Where certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    /// Directory URL (https).
    pub directory: String,
    /// Contact address for the account (expiry notices).
    pub email: Option<String>,
    /// Extra root to trust for the directory itself (test CAs such as pebble).
    pub ca_file: Option<PathBuf>,
}

/// An account at an ACME directory.
pub struct Acme {
    account: Account,
    directory: String,
}

/// An order waiting for its HTTP-01 answers to be served.
pub struct PendingOrder {
    order: Order,
    names: Vec<String>,
    /// token → key authorization, to serve at `/.well-known/acme-challenge/<token>`.
    pub challenges: Vec<(String, String)>,
}

/// An issued certificate.
pub struct AcmeCert {
    /// Leaf then chain, PEM.
    pub chain_pem: String,
    /// PKCS#8 key, PEM.
    pub key_pem: Zeroizing<String>,
}

fn builder(settings: &AcmeSettings) -> Result<instant_acme::AccountBuilder, AcmeError> {
    match &settings.ca_file {
        Some(path) => Account::builder_with_root(path).map_err(|e| AcmeError::Root {
            path: path.display().to_string(),
            message: e.to_string(),
        }),
        None => Account::builder().map_err(|e| AcmeError::Directory {
            directory: settings.directory.clone(),
            message: e.to_string(),
        }),
    }
}

impl Acme {
    /// Opens the stored account (JSON credentials), or registers a new one and returns its
    /// credentials to store.
    pub async fn connect(
        settings: &AcmeSettings,
        stored: Option<&str>,
    ) -> Result<(Self, Option<Zeroizing<String>>), AcmeError> {
        let dir_err = |message: String| AcmeError::Directory {
            directory: settings.directory.clone(),
            message,
        };
        if let Some(json) = stored {
            let creds: AccountCredentials =
                serde_json::from_str(json).map_err(|e| dir_err(format!("stored account: {e}")))?;
            let account = builder(settings)?
                .from_credentials(creds)
                .await
                .map_err(|e| dir_err(e.to_string()))?;
            return Ok((
                Self {
                    account,
                    directory: settings.directory.clone(),
                },
                None,
            ));
        }
        let contact = settings.email.as_ref().map(|e| format!("mailto:{e}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, creds) = builder(settings)?
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                settings.directory.clone(),
                None,
            )
            .await
            .map_err(|e| dir_err(e.to_string()))?;
        let json = serde_json::to_string(&creds).map_err(|e| dir_err(e.to_string()))?;
        Ok((
            Self {
                account,
                directory: settings.directory.clone(),
            },
            Some(Zeroizing::new(json)),
        ))
    }

    /// The directory URL.
    pub fn directory(&self) -> &str {
        &self.directory
    }

    /// Places an order for `names` and returns the HTTP-01 answers to serve.
    pub async fn begin(&self, names: &[String]) -> Result<PendingOrder, AcmeError> {
        let err = |message: String| AcmeError::Order {
            names: names.join(", "),
            message,
        };
        let ids: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
        let mut order = self
            .account
            .new_order(&NewOrder::new(&ids))
            .await
            .map_err(|e| err(e.to_string()))?;
        let mut challenges = Vec::new();
        let mut authzs = order.authorizations();
        while let Some(a) = authzs.next().await {
            let mut a = a.map_err(|e| err(e.to_string()))?;
            if a.status == AuthorizationStatus::Valid {
                continue;
            }
            let c = a
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| err("the directory offers no http-01 challenge".into()))?;
            challenges.push((c.token.clone(), c.key_authorization().as_str().to_string()));
        }
        Ok(PendingOrder {
            order,
            names: names.to_vec(),
            challenges,
        })
    }
}

impl PendingOrder {
    /// Tells the directory the answers are served, waits for validation, and downloads the
    /// certificate. `patience` bounds each wait.
    pub async fn complete(mut self, patience: Duration) -> Result<AcmeCert, AcmeError> {
        let names = self.names.join(", ");
        let err = |message: String| AcmeError::Order {
            names: names.clone(),
            message,
        };
        let mut authzs = self.order.authorizations();
        while let Some(a) = authzs.next().await {
            let mut a = a.map_err(|e| err(e.to_string()))?;
            if a.status != AuthorizationStatus::Pending {
                continue;
            }
            let mut c = a
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| err("the directory offers no http-01 challenge".into()))?;
            c.set_ready().await.map_err(|e| err(e.to_string()))?;
        }
        let retry = RetryPolicy::new()
            .initial_delay(Duration::from_millis(100))
            .backoff(1.5)
            .timeout(patience);
        let status = self
            .order
            .poll_ready(&retry)
            .await
            .map_err(|e| err(e.to_string()))?;
        if status != OrderStatus::Ready {
            let detail = self
                .order
                .state()
                .error
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_else(|| format!("{status:?}"));
            return Err(err(format!("validation failed: {detail}")));
        }
        let key_pem = Zeroizing::new(
            self.order
                .finalize()
                .await
                .map_err(|e| err(e.to_string()))?,
        );
        let chain_pem = self
            .order
            .poll_certificate(&retry)
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok(AcmeCert { chain_pem, key_pem })
    }
}

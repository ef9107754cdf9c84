//! TLS termination: the certificate store the edge picks from by SNI, swapped atomically
//! when the control plane hands over new certificates (a renewal never drops a request:
//! handshakes under way keep the certificate they started with), and the rustls server
//! configuration (TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`).

use crate::certs::{name_matches, CertEntry, CertSnapshot};
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;

/// Errors about certificates and TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate snapshot {path}: {message}")]
    Snapshot { path: String, message: String },
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("private key: {0}")]
    Key(String),
    #[error("local CA: {0}")]
    Ca(String),
}

/// Parses a PEM chain and key into what rustls serves.
pub fn certified_key(entry: &CertEntry) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(entry.chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::Certificate(
            "no certificate in the PEM chain".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(entry.key_pem.as_bytes())
        .map_err(|e| TlsError::Key(e.to_string()))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| TlsError::Key(e.to_string()))
}

/// Certificates by name, compiled from a snapshot.
#[derive(Default)]
pub struct CertStore {
    /// Generation of the snapshot it came from.
    pub generation: u64,
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    fallback: Option<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("generation", &self.generation)
            .field("names", &self.exact.len())
            .finish_non_exhaustive()
    }
}

impl CertStore {
    /// Compiles a snapshot; an entry that does not parse is skipped and reported, the rest
    /// are served.
    pub fn from_snapshot(s: &CertSnapshot) -> (Self, Vec<String>) {
        let mut store = Self {
            generation: s.generation,
            ..Self::default()
        };
        let mut problems = Vec::new();
        if let Some(f) = &s.fallback {
            match certified_key(f) {
                Ok(k) => store.fallback = Some(Arc::new(k)),
                Err(e) => problems.push(format!("fallback certificate: {e}")),
            }
        }
        for entry in &s.certs {
            let key = match certified_key(entry) {
                Ok(k) => Arc::new(k),
                Err(e) => {
                    problems.push(format!("{}: {e}", entry.names.join(", ")));
                    continue;
                }
            };
            for name in &entry.names {
                let name = name.to_ascii_lowercase();
                if name.starts_with("*.") {
                    store.wildcard.push((name, key.clone()));
                } else {
                    store.exact.insert(name, key.clone());
                }
            }
        }
        (store, problems)
    }

    /// The certificate for a server name: exact match, then wildcard, then the fallback.
    pub fn lookup(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = server_name {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if let Some(k) = self.exact.get(&name) {
                return Some(k.clone());
            }
            if let Some((_, k)) = self.wildcard.iter().find(|(p, _)| name_matches(p, &name)) {
                return Some(k.clone());
            }
        }
        self.fallback.clone()
    }
}

/// The live store, swapped atomically.
pub type SharedCerts = Arc<ArcSwap<CertStore>>;

/// Picks the certificate for each handshake from the live store.
#[derive(Debug)]
pub struct Resolver(pub SharedCerts);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.load().lookup(hello.server_name())
    }
}

/// The server configuration: certificates from `certs`, ALPN h2 then http/1.1.
pub fn server_config(certs: SharedCerts) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Certificate(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(certs)));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

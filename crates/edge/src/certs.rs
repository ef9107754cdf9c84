//! The certificates the edge serves, as the control plane hands them over: a numbered
//! snapshot file (kept in RAM on berth's tmpfs, mode 0600, because it holds private keys),
//! and what a PEM chain says about itself (names, validity, serial).

use crate::tls::TlsError;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// One certificate with its key, for the names it covers.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertEntry {
    /// Names it serves (`*.example.com` covers one label).
    pub names: Vec<String>,
    /// Leaf first, then intermediates, PEM.
    pub chain_pem: String,
    /// PKCS#8 private key, PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for CertEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertEntry")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

/// Every certificate the edge serves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertSnapshot {
    /// Increases with every change.
    pub generation: u64,
    /// Served when no certificate matches the name a client asks for (or it sends none).
    pub fallback: Option<CertEntry>,
    /// The rest.
    pub certs: Vec<CertEntry>,
}

impl CertSnapshot {
    /// Reads a snapshot; a missing file is an empty one.
    pub fn load(path: &Path) -> Result<Self, TlsError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| TlsError::Snapshot {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(TlsError::Snapshot {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
        }
    }

    /// Writes it atomically, readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<(), TlsError> {
        let err = |e: std::io::Error| TlsError::Snapshot {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec(self).map_err(|e| TlsError::Snapshot {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(err)
    }
}

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertFacts {
    /// DNS names it is valid for.
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// Hex serial number.
    pub serial: String,
    /// Issuer's distinguished name.
    pub issuer: String,
}

/// Reads the leaf certificate of a PEM chain.
pub fn facts(chain_pem: &str) -> Result<CertFacts, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let leaf = rustls::pki_types::CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or_else(|| TlsError::Certificate("no certificate in the PEM chain".into()))?
        .map_err(|e| TlsError::Certificate(format!("unreadable PEM: {e}")))?;
    facts_der(&leaf)
}

/// Reads one DER certificate.
pub fn facts_der(der: &[u8]) -> Result<CertFacts, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| TlsError::Certificate(format!("unreadable certificate: {e}")))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_string());
            }
        }
    }
    Ok(CertFacts {
        names,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        serial: cert.raw_serial_as_string().replace(':', ""),
        issuer: cert.issuer().to_string(),
    })
}

/// Whether `name` is covered by the certificate name `pattern` (`*.` covers one label).
pub fn name_matches(pattern: &str, name: &str) -> bool {
    let (pattern, name) = (pattern.to_ascii_lowercase(), name.to_ascii_lowercase());
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_exactly_one_label() {
        assert!(name_matches("*.localhost", "shop.localhost"));
        assert!(name_matches("*.LOCALHOST", "Shop.localhost"));
        assert!(!name_matches("*.localhost", "a.shop.localhost"));
        assert!(!name_matches("*.localhost", "localhost"));
        assert!(name_matches("example.test", "EXAMPLE.test"));
        assert!(!name_matches("example.test", "www.example.test"));
    }

    #[test]
    fn snapshot_file_is_private_and_round_trips() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("certs.json");
        assert_eq!(CertSnapshot::load(&p).unwrap(), CertSnapshot::default());
        let s = CertSnapshot {
            generation: 3,
            fallback: None,
            certs: vec![CertEntry {
                names: vec!["a.test".into()],
                chain_pem: "chain".into(),
                key_pem: "key".into(),
            }],
        };
        s.save(&p).unwrap();
        assert_eq!(CertSnapshot::load(&p).unwrap(), s);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            !format!("{:?}", s).contains("key"),
            "Debug never prints keys"
        );
    }

    #[test]
    fn facts_reject_garbage() {
        assert!(facts("not a certificate").is_err());
    }
}

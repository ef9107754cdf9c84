//! berth's own certificate authority, for names no public CA will certify (`*.localhost`,
//! internal names) or when no ACME directory is configured. Its root goes into trust stores
//! with `berth ca export`; its key never leaves the control plane (sealed at rest).

use crate::tls::TlsError;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::time::Duration;
use zeroize::Zeroizing;

/// How long the root is valid.
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A certificate and its private key, as PEM.
pub struct Issued {
    /// Leaf then issuer chain.
    pub chain_pem: String,
    /// PKCS#8 key.
    pub key_pem: Zeroizing<String>,
}

/// The local CA: its root certificate and key.
pub struct LocalCa {
    cert_pem: String,
    key: KeyPair,
}

fn ca_err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Ca(e.to_string())
}

impl LocalCa {
    /// A new root named after this berth (`label`, e.g. the host name).
    pub fn generate(label: &str) -> Result<Self, TlsError> {
        let key = KeyPair::generate().map_err(ca_err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(ca_err)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, format!("berth local CA ({label})"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, "berth");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + ROOT_LIFETIME;
        let cert = params.self_signed(&key).map_err(ca_err)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key,
        })
    }

    /// The CA as stored.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(ca_err)?;
        // Check the certificate parses, so a broken store fails here and not at issue time.
        Issuer::from_ca_cert_pem(cert_pem, &key).map_err(ca_err)?;
        Ok(Self {
            cert_pem: cert_pem.to_string(),
            key,
        })
    }

    /// The root certificate (public), PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The root's private key, PEM.
    pub fn key_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.key.serialize_pem())
    }

    /// A server certificate for `names`, valid for `lifetime`.
    pub fn issue(&self, names: &[String], lifetime: Duration) -> Result<Issued, TlsError> {
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(ca_err)?;
        let key = KeyPair::generate().map_err(ca_err)?;
        let mut params = CertificateParams::new(names.to_vec()).map_err(ca_err)?;
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.clone());
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + lifetime;
        let mut serial = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut serial);
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let cert = params.signed_by(&key, &issuer).map_err(ca_err)?;
        Ok(Issued {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{facts, CertEntry};
    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn issues_certificates_that_chain_to_the_root_and_survive_storage() {
        let ca = LocalCa::generate("test").unwrap();
        let again = LocalCa::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        let names = vec!["shop.localhost".to_string(), "*.apps.test".to_string()];
        let a = again.issue(&names, Duration::from_secs(3600)).unwrap();
        let b = again.issue(&names, Duration::from_secs(3600)).unwrap();
        let fa = facts(&a.chain_pem).unwrap();
        assert_eq!(fa.names, names);
        assert!(fa.issuer.contains("berth local CA (test)"), "{}", fa.issuer);
        assert!(fa.not_after - fa.not_before >= 3600);
        assert_ne!(fa.serial, facts(&b.chain_pem).unwrap().serial);
        // rustls accepts the pair, and a verifier trusting only the root accepts the leaf.
        let entry = CertEntry {
            names: names.clone(),
            chain_pem: a.chain_pem.clone(),
            key_pem: a.key_pem.to_string(),
        };
        let key = crate::tls::certified_key(&entry).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        roots
            .add(
                rustls::pki_types::CertificateDer::from_pem_slice(ca.cert_pem().as_bytes())
                    .unwrap(),
            )
            .unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let name = rustls::pki_types::ServerName::try_from("shop.localhost").unwrap();
        verifier
            .verify_server_cert(
                &key.cert[0],
                &key.cert[1..],
                &name,
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .unwrap();
        let wild = rustls::pki_types::ServerName::try_from("a.apps.test").unwrap();
        verifier
            .verify_server_cert(
                &key.cert[0],
                &key.cert[1..],
                &wild,
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .unwrap();
        let other = rustls::pki_types::ServerName::try_from("shop.example.com").unwrap();
        assert!(verifier
            .verify_server_cert(
                &key.cert[0],
                &key.cert[1..],
                &other,
                &[],
                rustls::pki_types::UnixTime::now()
            )
            .is_err());
    }

    #[test]
    fn a_corrupt_stored_ca_is_refused() {
        let ca = LocalCa::generate("test").unwrap();
        assert!(LocalCa::from_pem("garbage", &ca.key_pem()).is_err());
        assert!(LocalCa::from_pem(ca.cert_pem(), "garbage").is_err());
    }
}

//! Image signatures in Sigstore's cosign format: ECDSA P-256 over a "simple signing"
//! payload that names the image's manifest digest, kept as an OCI artifact tagged
//! `sha256-<hex>.sig` beside the image (where `cosign verify --key` looks for it, once
//! pushed to a registry). berth signs every image it builds or pulls with the platform's
//! key (kept sealed by the keyring in the state store; `<data>/signing/cosign.pub` is the
//! key to verify with), and with `--require-signed` refuses to start an image whose
//! signature does not verify.

use crate::image::{ImageError, ImageStore};
use base64::Engine as _;
use berth_core::model::ImageRef;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use std::path::{Path, PathBuf};

/// Media type of cosign's signature payload layer.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// DER prefix of a P-256 SubjectPublicKeyInfo, before the uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Errors of signing and verifying.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the signing key is not a PKCS#8 P-256 key")]
    BadKey,
    #[error("the public key is not a PEM P-256 public key")]
    BadPublicKey,
    #[error("making a signing key failed")]
    KeyGeneration,
    #[error(transparent)]
    Image(#[from] ImageError),
}

/// What checking an image's signature found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed, and the signature verifies with the key.
    Verified,
    /// No signature.
    Unsigned,
    /// A signature that does not verify (another key, another image, altered).
    Invalid(String),
}

/// The platform's signing key.
pub struct Signer {
    pair: EcdsaKeyPair,
    public_pem: String,
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn unpem(text: &str, label: &str) -> Option<Vec<u8>> {
    let body: String = text
        .lines()
        .skip_while(|l| *l != format!("-----BEGIN {label}-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

impl Signer {
    /// A new key, PKCS#8 (to be kept sealed by whoever holds it).
    pub fn generate_pkcs8() -> Result<zeroize::Zeroizing<Vec<u8>>, SigningError> {
        let doc = EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &SystemRandom::new(),
        )
        .map_err(|_| SigningError::KeyGeneration)?;
        Ok(zeroize::Zeroizing::new(doc.as_ref().to_vec()))
    }

    /// The signer of a PKCS#8 P-256 key.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, SigningError> {
        let pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|_| SigningError::BadKey)?;
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(pair.public_key().as_ref());
        let public_pem = pem("PUBLIC KEY", &spki);
        Ok(Self { pair, public_pem })
    }

    /// Writes the public key to `dir/cosign.pub` (what `cosign verify --key` takes).
    pub fn write_public(&self, dir: &Path) -> Result<PathBuf, SigningError> {
        let io = |context: String| move |source| SigningError::Io { context, source };
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let path = dir.join("cosign.pub");
        if std::fs::read_to_string(&path).ok().as_deref() != Some(self.public_pem.as_str()) {
            std::fs::write(&path, &self.public_pem)
                .map_err(io(format!("writing {}", path.display())))?;
        }
        Ok(path)
    }

    /// The public key, PEM (what `cosign verify --key` takes).
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// Signs `image` (as `reference`, the name it is known by) and stores the signature
    /// beside it.
    pub fn sign(
        &self,
        store: &ImageStore,
        image: &ImageRef,
        reference: &str,
    ) -> Result<(), SigningError> {
        let payload = serde_json::json!({
            "critical": {
                "identity": { "docker-reference": reference },
                "image": { "docker-manifest-digest": image.digest },
                "type": "cosign container image signature",
            },
            "optional": null,
        })
        .to_string();
        let sig = self
            .pair
            .sign(&SystemRandom::new(), payload.as_bytes())
            .map_err(|_| SigningError::KeyGeneration)?;
        let sig_b64 = base64::engine::general_purpose::STANDARD.encode(sig.as_ref());
        store.write_artifact(
            &image.repository,
            &signature_tag(&image.digest),
            SIMPLE_SIGNING,
            payload.as_bytes(),
            &[(SIGNATURE_ANNOTATION, sig_b64.as_str())],
        )?;
        Ok(())
    }
}

/// The tag of an image's signature (cosign's convention).
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replace(':', "-"))
}

/// Checks `image`'s signature against `public_pem`.
pub fn verify(
    store: &ImageStore,
    image: &ImageRef,
    public_pem: &str,
) -> Result<Verdict, SigningError> {
    let spki = unpem(public_pem, "PUBLIC KEY").ok_or(SigningError::BadPublicKey)?;
    let point = spki
        .strip_prefix(&P256_SPKI_PREFIX[..])
        .ok_or(SigningError::BadPublicKey)?;
    let Some((payload, annotations)) =
        store.read_artifact(&image.repository, &signature_tag(&image.digest))?
    else {
        return Ok(Verdict::Unsigned);
    };
    let Some(sig) = annotations
        .get(SIGNATURE_ANNOTATION)
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
    else {
        return Ok(Verdict::Invalid(
            "the signature annotation is missing".into(),
        ));
    };
    let key = signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, point);
    if key.verify(&payload, &sig).is_err() {
        return Ok(Verdict::Invalid(
            "the signature does not verify with the platform's key".into(),
        ));
    }
    let claimed: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
    if claimed["critical"]["image"]["docker-manifest-digest"] != image.digest.as_str() {
        return Ok(Verdict::Invalid(
            "the signature is for another image".into(),
        ));
    }
    Ok(Verdict::Verified)
}

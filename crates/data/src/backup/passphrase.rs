//! The key a backup's secrets travel under: derived from the operator's passphrase with
//! Argon2id (parameters and salt kept in the manifest, so stronger defaults later still
//! open older backups), sealing with XChaCha20-Poly1305.

use super::BackupError;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, OsRng, Payload};
use chacha20poly1305::{AeadCore, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Shortest passphrase accepted.
pub const MIN_LEN: usize = 12;
const NONCE_LEN: usize = 24;

/// How the key was derived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kdf {
    /// Always `argon2id`.
    pub algorithm: String,
    /// Memory, KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
    /// Salt, base64.
    pub salt: String,
}

impl Kdf {
    /// Fresh salt, default cost (64 MiB, 3 passes).
    pub fn fresh() -> Self {
        let mut salt = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
        Self {
            algorithm: "argon2id".into(),
            m_kib: 64 * 1024,
            t: 3,
            p: 1,
            salt: B64.encode(salt),
        }
    }

    /// Derives the key from a passphrase.
    pub fn derive(&self, passphrase: &str) -> Result<PassphraseKey, BackupError> {
        if self.algorithm != "argon2id" {
            return Err(BackupError::Passphrase(format!(
                "unknown key derivation {:?}",
                self.algorithm
            )));
        }
        let salt = B64
            .decode(&self.salt)
            .map_err(|_| BackupError::Passphrase("the manifest's salt is not base64".into()))?;
        let params = argon2::Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|e| BackupError::Passphrase(format!("key derivation parameters: {e}")))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(passphrase.as_bytes(), &salt, key.as_mut())
            .map_err(|e| BackupError::Passphrase(format!("key derivation: {e}")))?;
        Ok(PassphraseKey(key))
    }
}

/// Checks a passphrase chosen for a new backup.
pub fn check_new(passphrase: &str) -> Result<(), BackupError> {
    if passphrase.chars().count() < MIN_LEN {
        return Err(BackupError::Passphrase(format!(
            "a backup passphrase has at least {MIN_LEN} characters"
        )));
    }
    Ok(())
}

/// A derived key.
pub struct PassphraseKey(Zeroizing<[u8; 32]>);

impl PassphraseKey {
    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.0.as_ref().into())
    }

    /// Seals `plaintext` bound to `aad`: nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut out = nonce.to_vec();
        // Encryption under a valid key and nonce cannot fail.
        if let Ok(ct) = self.cipher().encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad,
            },
        ) {
            out.extend_from_slice(&ct);
        }
        out
    }

    /// Opens what [`PassphraseKey::seal`] sealed with the same `aad`; `None` when the key
    /// or the bytes differ.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if sealed.len() < NONCE_LEN + 16 {
            return None;
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        self.cipher()
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
            .ok()
            .map(Zeroizing::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_passphrase_and_context_open_a_sealed_value() {
        let kdf = Kdf {
            m_kib: 1024,
            t: 1,
            ..Kdf::fresh()
        };
        let key = kdf.derive("correct horse battery").unwrap();
        let sealed = key.seal(b"backup 1", b"the keyring");
        assert_eq!(
            key.open(b"backup 1", &sealed).unwrap().as_slice(),
            b"the keyring"
        );
        assert!(key.open(b"backup 2", &sealed).is_none());
        let other = kdf.derive("correct horse battery!").unwrap();
        assert!(other.open(b"backup 1", &sealed).is_none());
        let mut flipped = sealed.clone();
        flipped[30] ^= 1;
        assert!(key.open(b"backup 1", &flipped).is_none());
        // Another salt gives another key.
        let resalted = Kdf {
            m_kib: 1024,
            t: 1,
            ..Kdf::fresh()
        }
        .derive("correct horse battery")
        .unwrap();
        assert!(resalted.open(b"backup 1", &sealed).is_none());
        assert!(check_new("short").is_err());
        assert!(check_new("long enough passphrase").is_ok());
    }
}

//! Secret values at rest: sealed with XChaCha20-Poly1305 (a random 192-bit nonce per value,
//! so nonces never repeat in practice) under the active key of a [`Keyring`]. Each sealed
//! value names the key that sealed it, so `rotate-key` can re-seal everything and retire
//! the old key. The associated data binds a value to its app, name and version: a sealed
//! value copied to another secret's row does not open.
//!
//! The keyring is a JSON file (mode 0600) in the data directory by default, or a file the
//! operator keeps elsewhere, or one key given in the environment (read-only: no rotation).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, OsRng, Payload};
use chacha20poly1305::{AeadCore, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::path::{Path, PathBuf};
use zeroize::{Zeroize, Zeroizing};

/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// Bytes of a nonce.
const NONCE_LEN: usize = 24;

/// Errors of the keyring and of sealing.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("secrets key file {path}: {message}")]
    KeyFile { path: String, message: String },
    #[error("secrets key from the environment: {0}")]
    EnvKey(String),
    #[error("a secret was sealed with key {0}, which this platform does not have")]
    UnknownKey(String),
    #[error("a secret did not decrypt: the value or its key was changed")]
    Tampered,
    #[error("the secrets key comes from the environment and cannot be rotated by berth")]
    ReadOnly,
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredKey {
    id: String,
    key: String,
}

#[derive(Clone, Default, Serialize, Deserialize)]
struct KeyFile {
    active: String,
    keys: Vec<StoredKey>,
}

struct Key {
    id: String,
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

/// Where the keys live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A keyring file, created (0600) when missing.
    File(PathBuf),
    /// One base64 key given in the environment; its id is derived from it.
    Env(String),
}

/// A sealed value as stored: which key sealed it, and nonce + ciphertext in base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Id of the sealing key.
    pub key_id: String,
    /// base64(nonce ‖ ciphertext ‖ tag).
    pub data: String,
}

/// The keys secrets are sealed with; the newest is active.
pub struct Keyring {
    source: KeySource,
    active: String,
    keys: Vec<Key>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("source", &self.source)
            .field("active", &self.active)
            .field("keys", &self.keys.iter().map(|k| &k.id).collect::<Vec<_>>())
            .finish()
    }
}

fn new_key() -> Key {
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, bytes.as_mut());
    let mut id = [0u8; 4];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
    Key {
        id: format!("k{}", hex::encode(id)),
        bytes,
    }
}

fn decode_key(text: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, String> {
    let raw = Zeroizing::new(
        B64.decode(text.trim())
            .map_err(|e| format!("not base64: {e}"))?,
    );
    if raw.len() != KEY_LEN {
        return Err(format!(
            "a key is {KEY_LEN} bytes, this one is {}",
            raw.len()
        ));
    }
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    out.copy_from_slice(&raw);
    Ok(out)
}

/// Writes `bytes` to `path` atomically, mode 0600, its directory 0700.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SecretsError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let err = |e: std::io::Error| SecretsError::KeyFile {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(())
}

fn aad(context: &str) -> Vec<u8> {
    format!("berth-secret-v1:{context}").into_bytes()
}

impl Keyring {
    /// Opens the keyring, creating a file keyring with one fresh key when it does not exist.
    pub fn open(source: KeySource) -> Result<Self, SecretsError> {
        match &source {
            KeySource::Env(text) => {
                let bytes = decode_key(text).map_err(SecretsError::EnvKey)?;
                let id = format!(
                    "e{}",
                    &hex::encode(sha2::Sha256::digest(bytes.as_ref()))[..8]
                );
                Ok(Self {
                    source,
                    active: id.clone(),
                    keys: vec![Key { id, bytes }],
                })
            }
            KeySource::File(path) => {
                let err = |message: String| SecretsError::KeyFile {
                    path: path.display().to_string(),
                    message,
                };
                match std::fs::read(path) {
                    Ok(text) => {
                        let text = Zeroizing::new(text);
                        let file: KeyFile = serde_json::from_slice(&text)
                            .map_err(|e| err(format!("not a berth keyring: {e}")))?;
                        let mut keys = Vec::new();
                        for k in &file.keys {
                            let bytes = decode_key(&k.key)
                                .map_err(|e| err(format!("key {}: {e}", k.id)))?;
                            keys.push(Key {
                                id: k.id.clone(),
                                bytes,
                            });
                        }
                        for mut k in file.keys {
                            k.key.zeroize();
                        }
                        if !keys.iter().any(|k| k.id == file.active) {
                            return Err(err(format!(
                                "the active key {} is not in the file",
                                file.active
                            )));
                        }
                        Ok(Self {
                            source,
                            active: file.active,
                            keys,
                        })
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        let key = new_key();
                        let ring = Self {
                            source: source.clone(),
                            active: key.id.clone(),
                            keys: vec![key],
                        };
                        ring.save()?;
                        Ok(ring)
                    }
                    Err(e) => Err(err(e.to_string())),
                }
            }
        }
    }

    /// The keyring as its file holds it (every key, the active one named), for a backup.
    pub fn export(&self) -> Zeroizing<Vec<u8>> {
        let file = KeyFile {
            active: self.active.clone(),
            keys: self
                .keys
                .iter()
                .map(|k| StoredKey {
                    id: k.id.clone(),
                    key: B64.encode(k.bytes.as_ref()),
                })
                .collect(),
        };
        let text = Zeroizing::new(serde_json::to_vec_pretty(&file).unwrap_or_default());
        for mut k in file.keys {
            k.key.zeroize();
        }
        text
    }

    /// Writes an exported keyring to `path` (mode 0600) and opens it: how a restore puts
    /// the keys back. Refuses bytes that are not a keyring, writing nothing.
    pub fn install(path: &Path, exported: &[u8]) -> Result<Self, SecretsError> {
        let file: KeyFile =
            serde_json::from_slice(exported).map_err(|e| SecretsError::KeyFile {
                path: path.display().to_string(),
                message: format!("not a berth keyring: {e}"),
            })?;
        drop(file);
        write_private(path, exported)?;
        Self::open(KeySource::File(path.to_path_buf()))
    }

    /// Writes a file keyring atomically with mode 0600 (its directory 0700).
    fn save(&self) -> Result<(), SecretsError> {
        let KeySource::File(path) = &self.source else {
            return Err(SecretsError::ReadOnly);
        };
        write_private(path, &self.export())
    }

    /// Id of the key new values are sealed with.
    pub fn active_id(&self) -> &str {
        &self.active
    }

    /// Ids of every key held.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.id.clone()).collect()
    }

    fn cipher(&self, id: &str) -> Result<XChaCha20Poly1305, SecretsError> {
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| SecretsError::UnknownKey(id.to_string()))?;
        Ok(XChaCha20Poly1305::new(key.bytes.as_ref().into()))
    }

    /// Seals `plaintext` under the active key; `context` (app, name, version) must be given
    /// again to open it.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Sealed, SecretsError> {
        let cipher = self.cipher(&self.active)?;
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = aad(context);
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| SecretsError::Tampered)?;
        let mut data = nonce.to_vec();
        data.extend_from_slice(&ct);
        Ok(Sealed {
            key_id: self.active.clone(),
            data: B64.encode(data),
        })
    }

    /// Opens a sealed value.
    pub fn open_sealed(
        &self,
        context: &str,
        sealed: &Sealed,
    ) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        let cipher = self.cipher(&sealed.key_id)?;
        let raw = B64
            .decode(&sealed.data)
            .map_err(|_| SecretsError::Tampered)?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(SecretsError::Tampered);
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let aad = aad(context);
        cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map(Zeroizing::new)
            .map_err(|_| SecretsError::Tampered)
    }

    /// Re-seals a value under the active key (rotation).
    pub fn reseal(&self, context: &str, sealed: &Sealed) -> Result<Sealed, SecretsError> {
        let plain = self.open_sealed(context, sealed)?;
        self.seal(context, &plain)
    }

    /// Starts a rotation: a new key becomes active and is saved beside the old ones, so
    /// values sealed by either open until [`Keyring::retire_all_but_active`].
    pub fn begin_rotation(&mut self) -> Result<String, SecretsError> {
        if matches!(self.source, KeySource::Env(_)) {
            return Err(SecretsError::ReadOnly);
        }
        let key = new_key();
        let previous = std::mem::replace(&mut self.active, key.id.clone());
        self.keys.push(key);
        if let Err(e) = self.save() {
            self.keys.pop();
            self.active = previous;
            return Err(e);
        }
        Ok(self.active.clone())
    }

    /// Ends a rotation once every value is sealed under the active key: forgets the others.
    pub fn retire_all_but_active(&mut self) -> Result<(), SecretsError> {
        let active = self.active.clone();
        self.keys.retain(|k| k.id == active);
        self.save()
    }

    /// Where the keyring lives, for messages.
    pub fn describe(&self) -> String {
        match &self.source {
            KeySource::File(p) => p.display().to_string(),
            KeySource::Env(_) => "BERTH_SECRETS_KEY".into(),
        }
    }

    /// The key file's path, when the keys live in a file.
    pub fn path(&self) -> Option<&Path> {
        match &self.source {
            KeySource::File(p) => Some(p),
            KeySource::Env(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn ring(dir: &Path) -> Keyring {
        Keyring::open(KeySource::File(dir.join("keys/secrets.json"))).unwrap()
    }

    #[test]
    fn sealed_values_open_only_with_their_context_and_key() {
        let d = tempfile::tempdir().unwrap();
        let r = ring(d.path());
        let s = r.seal("shop/API_KEY/1", b"hunter2").unwrap();
        assert!(!s.data.contains("hunter2"));
        assert_eq!(&*r.open_sealed("shop/API_KEY/1", &s).unwrap(), b"hunter2");
        // Moved to another secret: refused.
        assert!(matches!(
            r.open_sealed("shop/OTHER/1", &s),
            Err(SecretsError::Tampered)
        ));
        // A flipped bit: refused.
        let mut raw = B64.decode(&s.data).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let forged = Sealed {
            key_id: s.key_id.clone(),
            data: B64.encode(raw),
        };
        assert!(matches!(
            r.open_sealed("shop/API_KEY/1", &forged),
            Err(SecretsError::Tampered)
        ));
        // Two seals of one value differ (fresh nonces).
        assert_ne!(
            r.seal("c", b"v").unwrap().data,
            r.seal("c", b"v").unwrap().data
        );
    }

    #[test]
    fn the_key_file_is_private_and_reopens() {
        let d = tempfile::tempdir().unwrap();
        let r = ring(d.path());
        let path = d.path().join("keys/secrets.json");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let s = r.seal("a", b"v").unwrap();
        let again = ring(d.path());
        assert_eq!(again.active_id(), r.active_id());
        assert_eq!(&*again.open_sealed("a", &s).unwrap(), b"v");
    }

    #[test]
    fn rotation_reseals_and_retires_the_old_key() {
        let d = tempfile::tempdir().unwrap();
        let mut r = ring(d.path());
        let old = r.seal("a", b"v").unwrap();
        let old_id = r.active_id().to_string();
        let new_id = r.begin_rotation().unwrap();
        assert_ne!(old_id, new_id);
        // Mid-rotation (even after a crash) both keys open.
        assert_eq!(&*ring(d.path()).open_sealed("a", &old).unwrap(), b"v");
        let new = r.reseal("a", &old).unwrap();
        assert_eq!(new.key_id, new_id);
        r.retire_all_but_active().unwrap();
        let reopened = ring(d.path());
        assert_eq!(reopened.key_ids(), vec![new_id]);
        assert!(matches!(
            reopened.open_sealed("a", &old),
            Err(SecretsError::UnknownKey(_))
        ));
        assert_eq!(&*reopened.open_sealed("a", &new).unwrap(), b"v");
    }

    #[test]
    fn environment_keys_work_but_do_not_rotate() {
        let key = B64.encode([7u8; 32]);
        let mut r = Keyring::open(KeySource::Env(key.clone())).unwrap();
        let s = r.seal("a", b"v").unwrap();
        let again = Keyring::open(KeySource::Env(key)).unwrap();
        assert_eq!(&*again.open_sealed("a", &s).unwrap(), b"v");
        assert!(matches!(r.begin_rotation(), Err(SecretsError::ReadOnly)));
        let short = Keyring::open(KeySource::Env(B64.encode([1u8; 5]))).unwrap_err();
        assert!(short.to_string().contains("32 bytes"), "{short}");
    }

    #[test]
    fn a_corrupt_key_file_is_named() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("k.json");
        std::fs::write(&path, "{ not json").unwrap();
        let e = Keyring::open(KeySource::File(path))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("k.json") && e.contains("not a berth keyring"),
            "{e}"
        );
    }
}

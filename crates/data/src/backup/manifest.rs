//! The table of contents of a backup: what it holds, each part's size and SHA-256, how the
//! passphrase key is derived, and a MAC under that key over all of it.

use super::passphrase::{Kdf, PassphraseKey};
use super::BackupError;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// Format written by this berth.
pub const FORMAT: u32 = 1;
/// The manifest's name in a backup.
pub const MANIFEST: &str = "manifest.json";
/// The state database part.
pub const STATE_PART: &str = "state.db.zst";
/// The wrapped keyring part.
pub const KEYS_PART: &str = "keys.sealed";

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// Path inside the backup, e.g. `volumes/shop/data.tar.zst`.
    pub path: String,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
}

/// A volume in the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeEntry {
    pub app: String,
    pub name: String,
    /// Filesystem size.
    pub size_bytes: u64,
    /// Owner of the volume's root directory.
    pub owner: (u32, u32),
    /// Its part.
    pub part: String,
}

/// A database dump in the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseEntry {
    pub app: String,
    pub database: String,
    pub role: String,
    /// Its part (pg_dump custom format).
    pub part: String,
}

/// An app's images in the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageEntry {
    pub app: String,
    /// Its part (the app's OCI image layout as tar + zstd).
    pub part: String,
}

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Version of the berth that wrote it.
    pub berth_version: String,
    pub kdf: Kdf,
    pub apps: Vec<String>,
    pub volumes: Vec<VolumeEntry>,
    pub databases: Vec<DatabaseEntry>,
    pub images: Vec<ImageEntry>,
    /// Every file but the manifest.
    pub parts: Vec<Part>,
    /// base64 MAC over the manifest with this field empty.
    #[serde(default)]
    pub mac: String,
}

fn aad(id: &str) -> Vec<u8> {
    format!("berth-backup-manifest-v1:{id}").into_bytes()
}

impl Manifest {
    fn unsigned_bytes(&self) -> Vec<u8> {
        let mut copy = self.clone();
        copy.mac = String::new();
        serde_json::to_vec(&copy).unwrap_or_default()
    }

    /// Sets the MAC under `key` and returns the manifest's bytes.
    pub fn sign(&mut self, key: &PassphraseKey) -> Vec<u8> {
        let mut aad = aad(&self.id);
        aad.extend(self.unsigned_bytes());
        self.mac = B64.encode(key.seal(&aad, b""));
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Reads a manifest (its MAC not checked yet).
    pub fn parse(id: &str, bytes: &[u8]) -> Result<Self, BackupError> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| BackupError::Damaged {
            id: id.to_string(),
            message: format!("its manifest does not parse: {e}"),
        })?;
        if m.format != FORMAT {
            return Err(BackupError::Damaged {
                id: id.to_string(),
                message: format!(
                    "its format is {}, this berth reads format {FORMAT}; restore it with the berth that wrote it ({})",
                    m.format, m.berth_version
                ),
            });
        }
        if m.id != id {
            return Err(BackupError::Damaged {
                id: id.to_string(),
                message: format!("its manifest names another backup ({})", m.id),
            });
        }
        for p in &m.parts {
            if !is_safe_part_path(&p.path) {
                return Err(BackupError::Damaged {
                    id: id.to_string(),
                    message: format!("its manifest names an unsafe part path {:?}", p.path),
                });
            }
        }
        Ok(m)
    }

    /// Checks the MAC with the passphrase: a wrong passphrase and a changed manifest look the
    /// same, and both are refused.
    pub fn verify_mac(&self, key: &PassphraseKey) -> Result<(), BackupError> {
        let mut aad = aad(&self.id);
        aad.extend(self.unsigned_bytes());
        let mac = B64.decode(&self.mac).unwrap_or_default();
        key.open(&aad, &mac)
            .map(|_| ())
            .ok_or_else(|| BackupError::WrongPassphrase {
                id: self.id.clone(),
            })
    }

    /// The part named `path`.
    pub fn part(&self, path: &str) -> Result<&Part, BackupError> {
        self.parts
            .iter()
            .find(|p| p.path == path)
            .ok_or_else(|| BackupError::Damaged {
                id: self.id.clone(),
                message: format!("its manifest lists no part {path}"),
            })
    }

    /// The volumes it holds, as `app/name`.
    pub fn volume_names(&self) -> Vec<String> {
        self.volumes
            .iter()
            .map(|v| format!("{}/{}", v.app, v.name))
            .collect()
    }

    /// The apps whose database it holds.
    pub fn database_apps(&self) -> Vec<String> {
        self.databases.iter().map(|d| d.app.clone()).collect()
    }

    /// Total bytes of the parts.
    pub fn total_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.bytes).sum()
    }
}

/// A part path stays inside the backup: relative, no `..`, plain characters.
pub fn is_safe_part_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

/// The id of the keyring part's sealing: binds it to its backup.
pub fn keys_aad(id: &str) -> Vec<u8> {
    format!("berth-backup-keys-v1:{id}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT,
            id: "1790000000-abcd".into(),
            created_at: 1_790_000_000,
            berth_version: "0.1.0".into(),
            kdf: Kdf {
                m_kib: 1024,
                t: 1,
                ..Kdf::fresh()
            },
            apps: vec!["shop".into()],
            volumes: vec![],
            databases: vec![],
            images: vec![],
            parts: vec![Part {
                path: STATE_PART.into(),
                bytes: 10,
                sha256: "00".into(),
            }],
            mac: String::new(),
        }
    }

    #[test]
    fn a_changed_manifest_or_wrong_passphrase_fails_its_mac() {
        let mut m = manifest();
        let key = m.kdf.derive("a long passphrase").unwrap();
        let bytes = m.sign(&key);
        let back = Manifest::parse(&m.id, &bytes).unwrap();
        back.verify_mac(&key).unwrap();
        let mut changed = back.clone();
        changed.parts[0].sha256 = "11".into();
        assert!(matches!(
            changed.verify_mac(&key),
            Err(BackupError::WrongPassphrase { .. })
        ));
        let wrong = m.kdf.derive("another passphrase").unwrap();
        assert!(back.verify_mac(&wrong).is_err());
        assert!(Manifest::parse("other-id", &bytes).is_err());
        assert!(Manifest::parse(&m.id, b"{not json").is_err());
    }

    #[test]
    fn part_paths_stay_inside_the_backup() {
        assert!(is_safe_part_path("volumes/shop/data.tar.zst"));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a b", "./a"] {
            assert!(!is_safe_part_path(bad), "{bad}");
        }
    }
}

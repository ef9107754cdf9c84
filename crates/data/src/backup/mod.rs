//! Platform backups, the parts that know nothing of the platform: a backup is a folder of
//! parts (the state database, the wrapped keyring, each volume and image as tar + zstd, each
//! database dump) and a `manifest.json` that names every part with its size and SHA-256.
//! The manifest is written last, so a folder without one is an unfinished backup and is
//! never listed. It carries a MAC under the passphrase key, so a changed manifest is caught
//! as surely as a changed part.
//!
//! - [`archive`] packs directories and files (tar + zstd), hashing what it writes.
//! - [`passphrase`] derives a key from the operator's passphrase (Argon2id) and seals with it.
//! - [`manifest`] is the table of contents and its MAC.
//! - [`location`] stores backups in a local directory or an S3 bucket (object_store).
//! - [`retention`] chooses which backups a `--keep-daily`/`--keep-weekly` policy keeps.

pub mod archive;
pub mod location;
pub mod manifest;
pub mod passphrase;
pub mod retention;

/// Errors of backups.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup location {location}: {message}")]
    Location { location: String, message: String },
    #[error("{location} holds no backup {id:?}")]
    NotFound { location: String, id: String },
    #[error("backup {id} is damaged: {message}")]
    Damaged { id: String, message: String },
    #[error(
        "the passphrase does not open backup {id} (wrong passphrase, or the backup was changed)"
    )]
    WrongPassphrase { id: String },
    #[error("{0}")]
    Passphrase(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let context = context.into();
    move |source| BackupError::Io { context, source }
}

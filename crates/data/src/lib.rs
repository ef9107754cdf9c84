//! berth's data plane: the state an app keeps.
//!
//! - [`secrets`] seals secret values with XChaCha20-Poly1305 under a keyring whose only I/O
//!   is its key file, so rotation and tampering can be tested in isolation.
//! - [`volumes`] gives each volume its own ext4 filesystem image, loop-mounted on the host
//!   and bind-mounted into the app's containers: the size is the filesystem's, so a write
//!   past it fails with `ENOSPC` inside the app at either isolation level; snapshots are
//!   copies of the frozen image.
//! - [`postgres`] runs one PostgreSQL server for the platform and gives each app a database
//!   and a role of its own; dumps and restores them.
//! - [`backup`] writes, lists, verifies and reads platform backups (a local directory or an
//!   S3 bucket), with the keyring wrapped under a passphrase.
//! - [`secret_files`] writes the decrypted secrets an instance needs onto a RAM-backed
//!   filesystem outside the data directory, so no plaintext ever reaches the disk.
#![forbid(unsafe_code)]

pub mod backup;
pub mod postgres;
pub mod secret_files;
pub mod secrets;
pub mod volumes;

/// Runs a command and returns its stdout, or an error naming the command and its stderr.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                format!("{program} is not installed")
            } else {
                format!("{program}: {e}")
            }
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

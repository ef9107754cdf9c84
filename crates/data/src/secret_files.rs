//! The decrypted secrets an instance runs with, on a RAM-backed filesystem outside the data
//! directory: a tmpfs berth mounts itself (mode 0700), with one directory per instance
//! holding `env` (read by berth's init, which adds the variables to the app's environment)
//! and `files/NAME` (mounted at `/run/secrets`). Nothing here survives a reboot, and
//! nothing is ever written to the disk; the control plane rewrites an instance's files
//! before every start.

use sha2::Digest;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Errors preparing secret files.
#[derive(Debug, thiserror::Error)]
pub enum SecretFilesError {
    #[error("secrets runtime directory {path}: {message}")]
    Dir { path: String, message: String },
}

/// The tmpfs holding every instance's decrypted secrets.
#[derive(Debug, Clone)]
pub struct SecretFiles {
    root: PathBuf,
}

/// Where one instance's secrets were written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSecrets {
    /// Directory holding `env` (mounted read-only for berth's init).
    pub env_dir: PathBuf,
    /// Directory of secret files (mounted read-only at `/run/secrets`).
    pub files_dir: PathBuf,
}

/// Name of the environment file inside [`InstanceSecrets::env_dir`].
pub const ENV_FILE: &str = "env";

impl SecretFiles {
    /// The runtime directory for a data directory: under `/run/berth`, named by a hash of the
    /// data directory so that several platforms on one machine keep apart.
    pub fn default_root(data_dir: &Path) -> PathBuf {
        let digest = hex::encode(sha2::Sha256::digest(
            data_dir.as_os_str().as_encoded_bytes(),
        ));
        PathBuf::from("/run/berth").join(format!("secrets-{}", &digest[..12]))
    }

    /// The runtime directory of builds' secrets and their raw output: a tmpfs of its own,
    /// so that no build can fill the one instances' secrets are written to.
    pub fn builds_root(data_dir: &Path) -> PathBuf {
        let digest = hex::encode(sha2::Sha256::digest(
            data_dir.as_os_str().as_encoded_bytes(),
        ));
        PathBuf::from("/run/berth").join(format!("build-secrets-{}", &digest[..12]))
    }

    /// Makes sure `root` is a private tmpfs (64 MiB), mounting one when it is not.
    pub fn ensure(root: PathBuf) -> Result<Self, SecretFilesError> {
        Self::ensure_sized(root, "64m")
    }

    /// [`SecretFiles::ensure`] with the tmpfs's size (`size=` of tmpfs: `256m`, …).
    pub fn ensure_sized(root: PathBuf, size: &str) -> Result<Self, SecretFilesError> {
        let err = |message: String| SecretFilesError::Dir {
            path: root.display().to_string(),
            message,
        };
        std::fs::create_dir_all(&root).map_err(|e| err(e.to_string()))?;
        if !is_tmpfs(&root) {
            let path = root.display().to_string();
            crate::run(
                "mount",
                &[
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("mode=0700,size={size},nosuid,nodev,noexec"),
                    "berth-secrets",
                    &path,
                ],
            )
            .map_err(err)?;
        }
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| err(e.to_string()))?;
        Ok(Self { root })
    }

    /// The runtime directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes one instance's secrets (owned by `uid`:`gid`, mode 0400): the environment
    /// variables as a NUL-separated file, the file secrets one file each.
    pub fn write(
        &self,
        instance: &str,
        env_file: &[u8],
        files: &[(String, zeroize::Zeroizing<Vec<u8>>)],
        uid: u32,
        gid: u32,
    ) -> Result<InstanceSecrets, SecretFilesError> {
        let dir = self.root.join(instance);
        let err = |message: String| SecretFilesError::Dir {
            path: dir.display().to_string(),
            message,
        };
        let _ = std::fs::remove_dir_all(&dir);
        let env_dir = dir.join("env");
        let files_dir = dir.join("files");
        for d in [&dir, &env_dir, &files_dir] {
            std::fs::create_dir_all(d).map_err(|e| err(e.to_string()))?;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o500))
                .map_err(|e| err(e.to_string()))?;
            nix::unistd::chown(d, Some(uid.into()), Some(gid.into()))
                .map_err(|e| err(e.to_string()))?;
        }
        let write = |path: PathBuf, bytes: &[u8]| -> Result<(), SecretFilesError> {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o400)
                .open(&path)
                .map_err(|e| err(e.to_string()))?;
            f.write_all(bytes).map_err(|e| err(e.to_string()))?;
            nix::unistd::chown(&path, Some(uid.into()), Some(gid.into()))
                .map_err(|e| err(e.to_string()))?;
            Ok(())
        };
        write(env_dir.join(ENV_FILE), env_file)?;
        for (name, value) in files {
            write(files_dir.join(name), value)?;
        }
        Ok(InstanceSecrets { env_dir, files_dir })
    }

    /// Forgets one instance's secrets.
    pub fn remove(&self, instance: &str) {
        let _ = std::fs::remove_dir_all(self.root.join(instance));
    }

    /// Unmounts the tmpfs (`berth down`).
    pub fn unmount(root: &Path) {
        if is_tmpfs(root) {
            let _ = crate::run("umount", &["-l", &root.display().to_string()]);
        }
        let _ = std::fs::remove_dir(root);
    }
}

fn is_tmpfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
        .unwrap_or(false)
}

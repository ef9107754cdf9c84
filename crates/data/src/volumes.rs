//! Volumes: one ext4 filesystem image per volume (`<root>/<app>/<name>.ext4`, sparse, so
//! it takes only the space written), loop-mounted on the host at `<root>/<app>/<name>.mnt`
//! and bind-mounted into the app's containers. The filesystem's size is the volume's: a
//! write past it fails with `ENOSPC` inside the app, under crun and gVisor alike. The mount
//! lives in the host's kernel, so apps keep their data while the control plane restarts.
//!
//! Snapshots freeze the filesystem (`fsfreeze`), copy the image sparsely and thaw it: a
//! consistent point in time without stopping the app for longer than the copy.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Errors of the volume store.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {volume}: {message}")]
    Failed { volume: String, message: String },
    #[error("volume {volume} has no snapshot {snapshot:?}")]
    NoSnapshot { volume: String, snapshot: String },
}

/// Files of one volume.
#[derive(Debug, Clone)]
pub struct VolumeStore {
    root: PathBuf,
}

/// A snapshot on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Id (`YYYYmmddTHHMMSS-xxxx`-like, sortable).
    pub id: String,
    /// Bytes it takes on disk.
    pub disk_bytes: u64,
    /// Unix seconds.
    pub created_at: i64,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Whether `path` is a mount point in this mount namespace.
pub fn is_mounted(path: &Path) -> bool {
    let target = path.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4).map(unescape_mountinfo).as_deref() == Some(&target))
}

fn unescape_mountinfo(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

impl VolumeStore {
    /// The store under `root` (`<data>/volumes`).
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// The filesystem image.
    pub fn image(&self, app: &str, name: &str) -> PathBuf {
        self.root.join(app).join(format!("{name}.ext4"))
    }

    /// Where the filesystem is mounted on the host.
    pub fn mountpoint(&self, app: &str, name: &str) -> PathBuf {
        self.root.join(app).join(format!("{name}.mnt"))
    }

    fn snapshots_dir(&self, app: &str, name: &str) -> PathBuf {
        self.root.join(app).join(format!("{name}.snapshots"))
    }

    fn fail(app: &str, name: &str, message: impl Into<String>) -> VolumeError {
        VolumeError::Failed {
            volume: format!("{app}/{name}"),
            message: message.into(),
        }
    }

    /// Makes a new volume of `size_bytes` whose root directory belongs to `uid`:`gid`, and
    /// mounts it. On failure nothing is left behind.
    pub fn create(
        &self,
        app: &str,
        name: &str,
        size_bytes: u64,
        uid: u32,
        gid: u32,
    ) -> Result<PathBuf, VolumeError> {
        let fail = |m: String| Self::fail(app, name, m);
        let image = self.image(app, name);
        if image.exists() {
            return Err(fail("its image already exists".into()));
        }
        std::fs::create_dir_all(self.root.join(app)).map_err(|e| fail(e.to_string()))?;
        let result = (|| {
            let f = std::fs::File::create(&image).map_err(|e| fail(e.to_string()))?;
            f.set_len(size_bytes).map_err(|e| fail(e.to_string()))?;
            drop(f);
            crate::run(
                "mkfs.ext4",
                &[
                    "-q",
                    "-F",
                    "-m",
                    "0",
                    "-E",
                    &format!("root_owner={uid}:{gid},lazy_itable_init=1,lazy_journal_init=1"),
                    "-L",
                    &name[..name.len().min(16)],
                    &image.display().to_string(),
                ],
            )
            .map_err(fail)?;
            self.mount(app, name)
        })();
        if result.is_err() {
            let _ = self.destroy(app, name);
        }
        result
    }

    /// Mounts the volume on the host if it is not mounted (after a reboot); returns the
    /// mount point.
    pub fn mount(&self, app: &str, name: &str) -> Result<PathBuf, VolumeError> {
        let fail = |m: String| Self::fail(app, name, m);
        let image = self.image(app, name);
        let mnt = self.mountpoint(app, name);
        if is_mounted(&mnt) {
            return Ok(mnt);
        }
        if !image.exists() {
            return Err(fail(format!("its image {} is missing", image.display())));
        }
        std::fs::create_dir_all(&mnt).map_err(|e| fail(e.to_string()))?;
        mount_image(&image, &mnt, "loop,nosuid,nodev").map_err(fail)?;
        Ok(mnt)
    }

    /// Unmounts the volume on the host (containers that still have it keep their view until
    /// they stop).
    pub fn unmount(&self, app: &str, name: &str) -> Result<(), VolumeError> {
        let mnt = self.mountpoint(app, name);
        if is_mounted(&mnt) {
            crate::run("umount", &[&mnt.display().to_string()])
                .map_err(|m| Self::fail(app, name, m))?;
        }
        Ok(())
    }

    /// Bytes used and total, from the mounted filesystem.
    pub fn usage(&self, app: &str, name: &str) -> Option<(u64, u64)> {
        let mnt = self.mountpoint(app, name);
        if !is_mounted(&mnt) {
            return None;
        }
        let s = nix::sys::statvfs::statvfs(&mnt).ok()?;
        let frag = s.fragment_size() as u64;
        let total = s.blocks() as u64 * frag;
        let free = s.blocks_free() as u64 * frag;
        Some((total.saturating_sub(free), total))
    }

    /// Copies the image at one point in time: freezes the mounted filesystem, copies the
    /// image sparsely, thaws it.
    fn frozen_copy(&self, app: &str, name: &str, dest: &Path) -> Result<(), VolumeError> {
        let fail = |m: String| Self::fail(app, name, m);
        let mnt = self.mountpoint(app, name);
        let frozen = is_mounted(&mnt);
        let started = std::time::Instant::now();
        if frozen {
            crate::run("fsfreeze", &["--freeze", &mnt.display().to_string()]).map_err(fail)?;
        }
        let copied = copy_sparse(&self.image(app, name), dest);
        if frozen {
            if let Err(e) = crate::run("fsfreeze", &["--unfreeze", &mnt.display().to_string()]) {
                tracing::error!(volume = %format!("{app}/{name}"), error = %e, "thawing a volume failed");
            }
        }
        tracing::info!(
            volume = %format!("{app}/{name}"),
            frozen_ms = started.elapsed().as_millis() as u64,
            "volume copied at one point in time (writes waited while it was frozen)"
        );
        copied.map_err(fail)
    }

    /// Takes a consistent snapshot: freezes the filesystem, copies the image, thaws it.
    pub fn snapshot(&self, app: &str, name: &str) -> Result<Snapshot, VolumeError> {
        let fail = |m: String| Self::fail(app, name, m);
        let dir = self.snapshots_dir(app, name);
        std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
        let created_at = now_secs();
        let mut suffix = [0u8; 2];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut suffix);
        let id = format!("{created_at}-{}", hex::encode(suffix));
        let dest = dir.join(format!("{id}.ext4"));
        let tmp = dir.join(format!("{id}.tmp"));
        if let Err(e) = self.frozen_copy(app, name, &tmp) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &dest).map_err(|e| fail(e.to_string()))?;
        Ok(Snapshot {
            id,
            disk_bytes: disk_bytes(&dest),
            created_at,
        })
    }

    /// Runs `read` on a point-in-time copy of the volume's files (the app keeps writing to
    /// the volume meanwhile): the image is copied frozen into `work`, mounted there, read,
    /// and deleted. Returns what `read` returns and the owner of the volume's root.
    pub fn read_consistent<T>(
        &self,
        app: &str,
        name: &str,
        work: &Path,
        read: impl FnOnce(&Path) -> Result<T, String>,
    ) -> Result<(T, (u32, u32)), VolumeError> {
        use std::os::unix::fs::MetadataExt;
        let fail = |m: String| Self::fail(app, name, m);
        std::fs::create_dir_all(work).map_err(|e| fail(e.to_string()))?;
        let copy = work.join(format!("{app}-{name}.ext4"));
        let mnt = work.join(format!("{app}-{name}.mnt"));
        let result = (|| {
            self.frozen_copy(app, name, &copy)?;
            std::fs::create_dir_all(&mnt).map_err(|e| fail(e.to_string()))?;
            mount_image(&copy, &mnt, "loop,nosuid,nodev,noexec").map_err(fail)?;
            let owner = std::fs::metadata(&mnt)
                .map(|m| (m.uid(), m.gid()))
                .map_err(|e| fail(e.to_string()));
            let out = owner.and_then(|owner| read(&mnt).map(|t| (t, owner)).map_err(fail));
            if let Err(e) = crate::run("umount", &[&mnt.display().to_string()]) {
                tracing::error!(volume = %format!("{app}/{name}"), error = %e, "unmounting a volume copy failed");
            }
            out
        })();
        let _ = std::fs::remove_dir(&mnt);
        let _ = std::fs::remove_file(&copy);
        result
    }

    /// Makes a new volume and fills it with `fill` (a restore), then unmounts it; the
    /// platform mounts it when it starts. On failure nothing is left behind.
    pub fn create_filled(
        &self,
        app: &str,
        name: &str,
        size_bytes: u64,
        owner: (u32, u32),
        fill: impl FnOnce(&Path) -> Result<(), String>,
    ) -> Result<(), VolumeError> {
        let mnt = self.create(app, name, size_bytes, owner.0, owner.1)?;
        let filled = fill(&mnt).map_err(|m| Self::fail(app, name, m));
        let unmounted = self.unmount(app, name);
        if let Err(e) = filled.and(unmounted) {
            let _ = self.destroy(app, name);
            return Err(e);
        }
        Ok(())
    }

    /// Snapshots of a volume, oldest first.
    pub fn snapshots(&self, app: &str, name: &str) -> Vec<Snapshot> {
        let mut out: Vec<Snapshot> = std::fs::read_dir(self.snapshots_dir(app, name))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let file = e.file_name().to_string_lossy().to_string();
                let id = file.strip_suffix(".ext4")?.to_string();
                let created_at = id.split('-').next()?.parse().ok()?;
                Some(Snapshot {
                    disk_bytes: disk_bytes(&e.path()),
                    id,
                    created_at,
                })
            })
            .collect();
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        out
    }

    /// Puts a snapshot's contents back. The volume must not be in use by any container: the
    /// caller stops them first. Unmounts, swaps the image, mounts again.
    pub fn restore(&self, app: &str, name: &str, snapshot: &str) -> Result<(), VolumeError> {
        let fail = |m: String| Self::fail(app, name, m);
        let src = self
            .snapshots_dir(app, name)
            .join(format!("{snapshot}.ext4"));
        if snapshot.contains('/') || !src.exists() {
            return Err(VolumeError::NoSnapshot {
                volume: format!("{app}/{name}"),
                snapshot: snapshot.to_string(),
            });
        }
        let image = self.image(app, name);
        let tmp = image.with_extension("restore");
        copy_sparse(&src, &tmp).map_err(fail)?;
        self.unmount(app, name)?;
        std::fs::rename(&tmp, &image).map_err(|e| fail(e.to_string()))?;
        self.mount(app, name)?;
        Ok(())
    }

    /// Unmounts and deletes the volume, its image and its snapshots.
    pub fn destroy(&self, app: &str, name: &str) -> Result<(), VolumeError> {
        self.unmount(app, name)?;
        let _ = std::fs::remove_dir(self.mountpoint(app, name));
        let _ = std::fs::remove_file(self.image(app, name));
        let _ = std::fs::remove_dir_all(self.snapshots_dir(app, name));
        let _ = std::fs::remove_dir(self.root.join(app));
        Ok(())
    }
}

/// Loop-mounts an ext4 image at `mnt` with mount `options`.
fn mount_image(image: &Path, mnt: &Path, options: &str) -> Result<(), String> {
    crate::run(
        "mount",
        &[
            "-t",
            "ext4",
            "-o",
            options,
            &image.display().to_string(),
            &mnt.display().to_string(),
        ],
    )
    .map(|_| ())
}

/// Copies a file keeping holes (an image of a mostly empty volume stays small).
fn copy_sparse(from: &Path, to: &Path) -> Result<(), String> {
    crate::run(
        "cp",
        &[
            "--sparse=always",
            "--reflink=auto",
            &from.display().to_string(),
            &to.display().to_string(),
        ],
    )
    .map(|_| ())
}

fn disk_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert!(is_mounted(Path::new("/")) || !Path::new("/proc/self/mountinfo").exists());
        assert!(!is_mounted(Path::new("/definitely/not/mounted")));
    }

    /// Real mkfs.ext4 and a real loop mount (needs root, as berth does).
    #[test]
    fn a_volume_holds_its_size_snapshots_and_restores() {
        let d = tempfile::tempdir().unwrap();
        let store = VolumeStore::new(d.path().join("volumes"));
        let mnt = store
            .create("shop", "data", 16 << 20, 10_001, 10_001)
            .unwrap();
        assert!(is_mounted(&mnt));
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&mnt).unwrap().uid(), 10_001);
        // The sparse image takes far less than its size.
        assert!(disk_bytes(&store.image("shop", "data")) < 16 << 20);
        std::fs::write(mnt.join("a.txt"), b"first").unwrap();
        let snap = store.snapshot("shop", "data").unwrap();
        std::fs::write(mnt.join("a.txt"), b"second").unwrap();
        // Writing past the size fails with ENOSPC.
        let big = vec![7u8; 1 << 20];
        let mut f = std::fs::File::create(mnt.join("fill")).unwrap();
        let err = loop {
            if let Err(e) = std::io::Write::write_all(&mut f, &big).and_then(|_| f.sync_all()) {
                break e;
            }
        };
        assert_eq!(err.raw_os_error(), Some(nix::libc::ENOSPC), "{err}");
        drop(f);
        let (used, total) = store.usage("shop", "data").unwrap();
        assert!(used > 12 << 20 && total <= 16 << 20, "{used} / {total}");
        assert_eq!(store.snapshots("shop", "data")[0].id, snap.id);
        store.restore("shop", "data", &snap.id).unwrap();
        assert_eq!(std::fs::read(mnt.join("a.txt")).unwrap(), b"first");
        assert!(!mnt.join("fill").exists());
        assert!(matches!(
            store.restore("shop", "data", "nope"),
            Err(VolumeError::NoSnapshot { .. })
        ));
        store.destroy("shop", "data").unwrap();
        assert!(!is_mounted(&mnt));
        assert!(!store.image("shop", "data").exists());
    }
}

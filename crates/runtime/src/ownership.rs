//! Handing directories to the unprivileged user containers run as.

use crate::RuntimeError;
use std::path::Path;

/// Changes the owner of `root` and everything below it (symlinks themselves, not their
/// targets) to `uid:gid`.
pub fn chown_tree(root: &Path, uid: u32, gid: u32) -> Result<(), RuntimeError> {
    let fail = |p: &Path| RuntimeError::io(format!("changing the owner of {}", p.display()));
    std::os::unix::fs::lchown(root, Some(uid), Some(gid)).map_err(fail(root))?;
    let meta = std::fs::symlink_metadata(root).map_err(fail(root))?;
    if !meta.is_dir() {
        return Ok(());
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(fail(&dir))? {
            let entry = entry.map_err(fail(&dir))?;
            let path = entry.path();
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(fail(&path))?;
            if entry.file_type().map_err(fail(&path))?.is_dir() {
                stack.push(path);
            }
        }
    }
    Ok(())
}

/// Makes `dir` (created when missing) `uid:gid`'s alone: owned by it, mode 0700, so no
/// other unprivileged user may enter it.
pub fn private_dir(dir: &Path, uid: u32, gid: u32) -> Result<(), RuntimeError> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |p: &Path| RuntimeError::io(format!("making {} private", p.display()));
    std::fs::create_dir_all(dir).map_err(fail(dir))?;
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid)).map_err(fail(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(fail(dir))
}

/// Makes `dir` (created when missing) root's, readable by group `gid` alone (mode 0750):
/// root writes into it, and the group's unprivileged user only reads, so that user can
/// never put a link where root writes. A link in `dir`'s place is refused.
pub fn shared_with_group(dir: &Path, gid: u32) -> Result<(), RuntimeError> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |p: &Path| RuntimeError::io(format!("sharing {} with its build", p.display()));
    std::fs::create_dir_all(dir).map_err(fail(dir))?;
    if std::fs::symlink_metadata(dir)
        .map_err(fail(dir))?
        .file_type()
        .is_symlink()
    {
        return Err(RuntimeError::io(format!("sharing {}", dir.display()))(
            std::io::Error::other("it is a symbolic link"),
        ));
    }
    std::os::unix::fs::lchown(dir, Some(0), Some(gid)).map_err(fail(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750)).map_err(fail(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn hands_over_a_whole_tree_without_following_links() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", d.path().join("a/link")).unwrap();
        let me = std::fs::metadata("/etc/hostname").unwrap();
        let own = std::fs::metadata(d.path()).unwrap().uid();
        let uid = if own == 0 { 4321 } else { own };
        chown_tree(d.path(), uid, uid).unwrap();
        assert_eq!(
            std::fs::metadata(d.path().join("a/b/f")).unwrap().uid(),
            uid
        );
        assert_eq!(
            std::fs::symlink_metadata(d.path().join("a/link"))
                .unwrap()
                .uid(),
            uid
        );
        // The link's target is untouched.
        assert_eq!(std::fs::metadata("/etc/hostname").unwrap().uid(), me.uid());
    }
}

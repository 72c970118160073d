//! Small filesystem helpers: atomic file replacement (through `wharf-fs`)
//! and tree removal.

use std::fs::{self, Permissions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::ImageError;
use crate::error::io_err;

/// Writes `bytes` to `path` so that readers see the old or the new content,
/// never a mix, through a temporary file in `tmp_dir` (same filesystem).
pub(crate) fn write_atomic(tmp_dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    wharf_fs::AtomicWrite::new(path)
        .temp_dir(tmp_dir)
        .write(bytes)
        .map_err(io_err("write", path))
}

/// Fsyncs the directory holding `path`, making a rename in it durable.
pub(crate) fn sync_parent(path: &Path) -> Result<(), ImageError> {
    wharf_fs::sync_parent(path).map_err(io_err("sync directory of", path))
}

/// Removes a directory tree (or file); absent is fine. Unpacked layers may
/// hold read-only directories, which block removal for a non-root owner:
/// those are made writable and the removal retried.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    let removal = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    };
    match removal {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_dirs_writable(path)?;
            fs::remove_dir_all(path)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn make_dirs_writable(dir: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Ok(());
    }
    fs::set_permissions(
        dir,
        Permissions::from_mode(0o700 | (meta.permissions().mode() & 0o7777)),
    )?;
    for child in fs::read_dir(dir)? {
        make_dirs_writable(&child?.path())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record.json");
        write_atomic(dir.path(), &path, b"one").unwrap();
        write_atomic(dir.path(), &path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn removes_trees_with_read_only_directories() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("t");
        fs::create_dir_all(tree.join("a/b")).unwrap();
        fs::write(tree.join("a/b/f"), b"x").unwrap();
        fs::set_permissions(tree.join("a"), Permissions::from_mode(0o555)).unwrap();
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        remove_tree(&tree).unwrap();
    }
}

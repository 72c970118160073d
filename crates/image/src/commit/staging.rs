//! The directory in the cache's `tmp/` that holds a commit's copies of
//! the container's file contents, from the pre-copy and the frozen pass,
//! until the layer is built from them. Removed with everything in it when
//! dropped.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::ImageError;
use crate::error::io_err;

/// A private staging directory (0700), removed on drop.
#[derive(Debug)]
pub(crate) struct StagingDir {
    path: PathBuf,
    next: u64,
}

impl StagingDir {
    /// Creates `path`, which must not exist.
    pub(crate) fn create(path: PathBuf) -> Result<StagingDir, ImageError> {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(io_err("create", &path))?;
        Ok(StagingDir { path, next: 0 })
    }

    /// A new empty file in the directory, and its path.
    pub(crate) fn new_file(&mut self) -> Result<(File, PathBuf), ImageError> {
        let path = self.path.join(self.next.to_string());
        self.next += 1;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("create", &path))?;
        Ok((file, path))
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        match fs::remove_dir_all(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove a staging directory");
            }
            _ => {}
        }
    }
}

/// Opens a file of the container's for reading without following a
/// symlink and, when allowed, without touching its access time.
pub(crate) fn open_source(full: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NOATIME)
        .open(full)
        .or_else(|e| {
            // O_NOATIME needs ownership of the file (or CAP_FOWNER).
            if e.raw_os_error() == Some(nix::libc::EPERM) {
                OpenOptions::new()
                    .read(true)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(full)
            } else {
                Err(e)
            }
        })
}

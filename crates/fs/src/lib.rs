//! Durable local files, written one way everywhere in Wharf.
//!
//! A crash or kill at any point must leave either the old content or the
//! whole new content of a file, never a part, and a write that returned must
//! survive power loss. [`AtomicWrite`] does the four steps that takes: write
//! a temporary file beside the target, fsync it, rename it over the target,
//! fsync the directory (without the last step the rename itself may be lost).

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path` atomically and durably, with default permissions.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    AtomicWrite::new(path).write(bytes)
}

/// One atomic, durable write of a whole file; see the crate documentation.
#[derive(Debug, Clone)]
pub struct AtomicWrite<'a> {
    path: &'a Path,
    mode: u32,
    temp_dir: Option<&'a Path>,
    create_parents: bool,
    replace: bool,
}

impl<'a> AtomicWrite<'a> {
    /// A write of `path`: mode 0644 (before the umask), temporary file in
    /// the same directory, an existing file replaced.
    pub fn new(path: &'a Path) -> AtomicWrite<'a> {
        AtomicWrite {
            path,
            mode: 0o644,
            temp_dir: None,
            create_parents: false,
            replace: true,
        }
    }

    /// The file's permission bits, set from its creation on, so that a
    /// secret is never readable by others even for a moment.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Writes the temporary file in `dir` instead of beside the target
    /// (for stores with a scratch directory). It must be on the same
    /// filesystem as the target, or the rename fails.
    pub fn temp_dir(mut self, dir: &'a Path) -> Self {
        self.temp_dir = Some(dir);
        self
    }

    /// Creates missing parent directories first (and makes their entries
    /// durable).
    pub fn create_parents(mut self) -> Self {
        self.create_parents = true;
        self
    }

    /// Keeps an existing file: the write then fails with
    /// [`io::ErrorKind::AlreadyExists`] and leaves it as it is. Of several
    /// writers racing to create a file, exactly one wins.
    pub fn no_replace(mut self) -> Self {
        self.replace = false;
        self
    }

    /// Does the write. On error nothing is left behind and the target is
    /// unchanged.
    pub fn write(&self, bytes: &[u8]) -> io::Result<()> {
        let dir = parent(self.path);
        if self.create_parents && !dir.exists() {
            create_dir_all_durably(dir)?;
        }
        let temp = temp_path(self.temp_dir.unwrap_or(dir), self.path);
        let result = self.write_temp(&temp, bytes).and_then(|()| {
            if self.replace {
                fs::rename(&temp, self.path)
            } else {
                // A hard link fails on an existing target, unlike rename;
                // the temporary name goes either way.
                let linked = fs::hard_link(&temp, self.path);
                fs::remove_file(&temp)?;
                linked
            }
        });
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result?;
        sync_dir(dir)
    }

    fn write_temp(&self, temp: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(self.mode)
            .open(temp)?;
        file.write_all(bytes)?;
        file.sync_all()
    }
}

/// Fsyncs the directory `dir`, making creations, renames and removals of
/// its entries durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Fsyncs the directory holding `path`.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    sync_dir(parent(path))
}

/// Creates `dir` (and missing parents) with mode 0700, or narrows an
/// existing one to it, so that installs from before a directory became
/// private are fixed at start. For state that holds image content or
/// secrets: setuid binaries and device nodes from images, keys and
/// databases must not be reachable by other users of the machine.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, Permissions::from_mode(0o700))
}

/// The directory of `path`; `.` for a bare file name.
fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Creates `dir` and its missing ancestors, fsyncing each new entry's parent.
fn create_dir_all_durably(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut next = Some(dir);
    while let Some(d) = next.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(d);
        next = d.parent();
    }
    fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        sync_parent(created)?;
    }
    Ok(())
}

/// `.NAME.PID.N.tmp`: hidden, and unique per writer, so that two writers of
/// one file never share (and corrupt) a temporary file.
fn temp_path(dir: &Path, target: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(names(dir.path()), ["record.json"]);
    }

    #[test]
    fn mode_applies_from_creation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        AtomicWrite::new(&path).mode(0o600).write(b"k").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn no_replace_keeps_the_first_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        AtomicWrite::new(&path)
            .no_replace()
            .write(b"first")
            .unwrap();
        let second = AtomicWrite::new(&path).no_replace().write(b"second");
        assert_eq!(second.unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(names(dir.path()), ["key"]);
    }

    #[test]
    fn temp_dir_and_parents() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("tmp");
        fs::create_dir(&scratch).unwrap();
        let path = dir.path().join("a/b/blob");
        AtomicWrite::new(&path)
            .temp_dir(&scratch)
            .create_parents()
            .write(b"x")
            .unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"x");
        assert!(names(&scratch).is_empty());
    }

    #[test]
    fn failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir/file");
        assert!(write_atomic(&path, b"x").is_err());
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn private_dir_narrows_an_open_one() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        fs::create_dir(&state).unwrap();
        fs::set_permissions(&state, Permissions::from_mode(0o755)).unwrap();
        private_dir(&state).unwrap();
        let mode = fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}

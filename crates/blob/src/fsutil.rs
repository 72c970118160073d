//! Durable filesystem steps: write, fsync, rename, fsync the directory.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use wharf_oci::Digest;

use crate::{BlobError, BlobStat};

pub(crate) fn create_dir_all(path: &Path) -> Result<(), BlobError> {
    fs::create_dir_all(path).map_err(|e| BlobError::io(path, e))
}

pub(crate) fn fsync_dir(path: &Path) -> Result<(), BlobError> {
    wharf_fs::sync_dir(path).map_err(|e| BlobError::io(path, e))
}

/// Makes sure `target`'s parent exists durably before a rename lands in it.
fn ensure_parent(target: &Path) -> Result<(), BlobError> {
    let parent = target.parent().expect("blob paths have parents");
    if !parent.exists() {
        create_dir_all(parent)?;
        // The new directory entries must survive a crash too.
        let mut dir = parent;
        while let Some(up) = dir.parent() {
            fsync_dir(up)?;
            if up.file_name().is_some_and(|n| n == "blobs") {
                break;
            }
            dir = up;
        }
    }
    Ok(())
}

/// Moves a fully written, fsynced file to `target`. When `target` already
/// exists (same content, since names are digests) the source is dropped and
/// the target's modification time refreshed, which garbage collection reads
/// as "recently written".
pub(crate) fn publish_file(source: &Path, target: &Path) -> Result<(), BlobError> {
    ensure_parent(target)?;
    if target.exists() {
        touch(target)?;
        let _ = fs::remove_file(source);
        return Ok(());
    }
    fs::rename(source, target).map_err(|e| BlobError::io(target, e))?;
    fsync_dir(target.parent().expect("blob paths have parents"))
}

/// Writes `bytes` as the blob at `target` (through a temporary file in
/// `tmp_dir`, on the same filesystem).
pub(crate) fn publish_bytes(tmp_dir: &Path, target: &Path, bytes: &[u8]) -> Result<(), BlobError> {
    // Content already there (a manifest pushed again): refresh it, no write.
    if target.exists() {
        return touch(target);
    }
    ensure_parent(target)?;
    wharf_fs::AtomicWrite::new(target)
        .temp_dir(tmp_dir)
        .write(bytes)
        .map_err(|e| BlobError::io(target, e))
}

/// Starts writing `len` bytes at `offset` of `file` to disk without waiting
/// for it and without a journal commit, unlike `fdatasync`, which would
/// stall the writer on every call.
#[allow(unsafe_code)]
pub(crate) fn start_writeback(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (offset, len) = (offset as libc::off64_t, len as libc::off64_t);
    // SAFETY: sync_file_range only reads its integer arguments; the
    // descriptor is valid for the duration of the borrow of `file`.
    let rc = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(crate) fn touch(path: &Path) -> Result<(), BlobError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()))
        .map_err(|e| BlobError::io(path, e))
}

/// Lists `blobs/<algorithm>/<xx>/<hex>`, skipping anything that is not a
/// well-formed digest path (it cannot have been written by this crate).
pub(crate) fn walk_blobs(root: &Path) -> Result<Vec<(Digest, BlobStat)>, BlobError> {
    let mut out = Vec::new();
    for algorithm in read_dir_names(root)? {
        let algorithm_dir = root.join(&algorithm);
        for prefix in read_dir_names(&algorithm_dir)? {
            let prefix_dir = algorithm_dir.join(&prefix);
            for hex in read_dir_names(&prefix_dir)? {
                let Ok(digest) = format!("{algorithm}:{hex}").parse::<Digest>() else {
                    continue;
                };
                let path = prefix_dir.join(&hex);
                let Ok(meta) = fs::metadata(&path) else {
                    continue;
                };
                let modified = meta.modified().map_err(|e| BlobError::io(&path, e))?;
                out.push((
                    digest,
                    BlobStat {
                        size: meta.len(),
                        modified,
                    },
                ));
            }
        }
    }
    Ok(out)
}

fn read_dir_names(dir: &Path) -> Result<Vec<String>, BlobError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(BlobError::io(dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| BlobError::io(dir, e))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

/// An upload session as found on disk.
pub(crate) struct SessionOnDisk {
    pub id: String,
    /// Length of its data so far.
    pub bytes: u64,
    /// Time since its data last changed.
    pub idle: Duration,
}

/// Every upload session under `dir` with its size and idle time.
pub(crate) fn upload_sessions(dir: &Path) -> Result<Vec<SessionOnDisk>, BlobError> {
    let now = SystemTime::now();
    let mut sessions = Vec::new();
    for id in read_dir_names(dir)? {
        let session = dir.join(&id);
        // A session being created may not have its data file yet: fall back
        // to the directory's own time rather than calling it idle.
        let (bytes, modified) = match fs::metadata(session.join("data")) {
            Ok(meta) => (meta.len(), meta.modified()),
            Err(_) => (0, fs::metadata(&session).and_then(|m| m.modified())),
        };
        let Ok(modified) = modified else { continue };
        sessions.push(SessionOnDisk {
            id,
            bytes,
            idle: now.duration_since(modified).unwrap_or_default(),
        });
    }
    Ok(sessions)
}

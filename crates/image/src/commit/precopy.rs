//! The pre-copy: before the container is frozen, each changed regular
//! file's content is copied (kernel-side) into a staging directory, with
//! what its `lstat` said just before the copy and when the copy began. The
//! frozen pass (snapshot.rs) then copies again only what may have changed
//! since, so the freeze lasts about as long as walking the upper directory
//! plus copying what moved, not copying everything (as CRIU's pre-dump
//! and live migration do for memory).
//!
//! ## When a staged copy is still the file's content
//!
//! A file's copy is reused while frozen only when its device, inode, size,
//! mtime and ctime are those read before the copy, the container has it
//! mapped shared-writable nowhere, and its ctime is older than the copy's
//! start by [`CTIME_MARGIN`]. Why that is enough:
//!
//! - Every `write`, `truncate` or other content change through a file
//!   descriptor sets ctime (and mtime) to the filesystem's current time.
//!   Linux takes that time from the coarse clock, which lags the real
//!   clock by at most one tick (a jiffy: 10 ms at HZ=100, 1 ms at HZ=1000),
//!   and truncates it to the filesystem's granularity (ext4 and xfs: 1 ns;
//!   what counts is the tick).
//! - Since Linux 6.13, ext4, xfs, btrfs and tmpfs stamp with multigrain
//!   timestamps: once a ctime has been read (our `lstat`), the next change
//!   gets a fine-grained time, so it differs from the recorded value even
//!   within the same tick (this machine's kernel does). The margin keeps
//!   the argument true on kernels and filesystems without them.
//! - So a change that began after the copy began (at `start`) leaves a
//!   ctime of at least `start - 1 tick`. A file whose ctime, read while
//!   frozen, is still the recorded one, and that recorded ctime is older
//!   than `start - CTIME_MARGIN` with the margin well above a tick, has not
//!   been changed since the copy began: a later change would have moved
//!   ctime to at least `start - 1 tick`, which is not the recorded value.
//! - A change that began before the copy did was either over before it,
//!   and so is in the copy, or was still copying data while ours read: the
//!   kernel stamps ctime when a write starts, so such a write left ctime
//!   within the margin of `start` unless one single write call ran longer
//!   than the margin, the residual case; appends (which move the size) are
//!   caught regardless, and a copy whose length is not the recorded size is
//!   never reused.
//! - Writes through a shared writable `mmap` do not always move ctime
//!   (only the first write fault on a clean page does): files mapped that
//!   way by any process of the container, read from `/proc/PID/maps` while
//!   frozen ([`shared_writable_inodes`]), are always copied while frozen.
//! - Renames, deletions and new files are seen by the frozen walk itself:
//!   a name whose inode differs from the recorded one is copied anew, a
//!   deleted one is simply not in the walk.

use std::collections::{HashMap, HashSet};
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::staging::{StagingDir, open_source};
use super::walk::{Exclusions, Kind, walk};
use crate::ImageError;

/// How much older than its copy's start a file's ctime must be for the
/// copy to be trusted without copying again while frozen: five times the
/// coarsest Linux tick (10 ms at HZ=100); see the module's comment.
pub const CTIME_MARGIN: Duration = Duration::from_millis(50);

/// What the pre-copy recorded of one file.
#[derive(Debug, Clone)]
pub(crate) struct Staged {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    /// When its copy began (wall clock, as the kernel's timestamps are).
    copy_started: SystemTime,
    /// The copy, in the staging directory.
    pub(crate) path: PathBuf,
}

impl Staged {
    /// Whether this copy is still the content of the file whose frozen
    /// `lstat` is `meta` (see the module's comment).
    pub(crate) fn still_current(&self, meta: &Metadata) -> bool {
        let unchanged = self.dev == meta.dev()
            && self.ino == meta.ino()
            && self.size == meta.len()
            && self.mtime == (meta.mtime(), meta.mtime_nsec())
            && self.ctime == (meta.ctime(), meta.ctime_nsec());
        unchanged && older_than(self.ctime, self.copy_started, CTIME_MARGIN)
    }
}

/// Whether the timestamp `(secs, nsecs)` is older than `reference - margin`.
fn older_than(stamp: (i64, i64), reference: SystemTime, margin: Duration) -> bool {
    let Some(limit) = reference.checked_sub(margin) else {
        return false;
    };
    let limit = match limit.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => (since.as_secs() as i64, i64::from(since.subsec_nanos())),
        // A reference before 1970: nothing is older for sure.
        Err(_) => return false,
    };
    stamp < limit
}

/// The result of [`crate::ImageStore::precopy_upper`]: staged copies of the
/// changed files of an upper directory, to hand to
/// [`crate::ImageStore::snapshot_precopied`] once the container is frozen.
/// The copies are removed when this (or the snapshot made from it) is
/// dropped.
#[derive(Debug)]
pub struct PreCopy {
    pub(crate) upper: PathBuf,
    pub(crate) exclude: Vec<PathBuf>,
    pub(crate) staging: StagingDir,
    /// By path relative to the upper directory.
    pub(crate) files: HashMap<PathBuf, Staged>,
    /// Files staged.
    pub files_copied: u64,
    /// Bytes of content staged.
    pub bytes_copied: u64,
    /// How long the pre-copy took.
    pub read_time: Duration,
}

/// Copies the regular files of `upper` (minus `exclude`) into `staging`
/// while the container still runs. Anything the container changes under
/// the copy (a file removed, a directory gone) is left for the frozen pass,
/// which sees the truth; only a failure to write the staging area (a full
/// disk) is an error. Blocking.
pub(crate) fn precopy(
    upper: &Path,
    exclude: &[PathBuf],
    mut staging: StagingDir,
) -> Result<PreCopy, ImageError> {
    let started = Instant::now();
    let exclusions = Exclusions::new(upper, exclude)?;
    let mut files: HashMap<PathBuf, Staged> = HashMap::new();
    let mut linked: HashSet<(u64, u64)> = HashSet::new();
    let (mut files_copied, mut bytes_copied) = (0, 0);
    let walked = walk(upper, &exclusions, false, &mut |item| {
        let Kind::File { size } = item.kind else {
            return Ok(());
        };
        let meta = &item.meta;
        // Other names of a hard-linked file reuse nothing: the frozen
        // pass writes them as tar links to the first.
        if meta.nlink() > 1 && !linked.insert((meta.dev(), meta.ino())) {
            return Ok(());
        }
        let copy_started = SystemTime::now();
        let full = upper.join(&item.rel);
        let Some((path, copied)) = stage(&full, meta, &mut staging)? else {
            return Ok(());
        };
        files_copied += 1;
        bytes_copied += copied;
        if copied != size {
            // Changed under the copy: copied again while frozen.
            return Ok(());
        }
        files.insert(
            item.rel,
            Staged {
                dev: meta.dev(),
                ino: meta.ino(),
                size,
                mtime: (meta.mtime(), meta.mtime_nsec()),
                ctime: (meta.ctime(), meta.ctime_nsec()),
                copy_started,
                path,
            },
        );
        Ok(())
    });
    match walked {
        Ok(()) => {}
        Err(ImageError::Io { .. }) | Err(ImageError::UnsupportedChange { .. }) => {
            // The container moved under the walk, or holds what a layer
            // cannot: the frozen pass finds out for sure and says so.
            tracing::debug!(error = %walked.unwrap_err(), "pre-copy stopped early");
        }
        Err(e) => return Err(e),
    }
    Ok(PreCopy {
        upper: upper.to_path_buf(),
        exclude: exclude.to_vec(),
        staging,
        files,
        files_copied,
        bytes_copied,
        read_time: started.elapsed(),
    })
}

/// Copies the file at `full`, whose `lstat` was `meta`, into a new staging
/// file: its path and the bytes copied, or `None` when the file is gone or
/// is another one by now. Errors only for the staging side.
fn stage(
    full: &Path,
    meta: &Metadata,
    staging: &mut StagingDir,
) -> Result<Option<(PathBuf, u64)>, ImageError> {
    let Ok(file) = open_source(full) else {
        return Ok(None);
    };
    match file.metadata() {
        Ok(now) if now.dev() == meta.dev() && now.ino() == meta.ino() => {}
        _ => return Ok(None),
    }
    let (mut out, path) = staging.new_file()?;
    // `&File` into `File`: std copies with copy_file_range (or sendfile),
    // never through a buffer of ours.
    match io::copy(&mut (&file).take(u64::MAX), &mut out) {
        Ok(copied) => Ok(Some((path, copied))),
        Err(e) if is_staging_full(&e) => Err(ImageError::io("copy into", staging.path(), e)),
        Err(e) => {
            tracing::debug!(path = %full.display(), error = %e, "pre-copy skipped a file");
            drop(out);
            super::snapshot::remove_temp(&path);
            Ok(None)
        }
    }
}

/// Errors that mean the staging area cannot take more.
fn is_staging_full(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::ENOSPC) | Some(nix::libc::EDQUOT)
    )
}

/// Inode numbers of the files that the processes `pids` have mapped
/// shared and writable (`rw-s` in `/proc/PID/maps`): writes through such a
/// mapping need not move ctime, so these files are always copied while
/// frozen. Matching on the inode number alone (overlayfs shows the upper
/// filesystem's or its own device) may copy an unrelated file again, never
/// miss one. Processes gone by now are skipped. Blocking.
pub fn shared_writable_inodes(pids: &[u32]) -> Result<HashSet<u64>, ImageError> {
    let mut inodes = HashSet::new();
    for pid in pids {
        let path = PathBuf::from(format!("/proc/{pid}/maps"));
        let mut text = String::new();
        match File::open(&path).and_then(|mut f| f.read_to_string(&mut text)) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(nix::libc::ENOENT | nix::libc::ESRCH)) => {
                continue;
            }
            Err(e) => return Err(ImageError::io("read", &path, e)),
        }
        inodes.extend(text.lines().filter_map(shared_writable_inode));
    }
    Ok(inodes)
}

/// The inode of one `/proc/PID/maps` line
/// (`start-end perms offset dev inode path`) if it maps a file shared and
/// writable.
fn shared_writable_inode(line: &str) -> Option<u64> {
    let mut fields = line.split_ascii_whitespace();
    let perms = fields.nth(1)?.as_bytes();
    if perms.len() < 4 || perms[1] != b'w' || perms[3] != b's' {
        return None;
    }
    let inode: u64 = fields.nth(2)?.parse().ok()?;
    (inode != 0).then_some(inode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines() {
        assert_eq!(
            shared_writable_inode(
                "7f1c2a000000-7f1c2a001000 rw-s 00000000 00:2f 131090   /data/shared.bin"
            ),
            Some(131090)
        );
        for other in [
            "7f1c2a000000-7f1c2a001000 r--s 00000000 00:2f 131090   /data/ro.bin",
            "7f1c2a000000-7f1c2a001000 rw-p 00000000 00:2f 131090   /data/private.bin",
            "7f1c2a000000-7f1c2a001000 rw-s 00000000 00:01 0   /dev/zero (deleted)",
            "7ffd1c5e7000-7ffd1c608000 rw-p 00000000 00:00 0   [stack]",
            "garbage",
        ] {
            assert_eq!(shared_writable_inode(other), None, "{other}");
        }
    }

    #[test]
    fn ctime_margin() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert!(older_than((999, 900_000_000), start, CTIME_MARGIN));
        assert!(!older_than((999, 950_000_000), start, CTIME_MARGIN));
        assert!(!older_than((999, 990_000_000), start, CTIME_MARGIN));
        assert!(!older_than((1000, 0), start, CTIME_MARGIN));
        assert!(!older_than((0, 0), SystemTime::UNIX_EPOCH, CTIME_MARGIN));
    }
}

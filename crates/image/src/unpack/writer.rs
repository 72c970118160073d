//! Writes tar entries into a layer directory without ever following a
//! symlink and without writing outside the directory.
//!
//! Safety rests on three rules: archive paths are checked lexically first
//! (`paths.rs`); every parent directory of an entry is checked with
//! `lstat` to be a real directory inside the layer (created if missing,
//! refused if a symlink or anything else); and the final component is
//! removed before it is created, with calls that do not follow symlinks
//! (`O_CREAT|O_EXCL`, `symlink`, `link`, `mknod`, `lchown`, `lsetxattr`,
//! `utimensat(AT_SYMLINK_NOFOLLOW)`). The directory is private to this
//! process while it is unpacked, so nothing changes between check and use.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, FileTimes, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use nix::sys::stat::{Mode, SFlag, UtimensatFlags, makedev, mknod, utimensat};
use nix::sys::time::TimeSpec;
use tar::EntryType;
use xattr::FileExt;

use super::paths::{Whiteout, relative_path, whiteout_kind};
use super::{UnpackLimits, UnpackStats};
use crate::ImageError;
use crate::error::io_err;

/// The xattr overlayfs reads to treat a directory as opaque.
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Overlayfs' private namespace: only this crate may set it (from
/// `.wh..wh..opq`), never a layer's own xattrs, which could otherwise
/// redirect lookups or fake whiteouts.
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";
const COPY_BUFFER: usize = 256 << 10;

/// Ownership, mode, time and xattrs of one entry.
#[derive(Clone, Debug)]
struct EntryMeta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Duration,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

/// Writes one layer's entries under `root`.
pub(crate) struct LayerWriter<'a> {
    root: &'a Path,
    layer: &'a str,
    limits: UnpackLimits,
    is_root: bool,
    /// Relative directories already checked to be real directories.
    known_dirs: HashSet<PathBuf>,
    /// Directory metadata applied at the end, once their contents (which
    /// change their mtime and may need their write permission) are written.
    pending_dirs: HashMap<PathBuf, EntryMeta>,
    stats: UnpackStats,
    buffer: Vec<u8>,
}

impl<'a> LayerWriter<'a> {
    pub(crate) fn new(root: &'a Path, layer: &'a str, limits: UnpackLimits) -> LayerWriter<'a> {
        LayerWriter {
            root,
            layer,
            limits,
            is_root: nix::unistd::geteuid().is_root(),
            known_dirs: HashSet::new(),
            pending_dirs: HashMap::new(),
            stats: UnpackStats::default(),
            buffer: vec![0; COPY_BUFFER],
        }
    }

    /// Writes one entry; its data may be left partly unread (the caller
    /// drains it).
    pub(crate) fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), ImageError> {
        self.stats.entries += 1;
        if self.stats.entries > self.limits.max_entries {
            return Err(ImageError::LayerTooLarge {
                layer: self.layer.to_string(),
                limit: format!("entry count limit of {}", self.limits.max_entries),
            });
        }
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            // Archive-wide PAX records (e.g. git's commit id) describe no file.
            // Skipped before anything reads its data, which the caller streams away.
            return Ok(());
        }
        let raw = entry.path().map_err(|e| self.malformed(e))?.into_owned();
        let rel = relative_path(&raw).map_err(|reason| self.refuse(&raw, reason))?;
        let meta = self.meta_of(&raw, entry)?;
        if let Some(name) = rel.file_name() {
            match whiteout_kind(name).map_err(|reason| self.refuse(&raw, reason))? {
                Whiteout::None => {}
                Whiteout::Opaque => return self.opaque(&raw, &rel),
                Whiteout::Delete(target) => {
                    return self.whiteout(&raw, &rel.with_file_name(target));
                }
                Whiteout::Meta => return Ok(()),
            }
        }
        if rel.as_os_str().is_empty() && kind != EntryType::Directory {
            return Err(self.refuse(&raw, "it would replace the layer's root directory".into()));
        }
        match kind {
            EntryType::Directory => self.directory(&raw, &rel, meta),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.regular(&raw, &rel, &meta, entry)
            }
            EntryType::Symlink => {
                let target = self.link_name(&raw, entry)?;
                self.symlink(&raw, &rel, &meta, &target)
            }
            EntryType::Link => {
                let target = self.link_name(&raw, entry)?;
                self.hard_link(&raw, &rel, &target)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.special(&raw, &rel, &meta, kind, entry.header())
            }
            other => Err(self.refuse(&raw, format!("unsupported entry type {other:?}"))),
        }
    }

    /// Applies the directories' final metadata and returns the statistics.
    pub(crate) fn finish(mut self) -> Result<UnpackStats, ImageError> {
        let mut pending: Vec<_> = std::mem::take(&mut self.pending_dirs).into_iter().collect();
        // Children before their parents: a parent's final mode may deny access.
        pending.sort_by_key(|(rel, _)| std::cmp::Reverse(rel.components().count()));
        // A later entry may have replaced a directory or one of its parents
        // with a symlink; re-check every parent, once, against the final tree
        // (nothing below changes its shape).
        self.known_dirs.clear();
        for (rel, meta) in pending {
            if self.walk_parents(&rel, &rel, false).is_err() {
                continue;
            }
            let full = self.root.join(&rel);
            if fs::symlink_metadata(&full).is_ok_and(|m| m.is_dir()) {
                self.set_owner(&full, &meta)?;
                fs::set_permissions(&full, Permissions::from_mode(meta.mode))
                    .map_err(io_err("set mode of", &full))?;
                set_path_times(&full, meta.mtime)?;
            }
        }
        Ok(self.stats)
    }

    fn directory(&mut self, raw: &Path, rel: &Path, meta: EntryMeta) -> Result<(), ImageError> {
        let full = self.root.join(rel);
        if !rel.as_os_str().is_empty() {
            self.walk_parents(raw, rel, true)?;
            if !self.clear(rel, true)? {
                // Owner-only until the end: the final mode may lack write permission.
                create_dir(&full, 0o700)?;
            }
            self.known_dirs.insert(rel.to_path_buf());
        }
        self.set_path_xattrs(&full, &meta)?;
        self.pending_dirs.insert(rel.to_path_buf(), meta);
        Ok(())
    }

    fn regular<R: Read>(
        &mut self,
        raw: &Path,
        rel: &Path,
        meta: &EntryMeta,
        data: &mut R,
    ) -> Result<(), ImageError> {
        self.walk_parents(raw, rel, true)?;
        self.clear(rel, false)?;
        let full = self.root.join(rel);
        // O_EXCL: fails rather than follows if anything, a symlink included, is there.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&full)
            .map_err(io_err("create file", &full))?;
        self.copy_data(data, &mut file, &full)?;
        if self.is_root {
            std::os::unix::fs::fchown(&file, Some(meta.uid), Some(meta.gid))
                .map_err(io_err("change owner of", &full))?;
        }
        // After chown, which clears set-id bits.
        file.set_permissions(Permissions::from_mode(meta.mode))
            .map_err(io_err("set mode of", &full))?;
        for (name, value) in &meta.xattrs {
            let result = file.set_xattr(name, value);
            self.xattr_result(result, &full, name)?;
        }
        let time = SystemTime::UNIX_EPOCH + meta.mtime;
        file.set_times(FileTimes::new().set_accessed(time).set_modified(time))
            .map_err(io_err("set times of", &full))
    }

    fn copy_data<R: Read>(
        &mut self,
        data: &mut R,
        file: &mut File,
        path: &Path,
    ) -> Result<(), ImageError> {
        loop {
            let n = match data.read(&mut self.buffer) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.malformed(e)),
            };
            self.stats.file_bytes += n as u64;
            if self.stats.file_bytes > self.limits.max_bytes {
                return Err(ImageError::LayerTooLarge {
                    layer: self.layer.to_string(),
                    limit: format!("unpacked size limit of {} bytes", self.limits.max_bytes),
                });
            }
            file.write_all(&self.buffer[..n])
                .map_err(io_err("write", path))?;
        }
    }

    fn symlink(
        &mut self,
        raw: &Path,
        rel: &Path,
        meta: &EntryMeta,
        target: &Path,
    ) -> Result<(), ImageError> {
        if target.as_os_str().is_empty() {
            return Err(self.refuse(raw, "the symlink has an empty target".into()));
        }
        self.walk_parents(raw, rel, true)?;
        self.clear(rel, false)?;
        let full = self.root.join(rel);
        // The target is stored verbatim and resolved only inside the container.
        std::os::unix::fs::symlink(target, &full).map_err(io_err("create symlink", &full))?;
        self.set_owner(&full, meta)?;
        set_path_times(&full, meta.mtime)
    }

    fn hard_link(&mut self, raw: &Path, rel: &Path, target: &Path) -> Result<(), ImageError> {
        let refuse = |this: &Self, why: String| {
            this.refuse(raw, format!("hard link target {target:?}: {why}"))
        };
        let target_rel = relative_path(target).map_err(|why| refuse(self, why))?;
        if target_rel.as_os_str().is_empty() {
            return Err(refuse(self, "it is the layer's root".into()));
        }
        self.walk_parents(raw, &target_rel, false)?;
        let target_full = self.root.join(&target_rel);
        match fs::symlink_metadata(&target_full) {
            Ok(m) if m.is_dir() => return Err(refuse(self, "it is a directory".into())),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(refuse(self, "no such entry earlier in the layer".into()));
            }
            Err(e) => return Err(ImageError::io("inspect", &target_full, e)),
        }
        if target_rel == rel {
            return Ok(());
        }
        self.walk_parents(raw, rel, true)?;
        self.clear(rel, false)?;
        let full = self.root.join(rel);
        // link(2) without AT_SYMLINK_FOLLOW links a symlink itself, never its target.
        fs::hard_link(&target_full, &full).map_err(io_err("create hard link", &full))
    }

    fn special(
        &mut self,
        raw: &Path,
        rel: &Path,
        meta: &EntryMeta,
        kind: EntryType,
        header: &tar::Header,
    ) -> Result<(), ImageError> {
        let flag = match kind {
            EntryType::Char => SFlag::S_IFCHR,
            EntryType::Block => SFlag::S_IFBLK,
            _ => SFlag::S_IFIFO,
        };
        if !self.is_root && flag != SFlag::S_IFIFO {
            tracing::debug!(layer = self.layer, entry = %raw.display(), "device node skipped: not root");
            self.stats.skipped += 1;
            return Ok(());
        }
        let device = if flag == SFlag::S_IFIFO {
            // FIFOs have no device number; some writers leave the fields blank.
            0
        } else {
            self.device_number(header)?
        };
        self.walk_parents(raw, rel, true)?;
        self.clear(rel, false)?;
        let full = self.root.join(rel);
        mknod(&full, flag, Mode::from_bits_truncate(0o600), device)
            .map_err(|e| ImageError::io("create device node", &full, e.into()))?;
        self.set_owner(&full, meta)?;
        fs::set_permissions(&full, Permissions::from_mode(meta.mode))
            .map_err(io_err("set mode of", &full))?;
        self.set_path_xattrs(&full, meta)?;
        set_path_times(&full, meta.mtime)
    }

    fn device_number(&self, header: &tar::Header) -> Result<nix::libc::dev_t, ImageError> {
        let major = header.device_major().map_err(|e| self.malformed(e))?;
        let minor = header.device_minor().map_err(|e| self.malformed(e))?;
        Ok(makedev(
            major.unwrap_or(0).into(),
            minor.unwrap_or(0).into(),
        ))
    }

    /// `.wh.<name>`: an overlayfs whiteout, a 0/0 character device, hides
    /// `<name>` of the layers below.
    fn whiteout(&mut self, raw: &Path, target: &Path) -> Result<(), ImageError> {
        self.walk_parents(raw, target, true)?;
        let full = self.root.join(target);
        if fs::symlink_metadata(&full).is_ok() {
            // Whiteouts hide lower layers only; this layer's own entry stays.
            return Ok(());
        }
        if !self.is_root {
            return Err(self.needs_root("whiteout", target));
        }
        mknod(&full, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
            .map_err(|e| ImageError::io("create whiteout", &full, e.into()))
    }

    /// `.wh..wh..opq`: the parent directory hides the lower layers' contents.
    fn opaque(&mut self, raw: &Path, marker: &Path) -> Result<(), ImageError> {
        self.walk_parents(raw, marker, true)?;
        let dir = marker.parent().unwrap_or(Path::new(""));
        if !self.is_root {
            return Err(self.needs_root("opaque directory", dir));
        }
        let full = self.root.join(dir);
        xattr::set(&full, OPAQUE_XATTR, b"y").map_err(io_err("mark opaque", &full))
    }

    /// Checks that every parent of `rel` is a real directory inside the
    /// layer, creating missing ones when `create` (archives may omit them).
    fn walk_parents(&mut self, raw: &Path, rel: &Path, create: bool) -> Result<(), ImageError> {
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        let mut current = PathBuf::new();
        for component in parent.components() {
            current.push(component);
            if self.known_dirs.contains(&current) {
                continue;
            }
            let full = self.root.join(&current);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.file_type().is_symlink() => {
                    let why = format!("its parent {} is a symbolic link", current.display());
                    return Err(self.refuse(raw, why));
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    let why = format!("its parent {} is not a directory", current.display());
                    return Err(self.refuse(raw, why));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    create_dir(&full, 0o755)?
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let why = format!("its parent {} does not exist", current.display());
                    return Err(self.refuse(raw, why));
                }
                Err(e) => return Err(ImageError::io("inspect", &full, e)),
            }
            self.known_dirs.insert(current.clone());
        }
        Ok(())
    }

    /// Removes whatever is at `rel` so that an entry can take its place (a
    /// later entry for the same path wins, as with any tar). Keeps an
    /// existing directory if `keep_dir`; returns whether one was kept.
    fn clear(&mut self, rel: &Path, keep_dir: bool) -> Result<bool, ImageError> {
        let full = self.root.join(rel);
        match fs::symlink_metadata(&full) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(ImageError::io("inspect", &full, e)),
            Ok(m) if m.is_dir() && keep_dir => Ok(true),
            Ok(m) if m.is_dir() => {
                fs::remove_dir_all(&full).map_err(io_err("remove directory", &full))?;
                self.known_dirs.clear();
                self.pending_dirs.retain(|dir, _| !dir.starts_with(rel));
                Ok(false)
            }
            Ok(_) => {
                fs::remove_file(&full).map_err(io_err("remove", &full))?;
                Ok(false)
            }
        }
    }

    fn set_owner(&self, full: &Path, meta: &EntryMeta) -> Result<(), ImageError> {
        if !self.is_root {
            return Ok(());
        }
        std::os::unix::fs::lchown(full, Some(meta.uid), Some(meta.gid))
            .map_err(io_err("change owner of", full))
    }

    fn set_path_xattrs(&mut self, full: &Path, meta: &EntryMeta) -> Result<(), ImageError> {
        for (name, value) in &meta.xattrs {
            // xattr::set is lsetxattr: it does not follow symlinks.
            let result = xattr::set(full, name, value);
            self.xattr_result(result, full, name)?;
        }
        Ok(())
    }

    /// Xattrs the filesystem or our privileges do not allow (`trusted.*`
    /// without root, any on filesystems without support) are skipped and
    /// counted rather than failing the layer.
    fn xattr_result(
        &mut self,
        result: io::Result<()>,
        full: &Path,
        name: &OsStr,
    ) -> Result<(), ImageError> {
        match result {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc_errno) if is_skippable_xattr_errno(libc_errno)) =>
            {
                tracing::debug!(layer = self.layer, path = %full.display(), xattr = ?name, error = %e, "xattr skipped");
                self.stats.skipped += 1;
                Ok(())
            }
            Err(e) => Err(ImageError::io("set extended attribute on", full, e)),
        }
    }

    fn meta_of<R: Read>(
        &self,
        raw: &Path,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<EntryMeta, ImageError> {
        let header = entry.header();
        let mode = header.mode().map_err(|e| self.malformed(e))? & 0o7777;
        let id = |value: io::Result<u64>| -> Result<u32, ImageError> {
            let value = value.map_err(|e| self.malformed(e))?;
            u32::try_from(value)
                .map_err(|_| self.refuse(raw, format!("owner id {value} is out of range")))
        };
        let uid = id(header.uid())?;
        let gid = id(header.gid())?;
        let mut mtime = Duration::from_secs(header.mtime().map_err(|e| self.malformed(e))?);
        let mut xattrs = Vec::new();
        if let Some(extensions) = entry.pax_extensions().map_err(|e| self.malformed(e))? {
            for extension in extensions {
                let extension = extension.map_err(|e| self.malformed(e))?;
                let key = extension.key_bytes();
                if key == b"mtime" {
                    mtime = parse_pax_time(extension.value_bytes()).unwrap_or(mtime);
                } else if let Some((name, value)) = pax_xattr(key, extension.value_bytes()) {
                    if name.as_bytes().starts_with(OVERLAY_XATTR_PREFIX) {
                        tracing::debug!(layer = self.layer, entry = %raw.display(), "overlay xattr in layer ignored");
                        continue;
                    }
                    xattrs.push((name, value));
                }
            }
        }
        Ok(EntryMeta {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        })
    }

    fn link_name<R: Read>(
        &self,
        raw: &Path,
        entry: &tar::Entry<'_, R>,
    ) -> Result<PathBuf, ImageError> {
        entry
            .link_name()
            .map_err(|e| self.malformed(e))?
            .map(|name| name.into_owned())
            .ok_or_else(|| self.refuse(raw, "the link has no target".into()))
    }

    fn refuse(&self, raw: &Path, reason: String) -> ImageError {
        ImageError::UnsafeEntry {
            layer: self.layer.to_string(),
            entry: raw.display().to_string(),
            reason,
        }
    }

    fn malformed(&self, source: io::Error) -> ImageError {
        ImageError::MalformedLayer {
            layer: self.layer.to_string(),
            source: Arc::new(source),
        }
    }

    fn needs_root(&self, what: &'static str, rel: &Path) -> ImageError {
        ImageError::NeedsRoot {
            layer: self.layer.to_string(),
            what,
            path: rel.to_path_buf(),
        }
    }
}

fn is_skippable_xattr_errno(errno: i32) -> bool {
    use nix::errno::Errno;
    [Errno::EPERM, Errno::ENOTSUP, Errno::EOPNOTSUPP]
        .iter()
        .any(|e| *e as i32 == errno)
}

fn create_dir(full: &Path, mode: u32) -> Result<(), ImageError> {
    fs::create_dir(full).map_err(io_err("create directory", full))?;
    // Explicitly, so that the process umask does not decide.
    fs::set_permissions(full, Permissions::from_mode(mode)).map_err(io_err("set mode of", full))
}

fn set_path_times(full: &Path, mtime: Duration) -> Result<(), ImageError> {
    let secs = i64::try_from(mtime.as_secs()).unwrap_or(i64::MAX);
    let time = TimeSpec::new(secs, i64::from(mtime.subsec_nanos()));
    utimensat(
        nix::fcntl::AT_FDCWD,
        full,
        &time,
        &time,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| ImageError::io("set times of", full, e.into()))
}

/// `SCHILY.xattr.<name>` (raw value) or `LIBARCHIVE.xattr.<name>` (base64).
fn pax_xattr(key: &[u8], value: &[u8]) -> Option<(OsString, Vec<u8>)> {
    if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
        return Some((OsStr::from_bytes(name).to_os_string(), value.to_vec()));
    }
    let name = key.strip_prefix(b"LIBARCHIVE.xattr.")?;
    let value = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(value.strip_suffix(b"=").unwrap_or(value))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(value))
        .ok()?;
    Some((OsStr::from_bytes(name).to_os_string(), value))
}

/// A PAX time, `seconds[.fraction]`; times before 1970 clamp to 0.
fn parse_pax_time(value: &[u8]) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?;
    let (secs, fraction) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().ok()?;
    if secs < 0 {
        return Some(Duration::ZERO);
    }
    let digits: String = fraction.chars().take(9).collect();
    let nanos = if digits.is_empty() {
        0
    } else {
        digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32)
    };
    Some(Duration::new(secs as u64, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pax_times() {
        assert_eq!(parse_pax_time(b"12"), Some(Duration::from_secs(12)));
        assert_eq!(
            parse_pax_time(b"12.5"),
            Some(Duration::new(12, 500_000_000))
        );
        assert_eq!(parse_pax_time(b"-3.1"), Some(Duration::ZERO));
        assert_eq!(parse_pax_time(b"x"), None);
    }

    #[test]
    fn reads_both_xattr_spellings() {
        let (name, value) = pax_xattr(b"SCHILY.xattr.user.a", b"v").unwrap();
        assert_eq!(
            (name.to_str().unwrap(), value.as_slice()),
            ("user.a", &b"v"[..])
        );
        let (name, value) = pax_xattr(b"LIBARCHIVE.xattr.user.b", b"dmFs").unwrap();
        assert_eq!(
            (name.to_str().unwrap(), value.as_slice()),
            ("user.b", &b"val"[..])
        );
        assert!(pax_xattr(b"path", b"x").is_none());
    }
}

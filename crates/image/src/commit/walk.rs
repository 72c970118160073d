//! Walks a container's overlayfs upper directory in a fixed order (sorted
//! names, each directory before its contents) and says what each entry is
//! as a layer sees it: a whiteout, an opaque directory, or an ordinary
//! file with the xattrs worth keeping. Measuring and snapshotting share
//! this walk, so the quota check sees exactly what the snapshot will write.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use crate::ImageError;
use crate::error::io_err;

/// Xattr prefixes overlayfs keeps for itself (`userxattr` mounts use the
/// `user.` one): never copied into a layer.
const OVERLAY_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];
/// Suffixes (after an overlay prefix) that make a directory opaque, rename
/// a directory, or leave a file's data in a lower layer.
const OPAQUE: &[u8] = b"opaque";
const REDIRECT: &[u8] = b"redirect";
const METACOPY: &[u8] = b"metacopy";
/// Names that read as OCI whiteouts once in a layer.
const WHITEOUT_PREFIX: &[u8] = b".wh.";

/// What an upper-directory entry becomes in the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A directory; `opaque` hides the lower layers' contents.
    Dir { opaque: bool },
    /// A regular file of `size` bytes.
    File { size: u64 },
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character or block device other than a whiteout.
    Device { block: bool },
    /// A 0/0 character device: the container deleted this name.
    Whiteout,
}

/// One entry of the walk.
pub(crate) struct Item {
    /// Path relative to the upper directory (and to the container's root).
    pub rel: PathBuf,
    /// Its `lstat`.
    pub meta: Metadata,
    pub kind: Kind,
    /// Xattrs to keep (everything but overlayfs' own); read only when
    /// asked for.
    pub xattrs: Vec<(OsString, Vec<u8>)>,
}

/// Container paths to leave out, as relative paths.
pub(crate) struct Exclusions(HashSet<PathBuf>);

impl Exclusions {
    /// Absolute container paths (`/etc/resolv.conf`) to relative ones;
    /// anything else is refused, since it names nothing in the container.
    pub(crate) fn new(upper: &Path, exclude: &[PathBuf]) -> Result<Exclusions, ImageError> {
        let mut set = HashSet::new();
        for path in exclude {
            let mut rel = PathBuf::new();
            let mut components = path.components();
            if components.next() != Some(Component::RootDir) {
                return Err(unsupported(
                    upper,
                    path,
                    "an excluded path must be absolute inside the container",
                ));
            }
            for component in components {
                match component {
                    Component::Normal(name) => rel.push(name),
                    Component::CurDir => {}
                    _ => {
                        return Err(unsupported(
                            upper,
                            path,
                            "an excluded path may not contain `..`",
                        ));
                    }
                }
            }
            if !rel.as_os_str().is_empty() {
                set.insert(rel);
            }
        }
        Ok(Exclusions(set))
    }

    fn contains(&self, rel: &Path) -> bool {
        self.0.contains(rel)
    }
}

/// Walks `upper` (not following symlinks) and hands each entry to `visit`,
/// in order: sorted by name, a directory before its contents. Excluded
/// paths (with everything under them) and sockets, which no archive can
/// hold, are left out. Blocking.
pub(crate) fn walk(
    upper: &Path,
    exclude: &Exclusions,
    read_xattrs: bool,
    visit: &mut dyn FnMut(Item) -> Result<(), ImageError>,
) -> Result<(), ImageError> {
    let root = fs::symlink_metadata(upper).map_err(io_err("inspect", upper))?;
    if !root.is_dir() {
        return Err(unsupported(
            upper,
            Path::new("/"),
            "the upper directory is not a directory",
        ));
    }
    // Entries still to visit, the next one last.
    let mut pending: Vec<PathBuf> = children(upper, Path::new(""))?;
    pending.reverse();
    while let Some(rel) = pending.pop() {
        if exclude.contains(&rel) {
            continue;
        }
        let full = upper.join(&rel);
        let meta = match fs::symlink_metadata(&full) {
            Ok(meta) => meta,
            // Deleted since its directory was listed (a container committed
            // without pausing): it is not part of the changes any more.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ImageError::io("inspect", &full, e)),
        };
        let Some(item) = classify(upper, rel, meta, read_xattrs)? else {
            continue;
        };
        let descend = matches!(item.kind, Kind::Dir { .. });
        let rel = item.rel.clone();
        visit(item)?;
        if descend {
            let mut inner = children(upper, &rel)?;
            inner.reverse();
            pending.extend(inner);
        }
    }
    Ok(())
}

/// The entries of directory `rel`, sorted by name (bytewise).
fn children(upper: &Path, rel: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let dir = upper.join(rel);
    let mut names: Vec<OsString> = Vec::new();
    for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
        names.push(entry.map_err(io_err("list", &dir))?.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names.into_iter().map(|name| rel.join(name)).collect())
}

/// What `rel` is in a layer; `None` for what a layer cannot hold and the
/// container would not miss (sockets: whoever listens makes them anew).
fn classify(
    upper: &Path,
    rel: PathBuf,
    meta: Metadata,
    read_xattrs: bool,
) -> Result<Option<Item>, ImageError> {
    let name = rel.file_name().unwrap_or_default();
    let file_type = meta.file_type();
    let whiteout = file_type.is_char_device() && meta.rdev() == 0;
    if !whiteout && name.as_bytes().starts_with(WHITEOUT_PREFIX) {
        return Err(unsupported(
            upper,
            &rel,
            "a name starting with `.wh.` would read as a whiteout in a layer",
        ));
    }
    let full = upper.join(&rel);
    // Directories and files carry overlayfs' markers; the others are read
    // only for the xattrs a snapshot keeps.
    let markers = !whiteout && (file_type.is_dir() || file_type.is_file());
    let overlay = OverlayXattrs::read(&full, markers || (read_xattrs && !whiteout), read_xattrs)?;
    let kind = if whiteout {
        Kind::Whiteout
    } else if file_type.is_dir() {
        if overlay.redirect {
            return Err(unsupported(
                upper,
                &rel,
                "the directory was renamed with overlayfs redirect_dir; mount without it to commit",
            ));
        }
        Kind::Dir {
            opaque: overlay.opaque,
        }
    } else if file_type.is_file() {
        if overlay.metacopy {
            return Err(unsupported(
                upper,
                &rel,
                "the file's data is in a lower layer (overlayfs metacopy); mount without it to commit",
            ));
        }
        Kind::File { size: meta.len() }
    } else if file_type.is_symlink() {
        Kind::Symlink
    } else if file_type.is_fifo() {
        Kind::Fifo
    } else if file_type.is_char_device() || file_type.is_block_device() {
        Kind::Device {
            block: file_type.is_block_device(),
        }
    } else {
        tracing::debug!(path = %full.display(), "socket left out of the layer");
        return Ok(None);
    };
    Ok(Some(Item {
        rel,
        meta,
        kind,
        xattrs: overlay.kept,
    }))
}

/// The overlayfs markers on one entry, and its other xattrs.
#[derive(Default)]
struct OverlayXattrs {
    opaque: bool,
    redirect: bool,
    metacopy: bool,
    kept: Vec<(OsString, Vec<u8>)>,
}

impl OverlayXattrs {
    /// Reads `full`'s xattrs without following a symlink: nothing unless
    /// `read`, the values of others than overlayfs' only if `keep`.
    fn read(full: &Path, read: bool, keep: bool) -> Result<OverlayXattrs, ImageError> {
        let mut found = OverlayXattrs::default();
        if !read {
            return Ok(found);
        }
        let names = match xattr::list(full) {
            Ok(names) => names,
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOTSUP as i32) => {
                return Ok(found);
            }
            Err(e) => return Err(ImageError::io("list extended attributes of", full, e)),
        };
        for name in names {
            let bytes = name.as_bytes();
            let overlay = OVERLAY_PREFIXES
                .iter()
                .find_map(|prefix| bytes.strip_prefix(*prefix));
            let value = || -> Result<Vec<u8>, ImageError> {
                Ok(xattr::get(full, &name)
                    .map_err(io_err("read extended attribute of", full))?
                    .unwrap_or_default())
            };
            match overlay {
                Some(OPAQUE) => found.opaque = value()? == b"y",
                Some(REDIRECT) => found.redirect = true,
                Some(METACOPY) => found.metacopy = true,
                Some(_) => {}
                None if keep => found.kept.push((name.clone(), value()?)),
                None => {}
            }
        }
        Ok(found)
    }
}

/// The container's view of `rel`: `/etc/x`.
pub(crate) fn container_path(rel: &Path) -> String {
    format!("/{}", rel.display())
}

pub(crate) fn unsupported(upper: &Path, rel: &Path, reason: &str) -> ImageError {
    let path = if rel.is_absolute() {
        rel.display().to_string()
    } else {
        container_path(rel)
    };
    ImageError::UnsupportedChange {
        upper: upper.to_path_buf(),
        path,
        reason: reason.to_string(),
    }
}

/// A name as bytes, for headers.
pub(crate) fn bytes_of(path: &Path) -> &[u8] {
    OsStr::as_bytes(path.as_os_str())
}

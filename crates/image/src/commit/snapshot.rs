//! The container's changes as an uncompressed tar file, written while the
//! container is frozen: headers are built here, file contents are copied
//! by the kernel (`copy_file_range` through `std::io::copy` from file to
//! file), so the freeze lasts about as long as reading the changed bytes.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tar::{EntryType, Header};

use super::walk::{Exclusions, Item, Kind, bytes_of, unsupported, walk};
use crate::ImageError;
use crate::error::io_err;

const BLOCK: u64 = 512;
/// Longest name (and link target) a ustar header holds; longer ones go
/// into PAX records.
const NAME_FIELD: usize = 100;
/// The marker that makes a directory opaque in an OCI layer.
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// A container's changes as an uncompressed layer tar in the image
/// cache's `tmp/`; the file is removed when this is dropped.
#[derive(Debug)]
pub struct Snapshot {
    path: PathBuf,
    /// Tar entries written (whiteouts and opaque markers included).
    pub entries: u64,
    /// Bytes of regular file content copied.
    pub content_bytes: u64,
    /// Size of the tar file.
    pub tar_bytes: u64,
    /// How long reading the upper directory took: the freeze it needs.
    pub read_time: Duration,
}

impl Snapshot {
    /// The tar file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        remove_temp(&self.path);
    }
}

/// Removes a temporary file; absent is fine, anything else is logged (the
/// cache's `tmp/` is emptied at the next start anyway).
pub(crate) fn remove_temp(path: &Path) {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a temporary file");
        }
        _ => {}
    }
}

/// Writes the tar of `upper` (minus `exclude`) to `out`, a path that must
/// not exist; on error the file is removed. Blocking.
pub(crate) fn write_snapshot(
    upper: &Path,
    exclude: &[PathBuf],
    out: PathBuf,
) -> Result<Snapshot, ImageError> {
    let started = Instant::now();
    let exclude = Exclusions::new(upper, exclude)?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&out)
        .map_err(io_err("create", &out))?;
    // From here on the Snapshot owns the file, so any error removes it.
    let mut snapshot = Snapshot {
        path: out,
        entries: 0,
        content_bytes: 0,
        tar_bytes: 0,
        read_time: Duration::ZERO,
    };
    let mut writer = TarWriter {
        upper,
        out: file,
        out_path: snapshot.path.clone(),
        offset: 0,
        entries: 0,
        content_bytes: 0,
        links: HashMap::new(),
    };
    walk(upper, &exclude, true, &mut |item| writer.entry(&item))?;
    writer.finish()?;
    snapshot.entries = writer.entries;
    snapshot.content_bytes = writer.content_bytes;
    snapshot.tar_bytes = writer.offset;
    snapshot.read_time = started.elapsed();
    Ok(snapshot)
}

struct TarWriter<'a> {
    upper: &'a Path,
    /// Written to unbuffered: file contents reach it by `copy_file_range`.
    out: File,
    out_path: PathBuf,
    offset: u64,
    entries: u64,
    content_bytes: u64,
    /// Files with more than one link already written, by (device, inode):
    /// later names become tar hard links to the first.
    links: HashMap<(u64, u64), PathBuf>,
}

impl TarWriter<'_> {
    fn entry(&mut self, item: &Item) -> Result<(), ImageError> {
        let meta = &item.meta;
        match item.kind {
            Kind::Whiteout => {
                let name = whiteout_name(&item.rel);
                let header = base_header(EntryType::Regular, 0, meta.mtime(), 0, 0);
                self.header(header, bytes_of(&name), None, &[])
            }
            Kind::Dir { opaque } => {
                let mut name = bytes_of(&item.rel).to_vec();
                name.push(b'/');
                let header = self.owned(EntryType::Directory, item);
                self.header(header, &name, None, &item.xattrs)?;
                if opaque {
                    let marker = item.rel.join(OPAQUE_MARKER);
                    let header = base_header(EntryType::Regular, 0, meta.mtime(), 0, 0);
                    self.header(header, bytes_of(&marker), None, &[])?;
                }
                Ok(())
            }
            Kind::File { size } => {
                if meta.nlink() > 1 {
                    let key = (meta.dev(), meta.ino());
                    if let Some(first) = self.links.get(&key).cloned() {
                        let header = self.owned(EntryType::Link, item);
                        return self.header(
                            header,
                            bytes_of(&item.rel),
                            Some(bytes_of(&first)),
                            &item.xattrs,
                        );
                    }
                    self.links.insert(key, item.rel.clone());
                }
                let mut header = self.owned(EntryType::Regular, item);
                header.set_size(size);
                self.header(header, bytes_of(&item.rel), None, &item.xattrs)?;
                self.content(&item.rel, size)
            }
            Kind::Symlink => {
                let full = self.upper.join(&item.rel);
                let target = fs::read_link(&full).map_err(io_err("read symlink", &full))?;
                let header = self.owned(EntryType::Symlink, item);
                self.header(
                    header,
                    bytes_of(&item.rel),
                    Some(bytes_of(&target)),
                    &item.xattrs,
                )
            }
            Kind::Fifo => {
                let header = self.owned(EntryType::Fifo, item);
                self.header(header, bytes_of(&item.rel), None, &item.xattrs)
            }
            Kind::Device { block } => {
                let kind = if block {
                    EntryType::Block
                } else {
                    EntryType::Char
                };
                let mut header = self.owned(kind, item);
                let rdev = meta.rdev();
                let major = u32::try_from(nix::sys::stat::major(rdev)).unwrap_or(u32::MAX);
                let minor = u32::try_from(nix::sys::stat::minor(rdev)).unwrap_or(u32::MAX);
                header
                    .set_device_major(major)
                    .and_then(|()| header.set_device_minor(minor))
                    .map_err(|e| ImageError::Internal(format!("device header: {e}")))?;
                self.header(header, bytes_of(&item.rel), None, &item.xattrs)
            }
        }
    }

    /// A header with the entry's mode, owner and modification time.
    fn owned(&self, kind: EntryType, item: &Item) -> Header {
        let meta = &item.meta;
        base_header(
            kind,
            meta.mode() & 0o7777,
            meta.mtime(),
            meta.uid(),
            meta.gid(),
        )
    }

    /// Writes `header` named `name` (linking to `link`), preceded by a PAX
    /// header when a name is too long for ustar or there are xattrs.
    fn header(
        &mut self,
        mut header: Header,
        name: &[u8],
        link: Option<&[u8]>,
        xattrs: &[(std::ffi::OsString, Vec<u8>)],
    ) -> Result<(), ImageError> {
        let mut records = Vec::new();
        if name.len() > NAME_FIELD {
            pax_record(&mut records, b"path", name);
        }
        if let Some(link) = link
            && link.len() > NAME_FIELD
        {
            pax_record(&mut records, b"linkpath", link);
        }
        for (key, value) in xattrs {
            let mut pax_key = b"SCHILY.xattr.".to_vec();
            pax_key.extend_from_slice(key.as_bytes());
            pax_record(&mut records, &pax_key, value);
        }
        let mut bytes = Vec::with_capacity(3 * BLOCK as usize + records.len());
        if !records.is_empty() {
            let mut pax = base_header(EntryType::XHeader, 0o644, 0, 0, 0);
            pax.set_size(records.len() as u64);
            set_field(&mut pax.as_old_mut().name, b"PaxHeader");
            pax.set_cksum();
            bytes.extend_from_slice(pax.as_bytes());
            bytes.extend_from_slice(&records);
            pad(&mut bytes);
        }
        set_field(&mut header.as_old_mut().name, name);
        if let Some(link) = link {
            set_field(&mut header.as_old_mut().linkname, link);
        }
        header.set_cksum();
        bytes.extend_from_slice(header.as_bytes());
        self.write(&bytes)?;
        self.entries += 1;
        Ok(())
    }

    /// Copies `size` bytes of the file at `rel` into the tar, kernel-side,
    /// and pads them to a block.
    fn content(&mut self, rel: &Path, size: u64) -> Result<(), ImageError> {
        let full = self.upper.join(rel);
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NOATIME)
            .open(&full)
            .or_else(|e| {
                // O_NOATIME needs ownership of the file (or CAP_FOWNER).
                if e.raw_os_error() == Some(nix::libc::EPERM) {
                    OpenOptions::new()
                        .read(true)
                        .custom_flags(nix::libc::O_NOFOLLOW)
                        .open(&full)
                } else {
                    Err(e)
                }
            })
            .map_err(io_err("open", &full))?;
        // `Take<&File>` into `File`: std copies with copy_file_range (or
        // sendfile), never through a buffer of ours.
        let copied = io::copy(&mut (&file).take(size), &mut self.out)
            .map_err(|e| ImageError::io("copy into the snapshot", &full, e))?;
        if copied != size {
            return Err(unsupported(
                self.upper,
                rel,
                &format!(
                    "the file shrank from {size} to {copied} bytes while it was read (commit with the container paused)"
                ),
            ));
        }
        self.offset += size;
        self.content_bytes += size;
        let padding = (BLOCK - size % BLOCK) % BLOCK;
        self.write(&vec![0; padding as usize])
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), ImageError> {
        self.out
            .write_all(bytes)
            .map_err(io_err("write", &self.out_path))?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// The end-of-archive marker: two zero blocks.
    fn finish(&mut self) -> Result<(), ImageError> {
        self.write(&[0; 2 * BLOCK as usize])
    }
}

/// `dir/.wh.name` for a deleted `dir/name`.
fn whiteout_name(rel: &Path) -> PathBuf {
    let name = rel.file_name().unwrap_or_default();
    let mut whiteout = b".wh.".to_vec();
    whiteout.extend_from_slice(name.as_bytes());
    rel.with_file_name(std::ffi::OsStr::from_bytes(&whiteout))
}

fn base_header(kind: EntryType, mode: u32, mtime: i64, uid: u32, gid: u32) -> Header {
    let mut header = Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    // Times before 1970 are stored as 1970: ustar has no negative times.
    header.set_mtime(u64::try_from(mtime).unwrap_or(0));
    header.set_uid(u64::from(uid));
    header.set_gid(u64::from(gid));
    header.set_size(0);
    header
}

/// Copies `value` into a header field, truncated (the PAX record holds the
/// whole of a long one).
fn set_field(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
    field[n..].fill(0);
}

/// Appends the PAX record `<len> <key>=<value>\n`, where `<len>` counts
/// the whole record, itself included.
fn pax_record(records: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while rest + len.to_string().len() != len {
        len = rest + len.to_string().len();
    }
    records.extend_from_slice(len.to_string().as_bytes());
    records.push(b' ');
    records.extend_from_slice(key);
    records.push(b'=');
    records.extend_from_slice(value);
    records.push(b'\n');
}

fn pad(bytes: &mut Vec<u8>) {
    let padding = (BLOCK as usize - bytes.len() % BLOCK as usize) % BLOCK as usize;
    bytes.resize(bytes.len() + padding, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_count_their_own_length() {
        for value_len in [0, 1, 5, 6, 7, 95, 96, 97, 990, 995, 1000] {
            let mut records = Vec::new();
            let value = vec![b'v'; value_len];
            pax_record(&mut records, b"path", &value);
            let text = String::from_utf8(records.clone()).unwrap();
            let (len, _) = text.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), records.len(), "{value_len}");
        }
    }

    #[test]
    fn whiteouts_keep_their_directory() {
        assert_eq!(whiteout_name(Path::new("a/b/c")), Path::new("a/b/.wh.c"));
        assert_eq!(whiteout_name(Path::new("x")), Path::new(".wh.x"));
    }
}

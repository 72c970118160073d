//! The container's changes as a layer, planned while it is frozen: the
//! frozen walk gives every entry's metadata and builds its tar headers;
//! file contents come from the pre-copy's staged copies when they are
//! still current (precopy.rs says when) and are otherwise copied now, by
//! the kernel (`copy_file_range` from file to file). The tar itself is
//! only produced afterwards, streamed into the compressor
//! ([`Snapshot::tar_reader`]), so nothing is written twice.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tar::{EntryType, Header};

use super::precopy::PreCopy;
use super::staging::{StagingDir, open_source};
use super::walk::{Exclusions, Item, Kind, bytes_of, unsupported, walk};
use crate::ImageError;
use crate::error::io_err;

const BLOCK: u64 = 512;
/// Longest name (and link target) a ustar header holds; longer ones go
/// into PAX records.
const NAME_FIELD: usize = 100;
/// The marker that makes a directory opaque in an OCI layer.
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// A container's changes as a layer: the tar's headers in memory and its
/// file contents staged in the image cache's `tmp/`, removed when this is
/// dropped. [`Snapshot::tar_reader`] reads the tar.
#[derive(Debug)]
pub struct Snapshot {
    pieces: Vec<Piece>,
    staging: StagingDir,
    /// Tar entries (whiteouts and opaque markers included).
    pub entries: u64,
    /// Bytes of regular file content in the layer.
    pub content_bytes: u64,
    /// Bytes of content copied during this (the frozen) pass; the rest was
    /// staged by the pre-copy and found unchanged.
    pub copied_bytes: u64,
    /// Size of the tar.
    pub tar_bytes: u64,
    /// How long this pass took: the freeze it needs.
    pub read_time: Duration,
}

/// A stretch of the tar: bytes built here (headers, padding, the end
/// marker) or a staged file's content.
#[derive(Debug)]
enum Piece {
    Bytes(Vec<u8>),
    Staged { path: PathBuf, size: u64 },
}

impl Snapshot {
    /// The uncompressed layer tar, read from the headers and the staged
    /// contents. Blocking.
    pub fn tar_reader(&self) -> impl Read + '_ {
        TarReader {
            pieces: self.pieces.iter(),
            current: None,
        }
    }

    /// The directory holding the staged contents (removed on drop).
    pub fn staging_dir(&self) -> &Path {
        self.staging.path()
    }
}

/// Reads a snapshot's pieces one after another.
struct TarReader<'a> {
    pieces: std::slice::Iter<'a, Piece>,
    current: Option<Box<dyn Read + 'a>>,
}

impl Read for TarReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(current) = &mut self.current {
                let n = current.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                self.current = None;
            }
            match self.pieces.next() {
                None => return Ok(0),
                Some(Piece::Bytes(bytes)) => self.current = Some(Box::new(&bytes[..])),
                Some(Piece::Staged { path, size }) => {
                    let file = File::open(path)?;
                    let staged = file.metadata()?.len();
                    if staged != *size {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!(
                                "{}: staged {staged} bytes, the layer needs {size}",
                                path.display()
                            ),
                        ));
                    }
                    self.current = Some(Box::new(file.take(*size)));
                }
            }
        }
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

/// What the frozen pass starts from: a pre-copy, or nothing (every file
/// copied now, in one pass).
pub(crate) enum Start {
    Fresh {
        upper: PathBuf,
        exclude: Vec<PathBuf>,
        staging: StagingDir,
    },
    PreCopied {
        precopy: PreCopy,
        /// Inodes mapped shared-writable in the container: always copied.
        mapped: HashSet<u64>,
    },
}

/// Walks the upper directory (frozen, or in one unfrozen pass) and plans
/// the layer: headers built, contents staged. On error the staging
/// directory is removed. Blocking.
pub(crate) fn write_snapshot(start: Start) -> Result<Snapshot, ImageError> {
    let started = Instant::now();
    let (upper, exclude, staging, staged, mapped) = match start {
        Start::Fresh {
            upper,
            exclude,
            staging,
        } => (upper, exclude, staging, HashMap::new(), HashSet::new()),
        Start::PreCopied { precopy, mapped } => (
            precopy.upper,
            precopy.exclude,
            precopy.staging,
            precopy.files,
            mapped,
        ),
    };
    let exclusions = Exclusions::new(&upper, &exclude)?;
    let mut writer = TarWriter {
        upper: &upper,
        staging,
        staged,
        mapped,
        pieces: Vec::new(),
        offset: 0,
        entries: 0,
        content_bytes: 0,
        copied_bytes: 0,
        links: HashMap::new(),
    };
    walk(&upper, &exclusions, true, &mut |item| writer.entry(&item))?;
    writer.finish();
    // Copies the frozen walk found stale are no longer needed.
    for stale in writer.staged.values() {
        remove_temp(&stale.path);
    }
    Ok(Snapshot {
        pieces: writer.pieces,
        staging: writer.staging,
        entries: writer.entries,
        content_bytes: writer.content_bytes,
        copied_bytes: writer.copied_bytes,
        tar_bytes: writer.offset,
        read_time: started.elapsed(),
    })
}

struct TarWriter<'a> {
    upper: &'a Path,
    staging: StagingDir,
    /// The pre-copy's copies not yet used, by relative path.
    staged: HashMap<PathBuf, super::precopy::Staged>,
    /// Inode numbers mapped shared-writable in the container.
    mapped: HashSet<u64>,
    pieces: Vec<Piece>,
    offset: u64,
    entries: u64,
    content_bytes: u64,
    copied_bytes: u64,
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
                self.content(&item.rel, meta, size)
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
        self.write(&bytes);
        self.entries += 1;
        Ok(())
    }

    /// The content of the file at `rel` (frozen `lstat` `meta`, `size`
    /// bytes): the pre-copy's copy if it is still current, otherwise
    /// copied now into the staging directory, kernel-side; then padding to
    /// a block.
    fn content(&mut self, rel: &Path, meta: &fs::Metadata, size: u64) -> Result<(), ImageError> {
        let mapped = self.mapped.contains(&meta.ino());
        let path = match self.staged.remove(rel) {
            Some(staged) if !mapped && staged.still_current(meta) => staged.path,
            stale => {
                if let Some(stale) = stale {
                    remove_temp(&stale.path);
                }
                self.copy_now(rel, size)?
            }
        };
        self.pieces.push(Piece::Staged { path, size });
        self.offset += size;
        self.content_bytes += size;
        let padding = (BLOCK - size % BLOCK) % BLOCK;
        self.write(&vec![0; padding as usize]);
        Ok(())
    }

    /// Copies `size` bytes of the file at `rel` into a new staging file.
    fn copy_now(&mut self, rel: &Path, size: u64) -> Result<PathBuf, ImageError> {
        let full = self.upper.join(rel);
        let file = open_source(&full).map_err(io_err("open", &full))?;
        let (mut out, path) = self.staging.new_file()?;
        // `Take<&File>` into `File`: std copies with copy_file_range (or
        // sendfile), never through a buffer of ours.
        let copied = io::copy(&mut (&file).take(size), &mut out)
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
        self.copied_bytes += size;
        Ok(path)
    }

    /// Appends bytes built here to the tar.
    fn write(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.offset += bytes.len() as u64;
        if let Some(Piece::Bytes(last)) = self.pieces.last_mut() {
            last.extend_from_slice(bytes);
        } else {
            self.pieces.push(Piece::Bytes(bytes.to_vec()));
        }
    }

    /// The end-of-archive marker: two zero blocks.
    fn finish(&mut self) {
        self.write(&[0; 2 * BLOCK as usize]);
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

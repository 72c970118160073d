//! Shared test helpers: layers built in memory (including malformed and
//! malicious ones the `tar` crate's safe API refuses to write), compression,
//! digests, and the root check.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};
use wharf_image::{Compression, ImageError, ImageStore};
use wharf_oci::{Descriptor, Digest, DigestAlgorithm};

pub const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

pub fn sha256(bytes: &[u8]) -> Digest {
    Digest::of(DigestAlgorithm::Sha256, bytes)
}

/// A layer archive written entry by entry. Names and link targets are
/// copied into the header verbatim, so that tests can write what no honest
/// builder would.
pub struct Layer {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for Layer {
    fn default() -> Self {
        Layer::new()
    }
}

impl Layer {
    pub fn new() -> Layer {
        Layer {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: EntryType, name: &str, mode: u32, size: u64) -> Header {
        let mut header = Header::new_gnu();
        let slot = &mut header.as_old_mut().name;
        assert!(name.len() <= slot.len(), "test name too long: {name}");
        slot[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_600_000_000);
        header
    }

    fn append(&mut self, mut header: Header, data: &[u8]) -> &mut Self {
        header.set_cksum();
        self.builder
            .append(&header, data)
            .expect("append to in-memory tar");
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.file_with(name, data, 0o644, 0, 0)
    }

    pub fn file_with(
        &mut self,
        name: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> &mut Self {
        let mut header = Self::header(EntryType::Regular, name, mode, data.len() as u64);
        header.set_uid(uid);
        header.set_gid(gid);
        self.append(header, data)
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        let header = Self::header(EntryType::Directory, name, mode, 0);
        self.append(header, &[])
    }

    pub fn dir_owned(&mut self, name: &str, mode: u32, uid: u64, gid: u64) -> &mut Self {
        let mut header = Self::header(EntryType::Directory, name, mode, 0);
        header.set_uid(uid);
        header.set_gid(gid);
        self.append(header, &[])
    }

    fn link(&mut self, kind: EntryType, name: &str, target: &str) -> &mut Self {
        let mut header = Self::header(kind, name, 0o777, 0);
        let slot = &mut header.as_old_mut().linkname;
        assert!(
            target.len() <= slot.len(),
            "test link target too long: {target}"
        );
        slot[..target.len()].copy_from_slice(target.as_bytes());
        self.append(header, &[])
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(EntryType::Symlink, name, target)
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(EntryType::Link, name, target)
    }

    pub fn fifo(&mut self, name: &str) -> &mut Self {
        let header = Self::header(EntryType::Fifo, name, 0o600, 0);
        self.append(header, &[])
    }

    pub fn char_device(&mut self, name: &str, major: u32, minor: u32) -> &mut Self {
        let mut header = Self::header(EntryType::Char, name, 0o666, 0);
        header.set_device_major(major).expect("gnu header");
        header.set_device_minor(minor).expect("gnu header");
        self.append(header, &[])
    }

    /// A PAX extended header for the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        self.pax_header(EntryType::XHeader, records)
    }

    /// A PAX global header, as `git archive` writes.
    pub fn pax_global(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        self.pax_header(EntryType::XGlobalHeader, records)
    }

    fn pax_header(&mut self, kind: EntryType, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (key, value) in records {
            // "<len> <key>=<value>\n", where <len> counts itself.
            let body = key.len() + value.len() + 3;
            let mut len = body + 1;
            while (body + len.to_string().len()) != len {
                len = body + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        let header = Self::header(kind, "PaxHeader", 0o644, data.len() as u64);
        self.append(header, &data)
    }

    /// The archive, with its end-of-archive blocks.
    pub fn tar(&mut self) -> Vec<u8> {
        let builder = std::mem::replace(&mut self.builder, tar::Builder::new(Vec::new()));
        builder.into_inner().expect("finish in-memory tar")
    }
}

pub fn compress(tar: &[u8], compression: Compression) -> Vec<u8> {
    match compression {
        Compression::None => tar.to_vec(),
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(tar).unwrap();
            encoder.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(tar, 1).unwrap(),
    }
}

pub fn media_type(compression: Compression) -> &'static str {
    match compression {
        Compression::None => TAR,
        Compression::Gzip => GZIP,
        Compression::Zstd => ZSTD,
    }
}

/// A layer blob with what a manifest and config would say about it.
pub struct Blob {
    pub bytes: Vec<u8>,
    pub descriptor: Descriptor,
    pub diff_id: Digest,
}

pub fn blob(tar: &[u8], compression: Compression) -> Blob {
    let bytes = compress(tar, compression);
    let descriptor = descriptor(media_type(compression), &bytes);
    Blob {
        diff_id: sha256(tar),
        descriptor,
        bytes,
    }
}

pub fn descriptor(media_type: &str, bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest: sha256(bytes),
        size: bytes.len() as u64,
        urls: Vec::new(),
        annotations: None,
        artifact_type: None,
        platform: None,
    }
}

/// Imports `tar` (compressed as asked) into `store` as a layer.
pub async fn import(
    store: &ImageStore,
    tar: &[u8],
    compression: Compression,
) -> Result<PathBuf, ImageError> {
    let blob = blob(tar, compression);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &blob.bytes).unwrap();
    store
        .import_layer(file.path(), &blob.descriptor, &blob.diff_id)
        .await
}

/// Names in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Asserts the cache holds no layer and nothing in progress.
pub fn assert_cache_clean(store: &wharf_image::ImageStore) {
    assert!(
        names(&store.root().join("layers/sha256")).is_empty(),
        "a layer was left"
    );
    assert!(
        names(&store.root().join("tmp")).is_empty(),
        "tmp/ was not cleaned"
    );
}

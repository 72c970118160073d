//! Where the cache keeps things, and the JSON records it keeps:
//!
//! ```text
//! <root>/layers/<alg>/<hex>/      an unpacked layer, named by its compressed digest
//! <root>/images/<alg>/<hex>.json  an image record, named by its manifest digest
//! <root>/refs/<sha256 of ref>.json  a reference and the manifest digest it resolved to
//! <root>/tmp/                     downloads, unpacks in progress, trash (emptied on open)
//! ```
//!
//! A layer directory appears only by rename once complete, and records are
//! replaced atomically, so whatever is visible is whole.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use wharf_oci::{Digest, DigestAlgorithm};

use crate::error::io_err;
use crate::fsutil::{remove_tree, write_atomic};
use crate::{ImageConfig, ImageError, ImageRef, PulledImage};
use wharf_fs::private_dir;

/// A layer of a cached image, as its manifest and config describe it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LayerRecord {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub diff_id: Digest,
}

/// A cached image, by the digest its reference resolved to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ImageRecord {
    /// What the reference resolved to (an index's digest for multi-arch images).
    pub manifest_digest: Digest,
    /// The platform-specific image manifest actually pulled.
    pub image_manifest_digest: Digest,
    pub config_digest: Digest,
    pub config: ImageConfig,
    pub layers: Vec<LayerRecord>,
    pub size_bytes: u64,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct RefRecord {
    pub reference: ImageRef,
    pub manifest_digest: Digest,
}

/// The cache's paths.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub root: PathBuf,
    layers: PathBuf,
    images: PathBuf,
    refs: PathBuf,
    pub tmp: PathBuf,
}

const ALGORITHMS: [DigestAlgorithm; 2] = [DigestAlgorithm::Sha256, DigestAlgorithm::Sha512];

impl Layout {
    pub(crate) fn new(root: PathBuf) -> Layout {
        Layout {
            layers: root.join("layers"),
            images: root.join("images"),
            refs: root.join("refs"),
            tmp: root.join("tmp"),
            root,
        }
    }

    /// Creates the directories and empties `tmp/` of what a crash left.
    pub(crate) fn prepare(&self) -> Result<(), ImageError> {
        // Layers may hold setuid binaries and device nodes: nobody but root
        // may reach them (and an existing cache is narrowed to that).
        private_dir(&self.root).map_err(io_err("create private directory", &self.root))?;
        remove_tree(&self.tmp).map_err(io_err("empty", &self.tmp))?;
        for algorithm in ALGORITHMS {
            for dir in [
                self.layers.join(algorithm.as_str()),
                self.images.join(algorithm.as_str()),
            ] {
                fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
            }
        }
        for dir in [&self.refs, &self.tmp] {
            fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        }
        Ok(())
    }

    pub(crate) fn layer_dir(&self, digest: &Digest) -> PathBuf {
        self.layers
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    fn image_path(&self, digest: &Digest) -> PathBuf {
        self.images
            .join(digest.algorithm().as_str())
            .join(format!("{}.json", digest.hex()))
    }

    fn ref_path(&self, reference: &ImageRef) -> PathBuf {
        // Hashed: references hold '/' and ':' and may exceed a file name's length.
        let key = Digest::of(DigestAlgorithm::Sha256, reference.to_string().as_bytes());
        self.refs.join(format!("{}.json", key.hex()))
    }

    /// A fresh path in `tmp/`.
    pub(crate) fn tmp_path(&self, prefix: &str) -> PathBuf {
        self.tmp.join(format!("{prefix}-{}", uuid::Uuid::new_v4()))
    }

    /// Digests of the unpacked layers on disk.
    pub(crate) fn present_layers(&self) -> Result<HashSet<Digest>, ImageError> {
        let mut present = HashSet::new();
        for algorithm in ALGORITHMS {
            let dir = self.layers.join(algorithm.as_str());
            for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
                let entry = entry.map_err(io_err("list", &dir))?;
                let name = entry.file_name();
                let digest = name
                    .to_str()
                    .and_then(|hex| format!("{}:{hex}", algorithm.as_str()).parse().ok());
                if let Some(digest) = digest {
                    present.insert(digest);
                }
            }
        }
        Ok(present)
    }

    pub(crate) fn read_image(&self, digest: &Digest) -> Result<Option<ImageRecord>, ImageError> {
        read_json(&self.image_path(digest))
    }

    pub(crate) fn read_ref(&self, reference: &ImageRef) -> Result<Option<RefRecord>, ImageError> {
        read_json(&self.ref_path(reference))
    }

    pub(crate) fn write_image(&self, record: &ImageRecord) -> Result<(), ImageError> {
        write_json(&self.tmp, &self.image_path(&record.manifest_digest), record)
    }

    pub(crate) fn write_ref(
        &self,
        reference: &ImageRef,
        manifest_digest: &Digest,
    ) -> Result<(), ImageError> {
        let record = RefRecord {
            reference: reference.clone(),
            manifest_digest: manifest_digest.clone(),
        };
        write_json(&self.tmp, &self.ref_path(reference), &record)
    }

    /// Every image record; unreadable ones are skipped with a warning.
    pub(crate) fn all_images(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let mut records = Vec::new();
        for algorithm in ALGORITHMS {
            records.extend(read_all(&self.images.join(algorithm.as_str()))?);
        }
        Ok(records)
    }

    /// Every reference record; unreadable ones are skipped with a warning.
    pub(crate) fn all_refs(&self) -> Result<Vec<RefRecord>, ImageError> {
        read_all(&self.refs)
    }

    /// Records that the image was just used (its record's mtime), for
    /// garbage collection by age. Best effort: a failure only makes the
    /// image look older.
    pub(crate) fn touch_image(&self, digest: &Digest) {
        let path = self.image_path(digest);
        let touched = fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        if let Err(e) = touched {
            tracing::debug!(path = %path.display(), error = %e, "could not mark an image used");
        }
    }

    /// When the image was last pulled or used.
    pub(crate) fn image_used_at(&self, digest: &Digest) -> Option<std::time::SystemTime> {
        fs::metadata(self.image_path(digest))
            .and_then(|m| m.modified())
            .ok()
    }

    pub(crate) fn remove_image(&self, digest: &Digest) -> Result<(), ImageError> {
        remove_file(&self.image_path(digest))
    }

    pub(crate) fn remove_ref(&self, reference: &ImageRef) -> Result<(), ImageError> {
        remove_file(&self.ref_path(reference))
    }

    /// Whether every layer of `record` is unpacked.
    pub(crate) fn is_complete(&self, record: &ImageRecord) -> bool {
        record
            .layers
            .iter()
            .all(|l| self.layer_dir(&l.digest).is_dir())
    }

    /// The image as the runtime uses it, under `reference`.
    pub(crate) fn pulled(&self, record: &ImageRecord, reference: &ImageRef) -> PulledImage {
        PulledImage {
            reference: reference.clone(),
            manifest_digest: record.manifest_digest.clone(),
            config_digest: record.config_digest.clone(),
            config: record.config.clone(),
            layers: record
                .layers
                .iter()
                .map(|l| self.layer_dir(&l.digest))
                .collect(),
            size_bytes: record.size_bytes,
            bytes: crate::PullBytes {
                cache: record.size_bytes,
                ..crate::PullBytes::default()
            },
        }
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, ImageError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ImageError::io("read", path, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ImageError::CorruptRecord {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

fn read_all<T: DeserializeOwned>(dir: &Path) -> Result<Vec<T>, ImageError> {
    let mut records = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let path = entry.map_err(io_err("list", dir))?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        match read_json(&path) {
            Ok(Some(record)) => records.push(record),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "image cache record skipped"),
        }
    }
    Ok(records)
}

fn write_json<T: Serialize>(tmp: &Path, path: &Path, value: &T) -> Result<(), ImageError> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| ImageError::Internal(format!("encode {}: {e}", path.display())))?;
    write_atomic(tmp, path, &bytes)
}

fn remove_file(path: &Path) -> Result<(), ImageError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ImageError::io("remove", path, e)),
        _ => Ok(()),
    }
}

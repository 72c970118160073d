//! Content-addressed blob storage on a local directory.
//!
//! Layout under the root:
//!
//! ```text
//! blobs/<algorithm>/<first two hex>/<hex>   published, immutable content
//! uploads/<id>/data, uploads/<id>/owner     upload sessions in progress
//! tmp/                                      small atomic writes in flight
//! ```
//!
//! Invariant: a file appears under `blobs/` only by `rename` of a file that was
//! fully written, verified against its digest and fsynced, and the parent
//! directory is fsynced after the rename. A crash at any point therefore leaves
//! either no blob or the whole blob; partial data only ever lives under
//! `uploads/` or `tmp/`, which nothing reads as content.

mod error;
mod fsutil;
mod read;
mod upload;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use wharf_oci::{Digest, DigestAlgorithm};

pub use error::BlobError;
pub use read::BlobBody;
pub use upload::{AppendOptions, FinishedUpload, Upload};

/// What [`BlobStore::sweep_uploads`] removed (or, dry, would remove) and
/// what it left.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UploadSweep {
    /// Sessions deleted.
    pub removed: u64,
    /// Bytes they held.
    pub removed_bytes: u64,
    /// Sessions left: in progress, or not idle long enough.
    pub left: u64,
    /// Bytes they hold.
    pub left_bytes: u64,
}

/// Size and age of a stored blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobStat {
    /// Length in bytes.
    pub size: u64,
    /// Last time the blob was written or re-published.
    pub modified: SystemTime,
}

/// Content-addressed blobs and upload sessions under one directory.
#[derive(Clone)]
pub struct BlobStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    // Sessions touched since start; others are loaded lazily from disk.
    uploads: Mutex<HashMap<String, Arc<Upload>>>,
}

impl BlobStore {
    /// Opens (creating if needed) a blob store rooted at `root` and clears
    /// leftovers of interrupted small writes.
    pub fn open(root: impl Into<PathBuf>) -> Result<BlobStore, BlobError> {
        let root = root.into();
        for dir in ["blobs", "uploads", "tmp"] {
            fsutil::create_dir_all(&root.join(dir))?;
        }
        // Nothing under tmp/ was ever published, so it is safe to drop wholesale.
        let tmp = root.join("tmp");
        for entry in std::fs::read_dir(&tmp).map_err(|e| BlobError::io(&tmp, e))? {
            let path = entry.map_err(|e| BlobError::io(&tmp, e))?.path();
            let _ = std::fs::remove_file(&path);
        }
        Ok(BlobStore {
            inner: Arc::new(Inner {
                root,
                uploads: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.inner.blob_path(digest)
    }

    /// Size and modification time of a blob, if present.
    pub async fn stat(&self, digest: &Digest) -> Result<Option<BlobStat>, BlobError> {
        let path = self.blob_path(digest);
        match tokio::fs::metadata(&path).await {
            Ok(meta) => Ok(Some(BlobStat {
                size: meta.len(),
                modified: meta.modified().map_err(|e| BlobError::io(&path, e))?,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BlobError::io(&path, e)),
        }
    }

    /// Streams `range` of a blob (the whole blob when `None`).
    pub async fn read(
        &self,
        digest: &Digest,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<BlobBody, BlobError> {
        read::open_body(self.blob_path(digest), digest, range).await
    }

    /// Opens a blob's file for reading. Blocking: call it, and read the
    /// file, off the async workers (`spawn_blocking`). Published blobs are
    /// immutable, so the file reads as the blob whatever happens meanwhile.
    pub fn open_blocking(&self, digest: &Digest) -> Result<std::fs::File, BlobError> {
        let path = self.blob_path(digest);
        std::fs::File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => BlobError::NotFound(digest.clone()),
            _ => BlobError::io(&path, e),
        })
    }

    /// Reads a whole blob into memory, refusing blobs over `max` bytes.
    pub async fn read_to_vec(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, BlobError> {
        let path = self.blob_path(digest);
        let digest = digest.clone();
        tokio::task::spawn_blocking(move || read::read_small(&path, &digest, max))
            .await
            .map_err(BlobError::join)?
    }

    /// Stores `bytes` as the blob `digest`, verifying the digest first.
    /// Re-storing existing content only refreshes its modification time.
    pub async fn put_bytes(&self, digest: &Digest, bytes: Vec<u8>) -> Result<(), BlobError> {
        let actual = Digest::of(digest.algorithm(), &bytes);
        if actual != *digest {
            return Err(BlobError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let target = self.blob_path(digest);
        let tmp_dir = self.inner.root.join("tmp");
        tokio::task::spawn_blocking(move || fsutil::publish_bytes(&tmp_dir, &target, &bytes))
            .await
            .map_err(BlobError::join)?
    }

    /// Removes a blob; `false` when it was not there.
    pub async fn delete(&self, digest: &Digest) -> Result<bool, BlobError> {
        let path = self.blob_path(digest);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(BlobError::io(&path, e)),
        }
    }

    /// Every stored blob with its stat, for garbage collection.
    pub async fn list(&self) -> Result<Vec<(Digest, BlobStat)>, BlobError> {
        let root = self.inner.root.join("blobs");
        tokio::task::spawn_blocking(move || fsutil::walk_blobs(&root))
            .await
            .map_err(BlobError::join)?
    }

    /// Starts an upload session owned by `owner` (the repository it belongs to).
    pub async fn start_upload(&self, owner: &str) -> Result<Arc<Upload>, BlobError> {
        let upload = Upload::create(self.inner.clone(), owner).await?;
        self.inner
            .uploads
            .lock()
            .expect("uploads lock")
            .insert(upload.id().to_string(), upload.clone());
        Ok(upload)
    }

    /// Finds an upload session, also one started before a restart.
    pub async fn upload(&self, id: &str) -> Result<Arc<Upload>, BlobError> {
        if let Some(upload) = self.inner.uploads.lock().expect("uploads lock").get(id) {
            return Ok(upload.clone());
        }
        let upload = Upload::load(self.inner.clone(), id).await?;
        Ok(self
            .inner
            .uploads
            .lock()
            .expect("uploads lock")
            .entry(id.to_string())
            .or_insert(upload)
            .clone())
    }

    /// Cancels an upload session and deletes its data.
    pub async fn cancel_upload(&self, id: &str) -> Result<(), BlobError> {
        let upload = self.upload(id).await?;
        upload.discard().await
    }

    /// Deletes upload sessions idle for longer than `max_idle` (with
    /// `dry_run`, only counts them) and reports what they held and what the
    /// sessions left behind hold: leftovers of interrupted pushes stay on
    /// disk until then.
    ///
    /// ```no_run
    /// # async fn demo(store: wharf_blob::BlobStore) -> Result<(), wharf_blob::BlobError> {
    /// let sweep = store.sweep_uploads(std::time::Duration::from_secs(3600), false).await?;
    /// println!("{} sessions ({} bytes) left", sweep.left, sweep.left_bytes);
    /// # Ok(()) }
    /// ```
    pub async fn sweep_uploads(
        &self,
        max_idle: Duration,
        dry_run: bool,
    ) -> Result<UploadSweep, BlobError> {
        let dir = self.inner.root.join("uploads");
        let sessions = tokio::task::spawn_blocking(move || fsutil::upload_sessions(&dir))
            .await
            .map_err(BlobError::join)??;
        let mut sweep = UploadSweep::default();
        for session in sessions {
            let removed =
                session.idle > max_idle && (dry_run || self.discard_if_idle(&session.id).await?);
            if removed {
                sweep.removed += 1;
                sweep.removed_bytes += session.bytes;
            } else {
                sweep.left += 1;
                sweep.left_bytes += session.bytes;
            }
        }
        Ok(sweep)
    }

    /// Deletes session `id` unless a request is writing to it right now
    /// (then it is not stale); `true` if deleted.
    async fn discard_if_idle(&self, id: &str) -> Result<bool, BlobError> {
        match self.upload(id).await {
            Ok(upload) => upload.discard_if_idle().await,
            // Gone meanwhile, or not a session this store wrote.
            Err(_) => Ok(false),
        }
    }
}

impl Inner {
    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
    }

    fn upload_dir(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }

    fn forget_upload(&self, id: &str) {
        self.uploads.lock().expect("uploads lock").remove(id);
    }
}

/// The default algorithm for content whose digest is not known in advance.
pub const CANONICAL_ALGORITHM: DigestAlgorithm = DigestAlgorithm::Sha256;

//! Commit: a container's overlayfs upper directory turned into a layer on
//! top of its image, and pushed as a new image (`wharf commit`).
//!
//! ```text
//! measure_upper(upper)            before pausing: entries and bytes, for the
//!                                 quota check; refuses what a layer cannot hold
//! ImageStore::precopy_upper       before freezing: precopy.rs copies every
//!                                 changed file into a staging dir in tmp/
//!                                 (kernel-side), noting each one's lstat
//! ImageStore::snapshot_precopied  while frozen: walk.rs + snapshot.rs walk
//!                                 again (all metadata from here), build the
//!                                 tar headers (whiteouts → .wh.x, opaque →
//!                                 .wh..wh..opq) and copy again only files
//!                                 that may have changed (precopy.rs says
//!                                 which); snapshot_upper is the one-pass
//!                                 form, without a pre-copy
//! ImageStore::compress_snapshot   after thawing: compress.rs streams the tar
//!                                 from headers + staged contents, one pass:
//!                                 diff_id, gzip/zstd, digest
//! ImageStore::push_commit         push.rs: base manifest and config read back and
//!                                 verified, base layers found or mounted, new
//!                                 layer and config uploaded, manifest put;
//!                                 extend.rs builds the new config and manifest
//! ConfigChanges::parse            changes.rs: docker commit's --change
//! ```
//!
//! **Invariant:** nothing half-written is visible: the staged contents and the
//! blob live in the cache's `tmp/` and are removed when dropped or on
//! error; the registry sees the manifest only after every blob it names.

mod changes;
mod compress;
mod extend;
mod precopy;
mod push;
mod snapshot;
mod staging;
mod walk;

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wharf_oci::Digest;

pub use changes::{ConfigChange, ConfigChanges};
pub use compress::NewLayer;
pub use precopy::{CTIME_MARGIN, PreCopy, shared_writable_inodes};
pub use snapshot::Snapshot;

use crate::{Compression, ImageError, ImageRef, ImageStore, RegistryCredentials, blocking};
use snapshot::Start;
use staging::StagingDir;
use walk::{Exclusions, Kind, walk};

/// How often compression and pushing report progress.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// What a container changed, as [`measure_upper`] counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChangeSize {
    /// Entries the layer will hold: files, directories, links, devices,
    /// whiteouts and opaque markers.
    pub entries: u64,
    /// Bytes of regular file content (hard-linked files once).
    pub bytes: u64,
}

/// Measures the changes in the overlayfs upper directory `upper`, leaving
/// out `exclude` (absolute paths inside the container, such as
/// `/etc/resolv.conf`, and everything under them). Run it before pausing
/// the container: it also refuses, with the path, what a layer cannot hold
/// (names starting with `.wh.`, overlayfs redirects and metacopy files).
///
/// Blocking (a walk with `lstat`): call it from a blocking thread.
pub fn measure_upper(upper: &Path, exclude: &[PathBuf]) -> Result<ChangeSize, ImageError> {
    let exclude = Exclusions::new(upper, exclude)?;
    let mut size = ChangeSize::default();
    let mut linked: HashSet<(u64, u64)> = HashSet::new();
    walk(upper, &exclude, false, &mut |item| {
        size.entries += 1;
        match item.kind {
            Kind::Dir { opaque: true } => size.entries += 1,
            Kind::File { size: bytes } => {
                let first =
                    item.meta.nlink() <= 1 || linked.insert((item.meta.dev(), item.meta.ino()));
                if first {
                    size.bytes += bytes;
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(size)
}

/// What to push for a commit.
#[derive(Clone, Copy, Debug)]
pub struct CommitPush<'a> {
    /// The image the container runs, as it was pulled: its registry and
    /// repository are where base layers are found or mounted from.
    pub base: &'a ImageRef,
    /// What `base` resolved to ([`crate::PulledImage::manifest_digest`]);
    /// for an index, the cached record's platform manifest is used.
    pub base_digest: &'a Digest,
    /// The new layer.
    pub layer: &'a NewLayer,
    /// `--change` instructions.
    pub changes: &'a ConfigChanges,
    /// The history entry's and config's author.
    pub author: Option<&'a str>,
    /// The history entry's comment.
    pub message: Option<&'a str>,
    /// The commit's time, RFC 3339 (`2026-01-02T03:04:05Z`): the config's
    /// `created` and the history entry's.
    pub created: &'a str,
    /// Where to push: on `base`'s registry, with a tag (`latest` by default).
    pub target: &'a ImageRef,
}

/// What [`ImageStore::push_commit`] pushed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushedCommit {
    /// The new manifest's digest.
    pub manifest_digest: Digest,
    /// The new config's digest (the image ID).
    pub config_digest: Digest,
    /// Base layers found in the target repository or mounted there.
    pub reused_layers: u32,
    /// Blob bytes actually sent (the new layer and config, unless the
    /// registry had them); the manifest is not counted.
    pub uploaded_bytes: u64,
}

impl ImageStore {
    /// Plans the layer of the changes in the overlayfs upper directory
    /// `upper` (minus `exclude`, as for [`measure_upper`]) in one pass,
    /// every file's content copied now into a staging directory in the
    /// cache's `tmp/`: for a commit without freezing, or a test. Entries in
    /// sorted order, each directory before its contents; deleted names
    /// become `.wh.<name>`, opaque directories get `.wh..wh..opq`, hard
    /// links inside `upper` stay links, xattrs other than overlayfs' go
    /// into PAX `SCHILY.xattr.*` records. The contents are copied by the
    /// kernel, so the time it takes is about that of reading them once.
    pub async fn snapshot_upper(
        &self,
        upper: &Path,
        exclude: &[PathBuf],
    ) -> Result<Snapshot, ImageError> {
        let staging = self.layout().tmp_path("snapshot");
        let (upper, exclude) = (upper.to_path_buf(), exclude.to_vec());
        blocking(move || {
            snapshot::write_snapshot(Start::Fresh {
                upper,
                exclude,
                staging: StagingDir::create(staging)?,
            })
        })
        .await
    }

    /// Copies every changed regular file of `upper` (minus `exclude`) into
    /// a staging directory in the cache's `tmp/` while the container still
    /// runs, noting what each file's `lstat` said and when its copy began;
    /// hand the result to [`ImageStore::snapshot_precopied`] once the
    /// container is frozen. What the container changes meanwhile is found
    /// by that frozen pass.
    pub async fn precopy_upper(
        &self,
        upper: &Path,
        exclude: &[PathBuf],
    ) -> Result<PreCopy, ImageError> {
        let staging = self.layout().tmp_path("snapshot");
        let (upper, exclude) = (upper.to_path_buf(), exclude.to_vec());
        blocking(move || precopy::precopy(&upper, &exclude, StagingDir::create(staging)?)).await
    }

    /// The frozen pass after [`ImageStore::precopy_upper`]: walks the upper
    /// directory again (every entry and all metadata come from this walk),
    /// reuses the pre-copied content of the files that have not changed
    /// since their copy began, and copies the others now: new files, files
    /// whose inode, size, mtime or ctime moved, files whose ctime is too
    /// close to their copy's start to tell (see [`CTIME_MARGIN`]), and files
    /// with an inode in `mapped` (mapped shared-writable in the container,
    /// [`shared_writable_inodes`]). The layer is as [`ImageStore::snapshot_upper`]
    /// would plan it at this moment.
    pub async fn snapshot_precopied(
        &self,
        precopy: PreCopy,
        mapped: HashSet<u64>,
    ) -> Result<Snapshot, ImageError> {
        blocking(move || snapshot::write_snapshot(Start::PreCopied { precopy, mapped })).await
    }

    /// Compresses a snapshot into a layer blob in the cache's `tmp/`, in one
    /// streaming pass that also computes its `diff_id` and digest; the
    /// snapshot's staged contents are removed when this returns. `progress(done, total)` reports
    /// uncompressed bytes at most every 200 ms, and once at the end.
    pub async fn compress_snapshot(
        &self,
        snapshot: Snapshot,
        compression: Compression,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<NewLayer, ImageError> {
        let out = self.layout().tmp_path("layer");
        let total = snapshot.tar_bytes;
        let done = Arc::new(AtomicU64::new(0));
        let counter = done.clone();
        let work = blocking(move || {
            let layer = compress::compress_tar(&snapshot, out, compression, &counter);
            drop(snapshot);
            layer
        });
        reporting(work, &done, total, progress).await
    }

    /// Pushes the image made of `push.base` and `push.layer` to
    /// `push.target` with `credentials` (which need pull on the base's
    /// repository and push on the target's). Base layers are never
    /// uploaded: they must be in the target repository already or mountable
    /// from the base's, on the same registry; a target on another registry
    /// is refused before anything is sent. The manifest is of the base's
    /// kind (Docker schema 2 stays Docker with a gzip layer; zstd, or an OCI
    /// base, gives OCI). `progress(done, total)` reports blob bytes sent.
    #[tracing::instrument(skip_all, fields(base = %push.base, target = %push.target))]
    pub async fn push_commit(
        &self,
        push: CommitPush<'_>,
        credentials: Option<&RegistryCredentials>,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<PushedCommit, ImageError> {
        let sent = Arc::new(AtomicU64::new(0));
        let total = push.layer.size;
        let work = push::push(self, &push, credentials, sent.clone());
        reporting(work, &sent, total, progress).await
    }
}

/// Runs `work`, calling `progress(done, total)` every
/// [`PROGRESS_INTERVAL`] when `done` moved, and once at the end if it
/// succeeded.
async fn reporting<T>(
    work: impl std::future::Future<Output = Result<T, ImageError>>,
    done: &AtomicU64,
    total: u64,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<T, ImageError> {
    tokio::pin!(work);
    let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last = None;
    loop {
        tokio::select! {
            result = &mut work => {
                let value = result?;
                let now = done.load(Ordering::Relaxed);
                progress(now, total.max(now));
                return Ok(value);
            }
            _ = ticker.tick() => {
                let now = done.load(Ordering::Relaxed);
                if last != Some(now) {
                    progress(now, total.max(now));
                    last = Some(now);
                }
            }
        }
    }
}

//! Getting layers onto the node: one download per layer however many pulls
//! want it (single flight), verified, unpacked into `tmp/` and renamed into
//! place; and the table that keeps garbage collection off layers in use.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use tokio::sync::{Semaphore, watch};
use wharf_oci::{Digest, StreamHasher};

use crate::client::Session;
use crate::error::io_err;
use crate::fetch::{BlobFetcher, BlobLocation, BlobRequest, PullBytes, RegistryBlob};
use crate::fsutil::{remove_tree, sync_parent};
use crate::layout::{LayerRecord, Layout};
use crate::{
    Compression, DiskReserve, ImageError, LayerProgress, LayerState, UnpackLimits, UnpackOptions,
    UnpackWatch, blocking, unpack_layer,
};

/// A layer download in progress (or already finished), shared by every
/// pull that needs it; each pull holds its own [`Flight`] handle, and when
/// the last handle of an unfinished download is dropped (every pod that
/// needed it was deleted), the download and unpack stop and what they
/// wrote is removed.
pub(crate) struct Flight {
    pub progress: watch::Receiver<LayerProgress>,
    pub done: Shared<BoxFuture<'static, Result<PullBytes, ImageError>>>,
    /// Bytes unpacked so far; cancels the work.
    pub control: Arc<FlightControl>,
    /// Set for handles counted in the table (not for layers already there).
    ticket: Option<(Arc<LayerFetcher>, Digest)>,
}

/// What the waiters of a download share to watch and stop it.
#[derive(Default)]
pub(crate) struct FlightControl {
    pub unpack: Arc<UnpackWatch>,
    /// Wakes a download waiting on the network when it is cancelled.
    cancelled: tokio::sync::Notify,
}

impl FlightControl {
    fn cancel(&self) {
        self.unpack.cancel();
        self.cancelled.notify_one();
    }
}

impl Flight {
    fn ready(layer: &LayerRecord) -> Flight {
        let (_, progress) = watch::channel(LayerProgress {
            digest: layer.digest.clone(),
            state: LayerState::Ready,
            done_bytes: layer.size,
            total_bytes: layer.size,
            unpacked_bytes: 0,
        });
        Flight {
            progress,
            // Already unpacked: nothing fetched, all from the node.
            done: futures_util::future::ready(Ok(PullBytes {
                cache: layer.size,
                ..PullBytes::default()
            }))
            .boxed()
            .shared(),
            control: Arc::default(),
            ticket: None,
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        let Some((fetcher, digest)) = self.ticket.take() else {
            return;
        };
        let mut table = fetcher.table();
        if let Some(entry) = table.flights.get_mut(&digest) {
            entry.waiters = entry.waiters.saturating_sub(1);
            if entry.waiters == 0 {
                tracing::info!(layer = %digest, "no pull needs the layer any more: cancelling it");
                entry.control.cancel();
            }
        }
    }
}

/// A download in the table, with how many pulls wait for it.
pub(crate) struct FlightEntry {
    progress: watch::Receiver<LayerProgress>,
    done: Shared<BoxFuture<'static, Result<PullBytes, ImageError>>>,
    control: Arc<FlightControl>,
    waiters: usize,
}

/// Which layers are on disk, being fetched, or needed by a pull in progress.
#[derive(Default)]
pub(crate) struct LayerTable {
    pub present: HashSet<Digest>,
    pub flights: HashMap<Digest, FlightEntry>,
    /// Layers a pull in progress will record; GC leaves them alone.
    pub pins: HashMap<Digest, usize>,
}

/// How much a layer may take on disk.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DiskLimits {
    /// Entry and absolute size bounds.
    pub unpack: UnpackLimits,
    /// A layer unpacks to at most this many times its compressed size...
    pub max_expansion: u64,
    /// ...or this many bytes, whichever is more.
    pub expansion_floor: u64,
    /// Bytes kept free on the cache's disk.
    pub reserve: u64,
}

impl DiskLimits {
    /// The bounds for one layer of compressed size `size`.
    pub(crate) fn for_layer(&self, size: u64) -> UnpackLimits {
        let relative = size
            .saturating_mul(self.max_expansion)
            .max(self.expansion_floor);
        UnpackLimits {
            max_bytes: self.unpack.max_bytes.min(relative),
            ..self.unpack
        }
    }
}

/// What layer fetches share: paths, limits, the download slots and the table.
pub(crate) struct LayerFetcher {
    pub layout: Layout,
    pub limits: DiskLimits,
    pub downloads: Semaphore,
    /// Gets layer blobs onto the node.
    pub blobs: Arc<dyn BlobFetcher>,
    pub table: Mutex<LayerTable>,
    /// Layer downloads started, for observability and tests.
    pub downloads_started: std::sync::atomic::AtomicU64,
}

impl LayerFetcher {
    pub(crate) fn table(&self) -> MutexGuard<'_, LayerTable> {
        // The table holds no invariant a panicking holder could break halfway.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The disk reserve to keep under the cache.
    pub(crate) fn reserve(&self) -> DiskReserve {
        DiskReserve {
            path: self.layout.root.clone(),
            bytes: self.limits.reserve,
        }
    }

    /// The flight for `layer`: an existing one, a finished one if the layer
    /// is on disk, or a new download started in its own task (so that a
    /// cancelled pull does not cancel it for the others waiting).
    pub(crate) fn join(self: &Arc<Self>, session: &Arc<Session>, layer: &LayerRecord) -> Flight {
        let mut table = self.table();
        let ticket = Some((self.clone(), layer.digest.clone()));
        if let Some(entry) = table.flights.get_mut(&layer.digest) {
            entry.waiters += 1;
            return Flight {
                progress: entry.progress.clone(),
                done: entry.done.clone(),
                control: entry.control.clone(),
                ticket,
            };
        }
        if table.present.contains(&layer.digest) {
            return Flight::ready(layer);
        }
        let (tx, progress) = watch::channel(LayerProgress {
            digest: layer.digest.clone(),
            state: LayerState::Waiting,
            done_bytes: 0,
            total_bytes: layer.size,
            unpacked_bytes: 0,
        });
        let control = Arc::new(FlightControl {
            unpack: Arc::new(UnpackWatch::with_reserve(Some(self.reserve()))),
            cancelled: tokio::sync::Notify::new(),
        });
        let task =
            tokio::spawn(
                self.clone()
                    .fetch(session.clone(), layer.clone(), tx, control.clone()),
            );
        let done = async move {
            task.await
                .unwrap_or_else(|e| Err(ImageError::Internal(format!("layer task failed: {e}"))))
        }
        .boxed()
        .shared();
        table.flights.insert(
            layer.digest.clone(),
            FlightEntry {
                progress: progress.clone(),
                done: done.clone(),
                control: control.clone(),
                waiters: 1,
            },
        );
        Flight {
            progress,
            done,
            control,
            ticket,
        }
    }

    async fn fetch(
        self: Arc<Self>,
        session: Arc<Session>,
        layer: LayerRecord,
        progress: watch::Sender<LayerProgress>,
        control: Arc<FlightControl>,
    ) -> Result<PullBytes, ImageError> {
        let result = self
            .download_and_install(&session, &layer, &progress, &control)
            .await;
        let mut table = self.table();
        table.flights.remove(&layer.digest);
        if result.is_ok() {
            table.present.insert(layer.digest.clone());
            progress.send_modify(|p| {
                p.state = LayerState::Ready;
                p.done_bytes = p.total_bytes;
            });
        }
        result
    }

    async fn download_and_install(
        &self,
        session: &Arc<Session>,
        layer: &LayerRecord,
        progress: &watch::Sender<LayerProgress>,
        control: &FlightControl,
    ) -> Result<PullBytes, ImageError> {
        let cancelled = || ImageError::Cancelled {
            layer: layer.digest.to_string(),
        };
        let _slot = tokio::select! {
            slot = self.downloads.acquire() => {
                slot.map_err(|_| ImageError::Internal("download slots closed".into()))?
            }
            () = control.cancelled.notified() => return Err(cancelled()),
        };
        if control.unpack.is_cancelled() {
            return Err(cancelled());
        }
        // The compressed blob goes to the same disk first.
        let reserve = self.reserve();
        if let Some(available) = reserve.available()
            && available < reserve.bytes.saturating_add(layer.size)
        {
            return Err(ImageError::DiskReserve {
                path: reserve.path,
                available,
                reserve: reserve.bytes,
            });
        }
        progress.send_modify(|p| p.state = LayerState::Downloading);
        self.downloads_started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let blob = self.layout.tmp_path("blob");
        let started = std::time::Instant::now();
        let result = async {
            let request = BlobRequest {
                blob: RegistryBlob::new(session.clone(), layer.digest.clone(), layer.size),
                media_type: &layer.media_type,
                dest: &blob,
                progress: &|done| progress.send_modify(|p| p.done_bytes = done),
            };
            let fetched = tokio::select! {
                fetched = self.blobs.fetch(request) => fetched?,
                () = control.cancelled.notified() => return Err(cancelled()),
            };
            progress.send_modify(|p| p.state = LayerState::Unpacking);
            let source = match fetched.location {
                BlobLocation::Written => blob.clone(),
                BlobLocation::Kept(path) => path,
            };
            let (layout, limits, layer) = (
                self.layout.clone(),
                self.limits.for_layer(layer.size),
                layer.clone(),
            );
            let watch = control.unpack.clone();
            // The fetcher verified the blob's digest and size.
            blocking(move || install_layer(&layout, &source, &layer, limits, false, Some(watch)))
                .await?;
            Ok(fetched.bytes)
        }
        .await;
        if let Err(e) = tokio::fs::remove_file(&blob).await
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %blob.display(), error = %e, "could not remove a downloaded blob");
        }
        match &result {
            Ok(_) => {
                tracing::debug!(layer = %layer.digest, bytes = layer.size, elapsed = ?started.elapsed(), "layer installed")
            }
            Err(e) => tracing::warn!(layer = %layer.digest, error = %e, "layer failed"),
        }
        result
    }
}

/// Unpacks the blob at `blob` into the cache unless the layer is there
/// already; blocking. With `verify`, the blob's digest and size are checked
/// in the same pass (for blobs that were not hashed on the way in).
pub(crate) fn install_layer(
    layout: &Layout,
    blob: &Path,
    layer: &LayerRecord,
    limits: UnpackLimits,
    verify: bool,
    watch: Option<Arc<UnpackWatch>>,
) -> Result<PathBuf, ImageError> {
    let target = layout.layer_dir(&layer.digest);
    if target.is_dir() {
        return Ok(target);
    }
    let label = layer.digest.to_string();
    let compression = Compression::of_media_type(&layer.media_type).ok_or_else(|| {
        ImageError::UnsupportedMediaType {
            what: format!("layer {label}"),
            media_type: layer.media_type.clone(),
        }
    })?;
    let file = File::open(blob).map_err(io_err("open", blob))?;
    let mut reader = HashingReader {
        inner: file,
        hasher: verify.then(|| StreamHasher::new(layer.digest.algorithm())),
        size: 0,
    };
    let staging = layout.tmp_path("unpack");
    let options = UnpackOptions {
        label: label.clone(),
        compression,
        diff_id: Some(layer.diff_id.clone()),
        limits,
        watch,
    };
    unpack_layer(&mut reader, &staging, &options)?;
    let checked = check_blob(reader, blob, layer);
    let published = checked.and_then(|()| publish(&staging, &target));
    if published.is_err()
        && let Err(e) = remove_tree(&staging)
    {
        tracing::warn!(path = %staging.display(), error = %e, "could not remove an unpacked layer");
    }
    published.map(|()| target)
}

/// With verification on, reads what the decompressor left and compares.
fn check_blob(
    mut reader: HashingReader,
    blob: &Path,
    layer: &LayerRecord,
) -> Result<(), ImageError> {
    if reader.hasher.is_none() {
        return Ok(());
    }
    io::copy(&mut reader, &mut io::sink()).map_err(io_err("read", blob))?;
    let what = format!("layer {}", layer.digest);
    if reader.size != layer.size {
        return Err(ImageError::SizeMismatch {
            what,
            expected: layer.size,
            actual: reader.size,
        });
    }
    let actual = reader.hasher.take().map(StreamHasher::finish);
    match actual {
        Some(actual) if actual != layer.digest => Err(ImageError::DigestMismatch {
            what,
            expected: layer.digest.clone(),
            actual,
        }),
        _ => Ok(()),
    }
}

/// Makes the unpacked tree durable, then visible under its final name.
fn publish(staging: &Path, target: &Path) -> Result<(), ImageError> {
    // One syncfs instead of an fsync per file: a crash after the rename must
    // not leave a visible layer with empty files.
    let dir = File::open(staging).map_err(io_err("open", staging))?;
    nix::unistd::syncfs(&dir)
        .map_err(|e| ImageError::io("sync filesystem of", staging, e.into()))?;
    match fs::rename(staging, target) {
        Ok(()) => sync_parent(target),
        // Another process published the same content first.
        Err(_) if target.is_dir() => remove_tree(staging).map_err(io_err("remove", staging)),
        Err(e) => Err(ImageError::io("rename into place", target, e)),
    }
}

/// Counts and optionally hashes what is read through it.
struct HashingReader {
    inner: File,
    hasher: Option<StreamHasher>,
    size: u64,
}

impl Read for HashingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        self.size += n as u64;
        Ok(n)
    }
}

//! `ImageStore`: the node's content-addressed image cache.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use wharf_oci::{Descriptor, Digest};

use crate::client::{RegistryClient, Session};
use crate::error::io_err;
use crate::fetch::{BlobFetcher, DirectFetcher, PullBytes};
use crate::fsutil::remove_tree;
use crate::layers::{DiskLimits, Flight, LayerFetcher, LayerTable, install_layer};
use crate::layout::{ImageRecord, LayerRecord, Layout, RefRecord};
use crate::resolve::{fetch_config, layer_records, resolve};
use crate::{
    ImageConfig, ImageError, ImageRef, LayerProgress, LayerState, Platform, PullProgress,
    RegistryCredentials, UnpackLimits, UnpackWatch, blocking,
};

/// How often a pull reports progress while layers download.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// Settings of an [`ImageStore`].
#[derive(Clone)]
pub struct ImageStoreOptions {
    /// The platform index entries are chosen for; this machine's by default.
    pub platform: Platform,
    /// Registries (`host[:port]` or `host`) reached over plain HTTP besides
    /// loopback ones, which always are. Others use HTTPS, which needs a
    /// TLS-enabled build of reqwest (the workspace's has none yet).
    pub plain_http: Vec<String>,
    /// Absolute bounds on each layer's unpacked size and entry count.
    pub limits: UnpackLimits,
    /// A layer may unpack to at most this many times its compressed size
    /// (tar and decompression bombs)...
    pub max_expansion: u64,
    /// ...or to this many bytes, whichever is more: small layers of text
    /// legitimately expand a lot.
    pub expansion_floor: u64,
    /// Most bytes one pull unpacks, over all its layers.
    pub max_image_bytes: u64,
    /// Bytes kept free on the cache's disk: a pull that would go below it
    /// fails, and an unpack stops when it gets there.
    pub reserve_bytes: u64,
    /// Layers downloaded and unpacked at once, across all pulls.
    pub max_concurrent_downloads: usize,
    /// Time allowed to connect to a registry.
    pub connect_timeout: Duration,
    /// Gets layer blobs onto the node; [`DirectFetcher`] (the registry,
    /// directly) when `None`.
    pub blob_fetcher: Option<Arc<dyn BlobFetcher>>,
}

impl std::fmt::Debug for ImageStoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStoreOptions")
            .field("platform", &self.platform)
            .field("plain_http", &self.plain_http)
            .field("limits", &self.limits)
            .field("max_expansion", &self.max_expansion)
            .field("expansion_floor", &self.expansion_floor)
            .field("max_image_bytes", &self.max_image_bytes)
            .field("reserve_bytes", &self.reserve_bytes)
            .field("max_concurrent_downloads", &self.max_concurrent_downloads)
            .field("connect_timeout", &self.connect_timeout)
            .field(
                "blob_fetcher",
                &self.blob_fetcher.as_ref().map(|_| "custom"),
            )
            .finish()
    }
}

impl Default for ImageStoreOptions {
    fn default() -> Self {
        ImageStoreOptions {
            platform: Platform::host(),
            plain_http: Vec::new(),
            limits: UnpackLimits::default(),
            max_expansion: 20,
            expansion_floor: 1 << 30,
            max_image_bytes: 64 << 30,
            reserve_bytes: 1 << 30,
            max_concurrent_downloads: 3,
            connect_timeout: Duration::from_secs(10),
            blob_fetcher: None,
        }
    }
}

/// Whether a pull may be answered from the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Use the cached image if the reference has been pulled before; no
    /// network at all then (Kubernetes' `IfNotPresent`).
    #[default]
    IfNotPresent,
    /// Ask the registry what the reference names now; download only what
    /// is not cached (Kubernetes' `Always`).
    Always,
}

/// A pulled image, ready for a container runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PulledImage {
    /// The reference it was pulled by.
    pub reference: ImageRef,
    /// The digest the reference resolved to: the index's for multi-arch
    /// images, else the image manifest's. Pinning `repo@manifest_digest`
    /// pulls the same image again.
    pub manifest_digest: Digest,
    /// The config's digest: the image ID.
    pub config_digest: Digest,
    /// Entrypoint, command, environment and the rest.
    pub config: ImageConfig,
    /// The unpacked layer directories, bottom first: overlayfs wants them
    /// reversed in `lowerdir`.
    pub layers: Vec<PathBuf>,
    /// Bytes a pull downloads: the compressed layers and the config.
    pub size_bytes: u64,
    /// Where this pull's bytes came from. A layer another pull was already
    /// fetching counts as that fetch counted it; a pull the cache answered
    /// counts everything as cache.
    pub bytes: PullBytes,
}

/// A cached image as the node reports it for image-locality scheduling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedImage {
    /// The digest its references resolved to.
    pub manifest_digest: Digest,
    /// The references it was pulled by, sorted.
    pub references: Vec<ImageRef>,
    /// Bytes a pull downloads.
    pub size_bytes: u64,
}

/// What [`ImageStore::remove_unused`] deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Manifest digests of the image records removed.
    pub removed_images: Vec<Digest>,
    /// Layers removed from disk.
    pub removed_layers: Vec<Digest>,
}

/// The node's image cache: pulls images from Wharf registries and keeps
/// their layers unpacked, shared by every image that uses them.
///
/// Cheap to clone; clones share the cache, the download slots and the
/// token cache. Use one store per directory.
///
/// ```no_run
/// # async fn example() -> Result<(), wharf_image::ImageError> {
/// use wharf_image::{ImageRef, ImageStore, ImageStoreOptions, PullPolicy, RegistryCredentials};
/// let store = ImageStore::open("/var/lib/wharf/images", ImageStoreOptions::default()).await?;
/// let image = ImageRef::parse("127.0.0.1:7700/shop/web:1.0")?;
/// let robot = RegistryCredentials::new("robot$shop+puller", "secret");
/// let pulled = store
///     .pull(&image, Some(&robot), PullPolicy::IfNotPresent, &|p| println!("{}/{}", p.done_bytes, p.total_bytes))
///     .await?;
/// println!("{} layers, entrypoint {:?}", pulled.layers.len(), pulled.config.entrypoint);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ImageStore {
    layout: Layout,
    client: Arc<RegistryClient>,
    fetcher: Arc<LayerFetcher>,
    platform: Platform,
    max_image_bytes: u64,
}

impl ImageStore {
    /// Opens (creating) the cache under `root` and discards what an
    /// interrupted run left in its `tmp/`.
    pub async fn open(
        root: impl Into<PathBuf>,
        options: ImageStoreOptions,
    ) -> Result<ImageStore, ImageError> {
        let layout = Layout::new(root.into());
        let present = {
            let layout = layout.clone();
            blocking(move || {
                layout.prepare()?;
                layout.present_layers()
            })
            .await?
        };
        let fetcher = LayerFetcher {
            layout: layout.clone(),
            limits: DiskLimits {
                unpack: options.limits,
                max_expansion: options.max_expansion,
                expansion_floor: options.expansion_floor,
                reserve: options.reserve_bytes,
            },
            downloads: Semaphore::new(options.max_concurrent_downloads.max(1)),
            blobs: options
                .blob_fetcher
                .clone()
                .unwrap_or_else(|| Arc::new(DirectFetcher)),
            table: std::sync::Mutex::new(LayerTable {
                present,
                ..LayerTable::default()
            }),
            downloads_started: AtomicU64::new(0),
        };
        Ok(ImageStore {
            client: Arc::new(RegistryClient::new(
                options.plain_http,
                options.connect_timeout,
            )?),
            fetcher: Arc::new(fetcher),
            platform: options.platform,
            max_image_bytes: options.max_image_bytes,
            layout,
        })
    }

    /// The cache's paths and records.
    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The HTTP client and token cache pulls (and commit pushes) share.
    pub(crate) fn registry_client(&self) -> &RegistryClient {
        &self.client
    }

    /// The platform index entries are chosen for.
    pub(crate) fn platform(&self) -> &Platform {
        &self.platform
    }

    /// The cache's directory.
    pub fn root(&self) -> &Path {
        &self.layout.root
    }

    /// Where the layer with compressed digest `digest` is (or would be) unpacked.
    pub fn layer_dir(&self, digest: &Digest) -> PathBuf {
        self.layout.layer_dir(digest)
    }

    /// How many layer downloads this store has started; concurrent pulls
    /// of one layer share a single download.
    pub fn layer_downloads(&self) -> u64 {
        self.fetcher.downloads_started.load(Ordering::Relaxed)
    }

    /// Pulls `image` (unless `policy` lets the cache answer), reporting
    /// progress as layers download, and returns it unpacked.
    ///
    /// Every manifest, config and layer is verified against its digest and
    /// size, and each uncompressed layer against the config's `diff_id`.
    /// Layers already cached are reused; layers another pull is fetching
    /// are waited for, not fetched again.
    #[tracing::instrument(skip(self, credentials, progress), fields(image = %image))]
    pub async fn pull(
        &self,
        image: &ImageRef,
        credentials: Option<&RegistryCredentials>,
        policy: PullPolicy,
        progress: &(dyn Fn(PullProgress) + Sync),
    ) -> Result<PulledImage, ImageError> {
        if policy == PullPolicy::IfNotPresent
            && let Some(pulled) = self.cached(image).await
        {
            progress(finished_progress(image, pulled.size_bytes));
            return Ok(pulled);
        }
        let session = Arc::new(Session::new(&self.client, image, credentials)?);
        let resolved = resolve(&session, image, &self.platform).await?;
        if let Some(pulled) = self.reuse(image, &resolved.manifest_digest).await? {
            progress(finished_progress(image, pulled.size_bytes));
            return Ok(pulled);
        }
        let (config_digest, config) = fetch_config(&session, &resolved.manifest).await?;
        let layers = layer_records(&session.image(), &resolved.manifest, &config)?;
        let digests: Vec<Digest> = layers.iter().map(|l| l.digest.clone()).collect();
        let _pins = Pins::new(self.fetcher.clone(), digests);
        let flights: Vec<Flight> = layers
            .iter()
            .map(|l| self.fetcher.join(&session, l))
            .collect();
        let mut bytes = await_layers(image, &flights, self.max_image_bytes, progress).await?;
        let config_size = resolved.manifest.config.as_ref().map_or(0, |c| c.size);
        bytes.registry += config_size;
        let record = ImageRecord {
            manifest_digest: resolved.manifest_digest,
            image_manifest_digest: resolved.image_manifest_digest,
            config_digest,
            config,
            size_bytes: config_size + layers.iter().map(|l| l.size).sum::<u64>(),
            layers,
        };
        let pulled = self.save(image, record).await?;
        Ok(PulledImage { bytes, ..pulled })
    }

    /// The cached image for `image`, without network: by its digest if it
    /// pins one, else by what the reference resolved to when last pulled.
    /// `None` if it was never pulled or a layer has since been removed.
    pub async fn cached(&self, image: &ImageRef) -> Option<PulledImage> {
        let layout = self.layout.clone();
        let image = image.clone();
        let found = blocking(move || {
            let digest = match image.digest() {
                Some(digest) => digest.clone(),
                None => match layout.read_ref(&image)? {
                    Some(record) => record.manifest_digest,
                    None => return Ok(None),
                },
            };
            let found = layout
                .read_image(&digest)?
                .filter(|record| layout.is_complete(record))
                .map(|record| layout.pulled(&record, &image));
            if found.is_some() {
                layout.touch_image(&digest);
            }
            Ok(found)
        })
        .await;
        found.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "image cache lookup failed");
            None
        })
    }

    /// Every complete cached image with its references and size.
    pub async fn list(&self) -> Result<Vec<CachedImage>, ImageError> {
        let layout = self.layout.clone();
        blocking(move || {
            let mut images: BTreeMap<Digest, CachedImage> = layout
                .all_images()?
                .into_iter()
                .filter(|record| layout.is_complete(record))
                .map(|record| {
                    let image = CachedImage {
                        manifest_digest: record.manifest_digest.clone(),
                        references: Vec::new(),
                        size_bytes: record.size_bytes,
                    };
                    (record.manifest_digest, image)
                })
                .collect();
            for reference in layout.all_refs()? {
                if let Some(image) = images.get_mut(&reference.manifest_digest) {
                    image.references.push(reference.reference);
                }
            }
            let mut images: Vec<CachedImage> = images.into_values().collect();
            for image in &mut images {
                image.references.sort_by_key(ToString::to_string);
            }
            Ok(images)
        })
        .await
    }

    /// Every layer of the complete cached images, once each, with its
    /// compressed size (what a pull downloads): what the node reports for
    /// image-locality scheduling.
    pub async fn cached_layers(&self) -> Result<Vec<(Digest, u64)>, ImageError> {
        let layout = self.layout.clone();
        blocking(move || {
            let mut layers: BTreeMap<Digest, u64> = BTreeMap::new();
            for record in layout.all_images()? {
                if layout.is_complete(&record) {
                    for layer in record.layers {
                        layers.insert(layer.digest, layer.size);
                    }
                }
            }
            Ok(layers.into_iter().collect())
        })
        .await
    }

    /// Garbage collection: forgets every image whose manifest digest is not
    /// in `keep` (and the references to it), then deletes every layer no
    /// kept image uses, except layers a pull in progress needs.
    pub async fn remove_unused(&self, keep: &HashSet<Digest>) -> Result<GcReport, ImageError> {
        let keep = keep.clone();
        let layout = self.layout.clone();
        let fetcher = self.fetcher.clone();
        blocking(move || {
            let mut cache = CacheRecords::read(&layout)?;
            let doomed: HashSet<Digest> = cache
                .images
                .iter()
                .map(|r| r.manifest_digest.clone())
                .filter(|d| !keep.contains(d))
                .collect();
            remove_images(&layout, &fetcher, &mut cache, &doomed, &HashSet::new())
        })
        .await
    }

    /// Garbage collection as kubelet's image GC does it: images no running
    /// container uses are removed, least recently used first, while the
    /// cache's disk is above `policy.high_percent` full, until it is below
    /// `policy.low_percent`; images unused for `policy.max_unused_age` go
    /// whatever the disk. Images used within `policy.min_age` stay.
    ///
    /// `in_use` lists the layer directories of each mounted container root;
    /// those layers are never removed, nor the images made of exactly them.
    pub async fn collect_garbage(
        &self,
        policy: &ImageGcPolicy,
        in_use: &[Vec<PathBuf>],
    ) -> Result<GcReport, ImageError> {
        let (layout, fetcher, policy) = (self.layout.clone(), self.fetcher.clone(), *policy);
        let in_use = in_use.to_vec();
        blocking(move || collect_by_policy(&layout, &fetcher, &policy, &in_use)).await
    }

    /// Adds a layer from a local blob file (e.g. an image archive loaded
    /// without a registry): its digest and size are verified against
    /// `descriptor` and its uncompressed content against `diff_id` while it
    /// is unpacked. Returns the layer directory. A layer no cached image
    /// uses goes at the next [`remove_unused`](Self::remove_unused).
    pub async fn import_layer(
        &self,
        blob: &Path,
        descriptor: &Descriptor,
        diff_id: &Digest,
    ) -> Result<PathBuf, ImageError> {
        let layer = LayerRecord {
            digest: descriptor.digest.clone(),
            media_type: descriptor.media_type.clone(),
            size: descriptor.size,
            diff_id: diff_id.clone(),
        };
        let limits = self.fetcher.limits.for_layer(layer.size);
        let (layout, blob) = (self.layout.clone(), blob.to_path_buf());
        let watch = Arc::new(UnpackWatch::with_reserve(Some(self.fetcher.reserve())));
        let digest = layer.digest.clone();
        let _pins = Pins::new(self.fetcher.clone(), vec![digest.clone()]);
        let dir =
            blocking(move || install_layer(&layout, &blob, &layer, limits, true, Some(watch)))
                .await?;
        self.fetcher.table().present.insert(digest);
        Ok(dir)
    }

    /// An `Always` pull whose reference still resolves to a cached image:
    /// record the reference and reuse it.
    async fn reuse(
        &self,
        image: &ImageRef,
        digest: &Digest,
    ) -> Result<Option<PulledImage>, ImageError> {
        let (layout, image, digest) = (self.layout.clone(), image.clone(), digest.clone());
        blocking(move || {
            let Some(record) = layout
                .read_image(&digest)?
                .filter(|r| layout.is_complete(r))
            else {
                return Ok(None);
            };
            layout.write_ref(&image, &digest)?;
            layout.touch_image(&digest);
            Ok(Some(layout.pulled(&record, &image)))
        })
        .await
    }

    async fn save(&self, image: &ImageRef, record: ImageRecord) -> Result<PulledImage, ImageError> {
        let (layout, image) = (self.layout.clone(), image.clone());
        blocking(move || {
            layout.write_image(&record)?;
            layout.write_ref(&image, &record.manifest_digest)?;
            Ok(layout.pulled(&record, &image))
        })
        .await
    }
}

/// Waits for every layer, reporting progress every [`PROGRESS_INTERVAL`]
/// when it changed, and once more at the end. Fails (dropping, and so
/// cancelling, what only this pull waits for) once the layers together
/// unpack to more than `max_bytes`.
async fn await_layers(
    image: &ImageRef,
    flights: &[Flight],
    max_bytes: u64,
    progress: &(dyn Fn(PullProgress) + Sync),
) -> Result<PullBytes, ImageError> {
    let all = futures_util::future::try_join_all(flights.iter().map(|f| f.done.clone()));
    tokio::pin!(all);
    let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last: Option<PullProgress> = None;
    loop {
        tokio::select! {
            result = &mut all => {
                let mut bytes = PullBytes::default();
                for layer in result? {
                    bytes += layer;
                }
                progress(snapshot(image, flights));
                return Ok(bytes);
            }
            _ = ticker.tick() => {
                let now = snapshot(image, flights);
                let unpacked: u64 = now.layers.iter().map(|l| l.unpacked_bytes).sum();
                if unpacked > max_bytes {
                    return Err(ImageError::ImageTooLarge {
                        image: image.to_string(),
                        limit: format!("unpacked size limit of {max_bytes} bytes per image"),
                    });
                }
                if last.as_ref() != Some(&now) {
                    progress(now.clone());
                    last = Some(now);
                }
            }
        }
    }
}

fn snapshot(image: &ImageRef, flights: &[Flight]) -> PullProgress {
    let layers: Vec<LayerProgress> = flights
        .iter()
        .map(|f| {
            let mut layer = f.progress.borrow().clone();
            if layer.state == LayerState::Unpacking {
                layer.unpacked_bytes = f.control.unpack.written();
            }
            layer
        })
        .collect();
    PullProgress {
        image: image.clone(),
        done_bytes: layers.iter().map(|l| l.done_bytes).sum(),
        total_bytes: layers.iter().map(|l| l.total_bytes).sum(),
        layers,
    }
}

/// Progress of a pull the cache answered: nothing left to do.
fn finished_progress(image: &ImageRef, size: u64) -> PullProgress {
    PullProgress {
        image: image.clone(),
        layers: Vec::new(),
        done_bytes: size,
        total_bytes: size,
    }
}

/// Keeps layers safe from garbage collection while a pull needs them.
struct Pins {
    fetcher: Arc<LayerFetcher>,
    digests: Vec<Digest>,
}

impl Pins {
    fn new(fetcher: Arc<LayerFetcher>, digests: Vec<Digest>) -> Pins {
        {
            let mut table = fetcher.table();
            for digest in &digests {
                *table.pins.entry(digest.clone()).or_default() += 1;
            }
        }
        Pins { fetcher, digests }
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let mut table = self.fetcher.table();
        for digest in &self.digests {
            if let Some(count) = table.pins.get_mut(digest) {
                *count -= 1;
                if *count == 0 {
                    table.pins.remove(digest);
                }
            }
        }
    }
}

/// When [`ImageStore::collect_garbage`] removes images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageGcPolicy {
    /// Disk use (percent of the cache's filesystem) that starts a collection.
    pub high_percent: u8,
    /// Disk use a collection brings it under.
    pub low_percent: u8,
    /// Images used more recently than this are kept.
    pub min_age: Duration,
    /// Unused images older than this are removed whatever the disk; `None`
    /// keeps them while there is room.
    pub max_unused_age: Option<Duration>,
}

impl Default for ImageGcPolicy {
    /// Kubelet's defaults: 85% / 80%, two minutes, no maximum age.
    fn default() -> Self {
        ImageGcPolicy {
            high_percent: 85,
            low_percent: 80,
            min_age: Duration::from_secs(120),
            max_unused_age: None,
        }
    }
}

/// Percent of the filesystem under `path` in use, as `df` counts it.
fn disk_used_percent(path: &Path) -> Option<f64> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    let used = stat.blocks().saturating_sub(stat.blocks_free()) as f64;
    let usable = used + stat.blocks_available() as f64;
    (usable > 0.0).then(|| used * 100.0 / usable)
}

fn collect_by_policy(
    layout: &Layout,
    fetcher: &LayerFetcher,
    policy: &ImageGcPolicy,
    in_use: &[Vec<PathBuf>],
) -> Result<GcReport, ImageError> {
    let now = std::time::SystemTime::now();
    let mounted: Vec<HashSet<&PathBuf>> = in_use.iter().map(|l| l.iter().collect()).collect();
    let protected: HashSet<PathBuf> = in_use.iter().flatten().cloned().collect();
    let mut cache = CacheRecords::read(layout)?;
    let mut candidates: Vec<(Duration, Digest)> = cache
        .images
        .iter()
        .filter(|record| {
            let dirs: HashSet<PathBuf> = record
                .layers
                .iter()
                .map(|l| layout.layer_dir(&l.digest))
                .collect();
            !mounted
                .iter()
                .any(|m| m.len() == dirs.len() && m.iter().all(|d| dirs.contains(*d)))
        })
        .filter_map(|record| {
            let used = layout.image_used_at(&record.manifest_digest)?;
            let age = now.duration_since(used).unwrap_or_default();
            (age >= policy.min_age).then(|| (age, record.manifest_digest.clone()))
        })
        .collect();
    // Oldest use first.
    candidates.sort_by_key(|(age, _)| std::cmp::Reverse(*age));
    let mut report = GcReport::default();
    if let Some(max_age) = policy.max_unused_age {
        let expired: HashSet<Digest> = candidates
            .iter()
            .filter(|(age, _)| *age > max_age)
            .map(|(_, d)| d.clone())
            .collect();
        candidates.retain(|(_, d)| !expired.contains(d));
        report.merge(remove_images(
            layout, fetcher, &mut cache, &expired, &protected,
        )?);
    }
    let over = |limit: u8| disk_used_percent(&layout.root).is_some_and(|p| p >= f64::from(limit));
    if over(policy.high_percent) {
        for (_, digest) in candidates {
            if !over(policy.low_percent) {
                break;
            }
            let one = HashSet::from([digest]);
            report.merge(remove_images(
                layout, fetcher, &mut cache, &one, &protected,
            )?);
        }
    }
    Ok(report)
}

impl GcReport {
    fn merge(&mut self, other: GcReport) {
        self.removed_images.extend(other.removed_images);
        self.removed_layers.extend(other.removed_layers);
        self.removed_images.sort();
        self.removed_layers.sort();
    }
}

/// The image and reference records of the cache, read once per collection.
struct CacheRecords {
    images: Vec<ImageRecord>,
    refs: Vec<RefRecord>,
}

impl CacheRecords {
    fn read(layout: &Layout) -> Result<CacheRecords, ImageError> {
        Ok(CacheRecords {
            images: layout.all_images()?,
            refs: layout.all_refs()?,
        })
    }
}

/// Forgets the images in `doomed` and the references to them, then deletes
/// every layer no remaining image uses, except `protected` layer
/// directories and layers a pull in progress needs.
///
/// `cache` is what the caller read of the records; it is kept current, so
/// that removing images one at a time reads them only once.
fn remove_images(
    layout: &Layout,
    fetcher: &LayerFetcher,
    cache: &mut CacheRecords,
    doomed: &HashSet<Digest>,
    protected: &HashSet<PathBuf>,
) -> Result<GcReport, ImageError> {
    let mut report = GcReport::default();
    for record in cache
        .images
        .iter()
        .filter(|r| doomed.contains(&r.manifest_digest))
    {
        layout.remove_image(&record.manifest_digest)?;
        report.removed_images.push(record.manifest_digest.clone());
    }
    cache
        .images
        .retain(|r| !doomed.contains(&r.manifest_digest));
    for reference in cache
        .refs
        .iter()
        .filter(|r| doomed.contains(&r.manifest_digest))
    {
        layout.remove_ref(&reference.reference)?;
    }
    cache.refs.retain(|r| !doomed.contains(&r.manifest_digest));
    let used: HashSet<&Digest> = cache
        .images
        .iter()
        .flat_map(|r| r.layers.iter().map(|l| &l.digest))
        .collect();
    // Under the table lock, doomed layers move to tmp/ (a rename), so no
    // pull can find one present and then lose it; deletion happens after.
    let mut trash = Vec::new();
    {
        let mut table = fetcher.table();
        let doomed: Vec<Digest> = table
            .present
            .iter()
            .filter(|d| {
                !used.contains(*d)
                    && !table.pins.contains_key(*d)
                    && !table.flights.contains_key(*d)
                    && !protected.contains(&layout.layer_dir(d))
            })
            .cloned()
            .collect();
        for digest in doomed {
            let dir = layout.layer_dir(&digest);
            let to = layout.tmp_path("trash");
            match std::fs::rename(&dir, &to) {
                Ok(()) => trash.push(to),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ImageError::io("move to trash", &dir, e)),
            }
            table.present.remove(&digest);
            report.removed_layers.push(digest);
        }
    }
    for dir in trash {
        remove_tree(&dir).map_err(io_err("remove", &dir))?;
    }
    report.removed_images.sort();
    report.removed_layers.sort();
    Ok(report)
}

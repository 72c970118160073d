//! The node's image cache: pulls images from Wharf registries over the OCI
//! Distribution API (with Docker token authentication), verifies every
//! digest, and keeps layers unpacked as overlayfs lower directories shared
//! by all images and containers on the node.
//!
//! ```text
//! ImageStore::pull(ref) ─ resolve.rs: manifest (index → this platform) → config
//!                       ─ layers.rs:  per layer, one shared download (single flight):
//!                                     fetch.rs: a BlobFetcher gets the blob (default:
//!                                     registry → tmp/, hashed while streaming; the
//!                                     agent's: P2P, kept in its blob cache)
//!                                     → unpack/ (diff_id checked, whiteouts → overlayfs)
//!                                     → tmp/unpack-* renamed to layers/<alg>/<hex>/
//!                       ─ layout.rs:  image record + reference record (atomic JSON)
//! ```
//!
//! `client.rs` speaks HTTP through `wharf-distribution` (token auth, the
//! distribution endpoints) and says what its answers mean for a pull: plain
//! HTTP to loopback registries and to those listed in
//! [`ImageStoreOptions::plain_http`]; HTTPS needs a TLS-enabled reqwest,
//! which the workspace does not enable yet.
//!
//! **Invariants:** a layer directory is visible only once completely
//! unpacked and verified; no archive entry writes outside its layer
//! directory; blocking work (hashing, decompression, unpacking, file IO)
//! runs on blocking threads, never on the async runtime's workers.

mod client;
mod commit;
mod config;
mod error;
mod fetch;
mod fsutil;
mod layers;
mod layout;
mod reference;
mod resolve;
mod store;
mod unpack;

pub use commit::{
    CTIME_MARGIN, ChangeSize, CommitPush, ConfigChange, ConfigChanges, NewLayer, PreCopy,
    PushedCommit, Snapshot, measure_upper, shared_writable_inodes,
};
pub use config::{ImageConfig, Platform};
pub use error::ImageError;
pub use fetch::{
    BlobFetcher, BlobLocation, BlobRequest, DirectFetcher, FetchedBlob, PullBytes, RegistryBlob,
    RegistryStream,
};
pub use reference::ImageRef;
pub use store::{
    CachedImage, GcReport, ImageGcPolicy, ImageStore, ImageStoreOptions, PullPolicy, PulledImage,
};
pub use unpack::{
    Compression, DiskReserve, UnpackLimits, UnpackOptions, UnpackStats, UnpackWatch, unpack_layer,
};
/// Credentials for a pull: the distribution client's.
pub use wharf_distribution::RegistryCredentials;

use wharf_oci::Digest;

/// Where a pull stands, reported while it runs (at most every 200 ms, and
/// once at the end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullProgress {
    /// The image being pulled.
    pub image: ImageRef,
    /// Each layer, bottom first (empty when the cache answered).
    pub layers: Vec<LayerProgress>,
    /// Compressed bytes downloaded or found cached, over all layers.
    pub done_bytes: u64,
    /// Compressed bytes of all layers.
    pub total_bytes: u64,
}

/// Where one layer of a pull stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerProgress {
    /// The layer's (compressed) digest.
    pub digest: Digest,
    /// Its phase.
    pub state: LayerState,
    /// Compressed bytes downloaded.
    pub done_bytes: u64,
    /// Compressed size.
    pub total_bytes: u64,
    /// Uncompressed bytes unpacked so far (while [`LayerState::Unpacking`]).
    pub unpacked_bytes: u64,
}

/// The phase of one layer in a pull.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerState {
    /// Waiting for a download slot.
    Waiting,
    /// Downloading.
    Downloading,
    /// Verifying and unpacking.
    Unpacking,
    /// Unpacked in the cache.
    Ready,
}

/// Runs blocking work on tokio's blocking pool.
pub(crate) async fn blocking<T, F>(work: F) -> Result<T, ImageError>
where
    F: FnOnce() -> Result<T, ImageError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ImageError::Internal(format!("blocking task failed: {e}")))?
}

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wharf_oci::Digest;

/// Everything that can go wrong pulling, unpacking or caching an image.
///
/// Cloneable (sources are shared) because one layer download serves every
/// pull waiting for it, and each of them gets the outcome.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageError {
    /// The image reference does not parse.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The text given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A filesystem operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done, e.g. "create directory".
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The registry could not be reached or the transfer broke off.
    #[error("{image}: request to {url} failed: {source}")]
    Http {
        /// The image being pulled.
        image: String,
        /// The URL requested.
        url: String,
        /// The client error.
        #[source]
        source: Arc<reqwest::Error>,
    },
    /// The registry or its token server refused the credentials or the access.
    #[error("{image}: not authorized: {message}")]
    Unauthorized {
        /// The image being pulled.
        image: String,
        /// What the registry or token server said.
        message: String,
    },
    /// The registry does not have the manifest or blob.
    #[error("{image}: {what} not found in the registry")]
    NotFound {
        /// The image being pulled.
        image: String,
        /// The manifest or blob.
        what: String,
    },
    /// The registry answered with an unexpected status.
    #[error("{image}: {url} answered {status}: {message}")]
    Registry {
        /// The image being pulled.
        image: String,
        /// The URL requested.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The registry's error message, if any.
        message: String,
    },
    /// The manifest is malformed, of an unsupported kind, or too large.
    #[error("{image}: invalid manifest: {reason}")]
    InvalidManifest {
        /// The image being pulled.
        image: String,
        /// What is wrong.
        reason: String,
    },
    /// The image config is malformed or does not match the manifest.
    #[error("{image}: invalid image config: {reason}")]
    InvalidConfig {
        /// The image being pulled.
        image: String,
        /// What is wrong.
        reason: String,
    },
    /// An index has no manifest for this node's platform.
    #[error("{image}: no manifest for platform {platform} (the index offers: {available})")]
    NoMatchingPlatform {
        /// The image being pulled.
        image: String,
        /// This node's platform.
        platform: String,
        /// The platforms the index lists, comma-separated.
        available: String,
    },
    /// Content does not hash to the digest it was asked for by.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The content, e.g. "layer sha256:.. of 127.0.0.1:7700/shop/web:1.0".
        what: String,
        /// The digest the manifest or config names.
        expected: Digest,
        /// The digest of what was received.
        actual: Digest,
    },
    /// Content is not of the size its descriptor states.
    #[error("{what}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The content.
        what: String,
        /// The size the descriptor states.
        expected: u64,
        /// The size received (at least; transfers stop once over).
        actual: u64,
    },
    /// A layer or blob has a media type this store cannot unpack.
    #[error("{what}: unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        /// The layer or blob.
        what: String,
        /// Its media type.
        media_type: String,
    },
    /// A tar entry would write outside its layer or is otherwise refused.
    #[error("layer {layer}: refusing tar entry {entry:?}: {reason}")]
    UnsafeEntry {
        /// The layer.
        layer: String,
        /// The entry's path as written in the archive.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// A layer exceeds the configured unpacking limits.
    #[error("layer {layer}: {limit} exceeded")]
    LayerTooLarge {
        /// The layer.
        layer: String,
        /// Which limit, with its value.
        limit: String,
    },
    /// An image unpacks to more than the configured limit.
    #[error("{image}: {limit} exceeded")]
    ImageTooLarge {
        /// The image.
        image: String,
        /// Which limit, with its value.
        limit: String,
    },
    /// Pulling or unpacking a layer stopped because nobody needs it any more.
    #[error("layer {layer}: pull cancelled: no pod needs the image any more")]
    Cancelled {
        /// The layer.
        layer: String,
    },
    /// The disk holding the image cache is too full to go on.
    #[error(
        "not enough disk for images under {path}: {available} bytes free, and the node keeps {reserve} bytes in reserve"
    )]
    DiskReserve {
        /// Where the cache is.
        path: PathBuf,
        /// Bytes free there.
        available: u64,
        /// Bytes the node keeps free.
        reserve: u64,
    },
    /// The layer's archive or compression stream is malformed.
    #[error("layer {layer}: malformed archive: {source}")]
    MalformedLayer {
        /// The layer.
        layer: String,
        /// The decoding error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The layer needs privileges this process lacks (whiteouts, opaque
    /// directories).
    #[error("layer {layer}: {what} at {path} needs root")]
    NeedsRoot {
        /// The layer.
        layer: String,
        /// What could not be created.
        what: &'static str,
        /// Where, inside the layer.
        path: PathBuf,
    },
    /// A record in the cache's index is unreadable.
    #[error("image cache record {path}: {reason}")]
    CorruptRecord {
        /// The record file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The container's upper directory holds something a layer cannot
    /// carry (a name that reads as a whiteout, an overlayfs redirect or
    /// metacopy), or changed while it was read.
    #[error("upper directory {upper}: {path}: {reason}")]
    UnsupportedChange {
        /// The upper directory.
        upper: PathBuf,
        /// The entry, as the container sees it.
        path: String,
        /// Why it cannot be committed.
        reason: String,
    },
    /// A `--change` instruction is malformed or not allowed in a commit.
    #[error("change {change:?}: {reason}")]
    InvalidChange {
        /// The instruction as given.
        change: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A commit's target is on another registry than its base image: the
    /// base layers could be neither found nor mounted there.
    #[error(
        "cannot commit {base_image} to {target}: the target is on registry {target_registry}, the base image on {base_registry} (a commit pushes to the base image's registry)"
    )]
    CrossRegistry {
        /// The base image.
        base_image: String,
        /// The target image.
        target: String,
        /// The target's registry.
        target_registry: String,
        /// The base image's registry.
        base_registry: String,
    },
    /// A step of a commit's push failed.
    #[error("commit to {target}: {step}: {source}")]
    CommitPush {
        /// The image being pushed.
        target: String,
        /// What was being done, e.g. "upload layer sha256:…".
        step: String,
        /// What went wrong.
        #[source]
        source: Arc<ImageError>,
    },
    /// A blob fetcher other than the registry's own failed to deliver a
    /// layer blob.
    #[error("fetching layer {layer}: {reason}")]
    BlobFetch {
        /// The layer's digest.
        layer: String,
        /// What went wrong.
        reason: String,
    },
    /// A worker task died (a bug or a panic).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ImageError {
    /// An [`ImageError::Io`] for `action` on `path`.
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> ImageError {
        ImageError::Io {
            action,
            path: path.to_path_buf(),
            source: Arc::new(source),
        }
    }
}

/// `map_err` shorthand: `.map_err(io_err("open", &path))`.
pub(crate) fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ImageError + 'a {
    move |source| ImageError::io(action, path, source)
}

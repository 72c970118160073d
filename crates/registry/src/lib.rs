//! The OCI Distribution v1.1 registry: the [`Registry`] service over the
//! `Store` (metadata) and `BlobStore` (content), online garbage collection,
//! and the `/v2/` HTTP routes in [`http`].
//!
//! Layering: `http` parses requests and renders OCI errors; the service
//! methods never see HTTP; storage sits below both.

mod blobs;
mod browse;
mod cache;
mod error;
mod gc;
pub mod http;
mod keys;
mod manifests;
mod origin;
mod quota;
mod tombstones;

use std::sync::Arc;
use std::time::Duration;

use wharf_blob::BlobStore;
use wharf_store::Store;

pub use blobs::{BlobInfo, UploadStatus};
pub use error::RegistryError;
pub use gc::{GcOptions, GcReport};
pub use manifests::{DeleteOutcome, ManifestContent, Page, PushedManifest, TagOutcome};
pub use origin::Origin;
pub use quota::{QuotaSource, Unlimited};
pub use tombstones::{Tombstone, TombstonePage};

/// How long tombstones of deleted tags are kept by default: 30 days.
pub const DEFAULT_TOMBSTONE_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Limits and timings of the registry.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: u64,
    /// Largest blob accepted, in bytes.
    pub max_blob_bytes: u64,
    /// Blobs and links marked more recently than this are never collected.
    pub gc_grace: Duration,
    /// Upload sessions idle longer than this are deleted.
    pub upload_ttl: Duration,
    /// This registry instance's id, recorded as the [`Origin`] of the tag
    /// writes it accepts from clients; must match
    /// `[a-z0-9][a-z0-9-]{0,63}` ([`Origin::check_instance`]). Replicating
    /// registries need distinct ids.
    pub instance: String,
    /// How long a deleted tag's tombstone is kept ([`Registry::tombstones`]).
    /// Replicating registries converge on deletes made during partitions
    /// shorter than this; after a longer one an older copy of the tag may
    /// come back.
    pub tombstone_retention: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            max_manifest_bytes: 4 << 20,
            max_blob_bytes: 64 << 30,
            gc_grace: Duration::from_secs(3600),
            upload_ttl: Duration::from_secs(24 * 3600),
            instance: "local".to_string(),
            tombstone_retention: DEFAULT_TOMBSTONE_RETENTION,
        }
    }
}

/// The registry service.
pub struct Registry {
    store: Arc<dyn Store>,
    blobs: BlobStore,
    config: RegistryConfig,
    manifest_cache: cache::ManifestCache,
    gc_lock: tokio::sync::Mutex<()>,
    quotas: Arc<dyn QuotaSource>,
}

impl Registry {
    /// A registry keeping metadata in `store` and content in `blobs`, with
    /// no quotas.
    pub fn new(store: Arc<dyn Store>, blobs: BlobStore, config: RegistryConfig) -> Registry {
        Registry {
            store,
            blobs,
            config,
            manifest_cache: cache::ManifestCache::new(64 << 20),
            gc_lock: tokio::sync::Mutex::new(()),
            quotas: Arc::new(Unlimited),
        }
    }

    /// Enforces the quotas `quotas` reports.
    pub fn with_quotas(mut self, quotas: Arc<dyn QuotaSource>) -> Registry {
        self.quotas = quotas;
        self
    }

    /// The limits in force.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }
}

//! [`ImagePuller`] over the node's [`ImageStore`].

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use wharf_image::{
    ImageRef, ImageStore, LayerProgress, LayerState, PullBytes, PullProgress, RegistryCredentials,
};
use wharf_runc::spec::ProcessDefaults;

use super::driver::{ContainerError, Image, ImagePuller, PullPolicy};

/// Pulls with the node's registry credentials (a robot account's, usually)
/// into the shared layer cache.
pub struct ImageStorePuller {
    store: Arc<ImageStore>,
    credentials: Option<RegistryCredentials>,
    default_registry: Option<String>,
    /// Bytes pulled since the agent started, by origin (for metrics).
    pulled: Mutex<PullBytes>,
}

impl ImageStorePuller {
    /// A puller over `store`, logging in with `credentials` when a registry
    /// asks; references without a registry host (`shop/web:1`) go to
    /// `default_registry` (the Wharf server's `host:port`).
    pub fn new(
        store: Arc<ImageStore>,
        credentials: Option<RegistryCredentials>,
        default_registry: Option<String>,
    ) -> ImageStorePuller {
        ImageStorePuller {
            store,
            credentials,
            default_registry,
            pulled: Mutex::default(),
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// `pulling REF: 3.1/12.0 MiB`, then `, unpacking: 250.0 MiB written` once
/// layers are being unpacked (a big layer may take a while after its
/// download).
fn progress_line(reference: &str, progress: &PullProgress) -> String {
    let mut line = format!(
        "pulling {reference}: {:.1}/{:.1} MiB",
        mib(progress.done_bytes),
        mib(progress.total_bytes)
    );
    let unpacking: Vec<&LayerProgress> = progress
        .layers
        .iter()
        .filter(|l| l.state == LayerState::Unpacking)
        .collect();
    if !unpacking.is_empty() {
        let written: u64 = unpacking.iter().map(|l| l.unpacked_bytes).sum();
        line.push_str(&format!(", unpacking: {:.1} MiB written", mib(written)));
    }
    line
}

#[async_trait]
impl ImagePuller for ImageStorePuller {
    async fn cached_layers(&self) -> Option<Vec<wharf_api::CachedLayer>> {
        let layers = self
            .store
            .cached_layers()
            .await
            .inspect_err(|err| tracing::warn!(error = %err, "reading the layer cache failed"))
            .ok()?;
        let layers = layers
            .into_iter()
            .map(|(digest, size_bytes)| wharf_api::CachedLayer {
                digest: digest.to_string(),
                size_bytes,
            });
        Some(layers.collect())
    }

    fn pulled_bytes(&self) -> Option<PullBytes> {
        Some(*self.pulled.lock().unwrap_or_else(|p| p.into_inner()))
    }

    async fn pull(
        &self,
        image: &str,
        policy: PullPolicy,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<Image, ContainerError> {
        let failed = ContainerError::ImagePull;
        let reference =
            ImageRef::parse_with_default_registry(image, self.default_registry.as_deref())
                .map_err(|e| failed(e.to_string()))?;
        let qualified = reference.to_string();
        let pulled = match policy {
            PullPolicy::Never => self.store.cached(&reference).await.ok_or_else(|| {
                failed(format!(
                    "image {qualified} is not on the node and imagePullPolicy is Never"
                ))
            })?,
            PullPolicy::IfNotPresent | PullPolicy::Always => {
                let policy = match policy {
                    PullPolicy::Always => wharf_image::PullPolicy::Always,
                    _ => wharf_image::PullPolicy::IfNotPresent,
                };
                let report = |p: PullProgress| progress(progress_line(&qualified, &p));
                self.store
                    .pull(&reference, self.credentials.as_ref(), policy, &report)
                    .await
                    .map_err(|e| failed(e.to_string()))?
            }
        };
        *self.pulled.lock().unwrap_or_else(|p| p.into_inner()) += pulled.bytes;
        let config = pulled.config;
        Ok(Image {
            pulled: pulled.bytes,
            layers: pulled.layers,
            process: ProcessDefaults {
                entrypoint: config.entrypoint,
                cmd: config.cmd,
                env: config.env,
                working_dir: config.working_dir,
                user: config.user,
            },
        })
    }

    async fn warm(
        &self,
        image: &str,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<u64, ContainerError> {
        let failed = ContainerError::ImagePull;
        let reference =
            ImageRef::parse_with_default_registry(image, self.default_registry.as_deref())
                .map_err(|e| failed(e.to_string()))?;
        let report = |p: PullProgress| progress(p.done_bytes, p.total_bytes);
        let pulled = self
            .store
            .pull(
                &reference,
                self.credentials.as_ref(),
                wharf_image::PullPolicy::IfNotPresent,
                &report,
            )
            .await
            .map_err(|e| failed(e.to_string()))?;
        // A preheat's bytes count with the pods' pulls, by origin.
        *self.pulled.lock().unwrap_or_else(|p| p.into_inner()) += pulled.bytes;
        Ok(pulled.size_bytes)
    }
}

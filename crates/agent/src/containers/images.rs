//! [`ImagePuller`] over the node's [`ImageStore`].

use std::sync::Arc;

use async_trait::async_trait;
use wharf_image::{ImageRef, ImageStore, PullProgress, RegistryCredentials};
use wharf_runc::spec::ProcessDefaults;

use super::driver::{Image, ImagePuller, PullPolicy};

/// Pulls with the node's registry credentials (a robot account's, usually)
/// into the shared layer cache.
pub struct ImageStorePuller {
    store: Arc<ImageStore>,
    credentials: Option<RegistryCredentials>,
    default_registry: Option<String>,
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
        }
    }

    /// `image` with the default registry in front when it names none.
    fn qualified(&self, image: &str) -> String {
        let first = image.split('/').next().unwrap_or_default();
        let names_host = image.contains('/')
            && (first.contains('.') || first.contains(':') || first == "localhost");
        match (&self.default_registry, names_host) {
            (Some(registry), false) => format!("{registry}/{image}"),
            _ => image.to_string(),
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

#[async_trait]
impl ImagePuller for ImageStorePuller {
    async fn pull(
        &self,
        image: &str,
        policy: PullPolicy,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<Image, String> {
        let qualified = self.qualified(image);
        let reference = ImageRef::parse(&qualified).map_err(|e| e.to_string())?;
        let pulled = match policy {
            PullPolicy::Never => self.store.cached(&reference).await.ok_or_else(|| {
                format!("image {qualified} is not on the node and imagePullPolicy is Never")
            })?,
            PullPolicy::IfNotPresent | PullPolicy::Always => {
                let policy = match policy {
                    PullPolicy::Always => wharf_image::PullPolicy::Always,
                    _ => wharf_image::PullPolicy::IfNotPresent,
                };
                let report = |p: PullProgress| {
                    progress(format!(
                        "pulling {qualified}: {:.1}/{:.1} MiB",
                        mib(p.done_bytes),
                        mib(p.total_bytes)
                    ))
                };
                self.store
                    .pull(&reference, self.credentials.as_ref(), policy, &report)
                    .await
                    .map_err(|e| e.to_string())?
            }
        };
        let config = pulled.config;
        Ok(Image {
            digest: pulled.manifest_digest.to_string(),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_without_a_host_go_to_the_default_registry() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = runtime
            .block_on(ImageStore::open(dir.path(), Default::default()))
            .unwrap();
        let puller = ImageStorePuller::new(Arc::new(store), None, Some("10.0.0.1:7700".into()));
        assert_eq!(puller.qualified("shop/web:1"), "10.0.0.1:7700/shop/web:1");
        assert_eq!(
            puller.qualified("127.0.0.1:7700/shop/web:1"),
            "127.0.0.1:7700/shop/web:1"
        );
        assert_eq!(
            puller.qualified("registry.example.com/a/b"),
            "registry.example.com/a/b"
        );
        assert_eq!(puller.qualified("localhost/a"), "localhost/a");
    }
}

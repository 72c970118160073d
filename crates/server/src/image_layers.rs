//! The layers of images this server's registry hosts, for the scheduler's
//! image locality. An image hosted anywhere else is unknown (neutral).

use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;
use wharf_control::{ImageLayers, Layer};
use wharf_oci::{ManifestKind, ParsedManifest, Reference, RepositoryName};
use wharf_registry::Registry;

/// Manifests followed from an index to the image for the nodes' platform.
const LINUX: &str = "linux";

/// Reads manifests from the local registry.
pub(crate) struct RegistryImageLayers {
    registry: Arc<Registry>,
    /// `host:port` of the public URL, if configured.
    public_authority: Option<String>,
    /// The port the server listens on, once bound: a reference naming it
    /// names this server from wherever a node reaches it.
    port: OnceLock<u16>,
}

impl RegistryImageLayers {
    pub(crate) fn new(registry: Arc<Registry>, public_url: Option<&str>) -> RegistryImageLayers {
        RegistryImageLayers {
            registry,
            public_authority: public_url.and_then(authority),
            port: OnceLock::new(),
        }
    }

    /// Records the port the listener got.
    pub(crate) fn listening_on(&self, port: u16) {
        let _ = self.port.set(port);
    }

    /// The repository and reference `image` names here, if it names this
    /// server: no registry host (the agents' default is this server), the
    /// public URL's, or one on the listener's port.
    fn local_part(&self, image: &str) -> Option<(RepositoryName, Reference)> {
        let path = match image.split_once('/') {
            Some((host, rest)) if looks_like_host(host) => {
                let ours = self.public_authority.as_deref() == Some(host)
                    || host
                        .rsplit_once(':')
                        .and_then(|(_, port)| port.parse::<u16>().ok())
                        .is_some_and(|port| self.port.get() == Some(&port));
                ours.then_some(rest)?
            }
            _ => image,
        };
        let (name, reference) = match path.split_once('@') {
            Some((name, digest)) => (name, digest),
            None => match path.rsplit_once(':') {
                Some((name, tag)) if !tag.contains('/') => (name, tag),
                _ => (path, "latest"),
            },
        };
        Some((name.parse().ok()?, reference.parse().ok()?))
    }

    async fn resolve(&self, image: &str) -> Option<Vec<Layer>> {
        let (repository, reference) = self.local_part(image)?;
        let mut manifest = self.manifest(&repository, &reference).await?;
        if manifest.kind == ManifestKind::Index {
            let child = manifest
                .manifests
                .iter()
                .find(|child| for_this_platform(child.platform.as_ref()))?;
            let child = Reference::Digest(child.digest.clone());
            manifest = self.manifest(&repository, &child).await?;
        }
        (manifest.kind == ManifestKind::Image).then(|| {
            manifest
                .layers
                .iter()
                .map(|layer| (layer.digest.to_string(), layer.size))
                .collect()
        })
    }

    async fn manifest(
        &self,
        repository: &RepositoryName,
        reference: &Reference,
    ) -> Option<ParsedManifest> {
        let content = self
            .registry
            .get_manifest(repository, reference, true)
            .await
            .ok()?;
        ParsedManifest::parse(Some(&content.media_type), content.bytes.as_deref()?).ok()
    }
}

impl ImageLayers for RegistryImageLayers {
    fn layers<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Option<Vec<Layer>>> {
        Box::pin(self.resolve(reference))
    }
}

/// Whether the first component of a reference is a registry host, as
/// docker reads it: it has a dot or a port, or is `localhost`.
fn looks_like_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

/// `host:port` of a URL (the port only if it has one).
fn authority(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next()?;
    (!authority.is_empty()).then(|| authority.to_string())
}

/// Whether an index entry is a Linux image for this machine's architecture
/// (the nodes of one cluster are assumed to share it); no platform counts.
fn for_this_platform(platform: Option<&serde_json::Value>) -> bool {
    let Some(platform) = platform else {
        return true;
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    platform["os"] == LINUX && platform["architecture"] == arch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_authorities_are_read_as_docker_does() {
        assert!(looks_like_host("127.0.0.1:7700"));
        assert!(looks_like_host("registry.example.com"));
        assert!(looks_like_host("localhost"));
        assert!(!looks_like_host("shop"));
        assert_eq!(
            authority("https://wharf.example.com:8443/x").as_deref(),
            Some("wharf.example.com:8443")
        );
        assert_eq!(authority("http://10.0.0.1").as_deref(), Some("10.0.0.1"));
    }

    #[test]
    fn index_entries_are_matched_to_linux_on_this_architecture() {
        assert!(for_this_platform(None));
        let arch = if cfg!(target_arch = "aarch64") {
            "arm64"
        } else {
            "amd64"
        };
        let ours = serde_json::json!({"os": "linux", "architecture": arch});
        assert!(for_this_platform(Some(&ours)));
        let other = serde_json::json!({"os": "windows", "architecture": arch});
        assert!(!for_this_platform(Some(&other)));
    }
}

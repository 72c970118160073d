//! The component flow's pinned Deployment specs in this server's registry:
//! an OCI artifact per spec (`artifactType`
//! `application/vnd.wharf.deployment.v1+yaml`, the empty config, the YAML
//! as its one layer), whose `subject` is the committed image, tagged
//! `<tag>.deployment` in the image's repository, so `oras discover` and the
//! referrers API find it next to the image. Pushes are announced to the
//! registry's event sinks (audit, replication) as a client's push is.

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Bytes;
use futures_util::StreamExt;
use serde_json::json;
use wharf_api::component_commit::SPEC_ARTIFACT_TYPE;
use wharf_control::SpecStore;
use wharf_oci::{Digest, DigestAlgorithm, ParsedManifest, Reference, RepositoryName};
use wharf_registry::Registry;
use wharf_registry::http::{EventKind, EventSink, RegistryEvent};

/// The OCI empty descriptor's content, `{}`.
const EMPTY_CONFIG: &[u8] = b"{}";
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The layer's media type: the YAML as it is.
const YAML_MEDIA_TYPE: &str = "application/yaml";
/// A spec is one Deployment: far below this.
const MAX_SPEC_BYTES: u64 = 1 << 20;

/// Stores and reads specs in the local registry.
pub(crate) struct RegistrySpecStore {
    registry: Arc<Registry>,
    events: Arc<dyn EventSink>,
}

impl RegistrySpecStore {
    pub(crate) fn new(registry: Arc<Registry>, events: Arc<dyn EventSink>) -> RegistrySpecStore {
        RegistrySpecStore { registry, events }
    }

    async fn push_blob(&self, repo: &RepositoryName, bytes: &[u8]) -> Result<Digest, String> {
        let digest = Digest::of(DigestAlgorithm::Sha256, bytes);
        let body =
            futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::copy_from_slice(bytes))]);
        self.registry
            .push_blob(repo, &digest, body)
            .await
            .map_err(|err| format!("pushing blob {digest} to {repo}: {err}"))?;
        Ok(digest)
    }

    async fn put(
        &self,
        repository: &str,
        tag: &str,
        subject: &str,
        yaml: &str,
        on_behalf_of: &str,
    ) -> Result<String, String> {
        let repo: RepositoryName = repository
            .parse()
            .map_err(|err| format!("repository {repository:?}: {err}"))?;
        let tag_reference: Reference = tag.parse().map_err(|err| format!("tag {tag:?}: {err}"))?;
        let subject_digest: Digest = subject
            .parse()
            .map_err(|err| format!("subject {subject:?}: {err}"))?;
        let image = self
            .registry
            .get_manifest(&repo, &Reference::Digest(subject_digest.clone()), false)
            .await
            .map_err(|err| format!("the committed image {repository}@{subject}: {err}"))?;
        let config = self.push_blob(&repo, EMPTY_CONFIG).await?;
        let layer = self.push_blob(&repo, yaml.as_bytes()).await?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "artifactType": SPEC_ARTIFACT_TYPE,
            "config": {
                "mediaType": EMPTY_MEDIA_TYPE,
                "digest": config.to_string(),
                "size": EMPTY_CONFIG.len(),
            },
            "layers": [{
                "mediaType": YAML_MEDIA_TYPE,
                "digest": layer.to_string(),
                "size": yaml.len(),
                "annotations": {"org.opencontainers.image.title": "deployment.yaml"},
            }],
            "subject": {
                "mediaType": image.media_type,
                "digest": image.digest.to_string(),
                "size": image.size,
            },
        });
        let body = Bytes::from(serde_json::to_vec(&manifest).expect("JSON serializes"));
        let pushed = self
            .registry
            .put_manifest(&repo, &tag_reference, Some(MANIFEST_MEDIA_TYPE), body)
            .await
            .map_err(|err| format!("pushing the spec {repository}:{tag}: {err}"))?;
        self.events.record(RegistryEvent {
            kind: EventKind::Push,
            repository: repo,
            reference: tag.to_string(),
            digest: Some(pushed.digest.clone()),
            actor: on_behalf_of.to_string(),
            source: None,
            origin: Some(pushed.origin),
            conflict: None,
            tag_moved: true,
        });
        Ok(pushed.digest.to_string())
    }

    async fn get(&self, repository: &str, digest: &str) -> Result<String, String> {
        let repo: RepositoryName = repository
            .parse()
            .map_err(|err| format!("repository {repository:?}: {err}"))?;
        let digest: Digest = digest
            .parse()
            .map_err(|err| format!("digest {digest:?}: {err}"))?;
        let content = self
            .registry
            .get_manifest(&repo, &Reference::Digest(digest.clone()), true)
            .await
            .map_err(|err| format!("spec {repository}@{digest}: {err}"))?;
        let bytes = content.bytes.unwrap_or_default();
        let manifest = ParsedManifest::parse(Some(&content.media_type), &bytes)
            .map_err(|err| format!("spec {repository}@{digest}: {err}"))?;
        if manifest.artifact_type.as_deref() != Some(SPEC_ARTIFACT_TYPE) {
            return Err(format!("{repository}@{digest} is not a deployment spec"));
        }
        let layer = manifest
            .layers
            .first()
            .ok_or_else(|| format!("spec {repository}@{digest} has no layer"))?;
        if layer.size > MAX_SPEC_BYTES {
            return Err(format!(
                "spec {repository}@{digest} is {} bytes, more than {MAX_SPEC_BYTES}",
                layer.size
            ));
        }
        let (_, _, mut body) = self
            .registry
            .get_blob(&repo, &layer.digest, |_| Ok(None))
            .await
            .map_err(|err| format!("spec layer {}: {err}", layer.digest))?;
        let mut yaml = Vec::with_capacity(layer.size as usize);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|err| format!("reading spec layer: {err}"))?;
            yaml.extend_from_slice(&chunk);
        }
        String::from_utf8(yaml).map_err(|_| format!("spec {repository}@{digest} is not UTF-8"))
    }
}

#[async_trait]
impl SpecStore for RegistrySpecStore {
    async fn put_spec(
        &self,
        repository: &str,
        tag: &str,
        subject: &str,
        yaml: &str,
        on_behalf_of: &str,
    ) -> Result<String, String> {
        self.put(repository, tag, subject, yaml, on_behalf_of).await
    }

    async fn get_spec(&self, repository: &str, digest: &str) -> Result<String, String> {
        self.get(repository, digest).await
    }
}

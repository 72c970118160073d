//! Filling the cache: one image (its manifest tree, then its blobs, then
//! its manifests, children first) or one blob, from the upstream into the
//! local registry.

use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use wharf_oci::manifest::Descriptor;
use wharf_oci::{Digest, ParsedManifest, Reference, RepositoryName};
use wharf_registry::RegistryError;
use wharf_registry::http::Caller;

use super::{ProxyFetch, PullThroughCache, Upstream, upstream_error};
use crate::access::Manifest;

/// Blobs of one image fetched at the same time.
const PARALLEL_BLOBS: usize = 4;
/// Index nesting followed at most (an index of indexes is already rare).
const MAX_DEPTH: usize = 4;

/// One pull's fetch from the upstream into `repo`.
pub(super) struct Fetch<'a> {
    pub cache: &'a PullThroughCache,
    pub caller: &'a Caller,
    pub repo: &'a RepositoryName,
    pub endpoint: &'a str,
    pub upstream: Arc<dyn Upstream>,
    pub upstream_repo: RepositoryName,
}

/// A manifest to store, and the blobs it needs.
struct Planned {
    manifest: Manifest,
    blobs: Vec<Descriptor>,
}

impl Fetch<'_> {
    /// Fetches the image `digest` and stores it under `reference`: every
    /// manifest of its tree the repository lacks is read first (they are
    /// small), the project's quota is checked for all of it, then the blobs
    /// are fetched, then the manifests stored, children first, the named
    /// one last. A failure before the last step leaves no manifest, and a
    /// quota refusal nothing at all.
    pub(super) async fn image(
        &self,
        reference: &Reference,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        let mut planned = Vec::new();
        self.plan(digest, 0, &mut planned).await?;
        let mut needed: Vec<(Digest, u64)> = Vec::new();
        for item in &planned {
            needed.push((
                item.manifest.digest.clone(),
                item.manifest.bytes.len() as u64,
            ));
            needed.extend(item.blobs.iter().map(|b| (b.digest.clone(), b.size)));
        }
        let registry = &self.cache.registry;
        registry.check_room(self.repo.project(), &needed).await?;
        let blobs: Vec<Digest> = planned
            .iter()
            .flat_map(|item| item.blobs.iter().map(|b| b.digest.clone()))
            .collect();
        futures_util::stream::iter(blobs)
            .map(|digest| async move { self.blob(&digest).await })
            .buffer_unordered(PARALLEL_BLOBS)
            .try_collect::<Vec<()>>()
            .await?;
        let last = planned.len().saturating_sub(1);
        for (i, item) in planned.into_iter().enumerate() {
            let manifest = item.manifest;
            let stored_as = match i == last {
                true => reference.clone(),
                false => Reference::Digest(manifest.digest.clone()),
            };
            let bytes = manifest.bytes.len() as u64;
            registry
                .put_manifest_from(
                    self.repo,
                    &stored_as,
                    Some(&manifest.media_type),
                    manifest.bytes,
                    None,
                )
                .await?;
            let resource = match &stored_as {
                Reference::Tag(tag) => format!("{}:{tag}", self.repo),
                Reference::Digest(digest) => format!("{}@{digest}", self.repo),
            };
            self.fetched(resource, &manifest.digest, bytes);
        }
        Ok(())
    }

    /// Reads the manifest `digest` and, for an index, its children the
    /// repository lacks; appends them to `out`, children before parents.
    async fn plan(
        &self,
        digest: &Digest,
        depth: usize,
        out: &mut Vec<Planned>,
    ) -> Result<(), RegistryError> {
        let manifest = self
            .upstream
            .manifest(&self.upstream_repo, digest)
            .await
            .map_err(|e| upstream_error(self.endpoint, e))?
            .ok_or_else(|| {
                RegistryError::ManifestUnknown(format!(
                    "{}@{digest}: the upstream endpoint {} has no {}@{digest}",
                    self.repo, self.endpoint, self.upstream_repo
                ))
            })?;
        // The upstream client checks this too; what the cache stores under
        // a digest must be that content whoever delivered it.
        if Digest::of(digest.algorithm(), &manifest.bytes) != *digest {
            return Err(self.corrupt(&format!("manifest {digest}")));
        }
        let parsed =
            ParsedManifest::parse(Some(&manifest.media_type), &manifest.bytes).map_err(|e| {
                RegistryError::Upstream(format!(
                    "endpoint {}: manifest {}@{digest} is not usable: {e}",
                    self.endpoint, self.upstream_repo
                ))
            })?;
        for child in parsed.child_manifests() {
            if depth >= MAX_DEPTH {
                return Err(RegistryError::Upstream(format!(
                    "endpoint {}: {}@{digest} nests indexes deeper than {MAX_DEPTH}",
                    self.endpoint, self.upstream_repo
                )));
            }
            if !self.cache.has_manifest(self.repo, &child.digest).await? {
                Box::pin(self.plan(&child.digest, depth + 1, out)).await?;
            }
        }
        let blobs = parsed.required_blobs().cloned().collect();
        out.push(Planned {
            manifest: Manifest {
                digest: digest.clone(),
                ..manifest
            },
            blobs,
        });
        Ok(())
    }

    /// Makes `digest` present in the repository: nothing if it is, a mount
    /// if another repository of the cache holds it, else a fetch from the upstream
    /// streamed into an upload that is published only if the content
    /// matches the digest. One fetch per digest at a time in this process:
    /// a concurrent pull waits for it and then finds the blob.
    pub(super) async fn blob(&self, digest: &Digest) -> Result<(), RegistryError> {
        let registry = &self.cache.registry;
        let _held = self.cache.locks.lock(format!("blob {digest}")).await;
        match registry.stat_blob(self.repo, digest).await {
            Ok(_) => return Ok(()),
            Err(RegistryError::BlobUnknown(_)) => {}
            Err(err) => return Err(err),
        }
        // Only from this cache's own repositories: a mount from another
        // project would hand its content to whoever names the digest here.
        for from in registry.repositories_holding(digest, 64).await? {
            if from != *self.repo
                && from.project() == self.repo.project()
                && registry
                    .mount_blob(self.repo, digest, &from)
                    .await?
                    .is_some()
            {
                return Ok(());
            }
        }
        let body = self
            .upstream
            .blob(&self.upstream_repo, digest)
            .await
            .map_err(|e| upstream_error(self.endpoint, e))?;
        let stored =
            registry
                .push_blob(self.repo, digest, body)
                .await
                .map_err(|err| match err {
                    RegistryError::DigestInvalid(_) => self.corrupt(&format!("blob {digest}")),
                    // The upstream's stream broke off (a cut connection).
                    RegistryError::BlobUploadInvalid(message) => RegistryError::Upstream(format!(
                        "endpoint {}: reading blob {digest} of {}: {message}",
                        self.endpoint, self.upstream_repo
                    )),
                    other => other,
                })?;
        self.fetched(format!("{}@{digest}", self.repo), digest, stored.size);
        Ok(())
    }

    fn corrupt(&self, what: &str) -> RegistryError {
        RegistryError::Upstream(format!(
            "endpoint {} sent {what} of {} with content that does not match the digest; \
             nothing was stored",
            self.endpoint, self.upstream_repo
        ))
    }

    fn fetched(&self, resource: String, digest: &Digest, bytes: u64) {
        self.cache.report(ProxyFetch {
            actor: self.caller.name.clone(),
            source: self.caller.source,
            endpoint: self.endpoint.to_string(),
            resource,
            digest: Some(digest.clone()),
            bytes,
            error: None,
        });
    }
}

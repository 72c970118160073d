//! Proxy cache projects: a project whose repositories are a pull-through
//! cache of another registry (a replication endpoint, with its sealed
//! credentials). `PROJECT/<path>` is `<path>` upstream, as in Harbor.
//!
//! [`PullThroughCache`] is the registry's [`PullThrough`] hook. On a miss
//! it fetches the manifest tree and, eagerly, every blob it needs, and
//! stores them with the registry's own writes: a blob is streamed into an
//! upload and published only once its digest checks out, and a manifest is
//! stored only when everything it references is, so a cached image is
//! complete and keeps being served when the upstream is down. (Lazy blobs,
//! as Harbor fetches them, would store manifests whose layers are not
//! there, which the registry's invariant and garbage collection forbid,
//! and an upstream outage would break half-cached images.) Cached content
//! is ordinary content: quotas (checked for the whole image before the
//! first byte is fetched), garbage collection and the audit log apply.
//!
//! A tag is served from the cache for the project's TTL after it was last
//! checked, then checked again with a HEAD upstream; a changed digest is
//! fetched, an unreachable upstream leaves the cached tag served (stale,
//! with a log line). By digest, cached content never needs the upstream.
//! One fetch per blob and per tag at a time ([`locks::KeyedLocks`]):
//! concurrent pulls wait for it and then find the content stored.

mod fill;
mod locks;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use wharf_oci::{Digest, Reference, RepositoryName, Tag};
use wharf_registry::http::{Caller, PullThrough};
use wharf_registry::{Registry, RegistryError};

use crate::access::{ByteStream, Manifest, RegistryAccess};
use crate::{LocalRegistry, RemoteRegistry, Replication, ReplicationError};

/// What makes a project a proxy cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySettings {
    /// The replication endpoint it pulls from.
    pub endpoint: String,
    /// How long a cached tag is served before it is checked again.
    pub ttl: Duration,
}

/// Where the cache learns which projects are proxies (the server keeps
/// projects; this crate does not).
#[async_trait]
pub trait ProxyProjects: Send + Sync + 'static {
    /// `project`'s proxy settings; `None` for an ordinary or unknown one.
    async fn settings(&self, project: &str) -> Result<Option<ProxySettings>, RegistryError>;
}

/// What the cache needs of an upstream registry.
#[async_trait]
pub trait Upstream: Send + Sync {
    /// The digest `tag` points at (a HEAD), `None` if it does not exist.
    async fn head(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<Digest>, ReplicationError>;

    /// A manifest by digest, checked against it; `None` if absent.
    async fn manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<Manifest>, ReplicationError>;

    /// Streams a blob.
    async fn blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<ByteStream, ReplicationError>;
}

/// Anything the copier can read is an upstream: a remote registry in
/// production, this process's own registry in tests.
macro_rules! upstream_via_access {
    ($ty:ty) => {
        #[async_trait]
        impl Upstream for $ty {
            async fn head(
                &self,
                repo: &RepositoryName,
                tag: &Tag,
            ) -> Result<Option<Digest>, ReplicationError> {
                Ok(RegistryAccess::tag(self, repo, tag)
                    .await?
                    .map(|t| t.digest))
            }

            async fn manifest(
                &self,
                repo: &RepositoryName,
                digest: &Digest,
            ) -> Result<Option<Manifest>, ReplicationError> {
                RegistryAccess::manifest(self, repo, digest.as_str()).await
            }

            async fn blob(
                &self,
                repo: &RepositoryName,
                digest: &Digest,
            ) -> Result<ByteStream, ReplicationError> {
                self.read_blob(repo, digest, 0).await
            }
        }
    };
}
upstream_via_access!(RemoteRegistry);
upstream_via_access!(LocalRegistry);

/// Gives the upstream client of an endpoint.
#[async_trait]
pub trait Upstreams: Send + Sync + 'static {
    /// The client for `endpoint`, with its unsealed credentials.
    async fn upstream(&self, endpoint: &str) -> Result<Arc<dyn Upstream>, ReplicationError>;
}

#[async_trait]
impl Upstreams for Replication {
    async fn upstream(&self, endpoint: &str) -> Result<Arc<dyn Upstream>, ReplicationError> {
        let connection = self.inner.connections.connect(endpoint).await?;
        Ok(connection.client.clone())
    }
}

/// One fetch from an upstream, for the audit log.
#[derive(Clone, Debug)]
pub struct ProxyFetch {
    /// Who pulled.
    pub actor: String,
    /// From where.
    pub source: Option<IpAddr>,
    /// The endpoint fetched from.
    pub endpoint: String,
    /// Where it was stored: `repo:tag`, `repo@digest`.
    pub resource: String,
    /// The manifest or blob stored (none when the fetch failed early).
    pub digest: Option<Digest>,
    /// Bytes stored.
    pub bytes: u64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// Receives every fetch (the server audits them). Must not block.
pub type FetchHook = Arc<dyn Fn(ProxyFetch) + Send + Sync>;

/// The pull-through cache: the [`PullThrough`] hook of the registry routes.
pub struct PullThroughCache {
    registry: Arc<Registry>,
    projects: Arc<dyn ProxyProjects>,
    upstreams: Arc<dyn Upstreams>,
    fetched: Option<FetchHook>,
    locks: locks::KeyedLocks,
    /// When each cached tag (`repo:tag`) was last checked upstream. In
    /// memory: after a restart, each tag is checked once more.
    checked: Mutex<HashMap<String, Instant>>,
}

impl PullThroughCache {
    /// A cache storing into `registry`, for the projects `projects` calls
    /// proxies, reaching their endpoints through `upstreams`.
    pub fn new(
        registry: Arc<Registry>,
        projects: Arc<dyn ProxyProjects>,
        upstreams: Arc<dyn Upstreams>,
    ) -> PullThroughCache {
        PullThroughCache {
            registry,
            projects,
            upstreams,
            fetched: None,
            locks: locks::KeyedLocks::default(),
            checked: Mutex::new(HashMap::new()),
        }
    }

    /// Reports every fetch to `hook`.
    pub fn with_fetch_hook(mut self, hook: FetchHook) -> PullThroughCache {
        self.fetched = Some(hook);
        self
    }

    fn checked_within(&self, key: &str, ttl: Duration) -> bool {
        let checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        checked.get(key).is_some_and(|at| at.elapsed() < ttl)
    }

    fn mark_checked(&self, key: String, ttl: Duration) {
        let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        // Forget tags whose check expired, so the table stays as large as
        // the set of tags pulled within a TTL.
        if checked.len() > 4096 {
            checked.retain(|_, at| at.elapsed() < ttl);
        }
        checked.insert(key, Instant::now());
    }

    async fn has_manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let reference = Reference::Digest(digest.clone());
        match self.registry.get_manifest(repo, &reference, false).await {
            Ok(_) => Ok(true),
            Err(RegistryError::ManifestUnknown(_)) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// A fetch for `caller` into `repo` from its project's upstream.
    async fn fetch<'a>(
        &'a self,
        caller: &'a Caller,
        repo: &'a RepositoryName,
        settings: &'a ProxySettings,
    ) -> Result<fill::Fetch<'a>, RegistryError> {
        let upstream_repo = upstream_repository(repo)?;
        let upstream = self
            .upstreams
            .upstream(&settings.endpoint)
            .await
            .map_err(|e| upstream_error(&settings.endpoint, e))?;
        Ok(fill::Fetch {
            cache: self,
            caller,
            repo,
            endpoint: &settings.endpoint,
            upstream,
            upstream_repo,
        })
    }

    async fn manifest_by_digest(
        &self,
        caller: &Caller,
        repo: &RepositoryName,
        settings: &ProxySettings,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        if self.has_manifest(repo, digest).await? {
            return Ok(());
        }
        let _held = self.locks.lock(format!("{repo}@{digest}")).await;
        if self.has_manifest(repo, digest).await? {
            return Ok(());
        }
        let fetch = self.fetch(caller, repo, settings).await;
        let resource = format!("{repo}@{digest}");
        let result = match fetch {
            Ok(fetch) => {
                fetch
                    .image(&Reference::Digest(digest.clone()), digest)
                    .await
            }
            Err(err) => Err(err),
        };
        if let Err(err) = &result {
            self.report_failure(caller, settings, resource, err);
        }
        result
    }

    async fn manifest_by_tag(
        &self,
        caller: &Caller,
        repo: &RepositoryName,
        settings: &ProxySettings,
        tag: &Tag,
    ) -> Result<(), RegistryError> {
        let key = format!("{repo}:{tag}");
        if self.checked_within(&key, settings.ttl)
            && self.registry.tag_origin(repo, tag).await?.is_some()
        {
            return Ok(());
        }
        let _held = self.locks.lock(key.clone()).await;
        let cached = self.registry.tag_origin(repo, tag).await?.map(|(d, _)| d);
        if cached.is_some() && self.checked_within(&key, settings.ttl) {
            return Ok(());
        }
        let result = self
            .revalidate(caller, repo, settings, tag, cached.as_ref())
            .await;
        match (result, cached) {
            (Ok(()), _) => {
                self.mark_checked(key, settings.ttl);
                Ok(())
            }
            (Err(err), Some(cached)) if serves_stale(&err) => {
                tracing::warn!(
                    repository = %repo, %tag, digest = %cached, endpoint = %settings.endpoint,
                    error = %err,
                    "proxy cache: serving the cached tag, stale: the upstream could not be checked"
                );
                self.report_failure(caller, settings, key.clone(), &err);
                // Checked, though unsuccessfully: the next try comes after
                // the TTL, so an outage does not slow every pull.
                self.mark_checked(key, settings.ttl);
                Ok(())
            }
            (Err(err), _) => {
                self.report_failure(caller, settings, key, &err);
                Err(err)
            }
        }
    }

    /// Asks the upstream where `tag` points; fetches the image if that is
    /// not what is cached.
    async fn revalidate(
        &self,
        caller: &Caller,
        repo: &RepositoryName,
        settings: &ProxySettings,
        tag: &Tag,
        cached: Option<&Digest>,
    ) -> Result<(), RegistryError> {
        let fetch = self.fetch(caller, repo, settings).await?;
        let current = fetch
            .upstream
            .head(&fetch.upstream_repo, tag)
            .await
            .map_err(|e| upstream_error(&settings.endpoint, e))?;
        match current {
            Some(current) if Some(&current) == cached => Ok(()),
            Some(current) => fetch.image(&Reference::Tag(tag.clone()), &current).await,
            None => Err(RegistryError::ManifestUnknown(format!(
                "{repo}:{tag}: the upstream endpoint {} has no {}:{tag}",
                settings.endpoint, fetch.upstream_repo
            ))),
        }
    }

    fn report(&self, fetch: ProxyFetch) {
        if let Some(hook) = &self.fetched {
            hook(fetch);
        }
    }

    fn report_failure(
        &self,
        caller: &Caller,
        settings: &ProxySettings,
        resource: String,
        err: &RegistryError,
    ) {
        self.report(ProxyFetch {
            actor: caller.name.clone(),
            source: caller.source,
            endpoint: settings.endpoint.clone(),
            resource,
            digest: None,
            bytes: 0,
            error: Some(err.to_string()),
        });
    }
}

/// Errors after which a cached tag is served as it is: the upstream could
/// not be asked, or no longer has the tag. Others (a quota, the local
/// store) reach the client.
fn serves_stale(err: &RegistryError) -> bool {
    matches!(
        err,
        RegistryError::Upstream(_) | RegistryError::ManifestUnknown(_)
    )
}

/// `PROJECT/<path>` caches `<path>` upstream.
fn upstream_repository(repo: &RepositoryName) -> Result<RepositoryName, RegistryError> {
    repo.as_str()
        .split_once('/')
        .and_then(|(_, path)| path.parse().ok())
        .ok_or_else(|| {
            RegistryError::NameUnknown(format!(
                "{repo}: repositories of a proxy cache project are {}/<upstream repository>",
                repo.project()
            ))
        })
}

/// An upstream's failure as the client sees it, naming the endpoint.
fn upstream_error(endpoint: &str, err: ReplicationError) -> RegistryError {
    match err {
        ReplicationError::Registry(err) => err,
        ReplicationError::Remote { message, .. } => {
            RegistryError::Upstream(format!("endpoint {endpoint}: {message}"))
        }
        other => RegistryError::Upstream(format!("endpoint {endpoint}: {other}")),
    }
}

#[async_trait]
impl PullThrough for PullThroughCache {
    async fn manifest(
        &self,
        caller: &Caller,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<(), RegistryError> {
        let Some(settings) = self.projects.settings(repo.project()).await? else {
            return Ok(());
        };
        match reference {
            Reference::Digest(digest) => {
                self.manifest_by_digest(caller, repo, &settings, digest)
                    .await
            }
            Reference::Tag(tag) => self.manifest_by_tag(caller, repo, &settings, tag).await,
        }
    }

    async fn blob(
        &self,
        caller: &Caller,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        let Some(settings) = self.projects.settings(repo.project()).await? else {
            return Ok(());
        };
        match self.registry.stat_blob(repo, digest).await {
            Ok(_) => return Ok(()),
            Err(RegistryError::BlobUnknown(_)) => {}
            Err(err) => return Err(err),
        }
        let result = match self.fetch(caller, repo, &settings).await {
            Ok(fetch) => fetch.blob(digest).await,
            Err(err) => Err(err),
        };
        if let Err(err) = &result {
            self.report_failure(caller, &settings, format!("{repo}@{digest}"), err);
        }
        result
    }

    async fn check_write(&self, repo: &RepositoryName) -> Result<(), RegistryError> {
        match self.projects.settings(repo.project()).await? {
            None => Ok(()),
            Some(settings) => Err(RegistryError::Denied(format!(
                "project {} is a proxy cache of endpoint {}: it takes no pushes or deletes; \
                 push to the upstream registry instead",
                repo.project(),
                settings.endpoint
            ))),
        }
    }
}

//! The cache against an upstream that is a real registry in this process,
//! behind a switch that takes it down, corrupts its blobs or slows them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::json;
use wharf_blob::BlobStore;
use wharf_oci::{Digest, DigestAlgorithm, Reference, RepositoryName, Tag};
use wharf_registry::http::{Caller, Gate, NoEvents, OpenAccess, PullThrough};
use wharf_registry::{QuotaSource, Registry, RegistryConfig, RegistryError, Unlimited};
use wharf_store::{RedbStore, RedbStoreOptions};
use wharf_testkit::http::{Method, Request, StatusCode, send};

use super::*;

fn registry(dir: &std::path::Path, quotas: Arc<dyn QuotaSource>) -> Arc<Registry> {
    let store =
        Arc::new(RedbStore::open(&dir.join("state.redb"), RedbStoreOptions::default()).unwrap());
    let blobs = BlobStore::open(dir.join("blobs")).unwrap();
    Arc::new(Registry::new(store, blobs, RegistryConfig::default()).with_quotas(quotas))
}

/// A registry with switches.
struct TestUpstream {
    inner: LocalRegistry,
    down: AtomicBool,
    corrupt: AtomicBool,
    blob_reads: AtomicUsize,
    heads: AtomicUsize,
    blob_delay: Duration,
}

#[async_trait]
impl Upstream for TestUpstream {
    async fn head(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<Digest>, ReplicationError> {
        self.check_up()?;
        self.heads.fetch_add(1, Ordering::SeqCst);
        Upstream::head(&self.inner, repo, tag).await
    }

    async fn manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<Manifest>, ReplicationError> {
        self.check_up()?;
        Upstream::manifest(&self.inner, repo, digest).await
    }

    async fn blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<ByteStream, ReplicationError> {
        self.check_up()?;
        self.blob_reads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.blob_delay).await;
        let body = Upstream::blob(&self.inner, repo, digest).await?;
        if !self.corrupt.load(Ordering::SeqCst) {
            return Ok(body);
        }
        // Same length, one byte flipped.
        Ok(body
            .map(|chunk| {
                chunk.map(|bytes| {
                    let mut bytes = bytes.to_vec();
                    if let Some(first) = bytes.first_mut() {
                        *first ^= 0xff;
                    }
                    Bytes::from(bytes)
                })
            })
            .boxed())
    }
}

impl TestUpstream {
    fn check_up(&self) -> Result<(), ReplicationError> {
        match self.down.load(Ordering::SeqCst) {
            true => Err(ReplicationError::Remote {
                endpoint: "hub".into(),
                message: "error sending request: connection refused".into(),
                permanent: false,
            }),
            false => Ok(()),
        }
    }
}

struct OneUpstream(Arc<TestUpstream>);

#[async_trait]
impl Upstreams for OneUpstream {
    async fn upstream(&self, endpoint: &str) -> Result<Arc<dyn Upstream>, ReplicationError> {
        assert_eq!(endpoint, "hub");
        Ok(self.0.clone())
    }
}

/// Project `cache` is a proxy of endpoint `hub`.
struct Projects(Duration);

#[async_trait]
impl ProxyProjects for Projects {
    async fn settings(&self, project: &str) -> Result<Option<ProxySettings>, RegistryError> {
        Ok((project == "cache").then(|| ProxySettings {
            endpoint: "hub".into(),
            ttl: self.0,
        }))
    }
}

struct Quota(u64);

#[async_trait]
impl QuotaSource for Quota {
    async fn quota(&self, project: &str) -> Option<u64> {
        (project == "cache").then_some(self.0)
    }
}

struct Setup {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    upstream_registry: Arc<Registry>,
    upstream: Arc<TestUpstream>,
    local: Arc<Registry>,
    cache: Arc<PullThroughCache>,
    fetches: Arc<std::sync::Mutex<Vec<ProxyFetch>>>,
}

fn setup(ttl: Duration, quota: Option<u64>, blob_delay: Duration) -> Setup {
    let (up_dir, local_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let upstream_registry = registry(up_dir.path(), Arc::new(Unlimited));
    let quotas: Arc<dyn QuotaSource> = match quota {
        Some(bytes) => Arc::new(Quota(bytes)),
        None => Arc::new(Unlimited),
    };
    let local = registry(local_dir.path(), quotas);
    let upstream = Arc::new(TestUpstream {
        inner: LocalRegistry::new(upstream_registry.clone(), None),
        down: AtomicBool::new(false),
        corrupt: AtomicBool::new(false),
        blob_reads: AtomicUsize::new(0),
        heads: AtomicUsize::new(0),
        blob_delay,
    });
    let fetches = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = fetches.clone();
    let cache = PullThroughCache::new(
        local.clone(),
        Arc::new(Projects(ttl)),
        Arc::new(OneUpstream(upstream.clone())),
    )
    .with_fetch_hook(Arc::new(move |fetch| seen.lock().unwrap().push(fetch)));
    Setup {
        _dirs: (up_dir, local_dir),
        upstream_registry,
        upstream,
        local,
        cache: Arc::new(cache),
        fetches,
    }
}

fn caller() -> Caller {
    Caller {
        name: "alice".into(),
        source: None,
        context: Arc::new(()),
    }
}

fn name(s: &str) -> RepositoryName {
    s.parse().unwrap()
}

fn tag(s: &str) -> Reference {
    Reference::Tag(s.parse().unwrap())
}

/// Pushes an image of one layer (`layer` bytes) under `library/app:<tag>`
/// upstream; returns the manifest and layer digests.
async fn push_image(registry: &Registry, reference: &str, layer: &[u8]) -> (Digest, Digest) {
    let repo = &name("library/app");
    let push = |bytes: Vec<u8>| async move {
        let digest = Digest::of(DigestAlgorithm::Sha256, &bytes);
        let body = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(bytes))]);
        registry.push_blob(repo, &digest, body).await.unwrap();
        digest
    };
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let (config_len, layer_len) = (config.len(), layer.len());
    let config = push(config).await;
    let layer_digest = push(layer.to_vec()).await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config, "size": config_len},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer_len}],
    });
    let pushed = registry
        .put_manifest(
            repo,
            &tag(reference),
            Some("application/vnd.oci.image.manifest.v1+json"),
            Bytes::from(serde_json::to_vec(&manifest).unwrap()),
        )
        .await
        .unwrap();
    (pushed.digest, layer_digest)
}

async fn pull_tag(s: &Setup, reference: &str) -> Result<Digest, RegistryError> {
    let repo = name("cache/library/app");
    s.cache.manifest(&caller(), &repo, &tag(reference)).await?;
    Ok(s.local
        .get_manifest(&repo, &tag(reference), false)
        .await?
        .digest)
}

#[tokio::test]
async fn first_pull_stores_the_image_later_pulls_are_local_and_a_tag_is_rechecked_after_its_ttl() {
    let s = setup(Duration::from_millis(300), None, Duration::ZERO);
    let (v1, layer) = push_image(&s.upstream_registry, "v1", b"layer one").await;
    assert_eq!(pull_tag(&s, "v1").await.unwrap(), v1);
    // Stored whole: the layer is local, under the cache's repository.
    let repo = name("cache/library/app");
    assert_eq!(s.local.stat_blob(&repo, &layer).await.unwrap().size, 9);
    assert_eq!(s.upstream.blob_reads.load(Ordering::SeqCst), 2);
    let heads = s.upstream.heads.load(Ordering::SeqCst);
    // Within the TTL: no upstream call at all.
    assert_eq!(pull_tag(&s, "v1").await.unwrap(), v1);
    assert_eq!(s.upstream.heads.load(Ordering::SeqCst), heads);
    // The tag moves upstream; within the TTL the cache still says v1.
    let (v2, _) = push_image(&s.upstream_registry, "v1", b"layer two").await;
    assert_eq!(pull_tag(&s, "v1").await.unwrap(), v1);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(pull_tag(&s, "v1").await.unwrap(), v2);
    assert_eq!(s.upstream.heads.load(Ordering::SeqCst), heads + 1);
    // The old image is still there by digest, with no upstream call.
    s.upstream.down.store(true, Ordering::SeqCst);
    let by_digest = Reference::Digest(v1.clone());
    s.cache
        .manifest(&caller(), &repo, &by_digest)
        .await
        .unwrap();
    // Every fetch was reported, naming the endpoint and what was stored.
    let fetches = s.fetches.lock().unwrap();
    assert!(
        fetches
            .iter()
            .all(|f| f.endpoint == "hub" && f.actor == "alice")
    );
    assert!(
        fetches
            .iter()
            .any(|f| f.resource == "cache/library/app:v1" && f.digest.as_ref() == Some(&v2))
    );
}

#[tokio::test]
async fn cached_tags_are_served_stale_when_the_upstream_is_down_and_uncached_ones_name_it() {
    let s = setup(Duration::ZERO, None, Duration::ZERO);
    let (v1, _) = push_image(&s.upstream_registry, "v1", b"layer one").await;
    push_image(&s.upstream_registry, "v2", b"layer two").await;
    assert_eq!(pull_tag(&s, "v1").await.unwrap(), v1);
    s.upstream.down.store(true, Ordering::SeqCst);
    // TTL zero: every pull asks; the upstream is down: the cached tag is served.
    assert_eq!(pull_tag(&s, "v1").await.unwrap(), v1);
    let err = pull_tag(&s, "v2").await.unwrap_err();
    assert!(matches!(err, RegistryError::Upstream(_)), "{err}");
    assert!(err.to_string().contains("endpoint hub"), "{err}");
    assert!(err.to_string().contains("connection refused"), "{err}");
    // The failures are reported too.
    let fetches = s.fetches.lock().unwrap();
    assert!(fetches.iter().any(|f| {
        f.resource == "cache/library/app:v2"
            && f.error
                .as_deref()
                .is_some_and(|e| e.contains("endpoint hub"))
    }));
}

#[tokio::test]
async fn concurrent_pulls_of_one_blob_fetch_it_once() {
    let s = setup(Duration::from_secs(60), None, Duration::from_millis(200));
    let (_, layer) = push_image(&s.upstream_registry, "v1", b"a layer many want").await;
    let repo = name("cache/library/app");
    let pulls = (0..8).map(|_| {
        let cache = s.cache.clone();
        let (repo, layer) = (repo.clone(), layer.clone());
        tokio::spawn(async move { cache.blob(&caller(), &repo, &layer).await })
    });
    for pull in futures_util::future::join_all(pulls).await {
        pull.unwrap().unwrap();
    }
    assert_eq!(s.upstream.blob_reads.load(Ordering::SeqCst), 1);
    assert_eq!(s.local.stat_blob(&repo, &layer).await.unwrap().size, 17);
    assert_eq!(s.cache.locks.len(), 0);
}

#[tokio::test]
async fn content_that_does_not_match_its_digest_is_refused_and_nothing_is_stored() {
    let s = setup(Duration::from_secs(60), None, Duration::ZERO);
    push_image(&s.upstream_registry, "v1", b"layer one").await;
    s.upstream.corrupt.store(true, Ordering::SeqCst);
    let err = pull_tag(&s, "v1").await.unwrap_err();
    assert!(matches!(err, RegistryError::Upstream(_)), "{err}");
    assert!(
        err.to_string().contains("does not match the digest"),
        "{err}"
    );
    assert!(err.to_string().contains("endpoint hub"), "{err}");
    // No manifest, no blob, no bytes charged to the project.
    let repo = name("cache/library/app");
    assert!(
        s.local
            .get_manifest(&repo, &tag("v1"), false)
            .await
            .is_err()
    );
    assert!(!s.local.project_has_repositories("cache").await.unwrap());
    assert_eq!(s.local.usage("cache").await.unwrap(), 0);
    // Healed upstream: the next pull stores it.
    s.upstream.corrupt.store(false, Ordering::SeqCst);
    pull_tag(&s, "v1").await.unwrap();
}

#[tokio::test]
async fn a_pull_over_the_quota_fails_with_the_quota_error_and_stores_nothing() {
    let s = setup(Duration::from_secs(60), Some(1000), Duration::ZERO);
    let (small, _) = push_image(&s.upstream_registry, "small", &[1u8; 100]).await;
    push_image(&s.upstream_registry, "big", &[2u8; 2000]).await;
    assert_eq!(pull_tag(&s, "small").await.unwrap(), small);
    let before = s.local.usage("cache").await.unwrap();
    let reads = s.upstream.blob_reads.load(Ordering::SeqCst);
    let err = pull_tag(&s, "big").await.unwrap_err();
    assert!(matches!(err, RegistryError::QuotaExceeded { .. }), "{err}");
    assert!(
        err.to_string().contains("quota exceeded for project cache"),
        "{err}"
    );
    // Refused before the first byte: nothing fetched, nothing stored.
    assert_eq!(s.upstream.blob_reads.load(Ordering::SeqCst), reads);
    assert_eq!(s.local.usage("cache").await.unwrap(), before);
}

#[tokio::test]
async fn clients_cannot_push_or_delete_in_a_proxy_project_but_pull_through_it() {
    let s = setup(Duration::from_secs(60), None, Duration::ZERO);
    let (v1, layer) = push_image(&s.upstream_registry, "v1", b"layer one").await;
    let gate = Gate {
        authorizer: Arc::new(OpenAccess),
        events: Arc::new(NoEvents),
        pull_through: s.cache.clone(),
    };
    let router = wharf_registry::http::router(s.local.clone(), gate);
    let request = |method: Method, uri: &str| {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap()
    };
    // A pull through the routes: manifest, then its layer.
    let reply = send(
        &router,
        request(Method::GET, "/v2/cache/library/app/manifests/v1"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("Docker-Content-Digest"), v1.as_str());
    let uri = format!("/v2/cache/library/app/blobs/{layer}");
    let reply = send(&router, request(Method::GET, &uri)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(&reply.body[..], b"layer one");
    // Writes by clients are refused, naming the project and its endpoint.
    for (method, uri) in [
        (
            Method::POST,
            "/v2/cache/library/app/blobs/uploads/".to_string(),
        ),
        (
            Method::PUT,
            "/v2/cache/library/app/manifests/v2".to_string(),
        ),
        (
            Method::DELETE,
            "/v2/cache/library/app/manifests/v1".to_string(),
        ),
        (Method::DELETE, uri.clone()),
    ] {
        let reply = send(&router, request(method.clone(), &uri)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {uri}");
        let message = reply.json()["errors"][0]["message"].to_string();
        assert!(message.contains("proxy cache of endpoint hub"), "{message}");
    }
    // Still there; an ordinary project takes pushes as before.
    let reply = send(
        &router,
        request(Method::GET, "/v2/cache/library/app/manifests/v1"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = send(
        &router,
        request(Method::POST, "/v2/other/app/blobs/uploads/"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    // A repository outside any upstream path is refused with its reason.
    let err = s
        .cache
        .manifest(&caller(), &name("cache"), &tag("v1"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("cache/<upstream repository>"),
        "{err}"
    );
}

#[tokio::test]
async fn a_deleted_upstream_tag_leaves_the_cached_one_and_unknown_tags_say_so() {
    let s = setup(Duration::ZERO, None, Duration::ZERO);
    let (v1, _) = push_image(&s.upstream_registry, "v1", b"layer one").await;
    assert_eq!(pull_tag(&s, "v1").await.unwrap(), v1);
    s.upstream_registry
        .delete_manifest(&name("library/app"), &tag("v1"))
        .await
        .unwrap();
    assert_eq!(pull_tag(&s, "v1").await.unwrap(), v1);
    let err = pull_tag(&s, "nope").await.unwrap_err();
    assert!(matches!(err, RegistryError::ManifestUnknown(_)), "{err}");
    assert!(
        err.to_string()
            .contains("upstream endpoint hub has no library/app:nope"),
        "{err}"
    );
}

#[tokio::test]
async fn concurrent_pulls_of_one_tag_check_and_fetch_it_once() {
    let s = Arc::new(setup(
        Duration::from_secs(60),
        None,
        Duration::from_millis(100),
    ));
    let (v1, _) = push_image(&s.upstream_registry, "v1", b"layer one").await;
    let pulls = (0..8).map(|_| {
        let s = s.clone();
        tokio::spawn(async move { pull_tag(&s, "v1").await })
    });
    for pull in futures_util::future::join_all(pulls).await {
        assert_eq!(pull.unwrap().unwrap(), v1);
    }
    assert_eq!(s.upstream.heads.load(Ordering::SeqCst), 1);
    assert_eq!(s.upstream.blob_reads.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_index_is_stored_with_every_child_and_blob() {
    let s = setup(Duration::from_secs(60), None, Duration::ZERO);
    let (amd64, amd64_layer) = push_image(&s.upstream_registry, "amd64", b"amd64 layer").await;
    let (arm64, arm64_layer) = push_image(&s.upstream_registry, "arm64", b"arm64 layer").await;
    let upstream_repo = name("library/app");
    let mut children = Vec::new();
    for (digest, arch) in [(&amd64, "amd64"), (&arm64, "arm64")] {
        let size = s
            .upstream_registry
            .get_manifest(&upstream_repo, &Reference::Digest(digest.clone()), false)
            .await
            .unwrap()
            .size;
        children.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": size,
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": children,
    });
    let pushed = s
        .upstream_registry
        .put_manifest(
            &upstream_repo,
            &tag("multi"),
            Some("application/vnd.oci.image.index.v1+json"),
            Bytes::from(serde_json::to_vec(&index).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(pull_tag(&s, "multi").await.unwrap(), pushed.digest);
    let repo = name("cache/library/app");
    for (digest, layer) in [(&amd64, &amd64_layer), (&arm64, &arm64_layer)] {
        let by_digest = Reference::Digest(digest.clone());
        assert!(s.local.get_manifest(&repo, &by_digest, false).await.is_ok());
        assert!(s.local.stat_blob(&repo, layer).await.is_ok());
    }
}

#[tokio::test]
async fn content_of_other_projects_is_never_handed_out_through_the_cache() {
    let s = setup(Duration::from_secs(60), None, Duration::ZERO);
    // A private project here holds a blob the upstream does not have.
    let secret = b"private layer".to_vec();
    let digest = Digest::of(DigestAlgorithm::Sha256, &secret);
    let body = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(secret))]);
    s.local
        .push_blob(&name("private/app"), &digest, body)
        .await
        .unwrap();
    let repo = name("cache/library/app");
    let err = s.cache.blob(&caller(), &repo, &digest).await.unwrap_err();
    assert!(s.local.stat_blob(&repo, &digest).await.is_err(), "{err}");
    // A blob another repository of the cache holds is mounted, not
    // fetched again.
    let (_, layer) = push_image(&s.upstream_registry, "v1", b"shared layer").await;
    s.cache.blob(&caller(), &repo, &layer).await.unwrap();
    let reads = s.upstream.blob_reads.load(Ordering::SeqCst);
    let other = name("cache/other/app");
    let settings = ProxySettings {
        endpoint: "hub".into(),
        ttl: Duration::from_secs(60),
    };
    let alice = caller();
    let fetch = s.cache.fetch(&alice, &other, &settings).await.unwrap();
    fetch.blob(&layer).await.unwrap();
    assert_eq!(s.upstream.blob_reads.load(Ordering::SeqCst), reads);
    assert!(s.local.stat_blob(&other, &layer).await.is_ok());
}

#[tokio::test]
async fn replication_does_not_write_into_a_proxy_project() {
    let s = setup(Duration::from_secs(60), None, Duration::ZERO);
    let mut local = LocalRegistry::new(s.local.clone(), None);
    local.proxies = Some(Arc::new(Projects(Duration::from_secs(60))));
    let cached = name("cache/library/app");
    let err = RegistryAccess::start_upload(&local, &cached)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("proxy cache of endpoint hub"),
        "{err}"
    );
    assert!(!err.is_retryable(), "{err}");
    let err = RegistryAccess::delete(&local, &cached, "v1", None)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("replication does not write"),
        "{err}"
    );
    assert!(
        RegistryAccess::start_upload(&local, &name("other/app"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn garbage_collection_applies_to_cached_images_and_the_cache_fills_again() {
    let s = setup(Duration::ZERO, None, Duration::ZERO);
    let (v1, old_layer) = push_image(&s.upstream_registry, "v1", b"old layer").await;
    assert_eq!(pull_tag(&s, "v1").await.unwrap(), v1);
    let (v2, _) = push_image(&s.upstream_registry, "v1", b"new layer").await;
    assert_eq!(pull_tag(&s, "v1").await.unwrap(), v2);
    let before = s.local.usage("cache").await.unwrap();
    let report = s
        .local
        .collect_garbage(wharf_registry::GcOptions {
            delete_untagged: true,
            ..wharf_registry::GcOptions::with_grace(Duration::ZERO)
        })
        .await
        .unwrap();
    assert_eq!(report.manifests_removed, 1, "{report:?}");
    assert!(report.blobs_removed >= 1, "{report:?}");
    let repo = name("cache/library/app");
    assert!(s.local.stat_blob(&repo, &old_layer).await.is_err());
    assert!(s.local.usage("cache").await.unwrap() < before);
    // Asked for by digest again: fetched again from the upstream.
    let by_digest = Reference::Digest(v1.clone());
    s.cache
        .manifest(&caller(), &repo, &by_digest)
        .await
        .unwrap();
    assert_eq!(s.local.stat_blob(&repo, &old_layer).await.unwrap().size, 9);
}

//! Shared helpers: a registry router over a temporary directory, driven in-process.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use wharf_blob::BlobStore;
use wharf_oci::{Digest, DigestAlgorithm};
use wharf_registry::http::Gate;
use wharf_registry::{Registry, RegistryConfig};
use wharf_store::{RedbStore, RedbStoreOptions};
pub use wharf_testkit::http::Reply;

pub struct TestRegistry {
    pub dir: tempfile::TempDir,
    pub registry: Arc<Registry>,
    /// The metadata store under the registry, for tests that look below it.
    pub store: Arc<RedbStore>,
    router: Router,
}

impl TestRegistry {
    pub fn new() -> TestRegistry {
        Self::with_config(RegistryConfig::default())
    }

    pub fn with_config(config: RegistryConfig) -> TestRegistry {
        Self::build(config, Arc::new(wharf_registry::Unlimited), Gate::open())
    }

    pub fn with_quotas(quotas: Arc<dyn wharf_registry::QuotaSource>) -> TestRegistry {
        Self::build(RegistryConfig::default(), quotas, Gate::open())
    }

    pub fn with_gate(gate: Gate) -> TestRegistry {
        Self::build(
            RegistryConfig::default(),
            Arc::new(wharf_registry::Unlimited),
            gate,
        )
    }

    pub fn with_config_and_gate(config: RegistryConfig, gate: Gate) -> TestRegistry {
        Self::build(config, Arc::new(wharf_registry::Unlimited), gate)
    }

    fn build(
        config: RegistryConfig,
        quotas: Arc<dyn wharf_registry::QuotaSource>,
        gate: Gate,
    ) -> TestRegistry {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            RedbStore::open(&dir.path().join("state.redb"), RedbStoreOptions::default()).unwrap(),
        );
        let blobs = BlobStore::open(dir.path().join("registry")).unwrap();
        let registry = Arc::new(Registry::new(store.clone(), blobs, config).with_quotas(quotas));
        let router = wharf_registry::http::router(registry.clone(), gate);
        TestRegistry {
            dir,
            registry,
            store,
            router,
        }
    }

    pub async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Body::from(body.into())).unwrap();
        wharf_testkit::http::send(&self.router, request).await
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.send(Method::GET, uri, &[], Bytes::new()).await
    }

    pub async fn head(&self, uri: &str) -> Reply {
        self.send(Method::HEAD, uri, &[], Bytes::new()).await
    }

    pub async fn delete(&self, uri: &str) -> Reply {
        self.send(Method::DELETE, uri, &[], Bytes::new()).await
    }

    /// Pushes a blob in one POST and returns its digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        let digest = sha256(data);
        self.send(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
            &[],
            Bytes::copy_from_slice(data),
        )
        .await
        .expect(StatusCode::CREATED);
        digest
    }

    /// Pushes a manifest and returns its digest.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &serde_json::Value,
    ) -> Digest {
        let bytes = serde_json::to_vec(body).unwrap();
        let reply = self
            .send(
                Method::PUT,
                &format!("/v2/{repo}/manifests/{reference}"),
                &[("content-type", media_type)],
                bytes.clone(),
            )
            .await
            .expect(StatusCode::CREATED);
        let digest = sha256(&bytes);
        assert_eq!(reply.header("docker-content-digest"), digest.as_str());
        digest
    }

    /// Pushes a config and one layer, then an image manifest referencing them.
    pub async fn push_image(
        &self,
        repo: &str,
        tag: &str,
        layer: &[u8],
    ) -> (Digest, serde_json::Value) {
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","layer":"{}"}}"#,
            sha256(layer)
        );
        let manifest = self.image_manifest(repo, config.as_bytes(), &[layer]).await;
        let digest = self.push_manifest(repo, tag, OCI_MANIFEST, &manifest).await;
        (digest, manifest)
    }

    /// Pushes the blobs of an image manifest and returns the manifest (not pushed).
    pub async fn image_manifest(
        &self,
        repo: &str,
        config: &[u8],
        layers: &[&[u8]],
    ) -> serde_json::Value {
        let config_digest = self.push_blob(repo, config).await;
        let mut layer_descriptors = Vec::new();
        for layer in layers {
            let digest = self.push_blob(repo, layer).await;
            layer_descriptors.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": digest,
                "size": layer.len(),
            }));
        }
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": layer_descriptors,
        })
    }

    /// Every file under the blob directory.
    pub fn blob_files(&self) -> Vec<std::path::PathBuf> {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.dir.path().join("registry").join("blobs"), &mut out);
        out
    }

    pub fn upload_dirs(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("registry").join("uploads"))
            .unwrap()
            .count()
    }
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

pub fn sha256(data: &[u8]) -> Digest {
    Digest::of(DigestAlgorithm::Sha256, data)
}

pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    let mut state = len as u64
        ^ 0x9E37_79B9_7F4A_7C15
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
    for byte in &mut data {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    data
}

pub const NO_GRACE: Duration = Duration::ZERO;

//! Nodes pulling through P2P: real image caches and piece servers on
//! loopback, a small registry that honours `Range` and counts what it
//! serves, and a control plane whose tracker makes the first node the seed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use bytes::Bytes;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::json;
use wharf_api::{Node, Pod, PodEventReport, PodStatus};
use wharf_image::{ImageRef, ImageStore, ImageStoreOptions, Platform, PullBytes, PullPolicy};
use wharf_oci::{Digest, DigestAlgorithm};
use wharf_p2p::wire::{PeerReport, PeerState, ServerKey, TaskAssignment, TaskRequest};
use wharf_p2p::{
    GRANT_AUDIENCE, PeerGrant, PeerInfo, PeerUpdate, PieceManifest, TrackerConfig, encode_grant,
};

use super::*;
use crate::api::{PodAccess, PodChanges, ServiceChanges};
use crate::service_view::ServiceView;

const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// One image, `shop/web:1`: a config and an uncompressed layer of a bit
/// more than one piece.
struct TestImage {
    manifest: Bytes,
    config: Bytes,
    layer: Bytes,
}

fn sha256(bytes: &[u8]) -> Digest {
    Digest::of(DigestAlgorithm::Sha256, bytes)
}

impl TestImage {
    fn new() -> TestImage {
        let content: Vec<u8> = (0..(5 << 20)).map(|i: u32| (i * 7 % 251) as u8).collect();
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, "srv/data.bin", &content[..])
            .unwrap();
        let layer = Bytes::from(tar.into_inner().unwrap());
        let config = json!({
            "architecture": Platform::host().architecture,
            "os": "linux",
            "config": {"Cmd": ["/bin/web"]},
            "rootfs": {"type": "layers", "diff_ids": [sha256(&layer).to_string()]},
        });
        let config = Bytes::from(serde_json::to_vec(&config).unwrap());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(&config).to_string(),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": LAYER_MEDIA_TYPE,
                "digest": sha256(&layer).to_string(),
                "size": layer.len(),
            }],
        });
        TestImage {
            manifest: Bytes::from(serde_json::to_vec(&manifest).unwrap()),
            config,
            layer,
        }
    }

    fn layer_digest(&self) -> Digest {
        sha256(&self.layer)
    }
}

/// The registry: anonymous pulls of `shop/web`, blob bytes counted.
struct Registry {
    image: TestImage,
    blob_bytes: AtomicU64,
}

async fn registry_manifest(State(registry): State<Arc<Registry>>) -> Response {
    (
        [(header::CONTENT_TYPE, MANIFEST_MEDIA_TYPE)],
        registry.image.manifest.clone(),
    )
        .into_response()
}

async fn registry_blob(
    State(registry): State<Arc<Registry>>,
    Path(digest): Path<String>,
    headers: HeaderMap,
) -> Response {
    let image = &registry.image;
    let blob = [&image.config, &image.layer]
        .into_iter()
        .find(|b| sha256(b).to_string() == digest);
    let Some(blob) = blob else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()));
    let (status, body) = match range {
        Some((first, last)) => (StatusCode::PARTIAL_CONTENT, blob.slice(first..=last)),
        None => (StatusCode::OK, blob.clone()),
    };
    registry
        .blob_bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    (status, body).into_response()
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, router).await });
    address
}

async fn start_registry() -> (Arc<Registry>, String) {
    let registry = Arc::new(Registry {
        image: TestImage::new(),
        blob_bytes: AtomicU64::new(0),
    });
    let router = Router::new()
        .route("/v2/", get(|| async { "{}" }))
        .route("/v2/shop/web/manifests/{reference}", get(registry_manifest))
        .route("/v2/shop/web/blobs/{digest}", get(registry_blob))
        .with_state(registry.clone());
    let host = serve(router).await;
    (registry, host)
}

/// The tracker as the server runs it (`wharf_p2p::Tracker`, its logic),
/// with the manifests and grants the server would make.
struct Tracker {
    key: SigningKey,
    manifests: HashMap<Digest, PieceManifest>,
    logic: Mutex<wharf_p2p::Tracker>,
    reports: Mutex<Vec<(String, PeerState)>>,
}

/// What the agents are told: report every 100 ms (stale after 300 ms).
const REPORT_INTERVAL: Duration = Duration::from_millis(100);

impl Tracker {
    fn new(image: &TestImage) -> Arc<Tracker> {
        let layer = &image.layer;
        let manifest = PieceManifest::compute(&sha256(layer), layer.len() as u64, &layer[..]);
        Arc::new(Tracker {
            key: SigningKey::from_bytes(&[3; 32]),
            manifests: HashMap::from([(sha256(layer), manifest.unwrap())]),
            logic: Mutex::new(wharf_p2p::Tracker::new(TrackerConfig::for_report_interval(
                REPORT_INTERVAL,
            ))),
            reports: Mutex::default(),
        })
    }

    fn assign(
        &self,
        node: &str,
        url: &str,
        digest: &Digest,
        update: PeerUpdate,
    ) -> Result<TaskAssignment, AgentError> {
        let manifest = self.manifests[digest].clone();
        let peer = PeerInfo {
            node: node.into(),
            url: Some(url.into()),
            idc: None,
            pool: None,
        };
        let assignment = self
            .logic
            .lock()
            .unwrap()
            .assign(peer, update, &manifest, std::time::Instant::now())
            .map_err(|e| AgentError::Api(e.to_string()))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let grant = PeerGrant {
            aud: GRANT_AUDIENCE.into(),
            sub: node.into(),
            blob: digest.clone(),
            iat: now,
            exp: now + 300,
        };
        Ok(TaskAssignment {
            grant: encode_grant(&grant, "k", |m| self.key.sign(m).to_bytes()),
            grant_expires_in: 300,
            manifest,
            parents: assignment.parents,
            neighbors: assignment.neighbors,
            back_to_source: assignment.back_to_source,
            report_interval_ms: REPORT_INTERVAL.as_millis() as u64,
        })
    }
}

/// One node's view of the control plane: only the tracker calls answer.
struct ControlPlane {
    node: String,
    url: String,
    tracker: Option<Arc<Tracker>>,
}

impl ControlPlane {
    fn tracker(&self) -> Result<&Arc<Tracker>, AgentError> {
        self.tracker
            .as_ref()
            .ok_or_else(|| AgentError::NotFound("404 Not Found".into()))
    }
}

#[async_trait]
impl NodeApi for ControlPlane {
    async fn p2p_key(&self) -> Result<ServerKey, AgentError> {
        let tracker = self.tracker()?;
        Ok(ServerKey {
            key_id: "k".into(),
            public_key: base64::engine::general_purpose::STANDARD
                .encode(tracker.key.verifying_key().as_bytes()),
        })
    }
    async fn p2p_task(&self, request: &TaskRequest) -> Result<TaskAssignment, AgentError> {
        let tracker = self.tracker()?;
        assert_eq!(request.repository, "shop/web");
        let pieces = tracker.manifests[&request.digest].piece_count();
        let update = PeerUpdate::starting(pieces);
        tracker.assign(&self.node, &self.url, &request.digest, update)
    }
    async fn p2p_report(&self, report: &PeerReport) -> Result<TaskAssignment, AgentError> {
        let tracker = self.tracker()?;
        let entry = (self.node.clone(), report.state);
        tracker.reports.lock().unwrap().push(entry);
        tracker.assign(
            &self.node,
            &self.url,
            &report.digest,
            PeerUpdate::from(report),
        )
    }
    async fn register(&self, _: Node) -> Result<Node, AgentError> {
        unreachable!("pulls only use the tracker")
    }
    async fn heartbeat(&self, _: &str, _: Option<u64>, _: Duration) -> Result<u64, AgentError> {
        unreachable!("pulls only use the tracker")
    }
    async fn list_pods(&self, _: Option<&str>) -> Result<(Vec<Pod>, u64), AgentError> {
        unreachable!("pulls only use the tracker")
    }
    async fn watch_pods(&self, _: Option<&str>, _: u64) -> Result<PodChanges, AgentError> {
        unreachable!("pulls only use the tracker")
    }
    async fn set_pod_status(&self, _: &str, _: &str, _: &PodStatus) -> Result<(), AgentError> {
        unreachable!("pulls only use the tracker")
    }
    async fn pod_event(&self, _: &str, _: &str, _: &PodEventReport) -> Result<(), AgentError> {
        unreachable!("pulls only use the tracker")
    }
    async fn claim_ip(&self, _: &str, _: &str) -> Result<Option<wharf_api::IpClaim>, AgentError> {
        unreachable!("pulls only use the tracker")
    }
    async fn release_ip(&self, _: &str, _: &str, _: &str) -> Result<(), AgentError> {
        unreachable!("pulls only use the tracker")
    }
    async fn pod_stopped(&self, _: &str, _: &str, _: &str) -> Result<(), AgentError> {
        unreachable!("pulls only use the tracker")
    }
    async fn may_access_pod(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: PodAccess,
    ) -> Result<bool, AgentError> {
        unreachable!("pulls only use the tracker")
    }
    async fn config_map(
        &self,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<Option<wharf_api::ConfigMap>, AgentError> {
        unreachable!("pulls only use the tracker")
    }
    async fn secret(
        &self,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<Option<wharf_api::Secret>, AgentError> {
        unreachable!("pulls only use the tracker")
    }
    async fn claims(&self, _: &str) -> Result<Vec<wharf_api::PersistentVolumeClaim>, AgentError> {
        unreachable!("pulls only use the tracker")
    }
    async fn report_usage(&self, _: &str, _: &[wharf_api::PodUsage]) -> Result<(), AgentError> {
        unreachable!("pulls only use the tracker")
    }
    async fn push_metrics(&self, _: &str, _: &[wharf_api::FalconSample]) -> Result<(), AgentError> {
        unreachable!("pulls only use the tracker")
    }
    async fn node_services(&self, _: &str) -> Result<(ServiceView, u64), AgentError> {
        unreachable!("pulls only use the tracker")
    }
    async fn watch_services(&self, _: &str, _: u64) -> Result<ServiceChanges, AgentError> {
        unreachable!("pulls only use the tracker")
    }
}

/// A node: its image cache pulling through its peer, whose pieces it
/// serves on loopback.
struct TestNode {
    _dir: tempfile::TempDir,
    images: ImageStore,
    peer: Arc<PeerNode>,
}

async fn node(name: &str, tracker: Option<&Arc<Tracker>>, p2p_registry: &str) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let api = Arc::new(ControlPlane {
        node: name.into(),
        url,
        tracker: tracker.cloned(),
    });
    let peer = PeerNode::open(
        dir.path().join("blobs"),
        api,
        P2pSettings::default(),
        Some(p2p_registry.into()),
    )
    .await
    .unwrap();
    let router = peer.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let options = ImageStoreOptions {
        blob_fetcher: Some(peer.blob_fetcher()),
        ..ImageStoreOptions::default()
    };
    let images = ImageStore::open(dir.path().join("images"), options)
        .await
        .unwrap();
    TestNode {
        _dir: dir,
        images,
        peer,
    }
}

impl TestNode {
    async fn pull(&self, registry: &str) -> wharf_image::PulledImage {
        let image = ImageRef::parse(&format!("{registry}/shop/web:1")).unwrap();
        self.images
            .pull(&image, None, PullPolicy::Always, &|_| {})
            .await
            .unwrap()
    }

    fn blob_path(&self, digest: &Digest) -> std::path::PathBuf {
        self.peer.store.blob_path(digest)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_node_gets_the_layer_from_the_first() {
    let (registry, host) = start_registry().await;
    let tracker = Tracker::new(&registry.image);
    let a = node("a", Some(&tracker), &host).await;
    let b = node("b", Some(&tracker), &host).await;
    let (layer, config) = (
        registry.image.layer.len() as u64,
        registry.image.config.len() as u64,
    );

    let pulled_a = a.pull(&host).await;
    let after_a = registry.blob_bytes.load(Ordering::Relaxed);
    // Long past the tracker's staleness (300 ms): the first node is still
    // a parent because it keeps reporting what it holds.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pulled_b = b.pull(&host).await;

    assert_eq!(
        pulled_a.bytes,
        PullBytes {
            registry: layer + config,
            ..PullBytes::default()
        },
        "the seed reads the registry"
    );
    assert_eq!(
        pulled_b.bytes,
        PullBytes {
            registry: config,
            peers: layer,
            cache: 0,
        },
        "the layer comes from the seed"
    );
    assert_eq!(after_a, layer + config);
    assert_eq!(
        registry.blob_bytes.load(Ordering::Relaxed),
        after_a + config
    );
    let unpacked = std::fs::read(pulled_b.layers[0].join("srv/data.bin")).unwrap();
    assert_eq!(unpacked.len(), 5 << 20);
    for node in [&a, &b] {
        let kept = std::fs::read(node.blob_path(&registry.image.layer_digest())).unwrap();
        assert_eq!(kept, registry.image.layer, "both keep the blob to serve it");
    }
    let reports = tracker.reports.lock().unwrap().clone();
    assert!(
        reports.contains(&("a".into(), PeerState::Done)),
        "{reports:?}"
    );
    assert!(
        reports.contains(&("b".into(), PeerState::Done)),
        "{reports:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_tracker_the_node_pulls_from_the_registry_and_gc_drops_the_blob() {
    let (registry, host) = start_registry().await;
    let alone = node("alone", None, &host).await;

    let pulled = alone.pull(&host).await;

    let total = (registry.image.layer.len() + registry.image.config.len()) as u64;
    assert_eq!(pulled.bytes.registry, total);
    assert_eq!(registry.blob_bytes.load(Ordering::Relaxed), total);
    let blob = alone.blob_path(&registry.image.layer_digest());
    assert!(blob.is_file(), "the verified blob is kept for peers");

    let report = alone
        .images
        .remove_unused(&std::collections::HashSet::new())
        .await
        .unwrap();
    assert_eq!(report.removed_layers, [registry.image.layer_digest()]);
    alone.peer.forget(&report.removed_layers).await;
    assert!(!blob.exists(), "the blob goes with its layer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_of_other_registries_are_fetched_directly() {
    let (registry, host) = start_registry().await;
    let tracker = Tracker::new(&registry.image);
    let elsewhere = node("elsewhere", Some(&tracker), "registry.example:5000").await;

    let pulled = elsewhere.pull(&host).await;

    let total = (registry.image.layer.len() + registry.image.config.len()) as u64;
    assert_eq!(pulled.bytes.registry, total);
    assert_eq!(
        tracker.logic.lock().unwrap().task_count(),
        0,
        "no task asked"
    );
    assert!(!elsewhere.blob_path(&registry.image.layer_digest()).exists());
}

//! Pulling end to end: from a real Wharf registry running in-process
//! (token auth with a robot account, multi-arch indexes, concurrent pulls,
//! the offline cache, garbage collection) and from a fake registry that
//! serves corrupt content.

mod common;
mod registry;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::sync::Mutex;

use common::{Blob, Layer, assert_cache_clean, blob, names, sha256};
use registry::{FakeRegistry, Image, OCI_MANIFEST, Wharf, index_of, manifest_for};
use wharf_image::{
    BlobFetcher, BlobLocation, BlobRequest, Compression, FetchedBlob, ImageError, ImageRef,
    ImageStore, ImageStoreOptions, LayerState, Platform, PullBytes, PullPolicy, PullProgress,
    PulledImage, RegistryCredentials,
};

const NO_PROGRESS: &(dyn Fn(PullProgress) + Sync) = &|_| {};

fn base_layer() -> Blob {
    let tar = Layer::new()
        .file_with("bin/web", b"#!/bin/web\n", 0o755, 0, 0)
        .dir("srv/", 0o755)
        .tar();
    blob(&tar, Compression::Gzip)
}

fn app_layer(page: &[u8]) -> Blob {
    blob(
        &Layer::new().file("srv/index.html", page).tar(),
        Compression::Zstd,
    )
}

fn host_arch() -> String {
    Platform::host().architecture
}

fn web_image() -> Image {
    Image::new(
        vec![base_layer(), app_layer(b"<h1>shop</h1>")],
        &host_arch(),
        &["--port", "8080"],
    )
}

fn api_image() -> Image {
    let own = blob(
        &Layer::new().file("srv/api", b"api").tar(),
        Compression::None,
    );
    Image::new(vec![base_layer(), own], &host_arch(), &["--api"])
}

async fn open_store(dir: &Path) -> ImageStore {
    ImageStore::open(dir.join("cache"), ImageStoreOptions::default())
        .await
        .unwrap()
}

fn reference(registry: &str, rest: &str) -> ImageRef {
    ImageRef::parse(&format!("{registry}/{rest}")).unwrap()
}

/// Blob GETs for `digest` in any repository.
fn blob_gets(served: &registry::Served, digest: &wharf_oci::Digest) -> usize {
    served.count_containing(&format!("/blobs/{digest}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_with_a_robot_through_token_auth_then_serves_the_cache_offline() {
    let mut wharf = Wharf::start().await;
    let (robot, secret) = wharf.project_with_puller("shop").await;
    let image = web_image();
    wharf.push("shop/web", &image, "1.0").await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let registry = wharf.served.registry();
    let web = reference(&registry, "shop/web:1.0");
    let robot = RegistryCredentials::new(robot, secret);

    let tokens_before = wharf.served.count("GET", "/service/token");
    let reports = Mutex::new(Vec::new());
    let record = |p: PullProgress| reports.lock().unwrap().push(p);
    let pulled = store
        .pull(&web, Some(&robot), PullPolicy::IfNotPresent, &record)
        .await
        .unwrap();

    assert_eq!(pulled.reference, web);
    assert_eq!(pulled.manifest_digest, image.digest());
    assert_eq!(pulled.config_digest, sha256(&image.config));
    assert_eq!(pulled.config.entrypoint, ["/bin/web"]);
    assert_eq!(pulled.config.cmd, ["--port", "8080"]);
    assert_eq!(pulled.config.env, ["PATH=/bin", "MODE=test"]);
    assert_eq!(pulled.config.working_dir.as_deref(), Some("/srv"));
    assert_eq!(pulled.config.user.as_deref(), Some("1000"));
    assert_eq!(pulled.config.exposed_ports, ["8080/tcp"]);
    assert_eq!(pulled.config.labels["team"], "shop");
    let layer_dirs: Vec<_> = image
        .layers
        .iter()
        .map(|l| store.layer_dir(&l.descriptor.digest))
        .collect();
    assert_eq!(pulled.layers, layer_dirs, "bottom first");
    assert_eq!(
        fs::read(pulled.layers[0].join("bin/web")).unwrap(),
        b"#!/bin/web\n"
    );
    assert_eq!(
        fs::read(pulled.layers[1].join("srv/index.html")).unwrap(),
        b"<h1>shop</h1>"
    );
    let layer_bytes: u64 = image.layers.iter().map(|l| l.descriptor.size).sum();
    assert_eq!(pulled.size_bytes, layer_bytes + image.config.len() as u64);
    let fetched = PullBytes {
        registry: pulled.size_bytes,
        ..PullBytes::default()
    };
    assert_eq!(
        pulled.bytes, fetched,
        "the default fetcher reads the registry"
    );
    // From here on the cache answers: every byte from the node.
    let pulled = PulledImage {
        bytes: PullBytes {
            cache: pulled.size_bytes,
            ..PullBytes::default()
        },
        ..pulled
    };

    let last = reports
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("progress reported");
    assert_eq!(
        (last.done_bytes, last.total_bytes),
        (layer_bytes, layer_bytes)
    );
    assert!(last.layers.iter().all(|l| l.state == LayerState::Ready));
    assert_eq!(
        wharf.served.count("GET", "/service/token"),
        tokens_before + 1,
        "one token for manifest, config and layers"
    );

    let listed = store.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].references, std::slice::from_ref(&web));
    assert_eq!(listed[0].size_bytes, pulled.size_bytes);

    // Without the registry: the cache answers, by tag and by digest, also
    // after a restart of the agent.
    wharf.served.stop().await;
    let again = store
        .pull(&web, Some(&robot), PullPolicy::IfNotPresent, NO_PROGRESS)
        .await
        .unwrap();
    assert_eq!(again, pulled);
    assert_eq!(store.cached(&web).await, Some(pulled.clone()));
    let pinned = reference(&registry, &format!("shop/web@{}", image.digest()));
    assert_eq!(
        store.cached(&pinned).await.map(|p| p.layers),
        Some(pulled.layers.clone())
    );
    let reopened = open_store(dir.path()).await;
    assert_eq!(reopened.cached(&web).await, Some(pulled));
    let err = store
        .pull(&web, Some(&robot), PullPolicy::Always, NO_PROGRESS)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImageError::Http { .. }),
        "Always asks the registry: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_download_each_layer_once() {
    // Slow blobs: every pull is still downloading when the others want the
    // same layers, so they must join the download in flight.
    let wharf = Wharf::with_blob_delay(std::time::Duration::from_millis(300)).await;
    let (robot, secret) = wharf.project_with_puller("shop").await;
    let (web, api) = (web_image(), api_image());
    wharf.push("shop/web", &web, "1.0").await;
    wharf.push("shop/api", &api, "1.0").await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let registry = wharf.served.registry();
    let (web_ref, api_ref) = (
        reference(&registry, "shop/web:1.0"),
        reference(&registry, "shop/api:1.0"),
    );
    let robot = RegistryCredentials::new(robot, secret);

    let pull = |image: &ImageRef| {
        let (store, image, robot) = (store.clone(), image.clone(), robot.clone());
        tokio::spawn(async move {
            store
                .pull(&image, Some(&robot), PullPolicy::Always, NO_PROGRESS)
                .await
        })
    };
    let pulls = [
        pull(&web_ref),
        pull(&web_ref),
        pull(&api_ref),
        pull(&web_ref),
    ];
    let mut results = Vec::new();
    for handle in pulls {
        results.push(handle.await.unwrap().unwrap());
    }
    assert!(
        results
            .iter()
            .filter(|p| p.reference == web_ref)
            .all(|p| p.layers == results[0].layers)
    );
    assert_eq!(
        results[2].layers[0], results[0].layers[0],
        "the base layer is shared"
    );

    let base = &web.layers[0].descriptor.digest;
    assert_eq!(
        blob_gets(&wharf.served, base),
        1,
        "base layer, used by both images"
    );
    assert_eq!(
        blob_gets(&wharf.served, &web.layers[1].descriptor.digest),
        1
    );
    assert_eq!(
        blob_gets(&wharf.served, &api.layers[1].descriptor.digest),
        1
    );
    assert_eq!(store.layer_downloads(), 3);
    assert_eq!(names(&store.root().join("layers/sha256")).len(), 3);

    // Pulling again with `Always` fetches the manifest only.
    let manifests_before = wharf.served.count_containing("/manifests/");
    store
        .pull(&web_ref, Some(&robot), PullPolicy::Always, NO_PROGRESS)
        .await
        .unwrap();
    assert_eq!(
        wharf.served.count_containing("/manifests/"),
        manifests_before + 1
    );
    assert_eq!(store.layer_downloads(), 3);
    assert_eq!(blob_gets(&wharf.served, base), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_arch_index_resolves_to_this_nodes_platform() {
    let wharf = Wharf::start().await;
    let (robot, secret) = wharf.project_with_puller("shop").await;
    let ours = host_arch();
    let other = if ours == "s390x" { "ppc64le" } else { "s390x" };
    let native = Image::new(vec![base_layer(), app_layer(b"native")], &ours, &["native"]);
    let foreign = Image::new(vec![app_layer(b"foreign")], other, &["foreign"]);
    for image in [&native, &foreign] {
        wharf.push("shop/web", image, image.digest().as_str()).await;
    }
    let index = index_of(&[(other, &foreign), (&ours, &native)]);
    wharf.push_index("shop/web", &index, "multi").await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let multi = reference(&wharf.served.registry(), "shop/web:multi");
    let robot = RegistryCredentials::new(robot, secret);

    let pulled = store
        .pull(&multi, Some(&robot), PullPolicy::Always, NO_PROGRESS)
        .await
        .unwrap();
    assert_eq!(
        pulled.manifest_digest,
        sha256(&index),
        "the reference's digest is the index's"
    );
    assert_eq!(pulled.config.cmd, ["native"]);
    assert_eq!(pulled.config.architecture, ours);
    assert_eq!(
        fs::read(pulled.layers[1].join("srv/index.html")).unwrap(),
        b"native"
    );
    assert_eq!(
        blob_gets(&wharf.served, &foreign.layers[0].descriptor.digest),
        0
    );

    let elsewhere = ImageStoreOptions {
        platform: Platform {
            os: "linux".into(),
            architecture: "mips64le".into(),
            variant: None,
        },
        ..ImageStoreOptions::default()
    };
    let mips = ImageStore::open(dir.path().join("mips"), elsewhere)
        .await
        .unwrap();
    let err = mips
        .pull(&multi, Some(&robot), PullPolicy::Always, NO_PROGRESS)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImageError::NoMatchingPlatform { .. }),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("linux/mips64le") && message.contains(&format!("linux/{ours}")),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_credentials_are_clear_auth_errors() {
    let wharf = Wharf::start().await;
    let (robot, _) = wharf.project_with_puller("shop").await;
    wharf.push("shop/web", &web_image(), "1.0").await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let web = reference(&wharf.served.registry(), "shop/web:1.0");

    let wrong = RegistryCredentials::new(robot.clone(), "not-the-secret");
    let err = store
        .pull(&web, Some(&wrong), PullPolicy::Always, NO_PROGRESS)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&format!("refused the credentials of {robot}")),
        "{message}"
    );
    assert!(message.contains("shop/web:1.0"), "{message}");

    let err = store
        .pull(&web, None, PullPolicy::Always, NO_PROGRESS)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImageError::Unauthorized { .. }),
        "anonymous on a private project: {err}"
    );
    assert!(store.list().await.unwrap().is_empty());
    assert_cache_clean(&store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_unused_keeps_what_kept_images_use() {
    let wharf = Wharf::start().await;
    let (robot, secret) = wharf.project_with_puller("shop").await;
    let (web, api) = (web_image(), api_image());
    wharf.push("shop/web", &web, "1.0").await;
    wharf.push("shop/api", &api, "1.0").await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let registry = wharf.served.registry();
    let (web_ref, api_ref) = (
        reference(&registry, "shop/web:1.0"),
        reference(&registry, "shop/api:1.0"),
    );
    let robot = RegistryCredentials::new(robot, secret);
    let pulled_web = store
        .pull(&web_ref, Some(&robot), PullPolicy::Always, NO_PROGRESS)
        .await
        .unwrap();
    let pulled_api = store
        .pull(&api_ref, Some(&robot), PullPolicy::Always, NO_PROGRESS)
        .await
        .unwrap();

    let report = store
        .remove_unused(&HashSet::from([web.digest()]))
        .await
        .unwrap();
    assert_eq!(report.removed_images, [api.digest()]);
    assert_eq!(
        report.removed_layers,
        [api.layers[1].descriptor.digest.clone()]
    );
    assert!(!pulled_api.layers[1].exists());
    assert!(
        pulled_web.layers.iter().all(|l| l.is_dir()),
        "the shared base layer stays"
    );
    assert_eq!(store.cached(&api_ref).await, None);
    assert_eq!(
        store.cached(&web_ref).await.map(|p| p.layers),
        Some(pulled_web.layers)
    );
    assert_eq!(store.list().await.unwrap().len(), 1);

    let report = store.remove_unused(&HashSet::new()).await.unwrap();
    assert_eq!(report.removed_images, [web.digest()]);
    assert_eq!(report.removed_layers.len(), 2);
    assert!(store.list().await.unwrap().is_empty());
    assert_cache_clean(&store);
}

/// Content for the fake registry: `image` under `shop/web:1.0`, with
/// `layer_bytes` served in place of its (single) layer.
fn fake_content(image: &Image, layer_bytes: Vec<u8>) -> HashMap<String, (String, Vec<u8>)> {
    let blob = |digest: &wharf_oci::Digest, bytes: Vec<u8>| {
        (
            format!("/v2/shop/web/blobs/{digest}"),
            ("application/octet-stream".to_string(), bytes),
        )
    };
    HashMap::from([
        (
            "/v2/shop/web/manifests/1.0".to_string(),
            (OCI_MANIFEST.to_string(), image.manifest.clone()),
        ),
        blob(&sha256(&image.config), image.config.clone()),
        blob(&image.layers[0].descriptor.digest, layer_bytes),
    ])
}

async fn pull_from_fake(
    content: HashMap<String, (String, Vec<u8>)>,
) -> (
    Result<wharf_image::PulledImage, ImageError>,
    ImageStore,
    FakeRegistry,
    tempfile::TempDir,
) {
    let fake = FakeRegistry::start(content).await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let web = reference(&fake.served.registry(), "shop/web:1.0");
    let credentials = RegistryCredentials::new("robot$shop+puller", "secret");
    let result = store
        .pull(&web, Some(&credentials), PullPolicy::Always, NO_PROGRESS)
        .await;
    (result, store, fake, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fake_registry_with_a_narrow_token_still_serves_a_good_image() {
    let image = Image::new(vec![app_layer(b"ok")], &host_arch(), &[]);
    let layer = image.layers[0].bytes.clone();
    let (result, store, fake, _dir) = pull_from_fake(fake_content(&image, layer)).await;
    let pulled = result.unwrap();
    assert_eq!(
        fs::read(pulled.layers[0].join("srv/index.html")).unwrap(),
        b"ok"
    );
    // t1 was refused for blobs with 403 insufficient_scope; t2 was asked for then.
    assert_eq!(fake.served.count("GET", "/token"), 2);
    assert!(store.cached(&pulled.reference).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_layers_are_refused_and_nothing_is_cached() {
    let image = Image::new(vec![app_layer(b"genuine")], &host_arch(), &[]);
    let genuine = image.layers[0].bytes.clone();

    let mut tampered = genuine.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    let (result, store, _fake, _dir) = pull_from_fake(fake_content(&image, tampered)).await;
    let err = result.unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    let message = err.to_string();
    let layer = &image.layers[0].descriptor.digest;
    assert!(
        message.contains(&format!("layer {layer} of 127.0.0.1:")),
        "{message}"
    );
    assert_cache_clean(&store);
    assert!(store.list().await.unwrap().is_empty());

    let mut longer = genuine.clone();
    longer.extend_from_slice(b"extra");
    let (result, store, _fake, _dir) = pull_from_fake(fake_content(&image, longer)).await;
    let err = result.unwrap_err();
    assert!(matches!(err, ImageError::SizeMismatch { .. }), "{err}");
    assert_cache_clean(&store);

    // The blob is genuine but the config names another uncompressed digest.
    let mut lying = Image::new(vec![app_layer(b"genuine")], &host_arch(), &[]);
    let mut config: serde_json::Value = serde_json::from_slice(&lying.config).unwrap();
    config["rootfs"]["diff_ids"][0] = sha256(b"other content").to_string().into();
    lying.config = serde_json::to_vec(&config).unwrap();
    lying.manifest = manifest_for(&lying.config, &lying.layers);
    let (result, store, _fake, _dir) = pull_from_fake(fake_content(&lying, genuine)).await;
    let err = result.unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("uncompressed content of layer"),
        "{err}"
    );
    assert_cache_clean(&store);
    assert!(store.list().await.unwrap().is_empty());
}

/// A fetcher as the agent's P2P one behaves: reads the registry by ranges,
/// keeps the verified blob in its own cache, and says where bytes came from.
struct KeepingFetcher {
    dir: std::path::PathBuf,
}

#[async_trait::async_trait]
impl BlobFetcher for KeepingFetcher {
    async fn fetch(&self, request: BlobRequest<'_>) -> Result<FetchedBlob, ImageError> {
        use futures_util::StreamExt;
        let blob = &request.blob;
        let half = blob.size() / 2;
        let mut bytes = Vec::new();
        for range in [0..half, half..blob.size()] {
            let mut stream = blob.range(range).await?;
            while let Some(chunk) = stream.next().await {
                bytes.extend_from_slice(&chunk?);
            }
        }
        assert_eq!(sha256(&bytes), *blob.digest(), "ranged reads give the blob");
        assert_eq!(blob.repository(), "shop/web");
        let path = self.dir.join(blob.digest().hex());
        fs::write(&path, &bytes).unwrap();
        (request.progress)(bytes.len() as u64);
        Ok(FetchedBlob {
            location: BlobLocation::Kept(path),
            bytes: PullBytes {
                registry: half,
                peers: blob.size() - half,
                cache: 0,
            },
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_fetcher_gets_the_layers_and_counts_where_bytes_came_from() {
    let wharf = Wharf::start().await;
    let (robot, secret) = wharf.project_with_puller("shop").await;
    let image = web_image();
    wharf.push("shop/web", &image, "1.0").await;
    let other = api_image();
    wharf.push("shop/web", &other, "api").await;
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("kept");
    fs::create_dir(&kept).unwrap();
    let options = ImageStoreOptions {
        blob_fetcher: Some(std::sync::Arc::new(KeepingFetcher { dir: kept.clone() })),
        ..ImageStoreOptions::default()
    };
    let store = ImageStore::open(dir.path().join("cache"), options)
        .await
        .unwrap();
    let registry = wharf.served.registry();
    let robot = RegistryCredentials::new(robot, secret);

    let web = reference(&registry, "shop/web:1.0");
    let pulled = store
        .pull(&web, Some(&robot), PullPolicy::IfNotPresent, NO_PROGRESS)
        .await
        .unwrap();

    assert_eq!(
        fs::read(pulled.layers[1].join("srv/index.html")).unwrap(),
        b"<h1>shop</h1>"
    );
    let halves: u64 = image.layers.iter().map(|l| l.descriptor.size / 2).sum();
    let layer_bytes: u64 = image.layers.iter().map(|l| l.descriptor.size).sum();
    assert_eq!(
        pulled.bytes,
        PullBytes {
            registry: halves + image.config.len() as u64,
            peers: layer_bytes - halves,
            cache: 0,
        }
    );
    for layer in &image.layers {
        assert!(
            kept.join(layer.descriptor.digest.hex()).is_file(),
            "kept blobs stay"
        );
    }

    // The second image shares the base layer: that one comes from the node.
    let api = reference(&registry, "shop/web:api");
    let pulled = store
        .pull(&api, Some(&robot), PullPolicy::IfNotPresent, NO_PROGRESS)
        .await
        .unwrap();
    assert_eq!(pulled.bytes.cache, other.layers[0].descriptor.size);
    assert_eq!(
        pulled.bytes.registry + pulled.bytes.peers,
        other.layers[1].descriptor.size + other.config.len() as u64
    );
}

//! The node's disk against hostile or huge images: decompression bombs stop
//! at the expansion and per-image limits, pulls stop at the disk reserve, a
//! pull nobody waits for any more stops and leaves nothing, and garbage
//! collection removes the least recently used images nobody runs.

mod common;
mod registry;

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{Blob, Layer, assert_cache_clean, blob, descriptor, names};
use registry::{Image, Wharf};
use wharf_image::{
    Compression, ImageError, ImageGcPolicy, ImageRef, ImageStore, ImageStoreOptions, LayerState,
    Platform, PullPolicy, PullProgress, RegistryCredentials,
};
use wharf_oci::{DigestAlgorithm, StreamHasher};

const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Waits (10 s at most) until the cache holds no layer and nothing in
/// progress: cancelled work stops and removes what it wrote.
async fn wait_until_clean(store: &ImageStore, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let layers = names(&store.root().join("layers/sha256"));
        let tmp = names(&store.root().join("tmp"));
        if layers.is_empty() && tmp.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} left layers {layers:?}, tmp {tmp:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A gzip layer holding one file of `chunks` × 16 MiB zeros, built from
/// concatenated gzip members so that gigabytes cost kilobytes and no time:
/// a decompression bomb with correct digests.
fn zero_bomb(chunks: u64) -> Blob {
    const CHUNK: u64 = 16 << 20;
    let size = chunks * CHUNK;
    let mut header = tar::Header::new_ustar();
    header.set_path("zeros").unwrap();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_cksum();
    let zeros = vec![0u8; CHUNK as usize];
    let end = [0u8; 1024];
    let mut diff_id = StreamHasher::new(DigestAlgorithm::Sha256);
    diff_id.update(header.as_bytes());
    let mut bytes = gzip(header.as_bytes());
    let member = gzip(&zeros);
    for _ in 0..chunks {
        diff_id.update(&zeros);
        bytes.extend_from_slice(&member);
    }
    diff_id.update(&end);
    bytes.extend_from_slice(&gzip(&end));
    Blob {
        descriptor: descriptor(GZIP, &bytes),
        diff_id: diff_id.finish(),
        bytes,
    }
}

async fn store_with(dir: &Path, options: ImageStoreOptions) -> ImageStore {
    ImageStore::open(dir.join("cache"), options).await.unwrap()
}

async fn import(store: &ImageStore, dir: &Path, layer: &Blob) -> Result<(), ImageError> {
    let path = dir.join("blob");
    std::fs::write(&path, &layer.bytes).unwrap();
    store
        .import_layer(&path, &layer.descriptor, &layer.diff_id)
        .await
        .map(drop)
}

#[tokio::test]
async fn a_bomb_stops_at_its_expansion_limit_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let options = ImageStoreOptions {
        max_expansion: 20,
        expansion_floor: 1 << 20,
        ..ImageStoreOptions::default()
    };
    let store = store_with(dir.path(), options).await;
    // 64 MiB from about 64 KiB: a thousand times its size.
    let bomb = zero_bomb(4);
    assert!(bomb.bytes.len() < 1 << 20);
    let err = import(&store, dir.path(), &bomb).await.unwrap_err();
    assert!(matches!(err, ImageError::LayerTooLarge { .. }), "{err}");
    let limit = 20 * bomb.bytes.len() as u64;
    assert!(
        err.to_string().contains(&format!("limit of {limit} bytes")),
        "twenty times the compressed size: {err}"
    );
    assert_cache_clean(&store);

    // An ordinary layer within the floor unpacks.
    let fine = blob(
        &Layer::new().file("etc/conf", b"x=1\n").tar(),
        Compression::Gzip,
    );
    import(&store, dir.path(), &fine).await.unwrap();
}

#[tokio::test]
async fn the_disk_reserve_refuses_to_fill_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let options = ImageStoreOptions {
        // More than any test machine has free.
        reserve_bytes: 1 << 60,
        ..ImageStoreOptions::default()
    };
    let store = store_with(dir.path(), options).await;
    let layer = blob(&Layer::new().file("a", b"a").tar(), Compression::Gzip);
    let err = import(&store, dir.path(), &layer).await.unwrap_err();
    match &err {
        ImageError::DiskReserve {
            reserve, available, ..
        } => {
            assert_eq!(*reserve, 1 << 60);
            assert!(*available < *reserve);
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("keeps"), "{err}");
    assert_cache_clean(&store);
}

fn bomb_image(chunks: u64) -> Image {
    Image::new(vec![zero_bomb(chunks)], &Platform::host().architecture, &[])
}

async fn pushed(wharf: &Wharf, image: &Image) -> (ImageRef, RegistryCredentials) {
    let (robot, secret) = wharf.project_with_puller("shop").await;
    wharf.push("shop/big", image, "1").await;
    let reference = ImageRef::parse(&format!("{}/shop/big:1", wharf.served.registry())).unwrap();
    (reference, RegistryCredentials::new(robot, secret))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_nobody_waits_for_stops_while_unpacking_and_leaves_nothing() {
    let wharf = Wharf::start().await;
    // 4 GiB of zeros: long enough to unpack that it is still at it when dropped.
    let image = bomb_image(256);
    let (reference, robot) = pushed(&wharf, &image).await;
    let dir = tempfile::tempdir().unwrap();
    let options = ImageStoreOptions {
        max_expansion: u64::MAX,
        ..ImageStoreOptions::default()
    };
    let store = store_with(dir.path(), options).await;
    let seen = Mutex::new(Vec::new());
    let record = |p: PullProgress| seen.lock().unwrap().push(p);
    let pull = store.pull(&reference, Some(&robot), PullPolicy::Always, &record);
    let unpacking = async {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let started = seen.lock().unwrap().iter().any(|p| {
                p.layers
                    .iter()
                    .any(|l| l.state == LayerState::Unpacking && l.unpacked_bytes > 0)
            });
            if started {
                return;
            }
        }
    };
    tokio::select! {
        result = pull => panic!("the pull ended before it was dropped: {result:?}"),
        () = unpacking => {}
    }
    wait_until_clean(&store, "the dropped pull").await;
    assert!(store.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_unpacks_beyond_its_limit_fails_and_leaves_nothing() {
    let wharf = Wharf::start().await;
    let image = bomb_image(64);
    let (reference, robot) = pushed(&wharf, &image).await;
    let dir = tempfile::tempdir().unwrap();
    let options = ImageStoreOptions {
        max_expansion: u64::MAX,
        max_image_bytes: 256 << 20,
        ..ImageStoreOptions::default()
    };
    let store = store_with(dir.path(), options).await;
    let err = store
        .pull(&reference, Some(&robot), PullPolicy::Always, &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::ImageTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("per image"), "{err}");
    wait_until_clean(&store, "the cancelled layer").await;
}

fn small_image(file: &str) -> Image {
    let base = blob(
        &Layer::new().file("bin/base", b"base").tar(),
        Compression::Gzip,
    );
    let own = blob(
        &Layer::new().file(file, file.as_bytes()).tar(),
        Compression::Gzip,
    );
    Image::new(vec![base, own], &Platform::host().architecture, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_spares_running_and_recent_images() {
    let wharf = Wharf::start().await;
    let (robot, secret) = wharf.project_with_puller("shop").await;
    let robot = RegistryCredentials::new(robot, secret);
    let (web, api, old) = (small_image("web"), small_image("api"), small_image("old"));
    for (name, image) in [("web", &web), ("api", &api), ("old", &old)] {
        wharf.push(&format!("shop/{name}"), image, "1").await;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), ImageStoreOptions::default()).await;
    let mut pulled = Vec::new();
    for name in ["old", "web", "api"] {
        let reference =
            ImageRef::parse(&format!("{}/shop/{name}:1", wharf.served.registry())).unwrap();
        pulled.push(
            store
                .pull(&reference, Some(&robot), PullPolicy::Always, &|_| {})
                .await
                .unwrap(),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let running = vec![pulled[1].layers.clone()];

    // Recently used: nothing goes, however full the disk is said to be.
    let eager = ImageGcPolicy {
        high_percent: 0,
        low_percent: 0,
        min_age: Duration::from_secs(3600),
        max_unused_age: None,
    };
    assert!(
        store
            .collect_garbage(&eager, &running)
            .await
            .unwrap()
            .removed_images
            .is_empty()
    );

    // Room on the disk and no maximum age: nothing goes either.
    let relaxed = ImageGcPolicy {
        high_percent: 100,
        low_percent: 100,
        min_age: Duration::ZERO,
        max_unused_age: None,
    };
    assert!(
        store
            .collect_garbage(&relaxed, &running)
            .await
            .unwrap()
            .removed_images
            .is_empty()
    );

    // Over the high mark: unused images go, least recently used first, and
    // the running one and the base layer it shares stay.
    let full = ImageGcPolicy {
        min_age: Duration::ZERO,
        ..eager
    };
    let report = store.collect_garbage(&full, &running).await.unwrap();
    let mut expected = vec![old.digest(), api.digest()];
    expected.sort();
    assert_eq!(report.removed_images, expected);
    assert_eq!(report.removed_layers.len(), 2, "their own layers only");
    assert!(pulled[1].layers.iter().all(|l| l.is_dir()));
    let left: HashSet<_> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.manifest_digest)
        .collect();
    assert_eq!(left, HashSet::from([web.digest()]));

    // Unused for longer than the maximum age: gone whatever the disk.
    let aged = ImageGcPolicy {
        max_unused_age: Some(Duration::ZERO),
        ..relaxed
    };
    let report = store.collect_garbage(&aged, &[]).await.unwrap();
    assert_eq!(report.removed_images, [web.digest()]);
    assert!(store.list().await.unwrap().is_empty());
}

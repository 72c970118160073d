//! Garbage collection: what it removes, what it must keep, and that it is
//! safe beside concurrent pushes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::StatusCode;
use serde_json::json;
use wharf_registry::GcOptions;

fn gc(grace: Duration) -> GcOptions {
    GcOptions {
        grace,
        dry_run: false,
    }
}

#[tokio::test]
async fn removes_content_of_deleted_manifests_only() {
    let reg = TestRegistry::new();
    let shared = random_bytes(2000);
    let (keep, keep_manifest) = reg.push_image("p/keep", "v1", &shared).await;
    let (drop, drop_manifest) = reg.push_image("p/drop", "v1", &random_bytes(3000)).await;
    // A layer shared with the kept image, in the repository being cleaned.
    let shared_in_drop = reg.push_blob("p/drop", &shared).await;
    let files_before = reg.blob_files().len();

    reg.delete(&format!("/v2/p/drop/manifests/{drop}"))
        .await
        .expect(StatusCode::ACCEPTED);
    let dry = reg
        .registry
        .collect_garbage(GcOptions {
            grace: NO_GRACE,
            dry_run: true,
        })
        .await
        .unwrap();
    assert!(dry.blobs_removed > 0 && dry.dry_run);
    assert_eq!(
        reg.blob_files().len(),
        files_before,
        "a dry run removes nothing"
    );

    let report = reg.registry.collect_garbage(gc(NO_GRACE)).await.unwrap();
    // drop's config, layer, manifest bytes go; the shared layer stays (linked from p/keep).
    assert_eq!(report.blobs_removed, 3, "{report:?}");
    assert_eq!(report.links_removed, 3, "{report:?}");
    let layer = &drop_manifest["layers"][0]["digest"];
    reg.get(&format!("/v2/p/drop/blobs/{}", layer.as_str().unwrap()))
        .await
        .expect(StatusCode::NOT_FOUND);
    reg.head(&format!("/v2/p/drop/blobs/{shared_in_drop}"))
        .await
        .expect(StatusCode::NOT_FOUND);

    // The kept image is whole.
    let served = reg
        .get(&format!("/v2/p/keep/manifests/{keep}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(served.body, serde_json::to_vec(&keep_manifest).unwrap());
    for blob in [
        &keep_manifest["config"]["digest"],
        &keep_manifest["layers"][0]["digest"],
    ] {
        reg.get(&format!("/v2/p/keep/blobs/{}", blob.as_str().unwrap()))
            .await
            .expect(StatusCode::OK);
    }
    assert_eq!(
        reg.get(&format!("/v2/p/keep/blobs/{shared_in_drop}"))
            .await
            .body,
        shared
    );

    let again = reg.registry.collect_garbage(gc(NO_GRACE)).await.unwrap();
    assert_eq!((again.blobs_removed, again.links_removed), (0, 0));
}

#[tokio::test]
async fn grace_period_protects_a_push_in_flight() {
    let reg = TestRegistry::new();
    // Layers uploaded, manifest not sent yet.
    let manifest = reg.image_manifest("p/app", b"{}", &[b"fresh layer"]).await;
    let report = reg
        .registry
        .collect_garbage(gc(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!((report.blobs_removed, report.links_removed), (0, 0));
    reg.push_manifest("p/app", "v1", OCI_MANIFEST, &manifest)
        .await;

    // Without grace the unreferenced upload is collected, and a late manifest
    // is then refused rather than stored with dangling references.
    let late = reg
        .image_manifest("p/late", b"{\"late\":1}", &[b"late layer"])
        .await;
    reg.registry.collect_garbage(gc(NO_GRACE)).await.unwrap();
    reg.send(
        http::Method::PUT,
        "/v2/p/late/manifests/v1",
        &[("content-type", OCI_MANIFEST)],
        serde_json::to_vec(&late).unwrap(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
    reg.get("/v2/p/app/manifests/v1")
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn index_children_keep_their_blobs() {
    let reg = TestRegistry::new();
    let (child, child_manifest) = reg.push_image("p/multi", "child", b"child layer").await;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": child, "size": serde_json::to_vec(&child_manifest).unwrap().len()}],
    });
    reg.push_manifest("p/multi", "latest", OCI_INDEX, &index)
        .await;
    // The child's tag goes; the child manifest stays, referenced by the index.
    reg.delete("/v2/p/multi/manifests/child")
        .await
        .expect(StatusCode::ACCEPTED);
    let report = reg.registry.collect_garbage(gc(NO_GRACE)).await.unwrap();
    assert_eq!(report.blobs_removed, 0, "{report:?}");
    reg.get(&format!("/v2/p/multi/manifests/{child}"))
        .await
        .expect(StatusCode::OK);
    let layer = child_manifest["layers"][0]["digest"].as_str().unwrap();
    reg.get(&format!("/v2/p/multi/blobs/{layer}"))
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn stale_uploads_are_cleaned() {
    let reg = TestRegistry::with_config(wharf_registry::RegistryConfig {
        upload_ttl: Duration::ZERO,
        ..Default::default()
    });
    reg.send(
        http::Method::POST,
        "/v2/p/a/blobs/uploads/",
        &[],
        bytes::Bytes::new(),
    )
    .await
    .expect(StatusCode::ACCEPTED);
    assert_eq!(reg.upload_dirs(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = reg
        .registry
        .collect_garbage(gc(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(report.uploads_removed, 1);
    assert_eq!(reg.upload_dirs(), 0);
}

/// Pushes like a client: HEAD each blob, upload only the missing ones, then
/// the manifest. Returns the manifest's status.
async fn push_like_a_client(
    reg: &TestRegistry,
    repo: &str,
    tag: &str,
    config: &[u8],
    layers: &[Vec<u8>],
) -> (StatusCode, serde_json::Value) {
    let mut descriptors = Vec::new();
    for blob in std::iter::once(config).chain(layers.iter().map(Vec::as_slice)) {
        let digest = sha256(blob);
        if reg.head(&format!("/v2/{repo}/blobs/{digest}")).await.status == StatusCode::NOT_FOUND {
            reg.push_blob(repo, blob).await;
        }
        descriptors.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": blob.len()}));
    }
    let mut config_descriptor = descriptors.remove(0);
    config_descriptor["mediaType"] = json!("application/vnd.oci.image.config.v1+json");
    let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_descriptor, "layers": descriptors});
    let reply = reg
        .send(
            http::Method::PUT,
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("content-type", OCI_MANIFEST)],
            serde_json::to_vec(&manifest).unwrap(),
        )
        .await;
    if reply.status != StatusCode::CREATED {
        eprintln!(
            "manifest push {repo}:{tag} failed: {}; manifest {manifest}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    (reply.status, manifest)
}

/// Collections run back to back, with a short grace period, while images
/// are pushed that reuse layers of deleted images (content the collector is
/// trying to remove at that very moment). Every push must succeed and every
/// pushed image must stay complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_survive_collections() {
    let grace = Duration::from_secs(2);
    let reg = Arc::new(TestRegistry::with_config(wharf_registry::RegistryConfig {
        gc_grace: grace,
        ..Default::default()
    }));
    let old_layers: Vec<Vec<u8>> = (0..10).map(|i| random_bytes(2000 + i)).collect();
    for (i, layer) in old_layers.iter().enumerate() {
        let (status, manifest) = push_like_a_client(
            &reg,
            "p/race",
            &format!("old{i}"),
            format!("{{\"old\":{i}}}").as_bytes(),
            std::slice::from_ref(layer),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        let digest = sha256(&serde_json::to_vec(&manifest).unwrap());
        reg.delete(&format!("/v2/p/race/manifests/{digest}"))
            .await
            .expect(StatusCode::ACCEPTED);
    }
    // Let the deleted images' content age past the grace period.
    tokio::time::sleep(grace + Duration::from_millis(1100)).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let (reg, stop) = (reg.clone(), stop.clone());
        tokio::spawn(async move {
            let mut removed = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                removed += reg
                    .registry
                    .collect_garbage(gc(grace))
                    .await
                    .unwrap()
                    .blobs_removed;
                tokio::task::yield_now().await;
            }
            removed
        })
    };
    let mut pushed = Vec::new();
    for i in 0..30 {
        let layers = vec![
            old_layers[i % old_layers.len()].clone(),
            random_bytes(500 + i),
        ];
        let (status, manifest) = push_like_a_client(
            &reg,
            "p/race",
            &format!("new{i}"),
            format!("{{\"new\":{i}}}").as_bytes(),
            &layers,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "push {i}");
        pushed.push((i, manifest, layers));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let removed = collector.await.unwrap();
    // The old configs and manifests were garbage: the collector did real work.
    assert!(removed >= 10, "collector removed {removed} blobs");
    reg.registry.collect_garbage(gc(NO_GRACE)).await.unwrap();
    for (i, manifest, layers) in pushed {
        reg.get(&format!("/v2/p/race/manifests/new{i}"))
            .await
            .expect(StatusCode::OK);
        for (descriptor, layer) in manifest["layers"].as_array().unwrap().iter().zip(&layers) {
            let digest = descriptor["digest"].as_str().unwrap();
            assert_eq!(
                &reg.get(&format!("/v2/p/race/blobs/{digest}"))
                    .await
                    .expect(StatusCode::OK)
                    .body[..],
                &layer[..]
            );
        }
        let config_digest = manifest["config"]["digest"].as_str().unwrap();
        reg.get(&format!("/v2/p/race/blobs/{config_digest}"))
            .await
            .expect(StatusCode::OK);
    }
}

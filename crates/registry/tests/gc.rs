//! Garbage collection: what it removes, what it must keep, and that it is
//! safe beside concurrent pushes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::StatusCode;
use serde_json::{Value, json};
use wharf_oci::Digest;
use wharf_registry::GcOptions;

fn gc(grace: Duration) -> GcOptions {
    GcOptions::with_grace(grace)
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
            dry_run: true,
            ..GcOptions::with_grace(NO_GRACE)
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

/// Opens an upload session in `repo`; returns its location.
async fn start_upload(reg: &TestRegistry, repo: &str) -> String {
    let reply = reg
        .send(
            http::Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            bytes::Bytes::new(),
        )
        .await
        .expect(StatusCode::ACCEPTED);
    reply.header("location").to_string()
}

#[tokio::test]
async fn stale_uploads_are_cleaned() {
    let reg = TestRegistry::with_config(wharf_registry::RegistryConfig {
        upload_ttl: Duration::ZERO,
        ..Default::default()
    });
    start_upload(&reg, "p/a").await;
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

fn untagged(grace: Duration) -> GcOptions {
    GcOptions {
        delete_untagged: true,
        ..GcOptions::with_grace(grace)
    }
}

fn size_of(manifest: &serde_json::Value) -> usize {
    serde_json::to_vec(manifest).unwrap().len()
}

/// Pushes an image (config and one layer) by digest only: untagged.
async fn push_untagged_image(reg: &TestRegistry, repo: &str, layer: &[u8]) -> (Digest, Value) {
    let config = format!(r#"{{"untagged":"{}"}}"#, sha256(layer));
    let manifest = reg.image_manifest(repo, config.as_bytes(), &[layer]).await;
    let digest = sha256(&serde_json::to_vec(&manifest).unwrap());
    reg.push_manifest(repo, digest.as_str(), OCI_MANIFEST, &manifest)
        .await;
    (digest, manifest)
}

/// Pushes, by digest, an artifact (a signature, say) whose subject is
/// `subject` (which need not exist).
async fn push_referrer(reg: &TestRegistry, repo: &str, subject: &Digest, payload: &str) -> Digest {
    let config = reg.push_blob(repo, b"{}").await;
    let layer = reg.push_blob(repo, payload.as_bytes()).await;
    let artifact = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": layer, "size": payload.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 100},
    });
    let digest = sha256(&serde_json::to_vec(&artifact).unwrap());
    reg.push_manifest(repo, digest.as_str(), OCI_MANIFEST, &artifact)
        .await
}

/// An index of `children` (digest and manifest).
fn index_of(children: &[&(Digest, Value)]) -> Value {
    let manifests: Vec<Value> = children
        .iter()
        .map(|(digest, manifest)| json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": size_of(manifest)}))
        .collect();
    json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})
}

/// Asserts that a HEAD of each of `digests` in `repo` answers `status`.
async fn assert_manifests<'a>(
    reg: &TestRegistry,
    repo: &str,
    digests: impl IntoIterator<Item = &'a Digest>,
    status: StatusCode,
) {
    for digest in digests {
        let reply = reg.head(&format!("/v2/{repo}/manifests/{digest}")).await;
        assert_eq!(reply.status, status, "{digest}");
    }
}

async fn manifest_revision(reg: &TestRegistry, repo: &str, digest: &Digest) -> u64 {
    use wharf_store::Store;
    let key = format!("/registry/manifests/{repo}@{digest}");
    reg.store.get(&key).await.unwrap().unwrap().mod_revision
}

#[tokio::test]
async fn delete_untagged_removes_what_no_tag_reaches() {
    let reg = TestRegistry::new();
    let repo = "p/app";
    // Tagged: an image and an index of two untagged platform images.
    let (tagged, _) = reg.push_image(repo, "v1", b"tagged layer").await;
    let amd64 = push_untagged_image(&reg, repo, b"amd64 layer").await;
    let arm64 = push_untagged_image(&reg, repo, b"arm64 layer").await;
    let before = manifest_revision(&reg, repo, &amd64.0).await;
    let index = reg
        .push_manifest(repo, "multi", OCI_INDEX, &index_of(&[&amd64, &arm64]))
        .await;
    assert_ne!(
        manifest_revision(&reg, repo, &amd64.0).await,
        before,
        "an index push rewrites its children, fencing a collection that chose to delete them"
    );
    // Referrers of kept manifests: of the tagged image, of a platform image.
    let signature = push_referrer(&reg, repo, &tagged, "sig of v1").await;
    let child_signature = push_referrer(&reg, repo, &amd64.0, "sig of amd64").await;

    // Untagged: an image whose tag was deleted, with a signature and a
    // signature of that signature; an untagged index and its child; a
    // referrer of a subject that never was here.
    let (old, old_manifest) = reg.push_image(repo, "old", b"old layer").await;
    reg.delete(&format!("/v2/{repo}/manifests/old"))
        .await
        .expect(StatusCode::ACCEPTED);
    let old_signature = push_referrer(&reg, repo, &old, "sig of old").await;
    let nested_signature = push_referrer(&reg, repo, &old_signature, "sig of sig").await;
    let lone = push_untagged_image(&reg, repo, b"lone child layer").await;
    let lone_index = index_of(&[&lone]);
    let lone_index_digest = sha256(&serde_json::to_vec(&lone_index).unwrap());
    reg.push_manifest(repo, lone_index_digest.as_str(), OCI_INDEX, &lone_index)
        .await;
    let orphan = push_referrer(&reg, repo, &sha256(b"never pushed"), "orphan").await;
    let kept = [
        &tagged,
        &index,
        &amd64.0,
        &arm64.0,
        &signature,
        &child_signature,
    ];
    let doomed = [
        &old,
        &old_signature,
        &nested_signature,
        &lone.0,
        &lone_index_digest,
        &orphan,
    ];

    // Without the option, and within the grace period, nothing goes.
    let report = reg.registry.collect_garbage(gc(NO_GRACE)).await.unwrap();
    assert_eq!(report.manifests_removed, 0);
    let report = reg
        .registry
        .collect_garbage(untagged(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(report.manifests_removed, 0, "all pushed just now");
    let dry = reg
        .registry
        .collect_garbage(GcOptions {
            dry_run: true,
            ..untagged(NO_GRACE)
        })
        .await
        .unwrap();
    assert_eq!(dry.manifests_removed, doomed.len() as u64, "{dry:?}");
    assert_manifests(
        &reg,
        repo,
        doomed.iter().chain(kept.iter()).copied(),
        StatusCode::OK,
    )
    .await;

    let report = reg
        .registry
        .collect_garbage(untagged(NO_GRACE))
        .await
        .unwrap();
    assert_eq!(report.manifests_removed, doomed.len() as u64, "{report:?}");
    assert_manifests(&reg, repo, doomed, StatusCode::NOT_FOUND).await;
    assert_manifests(&reg, repo, kept, StatusCode::OK).await;
    // The content only the deleted manifests used went in the same run.
    let old_layer = old_manifest["layers"][0]["digest"].as_str().unwrap();
    reg.get(&format!("/v2/{repo}/blobs/{old_layer}"))
        .await
        .expect(StatusCode::NOT_FOUND);
    let referrers = |subject: &Digest| {
        let reg = &reg;
        let uri = format!("/v2/{repo}/referrers/{subject}");
        async move {
            let index = reg.get(&uri).await.expect(StatusCode::OK).json();
            index["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["digest"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(referrers(&tagged).await, [signature.to_string()]);
    assert_eq!(referrers(&amd64.0).await, [child_signature.to_string()]);
    assert!(referrers(&old).await.is_empty());
    let again = reg
        .registry
        .collect_garbage(untagged(NO_GRACE))
        .await
        .unwrap();
    assert_eq!(again.manifests_removed, 0);
}

#[tokio::test]
async fn upload_leftovers_are_reported_and_cleared_on_request() {
    let reg = TestRegistry::new();
    // A push killed after its first chunk: the session stays behind.
    let location = start_upload(&reg, "p/a").await;
    reg.send(http::Method::PATCH, &location, &[], random_bytes(4_096))
        .await
        .expect(StatusCode::ACCEPTED);
    let report = reg.registry.collect_garbage(gc(NO_GRACE)).await.unwrap();
    assert_eq!(
        (
            report.uploads_removed,
            report.uploads_left,
            report.upload_bytes_left
        ),
        (0, 1, 4_096),
        "kept until the upload TTL, but reported: {report:?}"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let clear = GcOptions {
        uploads_older_than: Some(Duration::from_millis(10)),
        ..gc(NO_GRACE)
    };
    let dry = reg
        .registry
        .collect_garbage(GcOptions {
            dry_run: true,
            ..clear
        })
        .await
        .unwrap();
    assert_eq!((dry.uploads_removed, dry.upload_bytes_freed), (1, 4_096));
    assert_eq!(reg.upload_dirs(), 1, "a dry run removes nothing");
    let report = reg.registry.collect_garbage(clear).await.unwrap();
    assert_eq!(
        (
            report.uploads_removed,
            report.upload_bytes_freed,
            report.uploads_left
        ),
        (1, 4_096, 0),
        "{report:?}"
    );
    assert_eq!(reg.upload_dirs(), 0);
    reg.get(&location)
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
}

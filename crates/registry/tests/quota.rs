//! Storage accounting per project and quota enforcement.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use wharf_registry::{GcOptions, QuotaSource};

struct Quotas(HashMap<String, u64>);

#[async_trait]
impl QuotaSource for Quotas {
    async fn quota(&self, project: &str) -> Option<u64> {
        self.0.get(project).copied()
    }
}

fn with_quota(project: &str, bytes: u64) -> TestRegistry {
    TestRegistry::with_quotas(Arc::new(Quotas(HashMap::from([(
        project.to_string(),
        bytes,
    )]))))
}

fn manifest_len(manifest: &serde_json::Value) -> u64 {
    serde_json::to_vec(manifest).unwrap().len() as u64
}

#[tokio::test]
async fn usage_counts_shared_content_once_and_follows_deletes() {
    let reg = TestRegistry::new();
    let layer = random_bytes(10_000);
    let (digest_a, manifest_a) = reg.push_image("p/a", "v1", &layer).await;
    let config_len = manifest_a["config"]["size"].as_u64().unwrap();
    let expected_a = config_len + layer.len() as u64 + manifest_len(&manifest_a);
    assert_eq!(reg.registry.usage("p").await.unwrap(), expected_a);

    // The same content in another repository of the project costs nothing more.
    let (digest_b, manifest_b) = reg.push_image("p/b", "v1", &layer).await;
    assert_eq!(digest_a, digest_b);
    assert_eq!(manifest_a, manifest_b);
    assert_eq!(reg.registry.usage("p").await.unwrap(), expected_a);
    // Another project pays for its own copy.
    reg.push_image("other/a", "v1", &layer).await;
    assert_eq!(reg.registry.usage("other").await.unwrap(), expected_a);

    // Deleting p/a's manifest frees nothing yet: p/b still uses everything.
    reg.delete(&format!("/v2/p/a/manifests/{digest_a}"))
        .await
        .expect(StatusCode::ACCEPTED);
    reg.registry
        .collect_garbage(GcOptions::with_grace(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(reg.registry.usage("p").await.unwrap(), expected_a);

    // Once nothing in the project uses it, usage returns to zero.
    reg.delete(&format!("/v2/p/b/manifests/{digest_b}"))
        .await
        .expect(StatusCode::ACCEPTED);
    reg.registry
        .collect_garbage(GcOptions::with_grace(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(reg.registry.usage("p").await.unwrap(), 0);
    assert_eq!(reg.registry.usage("other").await.unwrap(), expected_a);

    // Blob DELETE releases its charge at once.
    let blob = reg.push_blob("p/c", &random_bytes(500)).await;
    assert_eq!(reg.registry.usage("p").await.unwrap(), 500);
    reg.delete(&format!("/v2/p/c/blobs/{blob}"))
        .await
        .expect(StatusCode::ACCEPTED);
    assert_eq!(reg.registry.usage("p").await.unwrap(), 0);
}

#[tokio::test]
async fn blob_over_quota_is_refused_and_leaves_nothing() {
    let reg = with_quota("q", 10_000);
    reg.push_blob("q/app", &random_bytes(6_000)).await;
    let files = reg.blob_files().len();
    let big = random_bytes(6_000);
    let digest = sha256(&big);
    let reply = reg
        .send(
            Method::POST,
            &format!("/v2/q/app/blobs/uploads/?digest={digest}"),
            &[],
            big.clone(),
        )
        .await
        .expect_error(StatusCode::FORBIDDEN, "DENIED");
    let message = reply.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("quota exceeded for project q"),
        "{message}"
    );
    assert_eq!(reply.json()["errors"][0]["detail"]["quota"], 10_000);
    assert_eq!(reg.blob_files().len(), files, "nothing stored");
    assert_eq!(reg.upload_dirs(), 0, "no session left");
    reg.head(&format!("/v2/q/app/blobs/{digest}"))
        .await
        .expect(StatusCode::NOT_FOUND);
    assert_eq!(reg.registry.usage("q").await.unwrap(), 6_000);

    // Chunked: refused at the final PUT too.
    let location = reg
        .send(Method::POST, "/v2/q/app/blobs/uploads/", &[], Bytes::new())
        .await
        .header("location")
        .to_string();
    reg.send(Method::PATCH, &location, &[], big.clone())
        .await
        .expect(StatusCode::ACCEPTED);
    reg.send(
        Method::PUT,
        &format!("{location}?digest={digest}"),
        &[],
        Bytes::new(),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "DENIED");
    assert_eq!(reg.upload_dirs(), 0);

    // Mounting content from another project counts too.
    let elsewhere = reg.push_blob("free/app", &big).await;
    reg.send(
        Method::POST,
        &format!("/v2/q/app/blobs/uploads/?mount={elsewhere}&from=free/app"),
        &[],
        Bytes::new(),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "DENIED");
    reg.head(&format!("/v2/q/app/blobs/{elsewhere}"))
        .await
        .expect(StatusCode::NOT_FOUND);

    // Content the project already stores costs nothing: a second repository may link it.
    let small = random_bytes(1_000);
    reg.push_blob("q/app", &small).await;
    reg.push_blob("q/other", &small).await;
    assert_eq!(reg.registry.usage("q").await.unwrap(), 7_000);
}

#[tokio::test]
async fn manifest_over_quota_is_refused() {
    let reg = with_quota("q", 5_000);
    let manifest = reg
        .image_manifest("q/app", b"{}", &[&random_bytes(4_990)])
        .await;
    let body = serde_json::to_vec(&manifest).unwrap();
    reg.send(
        Method::PUT,
        "/v2/q/app/manifests/v1",
        &[("content-type", OCI_MANIFEST)],
        body,
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "DENIED");
    reg.get("/v2/q/app/tags/list")
        .await
        .expect_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
    assert_eq!(reg.registry.usage("q").await.unwrap(), 4_992);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_keep_usage_exact() {
    let reg = Arc::new(TestRegistry::new());
    let shared = Arc::new(random_bytes(3_000));
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (reg, shared) = (reg.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            let own = random_bytes(100 + i);
            let repo = format!("p/r{}", i % 4);
            reg.push_blob(&repo, &shared).await;
            reg.push_blob(&repo, &own).await;
            own.len() as u64
        }));
    }
    let mut expected = shared.len() as u64;
    for task in tasks {
        expected += task.await.unwrap();
    }
    assert_eq!(reg.registry.usage("p").await.unwrap(), expected);
}

#[tokio::test]
async fn deleting_a_manifest_releases_its_charge_at_once() {
    let reg = TestRegistry::new();
    let shared = random_bytes(5_000);
    let own = random_bytes(7_000);
    let (first, manifest_first) = reg.push_image("p/app", "v1", &shared).await;
    let config_first = manifest_first["config"]["size"].as_u64().unwrap();
    // A second image in the same repository sharing the layer.
    let second_manifest = reg
        .image_manifest("p/app", b"{\"second\":1}", &[&shared, &own])
        .await;
    let second = reg
        .push_manifest("p/app", "v2", OCI_MANIFEST, &second_manifest)
        .await;
    let first_only = config_first + manifest_len(&manifest_first);
    let second_only = 12 + own.len() as u64 + manifest_len(&second_manifest);
    let total = shared.len() as u64 + first_only + second_only;
    assert_eq!(reg.registry.usage("p").await.unwrap(), total);

    // No garbage collection: what only the deleted manifest used is released
    // at once; the shared layer stays charged for the other image.
    reg.delete(&format!("/v2/p/app/manifests/{first}"))
        .await
        .expect(StatusCode::ACCEPTED);
    assert_eq!(reg.registry.usage("p").await.unwrap(), total - first_only);
    reg.delete(&format!("/v2/p/app/manifests/{second}"))
        .await
        .expect(StatusCode::ACCEPTED);
    assert_eq!(reg.registry.usage("p").await.unwrap(), 0);

    // The blobs stay usable for a push in flight, which charges them again.
    let layer = sha256(&shared);
    reg.head(&format!("/v2/p/app/blobs/{layer}"))
        .await
        .expect(StatusCode::OK);
    reg.push_manifest("p/app", "v1", OCI_MANIFEST, &manifest_first)
        .await;
    let first_total = shared.len() as u64 + first_only;
    assert_eq!(reg.registry.usage("p").await.unwrap(), first_total);
    // Uploading a released blob again charges it again, once.
    reg.delete(&format!("/v2/p/app/manifests/{first}"))
        .await
        .expect(StatusCode::ACCEPTED);
    reg.push_blob("p/app", &own).await;
    reg.push_blob("p/app", &own).await;
    assert_eq!(reg.registry.usage("p").await.unwrap(), own.len() as u64);

    // Collection removes the released links without releasing them twice.
    let report = reg
        .registry
        .collect_garbage(GcOptions::with_grace(Duration::ZERO))
        .await
        .unwrap();
    assert!(report.links_removed >= 3, "{report:?}");
    assert_eq!(reg.registry.usage("p").await.unwrap(), 0);
}

#[tokio::test]
async fn a_released_blob_counts_against_the_quota_when_used_again() {
    let reg = with_quota("q", 10_000);
    let layer = random_bytes(6_000);
    let (digest, manifest) = reg.push_image("q/app", "v1", &layer).await;
    reg.delete(&format!("/v2/q/app/manifests/{digest}"))
        .await
        .expect(StatusCode::ACCEPTED);
    assert_eq!(reg.registry.usage("q").await.unwrap(), 0);
    // The freed room is taken by other content...
    reg.push_blob("q/other", &random_bytes(6_000)).await;
    // ...so the old manifest no longer fits, though its blobs are still here.
    reg.send(
        Method::PUT,
        "/v2/q/app/manifests/v1",
        &[("content-type", OCI_MANIFEST)],
        serde_json::to_vec(&manifest).unwrap(),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "DENIED");
    assert_eq!(reg.registry.usage("q").await.unwrap(), 6_000);
}

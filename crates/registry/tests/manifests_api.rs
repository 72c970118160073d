//! In-process tests of manifests, tags, the catalog and referrers against
//! the OCI Distribution Spec v1.1.

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use serde_json::json;
use wharf_oci::{Digest, DigestAlgorithm};
use wharf_registry::RegistryConfig;

#[tokio::test]
async fn push_and_pull_by_tag_and_digest() {
    let reg = TestRegistry::new();
    let (digest, manifest) = reg.push_image("p/app", "v1", b"layer one").await;
    let bytes = serde_json::to_vec(&manifest).unwrap();
    for reference in ["v1", digest.as_str()] {
        let reply = reg
            .get(&format!("/v2/p/app/manifests/{reference}"))
            .await
            .expect(StatusCode::OK);
        assert_eq!(
            reply.body, bytes,
            "served bytes are exactly the pushed bytes"
        );
        assert_eq!(reply.header("content-type"), OCI_MANIFEST);
        assert_eq!(reply.header("docker-content-digest"), digest.as_str());
        let head = reg
            .head(&format!("/v2/p/app/manifests/{reference}"))
            .await
            .expect(StatusCode::OK);
        assert_eq!(head.header("content-length"), bytes.len().to_string());
        assert!(head.body.is_empty());
    }
    // Push by digest: the digest must match the content.
    let again = reg
        .push_manifest("p/app", digest.as_str(), OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(again, digest);
    let sha512 = Digest::of(DigestAlgorithm::Sha512, &bytes);
    reg.send(
        Method::PUT,
        &format!("/v2/p/app/manifests/{sha512}"),
        &[("content-type", OCI_MANIFEST)],
        bytes.clone(),
    )
    .await
    .expect(StatusCode::CREATED);
    reg.get(&format!("/v2/p/app/manifests/{sha512}"))
        .await
        .expect(StatusCode::OK);
    let wrong = sha256(b"other");
    reg.send(
        Method::PUT,
        &format!("/v2/p/app/manifests/{wrong}"),
        &[("content-type", OCI_MANIFEST)],
        bytes,
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    reg.get("/v2/p/app/manifests/nope")
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    reg.get(&format!("/v2/p/other/manifests/{digest}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn manifests_referencing_missing_blobs_are_refused() {
    let reg = TestRegistry::new();
    let mut manifest = reg.image_manifest("p/app", b"{}", &[b"present"]).await;
    manifest["layers"][0]["digest"] = json!(sha256(b"absent"));
    let reply = reg
        .send(
            Method::PUT,
            "/v2/p/app/manifests/v1",
            &[("content-type", OCI_MANIFEST)],
            serde_json::to_vec(&manifest).unwrap(),
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(
        reply.json()["errors"][0]["detail"]["digest"],
        json!(sha256(b"absent"))
    );
    // A blob pushed to another repository does not count.
    let elsewhere = reg.push_blob("p/elsewhere", b"elsewhere").await;
    manifest["layers"][0]["digest"] = json!(elsewhere);
    manifest["layers"][0]["size"] = json!(9);
    reg.send(
        Method::PUT,
        "/v2/p/app/manifests/v1",
        &[("content-type", OCI_MANIFEST)],
        serde_json::to_vec(&manifest).unwrap(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
    // Nothing was stored: no tag, no repository, no manifest content.
    reg.get("/v2/p/app/tags/list")
        .await
        .expect_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
    assert_eq!(
        reg.get("/v2/_catalog").await.json()["repositories"],
        json!([])
    );
    let refused = sha256(&serde_json::to_vec(&manifest).unwrap());
    assert!(
        !reg.blob_files().iter().any(|f| f.ends_with(refused.hex())),
        "refused manifest content was stored"
    );
    assert_eq!(
        reg.blob_files().len(),
        3,
        "only the pushed blobs are stored"
    );
}

#[tokio::test]
async fn malformed_manifests_are_refused() {
    let reg = TestRegistry::new();
    let good = reg.image_manifest("p/app", b"{}", &[b"l"]).await;
    let mut wrong_size = good.clone();
    wrong_size["layers"][0]["size"] = json!(999);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (OCI_MANIFEST, b"{not json".to_vec()),
        (
            OCI_MANIFEST,
            br#"{"schemaVersion": 1, "mediaType": "application/vnd.oci.image.manifest.v1+json"}"#
                .to_vec(),
        ),
        (DOCKER_MANIFEST, serde_json::to_vec(&good).unwrap()),
        (
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            b"{}".to_vec(),
        ),
        (OCI_MANIFEST, serde_json::to_vec(&wrong_size).unwrap()),
        (
            OCI_MANIFEST,
            serde_json::to_vec(
                &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}),
            )
            .unwrap(),
        ),
    ];
    for (content_type, body) in cases {
        reg.send(
            Method::PUT,
            "/v2/p/app/manifests/v1",
            &[("content-type", content_type)],
            body,
        )
        .await
        .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
    }
    reg.send(
        Method::PUT,
        "/v2/p/app/manifests/bad:tag",
        &[("content-type", OCI_MANIFEST)],
        serde_json::to_vec(&good).unwrap(),
    )
    .await
    .expect(StatusCode::BAD_REQUEST);
    reg.send(
        Method::PUT,
        "/v2/p/app/manifests/.hidden",
        &[("content-type", OCI_MANIFEST)],
        serde_json::to_vec(&good).unwrap(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
    reg.get("/v2/p/app/tags/list")
        .await
        .expect_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
}

#[tokio::test]
async fn oversize_manifest_is_refused() {
    let reg = TestRegistry::with_config(RegistryConfig {
        max_manifest_bytes: 1024,
        ..RegistryConfig::default()
    });
    let mut manifest = reg.image_manifest("p/app", b"{}", &[b"l"]).await;
    manifest["annotations"] = json!({"padding": "x".repeat(2000)});
    reg.send(
        Method::PUT,
        "/v2/p/app/manifests/v1",
        &[("content-type", OCI_MANIFEST)],
        serde_json::to_vec(&manifest).unwrap(),
    )
    .await
    .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID");
}

#[tokio::test]
async fn indexes_nest_and_require_their_children() {
    let reg = TestRegistry::new();
    let (amd64, amd64_manifest) = reg.push_image("p/multi", "amd64", b"amd64 layer").await;
    let (arm64, arm64_manifest) = reg.push_image("p/multi", "arm64", b"arm64 layer").await;
    let size = |m: &serde_json::Value| serde_json::to_vec(m).unwrap().len();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd64, "size": size(&amd64_manifest), "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": arm64, "size": size(&arm64_manifest), "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    });
    let index_digest = reg
        .push_manifest("p/multi", "latest", OCI_INDEX, &index)
        .await;
    let nested = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_INDEX, "digest": index_digest, "size": size(&index)}],
    });
    reg.push_manifest("p/multi", "nested", OCI_INDEX, &nested)
        .await;
    let served = reg
        .get("/v2/p/multi/manifests/nested")
        .await
        .expect(StatusCode::OK);
    assert_eq!(served.header("content-type"), OCI_INDEX);

    // Children must be in the repository first.
    let dangling = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(b"missing"), "size": 7}],
    });
    reg.send(
        Method::PUT,
        "/v2/p/multi/manifests/bad",
        &[("content-type", OCI_INDEX)],
        serde_json::to_vec(&dangling).unwrap(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
}

#[tokio::test]
async fn docker_schema2_and_manifest_list() {
    let reg = TestRegistry::new();
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let config_digest = reg.push_blob("p/d", config).await;
    let layer = random_bytes(300);
    let layer_digest = reg.push_blob("p/d", &layer).await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [
            {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer_digest, "size": layer.len()},
            {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "digest": sha256(b"foreign"), "size": 7, "urls": ["https://example.invalid/layer"]},
        ],
    });
    let digest = reg
        .push_manifest("p/d", "v1", DOCKER_MANIFEST, &manifest)
        .await;
    assert_eq!(
        reg.get("/v2/p/d/manifests/v1").await.header("content-type"),
        DOCKER_MANIFEST
    );
    let list = json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [{"mediaType": DOCKER_MANIFEST, "digest": digest, "size": serde_json::to_vec(&manifest).unwrap().len(), "platform": {"architecture": "amd64", "os": "linux"}}],
    });
    reg.push_manifest("p/d", "list", DOCKER_LIST, &list).await;
    assert_eq!(
        reg.get("/v2/p/d/manifests/list")
            .await
            .header("content-type"),
        DOCKER_LIST
    );
}

#[tokio::test]
async fn referrers_follow_subject_with_artifact_type_filter() {
    let reg = TestRegistry::new();
    let (subject, subject_manifest) = reg.push_image("p/app", "v1", b"app").await;
    let subject_size = serde_json::to_vec(&subject_manifest).unwrap().len();
    let empty_config = reg.push_blob("p/app", b"{}").await;
    let mut artifacts = Vec::new();
    for (kind, payload) in [
        ("application/vnd.example.sbom", "sbom"),
        ("application/vnd.example.signature", "sig"),
    ] {
        let layer = reg.push_blob("p/app", payload.as_bytes()).await;
        let artifact = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": kind,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_config, "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": layer, "size": payload.len()}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_size},
            "annotations": {"org.example.kind": payload},
        });
        let bytes = serde_json::to_vec(&artifact).unwrap();
        let digest = sha256(&bytes);
        let reply = reg
            .send(
                Method::PUT,
                &format!("/v2/p/app/manifests/{digest}"),
                &[("content-type", OCI_MANIFEST)],
                bytes,
            )
            .await
            .expect(StatusCode::CREATED);
        assert_eq!(reply.header("oci-subject"), subject.as_str());
        artifacts.push((kind, digest));
    }

    let all = reg
        .get(&format!("/v2/p/app/referrers/{subject}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(all.header("content-type"), OCI_INDEX);
    assert!(all.headers.get("oci-filters-applied").is_none());
    let index = all.json();
    assert_eq!(index["mediaType"], OCI_INDEX);
    let listed = index["manifests"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    for entry in listed {
        assert_eq!(entry["mediaType"], OCI_MANIFEST);
        assert!(entry["annotations"]["org.example.kind"].is_string());
    }

    let filtered = reg
        .get(&format!(
            "/v2/p/app/referrers/{subject}?artifactType=application/vnd.example.sbom"
        ))
        .await
        .expect(StatusCode::OK);
    assert_eq!(filtered.header("oci-filters-applied"), "artifactType");
    let entries = filtered.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["digest"], json!(artifacts[0].1));
    assert_eq!(entries[0]["artifactType"], "application/vnd.example.sbom");

    // Unknown subjects have no referrers, not a 404.
    let none = reg
        .get(&format!("/v2/p/app/referrers/{}", sha256(b"unknown")))
        .await
        .expect(StatusCode::OK);
    assert_eq!(none.json()["manifests"], json!([]));
    reg.get("/v2/p/app/referrers/sha256:bad")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");

    // Deleting a referrer removes it from the list.
    reg.delete(&format!("/v2/p/app/manifests/{}", artifacts[1].1))
        .await
        .expect(StatusCode::ACCEPTED);
    let after = reg
        .get(&format!("/v2/p/app/referrers/{subject}"))
        .await
        .json();
    assert_eq!(after["manifests"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn subject_need_not_exist() {
    let reg = TestRegistry::new();
    let mut artifact = reg.image_manifest("p/app", b"{}", &[b"payload"]).await;
    let missing = sha256(b"not pushed yet");
    artifact["subject"] = json!({"mediaType": OCI_MANIFEST, "digest": missing, "size": 10});
    reg.push_manifest("p/app", "artifact", OCI_MANIFEST, &artifact)
        .await;
    let listed = reg
        .get(&format!("/v2/p/app/referrers/{missing}"))
        .await
        .json();
    assert_eq!(listed["manifests"].as_array().unwrap().len(), 1);
    // Artifact type falls back to the config media type.
    assert_eq!(
        listed["manifests"][0]["artifactType"],
        "application/vnd.oci.image.config.v1+json"
    );
}

#[tokio::test]
async fn tag_listing_paginates_in_lexical_order() {
    let reg = TestRegistry::new();
    let (_, manifest) = reg.push_image("p/app", "seed", b"x").await;
    for tag in ["b", "a", "c", "A", "d-1", "_z"] {
        reg.push_manifest("p/app", tag, OCI_MANIFEST, &manifest)
            .await;
    }
    let all = reg
        .get("/v2/p/app/tags/list")
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(
        all,
        json!({"name": "p/app", "tags": ["A", "_z", "a", "b", "c", "d-1", "seed"]})
    );

    let first = reg
        .get("/v2/p/app/tags/list?n=3")
        .await
        .expect(StatusCode::OK);
    assert_eq!(first.json()["tags"], json!(["A", "_z", "a"]));
    assert_eq!(
        first.header("link"),
        "</v2/p/app/tags/list?n=3&last=a>; rel=\"next\""
    );
    let second = reg.get("/v2/p/app/tags/list?n=3&last=a").await.json();
    assert_eq!(second["tags"], json!(["b", "c", "d-1"]));
    let last = reg.get("/v2/p/app/tags/list?n=3&last=d-1").await;
    assert_eq!(last.json()["tags"], json!(["seed"]));
    assert!(last.headers.get("link").is_none());
    assert_eq!(
        reg.get("/v2/p/app/tags/list?n=0").await.json()["tags"],
        json!([])
    );
    reg.get("/v2/p/app/tags/list?n=abc")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID");
    reg.get("/v2/p/none/tags/list")
        .await
        .expect_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
}

#[tokio::test]
async fn catalog_paginates_and_follows_deletes() {
    let reg = TestRegistry::new();
    let mut digests = Vec::new();
    for repo in ["b/x", "a", "a-b", "a/c", "c"] {
        digests.push((repo, reg.push_image(repo, "v1", repo.as_bytes()).await.0));
    }
    let all = reg.get("/v2/_catalog").await.json();
    assert_eq!(all["repositories"], json!(["a", "a-b", "a/c", "b/x", "c"]));
    let page = reg.get("/v2/_catalog?n=2").await;
    assert_eq!(page.json()["repositories"], json!(["a", "a-b"]));
    assert_eq!(
        page.header("link"),
        "</v2/_catalog?n=2&last=a%2Db>; rel=\"next\""
    );
    assert_eq!(
        reg.get("/v2/_catalog?n=2&last=a-b").await.json()["repositories"],
        json!(["a/c", "b/x"])
    );

    // Deleting the last manifest of a repository takes it out of the catalog at once.
    let a_digest = &digests[1].1;
    reg.delete(&format!("/v2/a/manifests/{a_digest}"))
        .await
        .expect(StatusCode::ACCEPTED);
    assert_eq!(
        reg.get("/v2/_catalog").await.json()["repositories"],
        json!(["a-b", "a/c", "b/x", "c"])
    );
}

#[tokio::test]
async fn deleting_manifests_and_tags() {
    let reg = TestRegistry::new();
    let (digest, manifest) = reg.push_image("p/app", "v1", b"content").await;
    reg.push_manifest("p/app", "v1-alias", OCI_MANIFEST, &manifest)
        .await;
    let (other, _) = reg.push_image("p/app", "v2", b"other content").await;

    // Deleting a tag leaves the manifest and other tags.
    reg.delete("/v2/p/app/manifests/v1-alias")
        .await
        .expect(StatusCode::ACCEPTED);
    assert_eq!(
        reg.get("/v2/p/app/tags/list").await.json()["tags"],
        json!(["v1", "v2"])
    );
    reg.get(&format!("/v2/p/app/manifests/{digest}"))
        .await
        .expect(StatusCode::OK);
    reg.delete("/v2/p/app/manifests/v1-alias")
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");

    // Deleting by digest removes the manifest and every tag pointing at it.
    reg.push_manifest("p/app", "v1-alias", OCI_MANIFEST, &manifest)
        .await;
    reg.delete(&format!("/v2/p/app/manifests/{digest}"))
        .await
        .expect(StatusCode::ACCEPTED);
    assert_eq!(
        reg.get("/v2/p/app/tags/list").await.json()["tags"],
        json!(["v2"])
    );
    reg.get(&format!("/v2/p/app/manifests/{digest}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    reg.get("/v2/p/app/manifests/v1")
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    reg.delete(&format!("/v2/p/app/manifests/{digest}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    reg.get(&format!("/v2/p/app/manifests/{other}"))
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn concurrent_pushes_to_one_repository_all_land() {
    let reg = std::sync::Arc::new(TestRegistry::new());
    let mut tasks = Vec::new();
    for i in 0..16 {
        let reg = reg.clone();
        tasks.push(tokio::spawn(async move {
            let layer = format!("layer {i}");
            reg.push_image("p/busy", &format!("t{i:02}"), layer.as_bytes())
                .await
                .0
        }));
    }
    let mut digests = Vec::new();
    for task in tasks {
        digests.push(task.await.unwrap());
    }
    let tags = reg.get("/v2/p/busy/tags/list").await.json();
    assert_eq!(tags["tags"].as_array().unwrap().len(), 16);
    // Concurrent deletes race on the repository record; the catalog ends exact.
    let mut deletes = Vec::new();
    for digest in digests {
        let reg = reg.clone();
        deletes.push(tokio::spawn(async move {
            reg.send(
                Method::DELETE,
                &format!("/v2/p/busy/manifests/{digest}"),
                &[],
                Bytes::new(),
            )
            .await
            .status
        }));
    }
    for delete in deletes {
        assert_eq!(delete.await.unwrap(), StatusCode::ACCEPTED);
    }
    assert_eq!(
        reg.get("/v2/_catalog").await.json()["repositories"],
        json!([])
    );
}

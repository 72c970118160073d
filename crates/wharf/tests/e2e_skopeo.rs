//! End to end with skopeo, a real client of the OCI Distribution spec: push
//! images generated in code from an OCI layout, inspect them, pull them back
//! and compare digests, push a multi-platform index and a Docker schema 2
//! manifest, and delete. skopeo logs in as `admin` (token authentication);
//! the project `proj` is created first, as pushes need an existing project.

mod common;

use std::collections::BTreeSet;

use common::image::{DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, sha256};
use common::skopeo::Skopeo;
use common::{Image, ImageIndex, OciLayout, TestServer, require_tool};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use wharf_oci::Digest;

const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

fn skopeo_available() -> bool {
    require_tool("skopeo", "apt-get install skopeo")
}

/// A temporary directory holding an OCI layout with `image` as `v1`.
fn layout_with(image: &Image) -> (tempfile::TempDir, OciLayout) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let layout = OciLayout::create(&dir.path().join("src"));
    layout.add_image(image, "v1");
    (dir, layout)
}

/// What the registry answers to a manifest HEAD: status, content type and
/// `Docker-Content-Digest`.
async fn head_manifest(
    server: &TestServer,
    repo: &str,
    reference: &str,
) -> (StatusCode, String, String) {
    let response = server
        .request(Method::HEAD, &format!("/v2/{repo}/manifests/{reference}"))
        .header("Accept", ACCEPT_MANIFESTS)
        .send()
        .await
        .expect("manifest HEAD");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    (
        response.status(),
        header("content-type"),
        header("docker-content-digest"),
    )
}

async fn tags_list(server: &TestServer, repo: &str) -> (StatusCode, Value) {
    let response = server
        .request(Method::GET, &format!("/v2/{repo}/tags/list"))
        .send()
        .await
        .expect("tags list");
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn sorted(items: impl IntoIterator<Item = impl Into<String>>) -> Vec<String> {
    let mut items: Vec<String> = items.into_iter().map(Into::into).collect();
    items.sort();
    items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_inspect_and_pull_keep_every_digest() {
    if !skopeo_available() {
        return;
    }
    let server = TestServer::start();
    server
        .admin()
        .await
        .create_project("proj", false, None)
        .await;
    let skopeo = Skopeo::new(&server);
    let image = Image::sample();
    let (dir, layout) = layout_with(&image);

    skopeo
        .copy(&layout.reference("v1"), &skopeo.image("proj/app:v1"), &[])
        .await;
    skopeo
        .copy(
            &layout.reference("v1"),
            &skopeo.image("proj/app:stable"),
            &[],
        )
        .await;

    let raw = skopeo.inspect_raw("proj/app:v1").await;
    assert_eq!(
        sha256(&raw),
        image.manifest.digest,
        "the registry must serve the pushed manifest bytes unchanged:\n{}",
        String::from_utf8_lossy(&raw)
    );
    let summary = skopeo.inspect("proj/app:stable").await;
    assert_eq!(
        summary["Digest"],
        image.manifest.digest.as_str(),
        "{summary}"
    );
    assert_eq!(summary["Architecture"], "amd64", "{summary}");
    assert_eq!(summary["Os"], "linux", "{summary}");
    let layers: Vec<&str> = image.layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(summary["Layers"], serde_json::json!(layers), "{summary}");

    assert_eq!(
        sorted(skopeo.list_tags("proj/app").await),
        ["stable", "v1"],
        "both pushed tags are listed"
    );
    let (status, content_type, digest) = head_manifest(&server, "proj/app", "v1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, OCI_MANIFEST);
    assert_eq!(digest, image.manifest.digest.as_str());

    let out = OciLayout::create(&dir.path().join("pulled"));
    skopeo
        .copy(&skopeo.image("proj/app:v1"), &out.reference("v1"), &[])
        .await;
    let pulled = out.resolve("v1");
    assert_eq!(
        pulled.digest, image.manifest.digest,
        "pulled manifest digest"
    );
    assert_eq!(pulled.media_type, OCI_MANIFEST);
    assert_eq!(
        out.closure(&pulled),
        image.digests(),
        "the pulled image has exactly the pushed manifest, config and layers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_platform_index_round_trip() {
    if !skopeo_available() {
        return;
    }
    let server = TestServer::start();
    server
        .admin()
        .await
        .create_project("proj", false, None)
        .await;
    let skopeo = Skopeo::new(&server);
    let index = ImageIndex::multi_arch();
    let dir = tempfile::tempdir().expect("temporary directory");
    let layout = OciLayout::create(&dir.path().join("src"));
    layout.add_index(&index, "multi");

    skopeo
        .copy(
            &layout.reference("multi"),
            &skopeo.image("proj/multi:v1"),
            &["--all"],
        )
        .await;

    let raw = skopeo.inspect_raw("proj/multi:v1").await;
    assert_eq!(raw, index.index.bytes, "the index is served unchanged");
    let (status, content_type, digest) = head_manifest(&server, "proj/multi", "v1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, OCI_INDEX);
    assert_eq!(digest, index.index.digest.as_str());
    for image in &index.images {
        let child = skopeo
            .inspect_raw(&format!("proj/multi@{}", image.manifest.digest))
            .await;
        assert_eq!(
            child, image.manifest.bytes,
            "the {} manifest is served by digest",
            image.architecture
        );
    }

    let out = OciLayout::create(&dir.path().join("pulled"));
    skopeo
        .copy(
            &skopeo.image("proj/multi:v1"),
            &out.reference("multi"),
            &["--all"],
        )
        .await;
    let pulled = out.resolve("multi");
    assert_eq!(pulled.digest, index.index.digest, "pulled index digest");
    assert_eq!(pulled.media_type, OCI_INDEX);
    assert_eq!(
        out.closure(&pulled),
        index.digests(),
        "the pulled index has both platforms' manifests, configs and the shared layers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_the_manifest_and_every_tag_on_it() {
    if !skopeo_available() {
        return;
    }
    let server = TestServer::start();
    server
        .admin()
        .await
        .create_project("proj", false, None)
        .await;
    let skopeo = Skopeo::new(&server);
    let image = Image::sample();
    let (dir, layout) = layout_with(&image);
    // Another manifest in the same repository, which the delete must spare.
    let other = Image::new("arm64", &common::image::sample_layers());
    let other_layout = OciLayout::create(&dir.path().join("other"));
    other_layout.add_image(&other, "v1");

    for tag in ["v1", "alias"] {
        skopeo
            .copy(
                &layout.reference("v1"),
                &skopeo.image(&format!("proj/app:{tag}")),
                &[],
            )
            .await;
    }
    skopeo
        .copy(
            &other_layout.reference("v1"),
            &skopeo.image("proj/app:other"),
            &[],
        )
        .await;
    assert_eq!(
        sorted(skopeo.list_tags("proj/app").await),
        ["alias", "other", "v1"]
    );

    // skopeo resolves the tag to its digest and deletes the manifest.
    skopeo.delete("proj/app:v1").await;

    for tag in ["v1", "alias"] {
        let inspect = skopeo.try_inspect_raw(&format!("proj/app:{tag}")).await;
        assert!(
            !inspect.status.success(),
            "tag {tag} still resolves after its manifest was deleted: {}",
            String::from_utf8_lossy(&inspect.stdout)
        );
        let (status, _, _) = head_manifest(&server, "proj/app", tag).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "HEAD of deleted tag {tag}");
    }
    let response = server
        .request(
            Method::GET,
            &format!("/v2/proj/app/manifests/{}", image.manifest.digest),
        )
        .header("Accept", ACCEPT_MANIFESTS)
        .send()
        .await
        .expect("manifest GET");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.expect("an OCI error body");
    assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN", "{body}");

    let (status, listing) = tags_list(&server, "proj/app").await;
    assert_eq!(status, StatusCode::OK, "{listing}");
    assert_eq!(listing["tags"], serde_json::json!(["other"]), "{listing}");
    assert_eq!(
        sha256(&skopeo.inspect_raw("proj/app:other").await),
        other.manifest.digest,
        "the other manifest survives"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_schema2_push_keeps_config_and_layers() {
    if !skopeo_available() {
        return;
    }
    let server = TestServer::start();
    server
        .admin()
        .await
        .create_project("proj", false, None)
        .await;
    let skopeo = Skopeo::new(&server);
    let image = Image::sample();
    let (dir, layout) = layout_with(&image);

    skopeo
        .copy(
            &layout.reference("v1"),
            &skopeo.image("proj/app:v2s2"),
            &["--format", "v2s2"],
        )
        .await;

    let raw = skopeo.inspect_raw("proj/app:v2s2").await;
    let manifest: Value = serde_json::from_slice(&raw).expect("the manifest is JSON");
    assert_eq!(manifest["mediaType"], DOCKER_MANIFEST, "{manifest}");
    assert_eq!(manifest["schemaVersion"], 2, "{manifest}");
    assert_eq!(
        manifest["config"]["digest"],
        image.config.digest.as_str(),
        "config kept: {manifest}"
    );
    let layers: BTreeSet<Digest> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            l["digest"]
                .as_str()
                .expect("digest")
                .parse()
                .expect("valid digest")
        })
        .collect();
    assert_eq!(
        layers,
        image.layers.iter().map(|l| l.digest.clone()).collect()
    );

    let digest = sha256(&raw);
    let (status, content_type, served_digest) = head_manifest(&server, "proj/app", "v2s2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, DOCKER_MANIFEST);
    assert_eq!(served_digest, digest.as_str());
    let summary = skopeo.inspect("proj/app:v2s2").await;
    assert_eq!(summary["Digest"], digest.as_str(), "{summary}");

    // Pulled into skopeo's `dir:` format, which keeps the manifest as
    // served (an `oci:` destination would convert it to OCI).
    let out = dir.path().join("pulled");
    skopeo
        .copy(
            &skopeo.image("proj/app:v2s2"),
            &format!("dir:{}", out.display()),
            &[],
        )
        .await;
    let pulled = std::fs::read(out.join("manifest.json")).expect("pulled manifest.json");
    assert_eq!(sha256(&pulled), digest, "pulled manifest digest");
    for blob in image.blobs().into_iter().skip(1) {
        let path = out.join(blob.digest.hex());
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("pulled {} ({}): {e}", blob.digest, blob.media_type));
        assert_eq!(sha256(&bytes), blob.digest, "content of {}", path.display());
    }
}

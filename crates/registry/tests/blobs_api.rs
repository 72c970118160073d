//! In-process tests of the blob and upload endpoints against the OCI
//! Distribution Spec v1.1.

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use wharf_oci::{Digest, DigestAlgorithm};
use wharf_registry::RegistryConfig;

#[tokio::test]
async fn ping_answers_with_api_version() {
    let reg = TestRegistry::new();
    let reply = reg.get("/v2/").await.expect(StatusCode::OK);
    assert_eq!(
        reply.header("docker-distribution-api-version"),
        "registry/2.0"
    );
    reg.send(Method::POST, "/v2/", &[], Bytes::new())
        .await
        .expect(StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn monolithic_post_then_put_and_single_post() {
    let reg = TestRegistry::new();
    let data = random_bytes(100_000);
    let digest = sha256(&data);

    // POST then PUT with the whole body.
    let start = reg
        .send(Method::POST, "/v2/p/a/blobs/uploads/", &[], Bytes::new())
        .await
        .expect(StatusCode::ACCEPTED);
    assert_eq!(start.header("range"), "0-0");
    let location = start.header("location").to_string();
    assert!(location.starts_with("/v2/p/a/blobs/uploads/"));
    assert_eq!(
        start.header("docker-upload-uuid"),
        location.rsplit('/').next().unwrap()
    );
    let done = reg
        .send(
            Method::PUT,
            &format!("{location}?digest={digest}"),
            &[("content-length", &data.len().to_string())],
            data.clone(),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(done.header("location"), format!("/v2/p/a/blobs/{digest}"));
    assert_eq!(done.header("docker-content-digest"), digest.as_str());

    let head = reg
        .head(&format!("/v2/p/a/blobs/{digest}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(head.header("content-length"), data.len().to_string());
    assert_eq!(head.header("docker-content-digest"), digest.as_str());
    assert!(head.body.is_empty());
    let get = reg
        .get(&format!("/v2/p/a/blobs/{digest}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(get.body, data);

    // Single POST with ?digest=.
    let other = random_bytes(5000);
    let other_digest = reg.push_blob("p/a", &other).await;
    assert_eq!(
        reg.get(&format!("/v2/p/a/blobs/{other_digest}")).await.body,
        other
    );
    assert_eq!(
        reg.upload_dirs(),
        0,
        "finished uploads leave no session behind"
    );
}

#[tokio::test]
async fn sha512_digests_are_verified() {
    let reg = TestRegistry::new();
    let data = random_bytes(70_000);
    let digest = Digest::of(DigestAlgorithm::Sha512, &data);
    reg.send(
        Method::POST,
        &format!("/v2/p/a/blobs/uploads/?digest={digest}"),
        &[],
        data.clone(),
    )
    .await
    .expect(StatusCode::CREATED);
    assert_eq!(
        reg.get(&format!("/v2/p/a/blobs/{digest}"))
            .await
            .expect(StatusCode::OK)
            .body,
        data
    );

    // Chunked, hashed as sha256 while streaming, finished as sha512: re-hashed at commit.
    let start = reg
        .send(Method::POST, "/v2/p/a/blobs/uploads/", &[], Bytes::new())
        .await;
    let location = start.header("location").to_string();
    let data2 = random_bytes(30_000);
    reg.send(
        Method::PATCH,
        &location,
        &[("content-range", "0-29999")],
        data2.clone(),
    )
    .await
    .expect(StatusCode::ACCEPTED);
    let digest2 = Digest::of(DigestAlgorithm::Sha512, &data2);
    reg.send(
        Method::PUT,
        &format!("{location}?digest={digest2}"),
        &[],
        Bytes::new(),
    )
    .await
    .expect(StatusCode::CREATED);
    assert_eq!(
        reg.get(&format!("/v2/p/a/blobs/{digest2}")).await.body,
        data2
    );
}

#[tokio::test]
async fn chunked_upload_with_status_and_out_of_order_chunk() {
    let reg = TestRegistry::new();
    let data = random_bytes(30_000);
    let digest = sha256(&data);
    let start = reg
        .send(Method::POST, "/v2/p/a/blobs/uploads/", &[], Bytes::new())
        .await
        .expect(StatusCode::ACCEPTED);
    let location = start.header("location").to_string();

    let first = reg
        .send(
            Method::PATCH,
            &location,
            &[("content-range", "0-9999"), ("content-length", "10000")],
            data[..10_000].to_vec(),
        )
        .await
        .expect(StatusCode::ACCEPTED);
    assert_eq!(first.header("range"), "0-9999");
    assert_eq!(first.header("location"), location);

    // A chunk that skips ahead is refused with 416 and the current range.
    let skipped = reg
        .send(
            Method::PATCH,
            &location,
            &[("content-range", "20000-29999")],
            data[20_000..].to_vec(),
        )
        .await
        .expect_error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID");
    assert_eq!(skipped.header("range"), "0-9999");
    // A chunk whose range disagrees with its length is refused.
    reg.send(
        Method::PATCH,
        &location,
        &[("content-range", "10000-10009"), ("content-length", "5")],
        vec![0u8; 5],
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "SIZE_INVALID");
    reg.send(
        Method::PATCH,
        &location,
        &[("content-range", "garbage")],
        vec![0u8; 5],
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID");

    let status = reg.get(&location).await.expect(StatusCode::NO_CONTENT);
    assert_eq!(status.header("range"), "0-9999");

    reg.send(
        Method::PATCH,
        &location,
        &[("content-range", "10000-19999")],
        data[10_000..20_000].to_vec(),
    )
    .await
    .expect(StatusCode::ACCEPTED);
    // The last chunk arrives with the PUT.
    reg.send(
        Method::PUT,
        &format!("{location}?digest={digest}"),
        &[("content-range", "20000-29999")],
        data[20_000..].to_vec(),
    )
    .await
    .expect(StatusCode::CREATED);
    assert_eq!(reg.get(&format!("/v2/p/a/blobs/{digest}")).await.body, data);
    reg.get(&location)
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn streamed_upload_without_content_range() {
    let reg = TestRegistry::new();
    let data = random_bytes(50_000);
    let digest = sha256(&data);
    let location = reg
        .send(Method::POST, "/v2/p/a/blobs/uploads/", &[], Bytes::new())
        .await
        .header("location")
        .to_string();
    reg.send(Method::PATCH, &location, &[], data[..25_000].to_vec())
        .await
        .expect(StatusCode::ACCEPTED);
    let second = reg
        .send(Method::PATCH, &location, &[], data[25_000..].to_vec())
        .await
        .expect(StatusCode::ACCEPTED);
    assert_eq!(second.header("range"), "0-49999");
    reg.send(
        Method::PUT,
        &format!("{location}?digest={digest}"),
        &[],
        Bytes::new(),
    )
    .await
    .expect(StatusCode::CREATED);
    assert_eq!(reg.get(&format!("/v2/p/a/blobs/{digest}")).await.body, data);
}

#[tokio::test]
async fn wrong_digest_is_refused_and_leaves_nothing() {
    let reg = TestRegistry::new();
    let data = random_bytes(10_000);
    let wrong = sha256(b"something else");
    let location = reg
        .send(Method::POST, "/v2/p/a/blobs/uploads/", &[], Bytes::new())
        .await
        .header("location")
        .to_string();
    reg.send(
        Method::PUT,
        &format!("{location}?digest={wrong}"),
        &[],
        data.clone(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    reg.send(
        Method::POST,
        &format!("/v2/p/a/blobs/uploads/?digest={wrong}"),
        &[],
        data.clone(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    reg.send(
        Method::PUT,
        &format!("{location}?digest=sha256:short"),
        &[],
        Bytes::new(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    reg.send(
        Method::POST,
        "/v2/p/a/blobs/uploads/?digest=md5:abc",
        &[],
        data.clone(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    reg.head(&format!("/v2/p/a/blobs/{wrong}"))
        .await
        .expect(StatusCode::NOT_FOUND);
    assert!(
        reg.blob_files().is_empty(),
        "no blob stored: {:?}",
        reg.blob_files()
    );
    assert_eq!(
        reg.upload_dirs(),
        0,
        "failed uploads leave no session behind"
    );
}

#[tokio::test]
async fn oversize_bodies_are_refused() {
    let reg = TestRegistry::with_config(RegistryConfig {
        max_blob_bytes: 1000,
        ..RegistryConfig::default()
    });
    let data = random_bytes(2000);
    let digest = sha256(&data);
    reg.send(
        Method::POST,
        &format!("/v2/p/a/blobs/uploads/?digest={digest}"),
        &[("content-length", "2000")],
        data.clone(),
    )
    .await
    .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID");
    // Without a declared length the limit is enforced while streaming.
    let location = reg
        .send(Method::POST, "/v2/p/a/blobs/uploads/", &[], Bytes::new())
        .await
        .header("location")
        .to_string();
    reg.send(Method::PATCH, &location, &[], data[..800].to_vec())
        .await
        .expect(StatusCode::ACCEPTED);
    reg.send(Method::PATCH, &location, &[], data[800..].to_vec())
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID");
    // The refused chunk changed nothing.
    assert_eq!(reg.get(&location).await.header("range"), "0-799");
    assert!(reg.blob_files().is_empty());
}

#[tokio::test]
async fn sessions_belong_to_their_repository_and_can_be_cancelled() {
    let reg = TestRegistry::new();
    let location = reg
        .send(Method::POST, "/v2/p/a/blobs/uploads/", &[], Bytes::new())
        .await
        .header("location")
        .to_string();
    let id = location.rsplit('/').next().unwrap();
    reg.get(&format!("/v2/p/other/blobs/uploads/{id}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    reg.get("/v2/p/a/blobs/uploads/../../../etc")
        .await
        .expect(StatusCode::NOT_FOUND);
    reg.get("/v2/p/a/blobs/uploads/not-a-session")
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    reg.delete(&location).await.expect(StatusCode::NO_CONTENT);
    reg.get(&location)
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(reg.upload_dirs(), 0);
}

#[tokio::test]
async fn range_requests() {
    let reg = TestRegistry::new();
    let data = random_bytes(1000);
    let digest = reg.push_blob("p/a", &data).await;
    let uri = format!("/v2/p/a/blobs/{digest}");
    let part = reg
        .send(
            Method::GET,
            &uri,
            &[("range", "bytes=100-199")],
            Bytes::new(),
        )
        .await
        .expect(StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.body, data[100..200]);
    assert_eq!(part.header("content-range"), "bytes 100-199/1000");
    let tail = reg
        .send(Method::GET, &uri, &[("range", "bytes=-10")], Bytes::new())
        .await
        .expect(StatusCode::PARTIAL_CONTENT);
    assert_eq!(tail.body, data[990..]);
    let open = reg
        .send(Method::GET, &uri, &[("range", "bytes=900-")], Bytes::new())
        .await
        .expect(StatusCode::PARTIAL_CONTENT);
    assert_eq!(open.body, data[900..]);
    let bad = reg
        .send(
            Method::GET,
            &uri,
            &[("range", "bytes=1000-1010")],
            Bytes::new(),
        )
        .await
        .expect(StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(bad.header("content-range"), "bytes */1000");
}

#[tokio::test]
async fn cross_repository_mount() {
    let reg = TestRegistry::new();
    let data = random_bytes(4000);
    let digest = reg.push_blob("p/src", &data).await;
    reg.head(&format!("/v2/p/dst/blobs/{digest}"))
        .await
        .expect(StatusCode::NOT_FOUND);

    let mounted = reg
        .send(
            Method::POST,
            &format!("/v2/p/dst/blobs/uploads/?mount={digest}&from=p/src"),
            &[],
            Bytes::new(),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(
        mounted.header("location"),
        format!("/v2/p/dst/blobs/{digest}")
    );
    assert_eq!(
        reg.get(&format!("/v2/p/dst/blobs/{digest}")).await.body,
        data
    );

    // A source that lacks the blob falls back to a normal upload session.
    let fallback = reg
        .send(
            Method::POST,
            &format!("/v2/p/third/blobs/uploads/?mount={digest}&from=p/empty"),
            &[],
            Bytes::new(),
        )
        .await
        .expect(StatusCode::ACCEPTED);
    assert!(
        fallback
            .header("location")
            .starts_with("/v2/p/third/blobs/uploads/")
    );
    reg.head(&format!("/v2/p/third/blobs/{digest}"))
        .await
        .expect(StatusCode::NOT_FOUND);

    // Without `from`, the registry finds the blob itself (spec 1.1 allows it).
    reg.send(
        Method::POST,
        &format!("/v2/p/fourth/blobs/uploads/?mount={digest}"),
        &[],
        Bytes::new(),
    )
    .await
    .expect(StatusCode::CREATED);
    // An unknown blob cannot be mounted anonymously either.
    let unknown = sha256(b"nope");
    reg.send(
        Method::POST,
        &format!("/v2/p/fourth/blobs/uploads/?mount={unknown}"),
        &[],
        Bytes::new(),
    )
    .await
    .expect(StatusCode::ACCEPTED);
    reg.send(
        Method::POST,
        &format!("/v2/p/x/blobs/uploads/?mount={digest}&from=../etc"),
        &[],
        Bytes::new(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "NAME_INVALID");
}

#[tokio::test]
async fn blob_delete_unlinks_from_one_repository() {
    let reg = TestRegistry::new();
    let data = random_bytes(100);
    let digest = reg.push_blob("p/a", &data).await;
    reg.push_blob("p/b", &data).await;
    reg.delete(&format!("/v2/p/a/blobs/{digest}"))
        .await
        .expect(StatusCode::ACCEPTED);
    reg.head(&format!("/v2/p/a/blobs/{digest}"))
        .await
        .expect(StatusCode::NOT_FOUND);
    reg.get(&format!("/v2/p/a/blobs/{digest}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    reg.head(&format!("/v2/p/b/blobs/{digest}"))
        .await
        .expect(StatusCode::OK);
    reg.delete(&format!("/v2/p/a/blobs/{digest}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn names_and_paths_are_checked() {
    let reg = TestRegistry::new();
    let digest = sha256(b"x");
    for path in [
        format!("/v2/../etc/blobs/{digest}"),
        format!("/v2/a/%2e%2e/blobs/{digest}"),
        format!("/v2/UPPER/blobs/{digest}"),
        format!("/v2/a//b/blobs/{digest}"),
        "/v2/-a/tags/list".to_string(),
    ] {
        reg.get(&path)
            .await
            .expect_error(StatusCode::BAD_REQUEST, "NAME_INVALID");
    }
    reg.get("/v2/a/blobs/sha256:notadigest")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    reg.get("/v2/a/unknown/thing")
        .await
        .expect(StatusCode::NOT_FOUND);
    reg.send(
        Method::PATCH,
        &format!("/v2/a/blobs/{digest}"),
        &[],
        Bytes::new(),
    )
    .await
    .expect_error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED");
}

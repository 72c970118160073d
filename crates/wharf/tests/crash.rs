//! Crash consistency of the real binary: SIGKILL in the middle of a large
//! blob upload leaves no trace of the blob and the push can be redone; and
//! every manifest the registry acknowledged (201) survives a SIGKILL that
//! lands in the middle of a storm of manifest pushes. Registry requests
//! authenticate as `admin` with registry tokens; the project `crash` is
//! created first.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::TestServer;
use common::image::{OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, sha256};
use common::registry::RegistryRequest;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};
use wharf_oci::{Digest, DigestAlgorithm, StreamHasher};

const BLOB_SIZE: usize = 300 << 20;
const CHUNK: usize = 1 << 20;
/// The upload stops feeding the connection after this much and waits to be
/// killed; the server has then received all but what the sockets buffer.
const PAUSE_AT: usize = 160 << 20;
/// What the server must have written to its data directory before the kill.
const STORED_BEFORE_KILL: u64 = 100 << 20;

/// The URL of an upload session, with `?digest=` to complete it.
fn upload_url(server: &TestServer, location: &str, digest: &Digest) -> Url {
    let mut url = Url::parse(&server.url())
        .and_then(|base| base.join(location))
        .unwrap_or_else(|e| panic!("bad upload Location {location:?}: {e}"));
    url.query_pairs_mut().append_pair("digest", digest.as_str());
    url
}

/// Opens an upload session in `repo`; returns its Location.
async fn start_upload(server: &TestServer, repo: &str) -> String {
    let response = server
        .request(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .expect("upload POST");
    assert_eq!(response.status(), StatusCode::ACCEPTED, "upload POST");
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("upload POST without Location")
        .to_string()
}

/// `data` as a body of 1 MiB chunks. With `Some((paused, resume))`, the
/// stream stops after [`PAUSE_AT`] bytes, notifies `paused`, and goes on once
/// `resume` fires or its sender is dropped.
fn chunked_body(data: Bytes, pause: Option<(Arc<Notify>, oneshot::Receiver<()>)>) -> reqwest::Body {
    let mut pause = pause;
    let stream = futures_util::stream::unfold(0usize, move |offset| {
        let data = data.clone();
        let pause = if offset == PAUSE_AT {
            pause.take()
        } else {
            None
        };
        async move {
            if let Some((paused, resume)) = pause {
                paused.notify_one();
                let _ = resume.await;
            }
            if offset >= data.len() {
                return None;
            }
            let end = (offset + CHUNK).min(data.len());
            Some((Ok::<_, std::io::Error>(data.slice(offset..end)), end))
        }
    });
    reqwest::Body::wrap_stream(stream)
}

fn put_blob(server: &TestServer, url: Url, data: &Bytes, body: reqwest::Body) -> RegistryRequest {
    server
        .request_url(Method::PUT, url)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", data.len())
        .body(body)
}

/// Every file under `dir`, with its size.
fn files_under(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => pending.push(path),
                Ok(meta) => files.push((path, meta.len())),
                Err(_) => {}
            }
        }
    }
    files
}

async fn wait_for_stored_bytes(dir: &Path, at_least: u64, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let stored: u64 = files_under(dir).iter().map(|(_, size)| size).sum();
        if stored >= at_least {
            return stored;
        }
        assert!(
            Instant::now() < deadline,
            "the server stored only {stored} bytes under {} within {timeout:?}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn catalog(server: &TestServer) -> Vec<String> {
    let response = server
        .request(Method::GET, "/v2/_catalog")
        .send()
        .await
        .expect("catalog GET");
    assert_eq!(response.status(), StatusCode::OK, "catalog GET");
    let body: Value = response.json().await.expect("catalog JSON");
    body["repositories"]
        .as_array()
        .unwrap_or_else(|| panic!("catalog without repositories: {body}"))
        .iter()
        .map(|r| {
            r.as_str()
                .expect("repository names are strings")
                .to_string()
        })
        .collect()
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_blob_upload_leaves_no_blob_and_push_can_be_redone() {
    let started = Instant::now();
    let mut server = TestServer::start();
    server
        .admin()
        .await
        .create_project("crash", false, None)
        .await;
    let data = Bytes::from(common::image::random_bytes(BLOB_SIZE));
    let digest = sha256(&data);
    eprintln!(
        "generated {} MiB in {:?}",
        BLOB_SIZE >> 20,
        started.elapsed()
    );

    // Monolithic upload: POST, then one PUT with the whole body, cut short.
    let location = start_upload(&server, "crash/test").await;
    let paused = Arc::new(Notify::new());
    let (resume, resume_rx) = oneshot::channel();
    let request = put_blob(
        &server,
        upload_url(&server, &location, &digest),
        &data,
        chunked_body(data.clone(), Some((paused.clone(), resume_rx))),
    );
    let upload = tokio::spawn(request.send());
    tokio::time::timeout(Duration::from_secs(60), paused.notified())
        .await
        .expect("the upload did not get through the first 160 MiB within 60 s");
    let stored = wait_for_stored_bytes(
        &server.data_dir(),
        STORED_BEFORE_KILL,
        Duration::from_secs(30),
    )
    .await;
    eprintln!(
        "{} MiB sent, {} MiB stored by the server at {:?}; killing it",
        PAUSE_AT >> 20,
        stored >> 20,
        started.elapsed()
    );
    server.kill();
    // Let the client go on writing into the dead connection.
    drop(resume);
    let outcome = tokio::time::timeout(Duration::from_secs(30), upload)
        .await
        .expect("the interrupted upload request did not end")
        .expect("upload task");
    if let Ok(response) = &outcome {
        assert!(
            !response.status().is_success(),
            "an upload cut short by SIGKILL was acknowledged with {}",
            response.status()
        );
    }

    server.restart();
    let head = server
        .request(Method::HEAD, &format!("/v2/crash/test/blobs/{digest}"))
        .send()
        .await
        .expect("blob HEAD");
    assert_eq!(
        head.status(),
        StatusCode::NOT_FOUND,
        "HEAD of the interrupted blob"
    );
    let get = server
        .request(Method::GET, &format!("/v2/crash/test/blobs/{digest}"))
        .send()
        .await
        .expect("blob GET");
    assert_eq!(
        get.status(),
        StatusCode::NOT_FOUND,
        "GET of the interrupted blob"
    );
    let error: Value = get.json().await.expect("an OCI error body");
    assert_eq!(error["errors"][0]["code"], "BLOB_UNKNOWN", "{error}");
    let named_after_digest: Vec<_> = files_under(&server.data_dir())
        .into_iter()
        .filter(|(path, _)| path.to_string_lossy().contains(digest.hex()))
        .collect();
    assert!(
        named_after_digest.is_empty(),
        "partial content published under the digest: {named_after_digest:?}"
    );
    assert!(
        !catalog(&server).await.contains(&"crash/test".to_string()),
        "a repository with only an interrupted upload is in the catalog"
    );

    // The same push again, to the end this time.
    let location = start_upload(&server, "crash/test").await;
    let response = put_blob(
        &server,
        upload_url(&server, &location, &digest),
        &data,
        chunked_body(data.clone(), None),
    )
    .send()
    .await
    .expect("blob PUT");
    assert_eq!(response.status(), StatusCode::CREATED, "redone blob PUT");
    assert_eq!(header(&response, "docker-content-digest"), digest.as_str());
    eprintln!("pushed again at {:?}", started.elapsed());

    let response = server
        .request(Method::GET, &format!("/v2/crash/test/blobs/{digest}"))
        .send()
        .await
        .expect("blob GET");
    assert_eq!(response.status(), StatusCode::OK, "GET of the pushed blob");
    let mut hasher = StreamHasher::new(DigestAlgorithm::Sha256);
    let mut received = 0usize;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("reading the blob");
        received += chunk.len();
        hasher.update(&chunk);
    }
    assert_eq!(received, BLOB_SIZE, "length of the downloaded blob");
    assert_eq!(hasher.finish(), digest, "digest of the downloaded blob");
    eprintln!("done at {:?}", started.elapsed());
}

/// Pushes `bytes` as a blob of `repo` (POST, then PUT with the content).
async fn push_blob(server: &TestServer, repo: &str, bytes: Vec<u8>) -> Digest {
    let digest = sha256(&bytes);
    let location = start_upload(server, repo).await;
    let response = server
        .request_url(Method::PUT, upload_url(server, &location, &digest))
        .header("Content-Type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .expect("blob PUT");
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "blob PUT of {digest}"
    );
    digest
}

/// A manifest the storm pushes under `tag-{n}`.
struct StormManifest {
    tag: String,
    bytes: Vec<u8>,
    digest: Digest,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_manifests_survive_sigkill() {
    const MANIFESTS: usize = 60;
    const KILL_AFTER_ACKS: usize = 20;
    let repo = "crash/storm";
    let mut server = TestServer::start();
    server
        .admin()
        .await
        .create_project("crash", false, None)
        .await;

    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [] },
    }))
    .expect("config JSON");
    let config_size = config.len();
    let layer = common::image::random_bytes(64 << 10);
    let layer_size = layer.len();
    let config_digest = push_blob(&server, repo, config).await;
    let layer_digest = push_blob(&server, repo, layer).await;
    let manifests: Vec<Arc<StormManifest>> = (0..MANIFESTS)
        .map(|n| {
            let bytes = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size },
                "layers": [{ "mediaType": OCI_LAYER_GZIP, "digest": layer_digest, "size": layer_size }],
                "annotations": { "storm.index": n.to_string() },
            }))
            .expect("manifest JSON");
            Arc::new(StormManifest {
                tag: format!("tag-{n}"),
                digest: sha256(&bytes),
                bytes,
            })
        })
        .collect();

    // All pushes at once; the server dies as soon as KILL_AFTER_ACKS of
    // them were acknowledged, the others being in flight or not yet sent.
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let enough = Arc::new(Notify::new());
    let mut storm = tokio::task::JoinSet::new();
    for manifest in &manifests {
        let request = server
            .request(
                Method::PUT,
                &format!("/v2/{repo}/manifests/{}", manifest.tag),
            )
            .header("Content-Type", OCI_MANIFEST)
            .body(manifest.bytes.clone());
        let (manifest, acknowledged, enough) =
            (manifest.clone(), acknowledged.clone(), enough.clone());
        storm.spawn(async move {
            let Ok(response) = request.send().await else {
                return;
            };
            if response.status() == StatusCode::CREATED {
                assert_eq!(
                    header(&response, "docker-content-digest"),
                    manifest.digest.as_str(),
                    "digest acknowledged for {}",
                    manifest.tag
                );
                let mut acknowledged = acknowledged.lock().expect("acknowledged lock");
                acknowledged.push(manifest.clone());
                if acknowledged.len() == KILL_AFTER_ACKS {
                    enough.notify_one();
                }
            }
        });
    }
    tokio::time::timeout(Duration::from_secs(60), enough.notified())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "only {} of {MANIFESTS} manifest pushes were acknowledged within 60 s",
                acknowledged.lock().expect("acknowledged lock").len()
            )
        });
    server.kill();
    while let Some(joined) = storm.join_next().await {
        joined.expect("a manifest push task panicked");
    }
    let acknowledged: Vec<Arc<StormManifest>> =
        acknowledged.lock().expect("acknowledged lock").clone();
    eprintln!(
        "{} of {MANIFESTS} manifest pushes acknowledged before the kill",
        acknowledged.len()
    );

    server.restart();
    for manifest in &acknowledged {
        for reference in [manifest.tag.as_str(), manifest.digest.as_str()] {
            let response = server
                .request(Method::GET, &format!("/v2/{repo}/manifests/{reference}"))
                .header("Accept", OCI_MANIFEST)
                .send()
                .await
                .expect("manifest GET");
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "acknowledged manifest {reference} lost in the crash"
            );
            assert_eq!(
                header(&response, "docker-content-digest"),
                manifest.digest.as_str()
            );
            let body = response.bytes().await.expect("manifest body");
            assert_eq!(body, manifest.bytes, "content of {reference}");
        }
    }
    // Pushes that were never acknowledged may or may not have landed, but
    // never half: a tag that exists names its own manifest.
    for manifest in &manifests {
        let response = server
            .request(
                Method::GET,
                &format!("/v2/{repo}/manifests/{}", manifest.tag),
            )
            .header("Accept", OCI_MANIFEST)
            .send()
            .await
            .expect("manifest GET");
        match response.status() {
            StatusCode::OK => {
                let body = response.bytes().await.expect("manifest body");
                assert_eq!(body, manifest.bytes, "content behind {}", manifest.tag);
            }
            StatusCode::NOT_FOUND => {
                let error: Value = response.json().await.expect("an OCI error body");
                assert_eq!(error["errors"][0]["code"], "MANIFEST_UNKNOWN", "{error}");
            }
            status => panic!("GET {} after restart: {status}", manifest.tag),
        }
    }

    let response = server
        .request(Method::GET, &format!("/v2/{repo}/tags/list"))
        .send()
        .await
        .expect("tags GET");
    assert_eq!(response.status(), StatusCode::OK);
    let listing: Value = response.json().await.expect("tags JSON");
    let tags: Vec<&str> = listing["tags"]
        .as_array()
        .unwrap_or_else(|| panic!("no tags in {listing}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for manifest in &acknowledged {
        assert!(
            tags.contains(&manifest.tag.as_str()),
            "acknowledged tag {} missing from {listing}",
            manifest.tag
        );
    }
    assert!(
        catalog(&server).await.contains(&repo.to_string()),
        "{repo} missing from the catalog after the restart"
    );
    for digest in [&config_digest, &layer_digest] {
        let response = server
            .request(Method::HEAD, &format!("/v2/{repo}/blobs/{digest}"))
            .send()
            .await
            .expect("blob HEAD");
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "blob {digest} after restart"
        );
    }
}

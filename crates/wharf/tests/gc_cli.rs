//! `wharf gc` against a running server (as a logged-in administrator):
//! unused content, untagged manifests on request, the upload leftovers of a
//! push killed mid-layer (reported, and cleared with `--uploads-older-than`);
//! and the server's own GC schedule.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::TestServer;
use common::cli::wharf;
use common::server::ADMIN_PASSWORD;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use sha2::Digest as _;

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Pushes `config`, `layers` and a manifest over them as `repo:v1`; returns
/// the manifest's digest.
async fn push_image(server: &TestServer, repo: &str, config: &[u8], layers: &[&[u8]]) -> String {
    for blob in std::iter::once(config).chain(layers.iter().copied()) {
        let response = server
            .request(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(blob)),
            )
            .body(blob.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|layer| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(layer), "size": layer.len()}))
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": config.len()},
        "layers": layers,
    });
    let body = serde_json::to_vec(&manifest).unwrap();
    let response = server
        .request(Method::PUT, &format!("/v2/{repo}/manifests/v1"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    sha256(&body)
}

/// Deletes `repo`'s manifest or tag `reference`.
async fn delete_manifest(server: &TestServer, repo: &str, reference: &str) {
    let response = server
        .request(Method::DELETE, &format!("/v2/{repo}/manifests/{reference}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

/// Pushes a config and a layer blob and a manifest tagged `v1`; deletes the
/// manifest again and returns the layer digest, now garbage.
async fn push_and_delete(server: &TestServer, repo: &str) -> String {
    let project = repo.split('/').next().unwrap();
    server
        .admin()
        .await
        .create_project(project, false, None)
        .await;
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let manifest = push_image(server, repo, config, &[&layer]).await;
    delete_manifest(server, repo, &manifest).await;
    sha256(&layer)
}

fn blob_file_exists(server: &TestServer, digest: &str) -> bool {
    let hex = digest.trim_start_matches("sha256:");
    server
        .data_dir()
        .join("registry/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .exists()
}

/// Logs the client in as `admin`, as an operator would before running gc.
fn login_as_admin(server: &TestServer, home: &std::path::Path) {
    use std::io::Write;
    let mut child = wharf(home)
        .args(["login", &server.url(), "-u", "admin", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{ADMIN_PASSWORD}").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "wharf login failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn wharf_gc(server: &TestServer, home: &std::path::Path, args: &[&str]) -> String {
    let output = wharf(home)
        .args(["gc", "--server", &server.url()])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "wharf gc failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn gc_command_reports_then_removes() {
    let server = TestServer::start_with(&["--gc-grace", "0"]);
    let layer = push_and_delete(&server, "gc/app").await;
    let home = tempfile::tempdir().unwrap();

    // Without a login the command is refused with a hint.
    let refused = wharf(home.path())
        .args(["gc", "--server", &server.url()])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("wharf login"), "{stderr}");

    login_as_admin(&server, home.path());
    let dry: serde_json::Value = serde_json::from_str(&wharf_gc(
        &server,
        home.path(),
        &["--dry-run", "-o", "json"],
    ))
    .unwrap();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["blobs_removed"], 3, "config, layer and manifest: {dry}");
    assert!(
        blob_file_exists(&server, &layer),
        "a dry run removes nothing"
    );

    let report = wharf_gc(&server, home.path(), &[]);
    assert!(report.starts_with("removed 3 blobs"), "{report}");
    assert!(!blob_file_exists(&server, &layer));
    let response = server
        .request(Method::GET, &format!("/v2/gc/app/blobs/{layer}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(wharf_gc(&server, home.path(), &[]).starts_with("removed 0 blobs"));
}

#[test]
fn gc_command_explains_an_unreachable_server() {
    let home = tempfile::tempdir().unwrap();
    let output = wharf(home.path())
        .args(["gc", "--server", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is the server running?"), "{stderr}");
}

#[tokio::test]
async fn server_collects_on_its_schedule() {
    let server = TestServer::start_with(&["--gc-grace", "0", "--gc-interval", "1s"]);
    let layer = push_and_delete(&server, "gc/scheduled").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while blob_file_exists(&server, &layer) {
        assert!(
            Instant::now() < deadline,
            "scheduled GC did not remove {layer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The upload sessions on disk: (directory, bytes of data).
fn upload_sessions(server: &TestServer) -> Vec<(std::path::PathBuf, u64)> {
    let dir = server.data_dir().join("registry/uploads");
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::metadata(path.join("data")).map_or(0, |m| m.len());
            (path, bytes)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_reports_leftovers_of_a_killed_push_and_clears_them_on_request() {
    let mut server = TestServer::start();
    server
        .admin()
        .await
        .create_project("big", false, None)
        .await;
    let response = server
        .request(Method::POST, "/v2/big/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    // A push that sends 8 MiB of a larger layer, then hangs until killed.
    const SENT: u64 = 8 << 20;
    let chunks =
        (0..8).map(|i| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![i as u8; 1 << 20])));
    let body = futures_util::stream::iter(chunks).chain(futures_util::stream::pending());
    let push = server
        .request(Method::PATCH, &location)
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let push = tokio::spawn(push);
    let deadline = Instant::now() + Duration::from_secs(30);
    while upload_sessions(&server).iter().map(|s| s.1).sum::<u64>() < SENT {
        assert!(
            Instant::now() < deadline,
            "the server did not write the chunk"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // kill -9 mid-push, and start again on the same data.
    server.kill();
    push.abort();
    server.restart();
    let sessions = upload_sessions(&server);
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].1, SENT, "the leftover survives the crash");

    let home = tempfile::tempdir().unwrap();
    login_as_admin(&server, home.path());
    let report = wharf_gc(&server, home.path(), &[]);
    assert!(
        report.contains("1 upload sessions left (8 MiB)"),
        "gc reports the leftover: {report}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&wharf_gc(&server, home.path(), &["-o", "json"])).unwrap();
    assert_eq!(json["uploads_left"], 1, "{json}");
    assert_eq!(json["upload_bytes_left"], SENT, "{json}");

    // Younger than asked: kept. A bad duration: refused, nothing changes.
    let report = wharf_gc(&server, home.path(), &["--uploads-older-than", "1h"]);
    assert!(report.contains("1 upload sessions left"), "{report}");
    let refused = wharf(home.path())
        .args([
            "gc",
            "--server",
            &server.url(),
            "--uploads-older-than",
            "soon",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("invalid duration"), "{stderr}");
    assert_eq!(upload_sessions(&server).len(), 1);

    // Idle for over a second now (the data stopped at the kill).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let dry = wharf_gc(
        &server,
        home.path(),
        &["--uploads-older-than", "1s", "--dry-run"],
    );
    assert!(
        dry.contains("would remove 8 MiB of upload leftovers"),
        "{dry}"
    );
    assert_eq!(upload_sessions(&server).len(), 1);
    let report = wharf_gc(&server, home.path(), &["--uploads-older-than", "1s"]);
    assert!(report.contains(", 1 upload sessions in "), "{report}");
    assert!(
        report.contains("removed 8 MiB of upload leftovers"),
        "{report}"
    );
    assert!(!report.contains("sessions left"), "{report}");
    assert!(upload_sessions(&server).is_empty());
    let response = server.request(Method::GET, &location).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

/// Pushes a small image as `repo:v1` and deletes the tag, leaving an
/// untagged manifest; returns its digest.
async fn push_untagged(server: &TestServer, repo: &str) -> String {
    let config = br#"{"architecture":"arm64","os":"linux"}"#;
    let digest = push_image(server, repo, config, &[]).await;
    delete_manifest(server, repo, "v1").await;
    digest
}

/// The status of a manifest HEAD.
async fn manifest_status(server: &TestServer, repo: &str, digest: &str) -> StatusCode {
    server
        .request(Method::HEAD, &format!("/v2/{repo}/manifests/{digest}"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn gc_command_deletes_untagged_manifests_on_request() {
    let server = TestServer::start_with(&["--gc-grace", "0"]);
    server.admin().await.create_project("gc", false, None).await;
    let digest = push_untagged(&server, "gc/app").await;
    let home = tempfile::tempdir().unwrap();
    login_as_admin(&server, home.path());
    let report = wharf_gc(&server, home.path(), &[]);
    assert!(!report.contains("untagged"), "{report}");
    assert_eq!(
        manifest_status(&server, "gc/app", &digest).await,
        StatusCode::OK,
        "kept without the option"
    );
    let dry = wharf_gc(&server, home.path(), &["--delete-untagged", "--dry-run"]);
    assert!(dry.contains("would remove 1 untagged manifests"), "{dry}");
    assert_eq!(
        manifest_status(&server, "gc/app", &digest).await,
        StatusCode::OK
    );
    let report = wharf_gc(&server, home.path(), &["--delete-untagged"]);
    assert!(report.contains("removed 1 untagged manifests"), "{report}");
    assert_eq!(
        manifest_status(&server, "gc/app", &digest).await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn scheduled_collections_delete_untagged_manifests_when_configured() {
    let server = TestServer::start_with(&[
        "--gc-grace",
        "0",
        "--gc-interval",
        "1s",
        "--gc-delete-untagged",
    ]);
    server.admin().await.create_project("gc", false, None).await;
    let digest = push_untagged(&server, "gc/scheduled").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while manifest_status(&server, "gc/scheduled", &digest).await == StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "scheduled GC did not delete untagged {digest}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        manifest_status(&server, "gc/scheduled", &digest).await,
        StatusCode::NOT_FOUND
    );
}

//! `wharf gc` against a running server (as a logged-in administrator), and
//! the server's own GC schedule.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::TestServer;
use common::cli::wharf;
use common::server::ADMIN_PASSWORD;
use reqwest::{Method, StatusCode};
use sha2::Digest as _;

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
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
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let layer: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
    for blob in [&config, &layer] {
        let response = server
            .request(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(blob)),
            )
            .body(blob.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(&layer), "size": layer.len()}],
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
    let response = server
        .request(
            Method::DELETE,
            &format!("/v2/{repo}/manifests/{}", sha256(&body)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
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

//! Refusals sent before the request body is read reach the client: a client
//! that writes its whole body before reading (as simple HTTP clients and the
//! OCI conformance suite's large-manifest check do) gets the 413 or 401,
//! not a broken pipe or a reset.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::TestServer;
use common::server::admin_credentials;

/// Writes `head` and all of `body`, then reads the response's status line.
fn write_all_then_read(host: &str, head: &str, body: &[u8]) -> String {
    let mut stream = TcpStream::connect(host).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream
        .write_all(body)
        .expect("the server reads the body it refused, rather than resetting");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .expect("the response arrives, then the server closes");
    let response = String::from_utf8_lossy(&response);
    response.lines().next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_the_body_reach_clients_that_write_it_all_first() {
    let server = TestServer::start();
    server
        .admin()
        .await
        .create_project("shop", false, None)
        .await;
    let token = server
        .registry_as(Some(&admin_credentials()))
        .fetch_token(&server.realm(), "wharf", &["repository:shop/big:pull,push"])
        .await
        .token();
    let host = server.host();
    let manifest = vec![b' '; 5 << 20];
    let head = format!(
        "PUT /v2/shop/big/manifests/latest HTTP/1.1\r\nHost: {host}\r\n\
         Content-Type: application/vnd.oci.image.manifest.v1+json\r\n\
         Authorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
        manifest.len()
    );
    let status = tokio::task::spawn_blocking(move || write_all_then_read(&host, &head, &manifest))
        .await
        .unwrap();
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");

    // No token at all, and a 32 MiB chunk: the challenge arrives.
    let host = server.host();
    let chunk = vec![7u8; 32 << 20];
    let head = format!(
        "PATCH /v2/shop/big/blobs/uploads/00000000-0000-0000-0000-000000000000 HTTP/1.1\r\n\
         Host: {host}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        chunk.len()
    );
    let status = tokio::task::spawn_blocking(move || write_all_then_read(&host, &head, &chunk))
        .await
        .unwrap();
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");
}

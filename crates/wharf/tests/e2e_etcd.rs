//! The whole server on etcd (`--store etcd://...`): registry metadata,
//! identities and cluster objects live there and survive a restart; with
//! two servers on one etcd, leadership moves at once when the leader is
//! restarted after a crash or stopped cleanly.

mod common;

use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::{Image, TestServer, require_tool};
use reqwest::{Method, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_on_etcd_and_keeps_its_state() {
    if !require_tool("etcd", "apt-get install etcd-server") {
        return;
    }
    let etcd = Etcd::start();
    let mut server = TestServer::start_with(&["--store", &etcd.store_arg()]);
    assert!(
        !server.data_dir().join("state.redb").exists(),
        "no embedded store when on etcd"
    );
    let admin = server.admin().await;
    admin.create_project("shop", false, None).await;

    // Registry metadata on etcd.
    let image = Image::sample();
    let (status, body) = server
        .registry()
        .push_image(&server.url(), "shop/app", "v1", &image)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Cluster objects on etcd, with the controllers leading through it.
    admin.add_node("n1").await;
    admin
        .schedule("shop", "web", 2, Duration::from_secs(30))
        .await;

    // Restart: everything comes back from etcd.
    server.restart();
    let (status, manifest) = server
        .registry()
        .get_manifest(&server.url(), "shop/app", "v1")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(manifest, image.manifest.bytes.to_vec());
    let admin = server.admin().await;
    let deployment = admin
        .expect(
            Method::GET,
            "/api/v1/projects/shop/deployments/web",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(deployment["spec"]["replicas"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_at_once_after_a_crash_restart_and_a_clean_stop() {
    if !require_tool("etcd", "apt-get install etcd-server") {
        return;
    }
    // The leader lease lives 10 s; waiting it out took 10 to 13 s.
    let at_once = Duration::from_secs(3);
    let etcd = Etcd::start();
    let store = etcd.store_arg();
    let mut a = TestServer::start_with(&["--store", &store]);
    a.admin().await.start_cluster("shop", "n1").await;
    // b campaigns too: from now on a's lease is all that keeps it out.
    let b = TestServer::start_with(&["--store", &store]);

    // kill -9 and restart a: its new process takes its own lease back.
    let crashed = Instant::now();
    a.restart();
    let admin = a.admin().await;
    admin.schedule("shop", "after-crash", 1, at_once).await;
    let restarted = crashed.elapsed();
    assert!(
        a.log_text()
            .contains("took back the leader lease of this server's previous process"),
        "{}",
        a.log_tail(30)
    );

    // SIGTERM a: it gives the lease up, and b leads at once.
    let stopping = Instant::now();
    a.terminate();
    let admin = b.admin().await;
    admin.schedule("shop", "after-stop", 1, at_once).await;
    let handed_over = stopping.elapsed();
    eprintln!(
        "scheduling again {} ms after kill -9 (restart included), {} ms after SIGTERM of the leader",
        restarted.as_millis(),
        handed_over.as_millis()
    );
    assert!(b.log_text().contains("leading the control plane"));
}

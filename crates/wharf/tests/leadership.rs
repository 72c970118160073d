//! Leadership of the control plane with the real binary on the embedded
//! store: a server restarted after `kill -9` schedules again at once
//! instead of waiting out the lease its previous process held, and
//! `wharf server` and `wharf up` give the lease up when stopped with
//! SIGTERM (SIGINT takes the same path). (Two servers on etcd:
//! `e2e_etcd.rs`.)

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::TestServer;
use common::cli::wharf;
use common::server::ADMIN_PASSWORD;
use wharf_control::Candidate;
use wharf_store::{RedbStore, RedbStoreOptions};

/// The leader recorded in a stopped server's data directory.
async fn leader_in(data_dir: &Path) -> Option<Candidate> {
    let store = RedbStore::open(&data_dir.join("state.redb"), RedbStoreOptions::default())
        .expect("opening the stopped server's store");
    wharf_control::current_leader(&store).await.unwrap()
}

fn server_id(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("server.id")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restarted_after_kill_9_schedules_again_at_once() {
    let mut server = TestServer::start();
    server.admin().await.start_cluster("shop", "n1").await;

    // A crash leaves the lease behind, held under this server's own id.
    server.kill();
    let held = leader_in(&server.data_dir()).await.expect("a leader key");
    assert_eq!(held.id, server_id(&server.data_dir()));

    // The restarted server takes it back: a deployment made right after
    // the restart is scheduled well within the lease's 10 s.
    let restarting = Instant::now();
    server.restart();
    let admin = server.admin().await;
    admin
        .schedule("shop", "after-crash", 2, Duration::from_secs(3))
        .await;
    eprintln!(
        "scheduling again {} ms after the restart began (lease TTL 10 s)",
        restarting.elapsed().as_millis()
    );
    assert!(
        server
            .log_text()
            .contains("took back the leader lease of this server's previous process"),
        "{}",
        server.log_tail(30)
    );

    // SIGTERM: the lease goes with the process.
    server.terminate();
    assert_eq!(leader_in(&server.data_dir()).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wharf_up_gives_leadership_up_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (home, data) = (dir.path().join("home"), dir.path().join("data"));
    std::fs::create_dir_all(&home).unwrap();
    let log_path = dir.path().join("up.log");
    let mut up = wharf(&home)
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--logs-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&data)
        .args(["--name", "up-leader", "--runtime", "none", "--no-demo"])
        .args(["--gc-interval", "0"])
        .env("WHARF_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let stdout = up.stdout.take().unwrap();
    std::thread::spawn(move || for _ in BufReader::new(stdout).lines() {});
    let started = Instant::now();
    while !std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .contains("leading the control plane")
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "wharf up never led:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let pid = nix::unistd::Pid::from_raw(up.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let stopping = Instant::now();
    let status = loop {
        if let Some(status) = up.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(15),
            "wharf up did not stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
    assert!(
        std::fs::read_to_string(&log_path)
            .unwrap()
            .contains("gave leadership up")
    );
    assert_eq!(leader_in(&data).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_serves_one_server_at_a_time() {
    let mut server = TestServer::start();
    let data = server.data_dir();
    let id = server_id(&data);
    let second = |home: &Path| {
        wharf(home)
            .args(["server", "--listen", "127.0.0.1:0", "--gc-interval", "0"])
            .arg("--data-dir")
            .arg(&data)
            .env("WHARF_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .output()
            .unwrap()
    };
    // A second process on the same data directory would share the id: refused.
    let home = tempfile::tempdir().unwrap();
    let refused = second(home.path());
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("in use by another running wharf server"),
        "{stderr}"
    );

    // The id outlives restarts; a damaged one is refused and left as it is.
    server.restart();
    assert_eq!(server_id(&data), id);
    server.terminate();
    std::fs::write(data.join("server.id"), "not an id").unwrap();
    let refused = second(home.path());
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("does not hold a server id"), "{stderr}");
    assert_eq!(server_id(&data), "not an id");
}

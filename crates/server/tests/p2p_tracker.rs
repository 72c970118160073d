//! The P2P tracker as node agents use it: a node credential gets a blob's
//! piece manifest (the server's own), a grant for that blob alone, and
//! parents by IDC; whatever a node may not pull, a blob that is not in
//! the repository and callers that are not nodes are refused; a report
//! after a restart rebuilds the tracker's state.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use wharf_oci::{Digest, DigestAlgorithm};
use wharf_p2p::wire::{PeerState, TaskAssignment};
use wharf_p2p::{Bitmap, GrantVerifier, PieceManifest};
use wharf_server::{App, ServerConfig};

const KEY: &str = "/api/v1/p2p/key";
const TASKS: &str = "/api/v1/p2p/tasks";
const REPORTS: &str = "/api/v1/p2p/reports";

/// A blob of three pieces (4 MiB each, the last shorter).
fn layer(seed: u8) -> Vec<u8> {
    (0..(9usize << 20) + 123)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn digest_of(bytes: &[u8]) -> Digest {
    Digest::of(DigestAlgorithm::Sha256, bytes)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Pushes `blob` into `repo` as the administrator.
async fn push_blob(app: &TestApp, repo: &str, blob: &[u8]) {
    let token = app
        .token_for(
            "admin",
            ADMIN_PASSWORD,
            &format!("repository:{repo}:pull,push"),
        )
        .await;
    app.v2(
        &token,
        Method::POST,
        &format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(blob)),
        &[],
        blob.to_vec(),
    )
    .await
    .expect(StatusCode::CREATED);
}

/// Node `name`'s API token (a node credential from a join), its node
/// registered in `idc` with an endpoint.
async fn join_node(app: &TestApp, admin: &str, name: &str, idc: &str) -> String {
    let token = app
        .api(
            admin,
            Method::POST,
            "/api/v1/pools/web/join-tokens",
            json!({"ttlSeconds": 600}),
        )
        .await
        .expect(StatusCode::CREATED)
        .json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let joined = app
        .send(
            Method::POST,
            "/api/v1/join",
            &[("content-type", "application/json".into())],
            serde_json::to_vec(&json!({"token": token, "node": name})).unwrap(),
        )
        .await
        .expect(StatusCode::CREATED)
        .json();
    let node = app
        .api_login(
            &format!("robot$node+{name}"),
            joined["secret"].as_str().unwrap(),
        )
        .await;
    let object = json!({
        "metadata": {"name": name, "labels": {"wharf.io/idc": idc}},
        "status": {
            "capacity": {"cpuMillis": 4000, "memoryBytes": 8u64 << 30, "pods": 110},
            "endpoint": format!("http://{name}.test:7701"),
        },
    });
    app.api(&node, Method::POST, "/api/v1/nodes", object)
        .await
        .expect(StatusCode::OK);
    node
}

fn task(repository: &str, blob: &[u8]) -> Value {
    json!({"digest": digest_of(blob), "size": blob.len(), "repository": repository})
}

fn report(repository: &str, blob: &[u8], held: &[u32]) -> Value {
    let mut pieces = Bitmap::new(3);
    held.iter().for_each(|&i| pieces.set(i));
    json!({
        "digest": digest_of(blob),
        "repository": repository,
        "size": blob.len(),
        "state": PeerState::Downloading,
        "pieces": pieces,
        "freeUploadSlots": 4,
        "sourceBytes": 0,
        "peerBytes": 0,
    })
}

async fn assignment(app: &TestApp, node: &str, uri: &str, body: Value) -> TaskAssignment {
    let reply = app.api(node, Method::POST, uri, body).await;
    let reply = reply.expect(StatusCode::OK);
    serde_json::from_value(reply.json()).unwrap()
}

fn parents(assignment: &TaskAssignment) -> Vec<&str> {
    assignment.parents.iter().map(|p| p.node.as_str()).collect()
}

/// The refusal's status and message.
async fn refusal(app: &TestApp, token: &str, uri: &str, body: Value) -> (StatusCode, String) {
    let method = if uri == KEY {
        Method::GET
    } else {
        Method::POST
    };
    let body = if uri == KEY { Value::Null } else { body };
    let reply = app.api(token, method, uri, body).await;
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (reply.status, message)
}

/// The server's `/metrics`, read as the administrator.
async fn metrics(app: &TestApp, admin: &str) -> String {
    let metrics = app
        .send(
            Method::GET,
            "/metrics",
            &[("authorization", format!("Bearer {admin}"))],
            Vec::new(),
        )
        .await
        .expect(StatusCode::OK);
    String::from_utf8_lossy(&metrics.body).to_string()
}

#[tokio::test]
async fn a_node_gets_the_servers_manifest_and_a_grant_for_that_blob_only() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "shop", false).await;
    let blob = layer(1);
    push_blob(&app, "shop/app", &blob).await;
    let n1 = join_node(&app, &admin, "n1", "east").await;

    let key = app
        .api(&n1, Method::GET, KEY, Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    let public: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(key["publicKey"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    assert!(!key["keyId"].as_str().unwrap().is_empty());

    let first = assignment(&app, &n1, TASKS, task("shop/app", &blob)).await;
    let expected = PieceManifest::compute(&digest_of(&blob), blob.len() as u64, &blob[..]).unwrap();
    assert_eq!(first.manifest, expected);
    assert_eq!(first.manifest.piece_count(), 3);
    assert!(first.back_to_source, "the first node of its IDC seeds");
    assert!(first.parents.is_empty());
    assert_eq!(first.report_interval_ms, 1000);
    assert_eq!(first.grant_expires_in, 300);

    let verifier = GrantVerifier::new(&public).unwrap();
    let grant = verifier
        .verify(&first.grant, &digest_of(&blob), now())
        .unwrap();
    assert_eq!(grant.sub, "n1");
    assert!(grant.exp >= now() + 290 && grant.exp <= now() + 300);
    let other = digest_of(b"another blob");
    assert!(verifier.verify(&first.grant, &other, now()).is_err());
    assert!(
        verifier
            .verify(&first.grant, &digest_of(&blob), now() + 301)
            .is_err()
    );
    // The grant is no API or registry token, though signed with the same key.
    app.api(&first.grant, Method::GET, "/api/v1/me", Value::Null)
        .await
        .expect(StatusCode::UNAUTHORIZED);

    let text = metrics(&app, &admin).await;
    for line in [
        "wharf_p2p_tracker_tasks 1\n",
        "wharf_p2p_tracker_peers 1\n",
        "wharf_p2p_back_to_source_total 1\n",
        "wharf_p2p_bad_parent_reports_total 0\n",
        "wharf_p2p_manifests_computed_total 1\n",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

#[tokio::test]
async fn the_second_node_of_an_idc_fetches_from_the_first_and_another_idc_seeds() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "shop", false).await;
    let blob = layer(2);
    push_blob(&app, "shop/app", &blob).await;
    let n1 = join_node(&app, &admin, "n1", "east").await;
    let n2 = join_node(&app, &admin, "n2", "east").await;
    let n3 = join_node(&app, &admin, "n3", "west").await;

    let seed = assignment(&app, &n1, TASKS, task("shop/app", &blob)).await;
    assert!(seed.back_to_source);
    let progress = assignment(&app, &n1, REPORTS, report("shop/app", &blob, &[0])).await;
    assert!(progress.back_to_source, "the seed stays on the source");

    let second = assignment(&app, &n2, TASKS, task("shop/app", &blob)).await;
    assert!(!second.back_to_source);
    assert_eq!(parents(&second), ["n1"]);
    assert_eq!(second.parents[0].url, "http://n1.test:7701");
    assert_eq!(second.parents[0].idc.as_deref(), Some("east"));
    assert_eq!(second.parents[0].pieces.held().collect::<Vec<_>>(), [0]);

    // n1 sent n2 a bad piece: n2 gets it no more for this blob and, with
    // no other peer of its IDC to trust, fetches from the registry itself;
    // its report counts once however often its reports repeat it.
    let mut blaming = report("shop/app", &blob, &[]);
    blaming["badParents"] = json!([
        {"node": "n1", "reason": "sent piece 0 not matching the manifest"}
    ]);
    for _ in 0..2 {
        let after = assignment(&app, &n2, REPORTS, blaming.clone()).await;
        assert!(parents(&after).is_empty(), "{:?}", parents(&after));
        assert!(after.back_to_source, "n2 trusts no peer of its IDC");
    }
    let text = metrics(&app, &admin).await;
    let line = "wharf_p2p_bad_parent_reports_total 1\n";
    assert!(text.contains(line), "{line} missing from\n{text}");

    let west = assignment(&app, &n3, TASKS, task("shop/app", &blob)).await;
    assert!(west.back_to_source, "another IDC has its own seed");
    assert!(west.parents.is_empty());
}

#[tokio::test]
async fn what_a_node_may_not_fetch_and_callers_that_are_not_nodes_are_refused() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "shop", false).await;
    app.create_user(&admin, "plain", "plain-password").await;
    let plain = app.api_login("plain", "plain-password").await;
    let blob = layer(3);
    let elsewhere = layer(4);
    push_blob(&app, "shop/app", &blob).await;
    push_blob(&app, "shop/other", &elsewhere).await;
    let n1 = join_node(&app, &admin, "n1", "east").await;

    // Users are no nodes, administrators included.
    for token in [&admin, &plain] {
        for uri in [KEY, TASKS, REPORTS] {
            let body = if uri == REPORTS {
                report("shop/app", &blob, &[])
            } else {
                task("shop/app", &blob)
            };
            let (status, message) = refusal(&app, token, uri, body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{uri}: {message}");
        }
    }
    let (status, message) = refusal(&app, &admin, TASKS, task("shop/app", &blob)).await;
    assert!(
        message.contains("only node credentials"),
        "{status} {message}"
    );

    // A blob that is in another repository, or none.
    let (status, message) = refusal(&app, &n1, TASKS, task("shop/app", &elsewhere)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{message}");
    assert!(
        message.contains("is not in repository shop/app"),
        "{message}"
    );
    let (status, _) = refusal(&app, &n1, REPORTS, report("shop/app", &elsewhere, &[])).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = refusal(&app, &n1, TASKS, task("nowhere/app", &blob)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Bad input names its field and changes nothing.
    let mut wrong_size = task("shop/app", &blob);
    wrong_size["size"] = json!(17);
    let (status, message) = refusal(&app, &n1, TASKS, wrong_size).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.starts_with("size:"), "{message}");
    let (status, message) = refusal(&app, &n1, TASKS, task("Shop/../app", &blob)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.starts_with("repository:"), "{message}");
    let mut short_bitmap = report("shop/app", &blob, &[]);
    short_bitmap["pieces"] = serde_json::to_value(Bitmap::new(2)).unwrap();
    let (status, message) = refusal(&app, &n1, REPORTS, short_bitmap).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("pieces:"), "{message}");
    // Nothing was tracked by the refusals: n1 is still its IDC's first.
    let first = assignment(&app, &n1, TASKS, task("shop/app", &blob)).await;
    assert!(first.back_to_source);
}

#[tokio::test]
async fn a_corrupt_blob_gets_an_error_not_a_manifest() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "shop", false).await;
    let blob = layer(5);
    push_blob(&app, "shop/app", &blob).await;
    let n1 = join_node(&app, &admin, "n1", "east").await;
    let hex = digest_of(&blob).hex().to_string();
    let path = app
        .dir
        .path()
        .join("registry/blobs/sha256")
        .join(&hex[..2])
        .join(&hex);
    let mut corrupt = blob.clone();
    corrupt[5 << 20] ^= 0xff;
    std::fs::write(&path, &corrupt).unwrap();

    let (status, message) = refusal(&app, &n1, TASKS, task("shop/app", &blob)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(message.contains("corrupt"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_after_a_restart_rebuild_the_tracker() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "shop", false).await;
    let blob = layer(6);
    push_blob(&app, "shop/app", &blob).await;
    let n1 = join_node(&app, &admin, "n1", "east").await;
    let n2 = join_node(&app, &admin, "n2", "east").await;
    let seed = assignment(&app, &n1, TASKS, task("shop/app", &blob)).await;
    assert!(seed.back_to_source);

    // A new process over the same data directory: the tracker is empty,
    // the node credentials still work.
    let TestApp { dir, app } = app;
    drop(app);
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    config.admin_password = Some(ADMIN_PASSWORD.into());
    config.gc_interval = None;
    // The old process's background tasks let go of the store as they
    // notice it is gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let reopened = loop {
        match App::open(&config).await {
            Ok(app) => break app,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("reopening the data directory: {e}"),
        }
    };
    let app = TestApp { app: reopened, dir };

    // n1 reports its progress: the tracker learns it again, as the seed.
    let rebuilt = assignment(&app, &n1, REPORTS, report("shop/app", &blob, &[0, 2])).await;
    assert!(rebuilt.back_to_source);
    let second = assignment(&app, &n2, TASKS, task("shop/app", &blob)).await;
    assert!(!second.back_to_source, "n1 seeds east again");
    assert_eq!(parents(&second), ["n1"]);
    assert_eq!(second.parents[0].pieces.held().collect::<Vec<_>>(), [0, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_does_not_lead_sends_nodes_to_the_registry_naming_the_leader() {
    use std::time::{Duration, Instant};
    use wharf_control::{Candidate, current_leader, run_as_leader};

    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "shop", false).await;
    let blob = layer(7);
    push_blob(&app, "shop/app", &blob).await;
    let n1 = join_node(&app, &admin, "n1", "east").await;

    // Another server of the same store leads.
    let store = app.app.control.objects().store().clone();
    let other = Candidate::new("another-server", "replica-2:10.0.0.2:7700");
    let stop = tokio_util::sync::CancellationToken::new();
    let campaign = tokio::spawn({
        let (store, other, stop) = (store.clone(), other.clone(), stop.clone());
        async move {
            run_as_leader(
                store.as_ref(),
                &other,
                Duration::from_secs(10),
                stop,
                std::future::pending::<()>,
            )
            .await
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while current_leader(store.as_ref()).await.unwrap() != Some(other.clone()) {
        assert!(Instant::now() < deadline, "the other server never led");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, message) = refusal(&app, &n1, TASKS, task("shop/app", &blob)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{message}");
    assert!(message.contains("replica-2:10.0.0.2:7700"), "{message}");

    // It steps down: this server tracks (once its view of the leader,
    // kept for 2 s, is renewed).
    stop.cancel();
    campaign.await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let first = assignment(&app, &n1, TASKS, task("shop/app", &blob)).await;
    assert!(first.back_to_source);
}

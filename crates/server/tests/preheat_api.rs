//! Preheat through the API: policies matched by pushes, explicit preheats
//! of a pool, the nodes' reports, and who may do what.

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};

/// Joins node `name` to `pool` with its own credential and registers it
/// ready (a heartbeat) with `labels` besides the pool's; returns its API
/// token.
async fn joined_node(app: &TestApp, admin: &str, name: &str, pool: &str, labels: Value) -> String {
    let token = app
        .api(
            admin,
            Method::POST,
            &format!("/api/v1/pools/{pool}/join-tokens"),
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
    let mut body = json!({
        "metadata": {"name": name, "labels": {"wharf.io/pool": pool}},
        "status": {"capacity": {"cpuMillis": 4000, "memoryBytes": 8u64 << 30, "pods": 110}},
    });
    for (key, value) in labels.as_object().unwrap() {
        body["metadata"]["labels"][key] = value.clone();
    }
    app.api(&node, Method::POST, "/api/v1/nodes", body)
        .await
        .expect(StatusCode::OK);
    let heartbeat = format!("/api/v1/nodes/{name}/heartbeat");
    app.api(&node, Method::PUT, &heartbeat, json!({"ttlSeconds": 60}))
        .await
        .expect(StatusCode::OK);
    node
}

/// Registers node `name` in `pool` without a heartbeat: never ready.
async fn silent_node(app: &TestApp, admin: &str, name: &str, pool: &str) {
    let body = json!({"metadata": {"name": name, "labels": {"wharf.io/pool": pool}}});
    app.api(admin, Method::POST, "/api/v1/nodes", body)
        .await
        .expect(StatusCode::OK);
}

/// Pushes a one-layer image to `shop/app:tag`; returns its manifest digest.
async fn push(app: &TestApp, tag: &str) -> String {
    let token = app
        .token_for("admin", ADMIN_PASSWORD, "repository:shop/app:pull,push")
        .await;
    let (layer, config) = (format!("layer of {tag}").into_bytes(), b"{}".to_vec());
    for blob in [&layer, &config] {
        let uri = format!("/v2/shop/app/blobs/uploads/?digest={}", sha256(blob));
        app.v2(&token, Method::POST, &uri, &[], blob.clone())
            .await
            .expect(StatusCode::CREATED);
    }
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha256(&layer), "size": layer.len()}]});
    let body = serde_json::to_vec(&manifest).unwrap();
    let content_type = (
        "content-type",
        "application/vnd.oci.image.manifest.v1+json".into(),
    );
    app.v2(
        &token,
        Method::PUT,
        &format!("/v2/shop/app/manifests/{tag}"),
        &[content_type],
        body.clone(),
    )
    .await
    .expect(StatusCode::CREATED);
    sha256(&body)
}

async fn preheats(app: &TestApp, token: &str) -> Vec<Value> {
    let list = app
        .api(
            token,
            Method::GET,
            "/api/v1/projects/shop/preheats",
            Value::Null,
        )
        .await
        .expect(StatusCode::OK)
        .json();
    list["items"].as_array().unwrap().clone()
}

async fn eventually_preheats(app: &TestApp, token: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = preheats(app, token).await;
        if found.len() >= count {
            return found;
        }
        assert!(Instant::now() < deadline, "only {found:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts the controllers (the node lifecycle marks nodes ready) and
/// waits until `ready` are.
async fn start_control(app: &TestApp, admin: &str, ready: &[&str]) -> wharf_control::Running {
    let running = app.app.control.start("test".into());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let nodes = app
            .api(admin, Method::GET, "/api/v1/nodes", Value::Null)
            .await
            .json();
        let items = nodes["items"].as_array().cloned().unwrap_or_default();
        let is_ready = |name: &str| {
            items
                .iter()
                .any(|n| n["metadata"]["name"] == name && n["status"]["ready"] == true)
        };
        if ready.iter().all(|n| is_ready(n)) {
            return running;
        }
        assert!(Instant::now() < deadline, "nodes never ready: {items:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn target_nodes(preheat: &Value) -> Vec<String> {
    preheat["status"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap().to_string())
        .collect()
}

/// Project `shop` with a maintainer `max` and a developer `dev`; their tokens.
async fn shop_with_maintainer(app: &TestApp, admin: &str) -> (String, String) {
    let (_guest, developer) = app.shop_with_guest_and_developer(admin).await;
    app.create_user(admin, "max", "a-long-password").await;
    app.add_member(admin, "shop", "max", "maintainer").await;
    (app.api_login("max", "a-long-password").await, developer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_matching_a_policy_preheats_each_pools_seed() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    let (maintainer, developer) = shop_with_maintainer(&app, &admin).await;
    // Pool core: no labelled seed, so the lowest ready name (c0 is not ready).
    silent_node(&app, &admin, "c0", "core").await;
    joined_node(&app, &admin, "c2", "core", json!({})).await;
    joined_node(&app, &admin, "c1", "core", json!({})).await;
    // Pool edge: the labelled seed wins over a lower name.
    joined_node(&app, &admin, "e1", "edge", json!({})).await;
    joined_node(
        &app,
        &admin,
        "e2",
        "edge",
        json!({"wharf.io/p2p-seed": "true"}),
    )
    .await;
    let _control = start_control(&app, &admin, &["c1", "c2", "e1", "e2"]).await;

    let policy =
        json!({"metadata": {"name": "releases"}, "spec": {"repository": "app", "tag": "v*"}});
    let uri = "/api/v1/projects/shop/preheatpolicies";
    // Developers push, but do not decide what pushes cost the nodes.
    app.api(&developer, Method::POST, uri, policy.clone())
        .await
        .expect(StatusCode::FORBIDDEN);
    let bad = json!({"metadata": {"name": "bad"}, "spec": {"repository": "app", "tag": "{v"}});
    let refused = app.api(&maintainer, Method::POST, uri, bad).await;
    let refused = refused.expect(StatusCode::BAD_REQUEST).json();
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.tag:"),
        "{refused}"
    );
    let created = app.api(&maintainer, Method::POST, uri, policy).await;
    let created = created.expect(StatusCode::CREATED).json();
    assert_eq!(created["spec"]["target"], "seeds");
    let listed = app.api(&developer, Method::GET, uri, Value::Null).await;
    assert_eq!(
        listed.expect(StatusCode::OK).json()["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    push(&app, "latest").await;
    let digest = push(&app, "v1").await;
    let found = eventually_preheats(&app, &admin, 1).await;
    // Give a wrongly matched `latest` time to show up too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let found_again = preheats(&app, &admin).await;
    assert_eq!(found_again.len(), 1, "{found_again:?}");
    let preheat = &found[0];
    assert_eq!(preheat["spec"]["repository"], "shop/app");
    assert_eq!(preheat["spec"]["reference"], "v1");
    assert_eq!(preheat["spec"]["digest"], digest);
    assert_eq!(preheat["spec"]["policy"], "releases");
    assert_eq!(preheat["spec"]["requestedBy"], "admin");
    assert_eq!(target_nodes(preheat), ["c1", "e2"]);
    assert_eq!(preheat["status"]["phase"], "Pending");

    // Deleting the policy stops further preheats; jobs stay.
    app.api(
        &developer,
        Method::DELETE,
        &format!("{uri}/releases"),
        Value::Null,
    )
    .await
    .expect(StatusCode::FORBIDDEN);
    app.api(
        &maintainer,
        Method::DELETE,
        &format!("{uri}/releases"),
        Value::Null,
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    push(&app, "v2").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(preheats(&app, &admin).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_preheat_of_a_pool_targets_its_ready_nodes_and_follows_their_reports() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    let (maintainer, developer) = shop_with_maintainer(&app, &admin).await;
    silent_node(&app, &admin, "c0", "core").await;
    let c1 = joined_node(&app, &admin, "c1", "core", json!({})).await;
    joined_node(&app, &admin, "c2", "core", json!({})).await;
    let e1 = joined_node(&app, &admin, "e1", "edge", json!({})).await;
    let _control = start_control(&app, &admin, &["c1", "c2", "e1"]).await;
    let digest = push(&app, "1.0").await;

    let uri = "/api/v1/projects/shop/preheats";
    let ask = json!({"repository": "app", "reference": "1.0", "pool": "core"});
    app.api(&developer, Method::POST, uri, ask.clone())
        .await
        .expect(StatusCode::FORBIDDEN);
    app.api(&e1, Method::POST, uri, ask.clone())
        .await
        .expect(StatusCode::FORBIDDEN);
    let unknown = json!({"repository": "app", "reference": "9.9"});
    app.api(&maintainer, Method::POST, uri, unknown)
        .await
        .expect(StatusCode::NOT_FOUND);
    let bad_pool = json!({"repository": "app", "reference": "1.0", "pool": "No Pool"});
    let refused = app.api(&maintainer, Method::POST, uri, bad_pool).await;
    let refused = refused.expect(StatusCode::BAD_REQUEST).json();
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("pool:"),
        "{refused}"
    );
    let created = app.api(&maintainer, Method::POST, uri, ask).await;
    let created = created.expect(StatusCode::CREATED).json();
    assert_eq!(created["spec"]["digest"], digest);
    assert_eq!(created["spec"]["target"], json!({"pool": "core"}));
    assert_eq!(created["spec"]["requestedBy"], "max");
    assert_eq!(target_nodes(&created), ["c1", "c2"]);
    let name = created["metadata"]["name"].as_str().unwrap().to_string();

    // The node sees its own open preheat, by digest.
    let own = app
        .api(&c1, Method::GET, "/api/v1/nodes/c1/preheats", Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(
        own["items"],
        json!([{"project": "shop", "name": name, "image": format!("shop/app@{digest}")}])
    );
    // Another node neither reads nor reports for it.
    app.api(&e1, Method::GET, "/api/v1/nodes/c1/preheats", Value::Null)
        .await
        .expect(StatusCode::FORBIDDEN);
    let none = app
        .api(&e1, Method::GET, "/api/v1/nodes/e1/preheats", Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(none["items"], json!([]));
    let report_uri = |node: &str| format!("/api/v1/nodes/{node}/preheats/shop/{name}");
    let pulling = json!({"state": "Pulling", "bytes": 5, "totalBytes": 20});
    app.api(&e1, Method::PUT, &report_uri("c1"), pulling.clone())
        .await
        .expect(StatusCode::FORBIDDEN);
    let not_target = app
        .api(&e1, Method::PUT, &report_uri("e1"), pulling.clone())
        .await;
    let not_target = not_target.expect(StatusCode::FORBIDDEN).json();
    assert!(
        not_target["error"]["message"]
            .as_str()
            .unwrap()
            .contains("node e1 is not a target"),
        "{not_target}"
    );

    // Status follows the node's reports.
    app.api(&c1, Method::PUT, &report_uri("c1"), pulling)
        .await
        .expect(StatusCode::OK);
    let show = format!("{uri}/{name}");
    let shown = app
        .api(&developer, Method::GET, &show, Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(shown["status"]["phase"], "Running");
    assert_eq!(shown["status"]["nodes"][0]["state"], "Pulling");
    assert_eq!(shown["status"]["nodes"][0]["bytes"], 5);
    assert!(shown["status"]["nodes"][0]["startedAt"].is_u64());
    let done = json!({"state": "Done", "bytes": 20, "totalBytes": 20});
    app.api(&c1, Method::PUT, &report_uri("c1"), done.clone())
        .await
        .expect(StatusCode::OK);
    // Finished stays finished, and is no longer listed for the node.
    app.api(&c1, Method::PUT, &report_uri("c1"), done)
        .await
        .expect(StatusCode::CONFLICT);
    let own = app
        .api(&c1, Method::GET, "/api/v1/nodes/c1/preheats", Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(own["items"], json!([]));
    // The administrator reports for c2 (administrators pass Node routes).
    let failed = json!({"state": "Failed", "message": "disk full"});
    app.api(&admin, Method::PUT, &report_uri("c2"), failed)
        .await
        .expect(StatusCode::OK);
    let shown = app
        .api(&developer, Method::GET, &show, Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(shown["status"]["phase"], "Failed");
    assert_eq!(shown["status"]["nodes"][0]["state"], "Done");
    assert!(shown["status"]["nodes"][0]["finishedAt"].is_u64());
    assert_eq!(shown["status"]["nodes"][1]["message"], "disk full");

    // Seeds when no pool is named: one per pool.
    let seeds = app
        .api(
            &maintainer,
            Method::POST,
            uri,
            json!({"repository": "app", "reference": "1.0"}),
        )
        .await
        .expect(StatusCode::CREATED)
        .json();
    assert_eq!(target_nodes(&seeds), ["c1", "e1"]);
    // Strangers read nothing.
    app.create_user(&admin, "stranger", "stranger-password-1")
        .await;
    let stranger = app.api_login("stranger", "stranger-password-1").await;
    app.api(&stranger, Method::GET, uri, Value::Null)
        .await
        .expect(StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_the_project_has_no_grant_on_is_refused() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    let (maintainer, _) = shop_with_maintainer(&app, &admin).await;
    push(&app, "1.0").await;
    let yaml = "apiVersion: wharf.io/v1\nkind: Cluster\nmetadata: {name: dc}\nspec: {kind: physical, idc: dc-1}\n---\n\
                apiVersion: wharf.io/v1\nkind: Pool\nmetadata: {name: vip}\nspec: {cluster: dc}\n";
    app.apply_yaml(&admin, yaml).await.expect(StatusCode::OK);
    let ask = json!({"repository": "app", "reference": "1.0", "pool": "vip"});
    let refused = app
        .api(
            &maintainer,
            Method::POST,
            "/api/v1/projects/shop/preheats",
            ask,
        )
        .await
        .expect(StatusCode::FORBIDDEN)
        .json();
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no grant on pool vip"),
        "{refused}"
    );
    let policy = json!({"metadata": {"name": "vip"}, "spec": {"repository": "**", "tag": "*", "target": {"pool": "vip"}}});
    app.api(
        &maintainer,
        Method::POST,
        "/api/v1/projects/shop/preheatpolicies",
        policy,
    )
    .await
    .expect(StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_preheat_prunes_old_jobs_and_fails_removed_nodes() {
    use wharf_api::preheat::{NodePreheatState, Preheat, PreheatTarget};
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "shop", false).await;
    let digest = push(&app, "1.0").await;
    let objects = app.app.control.objects();
    let week = 7 * 24 * 3600 * 1000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let old = |name: &str, state: NodePreheatState, finished_ago: u64| {
        let mut job = Preheat::new(
            &"shop/app".parse().unwrap(),
            "1.0",
            &digest.parse().unwrap(),
            PreheatTarget::Seeds,
            vec!["n1".into()],
            0,
        );
        job.metadata.name = name.into();
        job.status.nodes[0].state = state;
        job.status.nodes[0].finished_at = state.is_final().then(|| now - finished_ago);
        job
    };
    for job in [
        old("long-done", NodePreheatState::Done, week + 60_000),
        old("long-failed", NodePreheatState::Failed, week + 60_000),
        old("recent", NodePreheatState::Done, 60_000),
        old("unfinished", NodePreheatState::Pulling, 0),
    ] {
        objects.create(job).await.unwrap();
    }
    // n1 exists; a preheat waiting for a node that was removed does not
    // wait forever.
    app.api(
        &admin,
        Method::POST,
        "/api/v1/nodes",
        json!({"metadata": {"name": "n1"}}),
    )
    .await
    .expect(StatusCode::OK);
    let mut orphaned = old("orphaned", NodePreheatState::Pending, 0);
    orphaned.status.nodes[0].node = "gone".into();
    objects.create(orphaned).await.unwrap();
    app.api(
        &admin,
        Method::POST,
        "/api/v1/projects/shop/preheats",
        json!({"repository": "app", "reference": "1.0"}),
    )
    .await
    .expect(StatusCode::CREATED);
    let mut left: Vec<String> = preheats(&app, &admin)
        .await
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .filter(|name| !name.starts_with("ph-"))
        .collect();
    left.sort();
    assert_eq!(left, ["orphaned", "recent", "unfinished"]);
    let orphaned = app
        .api(
            &admin,
            Method::GET,
            "/api/v1/projects/shop/preheats/orphaned",
            Value::Null,
        )
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(orphaned["status"]["phase"], "Failed");
    assert_eq!(
        orphaned["status"]["nodes"][0]["message"],
        "node gone no longer exists"
    );
    let unfinished = app
        .api(
            &admin,
            Method::GET,
            "/api/v1/projects/shop/preheats/unfinished",
            Value::Null,
        )
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(
        unfinished["status"]["nodes"][0]["state"], "Pulling",
        "n1 still exists"
    );
}

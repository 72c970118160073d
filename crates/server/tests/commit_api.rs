//! `POST /api/v1/projects/{project}/pods/{name}/commit` and the node's
//! commit grants, on an in-process server: every refusal comes before the
//! node is contacted (a stand-in agent counts what reaches it), a node's
//! grant gives its credential push on exactly the target repository, and
//! the node's progress is relayed, recorded as an event and audited.
//! (The real agent, runc and a real push: crates/wharf/tests/e2e_containers/commit.rs.)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};

/// A stand-in for a node's agent endpoint: counts the commit requests that
/// reach it and answers each with `answer` (status, body).
struct FakeAgent {
    url: String,
    calls: Arc<AtomicUsize>,
}

impl FakeAgent {
    async fn start(answer: (StatusCode, &'static str)) -> FakeAgent {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let router = Router::new().route(
            "/v1/pods/{project}/{name}/commit",
            post(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                std::future::ready(answer)
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        FakeAgent { url, calls }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn error_message(reply: &Reply) -> String {
    reply.json()["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("not a refusal: {}", reply.json()))
        .to_string()
}

/// Registers node `name` (label `disk: <name>`) serving pods at `endpoint`.
async fn register_node(app: &TestApp, admin: &str, name: &str, endpoint: &str, ttl_ms: u64) {
    let node = json!({
        "metadata": {"name": name, "labels": {"disk": name}},
        "status": {
            "capacity": {"cpuMillis": 4000, "memoryBytes": 8u64 << 30, "pods": 110},
            "endpoint": endpoint,
        },
    });
    app.api(admin, Method::POST, "/api/v1/nodes", node)
        .await
        .expect(StatusCode::OK);
    app.api(
        admin,
        Method::PUT,
        &format!("/api/v1/nodes/{name}/heartbeat"),
        json!({"ttlMillis": ttl_ms}),
    )
    .await
    .expect(StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let node = app
            .api(
                admin,
                Method::GET,
                &format!("/api/v1/nodes/{name}"),
                Value::Null,
            )
            .await
            .json();
        if node["status"]["ready"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "node never ready: {node}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A one-replica deployment `name` whose pod goes to node `disk`.
fn deployment(name: &str, disk: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: shop}}\n\
         spec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    \
         metadata: {{labels: {{app: {name}}}}}\n    spec:\n      nodeSelector: {{disk: {disk}}}\n      \
         containers:\n        - name: app\n          image: 127.0.0.1:7700/shop/web:1\n          \
         volumeMounts: [{{name: data, mountPath: /data}}]\n      volumes: [{{name: data, emptyDir: {{}}}}]\n"
    )
}

/// The name of deployment `app`'s pod once it is bound to a node (or, with
/// `bound == false`, once it exists).
async fn pod_of(app: &TestApp, token: &str, name: &str, bound: bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = app
            .api(
                token,
                Method::GET,
                "/api/v1/projects/shop/pods",
                Value::Null,
            )
            .await
            .expect(StatusCode::OK)
            .json();
        let found = list["items"].as_array().unwrap().iter().find(|p| {
            p["metadata"]["labels"]["app"] == name && (!bound || p["spec"]["nodeName"].is_string())
        });
        if let Some(pod) = found {
            return pod["metadata"]["name"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no pod of {name}: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn commit(app: &TestApp, token: &str, pod: &str, body: Value) -> Reply {
    let uri = format!("/api/v1/projects/shop/pods/{pod}/commit");
    app.api(token, Method::POST, &uri, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_come_before_the_node_is_contacted() {
    let app = TestApp::new().await;
    let _controllers = app.app.control.start("test".into());
    let admin = app.admin_token().await;
    let (guest, developer) = app.shop_with_guest_and_developer(&admin).await;
    app.create_project(&admin, "other", false).await;
    let agent = FakeAgent::start((StatusCode::OK, "")).await;
    register_node(&app, &admin, "n1", &agent.url, 60_000).await;
    app.apply_yaml(&admin, &deployment("web", "n1"))
        .await
        .expect(StatusCode::OK);
    let pod = pod_of(&app, &admin, "web", true).await;

    // Push on the target is the registry's own answer: none in a project
    // the developer is not a member of.
    let refused = commit(&app, &developer, &pod, json!({"image": "other/snap:1"})).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.json());
    let message = error_message(&refused);
    assert!(
        message.contains("may not push to repository other/snap"),
        "{message}"
    );
    // A guest may read the pod, not commit it.
    commit(&app, &guest, &pod, json!({"image": "shop/snap:1"}))
        .await
        .expect(StatusCode::FORBIDDEN);
    // Bad input names the field.
    for (body, field) in [
        (json!({"image": "Shop/snap:1"}), "image: "),
        (json!({"image": "snap:1"}), "image: "),
        (json!({"image": "shop/snap:a b"}), "image: "),
        (json!({"image": "shop/snap@sha256:00"}), "image: "),
        (
            json!({"image": "shop/snap:1", "changes": ["ENV A=1", "RUN id"]}),
            "changes[1]: ",
        ),
        (
            json!({"image": "shop/snap:1", "container": "Bad_Name"}),
            "container",
        ),
    ] {
        let reply = commit(&app, &developer, &pod, body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.json()
        );
        let message = error_message(&reply);
        assert!(message.starts_with(field), "{body}: {message}");
    }
    let unknown = commit(
        &app,
        &developer,
        &pod,
        json!({"image": "shop/s:1", "pausee": 1}),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    let missing = commit(
        &app,
        &developer,
        &pod,
        json!({"image": "shop/s:1", "container": "nope"}),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(error_message(&missing).contains("container nope of pod"));
    commit(
        &app,
        &developer,
        "no-such-pod",
        json!({"image": "shop/s:1"}),
    )
    .await
    .expect(StatusCode::NOT_FOUND);

    // Not even an administrator pushes to a project that does not exist
    // (the token server would not let them either).
    let ghost = commit(&app, &admin, &pod, json!({"image": "ghost/snap:1"})).await;
    assert_eq!(ghost.status, StatusCode::FORBIDDEN, "{}", ghost.json());
    assert!(
        error_message(&ghost).contains("ghost/snap"),
        "{}",
        ghost.json()
    );

    // A proxy cache project holds only what it fetches: nothing is pushed.
    app.api(
        &admin,
        Method::POST,
        "/api/v1/replication/endpoints",
        json!({"name": "hub", "url": "http://127.0.0.1:9", "username": "u", "password": "p"}),
    )
    .await
    .expect(StatusCode::CREATED);
    app.api(
        &admin,
        Method::POST,
        "/api/v1/projects",
        json!({"name": "mirror", "public": false, "proxy_cache": {"endpoint": "hub"}}),
    )
    .await
    .expect(StatusCode::CREATED);
    let cached = commit(&app, &admin, &pod, json!({"image": "mirror/snap:1"})).await;
    assert_eq!(cached.status, StatusCode::BAD_REQUEST, "{}", cached.json());
    assert!(
        error_message(&cached).contains("project mirror is a proxy cache of endpoint hub"),
        "{}",
        cached.json()
    );

    // A pod no node took.
    app.apply_yaml(&admin, &deployment("nowhere", "none"))
        .await
        .expect(StatusCode::OK);
    let pending = pod_of(&app, &admin, "nowhere", false).await;
    let reply = commit(&app, &developer, &pending, json!({"image": "shop/snap:1"})).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert!(
        error_message(&reply).contains("is not on a node yet"),
        "{}",
        reply.json()
    );

    // A node that stopped heartbeating.
    register_node(&app, &admin, "n2", &agent.url, 1_000).await;
    app.apply_yaml(&admin, &deployment("lost", "n2"))
        .await
        .expect(StatusCode::OK);
    let lost = pod_of(&app, &admin, "lost", true).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let reply = loop {
        let reply = commit(&app, &developer, &lost, json!({"image": "shop/snap:1"})).await;
        if reply.status == StatusCode::CONFLICT || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.json());
    assert!(
        error_message(&reply).contains("node n2 of pod"),
        "{}",
        reply.json()
    );

    // A node whose agent runs no containers (`--runtime none`, simulated
    // nodes) serves no endpoint: nothing to commit.
    let node = json!({
        "metadata": {"name": "hollow", "labels": {"disk": "hollow"}},
        "status": {"capacity": {"cpuMillis": 4000, "memoryBytes": 8u64 << 30, "pods": 110}},
    });
    app.api(&admin, Method::POST, "/api/v1/nodes", node)
        .await
        .expect(StatusCode::OK);
    app.api(
        &admin,
        Method::PUT,
        "/api/v1/nodes/hollow/heartbeat",
        json!({"ttlMillis": 60_000}),
    )
    .await
    .expect(StatusCode::OK);
    app.apply_yaml(&admin, &deployment("hollow", "hollow"))
        .await
        .expect(StatusCode::OK);
    let hollow = pod_of(&app, &admin, "hollow", true).await;
    let reply = commit(&app, &developer, &hollow, json!({"image": "shop/snap:1"})).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.json());
    assert!(
        error_message(&reply).contains("does not serve pods"),
        "{}",
        reply.json()
    );

    // Only the not-ready node's attempts could have reached the agent
    // while it was still ready; every other refusal came first.
    let before_ready_loss = agent.calls();
    let refused = commit(&app, &developer, &pod, json!({"image": "other/snap:1"})).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(agent.calls(), before_ready_loss);
    // The refusals are audited.
    app.flush_audit().await;
    let audited = app.audit_events("pod.commit").await;
    assert!(
        audited
            .iter()
            .any(|e| e.outcome == wharf_audit::Outcome::Denied),
        "{audited:?}"
    );
    assert!(
        audited.iter().any(|e| e
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("other/snap"))),
        "{audited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_node_is_never_asked_before_the_checks_pass() {
    let app = TestApp::new().await;
    let _controllers = app.app.control.start("test".into());
    let admin = app.admin_token().await;
    let (_, developer) = app.shop_with_guest_and_developer(&admin).await;
    app.create_project(&admin, "other", false).await;
    let agent = FakeAgent::start((StatusCode::OK, "")).await;
    register_node(&app, &admin, "n1", &agent.url, 60_000).await;
    app.apply_yaml(&admin, &deployment("web", "n1"))
        .await
        .expect(StatusCode::OK);
    let pod = pod_of(&app, &admin, "web", true).await;
    for body in [
        json!({"image": "other/snap:1"}),
        json!({"image": "Bad/snap"}),
        json!({"image": "shop/snap:1", "changes": ["ONBUILD RUN id"]}),
        json!({"image": "shop/snap:1", "container": "nope"}),
    ] {
        let reply = commit(&app, &developer, &pod, body.clone()).await;
        assert!(reply.status.is_client_error(), "{body}: {}", reply.json());
    }
    assert_eq!(agent.calls(), 0, "the node was contacted");
}

const PROGRESS: &str = concat!(
    r#"{"phase":"measured","entries":3,"bytes":10}"#,
    "\n",
    r#"{"phase":"paused"}"#,
    "\n",
    r#"{"phase":"resumed","pausedMs":7}"#,
    "\n",
    r#"{"phase":"done","image":"registry.test/shop/snap:1","digest":"sha256:aa","layerDigest":"sha256:bb","layerBytes":99,"reusedLayers":2,"pausedMs":7,"totalMs":40}"#,
    "\n",
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_progress_is_relayed_recorded_and_audited() {
    let app = TestApp::new().await;
    let _controllers = app.app.control.start("test".into());
    let admin = app.admin_token().await;
    let (_, developer) = app.shop_with_guest_and_developer(&admin).await;
    let agent = FakeAgent::start((StatusCode::OK, PROGRESS)).await;
    register_node(&app, &admin, "n1", &agent.url, 60_000).await;
    app.apply_yaml(&admin, &deployment("web", "n1"))
        .await
        .expect(StatusCode::OK);
    let pod = pod_of(&app, &admin, "web", true).await;
    let reply = commit(&app, &developer, &pod, json!({"image": "shop/snap:1"}))
        .await
        .expect(StatusCode::OK);
    let lines: Vec<Value> = String::from_utf8_lossy(&reply.body)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[3]["phase"], "done");
    assert_eq!(lines[3]["reusedLayers"], 2);
    assert_eq!(agent.calls(), 1);
    let events = app
        .api(
            &admin,
            Method::GET,
            "/api/v1/projects/shop/events",
            Value::Null,
        )
        .await
        .expect(StatusCode::OK)
        .json();
    let committed = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["reason"] == "Committed")
        .unwrap_or_else(|| panic!("no Committed event: {events}"));
    let message = committed["message"].as_str().unwrap();
    assert!(
        message.contains("registry.test/shop/snap:1") && message.contains("paused 7 ms"),
        "{message}"
    );
    app.flush_audit().await;
    let audited = app.audit_events("pod.commit").await;
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0].actor, "dev");

    // A node that fails mid-way: the step reaches the client and the event.
    let failing = FakeAgent::start((
        StatusCode::OK,
        "{\"phase\":\"measured\",\"entries\":1,\"bytes\":1}\n{\"phase\":\"failed\",\"step\":\"push\",\"message\":\"registry said no\"}\n",
    ))
    .await;
    register_node(&app, &admin, "n2", &failing.url, 60_000).await;
    app.apply_yaml(&admin, &deployment("web2", "n2"))
        .await
        .expect(StatusCode::OK);
    let pod2 = pod_of(&app, &admin, "web2", true).await;
    let reply = commit(&app, &developer, &pod2, json!({"image": "shop/snap:2"}))
        .await
        .expect(StatusCode::OK);
    let last = String::from_utf8_lossy(&reply.body)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let last: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(
        (last["phase"].as_str(), last["step"].as_str()),
        (Some("failed"), Some("push"))
    );
    let events = app
        .api(
            &admin,
            Method::GET,
            "/api/v1/projects/shop/events",
            Value::Null,
        )
        .await
        .json();
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "CommitFailed"
                && e["message"]
                    .as_str()
                    .unwrap()
                    .contains("failed at push: registry said no")),
        "{events}"
    );

    // A node that refuses before starting: its status and message.
    let refusing =
        FakeAgent::start((StatusCode::CONFLICT, "container app has no overlay root")).await;
    register_node(&app, &admin, "n3", &refusing.url, 60_000).await;
    app.apply_yaml(&admin, &deployment("web3", "n3"))
        .await
        .expect(StatusCode::OK);
    let pod3 = pod_of(&app, &admin, "web3", true).await;
    let reply = commit(&app, &developer, &pod3, json!({"image": "shop/snap:3"})).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert!(
        error_message(&reply).contains("no overlay root"),
        "{}",
        reply.json()
    );
}

/// A node's credential, from a join token.
async fn node_credential(app: &TestApp, admin: &str, node: &str) -> (String, String) {
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
            serde_json::to_vec(&json!({"token": token, "node": node})).unwrap(),
        )
        .await
        .expect(StatusCode::CREATED)
        .json();
    (
        format!("robot$node+{node}"),
        joined["secret"].as_str().unwrap().to_string(),
    )
}

/// The actions a registry token for `scope` carries.
async fn token_actions(app: &TestApp, user: &str, secret: &str, scope: &str) -> Vec<String> {
    let reply = app
        .registry_token(Some((user, secret)), scope)
        .await
        .expect(StatusCode::OK)
        .json();
    let token = reply["token"].as_str().unwrap();
    let payload = token.split('.').nth(1).unwrap();
    use base64::Engine;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["access"][0]["actions"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_gives_the_node_push_on_exactly_the_target_until_it_ends() {
    let app = TestApp::new().await;
    let _controllers = app.app.control.start("test".into());
    let admin = app.admin_token().await;
    let (guest, developer) = app.shop_with_guest_and_developer(&admin).await;
    let (robot, secret) = node_credential(&app, &admin, "n1").await;
    let node = app.api_login(&robot, &secret).await;
    let agent = FakeAgent::start((StatusCode::OK, "")).await;
    register_node(&app, &node, "n1", &agent.url, 60_000).await;
    app.apply_yaml(&admin, &deployment("web", "n1"))
        .await
        .expect(StatusCode::OK);
    let pod = pod_of(&app, &admin, "web", true).await;
    let push_snap = "repository:shop/snap:pull,push";
    assert_eq!(
        token_actions(&app, &robot, &secret, push_snap).await,
        ["pull"]
    );

    let ask = |token: &str, pod: &str| json!({"token": token, "project": "shop", "pod": pod, "request": {"image": "shop/snap:7"}});
    // Asked for a user who may not, or for a pod of another node: no.
    let refused = app
        .api(
            &node,
            Method::POST,
            "/api/v1/nodes/n1/commitgrants",
            ask(&guest, &pod),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.json());
    let bad_token = app
        .api(
            &node,
            Method::POST,
            "/api/v1/nodes/n1/commitgrants",
            ask("not-a-token", &pod),
        )
        .await;
    assert_eq!(
        bad_token.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        bad_token.json()
    );
    // Another node's credential cannot ask in n1's name.
    let (other, other_secret) = node_credential(&app, &admin, "n9").await;
    let other = app.api_login(&other, &other_secret).await;
    app.api(
        &other,
        Method::POST,
        "/api/v1/nodes/n1/commitgrants",
        ask(&developer, &pod),
    )
    .await
    .expect(StatusCode::FORBIDDEN);
    let elsewhere = app
        .api(
            &other,
            Method::POST,
            "/api/v1/nodes/n9/commitgrants",
            ask(&developer, &pod),
        )
        .await;
    assert_eq!(elsewhere.status, StatusCode::FORBIDDEN);
    assert!(
        error_message(&elsewhere).contains("not on node n9"),
        "{}",
        elsewhere.json()
    );
    assert_eq!(
        token_actions(&app, &robot, &secret, push_snap).await,
        ["pull"]
    );

    let grant = app
        .api(
            &node,
            Method::POST,
            "/api/v1/nodes/n1/commitgrants",
            ask(&developer, &pod),
        )
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(grant["repository"], "shop/snap");
    assert_eq!(grant["tag"], "7");
    assert_eq!(grant["container"], "app");
    assert_eq!(grant["baseImage"], "127.0.0.1:7700/shop/web:1");
    assert_eq!(grant["exclude"], json!(["/data"]));
    let expires = grant["expiresAt"].as_u64().unwrap();
    let now = wharf_server_now_ms();
    assert!(
        expires > now + 14 * 60_000 && expires <= now + 15 * 60_000 + 5_000,
        "{grant}"
    );

    assert_eq!(
        token_actions(&app, &robot, &secret, push_snap).await,
        ["pull", "push"]
    );
    for elsewhere in [
        "repository:shop/web:pull,push",
        "repository:shop/snap/x:pull,push",
    ] {
        assert_eq!(
            token_actions(&app, &robot, &secret, elsewhere).await,
            ["pull"],
            "{elsewhere}"
        );
    }
    // Not the other node's credential.
    let (n9, n9_secret) = ("robot$node+n9".to_string(), other_secret);
    assert_eq!(
        token_actions(&app, &n9, &n9_secret, push_snap).await,
        ["pull"]
    );

    // A push token taken while the grant lives pushes...
    let pushing = app.token_for(&robot, &secret, push_snap).await;
    let upload = "/v2/shop/snap/blobs/uploads/";
    app.v2(&pushing, Method::POST, upload, &[], Vec::new())
        .await
        .expect(StatusCode::ACCEPTED);

    let end = format!(
        "/api/v1/nodes/n1/commitgrants/{}?repository=shop/snap",
        grant["id"].as_str().unwrap()
    );
    app.api(&node, Method::DELETE, &end, Value::Null)
        .await
        .expect(StatusCode::NO_CONTENT);
    assert_eq!(
        token_actions(&app, &robot, &secret, push_snap).await,
        ["pull"]
    );
    // ...and no more once the commit ended, though the token still lives.
    let refused = app
        .v2(&pushing, Method::POST, upload, &[], Vec::new())
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        String::from_utf8_lossy(&refused.body).contains("commit grant for shop/snap has ended"),
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
}

fn wharf_server_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

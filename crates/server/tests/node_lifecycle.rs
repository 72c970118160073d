//! Joining with a single-use token, the node credential it gives, drain
//! and decommission, through the API.

mod common;

use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use wharf_server::{Access, route_table};

fn node_body(name: &str) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"wharf.io/pool": "web"}},
        "status": {"capacity": {"cpuMillis": 4000, "memoryBytes": 8u64 << 30, "pods": 110}},
    })
}

/// A join token for pool `web`, as an administrator.
async fn join_token(app: &TestApp, admin: &str) -> String {
    let reply = app
        .api(
            admin,
            Method::POST,
            "/api/v1/pools/web/join-tokens",
            json!({"ttlSeconds": 600}),
        )
        .await
        .expect(StatusCode::CREATED)
        .json();
    assert_eq!(reply["pool"], "web");
    reply["token"].as_str().unwrap().to_string()
}

async fn join(app: &TestApp, token: &str, node: &str) -> Reply {
    app.send(
        Method::POST,
        "/api/v1/join",
        &[("content-type", "application/json".into())],
        serde_json::to_vec(&json!({"token": token, "node": node})).unwrap(),
    )
    .await
}

#[tokio::test]
async fn a_join_token_gives_a_node_credential_once_and_decommission_revokes_it() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_user(&admin, "plain", "plain-password").await;
    let plain = app.api_login("plain", "plain-password").await;
    app.api(
        &plain,
        Method::POST,
        "/api/v1/pools/web/join-tokens",
        json!({}),
    )
    .await
    .expect(StatusCode::FORBIDDEN);

    let token = join_token(&app, &admin).await;
    let joined = join(&app, &token, "n1")
        .await
        .expect(StatusCode::CREATED)
        .json();
    assert_eq!(joined["pool"], "web");
    assert_eq!(joined["labels"]["wharf.io/pool"], "web");
    assert_eq!(joined["name"], "robot$node+n1");
    let reused = join(&app, &token, "n2").await;
    assert_eq!(reused.status, StatusCode::UNAUTHORIZED);
    assert!(
        reused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already used (by node n1)"),
        "{:?}",
        reused.json()
    );

    let secret = joined["secret"].as_str().unwrap();
    let node = app.api_login("robot$node+n1", secret).await;
    app.api(&node, Method::POST, "/api/v1/nodes", node_body("n1"))
        .await
        .expect(StatusCode::OK);
    app.api(&node, Method::POST, "/api/v1/nodes", node_body("n2"))
        .await
        .expect(StatusCode::FORBIDDEN);
    // The token was for pool web: the credential registers there only.
    let mut elsewhere = node_body("n1");
    elsewhere["metadata"]["labels"]["wharf.io/pool"] = json!("core");
    let mut annotated = node_body("n1");
    annotated["metadata"]["annotations"] = json!({"wharf.io/join-pool": "core"});
    for body in [elsewhere, annotated] {
        let refused = app.api(&node, Method::POST, "/api/v1/nodes", body).await;
        let message = refused.json()["error"]["message"].to_string();
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{message}");
        assert!(message.contains("joined pool web"), "{message}");
    }
    let mut unnamed = node_body("n1");
    unnamed["metadata"]["labels"] = json!({});
    let registered = app
        .api(&node, Method::POST, "/api/v1/nodes", unnamed)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(registered["metadata"]["labels"]["wharf.io/pool"], "web");
    app.api(
        &node,
        Method::PUT,
        "/api/v1/nodes/n1/heartbeat",
        json!({"ttlSeconds": 60}),
    )
    .await
    .expect(StatusCode::OK);
    app.api(&node, Method::GET, "/api/v1/pods?nodeName=n1", Value::Null)
        .await
        .expect(StatusCode::OK);
    app.api(&node, Method::GET, "/api/v1/pods", Value::Null)
        .await
        .expect(StatusCode::FORBIDDEN);
    app.api(&node, Method::GET, "/api/v1/users", Value::Null)
        .await
        .expect(StatusCode::FORBIDDEN);
    // A node pulls every project's images; it reads no project's cost.
    app.api(&node, Method::GET, "/api/v1/cost/report", Value::Null)
        .await
        .expect(StatusCode::FORBIDDEN);

    app.api(
        &plain,
        Method::POST,
        "/api/v1/nodes/n1/decommission",
        json!({}),
    )
    .await
    .expect(StatusCode::FORBIDDEN);
    let reply = app
        .api(
            &admin,
            Method::POST,
            "/api/v1/nodes/n1/decommission",
            json!({"timeoutSeconds": 10}),
        )
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(reply["credentialRevoked"], true);
    app.api(&admin, Method::GET, "/api/v1/nodes/n1", Value::Null)
        .await
        .expect(StatusCode::NOT_FOUND);
    let revoked = app
        .api(
            &node,
            Method::PUT,
            "/api/v1/nodes/n1/heartbeat",
            json!({"ttlSeconds": 60}),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);

    // Decommissioned, the machine may join again with a new token.
    let again = join_token(&app, &admin).await;
    join(&app, &again, "n1").await.expect(StatusCode::CREATED);
    app.flush_audit().await;
    assert!(!app.audit_events("node.join").await.is_empty());
    assert!(!app.audit_events("node.decommission").await.is_empty());
}

#[tokio::test]
async fn drain_cordons_and_reports_what_it_moved() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.api(&admin, Method::POST, "/api/v1/nodes", node_body("n1"))
        .await
        .expect(StatusCode::OK);
    let reply = app
        .api(&admin, Method::POST, "/api/v1/nodes/n1/drain", json!({}))
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(reply["evicted"], json!([]));
    let node = app
        .api(&admin, Method::GET, "/api/v1/nodes/n1", Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(node["spec"]["unschedulable"], true);
    app.api(&admin, Method::POST, "/api/v1/nodes/ghost/drain", json!({}))
        .await
        .expect(StatusCode::NOT_FOUND);
}

/// A node credential reaches the node routes for its own node and nothing
/// else.
#[tokio::test]
async fn a_node_credential_opens_only_its_own_node_routes() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "walk", false).await;
    let token = join_token(&app, &admin).await;
    let joined = join(&app, &token, "n1")
        .await
        .expect(StatusCode::CREATED)
        .json();
    let node = app
        .api_login("robot$node+n1", joined["secret"].as_str().unwrap())
        .await;
    let mut node_routes = 0;
    for route in route_table() {
        let lifecycle = ["drain", "decommission", "join-tokens"]
            .iter()
            .any(|r| route.path.ends_with(r));
        // Routes open to any caller decide in their handlers, as for users.
        if route.access == Access::Public || route.access == Access::Authenticated && !lifecycle {
            continue;
        }
        let what = format!("{} {}", route.method, route.path);
        let uri = route
            .path
            .replace("{project}", "walk")
            .replace("{name}", "p")
            .replace("{pool}", "web");
        // A pod's routes name no node: their handlers check the pod's
        // node (`a_node_credential_speaks_only_for_its_own_nodes_pods`).
        let names_no_node = route.access == Access::Node && !route.path.contains("{node}");
        if !names_no_node {
            let other = uri.replace("{node}", "n2");
            let reply = app
                .api(&node, route.method.clone(), &other, json!({}))
                .await;
            assert_eq!(
                reply.status,
                StatusCode::FORBIDDEN,
                "{what} for another node answered node n1's credential: {}",
                String::from_utf8_lossy(&reply.body)
            );
        }
        if route.access == Access::Node {
            node_routes += 1;
            let own = uri.replace("{node}", "n1");
            let reply = app.api(&node, route.method.clone(), &own, json!({})).await;
            // Past the access rule; a handler may still refuse (a Secret
            // no pod of the node uses).
            let body = String::from_utf8_lossy(&reply.body);
            let refused_by_rule = body.contains("node agents only") || body.contains("acts for");
            assert!(!refused_by_rule, "{what}: {body}");
            assert_ne!(reply.status, StatusCode::UNAUTHORIZED, "{what}");
        }
    }
    assert!(node_routes >= 10, "{node_routes}");
}

/// Joins node `name` with its own token and registers it with its own
/// credential, with `labels` besides the pool's; returns the credential.
async fn joined_node(app: &TestApp, admin: &str, name: &str, labels: Value) -> String {
    let token = join_token(app, admin).await;
    let joined = join(app, &token, name)
        .await
        .expect(StatusCode::CREATED)
        .json();
    let user = format!("robot$node+{name}");
    let node = app
        .api_login(&user, joined["secret"].as_str().unwrap())
        .await;
    let mut body = node_body(name);
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

const PINNED: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: pinned, namespace: walk, annotations: {wharf.io/ip-pool: scoped}}
spec:
  replicas: 1
  selector: {matchLabels: {app: pinned}}
  template:
    metadata: {labels: {app: pinned}}
    spec:
      nodeSelector: {disk: ssd}
      containers: [{name: c, image: 127.0.0.1:7700/walk/c:1}]
"#;

/// The pod routes name a project and a pod, not a node: a node credential
/// may still only report on (and claim or release addresses for) the pods
/// bound to its own node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_credential_speaks_only_for_its_own_nodes_pods() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "walk", false).await;
    let pool = "apiVersion: wharf.io/v1\nkind: IpPool\nmetadata: {name: scoped}\nspec:\n  cidr: 10.96.252.0/24\n  gateway: 10.96.252.1\n";
    let yaml = [
        ("authorization", format!("Bearer {admin}")),
        ("content-type", "application/yaml".into()),
    ];
    app.send(Method::POST, "/api/v1/ippools", &yaml, pool)
        .await
        .expect(StatusCode::OK);
    let n1 = joined_node(&app, &admin, "n1", json!({})).await;
    let n2 = joined_node(&app, &admin, "n2", json!({"disk": "ssd"})).await;
    let _controllers = app.app.control.start("test".into());
    app.apply_yaml(&admin, PINNED).await.expect(StatusCode::OK);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let pod = loop {
        let pods = app
            .api(
                &admin,
                Method::GET,
                "/api/v1/projects/walk/pods",
                Value::Null,
            )
            .await
            .json();
        if let Some(pod) = pods["items"].as_array().unwrap().first()
            && pod["spec"]["nodeName"] == "n2"
        {
            break pod.clone();
        }
        assert!(std::time::Instant::now() < deadline, "never bound: {pods}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let name = pod["metadata"]["name"].as_str().unwrap();
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let path = |tail: &str| format!("/api/v1/projects/walk/pods/{name}/{tail}");
    let claim = app
        .api(&n2, Method::PUT, &path("ip"), Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(claim["node"], "n2", "{claim}");

    let event = json!({"type": "Warning", "reason": "Forged", "message": "from n1"});
    let forged = [
        (Method::PUT, path("status"), json!({"phase": "Failed"})),
        (Method::POST, path("events"), event.clone()),
        (Method::PUT, path("ip"), Value::Null),
        (Method::DELETE, path(&format!("ip?uid={uid}")), Value::Null),
        (Method::DELETE, path("ip"), Value::Null),
        (
            Method::PUT,
            path(&format!("stopped?uid={uid}")),
            Value::Null,
        ),
    ];
    for (method, uri, body) in forged {
        let what = format!("{method} {uri}");
        let reply = app.api(&n1, method, &uri, body).await;
        let message = reply.json()["error"]["message"].to_string();
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{what}: {message}");
        assert!(message.contains("node n1's pods only"), "{what}: {message}");
    }
    // Nothing changed: n2 still holds the address, the pod is not Failed.
    let held = app
        .api(&n2, Method::PUT, &path("ip"), Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(held, claim);
    let events = app
        .api(
            &admin,
            Method::GET,
            "/api/v1/projects/walk/events",
            Value::Null,
        )
        .await
        .expect(StatusCode::OK);
    assert!(!String::from_utf8_lossy(&events.body).contains("Forged"));

    // The pod's own node reports on it.
    let now = app
        .api(
            &n2,
            Method::PUT,
            &path("status"),
            json!({"phase": "Running"}),
        )
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(now["status"]["phase"], "Running", "{now}");
    app.api(&n2, Method::POST, &path("events"), event)
        .await
        .expect(StatusCode::NO_CONTENT);
    app.api(
        &n2,
        Method::DELETE,
        &path(&format!("ip?uid={uid}")),
        Value::Null,
    )
    .await
    .expect(StatusCode::OK);
}

#[tokio::test]
async fn the_join_script_and_the_binary_for_a_usable_join_token() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    let script = app
        .send(Method::GET, "/api/v1/join/script", &[], Vec::new())
        .await
        .expect(StatusCode::OK);
    let text = String::from_utf8_lossy(&script.body);
    for part in [
        "KillMode=process",
        "Restart=always",
        "/run/systemd/system",
        "sha256sum",
    ] {
        assert!(text.contains(part), "the script has {part}");
    }

    let reply = app
        .api(
            &admin,
            Method::POST,
            "/api/v1/pools/web/join-tokens",
            json!({}),
        )
        .await
        .expect(StatusCode::CREATED)
        .json();
    let token = reply["token"].as_str().unwrap().to_string();
    let digest = reply["binarySha256"].as_str().unwrap().to_string();
    app.send(Method::GET, "/api/v1/join/wharf", &[], Vec::new())
        .await
        .expect(StatusCode::UNAUTHORIZED);
    let header = [("wharf-join-token", token.clone())];
    let binary = app
        .send(Method::GET, "/api/v1/join/wharf", &header, Vec::new())
        .await
        .expect(StatusCode::OK);
    assert_eq!(sha256(&binary.body), format!("sha256:{digest}"));
    let own = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    assert_eq!(binary.body.len(), own.len(), "the running executable");

    join(&app, &token, "n1").await.expect(StatusCode::CREATED);
    app.send(Method::GET, "/api/v1/join/wharf", &header, Vec::new())
        .await
        .expect(StatusCode::UNAUTHORIZED);
}

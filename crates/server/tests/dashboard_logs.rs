//! A pod's log for the dashboard, in-process: a browser session (cookie,
//! no bearer token) reading `GET .../pods/NAME/log` reaches the pod's node
//! with a bearer token of the same user, which the node can check with the
//! server as it checks any caller's; a bearer client's own token goes to
//! the node unchanged. A stand-in agent records what it is sent.
//! (The real agent and a followed log in Chromium:
//! crates/wharf/tests/e2e_containers/dashboard.rs.)

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};

/// A stand-in for the agent's log endpoint: records each request's
/// `Authorization` header and answers with a line of log.
struct FakeAgent {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl FakeAgent {
    async fn start() -> FakeAgent {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let router = Router::new().route(
            "/v1/pods/{project}/{name}/log",
            get(move |headers: HeaderMap| {
                let authorization = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                record.lock().unwrap().push(authorization);
                std::future::ready("hello from the node\n")
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        FakeAgent { url, seen }
    }

    fn last_authorization(&self) -> String {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request reached the node")
    }
}

/// Registers a ready node `name` serving pods at `endpoint`.
async fn register_node(app: &TestApp, admin: &str, name: &str, endpoint: &str) {
    let node = json!({
        "metadata": {"name": name},
        "status": {"capacity": {"cpuMillis": 4000, "memoryBytes": 8u64 << 30, "pods": 110}, "endpoint": endpoint},
    });
    app.api(admin, Method::POST, "/api/v1/nodes", node)
        .await
        .expect(StatusCode::OK);
    app.api(
        admin,
        Method::PUT,
        &format!("/api/v1/nodes/{name}/heartbeat"),
        json!({"ttlMillis": 60_000}),
    )
    .await
    .expect(StatusCode::OK);
}

/// The name of the pod of deployment `app` in `shop` once it is on a node.
async fn bound_pod(app: &TestApp, token: &str, name: &str) -> String {
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
        let found =
            list["items"].as_array().unwrap().iter().find(|p| {
                p["metadata"]["labels"]["app"] == name && p["spec"]["nodeName"].is_string()
            });
        if let Some(pod) = found {
            return pod["metadata"]["name"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no bound pod of {name}: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_sessions_log_request_reaches_the_node_with_the_same_users_token() {
    let app = TestApp::new().await;
    let _controllers = app.app.control.start("test".into());
    let admin = app.admin_token().await;
    let (_, dev) = app.shop_with_guest_and_developer(&admin).await;
    let agent = FakeAgent::start().await;
    register_node(&app, &admin, "wdc-logs-1", &agent.url).await;
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: talker, namespace: shop}\n\
        spec:\n  replicas: 1\n  selector: {matchLabels: {app: talker}}\n  template:\n    \
        metadata: {labels: {app: talker}}\n    spec:\n      containers: [{name: main, image: shop/web:1}]\n";
    app.apply_yaml(&admin, deployment)
        .await
        .expect(StatusCode::OK);
    let pod = bound_pod(&app, &admin, "talker").await;
    let uri = format!("/api/v1/projects/shop/pods/{pod}/log?follow=true");

    // The dashboard: the session cookie only.
    let session = app
        .send(
            Method::POST,
            "/api/v1/session",
            &[("content-type", "application/json".into())],
            serde_json::to_vec(&json!({"username": "dev", "password": "a-long-password"})).unwrap(),
        )
        .await
        .expect(StatusCode::OK);
    let cookie = session
        .header("set-cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let log = app
        .send(Method::GET, &uri, &[("cookie", cookie)], Vec::new())
        .await
        .expect(StatusCode::OK);
    assert_eq!(log.text(), "hello from the node\n");
    let authorization = agent.last_authorization();
    let token = authorization
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("the node got {authorization:?}"));
    // The node asks the server with that token: it is dev's, no more.
    let me = app
        .api(token, Method::GET, "/api/v1/me", Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(me["name"], "dev", "{me}");
    assert_eq!(me["admin"], false, "{me}");
    app.api(
        token,
        Method::GET,
        &format!("/api/v1/projects/shop/pods/{pod}"),
        Value::Null,
    )
    .await
    .expect(StatusCode::OK);

    // A bearer client's token goes to the node as it came.
    app.api(&dev, Method::GET, &uri, Value::Null)
        .await
        .expect(StatusCode::OK);
    assert_eq!(agent.last_authorization(), format!("Bearer {dev}"));
}

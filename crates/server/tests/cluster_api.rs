//! The cluster API: nodes, apply of Kubernetes YAML, deployments, pods,
//! events, watches, optimistic concurrency, and who may do what.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};

const SEED: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: 127.0.0.1:7700/shop/web:1.0
          ports: [{containerPort: 80}]
          resources:
            requests: {cpu: 250m, memory: 64Mi}
          terminationMessagePath: /dev/termination-log
"#;

/// The message of a refusal.
fn error_message(reply: &Reply) -> String {
    reply.json()["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("not a refusal: {}", reply.json()))
        .to_string()
}

/// The deployments of `project`.
async fn deployments(app: &TestApp, token: &str, project: &str) -> Vec<Value> {
    let list = app
        .api(
            token,
            Method::GET,
            &format!("/api/v1/projects/{project}/deployments"),
            Value::Null,
        )
        .await
        .json();
    list["items"].as_array().cloned().unwrap_or_default()
}

async fn register_node(app: &TestApp, admin: &str, name: &str) {
    let node = json!({
        "metadata": {"name": name, "labels": {"wharf.io/pool": "web"}},
        "status": {"capacity": {"cpuMillis": 4000, "memoryBytes": 8u64 << 30, "pods": 110}},
    });
    app.api(admin, Method::POST, "/api/v1/nodes", node)
        .await
        .expect(StatusCode::OK);
    app.api(
        admin,
        Method::PUT,
        &format!("/api/v1/nodes/{name}/heartbeat"),
        json!({"ttlSeconds": 60}),
    )
    .await
    .expect(StatusCode::OK);
}

async fn pods(app: &TestApp, token: &str) -> Vec<Value> {
    let list = app
        .api(
            token,
            Method::GET,
            "/api/v1/projects/shop/pods",
            Value::Null,
        )
        .await
        .expect(StatusCode::OK);
    list.json()["items"].as_array().unwrap().clone()
}

/// Plays the nodes' agents, which these tests do not run: confirms every
/// Terminating pod as stopped, as an agent does once its containers are
/// gone; the object goes only then.
async fn confirm_terminating_pods(app: &TestApp, token: &str) {
    for pod in pods(app, token).await {
        let meta = &pod["metadata"];
        if meta["deletionTimestamp"].is_string() {
            let (name, uid) = (
                meta["name"].as_str().unwrap(),
                meta["uid"].as_str().unwrap(),
            );
            let path = format!("/api/v1/projects/shop/pods/{name}/stopped?uid={uid}");
            app.api(token, Method::PUT, &path, Value::Null)
                .await
                .expect(StatusCode::NO_CONTENT);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_schedules_and_scales_through_the_api() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "shop", false).await;
    register_node(&app, &admin, "n1").await;
    register_node(&app, &admin, "n2").await;
    let _controllers = app.app.control.start("test".into());
    // Both nodes' heartbeats seen before the deployment arrives.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let nodes = app
            .api(&admin, Method::GET, "/api/v1/nodes", Value::Null)
            .await
            .json();
        if nodes["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["status"]["ready"] == true)
        {
            break;
        }
        assert!(Instant::now() < deadline, "nodes never ready: {nodes}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let reply = app.apply_yaml(&admin, SEED).await.expect(StatusCode::OK);
    let result = &reply.json()["results"][0];
    assert_eq!(result["action"], "created");
    assert_eq!(
        result["warnings"],
        json!(["unknown field spec.template.spec.containers.0.terminationMessagePath ignored"])
    );
    let again = app.apply_yaml(&admin, SEED).await.expect(StatusCode::OK);
    assert_eq!(again.json()["results"][0]["action"], "configured");

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pods = pods(&app, &admin).await;
        let nodes: std::collections::BTreeSet<&str> = pods
            .iter()
            .filter_map(|p| p["spec"]["nodeName"].as_str())
            .collect();
        if pods.len() == 3 && pods.iter().all(|p| p["spec"]["nodeName"].is_string()) {
            assert_eq!(nodes.len(), 2, "spread over both nodes");
            break;
        }
        assert!(Instant::now() < deadline, "pods never bound: {pods:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Label selectors filter lists.
    let selected = app
        .api(
            &admin,
            Method::GET,
            "/api/v1/projects/shop/pods?labelSelector=app%3Dweb",
            Value::Null,
        )
        .await;
    assert_eq!(selected.json()["items"].as_array().unwrap().len(), 3);
    let none = app
        .api(
            &admin,
            Method::GET,
            "/api/v1/projects/shop/pods?labelSelector=app%3Dother",
            Value::Null,
        )
        .await;
    assert!(none.json()["items"].as_array().unwrap().is_empty());
    app.api(
        &admin,
        Method::GET,
        "/api/v1/projects/shop/pods?labelSelector=bad%20key",
        Value::Null,
    )
    .await
    .expect(StatusCode::BAD_REQUEST);

    app.api(
        &admin,
        Method::PUT,
        "/api/v1/projects/shop/deployments/web/scale",
        json!({"replicas": 1}),
    )
    .await
    .expect(StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(20);
    while pods(&app, &admin).await.len() != 1 {
        assert!(Instant::now() < deadline, "never scaled down");
        confirm_terminating_pods(&app, &admin).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = app
        .api(
            &admin,
            Method::GET,
            "/api/v1/projects/shop/events?object=web",
            Value::Null,
        )
        .await
        .json();
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "ScalingReplicaSet"),
        "{events}"
    );

    // A bound pod's deletion leaves it Terminating with the grace asked;
    // its node may not confirm a live pod; force removes it at once.
    let pod = pods(&app, &admin).await.remove(0);
    let (name, uid) = (
        pod["metadata"]["name"].as_str().unwrap().to_string(),
        pod["metadata"]["uid"].as_str().unwrap().to_string(),
    );
    let stopped = format!("/api/v1/projects/shop/pods/{name}/stopped?uid={uid}");
    app.api(&admin, Method::PUT, &stopped, Value::Null)
        .await
        .expect(StatusCode::CONFLICT);
    let path = format!("/api/v1/projects/shop/pods/{name}");
    let graceful = format!("{path}?gracePeriodSeconds=5");
    let terminating = app
        .api(&admin, Method::DELETE, &graceful, Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(terminating["metadata"]["deletionGracePeriodSeconds"], 5);
    assert!(terminating["metadata"]["deletionTimestamp"].is_string());
    app.api(&admin, Method::GET, &path, Value::Null)
        .await
        .expect(StatusCode::OK);
    let forced_with_grace = format!("{path}?force=true&gracePeriodSeconds=3");
    app.api(&admin, Method::DELETE, &forced_with_grace, Value::Null)
        .await
        .expect(StatusCode::BAD_REQUEST);
    let forced = format!("{path}?force=true&gracePeriodSeconds=0");
    app.api(&admin, Method::DELETE, &forced, Value::Null)
        .await
        .expect(StatusCode::NO_CONTENT);
    app.api(&admin, Method::GET, &path, Value::Null)
        .await
        .expect(StatusCode::NOT_FOUND);

    app.api(
        &admin,
        Method::DELETE,
        "/api/v1/projects/shop/deployments/web",
        Value::Null,
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pods(&app, &admin).await.is_empty() {
        assert!(Instant::now() < deadline, "pods outlived their deployment");
        confirm_terminating_pods(&app, &admin).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn updates_are_optimistic() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "shop", false).await;
    app.apply_yaml(&admin, SEED).await.expect(StatusCode::OK);
    let current = app
        .api(
            &admin,
            Method::GET,
            "/api/v1/projects/shop/deployments/web",
            Value::Null,
        )
        .await
        .json();
    let mut first = current.clone();
    first["spec"]["replicas"] = json!(4);
    let updated = app
        .api(
            &admin,
            Method::PUT,
            "/api/v1/projects/shop/deployments/web",
            first,
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(updated.json()["metadata"]["generation"], 2);
    // A second writer with the old resourceVersion loses.
    let mut stale = current;
    stale["spec"]["replicas"] = json!(9);
    app.api(
        &admin,
        Method::PUT,
        "/api/v1/projects/shop/deployments/web",
        stale,
    )
    .await
    .expect(StatusCode::CONFLICT);
    let now = app
        .api(
            &admin,
            Method::GET,
            "/api/v1/projects/shop/deployments/web",
            Value::Null,
        )
        .await
        .json();
    assert_eq!(now["spec"]["replicas"], 4);
}

#[tokio::test]
async fn bad_manifests_change_nothing() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "shop", false).await;
    let broken_second = format!(
        "{SEED}\n---\n{}",
        SEED.replace("name: web\n", "name: api\n")
            .replace("{app: web}\n  template", "{app: other}\n  template")
    );
    let reply = app
        .apply_yaml(&admin, &broken_second)
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("document 2"),
        "{}",
        reply.json()
    );
    for bad in [
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: x}\n",
        "{{{",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: Bad}\nspec: {}\n",
    ] {
        app.apply_yaml(&admin, bad)
            .await
            .expect(StatusCode::BAD_REQUEST);
    }
    // A privileged setting in the second document, in a project that does
    // not allow privileged workloads: refused naming it, and the first
    // document is not created either.
    let host_pid = format!(
        "{SEED}\n---\n{}",
        SEED.replace("name: web\n", "name: api\n").replace(
            "      containers:",
            "      hostPID: true\n      containers:"
        )
    );
    let reply = app
        .apply_yaml(&admin, &host_pid)
        .await
        .expect(StatusCode::BAD_REQUEST);
    let message = error_message(&reply);
    assert!(
        message.contains("document 2: spec.template.spec.hostPID not allowed in project shop"),
        "{message}"
    );
    // `?project=` contradicting metadata.namespace of the second
    // document: refused naming both projects, and nothing is created.
    app.create_project(&admin, "other", false).await;
    let reply = app
        .send(
            Method::POST,
            "/api/v1/apply?project=other",
            &[
                ("authorization", format!("Bearer {admin}")),
                ("content-type", "application/yaml".into()),
            ],
            format!(
                "{}\n---\n{SEED}",
                SEED.replace("  namespace: shop\n", "")
                    .replace("name: web\n", "name: api\n")
            ),
        )
        .await
        .expect(StatusCode::BAD_REQUEST);
    let message = error_message(&reply);
    assert!(
        message.contains("deployment web is in project shop")
            && message.contains("project other was asked for")
            && message.contains("-p shop"),
        "{message}"
    );
    for project in ["shop", "other"] {
        let list = deployments(&app, &admin, project).await;
        assert!(list.is_empty(), "{list:?}");
    }
    // The same project both ways is fine.
    app.send(
        Method::POST,
        "/api/v1/apply?project=other",
        &[
            ("authorization", format!("Bearer {admin}")),
            ("content-type", "application/yaml".into()),
        ],
        SEED.replace("namespace: shop", "namespace: other"),
    )
    .await
    .expect(StatusCode::OK);
    // No project anywhere: refused with a hint.
    let no_project = SEED.replace("  namespace: shop\n", "");
    let reply = app
        .apply_yaml(&admin, &no_project)
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("project")
    );
    let list = deployments(&app, &admin, "shop").await;
    assert!(list.is_empty(), "nothing was created: {list:?}");
}

#[tokio::test]
async fn project_roles_govern_cluster_objects() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "shop", false).await;
    for (user, role) in [("dev", "developer"), ("guest", "guest")] {
        app.create_user(&admin, user, &format!("{user}-password"))
            .await;
        app.add_member(&admin, "shop", user, role).await;
    }
    app.create_user(&admin, "outsider", "outsider-password")
        .await;
    let dev = app.api_login("dev", "dev-password").await;
    let guest = app.api_login("guest", "guest-password").await;
    let outsider = app.api_login("outsider", "outsider-password").await;

    app.apply_yaml(&guest, SEED)
        .await
        .expect(StatusCode::FORBIDDEN);
    app.apply_yaml(&outsider, SEED)
        .await
        .expect(StatusCode::FORBIDDEN);
    app.apply_yaml(&dev, SEED).await.expect(StatusCode::OK);
    app.api(
        &guest,
        Method::GET,
        "/api/v1/projects/shop/deployments/web",
        Value::Null,
    )
    .await
    .expect(StatusCode::OK);
    app.api(
        &outsider,
        Method::GET,
        "/api/v1/projects/shop/deployments",
        Value::Null,
    )
    .await
    .expect(StatusCode::FORBIDDEN);
    app.api(
        &guest,
        Method::PUT,
        "/api/v1/projects/shop/deployments/web/scale",
        json!({"replicas": 9}),
    )
    .await
    .expect(StatusCode::FORBIDDEN);
    // Developers push but do not delete; nodes are the administrators'.
    app.api(
        &dev,
        Method::DELETE,
        "/api/v1/projects/shop/deployments/web",
        Value::Null,
    )
    .await
    .expect(StatusCode::FORBIDDEN);
    app.api(
        &dev,
        Method::POST,
        "/api/v1/nodes",
        json!({"metadata": {"name": "rogue"}}),
    )
    .await
    .expect(StatusCode::FORBIDDEN);
    app.api(&dev, Method::GET, "/api/v1/nodes", Value::Null)
        .await
        .expect(StatusCode::OK);
    // The OpenAPI document is public.
    let doc = app
        .send(Method::GET, "/api/v1/openapi.json", &[], Bytes::new())
        .await
        .expect(StatusCode::OK)
        .json();
    assert!(doc["paths"]["/api/v1/apply"]["post"].is_object());
}

#[tokio::test]
async fn watches_stream_changes_after_a_resource_version() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "shop", false).await;
    let list = app
        .api(
            &admin,
            Method::GET,
            "/api/v1/projects/shop/deployments",
            Value::Null,
        )
        .await
        .json();
    let version = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let uri = format!("/api/v1/projects/shop/deployments?watch=true&resourceVersion={version}");
    let mut body = app.watch(&admin, &uri).await;
    app.apply_yaml(&admin, SEED).await.expect(StatusCode::OK);
    app.api(
        &admin,
        Method::DELETE,
        "/api/v1/projects/shop/deployments/web",
        Value::Null,
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    let events = watch_events(&mut body, 2).await;
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["metadata"]["name"], "web");
    assert_eq!(events[1]["type"], "DELETED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_project_deletes_its_workloads() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "shop", false).await;
    let _controllers = app.app.control.start("test".into());
    app.apply_yaml(&admin, SEED).await.expect(StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(20);
    while pods(&app, &admin).await.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the deployment never made its pods"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.api(&admin, Method::DELETE, "/api/v1/projects/shop", Value::Null)
        .await
        .expect(StatusCode::NO_CONTENT);

    // A project of the same name starts empty: nothing of the old one runs on.
    app.create_project(&admin, "shop", false).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let deployments = app
            .api(
                &admin,
                Method::GET,
                "/api/v1/projects/shop/deployments",
                Value::Null,
            )
            .await
            .expect(StatusCode::OK)
            .json();
        let pods = pods(&app, &admin).await;
        if deployments["items"].as_array().unwrap().is_empty() && pods.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: {deployments} {pods:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_refreshes_are_not_audited_as_registrations() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    let post = |cpu_load: f32, pool: &'static str| {
        let node = json!({
            "metadata": {"name": "n1", "labels": {"wharf.io/pool": pool}},
            "status": {
                "capacity": {"cpuMillis": 4000, "memoryBytes": 8u64 << 30, "pods": 110},
                "cpuLoad": cpu_load,
            },
        });
        app.api(&admin, Method::POST, "/api/v1/nodes", node)
    };
    post(0.1, "web").await.expect(StatusCode::OK);
    // The agent's periodic status reports: only the load moves.
    post(0.2, "web").await.expect(StatusCode::OK);
    let refreshed = post(0.3, "web").await.expect(StatusCode::OK).json();
    assert!((refreshed["status"]["cpuLoad"].as_f64().unwrap() - 0.3).abs() < 1e-6);
    assert_eq!(app.audit_events("node.register").await.len(), 1);

    // A changed label is a registration again.
    post(0.3, "batch").await.expect(StatusCode::OK);
    assert_eq!(app.audit_events("node.register").await.len(), 2);
}

#[tokio::test]
async fn privileged_settings_need_the_projects_allow_privileged() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "shop", false).await;
    app.create_user(&admin, "owner", "owner-password").await;
    app.add_member(&admin, "shop", "owner", "projectAdmin")
        .await;
    let owner = app.api_login("owner", "owner-password").await;
    let privileged = SEED
        .replace(
            "      containers:",
            "      hostIPC: true\n      hostNetwork: true\n      containers:",
        )
        .replace(
            "          ports:",
            "          securityContext: {privileged: true, capabilities: {add: [NET_ADMIN, KILL]}}\n          ports:",
        );
    let reply = app
        .apply_yaml(&admin, &privileged)
        .await
        .expect(StatusCode::BAD_REQUEST);
    let message = error_message(&reply);
    for field in [
        "spec.template.spec.hostIPC",
        "spec.template.spec.hostNetwork",
        "spec.template.spec.containers[0].securityContext.privileged",
        "spec.template.spec.containers[0].securityContext.capabilities.add (NET_ADMIN)",
        "--allow-privileged=true",
    ] {
        assert!(message.contains(field), "{field}: {message}");
    }
    assert!(
        !message.contains("(KILL)"),
        "KILL is in the default set: {message}"
    );
    let listed = deployments(&app, &admin, "shop").await;
    assert!(listed.is_empty(), "nothing was created: {listed:?}");

    // Only a system administrator allows it, not the project's admin.
    let allow = json!({"allow_privileged": true});
    app.api(
        &owner,
        Method::PATCH,
        "/api/v1/projects/shop",
        allow.clone(),
    )
    .await
    .expect(StatusCode::FORBIDDEN);
    let project = app
        .api(&admin, Method::PATCH, "/api/v1/projects/shop", allow)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(project["allow_privileged"], true);
    let shown = app
        .api(&owner, Method::GET, "/api/v1/projects/shop", Value::Null)
        .await
        .json();
    assert_eq!(shown["allow_privileged"], true);
    app.apply_yaml(&owner, &privileged)
        .await
        .expect(StatusCode::OK);

    // Updating a deployment in place is checked the same way.
    app.create_project(&admin, "plain", false).await;
    let plain = SEED.replace("namespace: shop", "namespace: plain");
    app.apply_yaml(&admin, &plain).await.expect(StatusCode::OK);
    let mut current = app
        .api(
            &admin,
            Method::GET,
            "/api/v1/projects/plain/deployments/web",
            Value::Null,
        )
        .await
        .json();
    current["spec"]["template"]["spec"]["hostPID"] = json!(true);
    let reply = app
        .api(
            &admin,
            Method::PUT,
            "/api/v1/projects/plain/deployments/web",
            current,
        )
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert!(
        error_message(&reply).contains("spec.template.spec.hostPID not allowed in project plain"),
        "{}",
        error_message(&reply)
    );
}

#[tokio::test]
async fn a_project_admin_sets_the_default_tier_that_deployments_without_one_get() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_project(&admin, "shop", false).await;
    for (user, role) in [("owner", "projectAdmin"), ("dev", "developer")] {
        app.create_user(&admin, user, "user-password-1").await;
        app.add_member(&admin, "shop", user, role).await;
    }
    let owner = app.api_login("owner", "user-password-1").await;
    let dev = app.api_login("dev", "user-password-1").await;
    let patch = |tier: &str| json!({"default_tier": tier});

    let bad = app
        .api(
            &owner,
            Method::PATCH,
            "/api/v1/projects/shop",
            patch("gold"),
        )
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert!(
        error_message(&bad).starts_with("default_tier: \"gold\" is not a tier"),
        "{}",
        error_message(&bad)
    );
    app.api(&dev, Method::PATCH, "/api/v1/projects/shop", patch("core"))
        .await
        .expect(StatusCode::FORBIDDEN);
    let project = app
        .api(
            &owner,
            Method::PATCH,
            "/api/v1/projects/shop",
            patch("core;preferred"),
        )
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(project["default_tier"], "core;preferred");

    // Applied: the deployment carries the project's tier; its own wins.
    app.apply_yaml(&dev, SEED).await.expect(StatusCode::OK);
    let own = SEED.replace("name: web\n", "name: jobs\n").replace(
        "  namespace: shop\n",
        "  namespace: shop\n  annotations: {wharf.io/tier: batch}\n",
    );
    app.apply_yaml(&dev, &own).await.expect(StatusCode::OK);
    let tiers: Vec<(String, Value)> = deployments(&app, &admin, "shop")
        .await
        .iter()
        .map(|d| {
            let name = d["metadata"]["name"].as_str().unwrap().to_string();
            (name, d["metadata"]["annotations"]["wharf.io/tier"].clone())
        })
        .collect();
    assert_eq!(
        tiers,
        [
            ("jobs".to_string(), json!("batch")),
            ("web".to_string(), json!("core;preferred"))
        ]
    );
    // A replacement (PUT) without the annotation gets it too.
    let path = "/api/v1/projects/shop/deployments/web";
    let mut web = app
        .api(&dev, Method::GET, path, Value::Null)
        .await
        .expect(StatusCode::OK)
        .json();
    web["metadata"]["annotations"] = json!({});
    let replaced = app
        .api(&dev, Method::PUT, path, web)
        .await
        .expect(StatusCode::OK)
        .json();
    let tier = &replaced["metadata"]["annotations"]["wharf.io/tier"];
    assert_eq!(tier, "core;preferred", "{replaced}");

    // Removed with "".
    let cleared = app
        .api(&owner, Method::PATCH, "/api/v1/projects/shop", patch(""))
        .await
        .expect(StatusCode::OK)
        .json();
    assert!(cleared["default_tier"].is_null(), "{cleared}");
}

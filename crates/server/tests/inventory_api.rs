//! The inventory over the API: clusters, pools and machine classes
//! created, read, updated with the resourceVersion read, applied as YAML
//! and deleted; bad input and deletes that would orphan something are
//! refused with the reason and nothing changes; every write is audited.

mod common;

use common::*;
use http::{Method, StatusCode};
use serde_json::json;

const INVENTORY: &str = "
apiVersion: wharf.io/v1
kind: Cluster
metadata: {name: bj-physical}
spec: {kind: physical, idc: bj-1, pricePerHour: 0.05}
---
apiVersion: wharf.io/v1
kind: MachineClass
metadata: {name: legacy-12c16g}
spec: {cpu: {max: '12'}, memory: {max: 16Gi}, pricePerHour: 0.12, tier: batch}
---
apiVersion: wharf.io/v1
kind: MachineClass
metadata: {name: std-32c32g}
spec: {cpu: {min: '16'}, memory: {min: 24Gi}, pricePerHour: 0.4, tier: core}
---
apiVersion: wharf.io/v1
kind: Pool
metadata: {name: core}
spec:
  cluster: bj-physical
  labels: {team: web}
  taints: [{key: dedicated, value: core, effect: NoSchedule}]
  machineClasses: [std-32c32g]
  init: {sysctls: {net.ipv4.ip_forward: '1'}, files: [{path: /etc/motd, content: core, mode: '0644'}]}
";

#[tokio::test]
async fn the_inventory_is_applied_read_updated_and_deleted_in_order() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    let applied = app
        .apply_yaml(&admin, INVENTORY)
        .await
        .expect(StatusCode::OK)
        .json();
    let actions: Vec<String> = applied["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}/{} {}", r["kind"], r["name"], r["action"]).replace('"', ""))
        .collect();
    assert_eq!(
        actions,
        [
            "Cluster/bj-physical created",
            "MachineClass/legacy-12c16g created",
            "MachineClass/std-32c32g created",
            "Pool/core created"
        ]
    );
    assert!(applied["results"][0]["project"].is_null());
    let again = app
        .apply_yaml(&admin, INVENTORY)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(again["results"][3]["action"], "configured");

    let pools = app
        .api(&admin, Method::GET, "/api/v1/pools", json!(null))
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(pools["kind"], "PoolList");
    assert_eq!(pools["items"][0]["spec"]["machineClasses"][0], "std-32c32g");
    assert_eq!(pools["items"][0]["status"]["nodes"], 0);

    // An update names the version it read; a stale one is refused.
    let mut class = app
        .api(
            &admin,
            Method::GET,
            "/api/v1/machineclasses/std-32c32g",
            json!(null),
        )
        .await
        .expect(StatusCode::OK)
        .json();
    class["spec"]["pricePerHour"] = json!(0.5);
    let updated = app
        .api(
            &admin,
            Method::PUT,
            "/api/v1/machineclasses/std-32c32g",
            class.clone(),
        )
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(updated["spec"]["pricePerHour"], 0.5);
    assert_eq!(updated["metadata"]["generation"], 2);
    let stale = app
        .api(
            &admin,
            Method::PUT,
            "/api/v1/machineclasses/std-32c32g",
            class,
        )
        .await
        .expect(StatusCode::CONFLICT);
    assert!(stale.text().contains("changed since"), "{}", stale.text());

    // Deletes that would orphan something say what still uses it.
    let refused = app
        .api(
            &admin,
            Method::DELETE,
            "/api/v1/clusters/bj-physical",
            json!(null),
        )
        .await
        .expect(StatusCode::CONFLICT);
    assert!(
        refused.text().contains("still has pools core"),
        "{}",
        refused.text()
    );
    let refused = app
        .api(
            &admin,
            Method::DELETE,
            "/api/v1/machineclasses/std-32c32g",
            json!(null),
        )
        .await
        .expect(StatusCode::CONFLICT);
    assert!(
        refused.text().contains("used by pools core"),
        "{}",
        refused.text()
    );
    for path in [
        "/api/v1/pools/core",
        "/api/v1/machineclasses/std-32c32g",
        "/api/v1/machineclasses/legacy-12c16g",
        "/api/v1/clusters/bj-physical",
    ] {
        app.api(&admin, Method::DELETE, path, json!(null))
            .await
            .expect(StatusCode::NO_CONTENT);
    }
    app.api(
        &admin,
        Method::GET,
        "/api/v1/clusters/bj-physical",
        json!(null),
    )
    .await
    .expect(StatusCode::NOT_FOUND);
    app.flush_audit().await;
    assert_eq!(app.audit_events("pool.apply").await.len(), 2);
    assert_eq!(app.audit_events("machineclass.update").await.len(), 2);
    assert_eq!(app.audit_events("cluster.delete").await.len(), 2);
}

#[tokio::test]
async fn bad_inventory_is_refused_with_the_reason_and_nothing_stored() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.api(
        &admin,
        Method::POST,
        "/api/v1/clusters",
        json!({"metadata": {"name": "bj"}, "spec": {"kind": "vm"}}),
    )
    .await
    .expect(StatusCode::CREATED);
    let cases = [
        (
            "/api/v1/pools",
            json!({"metadata": {"name": "p"}, "spec": {"cluster": "bj", "machineClasses": ["nope"]}}),
            "unknown machine class nope",
        ),
        (
            "/api/v1/pools",
            json!({"metadata": {"name": "p"}, "spec": {"cluster": "sh"}}),
            "cluster sh does not exist",
        ),
        (
            "/api/v1/pools",
            json!({"metadata": {"name": "p"}, "spec": {"cluster": "bj",
                   "init": {"files": [{"path": "/etc/../root/x", "content": ""}]}}}),
            "absolute path",
        ),
        (
            "/api/v1/machineclasses",
            json!({"metadata": {"name": "c"}, "spec": {"pricePerHour": -1.0}}),
            "spec.pricePerHour",
        ),
        (
            "/api/v1/machineclasses",
            json!({"metadata": {"name": "c"}, "spec": {"cpu": {"min": "32", "max": "12"}, "pricePerHour": 1.0}}),
            "min 32 is more than max 12",
        ),
        (
            "/api/v1/clusters",
            json!({"metadata": {"name": "bj"}}),
            "already exists",
        ),
    ];
    for (path, body, reason) in cases {
        let reply = app.api(&admin, Method::POST, path, body).await;
        assert!(reply.status.is_client_error(), "{path}: {}", reply.status);
        assert!(reply.text().contains(reason), "{path}: {}", reply.text());
    }
    for path in ["/api/v1/pools", "/api/v1/machineclasses"] {
        let list = app
            .api(&admin, Method::GET, path, json!(null))
            .await
            .expect(StatusCode::OK)
            .json();
        assert_eq!(list["items"], json!([]), "{path}");
    }
    let yaml = "apiVersion: wharf.io/v1\nkind: Pool\nmetadata: {name: p, namespace: shop}\nspec: {cluster: bj}\n";
    let refused = app
        .apply_yaml(&admin, yaml)
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert!(
        refused.text().contains("cluster-wide"),
        "{}",
        refused.text()
    );
    let renamed = app
        .api(
            &admin,
            Method::PUT,
            "/api/v1/clusters/bj",
            json!({"metadata": {"name": "other", "resourceVersion": "1"}}),
        )
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert!(renamed.text().contains("not bj"), "{}", renamed.text());
}

#[tokio::test]
async fn only_inventory_managers_apply_inventory() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.create_user(&admin, "dev", "dev-password").await;
    let dev = app.api_login("dev", "dev-password").await;
    let refused = app
        .apply_yaml(&dev, INVENTORY)
        .await
        .expect(StatusCode::FORBIDDEN);
    assert!(
        refused.text().contains("managing clusters"),
        "{}",
        refused.text()
    );
    let list = app
        .api(&admin, Method::GET, "/api/v1/clusters", json!(null))
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn a_registration_naming_a_pool_joins_it_once_and_for_all() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.apply_yaml(&admin, INVENTORY)
        .await
        .expect(StatusCode::OK);
    let node = |pool: &str| {
        json!({"metadata": {"name": "n1", "annotations": {"wharf.io/join-pool": pool}},
               "status": {"capacity": {"cpuMillis": 32000, "memoryBytes": 34359738368u64, "pods": 110}}})
    };
    let refused = app
        .api(&admin, Method::POST, "/api/v1/nodes", node("nope"))
        .await
        .expect(StatusCode::BAD_REQUEST);
    assert!(
        refused.text().contains("pool nope, which does not exist"),
        "{}",
        refused.text()
    );
    let joined = app
        .api(&admin, Method::POST, "/api/v1/nodes", node("core"))
        .await
        .expect(StatusCode::OK)
        .json();
    let labels = &joined["metadata"]["labels"];
    assert_eq!(labels["team"], "web");
    assert_eq!(labels["wharf.io/cluster"], "bj-physical");
    assert_eq!(labels["wharf.io/cluster-kind"], "physical");
    assert_eq!(labels["wharf.io/idc"], "bj-1");
    assert_eq!(labels["wharf.io/machine-class"], "std-32c32g");
    assert_eq!(labels["wharf.io/tier"], "core");
    assert_eq!(joined["spec"]["taints"][0]["key"], "dedicated");
    assert_eq!(joined["spec"]["costPerHour"], 0.4);
    let pool = app
        .api(&admin, Method::GET, "/api/v1/pools/core", json!(null))
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(pool["status"]["nodes"], 1);

    app.apply_yaml(
        &admin,
        "apiVersion: wharf.io/v1\nkind: Pool\nmetadata: {name: batch}\nspec: {cluster: bj-physical}\n",
    )
    .await
    .expect(StatusCode::OK);
    let moved = app
        .api(&admin, Method::POST, "/api/v1/nodes", node("batch"))
        .await
        .expect(StatusCode::CONFLICT);
    assert!(
        moved.text().contains("node n1 is in pool core"),
        "{}",
        moved.text()
    );
    let refused = app
        .api(&admin, Method::DELETE, "/api/v1/pools/core", json!(null))
        .await
        .expect(StatusCode::CONFLICT);
    assert!(
        refused.text().contains("still has nodes n1"),
        "{}",
        refused.text()
    );

    // A pool operator cordons; taints and price are the managers'.
    app.create_user(&admin, "ops", "ops-password").await;
    app.api(
        &admin,
        Method::PUT,
        "/api/v1/users/ops/inventoryrole",
        json!({"role": "poolOperator"}),
    )
    .await
    .expect(StatusCode::OK);
    let ops = app.api_login("ops", "ops-password").await;
    let cordoned = app
        .api(
            &ops,
            Method::PATCH,
            "/api/v1/nodes/n1",
            json!({"unschedulable": true}),
        )
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(cordoned["spec"]["unschedulable"], true);
    let refused = app
        .api(
            &ops,
            Method::PATCH,
            "/api/v1/nodes/n1",
            json!({"costPerHour": 0.0}),
        )
        .await
        .expect(StatusCode::FORBIDDEN);
    assert!(
        refused.text().contains("clusterAdmin"),
        "{}",
        refused.text()
    );
    app.api(
        &ops,
        Method::POST,
        "/api/v1/clusters",
        json!({"metadata": {"name": "x"}}),
    )
    .await
    .expect(StatusCode::FORBIDDEN);
    app.api(&ops, Method::GET, "/api/v1/pools", json!(null))
        .await
        .expect(StatusCode::OK);
}

/// A node of a pool with an init profile reads it (with its hash) from
/// its own route, is tainted until it reports a successful run, and shows
/// the run and the `Initialized` condition in its status.
#[tokio::test]
async fn a_node_reads_its_pools_init_profile_and_is_initialized_by_its_report() {
    let app = TestApp::new().await;
    let admin = app.admin_token().await;
    app.apply_yaml(&admin, INVENTORY)
        .await
        .expect(StatusCode::OK);
    let node = |initialization: serde_json::Value| {
        json!({"metadata": {"name": "n1", "annotations": {"wharf.io/join-pool": "core"}},
               "status": {"capacity": {"cpuMillis": 32000, "memoryBytes": 34359738368u64, "pods": 110},
                          "initialization": initialization}})
    };
    let joined = app
        .api(&admin, Method::POST, "/api/v1/nodes", node(json!(null)))
        .await
        .expect(StatusCode::OK)
        .json();
    let taints = joined["spec"]["taints"].as_array().unwrap();
    assert!(
        taints
            .iter()
            .any(|t| t["key"] == "wharf.io/not-initialized" && t["effect"] == "NoSchedule"),
        "{taints:?}"
    );
    assert_eq!(joined["status"]["conditions"][0]["type"], "Initialized");
    assert_eq!(joined["status"]["conditions"][0]["status"], "False");

    let profile = app
        .api(&admin, Method::GET, "/api/v1/nodes/n1/init", json!(null))
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(profile["pool"], "core");
    assert_eq!(profile["profile"]["sysctls"]["net.ipv4.ip_forward"], "1");
    let hash = profile["hash"].as_str().unwrap();
    assert!(hash.starts_with("sha256:"), "{hash}");

    let done = json!({"profileHash": hash, "state": "Succeeded",
                      "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:03Z"});
    let node = app
        .api(&admin, Method::POST, "/api/v1/nodes", node(done))
        .await
        .expect(StatusCode::OK)
        .json();
    let taints = node["spec"]["taints"].as_array().unwrap();
    assert!(
        taints
            .iter()
            .all(|t| t["key"] != "wharf.io/not-initialized")
    );
    assert_eq!(node["status"]["conditions"][0]["status"], "True");
    assert_eq!(node["status"]["initialization"]["state"], "Succeeded");
    assert_eq!(
        node["status"]["initialization"]["finishedAt"],
        "2026-01-01T00:00:03Z"
    );
}

//! Simulated nodes of different loads (`wharf agent --simulate --load`):
//! `wharf top nodes` shows their load, and the scheduler sends pods to the
//! less loaded of two otherwise equal nodes, naming the scores.

use serde_json::Value;

use super::{TestServer, background_agent, get_json, shop_session, wait_for, wharf};
use crate::common::cli::{ok, run_with_stdin};

/// One replica on a node of machine class 1 (simulated nodes 1 and 4).
fn deployment(name: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: shop}}\n\
         spec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    \
         metadata: {{labels: {{app: {name}}}}}\n    spec:\n      \
         nodeSelector: {{wharf.io/machine-class: \"1\"}}\n      containers:\n        \
         - {{name: c, image: shop/web:1.0}}\n"
    )
}

#[test]
fn simulated_loads_show_in_top_and_steer_pods_to_the_idle_node() {
    let server = TestServer::start();
    let home = shop_session(&server);
    let home = home.path();
    // Nodes 1 and 4 share machine class 1; node 1 is the busy one, and
    // comes first by name.
    let args = [
        "--name",
        "wmdsim",
        "--simulate",
        "4",
        "--load",
        "0.9,0.5,0.5,0.1",
    ];
    let _fleet = background_agent(home, &args);
    let top = wait_for("4 nodes in top", || {
        let output = wharf(home)
            .args(["top", "nodes", "--sort", "cpu", "-o", "json"])
            .output()
            .ok()?;
        let rows: Value = serde_json::from_slice(&output.stdout).ok()?;
        (rows.as_array()?.len() == 4).then_some(rows)
    });
    assert_eq!(top[0]["name"], "wmdsim-00001", "{top}");
    // 16 cores at 90%.
    assert!(
        (top[0]["cpuCores"].as_f64().unwrap() - 14.4).abs() < 0.01,
        "{top}"
    );
    assert_eq!(top[3]["name"], "wmdsim-00004", "{top}");
    // Listed is not yet schedulable: a new server's leader marks nodes
    // ready as it sees their leases, one by one; a pod placed before both
    // class-1 nodes are ready could only go to the one that is.
    wait_for("4 nodes ready", || {
        let nodes = get_json(home, &["nodes"]);
        let items = nodes["items"].as_array().or(nodes.as_array())?.clone();
        let ready = items.iter().filter(|n| n["status"]["ready"] == true);
        (ready.count() == 4).then_some(())
    });

    for name in ["first", "second"] {
        let mut apply = wharf(home);
        apply.args(["apply", "-f", "-"]);
        ok(run_with_stdin(apply, &deployment(name)));
        let pod = wait_for(&format!("{name} bound"), || {
            let pods = get_json(home, &["pods", "-p", "shop"]);
            let items = pods["items"].as_array().or(pods.as_array())?.clone();
            let pod = items
                .into_iter()
                .find(|p| p["metadata"]["labels"]["app"] == name)?;
            pod["spec"]["nodeName"].is_string().then_some(pod)
        });
        assert_eq!(pod["spec"]["nodeName"], "wmdsim-00004", "{pod}");
        let pod_name = pod["metadata"]["name"].as_str().unwrap();
        let described = ok(wharf(home)
            .args(["describe", "pod", pod_name, "-p", "shop"])
            .output()
            .unwrap());
        assert!(
            described.contains("Scheduling:") && described.contains("load 90.0"),
            "{described}"
        );
    }
}

//! Objects on a real store in a temporary directory, for unit tests.

use std::sync::Arc;

use wharf_api::{
    Deployment, HorizontalPodAutoscaler, Manifest, Node, Pod, Resources, parse_manifests,
};
use wharf_store::{RedbStore, RedbStoreOptions};

use crate::deployments::pod_for;
use crate::objects::Objects;

/// Objects kept in a store under `dir`.
pub(crate) fn objects(dir: &tempfile::TempDir) -> Objects {
    let path = dir.path().join("state.redb");
    let store = RedbStore::open(&path, RedbStoreOptions::default()).unwrap();
    Objects::new(Arc::new(store))
}

/// Node `name` with 4 CPUs, 8 GiB and room for 110 pods.
pub(crate) fn four_core_node(name: &str) -> Node {
    let capacity = Resources {
        cpu_millis: 4000,
        memory_bytes: 8 << 30,
        pods: 110,
    };
    Node::new(name, capacity)
}

/// Stores node `name`, ready or not.
pub(crate) async fn node(objects: &Objects, name: &str, ready: bool) {
    let mut node = four_core_node(name);
    node.status.ready = ready;
    objects.create(node).await.unwrap();
}

/// Stores deployment `name` in project `shop`.
pub(crate) async fn deployment(objects: &Objects, name: &str) -> Deployment {
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: shop}}\n\
         spec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    \
         metadata: {{labels: {{app: {name}}}}}\n    spec:\n      \
         terminationGracePeriodSeconds: 7\n      containers: [{{name: main, image: shop/{name}:1, \
         resources: {{requests: {{cpu: 100m}}}}}}]\n"
    );
    let Manifest::Deployment(deployment) = parse_manifests(&yaml).unwrap().remove(0).manifest
    else {
        panic!("the test manifest is a deployment");
    };
    objects.create(*deployment).await.unwrap()
}

/// Stores a pod of `owner`, bound to `node` when given; returns it as stored.
pub(crate) async fn pod(objects: &Objects, owner: &Deployment, node: Option<&str>) -> Pod {
    let pod = objects.create(pod_for(owner, "0123456789")).await.unwrap();
    let name = pod.metadata.name.clone();
    if let Some(node) = node {
        let bound = objects.bind(node, &[pod]).await.unwrap();
        assert_eq!(bound, crate::pods::BindOutcome::Bound);
    }
    objects.require(Some("shop"), &name).await.unwrap()
}

/// Whether pod `shop/name` is stored.
pub(crate) async fn pod_exists(objects: &Objects, name: &str) -> bool {
    objects
        .get::<Pod>(Some("shop"), name)
        .await
        .unwrap()
        .is_some()
}

/// An autoscaler of deployment `shop/target` at 50% CPU, up to `max`.
pub(crate) fn hpa(target: &str, max: u32) -> HorizontalPodAutoscaler {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": target, "project": "shop"},
        "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": target},
            "maxReplicas": max,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 50}}}],
        },
    }))
    .unwrap()
}

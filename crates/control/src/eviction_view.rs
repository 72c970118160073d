//! What the eviction controller knows of nodes and pods: a copy kept by
//! watches, with pods indexed by node, so that a pass reads no store and
//! looks only at the pods of tainted nodes.
//!
//! The copy may lag the store; that is safe because every write the
//! controller makes checks the stored object (taints are set from the
//! node read in the same modify, evictions are compare-and-swap on the pod
//! and on the node's heartbeat key). A lagging copy only delays a pass
//! until the watch catches up, and the change that catches it up starts
//! the next pass.

use std::collections::{BTreeMap, HashMap};

use wharf_api::{Node, Pod, TaintEffect};

use crate::objects::Change;

/// A pod's project and name.
type PodKey = (String, String);

/// Nodes by name, and the pods bound to each.
#[derive(Default)]
pub(crate) struct EvictionView {
    pub(crate) nodes: BTreeMap<String, Node>,
    pods: HashMap<String, HashMap<PodKey, Pod>>,
    /// The node each indexed pod is bound to, to move or drop it.
    bound: HashMap<PodKey, String>,
}

impl EvictionView {
    /// A view of exactly `nodes` and `pods` (a listing).
    pub(crate) fn load(nodes: Vec<Node>, pods: Vec<Pod>) -> EvictionView {
        let mut view = EvictionView {
            nodes: nodes
                .into_iter()
                .map(|n| (n.metadata.name.clone(), n))
                .collect(),
            ..EvictionView::default()
        };
        for pod in pods {
            view.put_pod(pod);
        }
        view
    }

    /// The pods bound to `node`.
    pub(crate) fn pods_on(&self, node: &str) -> impl Iterator<Item = &Pod> {
        self.pods
            .get(node)
            .into_iter()
            .flat_map(|pods| pods.values())
    }

    /// Applies a node change; true if it can change what a pass does (the
    /// node came or went, or its readiness or taints changed), false for
    /// the agents' routine status refreshes.
    pub(crate) fn apply_node(&mut self, change: Change<Node>) -> bool {
        match change {
            Change::Added(node) | Change::Modified(node) => {
                let relevant = self.nodes.get(&node.metadata.name).is_none_or(|old| {
                    old.status.ready != node.status.ready
                        || old.status.not_ready_reason != node.status.not_ready_reason
                        || old.spec.taints != node.spec.taints
                });
                self.nodes.insert(node.metadata.name.clone(), node);
                relevant
            }
            Change::Deleted { name, .. } => self.nodes.remove(&name).is_some(),
        }
    }

    /// Applies a pod change; true if it is a pod on a node with `NoExecute`
    /// taints (one that a pass may have to evict).
    pub(crate) fn apply_pod(&mut self, change: Change<Pod>) -> bool {
        match change {
            Change::Added(pod) | Change::Modified(pod) => {
                let on_tainted = pod
                    .spec
                    .node_name
                    .as_deref()
                    .and_then(|n| self.nodes.get(n))
                    .is_some_and(has_no_execute_taint);
                self.put_pod(pod);
                on_tainted
            }
            Change::Deleted { project, name, .. } => {
                self.drop_pod(&(project.unwrap_or_default(), name));
                false
            }
        }
    }

    fn put_pod(&mut self, pod: Pod) {
        let key = (
            pod.metadata.project.clone().unwrap_or_default(),
            pod.metadata.name.clone(),
        );
        self.drop_pod(&key);
        if let Some(node) = pod.spec.node_name.clone() {
            self.bound.insert(key.clone(), node.clone());
            self.pods.entry(node).or_default().insert(key, pod);
        }
    }

    fn drop_pod(&mut self, key: &PodKey) {
        let Some(node) = self.bound.remove(key) else {
            return;
        };
        if let Some(pods) = self.pods.get_mut(&node) {
            pods.remove(key);
            if pods.is_empty() {
                self.pods.remove(&node);
            }
        }
    }
}

fn has_no_execute_taint(node: &Node) -> bool {
    node.spec
        .taints
        .iter()
        .any(|t| t.effect == TaintEffect::NoExecute)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_api::{Resources, Taint};

    fn node(name: &str, ready: bool) -> Node {
        let mut node = Node::new(name, Resources::default());
        node.status.ready = ready;
        node
    }

    fn pod(name: &str, node: Option<&str>) -> Pod {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"containers": [{"name": "main", "image": "app:1"}]}
        }))
        .unwrap();
        pod.spec.node_name = node.map(str::to_string);
        pod
    }

    fn names<'a>(pods: impl Iterator<Item = &'a Pod>) -> Vec<String> {
        let mut names: Vec<String> = pods.map(|p| p.metadata.name.clone()).collect();
        names.sort();
        names
    }

    #[test]
    fn only_readiness_and_taint_changes_of_nodes_matter() {
        let mut view = EvictionView::load(vec![node("wfo-a", true)], Vec::new());
        let mut refreshed = node("wfo-a", true);
        refreshed.status.cpu_load = Some(0.5);
        assert!(!view.apply_node(Change::Modified(refreshed.clone())));
        assert_eq!(view.nodes["wfo-a"].status.cpu_load, Some(0.5));
        let mut unhealthy = refreshed.clone();
        unhealthy.status.not_ready_reason = Some("runc fails".into());
        assert!(view.apply_node(Change::Modified(unhealthy)));
        assert!(view.apply_node(Change::Modified(node("wfo-a", false))));
        let mut tainted = node("wfo-a", false);
        tainted.spec.taints.push(Taint {
            key: "k".into(),
            value: String::new(),
            effect: TaintEffect::NoExecute,
            time_added: None,
        });
        assert!(view.apply_node(Change::Modified(tainted)));
        assert!(view.apply_node(Change::Added(node("wfo-b", true))));
        assert!(view.nodes.contains_key("wfo-b"));
        let deleted = |name: &str| Change::Deleted {
            project: None,
            name: name.into(),
            revision: 1,
        };
        assert!(view.apply_node(deleted("wfo-b")));
        assert!(!view.apply_node(deleted("wfo-b")));
    }

    #[test]
    fn pods_are_indexed_by_the_node_they_are_bound_to() {
        let mut view = EvictionView::load(
            vec![node("wfo-a", true), node("wfo-b", true)],
            vec![pod("one", Some("wfo-a")), pod("pending", None)],
        );
        assert_eq!(names(view.pods_on("wfo-a")), ["one"]);
        // Bound later, moved (a new pod of the same name), deleted.
        assert!(!view.apply_pod(Change::Modified(pod("pending", Some("wfo-a")))));
        assert_eq!(names(view.pods_on("wfo-a")), ["one", "pending"]);
        view.apply_pod(Change::Added(pod("one", Some("wfo-b"))));
        assert_eq!(names(view.pods_on("wfo-a")), ["pending"]);
        assert_eq!(names(view.pods_on("wfo-b")), ["one"]);
        view.apply_pod(Change::Deleted {
            project: Some("shop".into()),
            name: "one".into(),
            revision: 9,
        });
        assert_eq!(view.pods_on("wfo-b").count(), 0);

        // A pod on a node with a NoExecute taint is one to look at.
        let mut tainted = node("wfo-b", false);
        tainted.spec.taints.push(Taint {
            key: "node.kubernetes.io/unreachable".into(),
            value: String::new(),
            effect: TaintEffect::NoExecute,
            time_added: Some(1),
        });
        view.apply_node(Change::Modified(tainted));
        assert!(view.apply_pod(Change::Added(pod("late", Some("wfo-b")))));
    }
}

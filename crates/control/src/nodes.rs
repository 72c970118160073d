//! Node registration, heartbeats and readiness.
//!
//! An agent registers its node, then keeps a heartbeat key alive: the key is
//! bound to a store lease the agent renews. When the agent stops renewing,
//! the lease expires, the store deletes the key, and the lifecycle
//! controller marks the node not ready. Readiness changes only on those
//! transitions, so heartbeats cost no writes.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use wharf_api::{EventType, Node, ObjectReference};
use wharf_store::{EventKind, LeaseId, StoreError, Txn};

use crate::ControlError;
use crate::events::EventRecorder;
use crate::objects::{Objects, now_millis};
use crate::pool_membership::apply_initialization;

/// Key prefix of the nodes' heartbeat keys.
pub const HEARTBEATS: &str = "/cluster/heartbeats/";

pub(crate) fn heartbeat_key(node: &str) -> String {
    format!("{HEARTBEATS}{node}")
}

/// What a node registration changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeRegistration {
    /// The node is new, or its labels, address, capacity, endpoint or cost
    /// changed: a fact operators want in the audit log.
    Registered,
    /// Only the agent's periodic status (load, images, info) was refreshed.
    Refreshed,
}

impl Objects {
    /// Creates a node or refreshes what its agent reports (labels,
    /// address, capacity, status), keeping what operators set (taints,
    /// cordon, cost), and says whether this was a real registration or a
    /// routine status refresh. A report is the agent's sign of life, as a
    /// kubelet's status update is: it stamps the node's last heartbeat
    /// (lease renewals cost no write, so they cannot). A node naming a pool
    /// is put in it (see `pool_membership`).
    pub async fn register_node(
        &self,
        mut reported: Node,
    ) -> Result<(Node, NodeRegistration), ControlError> {
        wharf_api::check_name("metadata.name", &reported.metadata.name)?;
        reported.status.last_heartbeat = now_millis();
        let name = reported.metadata.name.clone();
        let stored = self.get::<Node>(None, &name).await?;
        let join = self.place_in_pool(&mut reported, stored.as_ref()).await?;
        if let Some(join) = &join {
            // A pool's node is priced by the inventory when it joins, not
            // by its agent.
            reported.spec.cost_per_hour = join.cost_per_hour;
        }
        if stored.is_none() {
            let mut node = reported.clone();
            if let Some(join) = &join {
                join.apply_to(&mut node);
                apply_initialization(&mut node, join.init_hash.as_deref(), now_millis());
            }
            match self.create(node).await {
                Err(ControlError::Conflict(_)) => {}
                other => return other.map(|node| (node, NodeRegistration::Registered)),
            }
        }
        let mut registration = NodeRegistration::Refreshed;
        let node = self
            .modify::<Node>(None, &name, |node| {
                registration = if identity_changes(node, &reported) {
                    NodeRegistration::Registered
                } else {
                    NodeRegistration::Refreshed
                };
                node.metadata.labels = reported.metadata.labels.clone();
                if let Some(join) = &join {
                    join.apply_to(node);
                }
                node.spec.address = reported.spec.address.clone();
                if reported.spec.cost_per_hour.is_some() {
                    node.spec.cost_per_hour = reported.spec.cost_per_hour;
                }
                let ready = node.status.ready;
                let conditions = std::mem::take(&mut node.status.conditions);
                node.status = reported.status.clone();
                node.status.ready = ready;
                node.status.conditions = conditions;
                if let Some(join) = &join {
                    apply_initialization(node, join.init_hash.as_deref(), now_millis());
                }
                true
            })
            .await?;
        Ok((node, registration))
    }

    /// Starts or renews `node`'s heartbeat. With the lease of a previous
    /// beat it only renews that lease; otherwise (or if it expired) it takes
    /// a new lease of `ttl` and binds the heartbeat key to it. Returns the
    /// lease to renew next time.
    pub async fn heartbeat(
        &self,
        node: &str,
        lease: Option<LeaseId>,
        ttl: Duration,
    ) -> Result<LeaseId, ControlError> {
        if let Some(lease) = lease {
            match self.store().keep_alive(lease).await {
                Ok(()) => return Ok(lease),
                Err(StoreError::LeaseNotFound(_)) => {}
                Err(err) => return Err(err.into()),
            }
        }
        self.require::<Node>(None, node).await?;
        let lease = self.store().grant_lease(ttl).await?;
        let beat = now_millis().to_string().into_bytes();
        self.store()
            .txn(Txn::new().put_with_lease(heartbeat_key(node), beat, lease))
            .await?;
        Ok(lease)
    }
}

/// Whether `reported` changes what the node is (rather than how busy it is).
fn identity_changes(stored: &Node, reported: &Node) -> bool {
    stored.metadata.labels != reported.metadata.labels
        || stored.spec.address != reported.spec.address
        || stored.status.capacity != reported.status.capacity
        || stored.status.endpoint != reported.status.endpoint
        || reported
            .spec
            .cost_per_hour
            .is_some_and(|cost| stored.spec.cost_per_hour != Some(cost))
}

/// Keeps nodes' `ready` in step with their heartbeats.
pub struct NodeLifecycle {
    objects: Objects,
    events: EventRecorder,
}

impl NodeLifecycle {
    /// A controller over `objects`.
    pub fn new(objects: Objects) -> Arc<NodeLifecycle> {
        Arc::new(NodeLifecycle {
            events: EventRecorder::new(objects.clone(), "node-lifecycle"),
            objects,
        })
    }

    /// Runs until dropped.
    pub async fn run(self: Arc<Self>) {
        loop {
            if let Err(err) = self.follow_heartbeats().await {
                tracing::warn!(error = %err, "heartbeat watch ended; restarting");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn follow_heartbeats(&self) -> Result<(), ControlError> {
        let store = self.objects.store().clone();
        // The listing's own revision: a beat written after it is in the watch.
        let (beats, revision) =
            wharf_store::StoreExt::list_all_from(store.as_ref(), HEARTBEATS, 1000).await?;
        let alive: std::collections::HashSet<String> = beats
            .iter()
            .filter_map(|kv| kv.key.strip_prefix(HEARTBEATS).map(str::to_string))
            .collect();
        let (nodes, _) = self.objects.list::<Node>(None, None).await?;
        for node in nodes {
            let ready = alive.contains(&node.metadata.name);
            if node.status.ready != ready {
                self.set_ready(&node.metadata.name, ready).await?;
            }
        }
        let mut events = store.watch(HEARTBEATS, revision + 1).await?;
        while let Some(event) = events.next().await {
            let event = event?;
            let Some(node) = event.kv.key.strip_prefix(HEARTBEATS) else {
                continue;
            };
            self.set_ready(node, event.kind == EventKind::Put).await?;
        }
        Ok(())
    }

    async fn set_ready(&self, name: &str, ready: bool) -> Result<(), ControlError> {
        let updated = self
            .objects
            .modify::<Node>(None, name, |node| {
                let changed = node.status.ready != ready;
                node.status.ready = ready;
                if ready {
                    node.status.last_heartbeat = now_millis();
                } else {
                    // Not heard from: its load and cache may have moved on.
                    node.status.clear_load_summary();
                }
                changed
            })
            .await;
        match updated {
            Ok(node) => {
                let (reason, kind) = if ready {
                    ("NodeReady", EventType::Normal)
                } else {
                    ("NodeNotReady", EventType::Warning)
                };
                let reference = ObjectReference {
                    kind: "Node".into(),
                    project: None,
                    name: name.to_string(),
                    uid: node.metadata.uid.clone(),
                };
                let message = if ready {
                    "heartbeats arrive"
                } else {
                    "heartbeats stopped: the agent's lease expired"
                };
                self.events.record(&reference, kind, reason, message).await;
                Ok(())
            }
            // A heartbeat of a node deleted meanwhile.
            Err(ControlError::NotFound { .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }
}

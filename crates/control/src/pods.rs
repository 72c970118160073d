//! Binding pods to nodes and deleting them, with each node's allocation
//! kept exact in the same transaction.
//!
//! The allocation record of a node is the sum of the requests (and the host
//! ports) of the pods bound to it. Every bind and every deletion of a bound
//! pod rewrites it under a compare-and-swap on its revision, so two
//! schedulers, or a scheduler racing a deletion, can never over-book a node:
//! the second transaction fails and is retried against fresh numbers.

use serde::{Deserialize, Serialize};
use wharf_api::{Node, Pod, PodPhase, Protocol, Resources};
use wharf_store::{Revision, Txn};

use crate::ControlError;
use crate::objects::{Object, Objects, encode, key_of, revision_of};

/// Key prefix of each node's allocation.
pub const ALLOCATIONS: &str = "/cluster/allocations/";

/// What the pods bound to a node reserve.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// Requests summed.
    pub requests: Resources,
    /// Host ports claimed.
    #[serde(default)]
    pub host_ports: Vec<(Protocol, u16)>,
}

/// Key of `node`'s allocation.
pub fn allocation_key(node: &str) -> String {
    format!("{ALLOCATIONS}{node}")
}

fn project_of(pod: &Pod) -> &str {
    pod.metadata.project.as_deref().unwrap_or_default()
}

/// Why a bind did not happen.
#[derive(Debug, PartialEq, Eq)]
pub enum BindOutcome {
    /// All pods are bound.
    Bound,
    /// A pod or the node's allocation changed meanwhile; re-read and retry.
    Conflict,
    /// The node no longer has room (another scheduler filled it), or is gone.
    NoRoom(String),
}

impl Objects {
    /// The node's current allocation and its revision (0: none yet).
    pub async fn allocation(&self, node: &str) -> Result<(Allocation, Revision), ControlError> {
        let key = allocation_key(node);
        match self.store().get(&key).await? {
            Some(kv) => {
                let allocation = serde_json::from_slice(&kv.value).map_err(|e| {
                    ControlError::Internal(format!("corrupt allocation at {key}: {e}"))
                })?;
                Ok((allocation, kv.mod_revision))
            }
            None => Ok((Allocation::default(), 0)),
        }
    }

    /// Binds `pods` (as read, unbound) to `node` in one transaction.
    pub async fn bind(&self, node: &str, pods: &[Pod]) -> Result<BindOutcome, ControlError> {
        let Some(node_object) = self.get::<Node>(None, node).await? else {
            return Ok(BindOutcome::NoRoom(format!("node {node} is gone")));
        };
        let (mut allocation, allocation_revision) = self.allocation(node).await?;
        let mut txn = Txn::new().when_revision(allocation_key(node), allocation_revision);
        for pod in pods {
            let requests = pod.spec.requests()?;
            allocation.requests.cpu_millis += requests.cpu_millis;
            allocation.requests.memory_bytes += requests.memory_bytes;
            allocation.requests.pods += requests.pods;
            for port in pod.spec.host_ports() {
                if allocation.host_ports.contains(&port) {
                    return Ok(BindOutcome::NoRoom(format!(
                        "host port {} is taken on {node}",
                        port.1
                    )));
                }
                allocation.host_ports.push(port);
            }
            let mut bound = pod.clone();
            bound.spec.node_name = Some(node.to_string());
            bound.status.reason = None;
            bound.status.message = None;
            bound.status.phase = PodPhase::Pending;
            let key = key_of::<Pod>(Some(project_of(pod)), &pod.metadata.name);
            let revision = revision_of(pod)?.unwrap_or(0);
            txn = txn.when_revision(&key, revision).put(key, encode(&bound));
        }
        let capacity = node_object.status.capacity;
        let fits = allocation.requests.cpu_millis <= capacity.cpu_millis
            && allocation.requests.memory_bytes <= capacity.memory_bytes
            && allocation.requests.pods <= capacity.pods;
        if !fits {
            return Ok(BindOutcome::NoRoom(format!("node {node} is full")));
        }
        txn = txn.put(
            allocation_key(node),
            serde_json::to_vec(&allocation).expect("allocation serializes"),
        );
        Ok(match self.store().txn(txn).await?.succeeded {
            true => BindOutcome::Bound,
            false => BindOutcome::Conflict,
        })
    }

    /// Removes a pod object at once, whatever runs of it; a bound pod's
    /// requests return to its node. Graceful deletion
    /// ([`request_pod_deletion`](Objects::request_pod_deletion)) ends here
    /// once the node confirms; `--force` comes here directly.
    pub async fn delete_pod(&self, project: &str, name: &str) -> Result<Pod, ControlError> {
        self.delete_pod_if(project, name, |_| true)
            .await?
            .ok_or_else(|| ControlError::Conflict(format!("pod {project}/{name} was replaced")))
    }

    /// [`delete_pod`](Objects::delete_pod) if the pod, as read, passes
    /// `check`; `None` (nothing deleted) if it does not.
    pub(crate) async fn delete_pod_if(
        &self,
        project: &str,
        name: &str,
        check: impl Fn(&Pod) -> bool,
    ) -> Result<Option<Pod>, ControlError> {
        for _ in 0..32 {
            let pod: Pod = self.require(Some(project), name).await?;
            if !check(&pod) {
                return Ok(None);
            }
            let txn = self.pod_deletion_txn(&pod).await?;
            if self.store().txn(txn).await?.succeeded {
                return Ok(Some(pod));
            }
        }
        Err(ControlError::Conflict(format!(
            "{} {project}/{name} keeps changing",
            Pod::KIND
        )))
    }

    /// The transaction that removes `pod` as read (guarded on its
    /// revision) and gives its requests back to its node.
    pub(crate) async fn pod_deletion_txn(&self, pod: &Pod) -> Result<Txn, ControlError> {
        let key = key_of::<Pod>(pod.metadata.project.as_deref(), &pod.metadata.name);
        let revision = revision_of(pod)?.unwrap_or(0);
        let mut txn = Txn::new().when_revision(&key, revision).delete(&key);
        if let Some(node) = &pod.spec.node_name {
            let (mut allocation, allocation_revision) = self.allocation(node).await?;
            let requests = pod.spec.requests()?;
            allocation.requests.cpu_millis = allocation
                .requests
                .cpu_millis
                .saturating_sub(requests.cpu_millis);
            allocation.requests.memory_bytes = allocation
                .requests
                .memory_bytes
                .saturating_sub(requests.memory_bytes);
            allocation.requests.pods = allocation.requests.pods.saturating_sub(requests.pods);
            for port in pod.spec.host_ports() {
                if let Some(at) = allocation.host_ports.iter().position(|p| *p == port) {
                    allocation.host_ports.swap_remove(at);
                }
            }
            txn = txn
                .when_revision(allocation_key(node), allocation_revision)
                .put(
                    allocation_key(node),
                    serde_json::to_vec(&allocation).expect("allocation serializes"),
                );
        }
        Ok(txn)
    }
}

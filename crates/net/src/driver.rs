use async_trait::async_trait;

use crate::{NetError, PodNetwork, PodNetworkSpec};

/// Plumbs pod networks on this node. The agent drives it through this trait
/// so its logic can be tested with [`crate::testing::MemoryDriver`] instead of
/// root privileges and real namespaces.
///
/// Every method is idempotent: `setup` after a crash half-way completes the
/// pod's network, `teardown` of something already gone succeeds.
#[async_trait]
pub trait NetworkDriver: Send + Sync {
    /// Creates (or completes) the pod's namespace and interfaces. The spec is
    /// validated first; on failure, whatever this call created is removed
    /// again before the error is returned.
    async fn setup(&self, spec: &PodNetworkSpec) -> Result<PodNetwork, NetError>;

    /// Removes the pod's interfaces and namespace; parts already gone are
    /// skipped. Shared state (the bridge and its gateway addresses) stays.
    async fn teardown(&self, pod_id: &str) -> Result<(), NetError>;

    /// Ids of the pods that have a namespace on this node, sorted: what the
    /// agent compares with the pods bound to it to find leftovers.
    async fn list(&self) -> Result<Vec<String>, NetError>;
}

//! Errors from changing a [`Snapshot`](crate::Snapshot).

use std::fmt;

use crate::NodeId;

/// Why a snapshot update was refused; the snapshot is unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotError {
    /// The id names no node: never issued, or the node was removed since.
    UnknownNode(NodeId),
    /// Recording the pod would overflow the node's resource counters.
    Overflow {
        /// Node name.
        node: String,
    },
    /// `forget` of a pod that was not assumed on this node.
    NotAssumed {
        /// Node name.
        node: String,
    },
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::UnknownNode(id) => write!(f, "no node with id {}", id.index()),
            SnapshotError::Overflow { node } => {
                write!(f, "resource counters of node {node} would overflow")
            }
            SnapshotError::NotAssumed { node } => {
                write!(f, "no such pod was assumed on node {node}")
            }
        }
    }
}

impl std::error::Error for SnapshotError {}

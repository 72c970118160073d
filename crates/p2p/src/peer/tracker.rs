//! What a peer needs from the tracker and from the registry, as traits:
//! production speaks HTTP to the server (the agent's client), tests use
//! fakes.

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;

use crate::P2pError;
use crate::wire::{PeerReport, ServerKey, TaskAssignment, TaskRequest};

/// The tracker's three calls (see [`crate::wire`]).
#[async_trait]
pub trait TrackerClient: Send + Sync {
    /// The server's grant-signing key.
    async fn key(&self) -> Result<ServerKey, P2pError>;
    /// Starts a task: the manifest, the grant and parents (or
    /// `back_to_source`).
    async fn assign(&self, request: &TaskRequest) -> Result<TaskAssignment, P2pError>;
    /// Reports progress; the answer carries a fresh grant and parents.
    async fn report(&self, report: &PeerReport) -> Result<TaskAssignment, P2pError>;
}

/// A stream of a blob's bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, P2pError>>;

/// Ranged reads of one blob from the registry, the source of truth.
#[async_trait]
pub trait Source: Send + Sync {
    /// The bytes `range` of the blob, in order.
    async fn range(&self, range: Range<u64>) -> Result<ByteStream, P2pError>;
}

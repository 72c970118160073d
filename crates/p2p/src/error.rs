//! The crate's one error type.

use thiserror::Error;

/// What can go wrong in P2P distribution.
#[derive(Debug, Error)]
pub enum P2pError {
    /// A grant did not verify: bad signature, wrong audience, expired, or
    /// for another node or blob.
    #[error("peer grant refused: {0}")]
    Grant(String),
    /// A piece index outside the blob.
    #[error("piece {index} out of range: the blob has {count} pieces")]
    PieceOutOfRange {
        /// The index asked for.
        index: u32,
        /// How many pieces the blob has.
        count: u32,
    },
    /// A piece manifest that does not describe its blob.
    #[error("invalid piece manifest for {digest}: {reason}")]
    InvalidManifest {
        /// The blob.
        digest: String,
        /// What is wrong.
        reason: String,
    },
    /// A task request or report that does not fit the blob; the message
    /// names the field.
    #[error("invalid peer report: {0}")]
    InvalidReport(String),
    /// Reading a blob to compute its pieces failed.
    #[error("reading {what}: {source}")]
    Io {
        /// What was being read.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The tracker refused the call, or there is none (an older server, a
    /// follower): asking again will not help.
    #[error("tracker: {0}")]
    Tracker(String),
    /// The tracker did not answer in time or could not be reached: a
    /// congested link or a server restarting, worth asking again.
    #[error("tracker unreachable: {0}")]
    TrackerUnreachable(String),
    /// The registry (the source) failed to deliver the blob or a range of it.
    #[error("source: {0}")]
    Source(String),
    /// The blob as delivered is not the blob asked for.
    #[error("blob {digest} failed verification: {reason}")]
    Verification {
        /// The blob.
        digest: String,
        /// What did not match.
        reason: String,
    },
    /// A local file of the piece store could not be written or read.
    #[error("{action} {path}: {source}")]
    Store {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A blocking task failed (panicked or was cancelled).
    #[error("internal: {0}")]
    Internal(String),
}

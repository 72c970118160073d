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
}

use std::io;
use std::path::Path;

use wharf_oci::Digest;

/// Failures of blob storage and uploads.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No blob with this digest is stored.
    #[error("blob {0} not found")]
    NotFound(Digest),
    /// No upload session with this id.
    #[error("upload {0} not found")]
    UploadNotFound(String),
    /// Another request is writing to this upload session right now.
    #[error("upload {0} is busy with another request")]
    UploadBusy(String),
    /// A chunk did not start where the session ends.
    #[error("chunk starts at {requested} but the upload has {current} bytes")]
    OutOfOrder {
        /// The session's current size.
        current: u64,
        /// Where the chunk claimed to start.
        requested: u64,
    },
    /// The content would exceed the size limit.
    #[error("content exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The content does not hash to the digest it was sent as.
    #[error("digest mismatch: expected {expected}, content is {actual}")]
    DigestMismatch {
        /// The digest the client named.
        expected: Digest,
        /// The digest of what was received.
        actual: Digest,
    },
    /// The request body failed while streaming.
    #[error("request body: {0}")]
    Body(String),
    /// A filesystem operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// The OS error.
        source: io::Error,
    },
}

impl BlobError {
    pub(crate) fn io(path: &Path, source: io::Error) -> BlobError {
        BlobError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn join(err: tokio::task::JoinError) -> BlobError {
        BlobError::Io {
            path: "<blocking task>".into(),
            source: io::Error::other(err),
        }
    }
}

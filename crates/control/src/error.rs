/// Failures of control-plane operations.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The object does not exist.
    #[error("{kind} {name} not found")]
    NotFound {
        /// Kind.
        kind: &'static str,
        /// Name (with project, when it has one).
        name: String,
    },
    /// The object exists already, or changed since it was read.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller's project may not do this (a pool it has no grant on).
    #[error("{0}")]
    Forbidden(String),
    /// The object is not valid.
    #[error("invalid object: {0}")]
    Invalid(#[from] wharf_api::ObjectError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] wharf_store::StoreError),
    /// A stored record could not be read.
    #[error("internal error: {0}")]
    Internal(String),
}

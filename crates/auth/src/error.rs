/// Failures of identity and access operations.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong or missing credentials, or an unusable token.
    #[error("authentication required: {0}")]
    Unauthenticated(String),
    /// Authenticated, but not allowed.
    #[error("access denied: {0}")]
    Denied(String),
    /// Too many failed attempts; retry later.
    #[error("too many failed login attempts; retry in {retry_after_secs} s")]
    RateLimited {
        /// Seconds until the next attempt may succeed.
        retry_after_secs: u64,
    },
    /// The named object does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The object exists already.
    #[error("{0} already exists")]
    Conflict(String),
    /// A name, password or parameter is malformed.
    #[error("{0}")]
    Invalid(String),
    /// Storage or key material failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<wharf_store::StoreError> for AuthError {
    fn from(err: wharf_store::StoreError) -> Self {
        AuthError::Internal(err.to_string())
    }
}

/// Failures of replication.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// A definition is malformed; the message names the field.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The named object does not exist.
    #[error("{kind} {name} not found")]
    NotFound {
        /// Endpoint, policy or job.
        kind: &'static str,
        /// Its name or id.
        name: String,
    },
    /// The object exists already, or changed meanwhile.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The other registry failed or refused; worth retrying unless
    /// `permanent`.
    #[error("{endpoint}: {message}")]
    Remote {
        /// Which registry.
        endpoint: String,
        /// What went wrong.
        message: String,
        /// Retrying cannot help (bad credentials, refused manifest).
        permanent: bool,
    },
    /// The local registry failed.
    #[error("local registry: {0}")]
    Registry(#[from] wharf_registry::RegistryError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] wharf_store::StoreError),
    /// The job was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// A bug or corrupt record.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ReplicationError {
    /// Whether the other registry did not answer usefully (unreachable,
    /// timed out, server errors): worth asking again when it is back.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ReplicationError::Remote {
                permanent: false,
                ..
            }
        )
    }

    /// Whether a later try may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ReplicationError::Remote { permanent, .. } => !permanent,
            ReplicationError::Registry(e) => !matches!(
                e,
                wharf_registry::RegistryError::ManifestInvalid(_)
                    | wharf_registry::RegistryError::DigestInvalid(_)
                    | wharf_registry::RegistryError::Denied(_)
            ),
            ReplicationError::Store(_) => true,
            _ => false,
        }
    }
}

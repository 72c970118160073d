use wharf_blob::BlobError;
use wharf_oci::Digest;
use wharf_store::StoreError;

/// What can go wrong serving the registry; each maps to one OCI error code
/// in [`crate::http`].
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The blob is not in the repository.
    #[error("blob unknown to registry: {0}")]
    BlobUnknown(Digest),
    /// No such upload session in this repository.
    #[error("blob upload unknown to registry: {0}")]
    BlobUploadUnknown(String),
    /// The upload request cannot be applied.
    #[error("blob upload invalid: {0}")]
    BlobUploadInvalid(String),
    /// A chunk did not start where the upload ends.
    #[error("chunk starts at {requested}, upload has {current} bytes")]
    RangeMismatch {
        /// Bytes the session holds.
        current: u64,
        /// Offset the chunk claimed.
        requested: u64,
    },
    /// A requested byte range lies outside the blob.
    #[error("range not satisfiable for blob of {size} bytes")]
    RangeNotSatisfiable {
        /// Blob size.
        size: u64,
    },
    /// The digest is malformed, unsupported, or does not match the content.
    #[error("provided digest did not match uploaded content: {0}")]
    DigestInvalid(String),
    /// A manifest references a blob or manifest the repository lacks.
    #[error("blob unknown to registry: {0}")]
    ManifestBlobUnknown(Digest),
    /// The manifest is malformed or unsupported.
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    /// No manifest under that tag or digest.
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    /// A `Wharf-Origin` header or an instance id is malformed.
    #[error("invalid origin {0}")]
    OriginInvalid(String),
    /// The repository name breaks the grammar.
    #[error("invalid repository name: {0}")]
    NameInvalid(String),
    /// The repository does not exist.
    #[error("repository name not known to registry: {0}")]
    NameUnknown(String),
    /// A size is wrong (content length, descriptor size).
    #[error("provided length did not match content length: {0}")]
    SizeInvalid(String),
    /// The body exceeds a configured limit.
    #[error("content exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The `n` or `last` pagination parameter is malformed.
    #[error("invalid pagination: {0}")]
    PaginationInvalid(String),
    /// Storing the content would take the project over its quota.
    #[error(
        "quota exceeded for project {project}: {usage} of {quota} bytes used, {needed} more needed"
    )]
    QuotaExceeded {
        /// The project.
        project: String,
        /// Its quota in bytes.
        quota: u64,
        /// Bytes it stores now.
        usage: u64,
        /// Bytes the refused write needed.
        needed: u64,
    },
    /// The caller did not authenticate (or the token is unusable).
    #[error("authentication required: {message}")]
    Unauthorized {
        /// What was wrong.
        message: String,
        /// The `WWW-Authenticate` challenge to send.
        challenge: String,
    },
    /// The caller may not do this.
    #[error("requested access to the resource is denied: {0}")]
    Denied(String),
    /// The caller may do this, but the token does not say so: the client
    /// should fetch a token for the scope in `challenge` and retry.
    #[error("token does not grant this: {message}")]
    InsufficientScope {
        /// What was missing.
        message: String,
        /// The `WWW-Authenticate` challenge naming the scope to ask for.
        challenge: String,
    },
    /// A proxy cache's upstream registry did not deliver what a pull needs
    /// (unreachable, refused, or content that does not match its digest);
    /// the message names the upstream.
    #[error("upstream registry: {0}")]
    Upstream(String),
    /// Concurrent writers kept conflicting; the client may retry.
    #[error("too much contention on {0}, retry")]
    Contention(String),
    /// Storage failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for RegistryError {
    fn from(err: StoreError) -> Self {
        RegistryError::Internal(err.to_string())
    }
}

impl From<BlobError> for RegistryError {
    fn from(err: BlobError) -> Self {
        match err {
            BlobError::NotFound(digest) => RegistryError::BlobUnknown(digest),
            BlobError::UploadNotFound(id) => RegistryError::BlobUploadUnknown(id),
            BlobError::UploadBusy(id) => RegistryError::BlobUploadInvalid(format!(
                "upload {id} is busy with another request"
            )),
            BlobError::OutOfOrder { current, requested } => {
                RegistryError::RangeMismatch { current, requested }
            }
            BlobError::TooLarge { limit } => RegistryError::TooLarge { limit },
            BlobError::DigestMismatch { expected, actual } => {
                RegistryError::DigestInvalid(format!("expected {expected}, content is {actual}"))
            }
            BlobError::Body(msg) => RegistryError::BlobUploadInvalid(msg),
            BlobError::Io { .. } => RegistryError::Internal(err.to_string()),
        }
    }
}

impl From<wharf_oci::Error> for RegistryError {
    fn from(err: wharf_oci::Error) -> Self {
        use wharf_oci::Error as E;
        match err {
            E::InvalidName(_) => RegistryError::NameInvalid(err.to_string()),
            E::InvalidTag(_) => RegistryError::ManifestInvalid(err.to_string()),
            E::InvalidDigest(_) | E::UnsupportedAlgorithm(_) => {
                RegistryError::DigestInvalid(err.to_string())
            }
            E::InvalidManifest(_) | E::UnsupportedManifest(_) => {
                RegistryError::ManifestInvalid(err.to_string())
            }
        }
    }
}

/// Everything that can be wrong with a name, digest or manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The repository name breaks the distribution-spec grammar.
    #[error("invalid repository name {0:?}")]
    InvalidName(String),
    /// The tag breaks the distribution-spec grammar.
    #[error("invalid tag {0:?}")]
    InvalidTag(String),
    /// The digest is malformed.
    #[error("invalid digest {0:?}")]
    InvalidDigest(String),
    /// The digest uses an algorithm this registry does not implement.
    #[error("unsupported digest algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The manifest is not well formed.
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    /// The manifest is of a kind this registry does not store.
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedManifest(String),
}

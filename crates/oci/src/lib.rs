//! OCI distribution and image-spec types: digests, repository names, tags and
//! manifests. Parsing and validation only; this crate does no IO.
//!
//! ```
//! use wharf_oci::{Digest, DigestAlgorithm, RepositoryName};
//! let name: RepositoryName = "library/busybox".parse().unwrap();
//! let digest = Digest::of(DigestAlgorithm::Sha256, b"hello");
//! assert!(digest.to_string().starts_with("sha256:"));
//! assert!("../etc".parse::<RepositoryName>().is_err());
//! # let _ = name;
//! ```

mod digest;
mod error;
pub mod manifest;
mod name;
pub mod wire;

pub use digest::{Digest, DigestAlgorithm, StreamHasher};
pub use error::Error;
pub use manifest::{Descriptor, ManifestKind, ParsedManifest};
pub use name::{Reference, RepositoryName, Tag};

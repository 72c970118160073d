//! What the copier needs from a registry, whichever side of a copy it is
//! on: this Wharf in-process ([`crate::LocalRegistry`]) or another registry
//! over the OCI Distribution API ([`crate::RemoteRegistry`]).

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use wharf_oci::{Digest, RepositoryName, Tag};
use wharf_registry::{Origin, Tombstone};

use crate::ReplicationError;

/// Blob content in transit.
pub type ByteStream = BoxStream<'static, Result<Bytes, ReplicationError>>;

/// A manifest's bytes exactly as stored, with its type and digest.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// Its digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its bytes.
    pub bytes: Bytes,
}

/// What a tag points at, and where that write came from (Wharf only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagState {
    /// The manifest digest.
    pub digest: Digest,
    /// The registry instance that first accepted it, and when.
    pub origin: Option<Origin>,
}

/// What happened to the tag of a manifest push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagWrite {
    /// The tag now points at the manifest.
    Moved,
    /// The destination kept its own, newer artifact (dual-master conflict
    /// rule); the sentence says which.
    Kept(String),
}

/// What happened to a replicated tag deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagDelete {
    /// Deleted.
    Deleted,
    /// There was nothing to delete.
    Absent,
    /// The destination's tag is newer than the deletion and stays.
    Kept(String),
}

/// One registry as the copier sees it.
#[async_trait]
pub trait RegistryAccess: Send + Sync {
    /// For messages: the endpoint name, or `local`.
    fn name(&self) -> &str;

    /// The Wharf instance id of this registry, if it is a Wharf.
    async fn instance(&self) -> Result<Option<String>, ReplicationError>;

    /// Every repository (the catalog).
    async fn repositories(&self) -> Result<Vec<RepositoryName>, ReplicationError>;

    /// The names of `repo`'s tags; empty if `repo` is unknown.
    async fn tag_names(&self, repo: &RepositoryName) -> Result<Vec<Tag>, ReplicationError>;

    /// Every tag of `repo` with what it points at; empty if `repo` is unknown.
    async fn tags(&self, repo: &RepositoryName) -> Result<Vec<(Tag, TagState)>, ReplicationError>;

    /// Deleted tags of every repository with the origins of their deletes
    /// (Wharf's tombstones); empty for registries that keep none.
    async fn tombstones(&self) -> Result<Vec<Tombstone>, ReplicationError>;

    /// What one tag points at, if it exists.
    async fn tag(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<TagState>, ReplicationError>;

    /// A manifest by tag or digest, if it exists.
    async fn manifest(
        &self,
        repo: &RepositoryName,
        reference: &str,
    ) -> Result<Option<Manifest>, ReplicationError>;

    /// Whether `repo` holds the manifest `digest`.
    async fn has_manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool, ReplicationError>;

    /// The size of a blob in `repo`, if it holds it.
    async fn blob_size(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<u64>, ReplicationError>;

    /// Streams a blob from byte `offset` on.
    async fn read_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        offset: u64,
    ) -> Result<ByteStream, ReplicationError>;

    /// Makes a blob that `from` holds usable in `repo`; `false` if it could not.
    async fn mount_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        from: &RepositoryName,
    ) -> Result<bool, ReplicationError>;

    /// Opens an upload session; returns its handle.
    async fn start_upload(&self, repo: &RepositoryName) -> Result<String, ReplicationError>;

    /// Bytes a session holds, or `None` if the session is gone.
    async fn upload_offset(
        &self,
        repo: &RepositoryName,
        session: &str,
    ) -> Result<Option<u64>, ReplicationError>;

    /// Appends `len` bytes at `offset`; returns the session's new handle.
    async fn append_upload(
        &self,
        repo: &RepositoryName,
        session: &str,
        offset: u64,
        len: u64,
        body: ByteStream,
    ) -> Result<String, ReplicationError>;

    /// Closes a session whose bytes are all appended; the registry checks
    /// them against `digest`.
    async fn finish_upload(
        &self,
        repo: &RepositoryName,
        session: &str,
        digest: &Digest,
    ) -> Result<(), ReplicationError>;

    /// Stores a manifest under a tag or its digest, carrying `origin` to
    /// Wharf peers.
    async fn put_manifest(
        &self,
        repo: &RepositoryName,
        reference: &str,
        manifest: &Manifest,
        origin: Option<&Origin>,
    ) -> Result<TagWrite, ReplicationError>;

    /// Creates `project` (private) if this registry has projects and lacks
    /// it, as Harbor does for replication destinations. Registries without
    /// projects, and accounts that may not create them, do nothing here:
    /// the push then says what is missing.
    async fn ensure_project(&self, project: &str) -> Result<(), ReplicationError>;

    /// Deletes a tag, or a manifest with its tags, carrying `origin` to
    /// Wharf peers (which keep a tag newer than the deletion).
    async fn delete(
        &self,
        repo: &RepositoryName,
        reference: &str,
        origin: Option<&Origin>,
    ) -> Result<TagDelete, ReplicationError>;
}

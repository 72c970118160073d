//! Who may call the registry: the hooks through which the server plugs in
//! authentication, authorization and auditing. The registry decides what
//! each request needs; the [`Authorizer`] decides whether the caller has it.

use std::any::Any;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use http::HeaderMap;
use wharf_oci::{Digest, Reference, RepositoryName};

use crate::{Origin, RegistryError};

/// What a request needs from its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// Only to be authenticated (`/v2/` ping, which clients use to log in).
    Login,
    /// To list repositories.
    Catalog,
    /// To read a repository.
    Pull(RepositoryName),
    /// To write a repository.
    Push(RepositoryName),
    /// To delete from a repository.
    Delete(RepositoryName),
}

/// An admitted caller.
#[derive(Clone)]
pub struct Caller {
    /// The name audit records show.
    pub name: String,
    /// The client's address, when known.
    pub source: Option<IpAddr>,
    /// Whatever the authorizer needs to answer [`Authorizer::may_pull`] later.
    pub context: Arc<dyn Any + Send + Sync>,
}

/// Decides who may do what.
#[async_trait]
pub trait Authorizer: Send + Sync + 'static {
    /// Admits the request if its credentials grant `need`; otherwise
    /// `RegistryError::Unauthorized` (with the challenge to send) or
    /// `RegistryError::Denied`.
    async fn admit(
        &self,
        headers: &HeaderMap,
        source: Option<IpAddr>,
        need: &Need,
    ) -> Result<Caller, RegistryError>;

    /// Whether an admitted caller may read `repo` (catalog filtering, mounts).
    async fn may_pull(&self, caller: &Caller, repo: &RepositoryName) -> bool;
}

/// Admits everyone: for embedding and for protocol tests only.
pub struct OpenAccess;

#[async_trait]
impl Authorizer for OpenAccess {
    async fn admit(
        &self,
        _: &HeaderMap,
        source: Option<IpAddr>,
        _: &Need,
    ) -> Result<Caller, RegistryError> {
        Ok(Caller {
            name: "anonymous".into(),
            source,
            context: Arc::new(()),
        })
    }

    async fn may_pull(&self, _: &Caller, _: &RepositoryName) -> bool {
        true
    }
}

/// What happened, for the audit log and replication triggers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A manifest was pushed.
    Push,
    /// A manifest was pulled (GET, not HEAD).
    Pull,
    /// A manifest, tag or blob was deleted.
    Delete,
}

/// One registry operation that succeeded.
#[derive(Clone, Debug)]
pub struct RegistryEvent {
    /// What happened.
    pub kind: EventKind,
    /// Where.
    pub repository: RepositoryName,
    /// The tag or digest the client named.
    pub reference: String,
    /// The manifest or blob digest, when known.
    pub digest: Option<Digest>,
    /// Who.
    pub actor: String,
    /// From where.
    pub source: Option<IpAddr>,
    /// Manifest pushes and deletes: the origin of the write, from its
    /// `Wharf-Origin` header or this instance for a local write. `None` for
    /// pulls and blob deletes.
    pub origin: Option<Origin>,
    /// A replicated write that lost a conflict (the tag was kept), or one
    /// that won it (the tag moved): a sentence naming the tag, both digests
    /// and both origins.
    pub conflict: Option<String>,
    /// Whether the tag the client named now points at the pushed manifest
    /// (stored, replaced or unchanged) or was deleted. False for a write
    /// that lost a conflict, and for operations by digest, pulls and blob
    /// deletes.
    pub tag_moved: bool,
}

/// A write refused after its caller was admitted: over the project's quota
/// or a size limit, or a cross-repository mount from a repository the
/// caller may not read.
#[derive(Clone, Debug)]
pub struct Refusal {
    /// What was attempted: `artifact.push` (a manifest), `blob.upload` or
    /// `blob.mount`.
    pub action: &'static str,
    /// What it was attempted on: `repo:tag`, `repo@digest`, or the repository.
    pub resource: String,
    /// Who.
    pub actor: String,
    /// From where.
    pub source: Option<IpAddr>,
    /// Why, in words.
    pub reason: String,
}

/// Receives registry events. Must not block: called on the request path.
pub trait EventSink: Send + Sync + 'static {
    /// Takes one event.
    fn record(&self, event: RegistryEvent);

    /// Takes one refusal. Sinks that follow changes only (replication)
    /// keep the default, which ignores it.
    fn refused(&self, _refusal: Refusal) {}
}

/// Drops every event.
pub struct NoEvents;

impl EventSink for NoEvents {
    fn record(&self, _: RegistryEvent) {}
}

/// Pull-through caching: repositories whose content comes from another
/// registry (a proxy cache project). The routes consult it after the
/// caller is admitted and before they touch local content, so the service
/// below only ever serves what is stored; how the content is fetched (and
/// from where, with which credentials) is the implementation's, which
/// keeps network clients out of this crate.
#[async_trait]
pub trait PullThrough: Send + Sync + 'static {
    /// Before a manifest GET or HEAD: makes `reference` in `repo` current
    /// (fetches what is missing, revalidates a tag whose TTL has passed).
    /// `Ok` also when there is nothing to do or cached content is served
    /// stale; an error is the answer the client gets.
    async fn manifest(
        &self,
        caller: &Caller,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<(), RegistryError>;

    /// Before a blob GET or HEAD: fetches `digest` into `repo` if it is
    /// missing there.
    async fn blob(
        &self,
        caller: &Caller,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<(), RegistryError>;

    /// Before a client's push or delete in `repo`: `Denied` if the
    /// repository is a cache only its own fetches may write.
    async fn check_write(&self, repo: &RepositoryName) -> Result<(), RegistryError>;
}

/// No repository is a cache.
pub struct NoPullThrough;

#[async_trait]
impl PullThrough for NoPullThrough {
    async fn manifest(
        &self,
        _: &Caller,
        _: &RepositoryName,
        _: &Reference,
    ) -> Result<(), RegistryError> {
        Ok(())
    }

    async fn blob(&self, _: &Caller, _: &RepositoryName, _: &Digest) -> Result<(), RegistryError> {
        Ok(())
    }

    async fn check_write(&self, _: &RepositoryName) -> Result<(), RegistryError> {
        Ok(())
    }
}

/// The hooks a registry router runs with.
#[derive(Clone)]
pub struct Gate {
    /// Authentication and authorization.
    pub authorizer: Arc<dyn Authorizer>,
    /// Event consumer.
    pub events: Arc<dyn EventSink>,
    /// Proxy cache repositories ([`NoPullThrough`] when there are none).
    pub pull_through: Arc<dyn PullThrough>,
}

impl Gate {
    /// No access control, no events, no proxy caches.
    pub fn open() -> Gate {
        Gate {
            authorizer: Arc::new(OpenAccess),
            events: Arc::new(NoEvents),
            pull_through: Arc::new(NoPullThrough),
        }
    }
}

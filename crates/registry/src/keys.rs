//! Where registry metadata lives in the `Store`, and the records kept there.
//!
//! ```text
//! /registry/repos/<repo>                          RepoRecord     (repos with manifests)
//! /registry/tags/<repo>:<tag>                     TagRecord      (digest, origin)
//! /registry/tombstones/<repo>:<tag>               TombstoneRecord (origin of the delete)
//! /registry/manifests/<repo>@<digest>             ManifestRecord
//! /registry/links/<digest>/<repo>                 LinkRecord     (blob usable in repo)
//! /registry/blobs/<digest>                        BlobRecord     (GC marks)
//! /registry/referrers/<repo>@<subject>/<digest>   Descriptor
//! /registry/usage/<project>                       UsageRecord    (bytes stored)
//! /registry/stored/<project>/<digest>             StoredRecord   (refs in project)
//! ```
//!
//! `:` and `@` cannot occur in repository names, so a prefix such as
//! `/registry/tags/a:` never matches the tags of `a/b`.
//!
//! A tag and its tombstone are never both present: every transaction that
//! writes one removes the other, guarded by both revisions.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use wharf_oci::{Digest, RepositoryName, Tag};

use crate::{Origin, RegistryError};

pub(crate) const REPOS: &str = "/registry/repos/";
pub(crate) const TAGS: &str = "/registry/tags/";
pub(crate) const MANIFESTS: &str = "/registry/manifests/";
pub(crate) const LINKS: &str = "/registry/links/";
pub(crate) const BLOBS: &str = "/registry/blobs/";
pub(crate) const TOMBSTONES: &str = "/registry/tombstones/";

pub(crate) fn repo(repo: &RepositoryName) -> String {
    format!("{REPOS}{repo}")
}

pub(crate) fn tag(repo: &RepositoryName, tag: &Tag) -> String {
    format!("{TAGS}{repo}:{tag}")
}

pub(crate) fn tags_of(repo: &RepositoryName) -> String {
    format!("{TAGS}{repo}:")
}

pub(crate) fn tombstone(repo: &RepositoryName, tag: &Tag) -> String {
    format!("{TOMBSTONES}{repo}:{tag}")
}

pub(crate) fn tombstones_of(repo: &RepositoryName) -> String {
    format!("{TOMBSTONES}{repo}:")
}

pub(crate) fn manifest(repo: &RepositoryName, digest: &Digest) -> String {
    format!("{MANIFESTS}{repo}@{digest}")
}

pub(crate) fn manifests_of(repo: &RepositoryName) -> String {
    format!("{MANIFESTS}{repo}@")
}

pub(crate) fn link(digest: &Digest, repo: &RepositoryName) -> String {
    format!("{LINKS}{digest}/{repo}")
}

pub(crate) fn links_of(digest: &Digest) -> String {
    format!("{LINKS}{digest}/")
}

pub(crate) fn blob(digest: &Digest) -> String {
    format!("{BLOBS}{digest}")
}

pub(crate) fn usage(project: &str) -> String {
    format!("/registry/usage/{project}")
}

pub(crate) fn stored(project: &str, digest: &Digest) -> String {
    format!("/registry/stored/{project}/{digest}")
}

pub(crate) fn referrer(repo: &RepositoryName, subject: &Digest, digest: &Digest) -> String {
    format!("/registry/referrers/{repo}@{subject}/{digest}")
}

pub(crate) fn referrers_of(repo: &RepositoryName, subject: &Digest) -> String {
    format!("/registry/referrers/{repo}@{subject}/")
}

/// Splits `/registry/manifests/<repo>@<digest>`.
pub(crate) fn parse_manifest_key(key: &str) -> Option<(RepositoryName, Digest)> {
    let (repo, digest) = key.strip_prefix(MANIFESTS)?.split_once('@')?;
    Some((repo.parse().ok()?, digest.parse().ok()?))
}

/// The repository of `/registry/tags/<repo>:<tag>`.
pub(crate) fn parse_tag_key(key: &str) -> Option<RepositoryName> {
    let (repo, _) = key.strip_prefix(TAGS)?.split_once(':')?;
    repo.parse().ok()
}

/// Splits `/registry/links/<digest>/<repo>`.
pub(crate) fn parse_link_key(key: &str) -> Option<(Digest, RepositoryName)> {
    let (digest, repo) = key.strip_prefix(LINKS)?.split_once('/')?;
    Some((digest.parse().ok()?, repo.parse().ok()?))
}

/// Splits `/registry/tombstones/<repo>:<tag>` (neither contains `:`).
pub(crate) fn parse_tombstone_key(key: &str) -> Option<(RepositoryName, Tag)> {
    let (repo, tag) = key.strip_prefix(TOMBSTONES)?.split_once(':')?;
    Some((repo.parse().ok()?, tag.parse().ok()?))
}

/// A repository that holds at least one manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RepoRecord {
    pub created_at: u64,
    pub updated_at: u64,
}

/// A tag and the manifest it points to, with the origin of the write that
/// pointed it there.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TagRecord {
    pub digest: Digest,
    pub updated_at: u64,
    /// Instance that first accepted the write; absent in records written
    /// before origins were kept, which count as local writes.
    #[serde(default)]
    pub origin: Option<String>,
    /// When that instance accepted it (unix millis); absent means `updated_at`.
    #[serde(default)]
    pub origin_at: Option<u64>,
}

impl TagRecord {
    /// A record pointing at `digest`, written now, on behalf of `origin`.
    pub fn new(digest: Digest, origin: &Origin, now: u64) -> TagRecord {
        TagRecord {
            digest,
            updated_at: now,
            origin: Some(origin.instance.clone()),
            origin_at: Some(origin.at),
        }
    }

    /// The origin of the write that set this tag; `local` (this registry's
    /// instance id) at `updated_at` for records that predate origins.
    pub fn effective_origin(&self, local: &str) -> Origin {
        Origin {
            instance: self.origin.clone().unwrap_or_else(|| local.to_string()),
            at: self.origin_at.unwrap_or(self.updated_at),
        }
    }
}

/// A deleted tag: the origin of the delete, which a later write of the tag
/// must win over (as it would over a tag), so that replication cannot bring
/// back what a newer delete removed. Pruned after the registry's
/// `tombstone_retention`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TombstoneRecord {
    /// The instance that first accepted the delete, and when.
    pub origin: Origin,
    /// The manifest the tag pointed at here; absent when the delete arrived
    /// for a tag this registry did not hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// When this registry recorded it (unix millis): retention counts from here.
    pub recorded_at: u64,
}

/// A manifest stored in a repository; its bytes are the blob `digest`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ManifestRecord {
    pub media_type: String,
    pub size: u64,
    /// Config and layers: blobs that must stay linked while the manifest exists.
    pub blobs: Vec<Digest>,
    /// Child manifests of an index.
    pub children: Vec<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Digest>,
    pub pushed_at: u64,
}

/// A blob made usable in one repository (uploaded or mounted there).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct LinkRecord {
    pub size: u64,
    /// Last upload, mount, existence check or reference by a pushed manifest;
    /// garbage collection spares links marked within its grace period.
    pub marked_at: u64,
    /// The project is not charged for it: the last manifest of the
    /// repository that used it was deleted (see `quota.rs`). Absent in
    /// records written before, which are all charged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub uncharged: bool,
}

impl LinkRecord {
    /// A charged link marked now.
    pub fn fresh(size: u64) -> LinkRecord {
        LinkRecord {
            size,
            marked_at: now_millis(),
            uncharged: false,
        }
    }
}

/// Registry-wide state of one stored blob, used to fence garbage collection
/// against concurrent writers of the same content.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct BlobRecord {
    pub size: u64,
    pub marked_at: u64,
    /// Set while garbage collection deletes the file; writers wait for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleting_since: Option<u64>,
}

/// Bytes a project stores: each distinct blob and manifest counted once,
/// however many of its repositories use it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct UsageRecord {
    pub bytes: u64,
}

/// How many links and manifest records of one project use one digest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StoredRecord {
    pub size: u64,
    pub refs: u64,
}

/// Unix time in milliseconds: the unit of every timestamp in registry records.
pub(crate) fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}

pub(crate) fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, RegistryError> {
    serde_json::from_slice(bytes)
        .map_err(|e| RegistryError::Internal(format!("corrupt record at {key}: {e}")))
}

//! Tombstones: what a registry remembers of deleted tags, so that deletes
//! converge between replicating registries the way writes do.
//!
//! A deleted tag leaves a tombstone carrying the delete's [`Origin`]. A later
//! write of the tag must win over that origin exactly as it would have to
//! win over the tag itself (a local write is stamped after it, so it always
//! wins); a replicated write that loses is stored by digest and the tag
//! stays deleted ([`crate::TagOutcome::KeptDeleted`]). Peers list tombstones
//! (`GET /v2/_tombstones`) to repair deletes that events missed, for
//! instance during a partition. Tombstones are pruned after
//! [`crate::RegistryConfig::tombstone_retention`]; a partition longer than
//! that may see a delete undone by an older copy of the tag.

use std::collections::HashMap;

use wharf_oci::{RepositoryName, Tag};
use wharf_store::{Revision, StoreExt};

use crate::keys::{self, TombstoneRecord, now_millis};
use crate::{Origin, Registry, RegistryError};

/// A deleted tag and the origin of its delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    /// The repository.
    pub repository: RepositoryName,
    /// The deleted tag.
    pub tag: Tag,
    /// The instance that first accepted the delete, and when.
    pub origin: Origin,
}

/// One page of tombstones, in key order (`<repository>:<tag>`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TombstonePage {
    /// The tombstones found.
    pub items: Vec<Tombstone>,
    /// Whether more follow the last one.
    pub more: bool,
}

impl Tombstone {
    /// Where a listing continues after this one: `<repository>:<tag>`.
    pub fn cursor(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }
}

impl Registry {
    /// The tombstone of `repo:tag` and its revision (0 and `None`: none).
    pub(crate) async fn tombstone(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
    ) -> Result<(Revision, Option<TombstoneRecord>), RegistryError> {
        let key = keys::tombstone(repo, tag);
        match self.store.get(&key).await? {
            Some(kv) => Ok((kv.mod_revision, Some(keys::decode(&key, &kv.value)?))),
            None => Ok((0, None)),
        }
    }

    /// The revision of every tombstone of `repo`, by key.
    pub(crate) async fn tombstone_revisions(
        &self,
        repo: &RepositoryName,
    ) -> Result<HashMap<String, Revision>, RegistryError> {
        let found = self
            .store
            .list_all(&keys::tombstones_of(repo), 1000)
            .await?;
        Ok(found
            .into_iter()
            .map(|kv| (kv.key, kv.mod_revision))
            .collect())
    }

    /// The origin of the delete that removed `repo:tag`, if its tombstone
    /// is kept.
    pub async fn tombstone_origin(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<Origin>, RegistryError> {
        Ok(self.tombstone(repo, tag).await?.1.map(|t| t.origin))
    }

    /// Tombstones of every repository, `n` at a time after the one whose
    /// [`Tombstone::cursor`] is `last`.
    pub async fn tombstones(
        &self,
        n: usize,
        last: Option<&str>,
    ) -> Result<TombstonePage, RegistryError> {
        let page = self.list_after(keys::TOMBSTONES, n, last).await?;
        let mut items = Vec::with_capacity(page.items.len());
        for kv in page.items {
            let (repository, tag) = keys::parse_tombstone_key(&kv.key).ok_or_else(|| {
                RegistryError::Internal(format!("corrupt tombstone key {}", kv.key))
            })?;
            let record: TombstoneRecord = keys::decode(&kv.key, &kv.value)?;
            items.push(Tombstone {
                repository,
                tag,
                origin: record.origin,
            });
        }
        Ok(TombstonePage {
            items,
            more: page.more,
        })
    }

    /// Deletes tombstones recorded longer than the configured retention
    /// ago; returns how many. Each goes by compare-and-swap on the revision
    /// read, so one renewed meanwhile (the tag deleted again) stays.
    pub async fn prune_tombstones(&self) -> Result<usize, RegistryError> {
        let retention = self.config.tombstone_retention.as_millis() as u64;
        let cutoff = now_millis().saturating_sub(retention);
        let mut pruned = 0;
        for kv in self.store.list_all(keys::TOMBSTONES, 1000).await? {
            let record: TombstoneRecord = keys::decode(&kv.key, &kv.value)?;
            if record.recorded_at <= cutoff
                && self.store.delete_if(&kv.key, kv.mod_revision).await?
            {
                pruned += 1;
            }
        }
        Ok(pruned)
    }
}

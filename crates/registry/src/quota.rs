//! Storage accounting per project, exact across shared layers, deletes and
//! garbage collection, and quota enforcement.
//!
//! Every charged link of a blob into a repository, and every manifest
//! record, is a reference to a digest within the repository's project. A
//! digest's bytes count towards the project's usage while it has at least
//! one reference. Reference counts and usage change in the same transaction
//! as the link or manifest they account for, guarded by their revisions, so
//! they never drift: a retry re-reads them.
//!
//! A link is charged when a blob is uploaded or mounted into a repository
//! and while manifests of the repository use it. Deleting the last manifest
//! that used it releases the charge at once (the link stays, uncharged, so
//! that a push in flight can still use it; an upload, a mount or a manifest
//! using it charges it again); garbage collection removes it later. Blobs a
//! push uploaded whose manifest was then refused stay charged until garbage
//! collection removes their links (after the grace period).

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use wharf_oci::{Digest, RepositoryName};
use wharf_store::{StoreExt, Txn};

use crate::blobs::{MAX_ATTEMPTS, backoff};
use crate::keys::{self, LinkRecord, ManifestRecord, StoredRecord, UsageRecord};
use crate::{Registry, RegistryError};

/// Links released per transaction.
const RELEASE_BATCH: usize = 32;

/// Where the registry learns each project's quota.
#[async_trait]
pub trait QuotaSource: Send + Sync + 'static {
    /// The project's limit in bytes, if it has one.
    async fn quota(&self, project: &str) -> Option<u64>;
}

/// No project has a quota.
pub struct Unlimited;

#[async_trait]
impl QuotaSource for Unlimited {
    async fn quota(&self, _project: &str) -> Option<u64> {
        None
    }
}

impl Registry {
    /// Bytes `project` stores now.
    pub async fn usage(&self, project: &str) -> Result<u64, RegistryError> {
        let key = keys::usage(project);
        Ok(match self.store.get(&key).await? {
            Some(kv) => keys::decode::<UsageRecord>(&key, &kv.value)?.bytes,
            None => 0,
        })
    }

    /// Refuses early when storing `digest` (`size` bytes) would take
    /// `project` over its quota. Content it already stores costs nothing.
    pub(crate) async fn check_quota(
        &self,
        project: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), RegistryError> {
        let Some(quota) = self.quotas.quota(project).await else {
            return Ok(());
        };
        if self
            .store
            .get(&keys::stored(project, digest))
            .await?
            .is_some()
        {
            return Ok(());
        }
        let usage = self.usage(project).await?;
        if usage.saturating_add(size) > quota {
            return Err(RegistryError::QuotaExceeded {
                project: project.to_string(),
                quota,
                usage,
                needed: size,
            });
        }
        Ok(())
    }

    /// Refuses, before anything is written, storing `blobs` (digest and
    /// size) in `project` when together they would take it over its quota;
    /// digests it already stores cost nothing. A proxy cache checks a whole
    /// image this way before it fetches any of it, so a pull over the quota
    /// stores nothing; each write still checks again as it commits.
    pub async fn check_room(
        &self,
        project: &str,
        blobs: &[(Digest, u64)],
    ) -> Result<(), RegistryError> {
        let Some(quota) = self.quotas.quota(project).await else {
            return Ok(());
        };
        let mut needed = 0u64;
        let mut seen = HashSet::new();
        for (digest, size) in blobs {
            if seen.insert(digest)
                && self
                    .store
                    .get(&keys::stored(project, digest))
                    .await?
                    .is_none()
            {
                needed = needed.saturating_add(*size);
            }
        }
        let usage = self.usage(project).await?;
        if needed > 0 && usage.saturating_add(needed) > quota {
            return Err(RegistryError::QuotaExceeded {
                project: project.to_string(),
                quota,
                usage,
                needed,
            });
        }
        Ok(())
    }

    /// Adds to `txn` one more (`delta` = +1) or one fewer (-1) reference to
    /// `digest` in `project`, adjusting usage when the first reference
    /// appears or the last goes. An increment that would exceed the quota
    /// fails with `QuotaExceeded`.
    pub(crate) async fn account(
        &self,
        txn: Txn,
        project: &str,
        digest: &Digest,
        size: u64,
        delta: i8,
    ) -> Result<Txn, RegistryError> {
        self.account_all(txn, project, &[(digest.clone(), size, delta)])
            .await
    }

    /// [`Registry::account`] for several references of one project in one
    /// transaction: `changes` are (digest, size, +1 or -1). Usage is
    /// written once, with the sum, and checked against the quota only when
    /// it grows.
    pub(crate) async fn account_all(
        &self,
        mut txn: Txn,
        project: &str,
        changes: &[(Digest, u64, i8)],
    ) -> Result<Txn, RegistryError> {
        // One write per key: the same digest twice is one change of its count.
        let mut per_digest: BTreeMap<&Digest, (u64, i64)> = BTreeMap::new();
        for (digest, size, delta) in changes {
            let entry = per_digest.entry(digest).or_insert((*size, 0));
            entry.1 += i64::from(*delta);
        }
        let (mut added, mut released) = (0u64, 0u64);
        for (digest, (size, delta)) in per_digest {
            let stored_key = keys::stored(project, digest);
            let stored = self.store.get(&stored_key).await?;
            let (stored_revision, refs) = match &stored {
                Some(kv) => (
                    kv.mod_revision,
                    keys::decode::<StoredRecord>(&stored_key, &kv.value)?.refs,
                ),
                None => (0, 0),
            };
            let refs_after = refs.saturating_add_signed(delta);
            txn = txn.when_revision(&stored_key, stored_revision);
            txn = match refs_after {
                0 if stored.is_some() => txn.delete(&stored_key),
                0 => txn,
                n => txn.put(&stored_key, keys::encode(&StoredRecord { size, refs: n })),
            };
            match (refs, refs_after) {
                (0, after) if after > 0 => added += size,
                (before, 0) if before > 0 => released += size,
                _ => {}
            }
        }
        if added == released {
            return Ok(txn);
        }
        let usage_key = keys::usage(project);
        let usage = self.store.get(&usage_key).await?;
        let (usage_revision, bytes) = match &usage {
            Some(kv) => (
                kv.mod_revision,
                keys::decode::<UsageRecord>(&usage_key, &kv.value)?.bytes,
            ),
            None => (0, 0),
        };
        let bytes_after = bytes.saturating_add(added).saturating_sub(released);
        if bytes_after > bytes
            && let Some(quota) = self.quotas.quota(project).await
            && bytes_after > quota
        {
            return Err(RegistryError::QuotaExceeded {
                project: project.to_string(),
                quota,
                usage: bytes,
                needed: bytes_after - bytes,
            });
        }
        Ok(txn
            .when_revision(&usage_key, usage_revision)
            .put(usage_key, keys::encode(&UsageRecord { bytes: bytes_after })))
    }

    /// Releases the charge of each link of `blobs` in `repo` that no
    /// manifest of `repo` uses any more, keeping the link (uncharged) for
    /// pushes in flight. Fenced by the links' revisions: a manifest push
    /// that uses one rewrites it, so either the push sees it uncharged and
    /// charges it again, or this release sees it in use and keeps it.
    pub(crate) async fn release_unused_links(
        &self,
        repo: &RepositoryName,
        blobs: &[Digest],
    ) -> Result<(), RegistryError> {
        let mut candidates: Vec<&Digest> = blobs.iter().collect();
        candidates.sort();
        candidates.dedup();
        // Each batch is one transaction, kept well inside etcd's 128
        // compares and 128 operations (two of each per link, one for usage).
        for batch in candidates.chunks(RELEASE_BATCH) {
            self.release_batch(repo, batch).await?;
        }
        Ok(())
    }

    async fn release_batch(
        &self,
        repo: &RepositoryName,
        batch: &[&Digest],
    ) -> Result<(), RegistryError> {
        for attempt in 0..MAX_ATTEMPTS {
            backoff(attempt).await;
            let in_use = self.blobs_in_use(repo).await?;
            let mut txn = Txn::new();
            let mut releases = Vec::new();
            for digest in batch.iter().filter(|d| !in_use.contains(**d)) {
                let key = keys::link(digest, repo);
                let Some(kv) = self.store.get(&key).await? else {
                    continue;
                };
                let link: LinkRecord = keys::decode(&key, &kv.value)?;
                if link.uncharged {
                    continue;
                }
                releases.push(((*digest).clone(), link.size, -1));
                let released = LinkRecord {
                    uncharged: true,
                    ..link
                };
                txn = txn
                    .when_revision(&key, kv.mod_revision)
                    .put(key, keys::encode(&released));
            }
            if releases.is_empty() {
                return Ok(());
            }
            let txn = self.account_all(txn, repo.project(), &releases).await?;
            if self.store.txn(txn).await?.succeeded {
                return Ok(());
            }
        }
        Err(RegistryError::Contention(format!(
            "links of {repo} being released"
        )))
    }

    /// Blobs the manifests of `repo` use.
    async fn blobs_in_use(&self, repo: &RepositoryName) -> Result<HashSet<Digest>, RegistryError> {
        let mut used = HashSet::new();
        for kv in self.store.list_all(&keys::manifests_of(repo), 1000).await? {
            used.extend(keys::decode::<ManifestRecord>(&kv.key, &kv.value)?.blobs);
        }
        Ok(used)
    }
}

//! Storage accounting per project, exact across shared layers, deletes and
//! garbage collection, and quota enforcement.
//!
//! Every link of a blob into a repository, and every manifest record, is a
//! reference to a digest within the repository's project. A digest's bytes
//! count towards the project's usage while it has at least one reference.
//! Reference counts and usage change in the same transaction as the link or
//! manifest they account for, guarded by their revisions, so they never
//! drift: a retry re-reads them.

use async_trait::async_trait;
use wharf_oci::Digest;
use wharf_store::Txn;

use crate::keys::{self, StoredRecord, UsageRecord};
use crate::{Registry, RegistryError};

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

    /// Adds to `txn` one more (`delta` = +1) or one fewer (-1) reference to
    /// `digest` in `project`, adjusting usage when the first reference
    /// appears or the last goes. An increment that would exceed the quota
    /// fails with `QuotaExceeded`.
    pub(crate) async fn account(
        &self,
        mut txn: Txn,
        project: &str,
        digest: &Digest,
        size: u64,
        delta: i8,
    ) -> Result<Txn, RegistryError> {
        let stored_key = keys::stored(project, digest);
        let stored = self.store.get(&stored_key).await?;
        let (stored_revision, refs) = match &stored {
            Some(kv) => (
                kv.mod_revision,
                keys::decode::<StoredRecord>(&stored_key, &kv.value)?.refs,
            ),
            None => (0, 0),
        };
        let refs_after = if delta > 0 {
            refs + 1
        } else {
            refs.saturating_sub(1)
        };
        txn = txn.when_revision(&stored_key, stored_revision);
        txn = match refs_after {
            0 if stored.is_some() => txn.delete(&stored_key),
            0 => return Ok(txn),
            n => txn.put(&stored_key, keys::encode(&StoredRecord { size, refs: n })),
        };
        let first_or_last = (refs == 0) != (refs_after == 0);
        if !first_or_last {
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
        let bytes_after = if refs_after > 0 {
            let after = bytes.saturating_add(size);
            if let Some(quota) = self.quotas.quota(project).await
                && after > quota
            {
                return Err(RegistryError::QuotaExceeded {
                    project: project.to_string(),
                    quota,
                    usage: bytes,
                    needed: size,
                });
            }
            after
        } else {
            bytes.saturating_sub(size)
        };
        Ok(txn
            .when_revision(&usage_key, usage_revision)
            .put(usage_key, keys::encode(&UsageRecord { bytes: bytes_after })))
    }
}

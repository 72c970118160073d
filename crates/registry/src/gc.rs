//! Online garbage collection.
//!
//! Runs beside pushes without blocking them. Two rules keep it safe:
//! - Grace: links and blobs marked (uploaded, mounted, checked, referenced)
//!   within `grace` are never collected, so a push that uploaded layers and
//!   has not yet sent its manifest keeps them.
//! - Fencing: every removal is a compare-and-swap on the revision the
//!   collector read. Writers move those revisions (a manifest push rewrites
//!   the links it relies on; a blob write re-marks the blob record first), so
//!   a decision made on stale information fails instead of deleting.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde::Serialize;
use wharf_oci::{Digest, RepositoryName};
use wharf_store::{ListOptions, StoreExt};

use crate::keys::{self, BlobRecord, LinkRecord, ManifestRecord, now_millis};
use crate::{Registry, RegistryError};

const PAGE: usize = 1000;

/// How a collection runs.
#[derive(Clone, Copy, Debug)]
pub struct GcOptions {
    /// Only collect what was last marked longer ago than this.
    pub grace: Duration,
    /// Report what would be removed without removing it.
    pub dry_run: bool,
}

/// What a collection removed (or, dry, would remove).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Blob links dropped from repositories because no manifest uses them.
    pub links_removed: u64,
    /// Blob files deleted.
    pub blobs_removed: u64,
    /// Bytes those files held.
    pub bytes_freed: u64,
    /// Abandoned upload sessions deleted.
    pub uploads_removed: u64,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Wall time of the run in milliseconds.
    pub duration_ms: u64,
}

impl Registry {
    /// Removes unreferenced links, then content no link or manifest uses,
    /// then idle upload sessions. Runs are serialized.
    pub async fn collect_garbage(&self, options: GcOptions) -> Result<GcReport, RegistryError> {
        let _running = self.gc_lock.lock().await;
        let started = Instant::now();
        let cutoff = now_millis().saturating_sub(options.grace.as_millis() as u64);
        let mut report = GcReport {
            dry_run: options.dry_run,
            ..GcReport::default()
        };
        let (referenced, manifests) = self.manifest_references().await?;
        let linked = self
            .sweep_links(&referenced, cutoff, options.dry_run, &mut report)
            .await?;
        self.sweep_blobs(&linked, &manifests, cutoff, options.dry_run, &mut report)
            .await?;
        if !options.dry_run {
            report.uploads_removed = self
                .blobs
                .remove_stale_uploads(self.config.upload_ttl)
                .await? as u64;
        }
        report.duration_ms = started.elapsed().as_millis() as u64;
        tracing::info!(?report, "garbage collection finished");
        Ok(report)
    }

    /// (repository, blob) pairs used by some manifest, and every manifest digest.
    async fn manifest_references(
        &self,
    ) -> Result<(HashSet<(RepositoryName, Digest)>, HashSet<Digest>), RegistryError> {
        let mut referenced = HashSet::new();
        let mut manifests = HashSet::new();
        for kv in self.store.list_all(keys::MANIFESTS, PAGE).await? {
            let Some((repo, digest)) = keys::parse_manifest_key(&kv.key) else {
                continue;
            };
            let record: ManifestRecord = keys::decode(&kv.key, &kv.value)?;
            referenced.extend(record.blobs.into_iter().map(|blob| (repo.clone(), blob)));
            manifests.insert(digest);
        }
        Ok((referenced, manifests))
    }

    /// Drops links no manifest uses; returns the digests that stay linked.
    async fn sweep_links(
        &self,
        referenced: &HashSet<(RepositoryName, Digest)>,
        cutoff: u64,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<HashSet<Digest>, RegistryError> {
        let mut linked = HashSet::new();
        for kv in self.store.list_all(keys::LINKS, PAGE).await? {
            let Some((digest, repo)) = keys::parse_link_key(&kv.key) else {
                continue;
            };
            let record: LinkRecord = keys::decode(&kv.key, &kv.value)?;
            let keep =
                record.marked_at > cutoff || referenced.contains(&(repo.clone(), digest.clone()));
            let removed = !keep
                && (dry_run
                    || self
                        .remove_link(&repo, &digest, record.size, kv.mod_revision)
                        .await?);
            if removed {
                report.links_removed += 1;
            } else {
                linked.insert(digest);
            }
        }
        Ok(linked)
    }

    /// Deletes blob files that nothing uses, fencing each against writers.
    async fn sweep_blobs(
        &self,
        linked: &HashSet<Digest>,
        manifests: &HashSet<Digest>,
        cutoff: u64,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<(), RegistryError> {
        let now = now_millis();
        for (digest, stat) in self.blobs.list().await? {
            let modified = stat
                .modified
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            if linked.contains(&digest) || manifests.contains(&digest) || modified > cutoff {
                continue;
            }
            let key = keys::blob(&digest);
            let current = self.store.get(&key).await?;
            let (revision, marked_at) = match &current {
                Some(kv) => (
                    kv.mod_revision,
                    keys::decode::<BlobRecord>(&key, &kv.value)?.marked_at,
                ),
                None => (0, 0),
            };
            if marked_at > cutoff {
                continue;
            }
            if dry_run {
                report.blobs_removed += 1;
                report.bytes_freed += stat.size;
                continue;
            }
            let tombstone = BlobRecord {
                size: stat.size,
                marked_at,
                deleting_since: Some(now),
            };
            let Some(fence) = self
                .store
                .put_if(&key, keys::encode(&tombstone), revision)
                .await?
            else {
                continue;
            };
            if self.is_linked(&digest).await? {
                // Linked after our listing: undo the fence and keep the content.
                self.store.delete_if(&key, fence).await?;
                continue;
            }
            self.blobs.delete(&digest).await?;
            self.store.delete_if(&key, fence).await?;
            report.blobs_removed += 1;
            report.bytes_freed += stat.size;
        }
        Ok(())
    }

    async fn is_linked(&self, digest: &Digest) -> Result<bool, RegistryError> {
        let page = self
            .store
            .list(
                &keys::links_of(digest),
                ListOptions {
                    start_after: None,
                    limit: Some(1),
                },
            )
            .await?;
        Ok(!page.items.is_empty())
    }
}

//! Online garbage collection.
//!
//! Optionally first deletes untagged manifests, as Harbor's "delete
//! untagged artifacts" does: a manifest stays while a tag points at it, while
//! a manifest that stays lists it as a child (an index keeps its platform
//! manifests), while its subject stays (signatures, SBOMs and other
//! referrers live and die with the artifact they describe), or while it was
//! pushed within the grace period (children and referrers are pushed before
//! what makes them reachable). Everything else goes: an untagged index with
//! its untagged children, and referrers whose subject is gone or goes.
//! Deletions go parents first (an index before its children, a subject
//! before its referrers), each a compare-and-swap on the revision read, so
//! that tagging a manifest, pushing an index that lists it (which rewrites
//! it) or pushing its subject again during the run keeps it and what it
//! reaches.
//!
//! Then it removes unused links and content, and idle upload sessions.
//! Runs beside pushes without blocking them. Two rules keep it safe:
//! - Grace: links and blobs marked (uploaded, mounted, checked, referenced)
//!   within `grace` are never collected, so a push that uploaded layers and
//!   has not yet sent its manifest keeps them.
//! - Fencing: every removal is a compare-and-swap on the revision the
//!   collector read. Writers move those revisions (a manifest push rewrites
//!   the links it relies on; a blob write re-marks the blob record first), so
//!   a decision made on stale information fails instead of deleting.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;
use wharf_oci::{Digest, RepositoryName};
use wharf_store::{KeyValue, ListOptions, StoreExt, TxnResult};

use crate::keys::{self, BlobRecord, LinkRecord, ManifestRecord, TagRecord, now_millis};
use crate::{Registry, RegistryError};

const PAGE: usize = 1000;

/// How a collection runs.
///
/// ```
/// let options = wharf_registry::GcOptions {
///     delete_untagged: true,
///     ..wharf_registry::GcOptions::with_grace(std::time::Duration::from_secs(3600))
/// };
/// assert!(!options.dry_run);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct GcOptions {
    /// Only collect what was last marked longer ago than this.
    pub grace: Duration,
    /// Report what would be removed without removing it.
    pub dry_run: bool,
    /// Also delete manifests no tag reaches (see the module documentation).
    pub delete_untagged: bool,
    /// Delete upload sessions idle longer than this; `None`: the
    /// registry's `upload_ttl`.
    pub uploads_older_than: Option<Duration>,
}

impl GcOptions {
    /// Removes what was marked longer ago than `grace`; keeps untagged
    /// manifests and upload sessions younger than the registry's upload TTL.
    pub fn with_grace(grace: Duration) -> GcOptions {
        GcOptions {
            grace,
            dry_run: false,
            delete_untagged: false,
            uploads_older_than: None,
        }
    }
}

/// What a collection removed (or, dry, would remove).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Untagged manifests deleted (with `delete_untagged`). A dry run does
    /// not count the links and blobs only those manifests use among the
    /// removals; the real run removes them too.
    pub manifests_removed: u64,
    /// Blob links dropped from repositories because no manifest uses them.
    pub links_removed: u64,
    /// Blob files deleted.
    pub blobs_removed: u64,
    /// Bytes those files held.
    pub bytes_freed: u64,
    /// Abandoned upload sessions deleted.
    pub uploads_removed: u64,
    /// Bytes those sessions held.
    pub upload_bytes_freed: u64,
    /// Upload sessions left: pushes in progress, or leftovers of
    /// interrupted ones not idle long enough to be removed.
    pub uploads_left: u64,
    /// Bytes those sessions hold.
    pub upload_bytes_left: u64,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Wall time of the run in milliseconds.
    pub duration_ms: u64,
}

impl Registry {
    /// Deletes untagged manifests if asked, removes unreferenced links, then
    /// content no link or manifest uses, then idle upload sessions, and
    /// reports the sessions left. Runs are serialized.
    pub async fn collect_garbage(&self, options: GcOptions) -> Result<GcReport, RegistryError> {
        let _running = self.gc_lock.lock().await;
        let started = Instant::now();
        let cutoff = now_millis().saturating_sub(options.grace.as_millis() as u64);
        let mut report = GcReport {
            dry_run: options.dry_run,
            ..GcReport::default()
        };
        if options.delete_untagged {
            self.sweep_untagged(cutoff, options.dry_run, &mut report)
                .await?;
        }
        let (referenced, manifests) = self.manifest_references().await?;
        let linked = self
            .sweep_links(&referenced, cutoff, options.dry_run, &mut report)
            .await?;
        self.sweep_blobs(&linked, &manifests, cutoff, options.dry_run, &mut report)
            .await?;
        let uploads = self
            .blobs
            .sweep_uploads(
                options.uploads_older_than.unwrap_or(self.config.upload_ttl),
                options.dry_run,
            )
            .await?;
        report.uploads_removed = uploads.removed;
        report.upload_bytes_freed = uploads.removed_bytes;
        report.uploads_left = uploads.left;
        report.upload_bytes_left = uploads.left_bytes;
        report.duration_ms = started.elapsed().as_millis() as u64;
        tracing::info!(?report, "garbage collection finished");
        Ok(report)
    }

    /// Deletes the manifests no tag reaches, repository by repository.
    async fn sweep_untagged(
        &self,
        cutoff: u64,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<(), RegistryError> {
        let mut repos: BTreeMap<RepositoryName, HashMap<Digest, (KeyValue, ManifestRecord)>> =
            BTreeMap::new();
        for kv in self.store.list_all(keys::MANIFESTS, PAGE).await? {
            let Some((repo, digest)) = keys::parse_manifest_key(&kv.key) else {
                continue;
            };
            let record: ManifestRecord = keys::decode(&kv.key, &kv.value)?;
            repos.entry(repo).or_default().insert(digest, (kv, record));
        }
        let mut tagged: HashMap<RepositoryName, HashSet<Digest>> = HashMap::new();
        for kv in self.store.list_all(keys::TAGS, PAGE).await? {
            let Some(repo) = keys::parse_tag_key(&kv.key) else {
                continue;
            };
            let record: TagRecord = keys::decode(&kv.key, &kv.value)?;
            tagged.entry(repo).or_default().insert(record.digest);
        }
        for (repo, manifests) in repos {
            let records: HashMap<&Digest, &ManifestRecord> =
                manifests.iter().map(|(d, (_, r))| (d, r)).collect();
            let no_tags = HashSet::new();
            let plan = untagged_plan(&records, tagged.get(&repo).unwrap_or(&no_tags), cutoff);
            if dry_run {
                report.manifests_removed += plan.len() as u64;
                continue;
            }
            report.manifests_removed += self.delete_planned(&repo, &manifests, &plan).await?;
        }
        Ok(())
    }

    /// Deletes the manifests of `plan` in its order, each only if it is
    /// unchanged since it was read and none that had to go before it stayed.
    /// Returns how many went.
    async fn delete_planned(
        &self,
        repo: &RepositoryName,
        manifests: &HashMap<Digest, (KeyValue, ManifestRecord)>,
        plan: &[Digest],
    ) -> Result<u64, RegistryError> {
        // What must go before each manifest: the indexes listing it, its subject.
        let mut before: HashMap<&Digest, Vec<&Digest>> = HashMap::new();
        for (digest, (_, record)) in manifests {
            for child in &record.children {
                before.entry(child).or_default().push(digest);
            }
            if let Some(subject) = &record.subject {
                before.entry(digest).or_default().push(subject);
            }
        }
        let mut kept: HashSet<&Digest> = HashSet::new();
        let mut deleted = 0;
        for digest in plan {
            let (kv, record) = &manifests[digest];
            let waits_on_kept = before
                .get(digest)
                .is_some_and(|first| first.iter().any(|d| kept.contains(d)));
            if waits_on_kept || !self.delete_untagged(repo, digest, kv, record).await? {
                kept.insert(digest);
                continue;
            }
            self.release_after_delete(repo, record).await;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Deletes one untagged manifest read as `kv`; `false` when it changed
    /// meanwhile (tagged, listed by a new index, pushed again) or, for a
    /// referrer, when its subject came back.
    async fn delete_untagged(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        kv: &KeyValue,
        record: &ManifestRecord,
    ) -> Result<bool, RegistryError> {
        // Untagged: no tag to delete, so no tombstone and no origin to keep.
        let (mut txn, _) = self
            .manifest_delete_txn(repo, digest, kv, record, None)
            .await?;
        if let Some(subject) = &record.subject {
            // Its subject went before it (or never was here): it must stay away.
            txn = txn.when_revision(keys::manifest(repo, subject), 0);
        }
        let TxnResult { succeeded, .. } = self.store.txn(txn).await?;
        Ok(succeeded)
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
                        .remove_link(&repo, &digest, &record, kv.mod_revision)
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

/// Which manifests of one repository a collection of untagged artifacts
/// deletes, in the order it must delete them: `manifests` are all of the
/// repository's, `tagged` those its tags point at. Kept are the tagged ones
/// and those pushed after `cutoff`, and, repeatedly, the children and the
/// referrers of anything kept. The rest is ordered parents first: an index
/// before the children it lists, a subject before its referrers.
fn untagged_plan(
    manifests: &HashMap<&Digest, &ManifestRecord>,
    tagged: &HashSet<Digest>,
    cutoff: u64,
) -> Vec<Digest> {
    let mut referrers: HashMap<&Digest, Vec<&Digest>> = HashMap::new();
    for (digest, record) in manifests {
        if let Some(subject) = &record.subject {
            referrers.entry(subject).or_default().push(digest);
        }
    }
    let mut kept: HashSet<&Digest> = HashSet::new();
    let mut reach: Vec<&Digest> = manifests
        .iter()
        .filter(|(digest, record)| tagged.contains(**digest) || record.pushed_at > cutoff)
        .map(|(digest, _)| *digest)
        .collect();
    while let Some(digest) = reach.pop() {
        if !kept.insert(digest) {
            continue;
        }
        if let Some(record) = manifests.get(digest) {
            reach.extend(record.children.iter());
        }
        reach.extend(referrers.get(digest).into_iter().flatten());
    }
    // Kahn's order over the edges parent -> child and subject -> referrer
    // among the manifests that go. Content addressing makes these acyclic;
    // anything caught in a cycle regardless would simply stay.
    let doomed: Vec<&Digest> = manifests
        .keys()
        .copied()
        .filter(|d| !kept.contains(d))
        .collect();
    let mut waiting: HashMap<&Digest, usize> = doomed.iter().map(|d| (*d, 0)).collect();
    let mut after: HashMap<&Digest, Vec<&Digest>> = HashMap::new();
    for digest in &doomed {
        let record = manifests[digest];
        let mut followers: Vec<&Digest> = record.children.iter().collect();
        followers.extend(referrers.get(digest).into_iter().flatten());
        for follower in followers {
            if let Some(count) = waiting.get_mut(follower) {
                *count += 1;
                after.entry(digest).or_default().push(follower);
            }
        }
    }
    let mut ready: Vec<&Digest> = waiting
        .iter()
        .filter(|(_, count)| **count == 0)
        .map(|(digest, _)| *digest)
        .collect();
    ready.sort();
    let mut plan = Vec::with_capacity(doomed.len());
    while let Some(digest) = ready.pop() {
        plan.push(digest.clone());
        for follower in after.get(digest).into_iter().flatten() {
            let count = waiting.get_mut(follower).expect("followers are doomed");
            *count -= 1;
            if *count == 0 {
                ready.push(follower);
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_oci::DigestAlgorithm;

    fn digest(name: &str) -> Digest {
        Digest::of(DigestAlgorithm::Sha256, name.as_bytes())
    }

    fn record(children: &[&str], subject: Option<&str>, pushed_at: u64) -> ManifestRecord {
        ManifestRecord {
            media_type: String::new(),
            size: 1,
            blobs: Vec::new(),
            children: children.iter().map(|c| digest(c)).collect(),
            subject: subject.map(digest),
            pushed_at,
        }
    }

    fn position(plan: &[Digest], name: &str) -> usize {
        plan.iter()
            .position(|d| *d == digest(name))
            .unwrap_or_else(|| panic!("{name} is not in the plan"))
    }

    #[test]
    fn the_plan_keeps_what_tags_reach_and_deletes_parents_first() {
        let records = [
            ("tagged-index", record(&["child"], None, 1)),
            ("child", record(&[], None, 1)),
            ("child-sig", record(&[], Some("child"), 1)),
            ("index", record(&["a", "b"], None, 1)),
            ("a", record(&["nested"], None, 1)),
            ("b", record(&[], None, 1)),
            ("nested", record(&[], None, 1)),
            ("sbom", record(&[], Some("index"), 1)),
            ("sbom-sig", record(&[], Some("sbom"), 1)),
            ("recent", record(&["recent-child"], None, 100)),
            ("recent-child", record(&[], None, 1)),
        ];
        let digests: Vec<(Digest, &ManifestRecord)> =
            records.iter().map(|(n, r)| (digest(n), r)).collect();
        let manifests: HashMap<&Digest, &ManifestRecord> =
            digests.iter().map(|(d, r)| (d, *r)).collect();
        let tagged = HashSet::from([digest("tagged-index")]);
        let plan = untagged_plan(&manifests, &tagged, 50);

        let mut planned: Vec<Digest> = plan.clone();
        planned.sort();
        let mut expected: Vec<Digest> = ["index", "a", "b", "nested", "sbom", "sbom-sig"]
            .iter()
            .map(|n| digest(n))
            .collect();
        expected.sort();
        assert_eq!(
            planned, expected,
            "kept: tagged, recent, and what they reach"
        );
        for (first, then) in [
            ("index", "a"),
            ("index", "b"),
            ("a", "nested"),
            ("index", "sbom"),
            ("sbom", "sbom-sig"),
        ] {
            assert!(
                position(&plan, first) < position(&plan, then),
                "{first} goes before {then}"
            );
        }
    }
}

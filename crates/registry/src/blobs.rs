//! Blobs and upload sessions.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use wharf_blob::{AppendOptions, BlobBody, CANONICAL_ALGORITHM, Upload};
use wharf_oci::{Digest, DigestAlgorithm, RepositoryName};
use wharf_store::{KeyValue, ListOptions, StoreExt, Txn};

use crate::keys::{self, BlobRecord, LinkRecord, now_millis};
use crate::{Registry, RegistryError};

/// How long writers wait for a garbage-collection deletion of the same
/// content to finish before assuming the collector died mid-way.
const DELETION_FENCE_MILLIS: u64 = 60_000;
/// Optimistic writes retry this often (with growing pauses) before giving up.
pub(crate) const MAX_ATTEMPTS: usize = 64;

/// A blob as the registry reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// The content digest.
    pub digest: Digest,
    /// Length in bytes.
    pub size: u64,
}

/// Where an upload session stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadStatus {
    /// Session id, used in the upload URL.
    pub id: String,
    /// Bytes received so far.
    pub size: u64,
}

impl Registry {
    async fn link(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<(KeyValue, LinkRecord), RegistryError> {
        let key = keys::link(digest, repo);
        let kv = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| RegistryError::BlobUnknown(digest.clone()))?;
        let record = keys::decode(&key, &kv.value)?;
        Ok((kv, record))
    }

    /// Size of a blob in `repo` (blob HEAD). Also refreshes the link's mark
    /// now and then: clients check existence right before they push a
    /// manifest that relies on the blob, so it must not be collected meanwhile.
    pub async fn stat_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<BlobInfo, RegistryError> {
        let (kv, record) = self.link(repo, digest).await?;
        let now = now_millis();
        if now.saturating_sub(record.marked_at) > self.config.gc_grace.as_millis() as u64 / 2 {
            let fresh = LinkRecord {
                marked_at: now,
                ..record.clone()
            };
            let refreshed = self
                .store
                .put_if(&kv.key, keys::encode(&fresh), kv.mod_revision)
                .await?;
            // Lost a race: either another request refreshed the link (fine) or
            // garbage collection removed it, and then the blob is not here.
            if refreshed.is_none() {
                self.link(repo, digest).await?;
            }
        }
        Ok(BlobInfo {
            digest: digest.clone(),
            size: record.size,
        })
    }

    /// Streams a blob of `repo`, or the byte range that `choose_range`
    /// picks once the blob's size is known.
    pub async fn get_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        choose_range: impl FnOnce(u64) -> Result<Option<Range<u64>>, RegistryError>,
    ) -> Result<(BlobInfo, Option<Range<u64>>, BlobBody), RegistryError> {
        let (_, record) = self.link(repo, digest).await?;
        let range = choose_range(record.size)?;
        if let Some(range) = &range
            && (range.start >= range.end || range.end > record.size)
        {
            return Err(RegistryError::RangeNotSatisfiable { size: record.size });
        }
        let body = self.blobs.read(digest, range.clone()).await?;
        let info = BlobInfo {
            digest: digest.clone(),
            size: record.size,
        };
        Ok((info, range, body))
    }

    /// Removes a blob from `repo`. The content goes once garbage collection
    /// finds no repository and no manifest using it.
    pub async fn delete_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        for attempt in 0..MAX_ATTEMPTS {
            let (kv, record) = self.link(repo, digest).await?;
            if self
                .remove_link(repo, digest, &record, kv.mod_revision)
                .await?
            {
                return Ok(());
            }
            backoff(attempt).await;
        }
        Err(RegistryError::Contention(keys::link(digest, repo)))
    }

    /// Opens an upload session in `repo`.
    pub async fn start_upload(&self, repo: &RepositoryName) -> Result<UploadStatus, RegistryError> {
        let upload = self.blobs.start_upload(repo.as_str()).await?;
        Ok(status(&upload))
    }

    async fn upload_of(
        &self,
        repo: &RepositoryName,
        id: &str,
    ) -> Result<Arc<Upload>, RegistryError> {
        let upload = self.blobs.upload(id).await?;
        // Sessions belong to the repository that opened them.
        if upload.owner() != repo.as_str() {
            return Err(RegistryError::BlobUploadUnknown(id.to_string()));
        }
        Ok(upload)
    }

    /// Where an upload session stands.
    pub async fn upload_status(
        &self,
        repo: &RepositoryName,
        id: &str,
    ) -> Result<UploadStatus, RegistryError> {
        Ok(status(&*self.upload_of(repo, id).await?))
    }

    /// Appends a chunk (or a stream without declared range) to a session.
    pub async fn append_upload<S, E>(
        &self,
        repo: &RepositoryName,
        id: &str,
        body: S,
        offset: Option<u64>,
    ) -> Result<UploadStatus, RegistryError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let upload = self.upload_of(repo, id).await?;
        upload
            .append(body, self.append_options(offset, CANONICAL_ALGORITHM))
            .await?;
        Ok(status(&upload))
    }

    /// Appends the final chunk, verifies the whole content against `digest`
    /// and publishes it in `repo`.
    pub async fn complete_upload<S, E>(
        &self,
        repo: &RepositoryName,
        id: &str,
        digest: &Digest,
        body: S,
        offset: Option<u64>,
    ) -> Result<BlobInfo, RegistryError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let upload = self.upload_of(repo, id).await?;
        upload
            .append(body, self.append_options(offset, digest.algorithm()))
            .await?;
        self.commit_upload(repo, &upload, digest).await
    }

    /// Pushes a whole blob in one request (`POST ...?digest=`).
    pub async fn push_blob<S, E>(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        body: S,
    ) -> Result<BlobInfo, RegistryError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let upload = self.blobs.start_upload(repo.as_str()).await?;
        let appended = upload
            .append(body, self.append_options(Some(0), digest.algorithm()))
            .await;
        let result = match appended {
            Ok(_) => self.commit_upload(repo, &upload, digest).await,
            Err(err) => Err(err.into()),
        };
        if result.is_err() {
            // One-shot pushes leave no session behind, whatever failed.
            let _ = upload.discard().await;
        }
        result
    }

    /// Cancels an upload session.
    pub async fn cancel_upload(
        &self,
        repo: &RepositoryName,
        id: &str,
    ) -> Result<(), RegistryError> {
        self.upload_of(repo, id).await?.discard().await?;
        Ok(())
    }

    /// Repositories that hold `digest`, at most `limit` of them.
    pub async fn repositories_holding(
        &self,
        digest: &Digest,
        limit: usize,
    ) -> Result<Vec<RepositoryName>, RegistryError> {
        let options = ListOptions {
            start_after: None,
            limit: Some(limit),
        };
        let page = self.store.list(&keys::links_of(digest), options).await?;
        Ok(page
            .items
            .iter()
            .filter_map(|kv| keys::parse_link_key(&kv.key).map(|(_, repo)| repo))
            .collect())
    }

    /// Makes a blob that `from` holds usable in `repo` without uploading it
    /// again. `None` when `from` lacks it; the caller then starts a normal
    /// upload.
    pub async fn mount_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        from: &RepositoryName,
    ) -> Result<Option<BlobInfo>, RegistryError> {
        let source = self.store.get(&keys::link(digest, from)).await?;
        let Some(source) = source else {
            return Ok(None);
        };
        let size = keys::decode::<LinkRecord>(&source.key, &source.value)?.size;
        self.mark_blob_for_write(digest, size).await?;
        // A collection that finished just before the mark may have removed the content.
        if self.blobs.stat(digest).await?.is_none() {
            return Ok(None);
        }
        self.put_link(repo, digest, size).await?;
        Ok(Some(BlobInfo {
            digest: digest.clone(),
            size,
        }))
    }

    fn append_options(&self, offset: Option<u64>, algorithm: DigestAlgorithm) -> AppendOptions {
        AppendOptions {
            expected_offset: offset,
            max_size: self.config.max_blob_bytes,
            algorithm,
        }
    }

    async fn commit_upload(
        &self,
        repo: &RepositoryName,
        upload: &Arc<Upload>,
        digest: &Digest,
    ) -> Result<BlobInfo, RegistryError> {
        let finished = upload.finish(digest).await?;
        if let Err(err) = self
            .check_quota(repo.project(), digest, finished.size())
            .await
        {
            drop(finished);
            upload.discard().await?;
            return Err(err);
        }
        // Fence garbage collection before the content becomes visible.
        self.mark_blob_for_write(digest, finished.size()).await?;
        let size = finished.publish().await?;
        self.put_link(repo, digest, size).await?;
        Ok(BlobInfo {
            digest: digest.clone(),
            size,
        })
    }

    /// Links a blob into `repo` (or refreshes the link's mark), charging
    /// the project for content it did not store yet, and again for a link
    /// whose charge a manifest delete released.
    pub(crate) async fn put_link(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        size: u64,
    ) -> Result<(), RegistryError> {
        let key = keys::link(digest, repo);
        let record = keys::encode(&LinkRecord::fresh(size));
        for attempt in 0..MAX_ATTEMPTS {
            let current = self.store.get(&key).await?;
            let (revision, charged) = match &current {
                Some(kv) => (
                    kv.mod_revision,
                    !keys::decode::<LinkRecord>(&key, &kv.value)?.uncharged,
                ),
                None => (0, false),
            };
            let mut txn = Txn::new()
                .when_revision(&key, revision)
                .put(&key, record.clone());
            if !charged {
                txn = self.account(txn, repo.project(), digest, size, 1).await?;
            }
            if self.store.txn(txn).await?.succeeded {
                return Ok(());
            }
            backoff(attempt).await;
        }
        Err(RegistryError::Contention(key))
    }

    /// Removes `link`, read at `revision`, releasing its charge if it still
    /// has one; `false` when the link changed meanwhile.
    pub(crate) async fn remove_link(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        link: &LinkRecord,
        revision: u64,
    ) -> Result<bool, RegistryError> {
        let key = keys::link(digest, repo);
        let mut txn = Txn::new().when_revision(&key, revision).delete(&key);
        if !link.uncharged {
            txn = self
                .account(txn, repo.project(), digest, link.size, -1)
                .await?;
        }
        Ok(self.store.txn(txn).await?.succeeded)
    }

    /// Records that `digest` is being written, so that a concurrent garbage
    /// collection cannot delete it: the collector only deletes content whose
    /// record it fenced by compare-and-swap, and this write changes the
    /// record's revision. If a collection is deleting the content right now,
    /// wait for it to finish, then write afresh.
    pub(crate) async fn mark_blob_for_write(
        &self,
        digest: &Digest,
        size: u64,
    ) -> Result<(), RegistryError> {
        let key = keys::blob(digest);
        for _ in 0..MAX_ATTEMPTS {
            let now = now_millis();
            let current = self.store.get(&key).await?;
            let (revision, record) = match &current {
                Some(kv) => (
                    kv.mod_revision,
                    Some(keys::decode::<BlobRecord>(&key, &kv.value)?),
                ),
                None => (0, None),
            };
            // A collection is deleting the content: let it finish first.
            if let Some(since) = record.as_ref().and_then(|r| r.deleting_since)
                && now.saturating_sub(since) < DELETION_FENCE_MILLIS
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            // Always write, even over a fresh mark: a collection run with a
            // shorter grace than the server's may be sweeping now, and only a
            // new revision makes its fence fail.
            let fresh = BlobRecord {
                size,
                marked_at: now,
                deleting_since: None,
            };
            if self
                .store
                .put_if(&key, keys::encode(&fresh), revision)
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(RegistryError::Contention(key))
    }
}

/// A short, growing, jittered pause between optimistic retries, so that
/// writers contending on one key (a project's usage) spread out.
pub(crate) async fn backoff(attempt: usize) {
    if attempt > 0 {
        let ceiling = 1u64 << attempt.min(6);
        tokio::time::sleep(Duration::from_millis(rand::random_range(1..=ceiling))).await;
    }
}

fn status(upload: &Upload) -> UploadStatus {
    UploadStatus {
        id: upload.id().to_string(),
        size: upload.size(),
    }
}

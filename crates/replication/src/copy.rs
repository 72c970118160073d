//! Copying one artifact between two registries: blobs the destination
//! lacks first (mounted when another repository there has them, else
//! uploaded in resumable chunks), then the children of an index, then the
//! manifest, and the tag last, so the destination never shows a tag whose
//! content is incomplete.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use wharf_oci::{Digest, ParsedManifest, RepositoryName};
use wharf_registry::Origin;

use crate::ReplicationError;
use crate::access::{ByteStream, Manifest, RegistryAccess, TagWrite};
use crate::limit::RateLimit;
use crate::model::ResumePoint;

/// Pieces handed to the pacer: small enough to keep the rate smooth.
const PIECE: usize = 256 << 10;

/// Where a copy reports its progress; persisted so a restart resumes.
#[async_trait]
pub(crate) trait Checkpoint: Send + Sync {
    /// A blob upload reached `point` (called after each chunk).
    async fn reached(&self, point: Option<ResumePoint>) -> Result<(), ReplicationError>;
}

/// Everything one copy needs.
pub(crate) struct Copier<'a> {
    pub source: &'a dyn RegistryAccess,
    pub destination: &'a dyn RegistryAccess,
    pub limit: Option<Arc<RateLimit>>,
    /// Bytes per upload request; a resumed copy repeats at most one chunk.
    pub chunk_size: u64,
    /// Bytes sent so far, read by progress reports while the copy runs.
    pub sent: Arc<AtomicU64>,
    /// Bytes the destination lacked, known once the copy has planned.
    pub total: Arc<AtomicU64>,
    pub checkpoint: &'a dyn Checkpoint,
    /// Where the destination may already hold blobs (mount sources).
    pub mount_candidates: Vec<RepositoryName>,
}

/// A blob the destination lacks.
struct MissingBlob {
    digest: Digest,
    size: u64,
}

impl Copier<'_> {
    /// Copies `manifest` (and everything it needs) from `source_repo` to
    /// `destination_repo`, storing it under `reference` (a tag or its digest).
    pub(crate) async fn copy(
        &self,
        source_repo: &RepositoryName,
        destination_repo: &RepositoryName,
        reference: &str,
        manifest: &Manifest,
        origin: Option<&Origin>,
        resume: Option<ResumePoint>,
    ) -> Result<TagWrite, ReplicationError> {
        let mut missing = Vec::new();
        let mut children = Vec::new();
        self.plan(
            source_repo,
            destination_repo,
            manifest,
            &mut missing,
            &mut children,
        )
        .await?;
        let total: u64 = missing.iter().map(|b| b.size).sum::<u64>()
            + children.iter().map(|m| m.bytes.len() as u64).sum::<u64>()
            + manifest.bytes.len() as u64;
        self.total.store(total, Ordering::Relaxed);
        let mut resume = resume;
        for blob in &missing {
            let point = resume.take().filter(|p| p.digest == blob.digest.as_str());
            self.copy_blob(source_repo, destination_repo, blob, point)
                .await?;
        }
        // Children before the index that names them.
        for child in &children {
            self.destination
                .put_manifest(destination_repo, child.digest.as_str(), child, None)
                .await?;
            self.sent
                .fetch_add(child.bytes.len() as u64, Ordering::Relaxed);
        }
        let write = self
            .destination
            .put_manifest(destination_repo, reference, manifest, origin)
            .await?;
        self.sent
            .fetch_add(manifest.bytes.len() as u64, Ordering::Relaxed);
        Ok(write)
    }

    /// Walks the manifest tree: the blobs the destination lacks and the
    /// child manifests to store, deepest first.
    async fn plan(
        &self,
        source_repo: &RepositoryName,
        destination_repo: &RepositoryName,
        manifest: &Manifest,
        missing: &mut Vec<MissingBlob>,
        children: &mut Vec<Manifest>,
    ) -> Result<(), ReplicationError> {
        let parsed =
            ParsedManifest::parse(Some(&manifest.media_type), &manifest.bytes).map_err(|e| {
                ReplicationError::Remote {
                    endpoint: self.source.name().to_string(),
                    message: format!(
                        "manifest {} of {source_repo} is invalid: {e}",
                        manifest.digest
                    ),
                    permanent: true,
                }
            })?;
        for child in parsed.child_manifests() {
            if self
                .destination
                .has_manifest(destination_repo, &child.digest)
                .await?
            {
                continue;
            }
            let content = self
                .source
                .manifest(source_repo, child.digest.as_str())
                .await?
                .ok_or_else(|| ReplicationError::Remote {
                    endpoint: self.source.name().to_string(),
                    message: format!(
                        "{source_repo} lacks {}, which its index names",
                        child.digest
                    ),
                    permanent: true,
                })?;
            Box::pin(self.plan(source_repo, destination_repo, &content, missing, children)).await?;
            children.push(content);
        }
        for blob in parsed.required_blobs() {
            if missing.iter().any(|m| m.digest == blob.digest) {
                continue;
            }
            if self
                .destination
                .blob_size(destination_repo, &blob.digest)
                .await?
                .is_some()
            {
                continue;
            }
            if self.mount(destination_repo, &blob.digest).await? {
                continue;
            }
            missing.push(MissingBlob {
                digest: blob.digest.clone(),
                size: blob.size,
            });
        }
        Ok(())
    }

    async fn mount(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<bool, ReplicationError> {
        for from in self.mount_candidates.iter().filter(|c| *c != repo) {
            if self.destination.mount_blob(repo, digest, from).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Uploads one blob chunk by chunk, continuing the session in `resume`
    /// when the destination still has it.
    async fn copy_blob(
        &self,
        source_repo: &RepositoryName,
        destination_repo: &RepositoryName,
        blob: &MissingBlob,
        resume: Option<ResumePoint>,
    ) -> Result<(), ReplicationError> {
        let mut resumed = None;
        if let Some(point) = resume
            && let Some(offset) = self
                .destination
                .upload_offset(destination_repo, &point.session)
                .await?
            && offset <= blob.size
        {
            resumed = Some((point.session, offset));
        }
        let (mut session, mut offset) = match resumed {
            Some((session, offset)) => {
                tracing::info!(digest = %blob.digest, offset, "resuming blob upload");
                self.sent.fetch_add(offset, Ordering::Relaxed);
                (session, offset)
            }
            None => (self.destination.start_upload(destination_repo).await?, 0),
        };
        // The resume point of one chunk is saved while the next one streams:
        // a crash between the two only means resuming from the offset the
        // destination reports, which is where the copy continues anyway.
        let mut saved: Option<ResumePoint> = None;
        while offset < blob.size {
            let len = self.chunk_size.min(blob.size - offset);
            let body = self
                .source
                .read_blob(source_repo, &blob.digest, offset)
                .await?;
            let body = paced(body, len, self.limit.clone(), self.sent.clone());
            let append =
                self.destination
                    .append_upload(destination_repo, &session, offset, len, body);
            let save = async {
                match saved.take() {
                    Some(point) => self.checkpoint.reached(Some(point)).await,
                    None => Ok(()),
                }
            };
            let (appended, checkpointed) = tokio::join!(append, save);
            checkpointed?;
            session = appended?;
            offset += len;
            if offset < blob.size {
                saved = Some(ResumePoint {
                    digest: blob.digest.to_string(),
                    session: session.clone(),
                    offset,
                });
            }
        }
        self.destination
            .finish_upload(destination_repo, &session, &blob.digest)
            .await?;
        self.checkpoint.reached(None).await
    }
}

/// The first `len` bytes of `body`, in pieces the pacer allows, counted
/// into `sent` as they go.
fn paced(
    body: ByteStream,
    len: u64,
    limit: Option<Arc<RateLimit>>,
    sent: Arc<AtomicU64>,
) -> ByteStream {
    struct State {
        body: ByteStream,
        left: u64,
        pending: Bytes,
        limit: Option<Arc<RateLimit>>,
        sent: Arc<AtomicU64>,
    }
    let state = State {
        body,
        left: len,
        pending: Bytes::new(),
        limit,
        sent,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        if state.left == 0 {
            return None;
        }
        if state.pending.is_empty() {
            match state.body.next().await {
                Some(Ok(bytes)) => state.pending = bytes,
                Some(Err(e)) => {
                    state.left = 0;
                    return Some((Err(e), state));
                }
                None => {
                    let missing = state.left;
                    state.left = 0;
                    return Some((
                        Err(ReplicationError::Internal(format!(
                            "source ended {missing} bytes early"
                        ))),
                        state,
                    ));
                }
            }
        }
        let take = state.pending.len().min(PIECE).min(state.left as usize);
        let piece = state.pending.split_to(take);
        if let Some(limit) = &state.limit {
            limit.acquire(piece.len()).await;
        }
        state.left -= piece.len() as u64;
        state.sent.fetch_add(piece.len() as u64, Ordering::Relaxed);
        Some((Ok(piece), state))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn paced_stream_cuts_at_len_and_counts() {
        let chunks: Vec<Result<Bytes, ReplicationError>> = vec![
            Ok(Bytes::from(vec![1u8; 700 << 10])),
            Ok(Bytes::from(vec![2u8; 10])),
        ];
        let sent = Arc::new(AtomicU64::new(0));
        let body = paced(
            futures_util::stream::iter(chunks).boxed(),
            600 << 10,
            None,
            sent.clone(),
        );
        let pieces: Vec<Bytes> = body.map(|r| r.unwrap()).collect().await;
        assert_eq!(pieces.iter().map(Bytes::len).sum::<usize>(), 600 << 10);
        assert!(pieces.iter().all(|p| p.len() <= PIECE));
        assert_eq!(sent.load(Ordering::Relaxed), 600 << 10);
    }

    #[tokio::test]
    async fn paced_stream_reports_a_short_source() {
        let chunks: Vec<Result<Bytes, ReplicationError>> = vec![Ok(Bytes::from_static(b"abc"))];
        let body = paced(
            futures_util::stream::iter(chunks).boxed(),
            10,
            None,
            Arc::new(AtomicU64::new(0)),
        );
        let items: Vec<_> = body.collect().await;
        assert!(items[0].is_ok());
        assert!(
            items[1]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("7 bytes early")
        );
    }
}

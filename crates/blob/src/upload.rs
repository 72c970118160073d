//! Upload sessions: append streamed chunks while hashing, then verify and
//! publish under the digest.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::{Mutex, OwnedMutexGuard, mpsc};
use wharf_oci::{Digest, DigestAlgorithm, StreamHasher};

use crate::{BlobError, Inner, fsutil};

/// Chunks travel to the writer and hasher threads in batches of about this
/// size, so per-chunk overhead stays small whatever the HTTP framing.
const BATCH_BYTES: usize = 1 << 20;
/// Writeback of received data starts every so often, so that disk writes
/// overlap with receiving and the fsync at commit finds little left to do.
const FLUSH_EVERY_BYTES: u64 = 8 << 20;
/// Batches queued per worker thread before the body reader waits.
const QUEUE_BATCHES: usize = 16;

type Batch = Arc<Vec<Bytes>>;

/// How one request's body is appended to a session.
#[derive(Clone, Copy, Debug)]
pub struct AppendOptions {
    /// The offset the client says this chunk starts at, if it said one.
    pub expected_offset: Option<u64>,
    /// The largest total size the session may reach.
    pub max_size: u64,
    /// Algorithm to hash with when the session is empty (the digest the
    /// client will name, when known).
    pub algorithm: DigestAlgorithm,
}

/// An upload session. Its data lives under `uploads/<id>/` until published.
pub struct Upload {
    id: String,
    owner: String,
    store: Arc<Inner>,
    // Readable while a request holds `state` for writing.
    size: AtomicU64,
    state: Arc<Mutex<UploadState>>,
}

struct UploadState {
    size: u64,
    // None after a restart mid-session: the digest is then computed from the file.
    hasher: Option<StreamHasher>,
    gone: bool,
}

impl Upload {
    pub(crate) async fn create(store: Arc<Inner>, owner: &str) -> Result<Arc<Upload>, BlobError> {
        let id = uuid::Uuid::new_v4().to_string();
        let dir = store.upload_dir(&id);
        let owner_text = owner.to_string();
        let setup_dir = dir.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            fs::create_dir(&setup_dir)?;
            fs::write(setup_dir.join("owner"), owner_text)?;
            File::create(setup_dir.join("data")).map(drop)
        })
        .await
        .map_err(BlobError::join)?
        .map_err(|e| BlobError::io(&dir, e))?;
        Ok(Arc::new(Upload::new(id, owner.to_string(), store, 0)))
    }

    pub(crate) async fn load(store: Arc<Inner>, id: &str) -> Result<Arc<Upload>, BlobError> {
        // Ids come from URLs: only our own uuid form may touch the filesystem.
        if uuid::Uuid::try_parse(id)
            .map(|u| u.to_string() != id)
            .unwrap_or(true)
        {
            return Err(BlobError::UploadNotFound(id.to_string()));
        }
        let dir = store.upload_dir(id);
        let owner = tokio::fs::read_to_string(dir.join("owner")).await;
        let size = tokio::fs::metadata(dir.join("data")).await;
        match (owner, size) {
            (Ok(owner), Ok(meta)) => Ok(Arc::new(Upload::new(
                id.to_string(),
                owner,
                store,
                meta.len(),
            ))),
            _ => Err(BlobError::UploadNotFound(id.to_string())),
        }
    }

    fn new(id: String, owner: String, store: Arc<Inner>, size: u64) -> Upload {
        Upload {
            id,
            owner,
            store,
            size: AtomicU64::new(size),
            state: Arc::new(Mutex::new(UploadState {
                size,
                hasher: None,
                gone: false,
            })),
        }
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The repository the session was started for.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Bytes received so far (not counting a request still in flight).
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn data_path(&self) -> PathBuf {
        self.store.upload_dir(&self.id).join("data")
    }

    async fn lock(&self) -> Result<OwnedMutexGuard<UploadState>, BlobError> {
        let state = self
            .state
            .clone()
            .try_lock_owned()
            .map_err(|_| BlobError::UploadBusy(self.id.clone()))?;
        if state.gone {
            return Err(BlobError::UploadNotFound(self.id.clone()));
        }
        Ok(state)
    }

    /// Appends a request body. On any failure (client gone, size limit,
    /// disk error) the session is rolled back to where it was, so a failed
    /// request changes nothing. Returns the new size.
    pub async fn append<S, E>(&self, body: S, options: AppendOptions) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let mut state = self.lock().await?;
        if let Some(requested) = options.expected_offset.filter(|&o| o != state.size) {
            return Err(BlobError::OutOfOrder {
                current: state.size,
                requested,
            });
        }
        let start = state.size;
        let saved_hasher = state.hasher.clone();
        let hasher = match state.hasher.take() {
            None if start == 0 => Some(StreamHasher::new(options.algorithm)),
            other => other,
        };
        let path = self.data_path();
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| BlobError::io(&path, e))?;
        match pipe_body(
            body,
            file,
            hasher,
            options.max_size.saturating_sub(start),
            options.max_size,
        )
        .await
        {
            Ok((written, hasher)) => {
                state.size = start + written;
                state.hasher = hasher;
                self.size.store(state.size, Ordering::Release);
                Ok(state.size)
            }
            Err(err) => {
                let truncate = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(start));
                state.hasher = saved_hasher;
                truncate.map_err(|e| BlobError::io(&path, e))?;
                Err(err)
            }
        }
    }

    /// Verifies that the data hashes to `expected` and is on disk. The session
    /// stays locked until the returned value is published or dropped, so the
    /// caller can record the blob elsewhere before it becomes visible.
    /// A digest mismatch discards the session.
    pub async fn finish(self: &Arc<Self>, expected: &Digest) -> Result<FinishedUpload, BlobError> {
        let mut state = self.lock().await?;
        let path = self.data_path();
        let hasher = state
            .hasher
            .clone()
            .filter(|h| h.algorithm() == expected.algorithm());
        let algorithm = expected.algorithm();
        let sync_path = path.clone();
        let actual = tokio::task::spawn_blocking(move || -> io::Result<Digest> {
            let file = File::open(&sync_path)?;
            file.sync_all()?;
            match hasher {
                Some(hasher) => Ok(hasher.finish()),
                None => hash_file(file, algorithm),
            }
        })
        .await
        .map_err(BlobError::join)?
        .map_err(|e| BlobError::io(&path, e))?;
        if actual != *expected {
            self.remove(&mut state).await?;
            return Err(BlobError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        Ok(FinishedUpload {
            upload: self.clone(),
            state,
            digest: actual,
        })
    }

    /// Deletes the session and its data.
    pub async fn discard(&self) -> Result<(), BlobError> {
        let mut state = self.lock().await?;
        self.remove(&mut state).await
    }

    /// Deletes the session unless a request is using it; `true` if deleted.
    pub(crate) async fn discard_if_idle(&self) -> Result<bool, BlobError> {
        match self.lock().await {
            Ok(mut state) => self.remove(&mut state).await.map(|()| true),
            Err(BlobError::UploadBusy(_) | BlobError::UploadNotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn remove(&self, state: &mut UploadState) -> Result<(), BlobError> {
        state.gone = true;
        self.store.forget_upload(&self.id);
        let dir = self.store.upload_dir(&self.id);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BlobError::io(&dir, e)),
        }
    }
}

/// A verified upload waiting to be published under its digest.
pub struct FinishedUpload {
    upload: Arc<Upload>,
    state: OwnedMutexGuard<UploadState>,
    digest: Digest,
}

impl FinishedUpload {
    /// The verified digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The verified size.
    pub fn size(&self) -> u64 {
        self.state.size
    }

    /// Moves the data under its digest (atomically, durably) and ends the session.
    pub async fn publish(mut self) -> Result<u64, BlobError> {
        let source = self.upload.data_path();
        let target = self.upload.store.blob_path(&self.digest);
        tokio::task::spawn_blocking(move || fsutil::publish_file(&source, &target))
            .await
            .map_err(BlobError::join)??;
        let size = self.state.size;
        self.upload.remove(&mut self.state).await?;
        Ok(size)
    }
}

fn hash_file(mut file: File, algorithm: DigestAlgorithm) -> io::Result<Digest> {
    let mut hasher = StreamHasher::new(algorithm);
    let mut buf = vec![0u8; BATCH_BYTES];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buf[..n]);
    }
}

/// Streams `body` to `file` and `hasher` on two blocking threads, in
/// parallel: hashing and writing each take about one core at full speed.
async fn pipe_body<S, E>(
    mut body: S,
    file: File,
    hasher: Option<StreamHasher>,
    room: u64,
    limit: u64,
) -> Result<(u64, Option<StreamHasher>), BlobError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: std::fmt::Display,
{
    let (write_tx, write_rx) = mpsc::channel::<Batch>(QUEUE_BATCHES);
    let writer = tokio::task::spawn_blocking(move || write_batches(file, write_rx));
    let (hash_tx, hashing) = match hasher {
        Some(hasher) => {
            let (tx, rx) = mpsc::channel::<Batch>(QUEUE_BATCHES);
            (
                Some(tx),
                Some(tokio::task::spawn_blocking(move || {
                    hash_batches(hasher, rx)
                })),
            )
        }
        None => (None, None),
    };

    let mut received = 0u64;
    let mut batch = Vec::new();
    let mut batch_bytes = 0usize;
    let outcome = loop {
        let next = body.next().await;
        let end = match next {
            Some(Ok(chunk)) => {
                received += chunk.len() as u64;
                if received > room {
                    break Err(BlobError::TooLarge { limit });
                }
                batch_bytes += chunk.len();
                batch.push(chunk);
                false
            }
            Some(Err(e)) => break Err(BlobError::Body(e.to_string())),
            None => true,
        };
        if (end && !batch.is_empty()) || batch_bytes >= BATCH_BYTES {
            let full: Batch = Arc::new(std::mem::take(&mut batch));
            batch_bytes = 0;
            let hash_ok = match &hash_tx {
                Some(tx) => tx.send(full.clone()).await.is_ok(),
                None => true,
            };
            // A closed channel means the worker stopped on an error, reported below.
            if !hash_ok || write_tx.send(full).await.is_err() {
                break Ok(());
            }
        }
        if end {
            break Ok(());
        }
    };
    drop(write_tx);
    drop(hash_tx);
    let written = writer.await.map_err(BlobError::join)?;
    let hasher = match hashing {
        Some(task) => Some(task.await.map_err(BlobError::join)?),
        None => None,
    };
    outcome?;
    let written = written.map_err(|e| BlobError::Io {
        path: "upload data".into(),
        source: e,
    })?;
    if written != received {
        return Err(BlobError::Body("upload was cut short".into()));
    }
    Ok((written, hasher))
}

fn write_batches(mut file: File, mut batches: mpsc::Receiver<Batch>) -> io::Result<u64> {
    let mut offset = file.metadata()?.len();
    let mut written = 0u64;
    let mut unflushed_from = offset;
    while let Some(batch) = batches.blocking_recv() {
        let len: u64 = batch.iter().map(|c| c.len() as u64).sum();
        write_all_vectored(&mut file, &batch)?;
        written += len;
        offset += len;
        if offset - unflushed_from >= FLUSH_EVERY_BYTES {
            fsutil::start_writeback(&file, unflushed_from, offset - unflushed_from)?;
            unflushed_from = offset;
        }
    }
    Ok(written)
}

fn write_all_vectored(file: &mut File, chunks: &[Bytes]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut remaining = &mut slices[..];
    IoSlice::advance_slices(&mut remaining, 0);
    while !remaining.is_empty() {
        let n = file.write_vectored(remaining)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut remaining, n);
    }
    Ok(())
}

fn hash_batches(mut hasher: StreamHasher, mut batches: mpsc::Receiver<Batch>) -> StreamHasher {
    while let Some(batch) = batches.blocking_recv() {
        for chunk in batch.iter() {
            hasher.update(chunk);
        }
    }
    hasher
}

//! The node's piece store: blobs being fetched as partial files, written
//! piece by piece at their offsets, and complete, verified blobs in the
//! node's blob cache (`<dir>/<algorithm>/<hex>`).
//!
//! Architecture invariant: nothing unverified is ever readable. A piece
//! becomes readable once it matched the manifest; a blob enters the cache
//! (by rename) only once its whole digest and size matched. Partial files
//! live under `<dir>/partial/`, which opening the store empties, so a crash
//! leaves no visible partial blob.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use wharf_oci::{Digest, StreamHasher};

use crate::{Bitmap, P2pError, PieceManifest, piece_size_for};

const PARTIAL_DIR: &str = "partial";

/// Partial and complete blobs of one node. Cheap to share behind an `Arc`.
pub struct PieceStore {
    root: PathBuf,
    partials: Mutex<HashMap<Digest, Arc<PartialBlob>>>,
    next_file: AtomicU64,
    /// Upload counts of blobs this node seeded and completed before every
    /// piece went out once (see [`PieceStore::claim_upload`]).
    seeded: Mutex<HashMap<Digest, Vec<u32>>>,
}

/// A blob being fetched: its manifest, its file and which pieces are in it.
pub struct PartialBlob {
    manifest: PieceManifest,
    path: PathBuf,
    file: File,
    held: Mutex<Bitmap>,
    /// The whole blob's hash over the pieces `0..next`, advanced as the
    /// pieces arrive so that finishing never re-reads the whole blob when
    /// pieces come in order.
    whole: Mutex<WholeHash>,
    /// Wakes requests held for a piece ([`PieceStore::read_piece_within`])
    /// when one arrives or the partial blob ends.
    changed: tokio::sync::Notify,
    /// Times each piece was sent to a peer, counted only while the node
    /// fetches the blob from the registry as its IDC's seed
    /// ([`PartialBlob::ration_uploads`]).
    uploads: Mutex<Option<Vec<u32>>>,
}

struct WholeHash {
    hasher: Option<StreamHasher>,
    next: u32,
}

/// [`PieceStore::claim_upload`]'s rule over `uploads`, the send counts,
/// for the pieces `held`: piece `index` goes (and is counted) unless it
/// went more often than another held piece.
fn ration(uploads: &mut [u32], held: impl Iterator<Item = u32>, index: u32) -> bool {
    let least = held.filter_map(|i| uploads.get(i as usize)).min().copied();
    let Some(sent) = uploads.get_mut(index as usize) else {
        return true;
    };
    if least.is_some_and(|least| *sent > least) {
        return false;
    }
    *sent += 1;
    true
}

fn store_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> P2pError + 'a {
    move |source| P2pError::Store {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Runs blocking file work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, P2pError> + Send + 'static,
) -> Result<T, P2pError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| P2pError::Internal(format!("blocking task failed: {e}")))?
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Bitmaps and hash cursors are updated in one step each; a panicking
    // holder leaves them consistent.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl PieceStore {
    /// Opens (creating, mode 0700) the store under `root` and removes the
    /// partial files an interrupted run left.
    pub async fn open(root: impl Into<PathBuf>) -> Result<PieceStore, P2pError> {
        let root = root.into();
        let dir = root.clone();
        blocking(move || {
            let partial = dir.join(PARTIAL_DIR);
            match fs::remove_dir_all(&partial) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(store_err("remove", &partial)(e)),
            }
            create_private_dir(&dir)?;
            create_private_dir(&partial)
        })
        .await?;
        Ok(PieceStore {
            root,
            partials: Mutex::default(),
            next_file: AtomicU64::new(0),
            seeded: Mutex::default(),
        })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the complete blob `digest` is (or would be) kept.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// The complete blob's path, if the cache holds it.
    pub async fn complete(&self, digest: &Digest) -> Option<PathBuf> {
        let path = self.blob_path(digest);
        tokio::fs::metadata(&path)
            .await
            .ok()
            .filter(|m| m.is_file())
            .map(|_| path)
    }

    /// Starts a partial blob for `manifest`, or `None` if one is already
    /// being fetched (the caller then fetches without sharing).
    pub async fn begin(
        &self,
        manifest: &PieceManifest,
    ) -> Result<Option<Arc<PartialBlob>>, P2pError> {
        if lock(&self.partials).contains_key(&manifest.digest) {
            return Ok(None);
        }
        let path = self.partial_path(&manifest.digest);
        let (size, open_path) = (manifest.size, path.clone());
        let file = blocking(move || {
            let file = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&open_path)
                .map_err(store_err("create", &open_path))?;
            file.set_len(size).map_err(store_err("size", &open_path))?;
            Ok(file)
        })
        .await?;
        let partial = Arc::new(PartialBlob {
            held: Mutex::new(Bitmap::new(manifest.piece_count())),
            whole: Mutex::new(WholeHash {
                hasher: Some(StreamHasher::new(manifest.digest.algorithm())),
                next: 0,
            }),
            manifest: manifest.clone(),
            path,
            file,
            changed: tokio::sync::Notify::new(),
            uploads: Mutex::new(None),
        });
        let mut partials = lock(&self.partials);
        if partials.contains_key(&manifest.digest) {
            drop(partials);
            remove_quietly(&partial.path);
            return Ok(None);
        }
        partials.insert(manifest.digest.clone(), partial.clone());
        Ok(Some(partial))
    }

    /// The pieces of `digest` readable now: all for a complete blob, the
    /// verified ones for a partial one; `None` if neither.
    pub async fn held(&self, digest: &Digest) -> Option<Bitmap> {
        if let Some(partial) = self.partial(digest) {
            return Some(partial.held());
        }
        let path = self.complete(digest).await?;
        let size = tokio::fs::metadata(&path).await.ok()?.len();
        Some(Bitmap::full(size.div_ceil(piece_size_for(size)) as u32))
    }

    /// Piece `index` of `digest` if it is verified here; `None` otherwise.
    pub async fn read_piece(&self, digest: &Digest, index: u32) -> Result<Option<Bytes>, P2pError> {
        if let Some(partial) = self.partial(digest)
            && partial.has(index)
        {
            let range = partial.manifest.piece_range(index)?;
            return partial
                .read(range.start, range.end - range.start)
                .await
                .map(Some);
        }
        let path = self.blob_path(digest);
        blocking(move || {
            let file = match File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(store_err("open", &path)(e)),
            };
            let size = file.metadata().map_err(store_err("stat", &path))?.len();
            let piece_size = piece_size_for(size);
            let start = u64::from(index) * piece_size;
            if start >= size {
                return Ok(None);
            }
            let len = piece_size.min(size - start);
            read_at(&file, &path, start, len).map(Some)
        })
        .await
    }

    /// Whether piece `index` of `digest` may be sent to a peer now, and if
    /// so counts the send. Always, unless the node is its IDC's seed for
    /// the blob ([`PartialBlob::ration_uploads`]): then a piece goes again
    /// only when every piece held went as often, while the node fetches
    /// the blob and after, until every piece went out once. The seed's
    /// uplink is the one every new piece must cross; a piece it sent once
    /// is fetched from the peer that got it, while the seed's uplink
    /// carries pieces no peer has yet.
    pub fn claim_upload(&self, digest: &Digest, index: u32) -> bool {
        if let Some(partial) = self.partial(digest) {
            let mut uploads = lock(&partial.uploads);
            let Some(uploads) = uploads.as_mut() else {
                return true;
            };
            let held = partial.held();
            return !held.has(index) || ration(uploads, held.held(), index);
        }
        let mut seeded = lock(&self.seeded);
        let Some(uploads) = seeded.get_mut(digest) else {
            return true;
        };
        let pieces = uploads.len() as u32;
        let claimed = ration(uploads, 0..pieces, index);
        if uploads.iter().all(|&sent| sent > 0) {
            seeded.remove(digest);
        }
        claimed
    }

    /// Waits up to `wait` for piece `index` of `digest` while the blob is
    /// being fetched here and the piece is not in yet; returns at once
    /// otherwise. A child asking a parent for the piece the parent is
    /// fetching then gets it as soon as it is verified.
    pub async fn wait_for_piece(&self, digest: &Digest, index: u32, wait: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while let Some(partial) = self.partial(digest) {
            if index >= partial.manifest.piece_count() {
                return;
            }
            let changed = partial.changed.notified();
            tokio::pin!(changed);
            // Registered before the check: a piece landing in between
            // still wakes this request.
            changed.as_mut().enable();
            if partial.has(index) || tokio::time::timeout_at(deadline, changed).await.is_err() {
                return;
            }
        }
    }

    /// Verifies piece `index` against the manifest and, if it matches,
    /// writes it and makes it readable. Returns whether it matched; a piece
    /// that does not match changes nothing.
    pub async fn write_piece(
        &self,
        partial: &Arc<PartialBlob>,
        index: u32,
        bytes: Bytes,
    ) -> Result<bool, P2pError> {
        let partial = partial.clone();
        blocking(move || {
            if !partial.manifest.piece_matches(index, &bytes) {
                return Ok(false);
            }
            if partial.has(index) {
                return Ok(true);
            }
            let offset = partial.manifest.piece_range(index)?.start;
            partial
                .file
                .write_all_at(&bytes, offset)
                .map_err(store_err("write", &partial.path))?;
            lock(&partial.held).set(index);
            partial.changed.notify_waiters();
            partial.advance_hash(index, &bytes)?;
            Ok(true)
        })
        .await
    }

    /// Checks the whole blob's digest and size, makes the file durable and
    /// moves it into the cache. Fails (and keeps nothing) unless every
    /// piece is held and the whole matches.
    pub async fn finish(&self, partial: &Arc<PartialBlob>) -> Result<PathBuf, P2pError> {
        let target = self.blob_path(&partial.manifest.digest);
        let (moved, target_path) = (partial.clone(), target.clone());
        let result = blocking(move || {
            let digest = moved.manifest.digest.to_string();
            let unverified = |reason: String| P2pError::Verification {
                digest: digest.clone(),
                reason,
            };
            if !moved.held().is_complete() {
                return Err(unverified("pieces are missing".into()));
            }
            let actual = {
                let mut whole = lock(&moved.whole);
                // Pieces that came out of order are hashed now, from the file.
                moved.hash_held_from(&mut whole)?;
                whole.hasher.take().map(StreamHasher::finish)
            };
            if actual.as_ref() != Some(&moved.manifest.digest) {
                return Err(unverified(format!("the pieces hash to {actual:?}")));
            }
            let size = moved
                .file
                .metadata()
                .map_err(store_err("stat", &moved.path))?
                .len();
            if size != moved.manifest.size {
                return Err(unverified(format!(
                    "{size} bytes, expected {}",
                    moved.manifest.size
                )));
            }
            moved
                .file
                .sync_all()
                .map_err(store_err("sync", &moved.path))?;
            publish(&moved.path, &target_path)
        })
        .await;
        if result.is_ok()
            && let Some(uploads) = lock(&partial.uploads).take()
            && uploads.contains(&0)
        {
            lock(&self.seeded).insert(partial.manifest.digest.clone(), uploads);
        }
        // Readers switch to the cache only once it holds the blob.
        lock(&self.partials).remove(&partial.manifest.digest);
        partial.changed.notify_waiters();
        if result.is_err() {
            remove_quietly(&partial.path);
        }
        result.map(|()| target)
    }

    /// Gives up a partial blob: it stops being served and its file goes.
    pub fn abandon(&self, partial: &Arc<PartialBlob>) {
        let mut partials = lock(&self.partials);
        if partials
            .get(&partial.manifest.digest)
            .is_some_and(|p| Arc::ptr_eq(p, partial))
        {
            partials.remove(&partial.manifest.digest);
        }
        drop(partials);
        partial.changed.notify_waiters();
        remove_quietly(&partial.path);
    }

    /// Streams a whole blob (no manifest needed) into the cache, hashing
    /// as it arrives; kept only if digest and size match. Returns the
    /// cache path and the bytes received.
    pub async fn import_stream<S>(
        &self,
        digest: &Digest,
        size: u64,
        stream: S,
    ) -> Result<(PathBuf, u64), P2pError>
    where
        S: Stream<Item = Result<Bytes, P2pError>> + Send,
    {
        let path = self.partial_path(digest);
        let create = path.clone();
        let file = blocking(move || {
            File::options()
                .write(true)
                .create_new(true)
                .open(&create)
                .map_err(store_err("create", &create))
        })
        .await?;
        let result = self.write_stream(digest, size, stream, file, &path).await;
        match result {
            Ok(received) => {
                let target = self.blob_path(digest);
                let (from, to) = (path.clone(), target.clone());
                let published = blocking(move || publish(&from, &to)).await;
                if published.is_err() {
                    remove_quietly(&path);
                }
                published.map(|()| (target, received))
            }
            Err(e) => {
                remove_quietly(&path);
                Err(e)
            }
        }
    }

    async fn write_stream<S>(
        &self,
        digest: &Digest,
        size: u64,
        stream: S,
        file: File,
        path: &Path,
    ) -> Result<u64, P2pError>
    where
        S: Stream<Item = Result<Bytes, P2pError>> + Send,
    {
        let (chunks, mut queue) = tokio::sync::mpsc::channel::<Bytes>(16);
        let (algorithm, write_path) = (digest.algorithm(), path.to_path_buf());
        let writer = tokio::task::spawn_blocking(move || -> Result<(Digest, u64), P2pError> {
            let mut file = io::BufWriter::with_capacity(256 << 10, file);
            let mut hasher = StreamHasher::new(algorithm);
            let mut written = 0u64;
            while let Some(chunk) = queue.blocking_recv() {
                hasher.update(&chunk);
                file.write_all(&chunk)
                    .map_err(store_err("write", &write_path))?;
                written += chunk.len() as u64;
            }
            let file = file
                .into_inner()
                .map_err(|e| store_err("write", &write_path)(e.into_error()))?;
            file.sync_all().map_err(store_err("sync", &write_path))?;
            Ok((hasher.finish(), written))
        });
        let streamed = async {
            futures_util::pin_mut!(stream);
            let mut received = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                received += chunk.len() as u64;
                if received > size {
                    return Err(P2pError::Verification {
                        digest: digest.to_string(),
                        reason: format!("more than {size} bytes"),
                    });
                }
                if chunks.send(chunk).await.is_err() {
                    break; // The writer failed; its error is reported below.
                }
            }
            Ok(())
        }
        .await;
        drop(chunks);
        let written = writer
            .await
            .map_err(|e| P2pError::Internal(format!("blob writer failed: {e}")))?;
        streamed?;
        let (actual, written) = written?;
        if written != size || &actual != digest {
            return Err(P2pError::Verification {
                digest: digest.to_string(),
                reason: format!("{written} bytes hashing to {actual}, expected {size} bytes"),
            });
        }
        Ok(written)
    }

    /// Removes the complete blob `digest` from the cache (the image GC
    /// removed its layer); it is served no more.
    pub async fn remove(&self, digest: &Digest) -> Result<bool, P2pError> {
        lock(&self.seeded).remove(digest);
        let path = self.blob_path(digest);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(store_err("remove", &path)(e)),
        }
    }

    fn partial(&self, digest: &Digest) -> Option<Arc<PartialBlob>> {
        lock(&self.partials).get(digest).cloned()
    }

    fn partial_path(&self, digest: &Digest) -> PathBuf {
        let n = self.next_file.fetch_add(1, Ordering::Relaxed);
        self.root.join(PARTIAL_DIR).join(format!(
            "{}-{}.{n}",
            digest.algorithm().as_str(),
            digest.hex()
        ))
    }
}

impl PartialBlob {
    /// The manifest the pieces are checked against.
    pub fn manifest(&self) -> &PieceManifest {
        &self.manifest
    }

    /// The verified pieces held.
    pub fn held(&self) -> Bitmap {
        lock(&self.held).clone()
    }

    /// Whether piece `index` is held, verified.
    pub fn has(&self, index: u32) -> bool {
        lock(&self.held).has(index)
    }

    /// Rations this blob's pieces to peers from now on: the node is its
    /// IDC's seed, fetching it from the registry (see
    /// [`PieceStore::claim_upload`]).
    pub fn ration_uploads(&self) {
        let mut uploads = lock(&self.uploads);
        if uploads.is_none() {
            *uploads = Some(vec![0; self.manifest.piece_count() as usize]);
        }
    }

    async fn read(self: &Arc<Self>, offset: u64, len: u64) -> Result<Bytes, P2pError> {
        let this = self.clone();
        blocking(move || read_at(&this.file, &this.path, offset, len)).await
    }

    /// Hashes `bytes` (piece `index`, just written) into the whole-blob
    /// hash if it is next, and any held pieces after it.
    fn advance_hash(&self, index: u32, bytes: &[u8]) -> Result<(), P2pError> {
        let mut whole = lock(&self.whole);
        if whole.next == index {
            if let Some(hasher) = whole.hasher.as_mut() {
                hasher.update(bytes);
            }
            whole.next += 1;
        }
        self.hash_held_from(&mut whole)
    }

    fn hash_held_from(&self, whole: &mut WholeHash) -> Result<(), P2pError> {
        while self.has(whole.next) {
            let range = self.manifest.piece_range(whole.next)?;
            let piece = read_at(&self.file, &self.path, range.start, range.end - range.start)?;
            if let Some(hasher) = whole.hasher.as_mut() {
                hasher.update(&piece);
            }
            whole.next += 1;
        }
        Ok(())
    }
}

fn read_at(file: &File, path: &Path, offset: u64, len: u64) -> Result<Bytes, P2pError> {
    let mut buffer = vec![0u8; len as usize];
    file.read_exact_at(&mut buffer, offset)
        .map_err(store_err("read", path))?;
    Ok(Bytes::from(buffer))
}

fn publish(from: &Path, to: &Path) -> Result<(), P2pError> {
    if let Some(parent) = to.parent() {
        create_private_dir(parent)?;
    }
    fs::rename(from, to).map_err(store_err("move into the cache", to))?;
    if let Some(parent) = to.parent() {
        File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(store_err("sync", parent))?;
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<(), P2pError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(store_err("create", dir))
}

fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not remove a partial blob");
    }
}

#[cfg(test)]
mod tests {
    use wharf_oci::DigestAlgorithm;

    use super::*;

    fn blob(size: usize) -> (Vec<u8>, PieceManifest) {
        let bytes: Vec<u8> = (0..size).map(|i| (i * 7 % 253) as u8).collect();
        let digest = Digest::of(DigestAlgorithm::Sha256, &bytes);
        let manifest = PieceManifest::compute(&digest, size as u64, &bytes[..]).unwrap();
        (bytes, manifest)
    }

    fn piece(bytes: &[u8], manifest: &PieceManifest, index: u32) -> Bytes {
        let range = manifest.piece_range(index).unwrap();
        Bytes::copy_from_slice(&bytes[range.start as usize..range.end as usize])
    }

    #[tokio::test]
    async fn a_request_for_a_piece_on_its_way_is_held_until_it_lands() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(PieceStore::open(dir.path()).await.unwrap());
        let (bytes, manifest) = blob(9 << 20);
        let partial = store.begin(&manifest).await.unwrap().unwrap();
        let wait = std::time::Duration::from_secs(30);
        let started = std::time::Instant::now();
        let waiter = {
            let (store, digest) = (store.clone(), manifest.digest.clone());
            tokio::spawn(async move { store.wait_for_piece(&digest, 1, wait).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!waiter.is_finished(), "no piece yet: the request is held");
        // Another piece does not end the wait; piece 1 does.
        store
            .write_piece(&partial, 0, piece(&bytes, &manifest, 0))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!waiter.is_finished());
        store
            .write_piece(&partial, 1, piece(&bytes, &manifest, 1))
            .await
            .unwrap();
        waiter.await.unwrap();
        assert!(started.elapsed() < wait / 2);
        assert!(
            store
                .read_piece(&manifest.digest, 1)
                .await
                .unwrap()
                .is_some()
        );

        // Past the end, or a blob not being fetched: no wait at all.
        let started = std::time::Instant::now();
        store.wait_for_piece(&manifest.digest, 3, wait).await;
        let other = Digest::of(wharf_oci::DigestAlgorithm::Sha256, b"other");
        store.wait_for_piece(&other, 0, wait).await;
        // A blob given up wakes its waiters.
        let waiter = {
            let (store, digest) = (store.clone(), manifest.digest.clone());
            tokio::spawn(async move { store.wait_for_piece(&digest, 2, wait).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        store.abandon(&partial);
        waiter.await.unwrap();
        assert!(started.elapsed() < wait / 2);
    }

    #[tokio::test]
    async fn a_seed_sends_a_piece_again_only_once_every_held_piece_went_as_often() {
        let dir = tempfile::tempdir().unwrap();
        let store = PieceStore::open(dir.path()).await.unwrap();
        let (bytes, manifest) = blob(13 << 20);
        let digest = manifest.digest.clone();
        let partial = store.begin(&manifest).await.unwrap().unwrap();
        for index in [0, 1] {
            store
                .write_piece(&partial, index, piece(&bytes, &manifest, index))
                .await
                .unwrap();
        }
        // Not the seed: anything held goes, as often as asked.
        assert!(store.claim_upload(&digest, 0));
        assert!(store.claim_upload(&digest, 0));

        partial.ration_uploads();
        assert!(store.claim_upload(&digest, 0), "piece 0's first send");
        assert!(!store.claim_upload(&digest, 0), "piece 1 has not gone yet");
        assert!(!store.claim_upload(&digest, 0), "a refusal counts nothing");
        // A piece not held is not counted: the read answers "not yet".
        assert!(store.claim_upload(&digest, 3));
        assert!(store.claim_upload(&digest, 1));
        assert!(
            store.claim_upload(&digest, 0),
            "both went once: a second copy"
        );
        assert!(!store.claim_upload(&digest, 0));
        // A new piece goes first; the next copies wait for it.
        store
            .write_piece(&partial, 2, piece(&bytes, &manifest, 2))
            .await
            .unwrap();
        assert!(!store.claim_upload(&digest, 1), "piece 2 has not gone yet");
        assert!(store.claim_upload(&digest, 2));

        // Whole in the cache, its pieces are rationed until each went out
        // once (piece 3 had not), then no more.
        for index in 3..manifest.piece_count() {
            store
                .write_piece(&partial, index, piece(&bytes, &manifest, index))
                .await
                .unwrap();
        }
        store.finish(&partial).await.unwrap();
        assert!(store.complete(&digest).await.is_some());
        assert!(!store.claim_upload(&digest, 0));
        assert!(store.claim_upload(&digest, 3));
        for _ in 0..3 {
            assert!(store.claim_upload(&digest, 0), "every piece went once");
        }
    }

    #[tokio::test]
    async fn pieces_out_of_order_are_served_once_verified_and_the_blob_lands_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = PieceStore::open(dir.path()).await.unwrap();
        let (bytes, manifest) = blob(9 << 20);
        let partial = store.begin(&manifest).await.unwrap().unwrap();
        assert!(
            store.begin(&manifest).await.unwrap().is_none(),
            "one fetch per blob"
        );

        assert!(
            store
                .write_piece(&partial, 2, piece(&bytes, &manifest, 2))
                .await
                .unwrap()
        );
        let mut bad = piece(&bytes, &manifest, 0).to_vec();
        bad[3] ^= 1;
        assert!(!store.write_piece(&partial, 0, bad.into()).await.unwrap());
        assert_eq!(store.read_piece(&manifest.digest, 0).await.unwrap(), None);
        assert_eq!(
            store
                .read_piece(&manifest.digest, 2)
                .await
                .unwrap()
                .unwrap(),
            piece(&bytes, &manifest, 2)
        );
        assert!(store.complete(&manifest.digest).await.is_none());
        for index in [1, 0] {
            assert!(
                store
                    .write_piece(&partial, index, piece(&bytes, &manifest, index))
                    .await
                    .unwrap()
            );
        }
        let path = store.finish(&partial).await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        assert_eq!(store.held(&manifest.digest).await.unwrap().count(), 3);
        assert_eq!(
            store
                .read_piece(&manifest.digest, 1)
                .await
                .unwrap()
                .unwrap(),
            piece(&bytes, &manifest, 1)
        );
        assert!(
            store
                .read_piece(&manifest.digest, 3)
                .await
                .unwrap()
                .is_none()
        );
        assert!(store.remove(&manifest.digest).await.unwrap());
        assert!(store.held(&manifest.digest).await.is_none());
    }

    #[tokio::test]
    async fn an_incomplete_blob_never_enters_the_cache_and_a_restart_forgets_partials() {
        let dir = tempfile::tempdir().unwrap();
        let store = PieceStore::open(dir.path()).await.unwrap();
        let (bytes, manifest) = blob(5 << 20);
        let partial = store.begin(&manifest).await.unwrap().unwrap();
        assert!(
            store
                .write_piece(&partial, 0, piece(&bytes, &manifest, 0))
                .await
                .unwrap()
        );
        let err = store.finish(&partial).await.unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        assert!(store.complete(&manifest.digest).await.is_none());

        let partial = store.begin(&manifest).await.unwrap().unwrap();
        assert!(
            store
                .write_piece(&partial, 0, piece(&bytes, &manifest, 0))
                .await
                .unwrap()
        );
        drop(store);
        let reopened = PieceStore::open(dir.path()).await.unwrap();
        assert!(reopened.held(&manifest.digest).await.is_none());
        assert_eq!(
            std::fs::read_dir(dir.path().join(PARTIAL_DIR))
                .unwrap()
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn a_streamed_blob_is_kept_only_if_it_is_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = PieceStore::open(dir.path()).await.unwrap();
        let (bytes, manifest) = blob(100_000);
        let chunks = |b: Vec<u8>| {
            futures_util::stream::iter(
                b.chunks(7000)
                    .map(|c| Ok(Bytes::copy_from_slice(c)))
                    .collect::<Vec<_>>(),
            )
        };
        let mut wrong = bytes.clone();
        wrong[5] ^= 1;
        assert!(
            store
                .import_stream(&manifest.digest, manifest.size, chunks(wrong))
                .await
                .is_err()
        );
        assert!(store.complete(&manifest.digest).await.is_none());
        let (path, received) = store
            .import_stream(&manifest.digest, manifest.size, chunks(bytes.clone()))
            .await
            .unwrap();
        assert_eq!(received, 100_000);
        assert_eq!(std::fs::read(path).unwrap(), bytes);
        assert_eq!(
            std::fs::read_dir(dir.path().join(PARTIAL_DIR))
                .unwrap()
                .count(),
            0
        );
    }
}

//! Piece manifests, computed by the server from its own blob store: the
//! one trustworthy source of piece digests. A blob is read once per
//! digest however many nodes ask at once (single flight), and the result
//! is kept in a small cache bounded by count (least recently used out).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;
use wharf_blob::{BlobError, BlobStore};
use wharf_oci::Digest;
use wharf_p2p::{P2pError, PieceManifest};

/// Why there is no manifest for a blob.
#[derive(Clone, Debug, thiserror::Error)]
pub(crate) enum ManifestError {
    /// The blob store does not hold the blob.
    #[error("blob {0} is not in the blob store")]
    Missing(Digest),
    /// The stored content is not the blob its digest names, or its size.
    #[error("blob {digest} is corrupt in the blob store: {reason}")]
    Corrupt { digest: Digest, reason: String },
    /// Reading failed.
    #[error("reading blob {digest}: {reason}")]
    Read { digest: Digest, reason: String },
}

type Flight = Arc<OnceCell<Result<Arc<PieceManifest>, ManifestError>>>;

#[derive(Default)]
struct Entries {
    done: HashMap<Digest, (Arc<PieceManifest>, u64)>,
    in_flight: HashMap<Digest, Flight>,
    /// Ticks on every use: the entry with the lowest goes first.
    clock: u64,
}

/// The manifests of recently asked blobs.
pub(crate) struct ManifestCache {
    blobs: BlobStore,
    capacity: usize,
    entries: Mutex<Entries>,
}

impl ManifestCache {
    /// A cache over `blobs` keeping at most `capacity` manifests (a 1 GiB
    /// blob's manifest is 128 digests: about 10 KiB).
    pub(crate) fn new(blobs: BlobStore, capacity: usize) -> ManifestCache {
        ManifestCache {
            blobs,
            capacity: capacity.max(1),
            entries: Mutex::new(Entries::default()),
        }
    }

    /// The manifest of `digest`, whose registry size is `size`; `computed`
    /// tells whether this call read the blob.
    pub(crate) async fn get(
        &self,
        digest: &Digest,
        size: u64,
    ) -> Result<(Arc<PieceManifest>, bool), ManifestError> {
        let flight = {
            let mut entries = self.lock();
            entries.clock += 1;
            let tick = entries.clock;
            if let Some((manifest, used)) = entries.done.get_mut(digest) {
                *used = tick;
                return Ok((manifest.clone(), false));
            }
            entries.in_flight.entry(digest.clone()).or_default().clone()
        };
        let mut computed = false;
        let result = flight
            .get_or_init(|| {
                computed = true;
                self.compute(digest.clone(), size)
            })
            .await
            .clone();
        if computed {
            let mut entries = self.lock();
            entries.in_flight.remove(digest);
            if let Ok(manifest) = &result {
                self.insert(&mut entries, digest, manifest.clone());
            }
        }
        result.map(|manifest| (manifest, computed))
    }

    fn insert(&self, entries: &mut Entries, digest: &Digest, manifest: Arc<PieceManifest>) {
        if entries.done.len() >= self.capacity
            && let Some(oldest) = entries
                .done
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(d, _)| d.clone())
        {
            entries.done.remove(&oldest);
        }
        let tick = entries.clock;
        entries.done.insert(digest.clone(), (manifest, tick));
    }

    /// Reads the whole blob off the async workers, hashing every piece and
    /// the whole.
    async fn compute(
        &self,
        digest: Digest,
        size: u64,
    ) -> Result<Arc<PieceManifest>, ManifestError> {
        let blobs = self.blobs.clone();
        let read = digest.clone();
        let computed = tokio::task::spawn_blocking(move || {
            let file = blobs.open_blocking(&read)?;
            Ok::<_, BlobError>(PieceManifest::compute(
                &read,
                size,
                std::io::BufReader::with_capacity(1 << 20, file),
            ))
        })
        .await
        .map_err(|e| ManifestError::Read {
            digest: digest.clone(),
            reason: e.to_string(),
        })?;
        match computed {
            Ok(Ok(manifest)) => Ok(Arc::new(manifest)),
            Ok(Err(P2pError::InvalidManifest { reason, .. })) => {
                Err(ManifestError::Corrupt { digest, reason })
            }
            Ok(Err(other)) => Err(ManifestError::Read {
                digest,
                reason: other.to_string(),
            }),
            Err(BlobError::NotFound(_)) => Err(ManifestError::Missing(digest)),
            Err(other) => Err(ManifestError::Read {
                digest,
                reason: other.to_string(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use wharf_oci::DigestAlgorithm;

    use super::*;

    fn store_blob(blobs: &BlobStore, bytes: &[u8]) -> Digest {
        let digest = Digest::of(DigestAlgorithm::Sha256, bytes);
        let hex = digest.hex();
        let dir = blobs.root().join("blobs/sha256").join(&hex[..2]);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(hex), bytes).unwrap();
        digest
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blob_is_read_once_however_many_ask_and_the_cache_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).unwrap();
        let a = store_blob(&blobs, &vec![7u8; 5 << 20]);
        let b = store_blob(&blobs, b"b");
        let c = store_blob(&blobs, b"c");
        let cache = Arc::new(ManifestCache::new(blobs, 2));

        let asks: Vec<_> = (0..8)
            .map(|_| {
                let (cache, a) = (cache.clone(), a.clone());
                tokio::spawn(async move { cache.get(&a, 5 << 20).await.unwrap() })
            })
            .collect();
        let mut computed = 0;
        for ask in asks {
            let (manifest, fresh) = ask.await.unwrap();
            assert_eq!(manifest.piece_count(), 2);
            computed += usize::from(fresh);
        }
        assert_eq!(computed, 1, "one read for eight askers");

        cache.get(&b, 1).await.unwrap();
        // a was used before b: c pushes a out, and a is read again.
        cache.get(&c, 1).await.unwrap();
        assert!(!cache.get(&b, 1).await.unwrap().1, "b is still cached");
        assert!(cache.get(&a, 5 << 20).await.unwrap().1);
    }

    #[tokio::test]
    async fn a_corrupt_or_missing_blob_gets_an_error_not_a_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).unwrap();
        let digest = store_blob(&blobs, b"content");
        let hex = digest.hex();
        std::fs::write(
            blobs.root().join("blobs/sha256").join(&hex[..2]).join(hex),
            b"CONTENT",
        )
        .unwrap();
        let cache = ManifestCache::new(blobs, 4);
        let err = cache.get(&digest, 7).await.unwrap_err();
        assert!(matches!(err, ManifestError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("corrupt"), "{err}");
        let missing = Digest::of(DigestAlgorithm::Sha256, b"nowhere");
        let err = cache.get(&missing, 7).await.unwrap_err();
        assert!(matches!(err, ManifestError::Missing(_)), "{err}");
    }
}

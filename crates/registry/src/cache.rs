//! A bounded in-memory cache of manifest bytes. Manifests are immutable per
//! digest, so a hit can never be stale; the cache only saves a file read on
//! the hottest path (manifest GET).

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use wharf_oci::Digest;

pub(crate) struct ManifestCache {
    capacity: usize,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    bytes: usize,
    map: HashMap<Digest, Bytes>,
}

impl ManifestCache {
    pub(crate) fn new(capacity: usize) -> ManifestCache {
        ManifestCache {
            capacity,
            entries: Mutex::new(Entries::default()),
        }
    }

    pub(crate) fn get(&self, digest: &Digest) -> Option<Bytes> {
        self.entries
            .lock()
            .expect("cache lock")
            .map
            .get(digest)
            .cloned()
    }

    pub(crate) fn insert(&self, digest: Digest, bytes: Bytes) {
        if bytes.len() > self.capacity / 4 {
            return;
        }
        let mut entries = self.entries.lock().expect("cache lock");
        // Crude but bounded: when full, drop everything and refill from hits.
        if entries.bytes + bytes.len() > self.capacity {
            entries.map.clear();
            entries.bytes = 0;
        }
        entries.bytes += bytes.len();
        if let Some(old) = entries.map.insert(digest, bytes) {
            entries.bytes -= old.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_oci::DigestAlgorithm;

    #[test]
    fn stays_within_capacity() {
        let cache = ManifestCache::new(100);
        for i in 0..50u8 {
            let d = Digest::of(DigestAlgorithm::Sha256, &[i]);
            cache.insert(d.clone(), Bytes::from(vec![i; 10]));
            assert_eq!(cache.get(&d).unwrap().len(), 10);
            assert!(cache.entries.lock().unwrap().bytes <= 100);
        }
        let big = Digest::of(DigestAlgorithm::Sha256, b"big");
        cache.insert(big.clone(), Bytes::from(vec![0; 60]));
        assert!(cache.get(&big).is_none());
    }
}

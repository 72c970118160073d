//! Single flight: one holder per key at a time, so concurrent pulls of the
//! same blob or tag fetch it once; the others wait and then find it stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// Async locks by name, created on first use and dropped with their last
/// user, so the table holds only keys being fetched right now.
#[derive(Default)]
pub(crate) struct KeyedLocks {
    table: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds one key until dropped.
pub(crate) struct KeyGuard<'a> {
    locks: &'a KeyedLocks,
    key: String,
    entry: Arc<tokio::sync::Mutex<()>>,
    held: Option<OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    /// Waits until no one else holds `key`, then holds it.
    pub(crate) async fn lock(&self, key: String) -> KeyGuard<'_> {
        let entry = self
            .table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let held = entry.clone().lock_owned().await;
        KeyGuard {
            locks: self,
            key,
            entry,
            held: Some(held),
        }
    }

    /// Keys present in the table (held or waited for).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        self.held.take();
        let mut table = self.locks.table.lock().unwrap_or_else(|p| p.into_inner());
        // The table's reference and ours: nobody else waits for the key.
        // Others take their reference under the table's lock, as we count.
        if Arc::strong_count(&self.entry) == 2 {
            table.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_per_key_and_the_table_empties() {
        let locks = Arc::new(KeyedLocks::default());
        let first = locks.lock("a".into()).await;
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _second = locks.lock("a".into()).await;
            })
        };
        // Another key is independent.
        drop(locks.lock("b".into()).await);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the second holder waits");
        drop(first);
        waiter.await.unwrap();
        assert_eq!(locks.len(), 0);
    }
}

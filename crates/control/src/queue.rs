//! A work queue of object keys: each key is queued at most once, however
//! often it is added before a worker takes it.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use tokio::sync::Notify;

/// Keys waiting to be reconciled.
pub struct WorkQueue<K> {
    state: Mutex<(VecDeque<K>, HashSet<K>)>,
    ready: Notify,
}

impl<K: Clone + Eq + std::hash::Hash> WorkQueue<K> {
    /// An empty queue.
    pub fn new() -> WorkQueue<K> {
        WorkQueue {
            state: Mutex::new((VecDeque::new(), HashSet::new())),
            ready: Notify::new(),
        }
    }

    /// Queues `key` unless it is already waiting.
    pub fn add(&self, key: K) {
        let mut state = self.state.lock().expect("queue lock");
        if state.1.insert(key.clone()) {
            state.0.push_back(key);
            self.ready.notify_one();
        }
    }

    /// Takes up to `max` keys, waiting for at least one.
    pub async fn take(&self, max: usize) -> Vec<K> {
        loop {
            {
                let mut state = self.state.lock().expect("queue lock");
                if !state.0.is_empty() {
                    let n = max.min(state.0.len());
                    let keys: Vec<K> = state.0.drain(..n).collect();
                    for key in &keys {
                        state.1.remove(key);
                    }
                    return keys;
                }
            }
            self.ready.notified().await;
        }
    }

    /// Keys waiting.
    pub fn len(&self) -> usize {
        self.state.lock().expect("queue lock").0.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Clone + Eq + std::hash::Hash> Default for WorkQueue<K> {
    fn default() -> Self {
        WorkQueue::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deduplicates_and_preserves_order() {
        let queue = WorkQueue::new();
        for key in ["a", "b", "a", "c", "b"] {
            queue.add(key);
        }
        assert_eq!(queue.take(10).await, vec!["a", "b", "c"]);
        queue.add("a");
        assert_eq!(queue.take(1).await, vec!["a"]);
        assert!(queue.is_empty());
    }
}

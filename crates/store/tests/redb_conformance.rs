//! The conformance suite against `RedbStore`, plus what only the embedded backend promises.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tempfile::TempDir;
use wharf_store::{
    RedbStore, RedbStoreOptions, Revision, Store, StoreError, StoreExt, Txn, conformance,
};

fn open(path: &Path, options: RedbStoreOptions) -> RedbStore {
    RedbStore::open(path, options).expect("open store")
}

fn temp_store(options: RedbStoreOptions) -> (TempDir, RedbStore) {
    let dir = TempDir::new().expect("temp dir");
    let store = open(&dir.path().join("store.redb"), options);
    (dir, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let dir = TempDir::new().expect("temp dir");
    let mut opened = 0;
    conformance::run_all(|| {
        opened += 1;
        let path = dir.path().join(format!("{opened}.redb"));
        async move { open(&path, RedbStoreOptions::default()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_persistence() {
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join("store.redb");
    conformance::check_persistence(|| {
        let path = path.clone();
        async move { open(&path, RedbStoreOptions::default()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_compaction() {
    let (_dir, store) = temp_store(RedbStoreOptions {
        history_retention: 5,
        ..RedbStoreOptions::default()
    });
    conformance::check_compaction(&store, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_catches_up_from_history() {
    // A one-batch buffer makes the watcher lag almost at once, and more writes
    // than one history read takes make it catch up in several.
    let (_dir, store) = temp_store(RedbStoreOptions {
        watch_buffer: 1,
        ..RedbStoreOptions::default()
    });
    conformance::check_watch_slow_consumer(&store, 2500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_watch_over_compacted_history_fails() {
    let (_dir, store) = temp_store(RedbStoreOptions {
        history_retention: 5,
        watch_buffer: 1,
        ..RedbStoreOptions::default()
    });
    let start = store.current_revision().await.expect("rev");
    let mut stream = store.watch("", 0).await.expect("watch");
    for i in 0..30 {
        store.put(&format!("k/{i}"), Vec::new()).await.expect("put");
    }
    match stream.next().await {
        Some(Err(StoreError::Compacted { requested, oldest })) => {
            assert_eq!(requested, start + 1);
            assert_eq!(oldest, start + 30 - 5 + 1, "the last 5 revisions are kept");
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(
        stream.next().await.is_none(),
        "the stream ends after its error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_releases_the_file_at_once() {
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join("store.redb");
    let mut streams = Vec::new();
    for round in 1..=5u8 {
        let store = open(&path, RedbStoreOptions::default());
        let previous = store.get("k").await.expect("get").map(|kv| kv.value);
        assert_eq!(previous, (round > 1).then(|| vec![round - 1]));
        store.put("k", vec![round]).await.expect("put");
        // A watch outliving its store must neither keep the file open nor hang.
        streams.push(store.watch("", 0).await.expect("watch"));
    }
    for mut stream in streams {
        let end = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
        assert!(matches!(end, Ok(None)), "watch ends with its store");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_serves_many_concurrent_txns() {
    const TASKS: usize = 64;
    const TXNS_PER_TASK: usize = 2000 / TASKS + 1;
    let (_dir, store) = temp_store(RedbStoreOptions::default());
    let start = store.current_revision().await.expect("rev");

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let store = store.clone();
        tasks.spawn(async move {
            let mut revisions = Vec::with_capacity(TXNS_PER_TASK);
            for i in 0..TXNS_PER_TASK {
                let key = format!("bench/{task}/{i}");
                let txn = Txn::new().when_revision(&key, 0).put(&key, vec![0; 64]);
                let result = store.txn(txn).await.expect("txn");
                assert!(result.succeeded);
                revisions.push(result.revision);
            }
            revisions
        });
    }
    let mut revisions = Vec::new();
    while let Some(task) = tasks.join_next().await {
        revisions.extend(task.expect("task"));
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{} txns from {TASKS} tasks in {elapsed:?} ({:.0}/s)",
        revisions.len(),
        revisions.len() as f64 / elapsed.as_secs_f64()
    );

    let total = u64::try_from(TASKS * TXNS_PER_TASK).expect("count");
    let unique: BTreeSet<Revision> = revisions.iter().copied().collect();
    assert_eq!(
        unique.len(),
        revisions.len(),
        "every txn has its own revision"
    );
    assert_eq!(
        unique.into_iter().collect::<Vec<_>>(),
        (start + 1..=start + total).collect::<Vec<_>>(),
        "revisions are dense"
    );
    assert_eq!(store.current_revision().await.expect("rev"), start + total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_sees_earlier_txns_of_its_batch() {
    const TASKS: usize = 8;
    const INCREMENTS: usize = 25;
    let (_dir, store) = temp_store(RedbStoreOptions::default());
    store.put("counter", b"0".to_vec()).await.expect("put");

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        let store = store.clone();
        tasks.spawn(async move {
            for _ in 0..INCREMENTS {
                increment(&store, "counter").await;
            }
        });
    }
    while let Some(task) = tasks.join_next().await {
        task.expect("task");
    }
    let value = store
        .get("counter")
        .await
        .expect("get")
        .expect("counter")
        .value;
    assert_eq!(
        value,
        (TASKS * INCREMENTS).to_string().into_bytes(),
        "no lost update"
    );
}

async fn increment(store: &RedbStore, key: &str) {
    loop {
        let kv = store.get(key).await.expect("get").expect("key");
        let count: usize = String::from_utf8(kv.value)
            .expect("utf-8")
            .parse()
            .expect("number");
        let next = (count + 1).to_string().into_bytes();
        if store
            .put_if(key, next, kv.mod_revision)
            .await
            .expect("put_if")
            .is_some()
        {
            return;
        }
    }
}

#[tokio::test]
async fn rejects_bad_leases_and_keys() {
    let (_dir, store) = temp_store(RedbStoreOptions::default());
    let zero = store.grant_lease(Duration::ZERO).await;
    assert!(matches!(zero, Err(StoreError::Invalid(_))), "{zero:?}");
    let huge = store.grant_lease(Duration::MAX).await;
    assert!(matches!(huge, Err(StoreError::Invalid(_))), "{huge:?}");
    let long_key = "k".repeat(1 << 20);
    let put = store.put(&long_key, Vec::new()).await;
    assert!(matches!(put, Err(StoreError::Invalid(_))), "{put:?}");
}

#[test]
fn open_reports_unusable_paths() {
    let dir = TempDir::new().expect("temp dir");
    let missing: PathBuf = dir.path().join("no/such/dir/store.redb");
    let error = RedbStore::open(&missing, RedbStoreOptions::default()).err();
    let message = error.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("no/such/dir"),
        "error names the path: {message}"
    );
}

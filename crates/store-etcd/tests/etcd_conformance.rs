//! The conformance suite against `EtcdStore` on a private etcd server, plus
//! what only the etcd backend has to show: watches that survive etcd being
//! killed and restarted, compare-and-swap races, namespaces, etcd's request
//! limits and cancellation of dropped watches.
//!
//! Each test starts its own etcd (see `common`), so tests that compact or
//! restart it do not disturb the others.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Etcd, test_options};
use futures_util::StreamExt;
use wharf_store::{
    EventKind, ListOptions, Revision, Store, StoreError, StoreExt, Txn, WatchEvent, WatchStream,
    conformance,
};
use wharf_store_etcd::{EtcdStore, EtcdStoreOptions};

/// Skips the test (or fails it under `CI=true`) when etcd is not installed.
macro_rules! start_etcd {
    () => {
        match Etcd::start().await {
            Some(etcd) => etcd,
            None => return,
        }
    };
}

const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

async fn next_event(stream: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(EVENT_TIMEOUT, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(error))) => panic!("watch failed: {error}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within {EVENT_TIMEOUT:?}"),
    }
}

/// Asserts that `stream` delivers nothing more for a while.
async fn assert_quiet(stream: &mut WatchStream, what: &str) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(500), stream.next()).await {
        panic!("{what}: unexpected {item:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let etcd = start_etcd!();
    let endpoint = etcd.endpoint();
    let mut checks = 0;
    conformance::run_all(|| {
        checks += 1;
        // A fresh namespace per check gives it an empty store.
        let options = test_options(&format!("/conformance/{checks}/"), Default::default());
        let endpoints = [endpoint.clone()];
        async move {
            EtcdStore::connect(&endpoints, options)
                .await
                .expect("connect")
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_persistence_across_reconnects() {
    let etcd = start_etcd!();
    let endpoints = [etcd.endpoint()];
    conformance::check_persistence(|| {
        let options = test_options("/persistence/", Default::default());
        let endpoints = endpoints.clone();
        async move {
            EtcdStore::connect(&endpoints, options)
                .await
                .expect("connect")
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_persistence_across_etcd_restarts() {
    let etcd = start_etcd!();
    let etcd = &etcd;
    let mut opened = 0;
    conformance::check_persistence(|| {
        opened += 1;
        let restart = opened > 1;
        async move {
            if restart {
                etcd.restart().await;
            }
            etcd.store("/persistence/").await
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_compaction() {
    const WRITES: u64 = 20;
    let etcd = start_etcd!();
    let store = etcd.store("/compaction/").await;
    let start = store.current_revision().await.expect("rev");
    // etcd compacts only when told to: once the check's writes are in, keep
    // the last 5 revisions, as a retention window would.
    let compactor = tokio::spawn({
        let store = store.clone();
        async move {
            loop {
                let current = store.current_revision().await.expect("rev");
                if current >= start + WRITES {
                    store.compact(current - 5).await.expect("compact");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    conformance::check_compaction(&store, WRITES).await;
    compactor.await.expect("compactor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_catches_up_from_history() {
    // A one-event buffer makes the watcher lag at once: the pump then cancels
    // the etcd watch and re-creates it from etcd's history, many times over.
    let etcd = start_etcd!();
    let options = EtcdStoreOptions {
        watch_buffer: 1,
        ..EtcdStoreOptions::default()
    };
    let store = etcd.store_with("/slow/", options).await;
    conformance::check_watch_slow_consumer(&store, 2500).await;
}

/// A watch nobody reads must not hold the HTTP/2 flow-control window that
/// every request on the store's one connection shares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_watch_does_not_stall_other_requests() {
    const WRITES: usize = 400;
    const VALUE: usize = 100 * 1024;
    let etcd = start_etcd!();
    let options = EtcdStoreOptions {
        watch_buffer: 16,
        ..EtcdStoreOptions::default()
    };
    let store = etcd.store_with("/stall/", options).await;
    // Each stalled etcd watch would hold up to a 2 MiB stream window; with
    // three of them and 40 MiB of events, hyper's 5 MiB connection window
    // runs out and every request on the connection would hang.
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(store.watch("", 0).await.expect("watch"));
    }
    let writes = async {
        let mut revisions = Vec::new();
        for i in 0..WRITES {
            let key = format!("k/{i}");
            revisions.push(store.put(&key, vec![1; VALUE]).await.expect("put"));
        }
        revisions
    };
    let revisions = tokio::time::timeout(Duration::from_secs(60), writes)
        .await
        .expect("writes stalled behind an unread watch");
    for stream in &mut streams {
        for &expected in &revisions {
            let event = next_event(stream).await;
            assert_eq!(
                (event.kv.mod_revision, event.kv.value.len()),
                (expected, VALUE)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_watch_over_compacted_history_fails() {
    let etcd = start_etcd!();
    let options = EtcdStoreOptions {
        watch_buffer: 1,
        ..EtcdStoreOptions::default()
    };
    let store = etcd.store_with("/lagging/", options).await;
    let start = store.current_revision().await.expect("rev");
    // A live watch gets one etcd response per commit, so the pump lags (and
    // cancels the etcd watch) at the second event, before the compaction.
    let mut stream = store.watch("", 0).await.expect("watch");
    for i in 0..30 {
        store.put(&format!("k/{i}"), Vec::new()).await.expect("put");
    }
    store.compact(start + 25).await.expect("compact");

    let mut next = start + 1;
    loop {
        match tokio::time::timeout(EVENT_TIMEOUT, stream.next()).await {
            Ok(Some(Ok(event))) => {
                assert_eq!(event.kv.mod_revision, next, "events in order, without gap");
                next += 1;
            }
            Ok(Some(Err(StoreError::Compacted { requested, oldest }))) => {
                assert_eq!(
                    requested, next,
                    "asks for the revision after the last delivered"
                );
                assert_eq!(
                    oldest,
                    start + 26,
                    "history after the compaction revision is kept"
                );
                break;
            }
            other => panic!("expected events then Compacted, got {other:?}"),
        }
    }
    assert!(
        next <= start + 26,
        "no event was delivered from compacted history"
    );
    let end = tokio::time::timeout(EVENT_TIMEOUT, stream.next()).await;
    assert!(
        matches!(end, Ok(None)),
        "the stream ends after its error: {end:?}"
    );
}

/// The etcd-specific meaning of "watch resume": etcd dies under a live
/// watch, comes back on the same data, and the stream goes on with exactly
/// the events it missed, without gap or duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_survives_etcd_being_killed_and_restarted() {
    let etcd = start_etcd!();
    let store = etcd.store("/resume/").await;
    let mut stream = store.watch("w/", 0).await.expect("watch");
    let mut expected = Vec::new();
    for i in 0..5u8 {
        let revision = store.put(&format!("w/{i}"), vec![i]).await.expect("put");
        expected.push(revision);
    }
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(next_event(&mut stream).await.kv.mod_revision);
    }

    etcd.kill();
    // Let the watch notice and start retrying against a dead endpoint.
    tokio::time::sleep(Duration::from_millis(500)).await;
    etcd.restart().await;
    wait_until_answering(&store).await;

    // Written before the watch is re-created: these come from etcd's history.
    let deleted = store.delete("w/0").await.expect("delete");
    expected.push(deleted);
    let multi = Txn::new()
        .put("w/a", b"a".to_vec())
        .put("w/b", b"b".to_vec())
        .put("other/x", Vec::new());
    let multi = store.txn(multi).await.expect("txn").revision;
    expected.extend([multi, multi]);
    for i in 5..10u8 {
        let revision = store.put(&format!("w/{i}"), vec![i]).await.expect("put");
        expected.push(revision);
    }

    let mut kinds = Vec::new();
    while seen.len() < expected.len() {
        let event = next_event(&mut stream).await;
        kinds.push((event.kind, event.kv.key.clone()));
        seen.push(event.kv.mod_revision);
    }
    assert_eq!(seen, expected, "every missed event exactly once, in order");
    assert_eq!(kinds[0], (EventKind::Delete, "w/0".into()));
    assert_eq!(
        &kinds[1..3],
        [
            (EventKind::Put, "w/a".into()),
            (EventKind::Put, "w/b".into())
        ]
    );
    assert_quiet(&mut stream, "after the missed events").await;

    // And it is live again.
    let live = store.put("w/live", Vec::new()).await.expect("put");
    assert_eq!(next_event(&mut stream).await.kv.mod_revision, live);
}

/// Reads until the store's channel has reconnected to a restarted etcd.
async fn wait_until_answering(store: &EtcdStore) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(error) = store.current_revision().await {
        assert!(
            Instant::now() < deadline,
            "store did not reconnect: {error}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_races_have_one_winner_per_revision() {
    const CONTENDERS: usize = 16;
    const ROUNDS: usize = 20;
    let etcd = start_etcd!();
    let store = Arc::new(etcd.store("/race/").await);
    store.put("k", b"start".to_vec()).await.expect("put");

    for round in 0..ROUNDS {
        let seen = store.get("k").await.expect("get").expect("k");
        let mut tasks = tokio::task::JoinSet::new();
        for contender in 0..CONTENDERS {
            let store = Arc::clone(&store);
            let value = format!("{round}/{contender}").into_bytes();
            tasks.spawn(async move {
                let won = store
                    .put_if("k", value.clone(), seen.mod_revision)
                    .await
                    .expect("put_if");
                won.map(|revision| (revision, value))
            });
        }
        let winners: Vec<_> = tasks.join_all().await.into_iter().flatten().collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: one winner, got {winners:?}"
        );
        let (revision, value) = &winners[0];
        assert_eq!(
            *revision,
            seen.mod_revision + 1,
            "the only write of its revision"
        );
        let now = store.get("k").await.expect("get").expect("k");
        assert_eq!((&now.value, now.mod_revision), (value, *revision));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_lose_no_update() {
    const TASKS: usize = 16;
    const INCREMENTS: usize = 20;
    let etcd = start_etcd!();
    let store = etcd.store("/counter/").await;
    let start = store.put("counter", b"0".to_vec()).await.expect("put");

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        // Clones share one channel; requests from all tasks pipeline over it.
        let store = store.clone();
        tasks.spawn(async move {
            let mut commits = Vec::new();
            while commits.len() < INCREMENTS {
                let kv = store.get("counter").await.expect("get").expect("counter");
                let count: usize = String::from_utf8(kv.value)
                    .expect("utf-8")
                    .parse()
                    .expect("number");
                let next = (count + 1).to_string().into_bytes();
                if let Some(revision) = store
                    .put_if("counter", next, kv.mod_revision)
                    .await
                    .expect("put_if")
                {
                    commits.push(revision);
                }
            }
            commits
        });
    }
    let commits: Vec<Revision> = tasks.join_all().await.into_iter().flatten().collect();
    let total = TASKS * INCREMENTS;
    let value = store.get("counter").await.expect("get").expect("counter");
    assert_eq!(
        value.value,
        total.to_string().into_bytes(),
        "no lost update"
    );
    let unique: BTreeSet<Revision> = commits.into_iter().collect();
    let dense: BTreeSet<Revision> = (start + 1..=start + total as u64).collect();
    assert_eq!(
        unique, dense,
        "one successful CAS per revision, none failed silently"
    );
}

/// Many tasks doing compare-and-swap transactions at once share one
/// connection without queueing behind each other; prints the rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_txns_pipeline_over_one_connection() {
    const TASKS: usize = 64;
    const TXNS_PER_TASK: usize = 2000 / TASKS + 1;
    let etcd = start_etcd!();
    let store = etcd.store("/pipeline/").await;
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
    let revisions: Vec<Revision> = tasks.join_all().await.into_iter().flatten().collect();
    let elapsed = started.elapsed();
    eprintln!(
        "{} txns from {TASKS} tasks in {elapsed:?} ({:.0}/s)",
        revisions.len(),
        revisions.len() as f64 / elapsed.as_secs_f64()
    );
    let total = (TASKS * TXNS_PER_TASK) as u64;
    let unique: BTreeSet<Revision> = revisions.into_iter().collect();
    assert_eq!(
        unique,
        (start + 1..=start + total).collect::<BTreeSet<_>>(),
        "every txn has its own revision, densely"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_watch_cancels_it_in_etcd() {
    const WATCHERS: &str = "etcd_debugging_mvcc_watcher_total";
    let etcd = start_etcd!();
    let store = etcd.store("/drop/").await;
    let before = etcd.metric(WATCHERS).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(store.watch("w/", 0).await.expect("watch"));
    }
    assert_eq!(etcd.metric(WATCHERS).await, before + 3.0);
    drop(streams);

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = etcd.metric(WATCHERS).await;
        if now == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{now} etcd watchers left, expected {before}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_etcd_limits_are_invalid() {
    let etcd = start_etcd!();
    let store = etcd.store("/limits/").await;
    let before = store.current_revision().await.expect("rev");

    let mut full = Txn::new();
    for i in 0..128 {
        full = full
            .when_revision(format!("k/{i}"), 0)
            .put(format!("k/{i}"), vec![1]);
    }
    let too_many_ops = full.clone().put("k/128", Vec::new());
    let too_many_compares = full.clone().when_exists("k/0");
    for (what, txn) in [
        ("129 ops", too_many_ops),
        ("129 compares", too_many_compares),
    ] {
        match store.txn(txn).await {
            Err(StoreError::Invalid(message)) => assert!(message.contains("128"), "{message}"),
            other => panic!("{what}: expected Invalid, got {other:?}"),
        }
    }
    let huge = store.put("k/huge", vec![0; 2 << 20]).await;
    assert!(matches!(huge, Err(StoreError::Invalid(_))), "{huge:?}");
    assert_eq!(
        store.current_revision().await.expect("rev"),
        before,
        "nothing sent"
    );

    // The limits are etcd's own defaults: the largest allowed txn goes through.
    let result = store.txn(full).await.expect("txn of 128 compares and ops");
    assert!(result.succeeded);
    assert_eq!(result.revision, before + 1);
    let big = store
        .put("k/big", vec![0; 1 << 20])
        .await
        .expect("1 MiB value");
    assert_eq!(big, before + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_isolate_stores_sharing_an_etcd() {
    let etcd = start_etcd!();
    let a = etcd.store("/a").await;
    let b = etcd.store("/b").await;
    let raw = etcd.store("").await;

    let mut watch_a = a.watch("", 0).await.expect("watch");
    b.put("/k", b"b".to_vec()).await.expect("put");
    let written = a.put("/k", b"a".to_vec()).await.expect("put");
    let event = next_event(&mut watch_a).await;
    assert_eq!(
        (event.kv.key.as_str(), event.kv.mod_revision),
        ("/k", written)
    );

    let listed = a.list("", ListOptions::default()).await.expect("list");
    let keys: Vec<_> = listed.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/k"]);
    assert_eq!(a.get("/k").await.expect("get").expect("/k").value, b"a");
    assert_eq!(b.get("/k").await.expect("get").expect("/k").value, b"b");

    let everything = raw.list("", ListOptions::default()).await.expect("list");
    let keys: Vec<_> = everything.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        keys,
        ["/a/k", "/b/k"],
        "the namespace is a verbatim key prefix"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_past_the_prefix_end() {
    let etcd = start_etcd!();
    let store = etcd.store("/list/").await;
    for key in ["a/1", "a/2", "b/1"] {
        store.put(key, Vec::new()).await.expect("put");
    }
    let revision = store.current_revision().await.expect("rev");
    let page = |start_after: &str, limit| ListOptions {
        start_after: Some(start_after.to_owned()),
        limit,
    };
    let beyond = store.list("a/", page("b", Some(5))).await.expect("list");
    assert!(beyond.items.is_empty() && !beyond.more);
    assert_eq!(beyond.revision, revision);
    let none = store
        .list(
            "a/",
            ListOptions {
                start_after: None,
                limit: Some(0),
            },
        )
        .await
        .expect("list");
    assert!(
        none.items.is_empty() && none.more,
        "a zero limit still tells whether keys exist"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_follow_etcd_rules() {
    let etcd = start_etcd!();
    let store = etcd.store("/leases/").await;
    // Sub-second TTLs round up to etcd's whole seconds (and its minimum).
    let lease = store
        .grant_lease(Duration::from_millis(1))
        .await
        .expect("grant");
    store.keep_alive(lease).await.expect("keep-alive");
    let unknown = lease ^ 0x5555;
    assert!(matches!(
        store.keep_alive(unknown).await,
        Err(StoreError::LeaseNotFound(id)) if id == unknown
    ));
    assert!(matches!(
        store.keep_alive(u64::MAX).await,
        Err(StoreError::LeaseNotFound(u64::MAX))
    ));
    for bad in [Duration::ZERO, Duration::MAX] {
        let granted = store.grant_lease(bad).await;
        assert!(
            matches!(granted, Err(StoreError::Invalid(_))),
            "{granted:?}"
        );
    }

    // With several leases in one txn, the dead one is named.
    let alive = store
        .grant_lease(Duration::from_secs(60))
        .await
        .expect("grant");
    let dead = store
        .grant_lease(Duration::from_secs(60))
        .await
        .expect("grant");
    store.revoke_lease(dead).await.expect("revoke");
    let txn = Txn::new()
        .put_with_lease("x", Vec::new(), alive)
        .put_with_lease("y", Vec::new(), dead);
    assert!(matches!(
        store.txn(txn).await,
        Err(StoreError::LeaseNotFound(id)) if id == dead
    ));
}

#[tokio::test]
async fn connect_fails_clearly_when_etcd_is_unreachable() {
    // A port nobody listens on: bind it, note it, free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let result = EtcdStore::connect(
        std::slice::from_ref(&endpoint),
        test_options("", Default::default()),
    )
    .await;
    match result {
        Err(StoreError::Backend(message)) => {
            assert!(message.contains(&endpoint), "names the endpoint: {message}")
        }
        other => panic!("expected Backend, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "fails within the timeouts"
    );
}

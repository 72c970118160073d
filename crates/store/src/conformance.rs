//! The behaviour every [`Store`] backend must show, as runnable checks.
//!
//! Each check drives a store through the public API and panics, saying what
//! broke, when the backend strays from the model in the crate docs. Checks
//! assume nobody else writes to the store meanwhile, and that the keys they
//! use (each check has its own prefix) start absent: [`run_all`] gives each
//! check a fresh store. A few checks need a backend-specific setup and are
//! run separately: [`check_compaction`] and [`check_persistence`].
//!
//! Timing is kept loose for loaded CI machines: events are awaited for up to
//! ten seconds and leases live one to two seconds.
//!
//! ```no_run
//! # async fn demo() {
//! use wharf_store::{conformance, RedbStore, RedbStoreOptions};
//! let dir = std::env::temp_dir().join("wharf-store-conformance");
//! let mut next = 0;
//! conformance::run_all(|| {
//!     next += 1;
//!     let path = dir.join(format!("{next}.redb"));
//!     async move { RedbStore::open(&path, RedbStoreOptions::default()).expect("open store") }
//! })
//! .await;
//! # }
//! ```

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::{StreamExt, TryStreamExt};

use crate::{
    EventKind, KeyValue, ListOptions, ListPage, Revision, Store, StoreError, StoreExt, Txn,
    WatchEvent, WatchStream,
};

/// How long any check waits for an event it expects.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A check of the generic suite.
type Check = for<'a> fn(&'a dyn Store) -> BoxFuture<'a, ()>;

/// The checks [`run_all`] runs, by name.
const CHECKS: &[(&str, Check)] = &[
    ("get, put and list", |s| Box::pin(check_get_put_list(s))),
    ("compare-and-swap", |s| Box::pin(check_compare_and_swap(s))),
    ("txn atomicity", |s| Box::pin(check_txn_atomicity(s))),
    ("revisions", |s| Box::pin(check_revisions(s))),
    ("invalid requests", |s| Box::pin(check_invalid_requests(s))),
    ("watch replay", |s| Box::pin(check_watch_replay(s))),
    ("watch from now", |s| Box::pin(check_watch_from_now(s))),
    ("watch resume", |s| Box::pin(check_watch_resume(s))),
    ("watch prefix", |s| Box::pin(check_watch_prefix(s))),
    ("watch txn order", |s| Box::pin(check_watch_txn_order(s))),
    ("watch slow consumer", |s| {
        Box::pin(check_watch_slow_consumer(s, 300))
    }),
    ("lease expiry", |s| Box::pin(check_lease_expiry(s))),
    ("lease keep-alive", |s| Box::pin(check_lease_keep_alive(s))),
    ("lease revoke", |s| Box::pin(check_lease_revoke(s))),
    ("lease binding", |s| Box::pin(check_lease_binding(s))),
];

/// Runs every generic check, each on a fresh, empty store from `open_fresh`.
pub async fn run_all<S, F, Fut>(mut open_fresh: F)
where
    S: Store,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    for (name, check) in CHECKS {
        tracing::info!(check = name, "store conformance");
        let store = open_fresh().await;
        check(&store).await;
    }
}

/// Reads, unconditional writes, and listing order, paging and prefix boundaries.
pub async fn check_get_put_list(store: &dyn Store) {
    assert_eq!(store.get("a/1").await.expect("get"), None);
    store.put("a/2", b"two".to_vec()).await.expect("put");
    let created = store.put("a/1", b"one".to_vec()).await.expect("put");
    // Neighbours of the prefix "a/" that must never be listed under it.
    store.put("ab", b"ab".to_vec()).await.expect("put");
    store.put("a", b"a".to_vec()).await.expect("put");
    store.put("a/3", b"three".to_vec()).await.expect("put");

    let updated = store.put("a/1", b"uno".to_vec()).await.expect("put");
    assert_eq!(
        store.get("a/1").await.expect("get"),
        Some(KeyValue {
            key: "a/1".into(),
            value: b"uno".to_vec(),
            create_revision: created,
            mod_revision: updated,
            lease: None,
        }),
        "an update keeps the create revision and moves the mod revision"
    );

    let all = store
        .list("a/", ListOptions::default())
        .await
        .expect("list");
    assert_eq!(keys(&all), ["a/1", "a/2", "a/3"], "prefix listing");
    assert!(!all.more);
    assert_eq!(all.revision, store.current_revision().await.expect("rev"));
    let everything = store.list("", ListOptions::default()).await.expect("list");
    assert_eq!(keys(&everything), ["a", "a/1", "a/2", "a/3", "ab"]);

    let first = list_page(store, "a/", None, 2).await;
    assert_eq!((keys(&first), first.more), (vec!["a/1", "a/2"], true));
    let second = list_page(store, "a/", Some("a/2"), 2).await;
    assert_eq!((keys(&second), second.more), (vec!["a/3"], false));
    let exact = list_page(store, "a/", None, 3).await;
    assert_eq!(
        (exact.items.len(), exact.more),
        (3, false),
        "limit equal to the count"
    );
    let past_end = list_page(store, "a/", Some("a/3"), 2).await;
    assert_eq!((past_end.items.len(), past_end.more), (0, false));
    let before_prefix = list_page(store, "a/", Some("0"), 10).await;
    assert_eq!(
        keys(&before_prefix),
        ["a/1", "a/2", "a/3"],
        "start_after below the prefix"
    );
    let all_paged = store.list_all("a/", 1).await.expect("list_all");
    assert_eq!(all_paged, all.items, "paging one by one sees the same keys");
    assert!(
        store
            .list("zz/", ListOptions::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );

    let deleted = store.delete("a/2").await.expect("delete");
    assert!(deleted > updated);
    assert_eq!(store.get("a/2").await.expect("get"), None);
    let relisted = store
        .list("a/", ListOptions::default())
        .await
        .expect("list");
    assert_eq!(keys(&relisted), ["a/1", "a/3"]);
    let recreated = store.put("a/2", b"again".to_vec()).await.expect("put");
    let kv = store.get("a/2").await.expect("get").expect("recreated");
    assert_eq!(
        (kv.create_revision, kv.mod_revision),
        (recreated, recreated),
        "a recreated key starts a new life"
    );
}

/// Conditional writes: stale or wrong expectations fail and change nothing.
pub async fn check_compare_and_swap(store: &dyn Store) {
    let first = store.create("c/k", b"v1".to_vec()).await.expect("create");
    let first = first.expect("create of an absent key succeeds");
    assert_eq!(
        store.create("c/k", b"v2".to_vec()).await.expect("create"),
        None
    );
    assert_value(store, "c/k", b"v1", first).await;

    let second = store
        .put_if("c/k", b"v2".to_vec(), first)
        .await
        .expect("put_if");
    let second = second.expect("put_if with the current revision succeeds");
    let before = store.current_revision().await.expect("rev");
    assert_eq!(
        store
            .put_if("c/k", b"v3".to_vec(), first)
            .await
            .expect("put_if"),
        None
    );
    assert_value(store, "c/k", b"v2", second).await;
    assert_eq!(
        store
            .put_if("c/absent", b"x".to_vec(), second)
            .await
            .expect("put_if"),
        None,
        "a non-zero expectation fails on an absent key"
    );
    assert_eq!(store.get("c/absent").await.expect("get"), None);

    assert!(!store.delete_if("c/k", first).await.expect("delete_if"));
    assert_value(store, "c/k", b"v2", second).await;
    assert_eq!(
        store.current_revision().await.expect("rev"),
        before,
        "failed CAS wrote"
    );

    let exists_absent = Txn::new().when_exists("c/absent").put("c/x", b"x".to_vec());
    assert!(!store.txn(exists_absent).await.expect("txn").succeeded);
    assert_eq!(store.get("c/x").await.expect("get"), None);
    let exists = Txn::new().when_exists("c/k").put("c/x", b"x".to_vec());
    assert!(store.txn(exists).await.expect("txn").succeeded);

    assert!(store.delete_if("c/k", second).await.expect("delete_if"));
    assert_eq!(store.get("c/k").await.expect("get"), None);
    assert!(!store.delete_if("c/k", second).await.expect("delete_if"));
    let again = store.create("c/k", b"v4".to_vec()).await.expect("create");
    assert!(again.is_some(), "create after delete succeeds");
}

/// A multi-key transaction applies all its ops under one revision, or none.
pub async fn check_txn_atomicity(store: &dyn Store) {
    let a = store.put("t/a", b"a".to_vec()).await.expect("put");
    let b = store.put("t/b", b"b".to_vec()).await.expect("put");
    let before = store.current_revision().await.expect("rev");

    let stale = Txn::new()
        .when_revision("t/a", a)
        .when_revision("t/b", a)
        .put("t/a", b"new".to_vec())
        .put("t/c", b"new".to_vec())
        .delete("t/b");
    let result = store.txn(stale).await.expect("txn");
    assert!(!result.succeeded, "one failing guard fails the txn");
    assert_eq!(
        result.revision, before,
        "a failed txn reports the current revision"
    );
    assert_eq!(store.current_revision().await.expect("rev"), before);
    assert_value(store, "t/a", b"a", a).await;
    assert_value(store, "t/b", b"b", b).await;
    assert_eq!(
        store.get("t/c").await.expect("get"),
        None,
        "no op of a failed txn applies"
    );

    let fresh = Txn::new()
        .when_revision("t/a", a)
        .when_revision("t/b", b)
        .when_revision("t/c", 0)
        .put("t/a", b"new".to_vec())
        .put("t/c", b"new".to_vec())
        .delete("t/b");
    let result = store.txn(fresh).await.expect("txn");
    assert!(result.succeeded);
    assert_eq!(result.revision, before + 1, "one txn, one revision");
    assert_value(store, "t/a", b"new", result.revision).await;
    let c = store.get("t/c").await.expect("get").expect("t/c written");
    assert_eq!(
        (c.create_revision, c.mod_revision),
        (result.revision, result.revision)
    );
    assert_eq!(store.get("t/b").await.expect("get"), None);
    assert_eq!(
        store.current_revision().await.expect("rev"),
        result.revision
    );
}

/// The revision moves by exactly one per changing commit, and not otherwise.
pub async fn check_revisions(store: &dyn Store) {
    let start = store.current_revision().await.expect("rev");
    let first = store.put("r/a", b"1".to_vec()).await.expect("put");
    assert_eq!(first, start + 1);
    let second = store.put("r/b", b"2".to_vec()).await.expect("put");
    let third = store.put("r/a", b"3".to_vec()).await.expect("put");
    assert_eq!(
        (second, third),
        (first + 1, first + 2),
        "revisions are dense"
    );

    let unchanged = [
        ("deleting an absent key", Txn::new().delete("r/absent")),
        ("a txn without ops", Txn::new().when_revision("r/a", third)),
        ("an empty txn", Txn::new()),
    ];
    for (what, txn) in unchanged {
        let result = store.txn(txn).await.expect("txn");
        assert!(result.succeeded, "{what} succeeds");
        assert_eq!(
            result.revision, third,
            "{what} reports the current revision"
        );
        assert_eq!(
            store.current_revision().await.expect("rev"),
            third,
            "{what} changes nothing, so keeps the revision"
        );
    }
    let kv = store.get("r/a").await.expect("get").expect("r/a");
    assert_eq!((kv.create_revision, kv.mod_revision), (first, third));
}

/// Empty keys and transactions writing a key twice are refused.
pub async fn check_invalid_requests(store: &dyn Store) {
    let before = store.current_revision().await.expect("rev");
    assert_invalid(store.get("").await, "get of an empty key");
    assert_invalid(store.put("", b"x".to_vec()).await, "put of an empty key");
    assert_invalid(
        store
            .txn(Txn::new().when_exists("").put("i/k", b"x".to_vec()))
            .await,
        "compare on an empty key",
    );
    let twice = Txn::new().put("i/k", b"x".to_vec()).delete("i/k");
    assert_invalid(store.txn(twice).await, "a txn writing one key twice");
    assert_eq!(store.get("i/k").await.expect("get"), None);
    assert_eq!(store.current_revision().await.expect("rev"), before);
}

/// A watch from a past revision replays exactly the history since, then goes on live.
pub async fn check_watch_replay(store: &dyn Store) {
    let a1 = store.put("w/a", b"1".to_vec()).await.expect("put");
    let b2 = store.put("w/b", b"2".to_vec()).await.expect("put");
    let a3 = store.put("w/a", b"3".to_vec()).await.expect("put");
    let b4 = store.delete("w/b").await.expect("delete");

    let mut stream = store.watch("w/", b2).await.expect("watch");
    assert_eq!(
        next_event(&mut stream).await,
        put_event("w/b", b"2", b2, b2)
    );
    assert_eq!(
        next_event(&mut stream).await,
        put_event("w/a", b"3", a1, a3)
    );
    assert_eq!(next_event(&mut stream).await, delete_event("w/b", b4));

    let c5 = store.put("w/c", b"5".to_vec()).await.expect("put");
    assert_eq!(
        next_event(&mut stream).await,
        put_event("w/c", b"5", c5, c5)
    );
}

/// A watch from revision 0 sees only what happens after it started.
pub async fn check_watch_from_now(store: &dyn Store) {
    store.put("w/old", b"old".to_vec()).await.expect("put");
    let mut stream = store.watch("w/", 0).await.expect("watch");
    let new = store.put("w/new", b"new".to_vec()).await.expect("put");
    assert_eq!(
        next_event(&mut stream).await,
        put_event("w/new", b"new", new, new)
    );
}

/// Dropping a watch and watching again from the revision after the last event
/// seen delivers the rest, without gap or duplicate.
pub async fn check_watch_resume(store: &dyn Store) {
    let mut expected = Vec::new();
    for i in 0..10 {
        let key = format!("w/{i}");
        let revision = store.put(&key, vec![i]).await.expect("put");
        expected.push(put_event(&key, &[i], revision, revision));
    }

    let first = expected[0].kv.mod_revision;
    let mut stream = store.watch("w/", first).await.expect("watch");
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(next_event(&mut stream).await);
    }
    drop(stream);

    let resume_at = seen.last().map_or(first, |event| event.kv.mod_revision + 1);
    let mut stream = store.watch("w/", resume_at).await.expect("watch");
    for _ in 4..10 {
        seen.push(next_event(&mut stream).await);
    }
    assert_eq!(
        seen, expected,
        "resumed watch continues exactly where the first stopped"
    );

    let live = store.put("w/live", b"l".to_vec()).await.expect("put");
    assert_eq!(
        next_event(&mut stream).await,
        put_event("w/live", b"l", live, live)
    );
}

/// A watch sees only keys under its prefix, live and replayed.
pub async fn check_watch_prefix(store: &dyn Store) {
    let first = store.current_revision().await.expect("rev") + 1;
    let mut stream = store.watch("p/a/", 0).await.expect("watch");
    for outside in ["p/ab", "p/b/x", "p/a", "p/"] {
        store.put(outside, b"no".to_vec()).await.expect("put");
    }
    let inside = store.put("p/a/x", b"yes".to_vec()).await.expect("put");
    let expected = put_event("p/a/x", b"yes", inside, inside);
    assert_eq!(
        next_event(&mut stream).await,
        expected,
        "live watch skips other keys"
    );

    let mut replay = store.watch("p/a/", first).await.expect("watch");
    assert_eq!(
        next_event(&mut replay).await,
        expected,
        "replay skips other keys"
    );
}

/// The events of one transaction share its revision and come in op order.
pub async fn check_watch_txn_order(store: &dyn Store) {
    store.put("o/z", b"z".to_vec()).await.expect("put");
    let mut stream = store.watch("o/", 0).await.expect("watch");
    let txn = Txn::new()
        .put("o/b", b"b".to_vec())
        .delete("o/z")
        .put("o/a", b"a".to_vec());
    let revision = store.txn(txn).await.expect("txn").revision;
    assert_eq!(
        next_event(&mut stream).await,
        put_event("o/b", b"b", revision, revision)
    );
    assert_eq!(next_event(&mut stream).await, delete_event("o/z", revision));
    assert_eq!(
        next_event(&mut stream).await,
        put_event("o/a", b"a", revision, revision)
    );
}

/// A watch that is not read while `writes` writes commit still gets every one of them.
pub async fn check_watch_slow_consumer(store: &dyn Store, writes: usize) {
    let mut stream = store.watch("s/", 0).await.expect("watch");
    let revisions: BTreeSet<Revision> = futures_util::stream::iter(0..writes)
        .map(|i| async move { store.put(&format!("s/{i}"), Vec::new()).await })
        .buffer_unordered(8)
        .try_collect()
        .await
        .expect("put");
    let mut delivered = Vec::with_capacity(writes);
    for _ in 0..writes {
        delivered.push(next_event(&mut stream).await.kv.mod_revision);
    }
    assert!(delivered.is_sorted(), "events arrive in revision order");
    assert_eq!(
        delivered.into_iter().collect::<BTreeSet<_>>(),
        revisions,
        "a slow watcher gets every event exactly once"
    );
}

/// An expired lease deletes its keys with ordinary delete events and is gone.
pub async fn check_lease_expiry(store: &dyn Store) {
    store.put("l/plain", b"p".to_vec()).await.expect("put");
    let lease = store
        .grant_lease(Duration::from_secs(1))
        .await
        .expect("grant");
    let bound = Txn::new().put_with_lease("l/k", b"v".to_vec(), lease);
    let revision = store.txn(bound).await.expect("txn").revision;
    let kv = store.get("l/k").await.expect("get").expect("l/k");
    assert_eq!(kv.lease, Some(lease));

    let mut stream = store.watch("l/", revision + 1).await.expect("watch");
    let event = next_event(&mut stream).await;
    assert_eq!(
        (event.kind, event.kv.key.as_str()),
        (EventKind::Delete, "l/k")
    );
    assert!(event.kv.mod_revision > revision);
    assert_eq!(store.get("l/k").await.expect("get"), None);
    assert!(
        store.get("l/plain").await.expect("get").is_some(),
        "unleased keys stay"
    );
    assert_lease_gone(
        store.keep_alive(lease).await,
        lease,
        "keep-alive after expiry",
    );
    assert_lease_gone(
        store.revoke_lease(lease).await,
        lease,
        "revoke after expiry",
    );
}

/// Keep-alives hold a lease past its TTL; once they stop, it expires.
pub async fn check_lease_keep_alive(store: &dyn Store) {
    let ttl = Duration::from_secs(2);
    let lease = store.grant_lease(ttl).await.expect("grant");
    let bound = Txn::new().put_with_lease("l/k", b"v".to_vec(), lease);
    assert!(store.txn(bound).await.expect("txn").succeeded);
    let mut stream = store.watch("l/", 0).await.expect("watch");

    let until = Instant::now() + 2 * ttl;
    while Instant::now() < until {
        store
            .keep_alive(lease)
            .await
            .expect("keep-alive of a live lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        store.get("l/k").await.expect("get").is_some(),
        "keep-alives hold the key past the TTL"
    );

    let event = next_event(&mut stream).await;
    assert_eq!(
        (event.kind, event.kv.key.as_str()),
        (EventKind::Delete, "l/k")
    );
    assert_lease_gone(
        store.keep_alive(lease).await,
        lease,
        "keep-alive after expiry",
    );
}

/// Revoking a lease deletes exactly its keys, at once and in one revision.
pub async fn check_lease_revoke(store: &dyn Store) {
    let lease = store
        .grant_lease(Duration::from_secs(60))
        .await
        .expect("grant");
    let bound = Txn::new()
        .put_with_lease("v/a", b"a".to_vec(), lease)
        .put_with_lease("v/b", b"b".to_vec(), lease)
        .put("v/c", b"c".to_vec());
    assert!(store.txn(bound).await.expect("txn").succeeded);
    let mut stream = store.watch("v/", 0).await.expect("watch");

    store.revoke_lease(lease).await.expect("revoke");
    let first = next_event(&mut stream).await;
    let second = next_event(&mut stream).await;
    let deleted = BTreeSet::from([first.kv.key.as_str(), second.kv.key.as_str()]);
    assert_eq!(deleted, BTreeSet::from(["v/a", "v/b"]));
    assert_eq!(
        (first.kind, second.kind),
        (EventKind::Delete, EventKind::Delete)
    );
    assert_eq!(
        first.kv.mod_revision, second.kv.mod_revision,
        "one revocation, one revision"
    );
    assert_eq!(store.get("v/a").await.expect("get"), None);
    assert!(store.get("v/c").await.expect("get").is_some());
    assert_lease_gone(
        store.keep_alive(lease).await,
        lease,
        "keep-alive after revoke",
    );
    assert_lease_gone(store.revoke_lease(lease).await, lease, "second revoke");
}

/// Puts must name a live lease; re-putting a key rebinds it.
pub async fn check_lease_binding(store: &dyn Store) {
    let dead = store
        .grant_lease(Duration::from_secs(60))
        .await
        .expect("grant");
    store.revoke_lease(dead).await.expect("revoke");
    let before = store.current_revision().await.expect("rev");
    let with_dead_lease =
        Txn::new()
            .put("b/plain", b"x".to_vec())
            .put_with_lease("b/k", b"x".to_vec(), dead);
    assert_lease_gone(
        store.txn(with_dead_lease).await,
        dead,
        "put with a dead lease",
    );
    assert_eq!(
        store.get("b/plain").await.expect("get"),
        None,
        "the whole txn fails"
    );
    assert_eq!(store.current_revision().await.expect("rev"), before);

    let first = store
        .grant_lease(Duration::from_secs(60))
        .await
        .expect("grant");
    let second = store
        .grant_lease(Duration::from_secs(60))
        .await
        .expect("grant");
    assert_ne!(first, second, "lease ids are unique");
    for (key, lease) in [("b/unbound", first), ("b/moved", first), ("b/bound", first)] {
        let bound = Txn::new().put_with_lease(key, b"1".to_vec(), lease);
        assert!(store.txn(bound).await.expect("txn").succeeded);
    }
    store.put("b/unbound", b"2".to_vec()).await.expect("put");
    let moved = Txn::new().put_with_lease("b/moved", b"2".to_vec(), second);
    assert!(store.txn(moved).await.expect("txn").succeeded);
    assert_eq!(
        store
            .get("b/unbound")
            .await
            .expect("get")
            .expect("b/unbound")
            .lease,
        None
    );

    store.revoke_lease(first).await.expect("revoke");
    assert_eq!(store.get("b/bound").await.expect("get"), None);
    assert!(
        store.get("b/unbound").await.expect("get").is_some(),
        "re-put without lease unbinds"
    );
    assert!(
        store.get("b/moved").await.expect("get").is_some(),
        "re-put moves to the new lease"
    );
    store.revoke_lease(second).await.expect("revoke");
    assert_eq!(store.get("b/moved").await.expect("get"), None);
}

/// History beyond the backend's retention is compacted: watching it fails
/// with [`StoreError::Compacted`], watching what is kept still works.
///
/// `store` must keep fewer than `writes` revisions of history (or compact
/// them within ten seconds of the last write).
pub async fn check_compaction(store: &dyn Store, writes: u64) {
    let first = store.put("k/0", Vec::new()).await.expect("put");
    for i in 1..writes {
        store.put(&format!("k/{i}"), Vec::new()).await.expect("put");
    }
    let last = store.current_revision().await.expect("rev");

    let until = Instant::now() + EVENT_TIMEOUT;
    let oldest = loop {
        match store.watch("k/", first).await {
            Err(StoreError::Compacted { requested, oldest }) => {
                assert_eq!(requested, first);
                break oldest;
            }
            Err(error) => panic!("watch of compacted history: unexpected error {error}"),
            Ok(_) if Instant::now() < until => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok(_) => panic!("revision {first} not compacted after {writes} writes"),
        }
    };
    assert!(
        oldest > first && oldest <= last,
        "oldest kept revision {oldest} out of range"
    );

    let mut stream = store
        .watch("k/", oldest)
        .await
        .expect("watch of kept history");
    let replayed = next_event(&mut stream).await.kv.mod_revision;
    assert!((oldest..=last).contains(&replayed));
    let mut current = store
        .watch("k/", last)
        .await
        .expect("watch of the current revision");
    assert_eq!(next_event(&mut current).await.kv.mod_revision, last);
}

/// Everything committed survives closing and reopening the store: keys,
/// revisions, history and leases. `open` must open the same data each time;
/// the store it returns is dropped before the next call.
pub async fn check_persistence<S, F, Fut>(mut open: F)
where
    S: Store,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    let store = open().await;
    let first = store.put("d/a", b"a".to_vec()).await.expect("put");
    store.put("d/b", b"b".to_vec()).await.expect("put");
    let lease = store
        .grant_lease(Duration::from_secs(60))
        .await
        .expect("grant");
    let bound = Txn::new().put_with_lease("d/leased", b"l".to_vec(), lease);
    assert!(store.txn(bound).await.expect("txn").succeeded);
    store.delete("d/b").await.expect("delete");
    let revision = store.current_revision().await.expect("rev");
    let kept = store.get("d/a").await.expect("get");
    let mut history = Vec::new();
    let mut stream = store.watch("d/", first).await.expect("watch");
    while history.len() < 4 {
        history.push(next_event(&mut stream).await);
    }
    drop(stream);
    drop(store);

    let store = open().await;
    assert_eq!(store.current_revision().await.expect("rev"), revision);
    assert_eq!(store.get("d/a").await.expect("get"), kept);
    assert_eq!(store.get("d/b").await.expect("get"), None);
    let mut stream = store.watch("d/", first).await.expect("watch");
    for expected in &history {
        assert_eq!(
            &next_event(&mut stream).await,
            expected,
            "history survives reopening"
        );
    }
    store
        .keep_alive(lease)
        .await
        .expect("leases survive reopening");
    store.revoke_lease(lease).await.expect("revoke");
    assert_eq!(store.get("d/leased").await.expect("get"), None);
    let next = store.put("d/c", Vec::new()).await.expect("put");
    assert!(next > revision + 1, "revisions go on from where they were");
}

async fn list_page(store: &dyn Store, prefix: &str, after: Option<&str>, limit: usize) -> ListPage {
    let options = ListOptions {
        start_after: after.map(str::to_owned),
        limit: Some(limit),
    };
    store.list(prefix, options).await.expect("list")
}

fn keys(page: &ListPage) -> Vec<&str> {
    page.items.iter().map(|kv| kv.key.as_str()).collect()
}

async fn assert_value(store: &dyn Store, key: &str, value: &[u8], mod_revision: Revision) {
    let kv = store.get(key).await.expect("get");
    let kv = kv.unwrap_or_else(|| panic!("{key} is missing"));
    assert_eq!(
        (kv.value.as_slice(), kv.mod_revision),
        (value, mod_revision),
        "{key}"
    );
}

fn assert_invalid<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    assert!(
        matches!(result, Err(StoreError::Invalid(_))),
        "{what}: expected Invalid, got {result:?}"
    );
}

fn assert_lease_gone<T: std::fmt::Debug>(result: Result<T, StoreError>, lease: u64, what: &str) {
    assert!(
        matches!(result, Err(StoreError::LeaseNotFound(id)) if id == lease),
        "{what}: expected LeaseNotFound({lease}), got {result:?}"
    );
}

/// The next event of `stream`, failing the check if none comes in time.
async fn next_event(stream: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(EVENT_TIMEOUT, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(error))) => panic!("watch failed: {error}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within {EVENT_TIMEOUT:?}"),
    }
}

fn put_event(key: &str, value: &[u8], create: Revision, revision: Revision) -> WatchEvent {
    WatchEvent {
        kind: EventKind::Put,
        kv: KeyValue {
            key: key.to_owned(),
            value: value.to_vec(),
            create_revision: create,
            mod_revision: revision,
            lease: None,
        },
    }
}

fn delete_event(key: &str, revision: Revision) -> WatchEvent {
    WatchEvent {
        kind: EventKind::Delete,
        kv: KeyValue {
            key: key.to_owned(),
            value: Vec::new(),
            create_revision: 0,
            mod_revision: revision,
            lease: None,
        },
    }
}

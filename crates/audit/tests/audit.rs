//! Behaviour of the audit log on a real `RedbStore` in a temporary directory:
//! ordering and filters, batching, retention, dropping under load, durability.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::{Notify, watch};
use wharf_audit::{AuditEvent, AuditLog, AuditOptions, AuditQuery, MAX_QUERY_LIMIT, Outcome};
use wharf_store::{
    LeaseId, ListOptions, ListPage, RedbStore, Revision, Store, StoreError, StoreExt, Txn,
    TxnResult, WatchStream,
};

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

fn open_store(dir: &tempfile::TempDir) -> Arc<RedbStore> {
    let path = dir.path().join("state.redb");
    Arc::new(RedbStore::open(&path, Default::default()).expect("open store"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Options without automatic pruning, so tests control what is deleted.
fn keep_forever() -> AuditOptions {
    AuditOptions {
        retention: Duration::ZERO,
        ..AuditOptions::default()
    }
}

fn everything() -> AuditQuery {
    AuditQuery {
        limit: MAX_QUERY_LIMIT,
        ..AuditQuery::default()
    }
}

fn event_at(at_ms: u64, n: u64) -> AuditEvent {
    let mut event = AuditEvent::new("alice", "login", "user/alice", Outcome::Success)
        .with_detail(format!("n={n}"));
    event.at_ms = at_ms;
    event
}

/// Event number `n` of the filter test, at `base + n`, with attributes cycling through
/// the cases the filters must tell apart.
fn varied_event(base: u64, n: u64) -> AuditEvent {
    const ACTORS: [&str; 3] = ["alice", "bob", "robot$ci"];
    const ACTIONS: [&str; 5] = [
        "login",
        "artifact.push",
        "artifact.pull",
        "artifact.delete",
        "member.add",
    ];
    const RESOURCES: [&str; 6] = [
        "proj/app:v1",
        "project/proj",
        "projx/app:v1",
        "user/alice",
        "proj/team/app@sha256:aa",
        "project/projx",
    ];
    let outcome = match n % 4 {
        0 | 1 => Outcome::Success,
        2 => Outcome::Denied,
        _ => Outcome::Failed,
    };
    let mut event = AuditEvent::new(
        ACTORS[(n % 3) as usize],
        ACTIONS[(n % 5) as usize],
        RESOURCES[(n % 6) as usize],
        outcome,
    )
    .with_source(IpAddr::V4(Ipv4Addr::new(10, 0, 0, (n % 4) as u8)));
    if n.is_multiple_of(2) {
        event = event.with_detail(format!("n={n}"));
    }
    event.at_ms = base + n;
    event
}

/// Runs `query` and compares it with the events `keep` selects, newest first, cut to the limit.
async fn assert_query(
    audit: &AuditLog,
    recorded: &[AuditEvent],
    query: AuditQuery,
    keep: impl Fn(&AuditEvent) -> bool,
) {
    let mut expected: Vec<AuditEvent> = recorded.iter().filter(|e| keep(e)).cloned().collect();
    expected.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
    expected.truncate(query.limit);
    assert!(!expected.is_empty(), "{query:?} should select something");
    let found = audit.query(&query).await.expect("query");
    assert_eq!(found, expected, "{query:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_records_are_queried_newest_first_with_filters() {
    let dir = tempfile::tempdir().unwrap();
    let audit = AuditLog::start(open_store(&dir), keep_forever());
    let base = now_ms() - DAY_MS;
    const TASKS: u64 = 4;
    const PER_TASK: u64 = 60;

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let audit = audit.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_TASK {
                audit.record(varied_event(base, i * TASKS + task));
                if i % 8 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    audit.flush().await.expect("flush");
    assert_eq!(audit.dropped(), 0);

    let recorded: Vec<AuditEvent> = (0..TASKS * PER_TASK)
        .map(|n| varied_event(base, n))
        .collect();
    assert_query(&audit, &recorded, everything(), |_| true).await;

    let actor = AuditQuery {
        actor: Some("bob".into()),
        ..everything()
    };
    assert_query(&audit, &recorded, actor, |e| e.actor == "bob").await;

    let artifacts = AuditQuery {
        action: Some("artifact.*".into()),
        ..everything()
    };
    assert_query(&audit, &recorded, artifacts, |e| {
        ["artifact.push", "artifact.pull", "artifact.delete"].contains(&e.action.as_str())
    })
    .await;

    let logins = AuditQuery {
        action: Some("login".into()),
        ..everything()
    };
    assert_query(&audit, &recorded, logins, |e| e.action == "login").await;

    let project = AuditQuery {
        project: Some("proj".into()),
        ..everything()
    };
    assert_query(&audit, &recorded, project, |e| {
        ["proj/app:v1", "project/proj", "proj/team/app@sha256:aa"].contains(&e.resource.as_str())
    })
    .await;

    let resource = AuditQuery {
        resource_prefix: Some("user/".into()),
        ..everything()
    };
    assert_query(&audit, &recorded, resource, |e| e.resource == "user/alice").await;

    let denied = AuditQuery {
        outcome: Some(Outcome::Denied),
        ..everything()
    };
    assert_query(&audit, &recorded, denied, |e| e.outcome == Outcome::Denied).await;

    let window = AuditQuery {
        since_ms: Some(base + 17),
        until_ms: Some(base + 133),
        ..everything()
    };
    assert_query(&audit, &recorded, window, |e| {
        (base + 17..=base + 133).contains(&e.at_ms)
    })
    .await;

    let newest_five = AuditQuery {
        limit: 5,
        ..everything()
    };
    assert_query(&audit, &recorded, newest_five, |_| true).await;

    let combined = AuditQuery {
        actor: Some("alice".into()),
        action: Some("artifact.".into()),
        project: Some("proj".into()),
        since_ms: Some(base + 30),
        limit: 3,
        ..everything()
    };
    assert_query(&audit, &recorded, combined, |e| {
        e.actor == "alice"
            && e.action.starts_with("artifact.")
            && (e.resource.starts_with("proj/") || e.resource == "project/proj")
            && e.at_ms >= base + 30
    })
    .await;

    let none = AuditQuery {
        limit: 0,
        ..everything()
    };
    assert!(audit.query(&none).await.unwrap().is_empty());
    let empty_window = AuditQuery {
        since_ms: Some(base + 10),
        until_ms: Some(base + 9),
        ..everything()
    };
    assert!(audit.query(&empty_window).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_thousand_events_take_few_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let audit = AuditLog::start(store.clone(), keep_forever());
    let before = store.current_revision().await.unwrap();
    let start = now_ms();

    for n in 0..1000 {
        audit.record(
            AuditEvent::new("alice", "artifact.pull", "proj/app:v1", Outcome::Success)
                .with_detail(format!("n={n}")),
        );
    }
    audit.flush().await.expect("flush");

    let commits = store.current_revision().await.unwrap() - before;
    // 1000 events in batches of at most 128 need 8 commits.
    assert!(
        (8..=10).contains(&commits),
        "1000 events took {commits} commits"
    );
    let stored = audit.query(&everything()).await.unwrap();
    assert_eq!(stored.len(), 1000);
    let end = now_ms();
    assert!(stored.iter().all(|e| (start..=end).contains(&e.at_ms)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_recorded_while_writing_are_still_batched() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let audit = AuditLog::start(store.clone(), keep_forever());
    let before = store.current_revision().await.unwrap();

    let mut tasks = Vec::new();
    for task in 0..4 {
        let audit = audit.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..250 {
                audit.record(event_at(0, task * 1000 + i));
                if i % 16 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    audit.flush().await.expect("flush");

    let commits = store.current_revision().await.unwrap() - before;
    assert!(commits <= 100, "1000 events took {commits} commits");
    assert_eq!(audit.query(&everything()).await.unwrap().len(), 1000);
}

#[tokio::test]
async fn prune_removes_only_events_before_the_cutoff() {
    let dir = tempfile::tempdir().unwrap();
    let audit = AuditLog::start(open_store(&dir), keep_forever());
    let now = now_ms();
    let ages_days = [100, 100, 100, 91, 91, 89, 89, 89, 89, 1];
    for (n, age) in ages_days.iter().enumerate() {
        audit.record(event_at(now - age * DAY_MS, n as u64));
    }
    audit.flush().await.unwrap();

    let cutoff = now - 90 * DAY_MS;
    assert_eq!(audit.prune(cutoff).await.unwrap(), 5);
    let kept = audit.query(&everything()).await.unwrap();
    assert_eq!(kept.len(), 5);
    assert!(kept.iter().all(|e| e.at_ms >= cutoff));
    assert_eq!(audit.prune(cutoff).await.unwrap(), 0);

    // An event exactly at the cutoff is not older than it.
    audit.record(event_at(cutoff, 99));
    audit.flush().await.unwrap();
    assert_eq!(audit.prune(cutoff).await.unwrap(), 0);
    assert_eq!(audit.prune(cutoff + 1).await.unwrap(), 1);
}

#[tokio::test]
async fn prune_spans_many_pages() {
    let dir = tempfile::tempdir().unwrap();
    let audit = AuditLog::start(open_store(&dir), keep_forever());
    let now = now_ms();
    for n in 0..700 {
        audit.record(event_at(now - 200 * DAY_MS + n, n));
    }
    for n in 0..30 {
        audit.record(event_at(now - DAY_MS + n, n));
    }
    audit.flush().await.unwrap();
    assert_eq!(audit.prune(now - 90 * DAY_MS).await.unwrap(), 700);
    assert_eq!(audit.query(&everything()).await.unwrap().len(), 30);
}

#[tokio::test]
async fn retention_is_enforced_without_external_calls() {
    let dir = tempfile::tempdir().unwrap();
    let options = AuditOptions {
        retention: Duration::from_millis(90 * DAY_MS),
        prune_interval: Duration::from_millis(20),
        ..AuditOptions::default()
    };
    let audit = AuditLog::start(open_store(&dir), options);
    let now = now_ms();
    for (n, age) in [120, 95, 60, 1].iter().enumerate() {
        audit.record(event_at(now - age * DAY_MS, n as u64));
    }
    audit.flush().await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = audit.query(&everything()).await.unwrap();
        if left.len() == 2 {
            assert!(left.iter().all(|e| e.at_ms >= now - 90 * DAY_MS));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old events still there: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A store whose transactions wait until the test opens a gate, to stall the writer.
struct StalledStore {
    inner: Arc<RedbStore>,
    entered: Notify,
    gate: watch::Sender<bool>,
}

#[async_trait]
impl Store for StalledStore {
    async fn get(&self, key: &str) -> Result<Option<wharf_store::KeyValue>, StoreError> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListPage, StoreError> {
        self.inner.list(prefix, options).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        self.entered.notify_one();
        let mut gate = self.gate.subscribe();
        gate.wait_for(|open| *open).await.unwrap();
        self.inner.txn(txn).await
    }
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        self.inner.watch(prefix, from).await
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.inner.grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner.keep_alive(lease).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner.revoke_lease(lease).await
    }
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.inner.current_revision().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_events_instead_of_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(StalledStore {
        inner: open_store(&dir),
        entered: Notify::new(),
        gate: watch::channel(false).0,
    });
    let options = AuditOptions {
        queue: 10,
        batch_delay: Duration::from_millis(1),
        ..keep_forever()
    };
    let audit = AuditLog::start(store.clone(), options);

    // The first event's batch gets stuck in its commit.
    audit.record(event_at(1_000, 0));
    store.entered.notified().await;

    let started = Instant::now();
    for n in 1..=100 {
        audit.record(event_at(1_000 + n, n));
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "100 records took {took:?}"
    );
    assert_eq!(audit.dropped(), 90, "only the queue's 10 events fit");

    store.gate.send_replace(true);
    audit.flush().await.unwrap();
    let stored = audit.query(&everything()).await.unwrap();
    let times: Vec<u64> = stored.iter().map(|e| e.at_ms).collect();
    assert_eq!(times, (1_000..=1_010).rev().collect::<Vec<_>>());

    // Once the writer catches up, recording works again.
    audit.record(event_at(2_000, 200));
    audit.flush().await.unwrap();
    assert_eq!(audit.query(&everything()).await.unwrap().len(), 12);
    assert_eq!(audit.dropped(), 90);
}

#[test]
fn events_survive_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let at = now_ms() - 1000;
    let first_run = runtime().block_on(async {
        let audit = AuditLog::start(open_store(&dir), keep_forever());
        for n in 0..3 {
            audit.record(event_at(at, n));
        }
        audit.flush().await.unwrap();
        audit.query(&everything()).await.unwrap()
    });
    // Dropping that runtime dropped the writer and with it the last store handle.
    assert_eq!(first_run.len(), 3);

    runtime().block_on(async {
        let audit = AuditLog::start(open_store(&dir), keep_forever());
        assert_eq!(audit.query(&everything()).await.unwrap(), first_run);
        for n in 3..5 {
            audit.record(event_at(at, n));
        }
        audit.flush().await.unwrap();
        assert_eq!(audit.query(&everything()).await.unwrap().len(), 5);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_logs_on_one_store_never_overwrite_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let replicas = [
        AuditLog::start(store.clone(), keep_forever()),
        AuditLog::start(store.clone(), keep_forever()),
    ];
    let at = now_ms();
    for n in 0..300 {
        for replica in &replicas {
            replica.record(event_at(at, n));
        }
    }
    for replica in &replicas {
        replica.flush().await.unwrap();
    }
    let same_ms = AuditQuery {
        since_ms: Some(at),
        until_ms: Some(at),
        ..everything()
    };
    assert_eq!(replicas[0].query(&same_ms).await.unwrap().len(), 600);
}

#[tokio::test]
async fn events_are_stored_one_json_value_per_time_ordered_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let audit = AuditLog::start(store.clone(), keep_forever());
    let mut denied = AuditEvent::new("anonymous", "artifact.pull", "proj/app:v1", Outcome::Denied)
        .with_source("192.0.2.7".parse::<IpAddr>().unwrap());
    denied.at_ms = 1_700_000_000_123;
    audit.record(denied.clone());
    let mut long = event_at(1_700_000_000_124, 1);
    long.detail = Some("x".repeat(5000));
    audit.record(long);
    audit.flush().await.unwrap();

    let stored = store.list_all("/audit/", 100).await.unwrap();
    assert_eq!(stored.len(), 2);
    let (time, seq) = stored[0].key["/audit/".len()..].split_once('-').unwrap();
    assert_eq!(time, "0001700000000123");
    assert!(seq.len() == 8 && seq.bytes().all(|b| b.is_ascii_hexdigit()));
    let json: serde_json::Value = serde_json::from_slice(&stored[0].value).unwrap();
    assert_eq!(json["outcome"], "denied");
    assert_eq!(json["source"], "192.0.2.7");
    assert_eq!(json["actor"], "anonymous");

    let found = audit.query(&everything()).await.unwrap();
    assert_eq!(found[1], denied);
    let detail = found[0].detail.as_deref().unwrap();
    assert_eq!(detail.len(), wharf_audit::MAX_FIELD_BYTES);
}

//! The control plane over a real (redb) store: deployments become pods,
//! pods land on nodes within their capacity, nodes' readiness follows
//! their heartbeats.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wharf_api::{Deployment, Manifest, Node, Pod, Resources, parse_manifests};
use wharf_control::{Candidate, ControlPlane, Objects};
use wharf_scheduler::SchedulerConfig;
use wharf_store::{RedbStore, RedbStoreOptions, Store};

fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(RedbStore::open(&dir.path().join("state.redb"), RedbStoreOptions::default()).unwrap())
}

fn deployment(
    name: &str,
    replicas: u32,
    cpu: &str,
    memory: &str,
    pool: Option<&str>,
) -> Deployment {
    let selector = pool
        .map(|p| format!("\n      nodeSelector: {{wharf.io/pool: {p}}}"))
        .unwrap_or_default();
    let yaml = format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: shop}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:{selector}
      containers:
        - name: main
          image: shop/{name}:1
          resources: {{requests: {{cpu: "{cpu}", memory: "{memory}"}}}}
"#
    );
    let Manifest::Deployment(d) = parse_manifests(&yaml).unwrap().remove(0).manifest else {
        panic!("a deployment");
    };
    *d
}

async fn add_node(
    objects: &Objects,
    name: &str,
    cpu_millis: u64,
    memory_bytes: u64,
    labels: &[(&str, &str)],
) {
    let mut node = Node::new(
        name,
        Resources {
            cpu_millis,
            memory_bytes,
            pods: 110,
        },
    );
    node.metadata.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<BTreeMap<_, _>>();
    objects.register_node(node).await.unwrap();
    objects
        .heartbeat(name, None, Duration::from_secs(30))
        .await
        .unwrap();
}

/// Stands in for the nodes' agents: confirms every Terminating pod as
/// stopped (there are no containers to stop), as an agent does once its
/// containers are gone. Stops when dropped.
fn confirm_terminating_pods(objects: &Objects) -> tokio_util::task::AbortOnDropHandle<()> {
    let objects = objects.clone();
    tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        loop {
            let (pods, _) = objects.list::<Pod>(None, None).await.unwrap();
            for pod in pods.iter().filter(|p| p.metadata.is_terminating()) {
                let project = pod.metadata.project.as_deref().unwrap_or_default();
                objects
                    .confirm_pod_stopped(project, &pod.metadata.name, &pod.metadata.uid)
                    .await
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }))
}

/// Waits until every node is ready (their heartbeats were seen).
async fn wait_nodes_ready(objects: &Objects, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (nodes, _) = objects.list::<Node>(None, None).await.unwrap();
        if nodes.len() == count && nodes.iter().all(|n| n.status.ready) {
            return;
        }
        assert!(Instant::now() < deadline, "nodes never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `check` holds on the project's pods.
async fn wait_for_pods(objects: &Objects, what: &str, check: impl Fn(&[Pod]) -> bool) -> Vec<Pod> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (pods, _) = objects.list::<Pod>(Some("shop"), None).await.unwrap();
        if check(&pods) {
            return pods;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:#?}",
            pods.iter()
                .map(|p| (&p.metadata.name, &p.spec.node_name, &p.status.message))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn per_node(pods: &[Pod]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for pod in pods {
        *counts
            .entry(pod.spec.node_name.clone().unwrap_or_default())
            .or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_spread_scale_and_go() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::new(store(&dir), SchedulerConfig::default());
    let objects = plane.objects().clone();
    add_node(&objects, "n1", 4000, 8 << 30, &[]).await;
    add_node(&objects, "n2", 4000, 8 << 30, &[]).await;
    let _running = plane.start("test".into());
    let _agents = confirm_terminating_pods(&objects);
    wait_nodes_ready(&objects, 2).await;

    plane
        .apply_deployment(deployment("web", 3, "500m", "256Mi", None))
        .await
        .unwrap();
    let pods = wait_for_pods(&objects, "3 bound pods", |p| {
        p.len() == 3 && p.iter().all(|p| p.spec.node_name.is_some())
    })
    .await;
    let counts = per_node(&pods);
    assert_eq!(counts.len(), 2, "replicas use both nodes: {counts:?}");
    assert!(counts.values().all(|&n| (1..=2).contains(&n)));

    plane.scale("shop", "web", 5).await.unwrap();
    let pods = wait_for_pods(&objects, "5 bound pods", |p| {
        p.len() == 5 && p.iter().all(|p| p.spec.node_name.is_some())
    })
    .await;
    let counts = per_node(&pods);
    assert!(counts.values().all(|&n| n == 2 || n == 3), "{counts:?}");
    let (alloc1, _) = objects.allocation("n1").await.unwrap();
    let (alloc2, _) = objects.allocation("n2").await.unwrap();
    assert_eq!(alloc1.requests.pods + alloc2.requests.pods, 5);
    assert_eq!(
        alloc1.requests.cpu_millis + alloc2.requests.cpu_millis,
        2500
    );

    plane.scale("shop", "web", 2).await.unwrap();
    wait_for_pods(&objects, "2 pods", |p| p.len() == 2).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d: Deployment = objects.require(Some("shop"), "web").await.unwrap();
        if d.status.replicas == 2 && d.status.scheduled_replicas == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status never settled: {:?}",
            d.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    plane.delete_deployment("shop", "web").await.unwrap();
    wait_for_pods(&objects, "no pods", |p| p.is_empty()).await;
    let (alloc1, _) = objects.allocation("n1").await.unwrap();
    let (alloc2, _) = objects.allocation("n2").await.unwrap();
    assert_eq!(
        alloc1.requests.pods + alloc2.requests.pods,
        0,
        "allocations return to zero"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_a_deployment_deleted_while_no_controller_ran_go() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::new(store(&dir), SchedulerConfig::default());
    let objects = plane.objects().clone();
    add_node(&objects, "n1", 4000, 8 << 30, &[]).await;
    let running = plane.start("test".into());
    plane
        .apply_deployment(deployment("web", 2, "100m", "64Mi", None))
        .await
        .unwrap();
    wait_for_pods(&objects, "2 pods", |p| p.len() == 2).await;
    // No leader: the deployment is deleted with nobody watching.
    running.stop().await;
    plane.delete_deployment("shop", "web").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(objects.list::<Pod>(None, None).await.unwrap().0.len(), 2);
    // The next leader finds the orphans; they stop on their node first.
    let _running = plane.start("test".into());
    wait_for_pods(&objects, "2 Terminating pods", |p| {
        p.len() == 2 && p.iter().all(|p| p.metadata.is_terminating())
    })
    .await;
    let _agents = confirm_terminating_pods(&objects);
    wait_for_pods(&objects, "no pods", |p| p.is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_that_fit_nowhere_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::new(store(&dir), SchedulerConfig::default());
    let objects = plane.objects().clone();
    add_node(
        &objects,
        "small",
        1000,
        1 << 30,
        &[("wharf.io/pool", "web")],
    )
    .await;
    add_node(&objects, "db1", 8000, 16 << 30, &[("wharf.io/pool", "db")]).await;
    add_node(&objects, "db2", 8000, 16 << 30, &[("wharf.io/pool", "db")]).await;
    let _running = plane.start("test".into());
    wait_nodes_ready(&objects, 3).await;

    plane
        .apply_deployment(deployment("big", 1, "500m", "4Gi", Some("web")))
        .await
        .unwrap();
    let pods = wait_for_pods(&objects, "an explanation", |p| {
        p.len() == 1 && p[0].status.message.is_some()
    })
    .await;
    assert_eq!(pods[0].status.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(
        pods[0].status.message.as_deref(),
        Some("0/3 nodes are available: 2 not in pool web, 1 insufficient memory.")
    );
    let (events, _) = objects
        .list::<wharf_api::Event>(Some("shop"), None)
        .await
        .unwrap();
    assert!(
        events.iter().any(|e| e.reason == "FailedScheduling"),
        "{events:?}"
    );

    // A node that fits arrives: the pod is placed without any other change.
    add_node(
        &objects,
        "large",
        8000,
        16 << 30,
        &[("wharf.io/pool", "web")],
    )
    .await;
    let pods = wait_for_pods(&objects, "the pod bound", |p| {
        p.len() == 1 && p[0].spec.node_name.is_some()
    })
    .await;
    assert_eq!(pods[0].spec.node_name.as_deref(), Some("large"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_never_overbook_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let objects = Objects::new(store.clone());
    for i in 0..3 {
        add_node(&objects, &format!("n{i}"), 2000, 4 << 30, &[]).await;
    }
    let lifecycle = tokio::spawn(wharf_control::NodeLifecycle::new(objects.clone()).run());
    wait_nodes_ready(&objects, 3).await;
    // Two scheduling loops on one store, as two leaders during a split brain.
    let loops = [
        tokio::spawn(
            wharf_control::SchedulingLoop::new(objects.clone(), SchedulerConfig::default()).run(),
        ),
        tokio::spawn(
            wharf_control::SchedulingLoop::new(objects.clone(), SchedulerConfig::default()).run(),
        ),
    ];
    // 20 pods of 500m: only 12 fit (3 nodes x 4).
    let d = deployment("race", 20, "500m", "64Mi", None);
    let d = objects.create(d).await.unwrap();
    let hash = wharf_control::template_hash(&d);
    for _ in 0..20 {
        objects
            .create(wharf_control::pod_for(&d, &hash))
            .await
            .unwrap();
    }
    let pods = wait_for_pods(&objects, "12 bound", |p| {
        p.iter().filter(|p| p.spec.node_name.is_some()).count() == 12
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (pods_after, _) = objects.list::<Pod>(Some("shop"), None).await.unwrap();
    assert_eq!(
        pods_after
            .iter()
            .filter(|p| p.spec.node_name.is_some())
            .count(),
        12,
        "no more than fit"
    );
    for (node, count) in per_node(&pods) {
        if !node.is_empty() {
            assert!(count <= 4, "{node} holds {count} pods of 500m with 2000m");
            let (allocation, _) = objects.allocation(&node).await.unwrap();
            assert!(allocation.requests.cpu_millis <= 2000);
        }
    }
    for task in loops {
        task.abort();
    }
    lifecycle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_go_not_ready_when_heartbeats_stop() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::new(store(&dir), SchedulerConfig::default());
    let objects = plane.objects().clone();
    let node = Node::new(
        "flaky",
        Resources {
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            pods: 10,
        },
    );
    objects.register_node(node).await.unwrap();
    let lease = objects
        .heartbeat("flaky", None, Duration::from_secs(1))
        .await
        .unwrap();
    let _running = plane.start("test".into());
    let wait_ready = |want: bool| {
        let objects = objects.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let node: Node = objects.require(None, "flaky").await.unwrap();
                if node.status.ready == want {
                    return;
                }
                assert!(Instant::now() < deadline, "node never became ready={want}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_ready(true).await;
    // Renewing keeps the same lease alive.
    assert_eq!(
        objects
            .heartbeat("flaky", Some(lease), Duration::from_secs(1))
            .await
            .unwrap(),
        lease
    );
    // Silence: the lease expires and the node goes not ready.
    wait_ready(false).await;
    // The event follows the status change.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (events, _) = objects
            .list::<wharf_api::Event>(Some(wharf_control::CLUSTER_EVENTS), None)
            .await
            .unwrap();
        if events.iter().any(|e| e.reason == "NodeNotReady") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no NodeNotReady event: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A heartbeat after expiry takes a new lease and brings it back.
    let renewed = objects
        .heartbeat("flaky", Some(lease), Duration::from_secs(30))
        .await
        .unwrap();
    assert_ne!(renewed, lease);
    wait_ready(true).await;
}

#[tokio::test]
async fn status_reports_stamp_the_last_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let objects = Objects::new(store(&dir));
    let report = || {
        Node::new(
            "busy",
            Resources {
                cpu_millis: 1000,
                memory_bytes: 1 << 30,
                pods: 10,
            },
        )
    };
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let (first, _) = objects.register_node(report()).await.unwrap();
    assert!(first.status.last_heartbeat >= before, "{first:?}");
    tokio::time::sleep(Duration::from_millis(20)).await;
    // A periodic report carries no time of its own (the agent sends 0):
    // the server's clock stamps it, never the report.
    let (refreshed, _) = objects.register_node(report()).await.unwrap();
    assert!(
        refreshed.status.last_heartbeat > first.status.last_heartbeat,
        "{refreshed:?}"
    );
    let stored: Node = objects.require(None, "busy").await.unwrap();
    assert_eq!(
        stored.status.last_heartbeat,
        refreshed.status.last_heartbeat
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let leading = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ttl = Duration::from_secs(1);
    let mut candidates: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| campaign(&store, Candidate::from(name), ttl, &leading).1)
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        leading.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "exactly one leads"
    );
    let first = wharf_control::current_leader(store.as_ref())
        .await
        .unwrap()
        .unwrap()
        .id;
    // The leader dies: the other takes over once its lease lapses.
    let index = if first == "a" { 0 } else { 1 };
    candidates.remove(index).abort();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = wharf_control::current_leader(store.as_ref()).await.unwrap();
        if now.is_some_and(|l| l.id != first) {
            break;
        }
        assert!(Instant::now() < deadline, "no takeover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(leading.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// A server's `Running` is dropped without `stop` in tests and benches:
/// the leader's work must go with it, not lead on unseen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_candidate_stops_its_leaders_work() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    // One reference here, one in the closure, one in the running work.
    let work = Arc::new(());
    let held = work.clone();
    let candidate = tokio::spawn(async move {
        let stop = CancellationToken::new();
        let ttl = Duration::from_secs(1);
        wharf_control::run_as_leader(store.as_ref(), &"a".into(), ttl, stop, move || {
            let held = held.clone();
            async move {
                let _held = held;
                std::future::pending::<()>().await;
            }
        })
        .await
    });
    let count_becomes = async |count: usize, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&work) != count {
            assert!(
                Instant::now() < deadline,
                "{what}: {}",
                Arc::strong_count(&work)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    count_becomes(3, "the work leads").await;
    candidate.abort();
    count_becomes(1, "the work still runs after its candidate was aborted").await;
}

/// A candidate for the leader test: runs until `stop` is cancelled and
/// counts how often it started leading in `leading`.
fn campaign(
    store: &Arc<dyn Store>,
    candidate: Candidate,
    ttl: Duration,
    leading: &Arc<std::sync::atomic::AtomicUsize>,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let (store, leading) = (store.clone(), leading.clone());
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        wharf_control::run_as_leader(store.as_ref(), &candidate, ttl, stopped, move || {
            let leading = leading.clone();
            async move {
                leading.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::future::pending::<()>().await;
            }
        })
        .await
    });
    (stop, task)
}

/// Waits until the leader key names `candidate`; how long that took.
async fn leader_becomes(
    store: &Arc<dyn Store>,
    candidate: &Candidate,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let leader = wharf_control::current_leader(store.as_ref()).await.unwrap();
        if leader.as_ref() == Some(candidate) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{candidate:?} did not lead within {within:?}; leader: {leader:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_takes_its_own_lease_back_and_a_stopped_one_hands_over_at_once() {
    // The server's real lease lifetime: the point is to beat it.
    let ttl = Duration::from_secs(10);
    let dir = tempfile::tempdir().unwrap();
    let leading = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a_before = Candidate::new("id-a", "host:1");
    let a_after = Candidate::new("id-a", "host:3");
    let b_candidate = Candidate::new("id-b", "host:2");
    {
        let store = store(&dir);
        let (_stop, crashed) = campaign(&store, a_before.clone(), ttl, &leading);
        leader_becomes(&store, &a_before, Duration::from_secs(2)).await;
        // A crash: nothing gives the lease up, and the store file closes.
        crashed.abort();
        let _ = crashed.await;
    }
    // The reopened store grants every persisted lease a full TTL again.
    let store = store(&dir);
    // Another server does not take a's lease before it lapses...
    let (stop_b, b) = campaign(&store, b_candidate.clone(), ttl, &leading);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let leader = wharf_control::current_leader(store.as_ref()).await.unwrap();
    assert_eq!(leader, Some(a_before));
    // ...but a's next process (same id, another address) takes it back at once.
    let (stop_a, a) = campaign(&store, a_after.clone(), ttl, &leading);
    let took_back = leader_becomes(&store, &a_after, ttl / 2).await;
    assert!(
        took_back < Duration::from_secs(1),
        "took back in {took_back:?}"
    );

    // A clean stop releases the lease: b takes over at once.
    let stopping = Instant::now();
    stop_a.cancel();
    a.await.unwrap();
    leader_becomes(&store, &b_candidate, ttl / 2).await;
    let handed_over = stopping.elapsed();
    assert!(
        handed_over < Duration::from_secs(1),
        "handed over in {handed_over:?}"
    );
    eprintln!(
        "lease TTL {ttl:?}: taken back after a restart in {} ms, handed over at a clean stop in {} ms",
        took_back.as_millis(),
        handed_over.as_millis()
    );
    assert_eq!(leading.load(std::sync::atomic::Ordering::SeqCst), 3);
    stop_b.cancel();
    b.await.unwrap();
    assert_eq!(
        wharf_control::current_leader(store.as_ref()).await.unwrap(),
        None,
        "the last one released it too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_wait_for_a_pool_address_instead_of_failing_after_binding() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let objects = Objects::new(store.clone());
    for i in 0..2 {
        add_node(&objects, &format!("n{i}"), 8000, 16 << 30, &[]).await;
    }
    let lifecycle = tokio::spawn(wharf_control::NodeLifecycle::new(objects.clone()).run());
    wait_nodes_ready(&objects, 2).await;
    let pools = wharf_api::parse_ip_pools(
        "apiVersion: wharf.io/v1
kind: IpPool
metadata: {name: small}
spec:
  cidr: 10.78.0.0/24
  gateway: 10.78.0.1
  ranges: [{start: 10.78.0.10, end: 10.78.0.12}]
",
    )
    .unwrap()
    .0;
    objects.import_ip_pools(pools).await.unwrap();
    let scheduling = tokio::spawn(
        wharf_control::SchedulingLoop::new(objects.clone(), SchedulerConfig::default()).run(),
    );
    let mut d = deployment("web", 5, "100m", "16Mi", None);
    d.spec
        .template
        .metadata
        .annotations
        .insert(wharf_api::ANNOTATION_IP_POOL.into(), "small".into());
    let d = objects.create(d).await.unwrap();
    let hash = wharf_control::template_hash(&d);
    for _ in 0..5 {
        objects
            .create(wharf_control::pod_for(&d, &hash))
            .await
            .unwrap();
    }
    let bound = |pods: &[Pod]| pods.iter().filter(|p| p.spec.node_name.is_some()).count();
    let waiting = |pods: &[Pod]| {
        pods.iter()
            .filter(|p| {
                p.spec.node_name.is_none()
                    && p.status.reason.as_deref() == Some("Unschedulable")
                    && p.status.message.as_deref().is_some_and(|m| {
                        m.contains("pool small has no free address: all 3 are held or promised")
                    })
            })
            .count()
    };
    wait_for_pods(&objects, "3 bound, 2 waiting for an address", |p| {
        bound(p) == 3 && waiting(p) == 2
    })
    .await;

    // One bound pod claims its address (as its agent would): still full.
    let (pods, _) = objects.list::<Pod>(Some("shop"), None).await.unwrap();
    let mut on_nodes = pods.iter().filter(|p| p.spec.node_name.is_some());
    let claimer = on_nodes.next().unwrap().metadata.name.clone();
    let unclaimed = on_nodes.next().unwrap().metadata.name.clone();
    let claim = objects
        .claim_pod_ip("shop", &claimer)
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (pods, _) = objects.list::<Pod>(Some("shop"), None).await.unwrap();
    assert_eq!(bound(&pods), 3, "no address was freed");

    // A bound pod that never claimed goes: its promised address is free.
    objects.delete_pod("shop", &unclaimed).await.unwrap();
    wait_for_pods(&objects, "a waiting pod bound in its place", |p| {
        bound(p) == 3 && p.len() == 4
    })
    .await;

    // An address held by another pod is not given to a pod that fixes it.
    let mut fixed = wharf_control::pod_for(&d, &hash);
    fixed
        .metadata
        .annotations
        .insert(wharf_api::ANNOTATION_FIXED_IP.into(), claim.ip.to_string());
    let fixed = objects.create(fixed).await.unwrap();
    let held_by = format!("{} of pool small is held by pod shop/{claimer}", claim.ip);
    wait_for_pods(&objects, "the fixed-address pod waiting", |p| {
        p.iter().any(|p| {
            p.metadata.name == fixed.metadata.name
                && p.spec.node_name.is_none()
                && p.status
                    .message
                    .as_deref()
                    .is_some_and(|m| m.contains(&held_by))
        })
    })
    .await;
    scheduling.abort();
    lifecycle.abort();
}

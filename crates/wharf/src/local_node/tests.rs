//! Agents over the in-process API: registration with the machine's
//! capacity, heartbeats into readiness, pods handed to the runtime and
//! their status reported; simulated fleets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wharf_agent::{Agent, AgentConfig, NoRuntime, Simulation, SimulationConfig};
use wharf_api::{Manifest, Node, Pod, PodPhase};
use wharf_control::{ControlPlane, DeletionOutcome, InventoryWrite, Objects, PodDeletion};
use wharf_scheduler::SchedulerConfig;
use wharf_store::{RedbStore, Store};

use super::LocalNodeApi;

fn plane(dir: &tempfile::TempDir) -> ControlPlane {
    let store: Arc<dyn Store> =
        Arc::new(RedbStore::open(&dir.path().join("state.redb"), Default::default()).unwrap());
    ControlPlane::new(store, SchedulerConfig::default())
}

async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn apply(plane: &ControlPlane, replicas: u32) {
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: shop}}\nspec:\n  replicas: {replicas}\n  \
         selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      \
         containers: [{{name: web, image: shop/web:1, resources: {{requests: {{cpu: 100m}}}}}}]\n"
    );
    let Manifest::Deployment(d) = wharf_api::parse_manifests(&yaml)
        .unwrap()
        .remove(0)
        .manifest
    else {
        panic!("a deployment");
    };
    plane.apply_deployment(*d).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_registers_beats_and_reports_its_pods() {
    let dir = tempfile::tempdir().unwrap();
    let plane = plane(&dir);
    let objects: Objects = plane.objects().clone();
    let _running = plane.start("test".into());
    let mut config = AgentConfig::new("worker-1");
    config.labels.insert("wharf.io/pool".into(), "web".into());
    config.cost_per_hour = Some(0.25);
    config.heartbeat_ttl = Duration::from_secs(3);
    let api = Arc::new(LocalNodeApi::new(objects.clone()));
    let runtime = Arc::new(NoRuntime {
        node: "worker-1".into(),
    });
    let agent = tokio::spawn(Agent::new(api, runtime, config).run());

    let node: Node = eventually("the node ready", async || {
        objects
            .get::<Node>(None, "worker-1")
            .await
            .unwrap()
            .filter(|n| n.status.ready)
    })
    .await;
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    assert_eq!(
        node.status.capacity.cpu_millis,
        cores * 1000,
        "capacity read from the machine"
    );
    assert!(node.status.capacity.memory_bytes > 0);
    assert_eq!(node.metadata.labels["wharf.io/pool"], "web");
    assert_eq!(node.spec.cost_per_hour, Some(0.25));
    assert!(node.status.info.contains_key("kernel"));

    apply(&plane, 2).await;
    let pods: Vec<Pod> = eventually("pods accepted", async || {
        let (pods, _) = objects.list::<Pod>(Some("shop"), None).await.unwrap();
        (pods.len() == 2
            && pods
                .iter()
                .all(|p| p.status.reason.as_deref() == Some("NoRuntime")))
        .then_some(pods)
    })
    .await;
    assert!(
        pods.iter()
            .all(|p| p.spec.node_name.as_deref() == Some("worker-1"))
    );
    assert!(
        pods.iter().all(|p| p.status.phase == PodPhase::Pending),
        "no runtime: not running"
    );

    // The agent stops: its lease lapses and the node goes not ready.
    agent.abort();
    eventually("the node not ready", async || {
        objects
            .get::<Node>(None, "worker-1")
            .await
            .unwrap()
            .filter(|n| !n.status.ready)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_report_a_load_summary_and_hollow_nodes_the_load_they_are_given() {
    let dir = tempfile::tempdir().unwrap();
    let plane = plane(&dir);
    let objects: Objects = plane.objects().clone();
    let api = Arc::new(LocalNodeApi::new(objects.clone()));
    let mut config = AgentConfig::new("worker-1");
    config.status_interval = Duration::from_millis(200);
    let runtime = Arc::new(NoRuntime {
        node: "worker-1".into(),
    });
    let _agent = tokio::spawn(Agent::new(api.clone(), runtime, config).run());
    let node: Node = eventually("a load summary", async || {
        let node = objects.get::<Node>(None, "worker-1").await.unwrap()?;
        node.status.cpu_load.is_some().then_some(node)
    })
    .await;
    let status = &node.status;
    assert!((0.0..=1.0).contains(&status.cpu_load.unwrap()));
    assert!(status.load_average.is_some_and(|load| load >= 0.0));
    assert!(
        status
            .memory_available_bytes
            .is_some_and(|free| free <= status.capacity.memory_bytes)
    );
    assert_eq!(
        status.layers, None,
        "no image cache without a container runtime"
    );

    let mut fleet = SimulationConfig::new(2);
    fleet.loads = vec![0.75, 0.25];
    let _fleet = tokio::spawn(Simulation::new(api, fleet).run());
    let nodes: Vec<Node> = eventually("2 hollow nodes", async || {
        let (nodes, _) = objects.list::<Node>(None, None).await.unwrap();
        let hollow: Vec<Node> = nodes
            .into_iter()
            .filter(|n| n.metadata.name.starts_with("sim-"))
            .collect();
        (hollow.len() == 2).then_some(hollow)
    })
    .await;
    let busy = &nodes
        .iter()
        .find(|n| n.metadata.name == "sim-00001")
        .unwrap()
        .status;
    assert_eq!(busy.cpu_load, Some(0.75));
    assert_eq!(busy.load_average, Some(12.0), "0.75 of 16 cores");
    assert_eq!(busy.memory_available_bytes, Some(16 << 30));
    assert_eq!(busy.layers, Some(Vec::new()));
    let idle = &nodes
        .iter()
        .find(|n| n.metadata.name == "sim-00002")
        .unwrap()
        .status;
    assert_eq!(idle.cpu_load, Some(0.25));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_fleet_runs_what_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let plane = plane(&dir);
    let objects = plane.objects().clone();
    let _running = plane.start("test".into());
    let api = Arc::new(LocalNodeApi::new(objects.clone()));
    let fleet = tokio::spawn(Simulation::new(api, SimulationConfig::new(20)).run());
    eventually("20 ready nodes", async || {
        let (nodes, _) = objects.list::<Node>(None, None).await.unwrap();
        (nodes.iter().filter(|n| n.status.ready).count() == 20).then_some(())
    })
    .await;
    apply(&plane, 30).await;
    let pods: Vec<Pod> = eventually("30 running pods", async || {
        let (pods, _) = objects.list::<Pod>(Some("shop"), None).await.unwrap();
        (pods.len() == 30 && pods.iter().all(|p| p.status.phase == PodPhase::Running))
            .then_some(pods)
    })
    .await;
    let nodes: std::collections::BTreeSet<&str> = pods
        .iter()
        .filter_map(|p| p.spec.node_name.as_deref())
        .collect();
    assert!(
        nodes.len() >= 15,
        "30 replicas spread over the 20 nodes: {}",
        nodes.len()
    );
    assert!(
        pods.iter()
            .all(|p| p.status.container_statuses.iter().all(|c| c.ready))
    );
    fleet.abort();
}

/// A runtime whose every step hangs (a pull that never ends), and which
/// records the pods it is asked to remove.
#[derive(Default)]
struct HangingRuntime {
    entered: std::sync::Mutex<Vec<String>>,
    removed: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl wharf_agent::Runtime for HangingRuntime {
    async fn sync(&self, pod: &Pod, _progress: wharf_agent::Progress<'_>) -> wharf_agent::Synced {
        self.entered.lock().unwrap().push(pod.metadata.name.clone());
        std::future::pending().await
    }

    async fn remove(&self, _project: &str, name: &str, _uid: Option<&str>) {
        self.removed.lock().unwrap().push(name.to_string());
    }

    async fn pods(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_pod_cancels_a_step_in_progress_removes_it_and_confirms() {
    let dir = tempfile::tempdir().unwrap();
    let plane = plane(&dir);
    let objects: Objects = plane.objects().clone();
    let _running = plane.start("test".into());
    let api = Arc::new(LocalNodeApi::new(objects.clone()));
    let runtime = Arc::new(HangingRuntime::default());
    let agent = tokio::spawn(Agent::new(api, runtime.clone(), AgentConfig::new("worker-1")).run());
    apply(&plane, 1).await;
    let name = eventually("the step under way", async || {
        runtime.entered.lock().unwrap().first().cloned()
    })
    .await;
    let deleted = plane
        .delete_pod("shop", &name, PodDeletion::Graceful(None))
        .await
        .unwrap();
    // Bound: it waits for its node, Terminating with the default grace.
    let DeletionOutcome::Terminating(pod) = deleted else {
        panic!("a bound pod was removed without its node: {deleted:?}");
    };
    assert_eq!(pod.metadata.deletion_grace_period_seconds, Some(30));
    eventually("the pod removed", async || {
        runtime
            .removed
            .lock()
            .unwrap()
            .contains(&name)
            .then_some(())
    })
    .await;
    eventually("the object gone once the node confirmed", async || {
        let pod = objects.get::<Pod>(Some("shop"), &name).await.unwrap();
        pod.is_none().then_some(())
    })
    .await;
    agent.abort();
}

#[tokio::test]
async fn reported_pull_failures_and_starts_become_pod_events() {
    use wharf_agent::NodeApi;
    use wharf_api::{ContainerState, ContainerStatus, Event, PodStatus};

    let dir = tempfile::tempdir().unwrap();
    let plane = plane(&dir);
    let objects: Objects = plane.objects().clone();
    apply(&plane, 1).await;
    let _running = plane.start("test".into());
    let pod = eventually("the deployment's pod", async || {
        let (pods, _) = objects.list::<Pod>(Some("shop"), None).await.unwrap();
        pods.into_iter().next()
    })
    .await;
    let api = LocalNodeApi::new(objects.clone());
    let report = |state: ContainerState, message: &str| PodStatus {
        message: Some(message.to_string()),
        container_statuses: vec![ContainerStatus {
            name: "web".into(),
            image: "shop/web:1".into(),
            ready: false,
            restart_count: 0,
            state,
            last_state: None,
        }],
        ..PodStatus::default()
    };
    let waiting = |reason: &str| ContainerState::Waiting {
        reason: reason.into(),
    };
    let name = &pod.metadata.name;
    for status in [
        report(waiting("ErrImagePull"), "manifest unknown"),
        report(waiting("ErrImagePull"), "manifest unknown"),
        report(waiting("ImagePullBackOff"), "back-off"),
        report(ContainerState::Running { started_at: 1 }, ""),
    ] {
        api.set_pod_status("shop", name, &status).await.unwrap();
    }
    let (events, _) = objects.list::<Event>(Some("shop"), None).await.unwrap();
    let about_pod: Vec<(String, String, u32)> = events
        .into_iter()
        .filter(|e| &e.involved_object.name == name)
        .map(|e| (e.reason, e.message, e.count))
        .collect();
    assert!(
        about_pod.contains(&(
            "Failed".into(),
            "Failed to pull image \"shop/web:1\": manifest unknown".into(),
            1
        )),
        "{about_pod:?}"
    );
    assert!(
        about_pod.contains(&(
            "BackOff".into(),
            "Back-off pulling image \"shop/web:1\"".into(),
            1
        )),
        "{about_pod:?}"
    );
    assert!(
        about_pod.contains(&("Started".into(), "Started container web".into(), 1)),
        "{about_pod:?}"
    );
}

/// Reports pods running at once, as if it held `held` from before, and
/// records what it is asked in order.
struct RecordingRuntime {
    held: Vec<(String, String)>,
    steps: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl wharf_agent::Runtime for RecordingRuntime {
    async fn sync(&self, pod: &Pod, _progress: wharf_agent::Progress<'_>) -> wharf_agent::Synced {
        let step = format!("sync {}", pod.metadata.name);
        self.steps.lock().unwrap().push(step);
        wharf_agent::Synced {
            status: wharf_agent::SimulatedRuntime::running(pod),
            again_in: None,
        }
    }

    async fn remove(&self, _project: &str, name: &str, _uid: Option<&str>) {
        // Slow, as tearing down a container is: nothing may start meanwhile.
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.steps.lock().unwrap().push(format!("remove {name}"));
    }

    async fn pods(&self) -> Vec<(String, String)> {
        self.held.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_back_removes_what_is_no_longer_its_own_before_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let plane = plane(&dir);
    let objects: Objects = plane.objects().clone();
    let _running = plane.start("test".into());
    let api = Arc::new(LocalNodeApi::new(objects.clone()));
    // The node as it was before the agent restarted: a pod bound to it.
    let config = AgentConfig::new("wtf-back");
    objects
        .register_node(config.node(&wharf_agent::LoadSummary::default()))
        .await
        .unwrap();
    let ttl = Duration::from_secs(30);
    objects.heartbeat("wtf-back", None, ttl).await.unwrap();
    apply(&plane, 1).await;
    eventually("the pod bound", async || {
        let (pods, _) = objects.list::<Pod>(Some("shop"), None).await.unwrap();
        pods.iter()
            .any(|p| p.spec.node_name.is_some())
            .then_some(())
    })
    .await;
    // The agent comes back holding an evicted pod beside the one still bound.
    let stale = ("shop".to_string(), "web-evicted".to_string());
    let runtime = Arc::new(RecordingRuntime {
        held: vec![stale],
        steps: Default::default(),
    });
    let agent = tokio::spawn(Agent::new(api, runtime.clone(), config).run());
    let steps = eventually("the bound pod started", async || {
        let steps = runtime.steps.lock().unwrap().clone();
        steps
            .iter()
            .any(|s| s.starts_with("sync "))
            .then_some(steps)
    })
    .await;
    assert_eq!(steps[0], "remove web-evicted", "{steps:?}");
    assert!(steps[1].starts_with("sync web-"), "{steps:?}");
    agent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pods_of_a_dead_node_are_replaced_on_another_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let plane = plane(&dir);
    let objects: Objects = plane.objects().clone();
    let _running = plane.start("test".into());
    let api = Arc::new(LocalNodeApi::new(objects.clone()));
    let start = |name: &str| {
        let runtime = Arc::new(wharf_agent::SimulatedRuntime);
        let config = AgentConfig::new(name);
        tokio::spawn(Agent::new(api.clone(), runtime, config).run())
    };
    let doomed = start("wtf-doomed");
    let survivor = start("wtf-survivor");
    eventually("both nodes ready", async || {
        let (nodes, _) = objects.list::<Node>(None, None).await.unwrap();
        (nodes.iter().filter(|n| n.status.ready).count() == 2).then_some(())
    })
    .await;
    apply(&plane, 4).await;
    let on = |pods: &[Pod], node: &str| {
        pods.iter()
            .filter(|p| p.status.phase == PodPhase::Running)
            .filter(|p| p.spec.node_name.as_deref() == Some(node))
            .count()
    };
    eventually("pods running on both nodes", async || {
        let (pods, _) = objects.list::<Pod>(Some("shop"), None).await.unwrap();
        (pods.len() == 4 && on(&pods, "wtf-doomed") > 0 && on(&pods, "wtf-survivor") > 0)
            .then_some(())
    })
    .await;

    let killed = Instant::now();
    doomed.abort();
    eventually("all four running on the survivor", async || {
        let (pods, _) = objects.list::<Pod>(Some("shop"), None).await.unwrap();
        (pods.len() == 4 && on(&pods, "wtf-survivor") == 4).then_some(())
    })
    .await;
    let took = killed.elapsed();
    // 2 s lease + 1 s toleration + a few passes; the benchmark measures.
    assert!(took < Duration::from_secs(10), "failover took {took:?}");
    let node: Node = objects.require(None, "wtf-doomed").await.unwrap();
    assert!(
        node.spec
            .taints
            .iter()
            .any(|t| t.key == wharf_control::TAINT_UNREACHABLE)
    );
    survivor.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_follows_services_and_their_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let plane = plane(&dir);
    let objects: Objects = plane.objects().clone();
    let api = Arc::new(LocalNodeApi::new(objects.clone()));
    let runtime = Arc::new(NoRuntime {
        node: "worker-1".into(),
    });
    let agent = Agent::new(api, runtime, AgentConfig::new("worker-1"));
    let mut views = agent.services();
    assert!(views.borrow().services.is_empty());
    let before: wharf_api::Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "early", "project": "shop"},
        "spec": {"selector": {"app": "early"}, "ports": [{"port": 80}]},
    }))
    .unwrap();
    let range = plane.service_range();
    objects.apply_service(before, range).await.unwrap();
    let _agent = tokio::spawn(agent.run());
    let mut seen =
        async |what: &str, check: &dyn Fn(&wharf_agent::service_view::ServiceView) -> bool| {
            let deadline = Duration::from_secs(10);
            let seen = tokio::time::timeout(deadline, views.wait_for(|v| check(v))).await;
            assert!(seen.is_ok_and(|s| s.is_ok()), "the agent never saw {what}");
        };
    seen("the service listed", &|v| v.services.len() == 1).await;

    let web: wharf_api::Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "project": "shop"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
    }))
    .unwrap();
    objects.apply_service(web, range).await.unwrap();
    seen("a new service", &|v| {
        v.services.iter().any(|s| s.metadata.name == "web")
    })
    .await;
    let endpoints: wharf_api::Endpoints = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "project": "shop"},
        "subsets": [{"addresses": [{"ip": "10.95.0.2"}], "ports": [{"port": 80, "protocol": "TCP"}]}],
    }))
    .unwrap();
    let mut endpoints = objects.create(endpoints).await.unwrap();
    seen("the endpoints", &|v| v.endpoints.len() == 1).await;
    // Readiness lost: the address moves to notReadyAddresses.
    let subset = &mut endpoints.subsets[0];
    subset.not_ready_addresses = std::mem::take(&mut subset.addresses);
    objects.update(endpoints).await.unwrap();
    seen("the address unready", &|v| {
        v.endpoints[0].subsets[0].addresses.is_empty()
    })
    .await;
    objects.delete_service("shop", "web").await.unwrap();
    seen("the service deleted", &|v| {
        v.services.len() == 1 && v.endpoints.is_empty()
    })
    .await;
}

/// A runtime with nothing to run whose health the test sets.
struct Ailing {
    reason: std::sync::Mutex<Option<String>>,
}

#[async_trait::async_trait]
impl wharf_agent::Runtime for Ailing {
    async fn sync(&self, pod: &Pod, progress: wharf_agent::Progress<'_>) -> wharf_agent::Synced {
        let none = NoRuntime {
            node: "ailing".into(),
        };
        wharf_agent::Runtime::sync(&none, pod, progress).await
    }
    async fn remove(&self, _project: &str, _name: &str, _uid: Option<&str>) {}
    async fn pods(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    async fn health(&self) -> Result<(), String> {
        match self.reason.lock().unwrap().clone() {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }
}

/// Kubernetes' `Ready=False`: an agent alive but with a failing runtime
/// says why in its status at once, the control plane taints the node
/// not-ready (no new pods), and both go when the runtime recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_runtime_makes_a_live_node_not_ready_until_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let plane = plane(&dir);
    let objects: Objects = plane.objects().clone();
    let _running = plane.start("test".into());
    let mut config = AgentConfig::new("ailing");
    config.health_interval = Duration::from_millis(100);
    let api = Arc::new(LocalNodeApi::new(objects.clone()));
    let runtime = Arc::new(Ailing {
        reason: std::sync::Mutex::new(None),
    });
    let _agent = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
        Agent::new(api.clone(), runtime.clone(), config).run(),
    ));
    // A healthy neighbour: with every node of a zone down, nothing is
    // tainted (a full disruption is the network's, as in Kubernetes).
    let _neighbour = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
        Simulation::new(api, SimulationConfig::new(1)).run(),
    ));
    let node = async || objects.get::<Node>(None, "ailing").await.unwrap();
    let tainted = |n: &Node| {
        n.spec
            .taints
            .iter()
            .any(|t| t.key == wharf_control::TAINT_NOT_READY)
    };
    eventually("the node ready", async || {
        node().await.filter(|n| n.status.ready && !tainted(n))
    })
    .await;

    let why = "the container runtime fails: runc list: exit status 1";
    *runtime.reason.lock().unwrap() = Some(why.into());
    eventually("the reason reported", async || {
        node().await.filter(|n| n.status.not_ready_reason.is_some())
    })
    .await;
    let ill = eventually("the node tainted not-ready", async || {
        node().await.filter(tainted)
    })
    .await;
    assert_eq!(ill.status.not_ready_reason.as_deref(), Some(why));
    assert!(
        ill.status.ready,
        "its heartbeat goes on: alive, not unreachable"
    );

    *runtime.reason.lock().unwrap() = None;
    let well = eventually("the taint gone", async || {
        node().await.filter(|n| !tainted(n))
    })
    .await;
    assert_eq!(well.status.not_ready_reason, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hollow_nodes_of_a_pool_with_an_init_profile_report_it_simulated() {
    let dir = tempfile::tempdir().unwrap();
    let plane = plane(&dir);
    let objects: Objects = plane.objects().clone();
    let cluster = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "lab"}, "spec": {"kind": "vm"}
    }))
    .unwrap();
    objects
        .write_cluster(cluster, InventoryWrite::Create)
        .await
        .unwrap();
    let pool = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"cluster": "lab", "init": {"files": [{"path": "/etc/never-written", "content": "x"}]}}
    }))
    .unwrap();
    objects
        .write_pool(pool, InventoryWrite::Create)
        .await
        .unwrap();
    let class = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "small"}, "spec": {"pricePerHour": 0.1}
    }))
    .unwrap();
    objects
        .write_machine_class(class, InventoryWrite::Create)
        .await
        .unwrap();
    let api = Arc::new(LocalNodeApi::new(objects.clone()));
    let mut fleet = SimulationConfig::new(2);
    fleet.labels.insert("wharf.io/pool".into(), "web".into());
    fleet
        .labels
        .insert("wharf.io/machine-class".into(), "small".into());
    fleet.init_check = Duration::from_millis(100);
    let _fleet = tokio::spawn(Simulation::new(api, fleet).run());
    let nodes: Vec<Node> = eventually("2 initialized hollow nodes", async || {
        let (nodes, _) = objects.list::<Node>(None, None).await.unwrap();
        let initialized = nodes.iter().filter(|n| {
            n.status
                .conditions
                .iter()
                .any(|c| c.kind == "Initialized" && c.status == "True")
        });
        (initialized.count() == 2).then_some(nodes)
    })
    .await;
    for node in nodes {
        let condition = &node.status.conditions[0];
        assert!(condition.message.contains("simulated"), "{condition:?}");
        assert!(
            node.spec
                .taints
                .iter()
                .all(|t| t.key != wharf_api::TAINT_NOT_INITIALIZED)
        );
    }
    assert!(!std::path::Path::new("/etc/never-written").exists());

    // A changed profile is reported applied again, under its new hash.
    let changed: wharf_api::Pool = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"cluster": "lab", "init": {"files": [{"path": "/etc/never-either", "content": "y"}]}}
    }))
    .unwrap();
    let hash = changed.spec.init.as_ref().unwrap().hash();
    objects
        .write_pool(changed, InventoryWrite::Apply)
        .await
        .unwrap();
    eventually("2 hollow nodes initialized again", async || {
        let (nodes, _) = objects.list::<Node>(None, None).await.unwrap();
        let again = nodes.iter().filter(|n| {
            let run = n.status.initialization.as_ref();
            run.is_some_and(|r| r.profile_hash == hash)
                && n.spec
                    .taints
                    .iter()
                    .all(|t| t.key != wharf_api::TAINT_NOT_INITIALIZED)
        });
        (again.count() == 2).then_some(())
    })
    .await;
}

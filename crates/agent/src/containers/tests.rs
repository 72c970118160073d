//! The pod logic against fakes: addresses, networks, pulls, starts,
//! exits, restarts with back-off, removal, adoption after a restart.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use wharf_api::{ANNOTATION_IP_POOL, Container, IpClaim, ObjectMeta, PodSpec};
use wharf_control::Objects;
use wharf_net::testing::MemoryDriver;
use wharf_store::RedbStore;

use super::*;
use crate::{AgentError, PodChanges};

/// The control plane as the pod logic uses it: pool addresses, claimed and
/// released in a real control plane. Registration, heartbeats and pod
/// watches are the `Agent`'s business, never the runtime's.
/// Events the runtime reported are kept in the second field; the third
/// keeps the ids of the commit grants ended. It grants commits to the
/// token `ok` only.
struct PoolAddresses(
    Objects,
    Arc<Mutex<Vec<wharf_api::PodEventReport>>>,
    Arc<Mutex<Vec<String>>>,
);

fn control_error(err: wharf_control::ControlError) -> AgentError {
    AgentError::Api(err.to_string())
}

#[async_trait]
impl NodeApi for PoolAddresses {
    async fn register(&self, _node: wharf_api::Node) -> Result<wharf_api::Node, AgentError> {
        unreachable!("the runtime registers no node")
    }

    async fn heartbeat(&self, _: &str, _: Option<u64>, _: Duration) -> Result<u64, AgentError> {
        unreachable!("the runtime sends no heartbeat")
    }

    async fn list_pods(&self, _node: Option<&str>) -> Result<(Vec<Pod>, u64), AgentError> {
        unreachable!("the runtime lists no pods")
    }

    async fn watch_pods(&self, _: Option<&str>, _: u64) -> Result<PodChanges, AgentError> {
        unreachable!("the runtime watches no pods")
    }

    async fn set_pod_status(&self, _: &str, _: &str, _: &PodStatus) -> Result<(), AgentError> {
        unreachable!("the runtime reports no status itself")
    }

    async fn pod_event(
        &self,
        _: &str,
        _: &str,
        event: &wharf_api::PodEventReport,
    ) -> Result<(), AgentError> {
        self.1.lock().unwrap().push(event.clone());
        Ok(())
    }

    async fn claim_ip(&self, project: &str, name: &str) -> Result<Option<IpClaim>, AgentError> {
        self.0
            .claim_pod_ip(project, name)
            .await
            .map_err(control_error)
    }

    async fn release_ip(&self, project: &str, name: &str, uid: &str) -> Result<(), AgentError> {
        self.0
            .release_pod_ip(project, name, Some(uid))
            .await
            .map_err(control_error)?;
        Ok(())
    }

    async fn pod_stopped(&self, _: &str, _: &str, _: &str) -> Result<(), AgentError> {
        unreachable!("the agent confirms, not the runtime")
    }

    async fn commit_grant(
        &self,
        _node: &str,
        asked: &wharf_api::commit::NodeCommitGrantRequest,
    ) -> Result<wharf_api::commit::NodeCommitGrant, AgentError> {
        if asked.token != "ok" {
            return Err(AgentError::Refused {
                status: 403,
                message: "alice may not push to repository shop/snap".into(),
            });
        }
        Ok(wharf_api::commit::NodeCommitGrant {
            id: format!("grant-{}", self.2.lock().unwrap().len()),
            repository: "shop/snap".into(),
            tag: "1".into(),
            expires_at: u64::MAX,
            container: asked.request.container.clone().unwrap_or("web".into()),
            base_image: "127.0.0.1:7700/shop/web:1".into(),
            exclude: Vec::new(),
            quota_remaining_bytes: None,
        })
    }

    async fn end_commit_grant(
        &self,
        _node: &str,
        grant: &wharf_api::commit::NodeCommitGrant,
    ) -> Result<(), AgentError> {
        self.2.lock().unwrap().push(grant.id.clone());
        Ok(())
    }

    async fn may_access_pod(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: crate::api::PodAccess,
    ) -> Result<bool, AgentError> {
        unreachable!("the runtime serves no logs")
    }

    async fn config_map(
        &self,
        _node: &str,
        project: &str,
        name: &str,
    ) -> Result<Option<wharf_api::ConfigMap>, AgentError> {
        self.0.get(Some(project), name).await.map_err(control_error)
    }

    async fn secret(
        &self,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<Option<wharf_api::Secret>, AgentError> {
        // No Secrets here: the env tests resolve them from ConfigObjects.
        Ok(None)
    }

    async fn claims(
        &self,
        node: &str,
    ) -> Result<Vec<wharf_api::PersistentVolumeClaim>, AgentError> {
        self.0.claims_on_node(node).await.map_err(control_error)
    }

    async fn report_usage(&self, _: &str, _: &[wharf_api::PodUsage]) -> Result<(), AgentError> {
        unreachable!("the runtime reports no usage; the agent does")
    }
    async fn push_metrics(&self, _: &str, _: &[wharf_api::FalconSample]) -> Result<(), AgentError> {
        unreachable!("the runtime pushes no metrics; the agent's collector does")
    }
    async fn node_services(
        &self,
        _: &str,
    ) -> Result<(crate::service_view::ServiceView, u64), AgentError> {
        unreachable!("the runtime reads no services; the agent does")
    }

    async fn watch_services(&self, _: &str, _: u64) -> Result<crate::ServiceChanges, AgentError> {
        unreachable!("the runtime reads no services; the agent does")
    }
}

/// Images that exist, or fail to pull.
#[derive(Default)]
struct FakeImages {
    broken: Mutex<Option<String>>,
    pulls: Mutex<usize>,
    /// Held by a test to keep pulls waiting, as a big pull does.
    stall: tokio::sync::Mutex<()>,
}

#[async_trait]
impl ImagePuller for FakeImages {
    async fn pull(
        &self,
        image: &str,
        _policy: PullPolicy,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<Image, ContainerError> {
        *self.pulls.lock().unwrap() += 1;
        drop(self.stall.lock().await);
        if let Some(reason) = self.broken.lock().unwrap().clone() {
            return Err(ContainerError::ImagePull(reason));
        }
        progress(format!("pulling {image}: 1.0/1.0 MiB"));
        Ok(Image {
            layers: vec![PathBuf::from("/layers/0")],
            process: Default::default(),
            pulled: wharf_image::PullBytes {
                registry: 1 << 20,
                peers: 3 << 20,
                cache: 0,
            },
        })
    }
}

/// Containers that run until told to exit.
#[derive(Default)]
struct FakeContainers {
    state: Mutex<FakeState>,
    /// The runc it claims to run under (never run).
    runc: Option<wharf_runc::Runc>,
}

#[derive(Default)]
struct FakeState {
    running: BTreeMap<String, Launch>,
    exited: BTreeMap<String, Exit>,
    starts: Vec<String>,
    stopped: Vec<(String, Duration)>,
    removed: Vec<String>,
    refuse: Option<String>,
}

impl FakeContainers {
    fn exit(&self, id: &str, code: i32) {
        let mut state = self.state.lock().unwrap();
        state.running.remove(id).expect("running");
        state.exited.insert(
            id.to_string(),
            Exit {
                code,
                reason: if code == 0 { "Completed" } else { "Error" }.into(),
                message: None,
                finished_at: now_millis(),
            },
        );
    }
}

#[async_trait]
impl ContainerDriver for FakeContainers {
    async fn start(&self, launch: &Launch) -> Result<(), ContainerError> {
        let mut state = self.state.lock().unwrap();
        if let Some(reason) = &state.refuse {
            return Err(ContainerError::Create(reason.clone()));
        }
        state.exited.remove(&launch.id);
        state.starts.push(launch.id.clone());
        state.running.insert(launch.id.clone(), launch.clone());
        Ok(())
    }

    async fn liveness(&self, id: &str, _dir: &Path) -> Liveness {
        let state = self.state.lock().unwrap();
        match state.exited.get(id) {
            Some(exit) => Liveness::Exited(exit.clone()),
            None => Liveness::Running,
        }
    }

    async fn stop(&self, id: &str, _dir: &Path, grace: Duration) -> Result<(), ContainerError> {
        let mut state = self.state.lock().unwrap();
        if state.running.remove(id).is_some() {
            // As runc reports a process that SIGKILL ended.
            let exit = Exit {
                code: 137,
                reason: "Error".into(),
                message: None,
                finished_at: now_millis(),
            };
            state.exited.insert(id.to_string(), exit);
        }
        state.stopped.push((id.to_string(), grace));
        Ok(())
    }

    async fn remove(&self, id: &str, _dir: &Path) -> Result<(), ContainerError> {
        self.state.lock().unwrap().removed.push(id.to_string());
        Ok(())
    }

    fn runc(&self) -> Option<&wharf_runc::Runc> {
        self.runc.as_ref()
    }
}

struct Node {
    _dir: tempfile::TempDir,
    data: PathBuf,
    objects: Objects,
    images: Arc<FakeImages>,
    containers: Arc<FakeContainers>,
    network: Arc<MemoryDriver>,
    events: Arc<Mutex<Vec<wharf_api::PodEventReport>>>,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("state.redb"), Default::default()).unwrap();
        Node {
            data: dir.path().join("node"),
            _dir: dir,
            objects: Objects::new(Arc::new(store)),
            images: Arc::default(),
            containers: Arc::default(),
            network: Arc::new(MemoryDriver::new("test-")),
            events: Arc::default(),
        }
    }

    async fn runtime(&self) -> ContainerRuntime {
        let mut config = ContainerRuntimeConfig::new("node-1", self.data.clone());
        config.backoff = Duration::from_millis(50);
        config.host_ip = Some("192.0.2.1".into());
        ContainerRuntime::open(
            config,
            Arc::new(PoolAddresses(
                self.objects.clone(),
                self.events.clone(),
                Arc::default(),
            )),
            self.images.clone(),
            self.containers.clone(),
            self.network.clone(),
        )
        .await
    }

    async fn pod(&self, name: &str, restart_policy: Option<&str>, pool: Option<&str>) -> Pod {
        let mut annotations = BTreeMap::new();
        if let Some(pool) = pool {
            annotations.insert(ANNOTATION_IP_POOL.to_string(), pool.to_string());
        }
        let pod = Pod {
            metadata: ObjectMeta {
                name: name.into(),
                project: Some("shop".into()),
                annotations,
                ..ObjectMeta::default()
            },
            spec: PodSpec {
                containers: vec![Container {
                    name: "web".into(),
                    image: "127.0.0.1:7700/shop/web:1".into(),
                    ..Container::default()
                }],
                node_name: Some("node-1".into()),
                restart_policy: restart_policy.map(str::to_string),
                termination_grace_period_seconds: Some(7),
                ..PodSpec::default()
            },
            ..Pod::default()
        };
        self.objects.create(pod).await.unwrap()
    }
}

async fn sync(runtime: &ContainerRuntime, pod: &Pod) -> Synced {
    runtime.sync(pod, &|_| {}).await
}

/// Syncs until the status satisfies `done`, as the agent's pod worker would.
async fn sync_until(
    runtime: &ContainerRuntime,
    pod: &Pod,
    done: impl Fn(&PodStatus) -> bool,
) -> PodStatus {
    sync_tries(runtime, pod, 100, done).await
}

/// [`sync_until`], trying `tries` times.
async fn sync_tries(
    runtime: &ContainerRuntime,
    pod: &Pod,
    tries: usize,
    done: impl Fn(&PodStatus) -> bool,
) -> PodStatus {
    for _ in 0..tries {
        let synced = sync(runtime, pod).await;
        if done(&synced.status) {
            return synced.status;
        }
        tokio::time::sleep(
            synced
                .again_in
                .unwrap_or(Duration::from_millis(10))
                .min(Duration::from_millis(20)),
        )
        .await;
    }
    panic!("status never got there");
}

#[tokio::test]
async fn listing_the_pods_held_does_not_wait_for_a_long_step() {
    let node = Node::new();
    let runtime = Arc::new(node.runtime().await);
    let pod = node.pod("web-1", None, None).await;
    let stalled = node.images.stall.lock().await;
    let syncing = tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.sync(&pod, &|_| {}).await }
    });
    while *node.images.pulls.lock().unwrap() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The agent lists what it holds when its pod watch starts over; a pull
    // that takes minutes must not hold that up (nor the deletions after it).
    let held = tokio::time::timeout(Duration::from_secs(5), runtime.pods())
        .await
        .expect("pods() answers while a pull is in progress");
    assert_eq!(held, [("shop".to_string(), "web-1".to_string())]);
    drop(stalled);
    assert_eq!(syncing.await.unwrap().status.phase, PodPhase::Running);
}

#[tokio::test]
async fn a_pod_runs_on_a_node_local_address() {
    let node = Node::new();
    let runtime = node.runtime().await;
    let pod = node.pod("web-1", None, None).await;
    let seen = Mutex::new(Vec::new());
    let synced = runtime
        .sync(&pod, &|status: PodStatus| seen.lock().unwrap().push(status))
        .await;
    let status = synced.status;
    assert_eq!(status.phase, PodPhase::Running, "{status:?}");
    assert_eq!(status.pod_ip.as_deref(), Some("10.88.0.2"));
    assert_eq!(status.host_ip.as_deref(), Some("192.0.2.1"));
    assert!(status.container_statuses[0].ready);
    assert!(matches!(
        status.container_statuses[0].state,
        ContainerState::Running { .. }
    ));
    assert_eq!(
        synced.again_in,
        Some(Duration::from_millis(500)),
        "exits are watched for"
    );
    {
        let progress = seen.lock().unwrap();
        assert!(
            progress[0]
                .message
                .as_deref()
                .unwrap()
                .contains("pulling 127.0.0.1:7700/shop/web:1"),
            "pull progress is reported: {progress:?}"
        );
        let state = node.containers.state.lock().unwrap();
        let launch = state.running.values().next().unwrap();
        assert_eq!(launch.hostname, "web-1");
        assert_eq!(launch.ip.unwrap().to_string(), "10.88.0.2");
        let network = node.network.pods().remove(0);
        assert_eq!(launch.netns.as_ref(), Some(&network.netns_path));
        assert_eq!(network.gateway.to_string(), "10.88.0.1");
    }

    // Nothing changes: nothing is started again.
    let again = sync(&runtime, &pod).await;
    assert_eq!(again.status, status);
    assert_eq!(node.containers.state.lock().unwrap().starts.len(), 1);
    assert_eq!(*node.images.pulls.lock().unwrap(), 1);
}

#[tokio::test]
async fn exited_containers_restart_with_back_off() {
    let node = Node::new();
    let runtime = node.runtime().await;
    let pod = node.pod("web-1", None, None).await;
    sync(&runtime, &pod).await;
    let id = node.containers.state.lock().unwrap().starts[0].clone();

    node.containers.exit(&id, 3);
    let synced = sync(&runtime, &pod).await;
    let container = &synced.status.container_statuses[0];
    assert_eq!(
        container.state,
        ContainerState::Waiting {
            reason: "CrashLoopBackOff".into()
        }
    );
    assert_eq!(
        synced.status.phase,
        PodPhase::Running,
        "restarting pods are running"
    );
    assert_eq!(
        container.last_state,
        Some(ContainerState::Terminated {
            exit_code: 3,
            reason: "Error".into()
        }),
        "the exit code shows while it backs off"
    );
    assert!(synced.again_in.unwrap() <= Duration::from_millis(50));
    let status = sync_until(&runtime, &pod, |s| s.container_statuses[0].ready).await;
    assert_eq!(status.container_statuses[0].restart_count, 1);

    // The next exit waits twice as long.
    node.containers.exit(&id, 1);
    let synced = sync(&runtime, &pod).await;
    assert!(
        synced.again_in.unwrap() > Duration::from_millis(50),
        "{:?}",
        synced.again_in
    );
    let status = sync_until(&runtime, &pod, |s| s.container_statuses[0].ready).await;
    assert_eq!(status.container_statuses[0].restart_count, 2);
    assert_eq!(node.containers.state.lock().unwrap().starts.len(), 3);
}

#[tokio::test]
async fn restart_policies_end_pods() {
    let node = Node::new();
    let runtime = node.runtime().await;
    for (name, policy, code, phase) in [
        ("done", "Never", 0, PodPhase::Succeeded),
        ("broken", "Never", 2, PodPhase::Failed),
        ("job", "OnFailure", 0, PodPhase::Succeeded),
    ] {
        let pod = node.pod(name, Some(policy), None).await;
        sync(&runtime, &pod).await;
        let id = node
            .containers
            .state
            .lock()
            .unwrap()
            .starts
            .last()
            .unwrap()
            .clone();
        node.containers.exit(&id, code);
        let synced = sync(&runtime, &pod).await;
        assert_eq!(synced.status.phase, phase, "{name}");
        assert_eq!(synced.again_in, None, "{name}: nothing more to do");
        let ContainerState::Terminated { exit_code, .. } =
            &synced.status.container_statuses[0].state
        else {
            panic!("{name}: {:?}", synced.status);
        };
        assert_eq!(*exit_code, code);
    }
    // OnFailure restarts a failure.
    let pod = node.pod("retry", Some("OnFailure"), None).await;
    sync(&runtime, &pod).await;
    let id = node
        .containers
        .state
        .lock()
        .unwrap()
        .starts
        .last()
        .unwrap()
        .clone();
    node.containers.exit(&id, 1);
    let status = sync_until(&runtime, &pod, |s| s.container_statuses[0].ready).await;
    assert_eq!(status.container_statuses[0].restart_count, 1);
}

#[tokio::test]
async fn failed_pulls_and_starts_are_reported_and_retried() {
    let node = Node::new();
    let runtime = node.runtime().await;
    *node.images.broken.lock().unwrap() = Some("manifest unknown".into());
    let pod = node.pod("web-1", None, None).await;
    let synced = sync(&runtime, &pod).await;
    assert_eq!(synced.status.phase, PodPhase::Pending);
    assert_eq!(synced.status.reason.as_deref(), Some("ErrImagePull"));
    assert!(
        synced
            .status
            .message
            .as_deref()
            .unwrap()
            .contains("manifest unknown")
    );
    let synced = sync(&runtime, &pod).await;
    assert_eq!(synced.status.reason.as_deref(), Some("ImagePullBackOff"));

    *node.images.broken.lock().unwrap() = None;
    node.containers.state.lock().unwrap().refuse = Some("exec: \"/bin/nope\": no such file".into());
    let status = sync_until(&runtime, &pod, |s| {
        s.reason.as_deref() == Some("CreateContainerError")
    })
    .await;
    assert!(status.message.unwrap().contains("/bin/nope"));
    node.containers.state.lock().unwrap().refuse = None;
    let status = sync_until(&runtime, &pod, |s| s.phase == PodPhase::Running).await;
    assert_eq!(
        status.container_statuses[0].restart_count, 0,
        "a failed start is no restart"
    );
}

#[tokio::test]
async fn removal_stops_and_cleans_everything() {
    let node = Node::new();
    node.objects
        .import_ip_pools(
            wharf_api::parse_ip_pools(
                "apiVersion: wharf.io/v1\nkind: IpPool\nmetadata: {name: web-pool}\nspec: {cidr: 10.77.0.0/24, gateway: 10.77.0.1, ranges: [{start: 10.77.0.10, end: 10.77.0.12}]}\n",
            )
            .unwrap()
            .0,
        )
        .await
        .unwrap();
    let runtime = node.runtime().await;
    let pooled = node.pod("web-1", None, Some("web-pool")).await;
    let local = node.pod("web-2", None, None).await;
    let status = sync(&runtime, &pooled).await.status;
    let ip: Ipv4Addr = status.pod_ip.unwrap().parse().unwrap();
    assert!((10..=12).contains(&ip.octets()[3]), "{ip}");
    assert_eq!(node.objects.pool_claims("web-pool").await.unwrap().len(), 1);
    sync(&runtime, &local).await;
    assert_eq!(runtime.pods().await.len(), 2);

    // A stale uid does not remove the pod.
    runtime.remove("shop", "web-1", Some("someone-else")).await;
    assert_eq!(runtime.pods().await.len(), 2);
    runtime
        .remove("shop", "web-1", Some(&pooled.metadata.uid))
        .await;
    runtime.remove("shop", "web-2", None).await;
    assert!(runtime.pods().await.is_empty());
    {
        let state = node.containers.state.lock().unwrap();
        assert_eq!(state.stopped.len(), 2);
        assert!(
            state
                .stopped
                .iter()
                .all(|(_, grace)| *grace == Duration::from_secs(7))
        );
        assert_eq!(state.removed.len(), 2);
    }
    assert!(node.network.pods().is_empty());
    assert!(
        node.objects
            .pool_claims("web-pool")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!node.data.join("pods/shop_web-1").exists());
    assert_eq!(
        std::fs::read_dir(node.data.join("addresses"))
            .unwrap()
            .count(),
        0,
        "the local address is back"
    );
}

#[tokio::test]
async fn a_restarted_agent_adopts_its_pods() {
    let node = Node::new();
    let pod = node.pod("web-1", None, None).await;
    let before = {
        let runtime = node.runtime().await;
        sync(&runtime, &pod).await.status
    };
    let runtime = node.runtime().await;
    assert_eq!(
        runtime.pods().await,
        [("shop".to_string(), "web-1".to_string())]
    );
    let after = sync(&runtime, &pod).await.status;
    assert_eq!(after, before, "same address, same start, still running");
    assert_eq!(
        node.containers.state.lock().unwrap().starts.len(),
        1,
        "not started again"
    );

    // A new pod under the old name replaces it.
    node.objects.delete_pod("shop", "web-1").await.unwrap();
    let replacement = node.pod("web-1", None, None).await;
    sync(&runtime, &replacement).await;
    let (removed, starts) = {
        let state = node.containers.state.lock().unwrap();
        (state.removed.len(), state.starts.len())
    };
    assert_eq!((removed, starts), (1, 2));
}

/// Syncs `pod`, which a volume must hold `Pending` (`FailedMount`) with
/// no container started; returns the status message.
/// Gives the pod `volume` alone, mounted at `path` in its first container,
/// with `fs_group` as the pod's fsGroup.
fn mount_one_volume(pod: &mut Pod, volume: wharf_api::Volume, path: &str, fs_group: u32) {
    pod.spec.containers[0].volume_mounts = vec![wharf_api::VolumeMount {
        name: volume.name.clone(),
        mount_path: path.into(),
        ..Default::default()
    }];
    pod.spec.volumes = vec![volume];
    pod.spec.security_context = Some(wharf_api::PodSecurityContext {
        fs_group: Some(fs_group),
        ..Default::default()
    });
}

async fn held_by_a_volume(node: &Node, runtime: &ContainerRuntime, pod: &Pod) -> String {
    let status = sync(runtime, pod).await.status;
    assert_eq!(status.phase, PodPhase::Pending);
    assert_eq!(status.reason.as_deref(), Some("FailedMount"));
    assert!(node.containers.state.lock().unwrap().starts.is_empty());
    status.message.unwrap_or_default()
}

#[tokio::test]
async fn volumes_are_made_before_the_containers_and_removed_with_the_pod() {
    let node = Node::new();
    let runtime = node.runtime().await;
    let mut pod = node.pod("vol-1", None, None).await;
    pod.spec.volumes = vec![wharf_api::Volume {
        name: "host".into(),
        host_path: Some(wharf_api::HostPathVolume {
            path: "/nonexistent/wharf-test".into(),
            kind: Some("Directory".into()),
        }),
        ..Default::default()
    }];
    // A volume that cannot be made holds every container back.
    let message = held_by_a_volume(&node, &runtime, &pod).await;
    assert!(
        message.contains("volume host") && message.contains("/nonexistent/wharf-test"),
        "{message}"
    );

    pod.spec.volumes = vec![wharf_api::Volume {
        name: "cache".into(),
        empty_dir: Some(Default::default()),
        ..Default::default()
    }];
    pod.spec.containers[0].volume_mounts = vec![wharf_api::VolumeMount {
        name: "cache".into(),
        mount_path: "/cache".into(),
        read_only: true,
        ..Default::default()
    }];
    let runtime = node.runtime().await;
    let status = sync(&runtime, &pod).await.status;
    assert_eq!(status.phase, PodPhase::Running, "{status:?}");
    let volume = {
        let state = node.containers.state.lock().unwrap();
        let launch = state.running.values().next().unwrap();
        assert_eq!(launch.volumes.len(), 1);
        assert_eq!(launch.volumes[0].destination, "/cache");
        assert!(launch.volumes[0].read_only);
        launch.volumes[0].root.clone()
    };
    assert!(volume.is_dir(), "{}", volume.display());
    runtime.remove("shop", "vol-1", None).await;
    assert!(!volume.exists(), "the emptyDir goes with the pod");
}

#[tokio::test]
async fn claim_volumes_bind_the_claims_directory_which_outlives_the_pod() {
    let node = Node::new();
    let runtime = node.runtime().await;
    let mut pod = node.pod("db-1", None, None).await;
    let claim_volume = wharf_api::Volume {
        name: "data".into(),
        persistent_volume_claim: Some(wharf_api::ClaimVolume {
            claim_name: "data".into(),
            read_only: true,
        }),
        ..Default::default()
    };
    mount_one_volume(&mut pod, claim_volume, "/data", 4321);
    // A claim not bound to this node holds the pod, naming it.
    let message = held_by_a_volume(&node, &runtime, &pod).await;
    assert!(
        message.contains("\"data\"") && message.contains("node-1"),
        "{message}"
    );
    let mut claim = wharf_api::PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: "data".into(),
            project: Some("shop".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    claim.spec.resources.requests = BTreeMap::from([("storage".into(), "1Gi".into())]);
    let claim = node.objects.create(claim).await.unwrap();
    node.objects
        .bind_claim("shop", "data", "node-1")
        .await
        .unwrap();
    let claim_dir = node.data.join("claims/shop").join(&claim.metadata.uid);

    let runtime = node.runtime().await;
    let status = sync(&runtime, &pod).await.status;
    assert_eq!(status.phase, PodPhase::Running, "{status:?}");
    let volume = {
        let state = node.containers.state.lock().unwrap();
        let launch = state.running.values().next().unwrap();
        assert!(launch.volumes[0].read_only, "readOnly on the claim volume");
        launch.volumes[0].root.clone()
    };
    std::fs::write(volume.join("kept.txt"), "hello").unwrap();
    assert_eq!(
        std::fs::read_to_string(claim_dir.join("kept.txt")).unwrap(),
        "hello",
        "the volume is the claim's directory"
    );
    let meta = std::fs::metadata(&claim_dir).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), 4321);
    runtime.remove("shop", "db-1", None).await;
    assert!(!volume.exists());
    runtime.release_volumes().await;
    assert!(
        claim_dir.join("kept.txt").exists(),
        "the data stays while the claim is bound here"
    );
    // A restarted agent keeps it too; once the claim is gone, so is the data.
    let runtime = node.runtime().await;
    runtime.release_volumes().await;
    assert!(claim_dir.join("kept.txt").exists());
    node.objects.delete_claim("shop", "data").await.unwrap();
    runtime.release_volumes().await;
    assert!(!claim_dir.exists());
}

#[tokio::test]
async fn config_map_volumes_wait_for_their_object_and_mount_read_only() {
    let node = Node::new();
    let runtime = node.runtime().await;
    let mut pod = node.pod("conf-1", None, None).await;
    let conf_volume = wharf_api::Volume {
        name: "conf".into(),
        config_map: Some(wharf_api::ConfigMapVolume {
            name: "app".into(),
            items: vec![wharf_api::KeyToPath {
                key: "mode".into(),
                path: "etc/mode".into(),
                mode: Some(0o400),
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    mount_one_volume(&mut pod, conf_volume, "/etc/app", 4321);
    // A missing ConfigMap holds the pod, naming it.
    let message = held_by_a_volume(&node, &runtime, &pod).await;
    assert!(
        message.contains("volume conf") && message.contains("configmap \"app\" not found"),
        "{message}"
    );

    let mut config_map = wharf_api::ConfigMap::default();
    config_map.metadata.name = "app".into();
    config_map.metadata.project = Some("shop".into());
    config_map.data.insert("mode".into(), "prod".into());
    node.objects.create(config_map).await.unwrap();
    let status = sync(&runtime, &pod).await.status;
    assert_eq!(status.phase, PodPhase::Running, "{status:?}");
    let source = {
        let state = node.containers.state.lock().unwrap();
        let launch = state.running.values().next().unwrap();
        launch.volumes[0].clone()
    };
    assert!(source.read_only, "the agent's files are mounted read-only");
    let file = source.root.join("etc/mode");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "prod");
    // The fsGroup owns the file and may read it.
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), 4321);
    let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
    assert_eq!(mode & 0o777, 0o440);
    runtime.remove("shop", "conf-1", None).await;
    assert!(!source.root.exists(), "the volume goes with the pod");
}

#[tokio::test]
async fn host_network_pods_take_the_nodes_address_and_no_network() {
    let node = Node::new();
    let runtime = node.runtime().await;
    let mut pod = node.pod("web-1", None, None).await;
    pod.spec.host_network = true;
    pod.spec.containers[0].ports = vec![wharf_api::ContainerPort {
        container_port: 8080,
        ..Default::default()
    }];
    let status = sync(&runtime, &pod).await.status;
    assert_eq!(status.phase, PodPhase::Running, "{status:?}");
    assert_eq!(status.pod_ip.as_deref(), Some("192.0.2.1"));
    assert!(node.network.pods().is_empty(), "no namespace, no veth");
    assert_eq!(
        std::fs::read_dir(node.data.join("addresses"))
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "no local address claimed"
    );
    {
        let state = node.containers.state.lock().unwrap();
        let launch = state.running.values().next().unwrap();
        assert_eq!(launch.netns, None, "the agent's own namespace");
        assert!(launch.security.host_network);
    }
    assert_eq!(
        runtime.pod_ip("shop", "web-1").await,
        Some(Ipv4Addr::new(192, 0, 2, 1))
    );
}

/// The node's runtime forwarding host ports through `forwards`.
async fn forwarding(
    node: &Node,
    forwards: &Arc<wharf_net::testing::MemoryHostPorts>,
) -> ContainerRuntime {
    let runtime = node.runtime().await;
    runtime.with_host_ports(forwards.clone()).await.unwrap()
}

#[tokio::test]
async fn host_ports_are_forwarded_while_the_pod_lives_and_after_a_restart() {
    let node = Node::new();
    let forwards = Arc::new(wharf_net::testing::MemoryHostPorts::default());
    let mut pod = node.pod("web-1", None, None).await;
    pod.spec.containers[0].ports = vec![wharf_api::ContainerPort {
        container_port: 80,
        host_port: Some(8080),
        ..Default::default()
    }];
    let other = node.pod("web-2", None, None).await;
    {
        let runtime = forwarding(&node, &forwards).await;
        let status = sync(&runtime, &pod).await.status;
        assert_eq!(status.phase, PodPhase::Running, "{status:?}");
        let applied = forwards.applied();
        let list = applied.values().next().expect("the pod's forwards");
        assert_eq!(list[0].host_port, 8080);
        assert_eq!(list[0].container_port, 80);
        assert_eq!(Some(list[0].pod_ip.to_string()), status.pod_ip);
        sync(&runtime, &other).await;
        assert_eq!(forwards.applied().len(), 1, "no host port, no forward");
    }

    // A restarted agent writes the forwards of the pods it adopts.
    forwards.apply(&BTreeMap::new()).await.unwrap();
    let runtime = forwarding(&node, &forwards).await;
    assert_eq!(forwards.applied().len(), 1);
    runtime.remove("shop", "web-1", None).await;
    assert!(forwards.applied().is_empty());

    // Without forwarding the pod is held back, saying why.
    let bare = node.runtime().await;
    let status = sync(&bare, &pod).await.status;
    assert_eq!(status.reason.as_deref(), Some("HostPortSetupFailed"));
    assert_eq!(status.phase, PodPhase::Pending, "{status:?}");
}

/// A pod whose container has `probe` as its `kind` probe (every second).
async fn probed_pod(node: &Node, name: &str, field: &str, probe: &str) -> Pod {
    let probe: wharf_api::Probe = serde_json::from_str(probe).unwrap();
    let mut pod = node.pod(name, None, None).await;
    let container = &mut pod.spec.containers[0];
    match field {
        "readinessProbe" => container.readiness_probe = Some(probe),
        _ => container.liveness_probe = Some(probe),
    }
    pod
}

/// A loopback port nothing listens on (for now).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn readiness_follows_the_probe_both_ways() {
    let node = Node::new();
    let runtime = node.runtime().await;
    let port = free_port();
    let probe = format!(
        r#"{{"tcpSocket": {{"port": {port}, "host": "127.0.0.1"}}, "periodSeconds": 1, "failureThreshold": 1}}"#
    );
    let pod = probed_pod(&node, "web-1", "readinessProbe", &probe).await;
    let running = sync_until(&runtime, &pod, |s| s.phase == PodPhase::Running).await;
    assert!(
        !running.container_statuses[0].ready,
        "not ready before a pass"
    );
    assert!(!running.is_ready());

    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let ready = sync_tries(&runtime, &pod, 400, |s| s.container_statuses[0].ready).await;
    assert!(ready.is_ready(), "{:?}", ready.conditions);

    drop(listener);
    let unready = sync_tries(&runtime, &pod, 400, |s| !s.container_statuses[0].ready).await;
    let condition = unready
        .conditions
        .iter()
        .find(|c| c.kind == "Ready")
        .unwrap();
    assert_eq!(condition.reason.as_deref(), Some("ContainersNotReady"));
    assert!(
        node.containers.state.lock().unwrap().stopped.is_empty(),
        "readiness never kills"
    );
}

#[tokio::test]
async fn a_failed_liveness_probe_restarts_the_container() {
    let node = Node::new();
    let runtime = node.runtime().await;
    let probe = format!(
        r#"{{"tcpSocket": {{"port": {}, "host": "127.0.0.1"}}, "periodSeconds": 1, "failureThreshold": 2, "terminationGracePeriodSeconds": 2}}"#,
        free_port()
    );
    let pod = probed_pod(&node, "web-1", "livenessProbe", &probe).await;
    let status = sync_tries(&runtime, &pod, 400, |s| {
        s.container_statuses[0].restart_count == 1 && s.container_statuses[0].ready
    })
    .await;
    assert_eq!(
        status.container_statuses[0].last_state,
        Some(ContainerState::Terminated {
            exit_code: 137,
            reason: "Error".into()
        })
    );
    let stopped = node.containers.state.lock().unwrap().stopped.clone();
    assert_eq!(stopped[0].1, Duration::from_secs(2), "the probe's grace");
}

/// A pod whose container has `lifecycle` (JSON).
async fn hooked_pod(node: &Node, name: &str, lifecycle: &str) -> Pod {
    let mut pod = node.pod(name, None, None).await;
    pod.spec.containers[0].lifecycle = Some(serde_json::from_str(lifecycle).unwrap());
    pod
}

/// A pod whose `hook` is an HTTP GET to a loopback port nothing listens on.
async fn hook_to_nowhere(node: &Node, hook: &str) -> Pod {
    let lifecycle = format!(
        r#"{{"{hook}": {{"httpGet": {{"port": {}, "host": "127.0.0.1"}}}}}}"#,
        free_port()
    );
    hooked_pod(node, "web-1", &lifecycle).await
}

/// The reasons of the events reported so far, but the `Pulled` every
/// container start reports.
fn reasons(node: &Node) -> Vec<String> {
    let events = node.events.lock().unwrap();
    events
        .iter()
        .map(|e| e.reason.clone())
        .filter(|reason| reason != "Pulled")
        .collect()
}

#[tokio::test]
async fn a_started_container_reports_where_its_image_came_from() {
    let node = Node::new();
    let runtime = node.runtime().await;
    let pod = node.pod("web-1", None, None).await;
    let status = sync(&runtime, &pod).await.status;
    assert_eq!(status.phase, PodPhase::Running, "{status:?}");
    let events = node.events.lock().unwrap();
    let pulled: Vec<&str> = events
        .iter()
        .filter(|e| e.reason == "Pulled")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(pulled.len(), 1, "{pulled:?}");
    assert!(
        pulled[0].ends_with(
            ": 1.0 MiB from the registry, 3.0 MiB from peers, 0.0 MiB from the node's cache"
        ),
        "{pulled:?}"
    );
}

#[tokio::test]
async fn pre_stop_runs_before_sigterm_within_the_grace_period() {
    let node = Node::new();
    let runtime = node.runtime().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let lifecycle = format!(
        r#"{{"preStop": {{"httpGet": {{"path": "/drain", "port": {port}, "host": "127.0.0.1"}}}}}}"#
    );
    let pod = hooked_pod(&node, "web-1", &lifecycle).await;
    sync_until(&runtime, &pod, |s| s.phase == PodPhase::Running).await;
    // The hook's request is answered only once the test saw that nothing
    // was stopped yet.
    let containers = node.containers.clone();
    let drained = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 1024];
        let n = tokio::io::AsyncReadExt::read(&mut conn, &mut request)
            .await
            .unwrap();
        let stopped_before = containers.state.lock().unwrap().stopped.len();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        tokio::io::AsyncWriteExt::write_all(&mut conn, b"HTTP/1.1 200 OK\r\n\r\n")
            .await
            .unwrap();
        (
            String::from_utf8_lossy(&request[..n]).into_owned(),
            stopped_before,
        )
    });
    let uid = pod.metadata.uid.clone();
    runtime
        .terminate("shop", "web-1", &uid, Duration::from_secs(5))
        .await;
    let (request, stopped_before) = drained.await.unwrap();
    assert!(request.starts_with("GET /drain HTTP/1.1"), "{request}");
    assert_eq!(stopped_before, 0, "the hook runs before the stop");
    let stopped = node.containers.state.lock().unwrap().stopped.clone();
    assert_eq!(stopped.len(), 1);
    // The hook's time comes out of the grace period.
    assert!(
        stopped[0].1 < Duration::from_secs(4) && stopped[0].1 >= Duration::from_secs(3),
        "{stopped:?}"
    );
    assert!(reasons(&node).is_empty(), "{:?}", reasons(&node));
}

#[tokio::test]
async fn a_failed_pre_stop_is_reported_and_the_container_still_stops() {
    let node = Node::new();
    let runtime = node.runtime().await;
    let pod = hook_to_nowhere(&node, "preStop").await;
    sync_until(&runtime, &pod, |s| s.phase == PodPhase::Running).await;
    runtime.remove("shop", "web-1", None).await;
    assert_eq!(reasons(&node), ["FailedPreStopHook"]);
    let message = node
        .events
        .lock()
        .unwrap()
        .iter()
        .find(|e| e.reason == "FailedPreStopHook")
        .unwrap()
        .message
        .clone();
    assert!(
        message.contains("preStop hook of container web failed: dial tcp"),
        "{message}"
    );
    let stopped = node.containers.state.lock().unwrap().stopped.clone();
    assert_eq!(stopped.len(), 1);
    assert!(
        stopped[0].1 >= Duration::from_secs(6),
        "the pod's own grace: {stopped:?}"
    );
}

/// Terminates a running pod whose `preStop` sleeps 5 s with `grace`:
/// how long that took, and the grace its container's stop got.
async fn terminate_sleeper(grace: Duration) -> (Duration, Duration) {
    let node = Node::new();
    let runtime = node.runtime().await;
    let pod = hooked_pod(&node, "web-1", r#"{"preStop": {"sleep": {"seconds": 5}}}"#).await;
    sync_until(&runtime, &pod, |s| s.phase == PodPhase::Running).await;
    let began = Instant::now();
    runtime
        .terminate("shop", "web-1", &pod.metadata.uid, grace)
        .await;
    let stopped = node.containers.state.lock().unwrap().stopped.clone();
    (began.elapsed(), stopped[0].1)
}

#[tokio::test]
async fn a_pre_stop_that_uses_up_the_grace_leaves_the_minimum() {
    let (took, stop_grace) = terminate_sleeper(Duration::from_secs(1)).await;
    assert!(took >= Duration::from_secs(1));
    assert!(
        took < Duration::from_secs(4),
        "the sleep is cut at the grace"
    );
    assert_eq!(stop_grace, Duration::from_secs(2), "kubelet's minimum");
}

#[tokio::test]
async fn a_force_stop_runs_no_pre_stop() {
    let (took, stop_grace) = terminate_sleeper(Duration::ZERO).await;
    assert!(took < Duration::from_secs(1));
    assert_eq!(stop_grace, Duration::ZERO);
}

#[tokio::test]
async fn a_failed_post_start_stops_the_container_which_restarts() {
    let node = Node::new();
    let runtime = node.runtime().await;
    let pod = hook_to_nowhere(&node, "postStart").await;
    sync(&runtime, &pod).await;
    assert_eq!(reasons(&node), ["FailedPostStartHook"]);
    assert_eq!(node.containers.state.lock().unwrap().stopped.len(), 1);
    let status = sync_until(&runtime, &pod, |s| {
        s.container_statuses[0].restart_count >= 1
    })
    .await;
    assert_eq!(status.container_statuses[0].restart_count, 1);
}

#[tokio::test]
async fn a_passing_post_start_leaves_the_container_running() {
    let node = Node::new();
    let runtime = node.runtime().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut conn, _) = listener.accept().unwrap();
        let _ = conn.read(&mut [0u8; 1024]);
        conn.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
    });
    let lifecycle =
        format!(r#"{{"postStart": {{"httpGet": {{"port": {port}, "host": "127.0.0.1"}}}}}}"#);
    let pod = hooked_pod(&node, "web-1", &lifecycle).await;
    let status = sync(&runtime, &pod).await.status;
    assert_eq!(status.phase, PodPhase::Running, "{status:?}");
    assert!(reasons(&node).is_empty(), "{:?}", reasons(&node));
    assert!(node.containers.state.lock().unwrap().stopped.is_empty());
}

/// The agent's commit endpoint refuses, before anything is paused, what
/// the server refused (with its status), a container that does not run
/// here and one without an overlay root; and ends every grant it got.
#[tokio::test]
async fn commits_are_refused_before_pausing_and_their_grants_end() {
    use axum::extract::{Path as UrlPath, State};
    use axum::http::{HeaderMap, StatusCode, header};

    let mut node = Node::new();
    let runc_root = node._dir.path().join("runc");
    node.containers = Arc::new(FakeContainers {
        runc: Some(wharf_runc::Runc::new("/nonexistent/runc", &runc_root)),
        ..FakeContainers::default()
    });
    let images = wharf_image::ImageStore::open(
        node._dir.path().join("images"),
        wharf_image::ImageStoreOptions::default(),
    )
    .await
    .unwrap();
    let runtime = node
        .runtime()
        .await
        .with_commits(crate::commit::CommitSource {
            store: Arc::new(images),
            credentials: None,
            default_registry: None,
        });
    let pod = node.pod("web-1", None, None).await;
    sync_until(&runtime, &pod, |s| s.phase == PodPhase::Running).await;
    let ended: Arc<Mutex<Vec<String>>> = Arc::default();
    let state = Arc::new(crate::endpoint::EndpointState {
        api: Arc::new(PoolAddresses(
            node.objects.clone(),
            node.events.clone(),
            ended.clone(),
        )),
        runtime: Arc::new(runtime),
        node: "node-1".into(),
        pushes: tokio::sync::Semaphore::new(1),
        latest: Default::default(),
    });
    let ask = |token: &str, body: &str| {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        let path = UrlPath(("shop".to_string(), "web-1".to_string()));
        crate::commit::commit(
            State(state.clone()),
            path,
            headers,
            axum::body::Bytes::from(body.to_string()),
        )
    };
    let text = |response: axum::response::Response| async move {
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    };

    let (status, message) = text(ask("nope", r#"{"image":"shop/snap:1"}"#).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        message.contains("may not push to repository shop/snap"),
        "{message}"
    );
    assert!(ended.lock().unwrap().is_empty(), "no grant was given");

    let (status, message) = text(ask("ok", r#"{"image":"shop/snap:1","pausee":1}"#).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{message}");

    let body = r#"{"image":"shop/snap:1","container":"sidecar"}"#;
    let (status, message) = text(ask("ok", body).await).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        message.contains("container sidecar of pod shop/web-1 is not running on this node"),
        "{message}"
    );

    let (status, message) = text(ask("ok", r#"{"image":"shop/snap:1"}"#).await).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(message.contains("has no overlay root"), "{message}");
    assert_eq!(*ended.lock().unwrap(), ["grant-0", "grant-1"]);
    // Nothing was stopped or restarted.
    let state_now = node.containers.state.lock().unwrap();
    assert!(state_now.stopped.is_empty() && state_now.starts.len() == 1);
}

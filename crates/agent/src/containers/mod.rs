//! Running pods for real: an address (from the pod's pool, by compare-and-
//! swap in the control plane, or from the node-local range), a network
//! namespace plumbed to the node bridge, images pulled into the shared
//! layer cache, and containers started, watched, restarted with back-off
//! and stopped — all remembered on disk so a restarted agent adopts what
//! runs.
//!
//! ```text
//! sync(pod): address -> network -> per container: pull -> start | watch exit -> restart?
//! remove(pod): stop (SIGTERM, grace, SIGKILL) -> remove containers -> network -> address
//! ```

mod driver;
mod images;
mod record;
mod runc_driver;
mod setup;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::future::join_all;
use wharf_api::{ContainerState, ContainerStatus, Pod, PodPhase, PodStatus};
use wharf_net::{NetworkDriver, PodNetworkSpec};

pub use driver::{ContainerDriver, Exit, Image, ImagePuller, Launch, Liveness, PullPolicy};
pub use images::ImageStorePuller;
pub use record::{Address, ContainerRecord, LocalAddresses, PodRecord};
pub use runc_driver::RuncDriver;
pub use setup::NodeSetup;

use crate::api::NodeApi;
use crate::runtime::{Progress, Runtime, Synced, now_millis};

/// A container that ran this long has its restart back-off reset.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);
/// How soon a step that failed for want of the control plane is retried.
const RETRY: Duration = Duration::from_secs(2);

/// Settings of a [`ContainerRuntime`].
#[derive(Clone, Debug)]
pub struct ContainerRuntimeConfig {
    /// The node's name: only pods bound to it are run.
    pub node: String,
    /// Where pod records and container directories live.
    pub data_dir: PathBuf,
    /// The node's address, reported as the pods' `hostIP`.
    pub host_ip: Option<String>,
    /// The node-local range for pods that ask for no pool.
    pub local_subnet: wharf_api::Subnet,
    /// Its gateway (on the node bridge).
    pub local_gateway: Ipv4Addr,
    /// First delay before restarting a container that exited; doubles up
    /// to `max_backoff`.
    pub backoff: Duration,
    /// Longest restart delay.
    pub max_backoff: Duration,
    /// How often running containers are looked at for an exit.
    pub poll: Duration,
}

impl ContainerRuntimeConfig {
    /// Defaults for node `node` keeping state in `data_dir`: local range
    /// 10.88.0.0/24 (gateway 10.88.0.1), back-off 1 s doubling to 5 min,
    /// exits noticed within 500 ms.
    pub fn new(node: &str, data_dir: PathBuf) -> ContainerRuntimeConfig {
        ContainerRuntimeConfig {
            node: node.to_string(),
            data_dir,
            host_ip: None,
            local_subnet: wharf_api::Subnet::parse("10.88.0.0/24").expect("valid"),
            local_gateway: Ipv4Addr::new(10, 88, 0, 1),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            poll: Duration::from_millis(500),
        }
    }
}

type PodKey = (String, String);

/// A restart delay in force.
#[derive(Clone, Copy, Debug)]
struct Backoff {
    delay: Duration,
    not_before: Instant,
}

/// What the node holds of one pod, with what is only worth keeping in memory.
#[derive(Default)]
struct PodSlot {
    record: Option<PodRecord>,
    images: HashMap<String, Image>,
    backoff: HashMap<String, Backoff>,
    /// Containers waiting, with why (`ErrImagePull`, ...) and the detail.
    waiting: HashMap<String, (String, String)>,
    /// The last failure to pull or start each container, shown while it
    /// backs off.
    failures: HashMap<String, (&'static str, String)>,
    /// Pod-level trouble (address, network), with the detail.
    trouble: Option<(String, String)>,
    /// Whether this agent run has seen the pod's namespace.
    network_checked: bool,
}

/// Runs pods' containers on this node.
pub struct ContainerRuntime {
    config: ContainerRuntimeConfig,
    api: Arc<dyn NodeApi>,
    images: Arc<dyn ImagePuller>,
    containers: Arc<dyn ContainerDriver>,
    network: Arc<dyn NetworkDriver>,
    local: LocalAddresses,
    pods: std::sync::Mutex<HashMap<PodKey, Arc<tokio::sync::Mutex<PodSlot>>>>,
}

impl ContainerRuntime {
    /// A runtime over these parts, adopting the pods recorded in the data
    /// directory by an earlier run.
    pub fn open(
        config: ContainerRuntimeConfig,
        api: Arc<dyn NodeApi>,
        images: Arc<dyn ImagePuller>,
        containers: Arc<dyn ContainerDriver>,
        network: Arc<dyn NetworkDriver>,
    ) -> ContainerRuntime {
        let local = LocalAddresses::new(
            config.data_dir.join("addresses"),
            config.local_subnet,
            config.local_gateway,
        );
        let mut pods = HashMap::new();
        for record in PodRecord::load_all(&config.data_dir.join("pods")) {
            tracing::info!(
                project = record.project,
                pod = record.name,
                "adopting a pod"
            );
            let key = (record.project.clone(), record.name.clone());
            let slot = PodSlot {
                record: Some(record),
                ..PodSlot::default()
            };
            pods.insert(key, Arc::new(tokio::sync::Mutex::new(slot)));
        }
        ContainerRuntime {
            config,
            api,
            images,
            containers,
            network,
            local,
            pods: std::sync::Mutex::new(pods),
        }
    }

    fn slot(&self, key: &PodKey) -> Arc<tokio::sync::Mutex<PodSlot>> {
        self.pods
            .lock()
            .expect("pod map lock")
            .entry(key.clone())
            .or_default()
            .clone()
    }

    fn pod_dir(&self, project: &str, name: &str) -> PathBuf {
        PodRecord::dir(&self.config.data_dir.join("pods"), project, name)
    }

    /// The log file of a container of a pod on this node, if it has one.
    pub fn log_path(&self, project: &str, name: &str, container: &str) -> Option<PathBuf> {
        let path = self
            .containers
            .log_path(&self.container_dir(project, name, container));
        path.exists().then_some(path)
    }

    fn save(&self, record: &PodRecord) {
        let dir = self.pod_dir(&record.project, &record.name);
        if let Err(err) = record.save(&dir) {
            tracing::error!(error = %err, pod = record.name, "saving the pod record failed");
        }
    }

    async fn claim_address(&self, pod: &Pod, project: &str) -> Result<Address, String> {
        let name = &pod.metadata.name;
        match self.api.claim_ip(project, name).await {
            Ok(Some(claim)) => Ok(Address {
                ip: claim.ip,
                prefix_len: claim.prefix_len,
                gateway: claim.gateway,
                pool: Some(claim.pool),
            }),
            Ok(None) => {
                let local = &self.local;
                let uid = pod.metadata.uid.clone();
                local.claim(&uid).map_err(|e| e.to_string())
            }
            Err(err) => Err(err.to_string()),
        }
    }

    /// Takes the pod one step further; the slot is locked by the caller.
    async fn advance(
        &self,
        pod: &Pod,
        slot: &mut PodSlot,
        progress: Progress<'_>,
    ) -> Option<Duration> {
        let project = pod.metadata.project.clone().unwrap_or_default();
        let record = slot.record.as_mut().expect("record made by sync");
        slot.trouble = None;
        if record.address.is_none() {
            match self.claim_address(pod, &project).await {
                Ok(address) => {
                    record.address = Some(address);
                    self.save(record);
                }
                Err(message) => {
                    slot.trouble = Some(("IPAllocationFailed".into(), message));
                    return Some(RETRY);
                }
            }
        }
        let address = record.address.clone().expect("claimed above");
        // Once per agent run, check the namespace survived (a reboot loses it).
        let netns_gone = match &record.netns {
            None => true,
            Some(path) => !slot.network_checked && !path.exists(),
        };
        slot.network_checked = true;
        if netns_gone {
            let spec = PodNetworkSpec {
                pod_id: record.pod_id.clone(),
                ip: address.ip,
                prefix_len: address.prefix_len,
                gateway: address.gateway,
            };
            match self.network.setup(&spec).await {
                Ok(network) => {
                    record.netns = Some(network.netns_path);
                    self.save(record);
                }
                Err(err) => {
                    slot.trouble = Some(("NetworkSetupFailed".into(), err.to_string()));
                    return Some(RETRY);
                }
            }
        }
        let policy = pod.spec.restart_policy.as_deref().unwrap_or("Always");
        let mut again: Option<Duration> = None;
        let mut soonest = |d: Duration| again = Some(again.map_or(d, |a| a.min(d)));
        for container in &pod.spec.containers {
            let dir = self.container_dir(&project, &pod.metadata.name, &container.name);
            let record = slot.record.as_mut().expect("record made by sync");
            let entry = record
                .containers
                .entry(container.name.clone())
                .or_insert_with(|| ContainerRecord {
                    id: format!("{}-{}", record.pod_id, container.name),
                    ..ContainerRecord::default()
                });
            if entry.running {
                match self.containers.liveness(&entry.id, &dir).await {
                    Liveness::Running => {
                        soonest(self.config.poll);
                        continue;
                    }
                    Liveness::Exited(exit) => {
                        tracing::info!(
                            pod = pod.metadata.name,
                            container = container.name,
                            code = exit.code,
                            reason = exit.reason,
                            "container exited"
                        );
                        let ran = entry
                            .started_at
                            .map(|s| Duration::from_millis(exit.finished_at.saturating_sub(s)));
                        entry.running = false;
                        entry.last_exit = Some(exit);
                        let reset = ran.is_some_and(|r| r >= BACKOFF_RESET_AFTER);
                        self.back_off(slot, &container.name, reset);
                        let record = slot.record.as_ref().expect("record made by sync");
                        self.save(record);
                    }
                }
            }
            let record = slot.record.as_mut().expect("record made by sync");
            let entry = record
                .containers
                .get_mut(&container.name)
                .expect("made above");
            if entry
                .last_exit
                .as_ref()
                .is_some_and(|exit| !restarts(policy, exit))
            {
                continue;
            }
            if let Some(backoff) = slot.backoff.get(&container.name) {
                let now = Instant::now();
                if backoff.not_before > now {
                    let wait = backoff.not_before - now;
                    soonest(wait);
                    // Shown to a tenth of a second.
                    let wait = Duration::from_millis(wait.as_millis().div_ceil(100) as u64 * 100);
                    let failure = slot.failures.get(&container.name);
                    let (reason, detail) = match failure {
                        Some(("ErrImagePull" | "ImagePullBackOff", error)) => (
                            "ImagePullBackOff",
                            format!(
                                "back-off {wait:?} pulling image {}: {error}",
                                container.image
                            ),
                        ),
                        Some((reason, error)) => {
                            (*reason, format!("back-off {wait:?} after: {error}"))
                        }
                        None => (
                            "CrashLoopBackOff",
                            format!(
                                "back-off {wait:?} restarting failed container {}",
                                container.name
                            ),
                        ),
                    };
                    let reason = reason.to_string();
                    slot.waiting
                        .insert(container.name.clone(), (reason, detail));

                    continue;
                }
            }
            // Pull (the cache answers quickly once the image is here).
            let image = match slot.images.get(&container.name) {
                Some(image) => image.clone(),
                None => {
                    let report = |line: String| {
                        let mut status = pod.status.clone();
                        status.phase = PodPhase::Pending;
                        status.reason = Some("ContainerCreating".into());
                        status.message = Some(line);
                        progress(status);
                    };
                    match self
                        .images
                        .pull(&container.image, PullPolicy::of(container), &report)
                        .await
                    {
                        Ok(image) => {
                            slot.images.insert(container.name.clone(), image.clone());
                            image
                        }
                        Err(message) => {
                            tracing::warn!(
                                pod = pod.metadata.name,
                                image = container.image,
                                error = message,
                                "image pull failed"
                            );
                            self.fail_start(slot, &container.name, "ErrImagePull", message);
                            soonest(self.config.backoff);
                            continue;
                        }
                    }
                }
            };
            let record = slot.record.as_mut().expect("record made by sync");
            let entry = record
                .containers
                .get_mut(&container.name)
                .expect("made above");
            let launch = Launch {
                id: entry.id.clone(),
                dir: dir.clone(),
                image,
                container: container.clone(),
                hostname: pod.metadata.name.clone(),
                netns: record.netns.clone(),
                ip: Some(address.ip),
            };
            match self.containers.start(&launch).await {
                Ok(()) => {
                    let now = now_millis();
                    if entry.last_exit.is_some() {
                        entry.restart_count += 1;
                    }
                    entry.running = true;
                    entry.started_at = Some(now);
                    record.start_time.get_or_insert(now);
                    self.save(record);
                    slot.waiting.remove(&container.name);
                    slot.failures.remove(&container.name);
                    soonest(self.config.poll);
                }
                Err(message) => {
                    tracing::warn!(
                        pod = pod.metadata.name,
                        container = container.name,
                        error = message,
                        "starting the container failed"
                    );
                    // The image may have been removed from the cache meanwhile.
                    slot.images.remove(&container.name);
                    self.fail_start(slot, &container.name, "CreateContainerError", message);
                    soonest(self.config.backoff);
                }
            }
        }
        again
    }

    /// Notes a container that could not start and backs off.
    fn fail_start(
        &self,
        slot: &mut PodSlot,
        container: &str,
        reason: &'static str,
        message: String,
    ) {
        slot.failures
            .insert(container.to_string(), (reason, message.clone()));
        slot.waiting
            .insert(container.to_string(), (reason.to_string(), message));
        self.back_off(slot, container, false);
    }

    /// Holds a container off for its current delay and doubles the next one
    /// (from the first delay again when `reset`).
    fn back_off(&self, slot: &mut PodSlot, container: &str, reset: bool) {
        let backoff = slot
            .backoff
            .entry(container.to_string())
            .or_insert(Backoff {
                delay: self.config.backoff,
                not_before: Instant::now(),
            });
        if reset {
            backoff.delay = self.config.backoff;
        }
        backoff.not_before = Instant::now() + backoff.delay;
        backoff.delay = (backoff.delay * 2).min(self.config.max_backoff);
    }

    /// Tears down what the node holds of a pod.
    async fn teardown(&self, record: &PodRecord) {
        let pod_dir = self.pod_dir(&record.project, &record.name);
        let grace = Duration::from_secs(record.grace_seconds);
        let stops = record.containers.iter().map(|(name, container)| {
            let dir = self.container_dir(&record.project, &record.name, name);
            async move {
                if let Err(err) = self.containers.stop(&container.id, &dir, grace).await {
                    tracing::warn!(
                        container = container.id,
                        error = err,
                        "stopping the container failed"
                    );
                }
                if let Err(err) = self.containers.remove(&container.id, &dir).await {
                    tracing::warn!(
                        container = container.id,
                        error = err,
                        "removing the container failed"
                    );
                }
            }
        });
        join_all(stops).await;
        if let Err(err) = self.network.teardown(&record.pod_id).await {
            tracing::warn!(pod = record.name, error = %err, "removing the pod network failed");
        }
        if let Some(address) = &record.address {
            match &address.pool {
                None => self.local.release(address.ip, &record.uid),
                Some(_) => {
                    if let Err(err) = self
                        .api
                        .release_ip(&record.project, &record.name, &record.uid)
                        .await
                    {
                        // The control plane's reconciler frees it later.
                        tracing::warn!(pod = record.name, error = %err, "releasing the address failed");
                    }
                }
            }
        }
        if let Err(err) = std::fs::remove_dir_all(&pod_dir)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %pod_dir.display(), error = %err, "removing the pod directory failed");
        }
        tracing::info!(project = record.project, pod = record.name, "pod removed");
    }

    /// The pod's status from what the node holds.
    fn status(&self, pod: &Pod, slot: &PodSlot) -> PodStatus {
        let record = slot.record.as_ref().expect("record made by sync");
        let policy = pod.spec.restart_policy.as_deref().unwrap_or("Always");
        let mut statuses = Vec::new();
        let (mut started, mut finished, mut failed) = (0, 0, 0);
        for container in &pod.spec.containers {
            let entry = record.containers.get(&container.name);
            let waiting = slot.waiting.get(&container.name);
            let state = match (entry, waiting) {
                (Some(e), _) if e.running => ContainerState::Running {
                    started_at: e.started_at.unwrap_or_default(),
                },
                (_, Some((reason, _))) => ContainerState::Waiting {
                    reason: reason.clone(),
                },
                (
                    Some(ContainerRecord {
                        last_exit: Some(exit),
                        ..
                    }),
                    None,
                ) => ContainerState::Terminated {
                    exit_code: exit.code,
                    reason: exit.reason.clone(),
                },
                _ => ContainerState::default(),
            };
            if let Some(entry) = entry {
                if entry.running || entry.last_exit.is_some() {
                    started += 1;
                }
                if let (false, Some(exit)) = (entry.running, &entry.last_exit)
                    && !restarts(policy, exit)
                {
                    finished += 1;
                    if exit.code != 0 {
                        failed += 1;
                    }
                }
            }
            let last_state = entry
                .and_then(|e| e.last_exit.as_ref())
                .map(|exit| ContainerState::Terminated {
                    exit_code: exit.code,
                    reason: exit.reason.clone(),
                })
                .filter(|last| *last != state);
            statuses.push(ContainerStatus {
                name: container.name.clone(),
                image: container.image.clone(),
                ready: entry.is_some_and(|e| e.running),
                restart_count: entry.map_or(0, |e| e.restart_count),
                state,
                last_state,
            });
        }
        let total = pod.spec.containers.len();
        let phase = if total > 0 && finished == total {
            if failed == 0 {
                PodPhase::Succeeded
            } else {
                PodPhase::Failed
            }
        } else if total > 0 && started == total {
            PodPhase::Running
        } else {
            PodPhase::Pending
        };
        let (reason, message) = match (&slot.trouble, phase) {
            (Some((reason, message)), _) => (Some(reason.clone()), Some(message.clone())),
            (None, PodPhase::Pending | PodPhase::Running) => {
                let first = pod
                    .spec
                    .containers
                    .iter()
                    .find_map(|c| slot.waiting.get(&c.name).map(|w| (&c.name, w)));
                match first {
                    Some((name, (reason, message))) => (
                        Some(reason.clone()),
                        Some(format!("container {name}: {message}")),
                    ),
                    None if phase == PodPhase::Pending => (Some("ContainerCreating".into()), None),
                    None => (None, None),
                }
            }
            _ => (None, None),
        };
        PodStatus {
            phase,
            reason,
            message,
            pod_ip: record.address.as_ref().map(|a| a.ip.to_string()),
            host_ip: self.config.host_ip.clone(),
            start_time: record.start_time,
            container_statuses: statuses,
        }
    }
}

/// A short id for a pod from its uid: names its namespace and containers.
fn pod_id(pod: &Pod) -> String {
    let hex: String = pod
        .metadata
        .uid
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_lowercase())
        .take(12)
        .collect();
    if hex.len() == 12 {
        hex
    } else {
        // Pods made outside the control plane may lack a uid.
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (&pod.metadata.project, &pod.metadata.name).hash(&mut hasher);
        format!("{:012x}", hasher.finish() & 0xffff_ffff_ffff)
    }
}

#[async_trait]
impl Runtime for ContainerRuntime {
    async fn sync(&self, pod: &Pod, progress: Progress<'_>) -> Synced {
        let project = pod.metadata.project.clone().unwrap_or_default();
        let key = (project.clone(), pod.metadata.name.clone());
        let slot = self.slot(&key);
        let mut slot = slot.lock().await;
        if let Some(record) = &slot.record
            && record.uid != pod.metadata.uid
        {
            // A new pod of the same name: the old one goes first.
            let old = record.clone();
            self.teardown(&old).await;
            *slot = PodSlot::default();
        }
        if pod.spec.node_name.as_deref() != Some(self.config.node.as_str()) {
            return Synced {
                status: pod.status.clone(),
                again_in: None,
            };
        }
        if slot.record.is_none() {
            let record = PodRecord {
                project,
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
                pod_id: pod_id(pod),
                grace_seconds: pod.spec.termination_grace_period_seconds.unwrap_or(30),
                address: None,
                netns: None,
                start_time: None,
                containers: Default::default(),
            };
            self.save(&record);
            slot.record = Some(record);
        }
        let again_in = self.advance(pod, &mut slot, progress).await;
        Synced {
            status: self.status(pod, &slot),
            again_in,
        }
    }

    async fn remove(&self, project: &str, name: &str, uid: Option<&str>) {
        let key = (project.to_string(), name.to_string());
        let slot = self.slot(&key);
        let mut guard = slot.lock().await;
        let Some(record) = guard.record.clone() else {
            return;
        };
        if uid.is_some_and(|uid| uid != record.uid) {
            return;
        }
        self.teardown(&record).await;
        *guard = PodSlot::default();
        drop(guard);
        let mut pods = self.pods.lock().expect("pod map lock");
        if pods.get(&key).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
            pods.remove(&key);
        }
    }

    async fn pods(&self) -> Vec<(String, String)> {
        let slots: Vec<(PodKey, Arc<tokio::sync::Mutex<PodSlot>>)> = self
            .pods
            .lock()
            .expect("pod map lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut held = Vec::new();
        for (key, slot) in slots {
            if slot.lock().await.record.is_some() {
                held.push(key);
            }
        }
        held
    }
}

impl ContainerRuntime {
    /// The names of the containers the node holds of a pod.
    pub async fn containers_of(&self, project: &str, name: &str) -> Vec<String> {
        let key = (project.to_string(), name.to_string());
        let slot = self.pods.lock().expect("pod map lock").get(&key).cloned();
        match slot {
            Some(slot) => slot
                .lock()
                .await
                .record
                .as_ref()
                .map(|r| r.containers.keys().cloned().collect())
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }

    fn container_dir(&self, project: &str, name: &str, container: &str) -> PathBuf {
        self.pod_dir(project, name)
            .join("containers")
            .join(container)
    }
}

/// Whether a container that ended as `exit` runs again under `policy`
/// (`Always`, the default, `OnFailure` or `Never`).
fn restarts(policy: &str, exit: &Exit) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit.code != 0,
        _ => true,
    }
}

#[cfg(test)]
mod tests;

//! Running pods for real: an address (from the pod's pool, by compare-and-
//! swap in the control plane, or from the node-local range), a network
//! namespace plumbed to the node bridge, images pulled into the shared
//! layer cache, and containers started, watched, restarted with back-off
//! and stopped — all remembered on disk so a restarted agent adopts what
//! runs.
//!
//! ```text
//! sync(pod): address -> network -> per container: pull -> start -> postStart | watch exit -> restart?
//! remove(pod): stop (preStop, SIGTERM, grace left, SIGKILL) -> remove containers -> network -> address
//! terminate(pod, grace): remove with the grace of the deletion; the agent then confirms
//! ```

mod atomic_writer;
mod claim_dirs;
mod conditions;
mod driver;
mod env;
mod hooks;
mod host_ports;
mod images;
mod mounts;
mod probing;
mod record;
mod resolv;
mod runc_driver;
mod sampling;
mod setup;
mod volumes;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::future::join_all;
use wharf_api::{Container, ContainerState, ContainerStatus, Pod, PodPhase, PodStatus, PodUsage};
use wharf_net::{HostPortDriver, NetError, NetworkDriver, PodNetworkSpec};

pub use driver::{
    ContainerDriver, ContainerError, Exit, Image, ImagePuller, Launch, Liveness, PullPolicy,
};
pub use env::{ConfigObjects, ResolvedContainer, expand, resolve};
pub use images::ImageStorePuller;
pub use mounts::mounted_under;
pub use record::{Address, ContainerRecord, LocalAddresses, PodRecord};
pub use runc_driver::RuncDriver;
pub use setup::NodeSetup;
pub(crate) use setup::mounted_layers;
pub use volumes::VolumeSource;

use self::host_ports::{HostPorts, forwards_of};
use self::resolv::resolv_conf_for;
use crate::api::NodeApi;
use crate::dns::DnsServer;
use crate::runtime::{Progress, Runtime, Synced, now_millis};

/// A container that ran this long has its restart back-off reset.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);
/// How soon a step that failed for want of the control plane is retried.
const RETRY: Duration = Duration::from_secs(2);
/// How often the objects of a running pod's configMap and secret volumes
/// are read again for changes (kubelet's sync period is a minute, plus
/// its cache's time to live).
const CONFIG_REFRESH: Duration = Duration::from_secs(10);

/// Settings of a [`ContainerRuntime`].
#[derive(Clone, Debug)]
pub struct ContainerRuntimeConfig {
    /// The node's name: only pods bound to it are run.
    pub node: String,
    /// Where pod records and container directories live.
    pub data_dir: PathBuf,
    /// The node's address, reported as the pods' `hostIP` (and the
    /// `podIP` of pods on the node's network).
    pub host_ip: Option<String>,
    /// The named network namespace the node lives in (a simulated host),
    /// which pods on the node's network join; `None`: the agent's own.
    pub node_netns: Option<PathBuf>,
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
    /// What the node offers pods: stands in for a container's missing
    /// limits in `resourceFieldRef` values, as in Kubernetes.
    pub allocatable: wharf_api::Resources,
    /// The node's resolver configuration: pods with `dnsPolicy: Default`
    /// (or on the node's network) get a copy.
    pub resolv_conf: PathBuf,
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
            node_netns: None,
            local_subnet: wharf_api::Subnet::parse("10.88.0.0/24").expect("valid"),
            local_gateway: Ipv4Addr::new(10, 88, 0, 1),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            poll: Duration::from_millis(500),
            allocatable: crate::machine::capacity(0),
            resolv_conf: PathBuf::from(resolv::NODE_RESOLV_CONF),
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

/// Pod-level trouble (no address, no network): the reason the pod shows
/// and the detail.
type Trouble = (&'static str, String);

/// What the node holds of one pod, with what is only worth keeping in memory.
struct PodSlot {
    record: PodRecord,
    images: HashMap<String, Image>,
    backoff: HashMap<String, Backoff>,
    /// Containers waiting, with why (`ErrImagePull`, ...) and the detail.
    waiting: HashMap<String, (&'static str, String)>,
    /// The last failure to pull or start each container, shown while it
    /// backs off.
    failures: HashMap<String, ContainerError>,
    trouble: Option<Trouble>,
    /// Whether this agent run has seen the pod's namespace.
    network_checked: bool,
    /// Whether this agent run has prepared the pod's volumes.
    volumes_ready: bool,
    /// The claims (project, uid) whose directories its volumes bind.
    claims: HashSet<(String, String)>,
    /// When the files of its configMap and secret volumes were last
    /// written from the objects (`None`: not yet in this agent run).
    projected_at: Option<Instant>,
    /// The probers of its running containers that have probes.
    probers: HashMap<String, crate::probes::Prober>,
    /// Each condition's status and when it last changed (unix ms).
    conditions: conditions::Transitions,
    /// Set once the pod's directory is removed, and held while its record
    /// is written: a write left running by a cancelled step cannot bring
    /// the directory back.
    removed: Arc<std::sync::Mutex<bool>>,
}

impl PodSlot {
    fn new(record: PodRecord) -> PodSlot {
        PodSlot {
            record,
            images: HashMap::new(),
            backoff: HashMap::new(),
            waiting: HashMap::new(),
            failures: HashMap::new(),
            trouble: None,
            network_checked: false,
            volumes_ready: false,
            claims: HashSet::new(),
            projected_at: None,
            probers: HashMap::new(),
            conditions: Default::default(),
            removed: Arc::default(),
        }
    }
}

/// One pod's place in the runtime: empty until the node holds something of
/// it. Its lock serializes the steps taken for the pod.
type PodCell = Arc<tokio::sync::Mutex<Option<PodSlot>>>;

/// Where a container stands at the start of a step.
enum Stand {
    /// Its process runs.
    Running,
    /// It ended and its restart policy keeps it ended.
    Finished,
    /// It has not run yet, or ended and runs again.
    Startable,
}

/// Runs pods' containers on this node.
pub struct ContainerRuntime {
    config: ContainerRuntimeConfig,
    api: Arc<dyn NodeApi>,
    images: Arc<dyn ImagePuller>,
    containers: Arc<dyn ContainerDriver>,
    network: Arc<dyn NetworkDriver>,
    host_ports: HostPorts,
    /// The name server pods with `ClusterFirst` use, if the node runs one.
    dns: Option<DnsServer>,
    local: LocalAddresses,
    claim_dirs: claim_dirs::ClaimDirs,
    pods: std::sync::Mutex<HashMap<PodKey, PodCell>>,
    /// What pushing commits needs, on nodes whose containers have overlay
    /// roots.
    commits: Option<crate::commit::CommitSource>,
    /// The node as a P2P peer, if it shares its layer blobs.
    p2p: Option<Arc<crate::p2p::PeerNode>>,
}

impl ContainerRuntime {
    /// A runtime over these parts, adopting the pods recorded in the data
    /// directory by an earlier run.
    pub async fn open(
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
        let pods_dir = config.data_dir.join("pods");
        let records = off_worker(move || Ok(PodRecord::load_all(&pods_dir)))
            .await
            .expect("reading the pod records panicked");
        let mut pods = HashMap::new();
        for record in records {
            tracing::info!(
                project = record.project,
                pod = record.name,
                "adopting a pod"
            );
            let key = (record.project.clone(), record.name.clone());
            let slot = PodSlot::new(record);
            pods.insert(key, Arc::new(tokio::sync::Mutex::new(Some(slot))));
        }
        ContainerRuntime {
            claim_dirs: claim_dirs::ClaimDirs::new(&config.data_dir),
            config,
            api,
            images,
            containers,
            network,
            host_ports: HostPorts::none(),
            dns: None,
            local,
            pods: std::sync::Mutex::new(pods),
            commits: None,
            p2p: None,
        }
    }

    /// Serves the node's blob cache to peers on the agent's endpoint.
    pub fn with_p2p(mut self, peer: Arc<crate::p2p::PeerNode>) -> ContainerRuntime {
        self.p2p = Some(peer);
        self
    }

    /// The node as a P2P peer, if it is one.
    pub fn p2p(&self) -> Option<&Arc<crate::p2p::PeerNode>> {
        self.p2p.as_ref()
    }

    /// Lets `wharf commit` push this node's containers' changes with
    /// `source` (its image cache and registry login).
    pub fn with_commits(mut self, source: crate::commit::CommitSource) -> ContainerRuntime {
        self.commits = Some(source);
        self
    }

    /// What pushing commits needs, if this node commits.
    pub fn commits(&self) -> Option<&crate::commit::CommitSource> {
        self.commits.as_ref()
    }

    /// Forwards pods' `hostPort`s through `driver` (without, pods asking
    /// for one are refused), first rewriting the node's forwards from the
    /// adopted pods' records: those of pods no longer here are removed.
    pub async fn with_host_ports(
        mut self,
        driver: Arc<dyn HostPortDriver>,
    ) -> Result<ContainerRuntime, NetError> {
        let mut adopted = std::collections::BTreeMap::new();
        for cell in self.pods.get_mut().expect("pod map lock").values_mut() {
            if let Some(slot) = cell.try_lock().ok().as_deref().and_then(Option::as_ref)
                && !slot.record.host_ports.is_empty()
            {
                adopted.insert(slot.record.pod_id.clone(), slot.record.host_ports.clone());
            }
        }
        self.host_ports = HostPorts::open(driver, adopted).await?;
        Ok(self)
    }

    /// Points pods' resolv.conf at `dns`, served on their gateways.
    pub fn with_dns(mut self, dns: DnsServer) -> ContainerRuntime {
        self.dns = Some(dns);
        self
    }

    /// The pods' name server, if the node runs one (to give it the
    /// services to answer for, [`DnsServer::follow`]).
    pub fn dns(&self) -> Option<&DnsServer> {
        self.dns.as_ref()
    }

    fn cell(&self, key: &PodKey) -> PodCell {
        self.pods
            .lock()
            .expect("pod map lock")
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// Every pod's cell, taken out of the map so that none is locked under
    /// the map's lock.
    fn cells(&self) -> Vec<(PodKey, PodCell)> {
        self.pods
            .lock()
            .expect("pod map lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
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

    /// Writes the pod's record, on a blocking thread (the write fsyncs).
    async fn save(&self, slot: &PodSlot) {
        let record = slot.record.clone();
        let dir = self.pod_dir(&record.project, &record.name);
        let removed = slot.removed.clone();
        let saved = off_worker(move || {
            let removed = removed.lock().expect("pod directory lock");
            if *removed {
                return Ok(());
            }
            record.save(&dir)
        })
        .await;
        if let Err(err) = saved {
            tracing::error!(error = %err, pod = slot.record.name, "saving the pod record failed");
        }
    }

    /// Claims an address for the pod: from the pool it names, through the
    /// control plane, else from the node-local range.
    async fn claim_address(&self, pod: &Pod) -> Result<Address, String> {
        let project = pod.metadata.project.as_deref().unwrap_or_default();
        match self.api.claim_ip(project, &pod.metadata.name).await {
            Ok(Some(claim)) => Ok(Address {
                ip: claim.ip,
                prefix_len: claim.prefix_len,
                gateway: claim.gateway,
                pool: Some(claim.pool),
            }),
            Ok(None) => {
                let local = self.local.clone();
                let uid = pod.metadata.uid.clone();
                off_worker(move || local.claim(&uid))
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(err) => Err(err.to_string()),
        }
    }

    /// Takes the pod one step further: its address, its network, then each
    /// container. Says when to look again.
    async fn advance(
        &self,
        pod: &Pod,
        slot: &mut PodSlot,
        progress: Progress<'_>,
    ) -> Option<Duration> {
        slot.trouble = None;
        let ip = match self.plumb(pod, slot).await {
            Ok(ip) => ip,
            Err(trouble) => return self.troubled(slot, trouble),
        };
        if let Err(trouble) = self.volumes(pod, slot).await {
            return self.troubled(slot, trouble);
        }
        let mut again: Option<Duration> = None;
        for container in &pod.spec.containers {
            let next = self
                .step_container(pod, slot, container, ip, progress)
                .await;
            again = again.into_iter().chain(next).min();
        }
        again
    }

    /// The pod's address, network and host ports, before any container
    /// starts; a pod on the node's network has only the node's address.
    async fn plumb(&self, pod: &Pod, slot: &mut PodSlot) -> Result<Ipv4Addr, Trouble> {
        if pod.spec.host_network {
            if !slot.record.host_network {
                slot.record.host_network = true;
                slot.record.netns = self.config.node_netns.clone();
                self.save(slot).await;
            }
            return Ok(self.node_ip());
        }
        let address = self.address(pod, slot).await?;
        self.network(slot, &address).await?;
        let forwards = forwards_of(&pod.spec, &address);
        if slot.record.host_ports != forwards {
            self.host_ports
                .set(&slot.record.pod_id, &forwards)
                .await
                .map_err(|message| ("HostPortSetupFailed", message))?;
            slot.record.host_ports = forwards;
            self.save(slot).await;
        }
        Ok(address.ip)
    }

    /// Where the agent's name server answers the pod: its gateway, once
    /// served there; `None` without a server or off the pod bridge.
    async fn name_server(&self, record: &PodRecord) -> Option<IpAddr> {
        let dns = self.dns.as_ref()?;
        let gateway = IpAddr::V4(record.address.as_ref()?.gateway);
        if record.host_network {
            return None;
        }
        match dns.listen(gateway).await {
            Ok(_) => Some(gateway),
            Err(err) => {
                tracing::warn!(%gateway, error = %err, pod = record.name,
                    "cannot serve DNS on the pod's gateway: the pod gets the node's resolv.conf");
                None
            }
        }
    }

    /// The node's address: `host_ip`, else the node-local range's gateway
    /// (an address of the node its pods reach too).
    fn node_ip(&self) -> Ipv4Addr {
        self.config
            .host_ip
            .as_deref()
            .and_then(|ip| ip.parse().ok())
            .unwrap_or(self.config.local_gateway)
    }

    /// The pod's address as reported: its own, or the node's.
    fn ip_of(&self, record: &PodRecord) -> Option<Ipv4Addr> {
        match record.host_network {
            true => Some(self.node_ip()),
            false => record.address.as_ref().map(|a| a.ip),
        }
    }

    /// Notes pod-level trouble; the step is tried again soon.
    fn troubled(&self, slot: &mut PodSlot, trouble: Trouble) -> Option<Duration> {
        slot.trouble = Some(trouble);
        Some(RETRY)
    }

    /// The pod's address: the recorded one, or a new claim, recorded.
    async fn address(&self, pod: &Pod, slot: &mut PodSlot) -> Result<Address, Trouble> {
        if let Some(address) = &slot.record.address {
            return Ok(address.clone());
        }
        let address = self
            .claim_address(pod)
            .await
            .map_err(|message| ("IPAllocationFailed", message))?;
        slot.record.address = Some(address.clone());
        self.save(slot).await;
        Ok(address)
    }

    /// Sets up the pod's network namespace unless it is there: looked at
    /// once per agent run, since a reboot loses it.
    async fn network(&self, slot: &mut PodSlot, address: &Address) -> Result<(), Trouble> {
        let netns_gone = match &slot.record.netns {
            None => true,
            Some(path) => !slot.network_checked && !path.exists(),
        };
        slot.network_checked = true;
        if !netns_gone {
            return Ok(());
        }
        let spec = PodNetworkSpec {
            pod_id: slot.record.pod_id.clone(),
            ip: address.ip,
            prefix_len: address.prefix_len,
            gateway: address.gateway,
        };
        let network = self
            .network
            .setup(&spec)
            .await
            .map_err(|err| ("NetworkSetupFailed", err.to_string()))?;
        slot.record.netns = Some(network.netns_path);
        self.save(slot).await;
        Ok(())
    }

    /// Makes the pod's volumes ready, once per agent run (a reboot loses
    /// its tmpfs volumes and binds; those still mounted are kept), then
    /// keeps its configMap, secret and downwardAPI volumes up to date.
    async fn volumes(&self, pod: &Pod, slot: &mut PodSlot) -> Result<(), Trouble> {
        if pod.spec.volumes.is_empty() {
            return Ok(());
        }
        if !slot.volumes_ready {
            let claims = self.claim_dirs_of(pod, slot).await?;
            let dir = self.pod_dir(&slot.record.project, &slot.record.name);
            let volumes = pod.spec.volumes.clone();
            let fs_group = pod.spec.security_context.as_ref().and_then(|s| s.fs_group);
            off_worker(move || {
                volumes::prepare(&dir, &volumes, fs_group, &claims).map_err(std::io::Error::other)
            })
            .await
            .map_err(|err| ("FailedMount", err.to_string()))?;
            slot.volumes_ready = true;
        }
        match self.project(pod, slot).await {
            Ok(()) => Ok(()),
            // Until the files are there the pod is held, as kubelet holds it.
            Err(message) if slot.projected_at.is_none() => Err(("FailedMount", message)),
            // Later the last good files stay, as in Kubernetes.
            Err(message) => {
                tracing::warn!(
                    pod = pod.metadata.name,
                    error = message,
                    "volume update failed"
                );
                slot.projected_at = Some(Instant::now());
                Ok(())
            }
        }
    }

    /// The directory of each claim the pod names, made on first use; the
    /// claims must be bound to this node (the control plane lists them).
    async fn claim_dirs_of(
        &self,
        pod: &Pod,
        slot: &mut PodSlot,
    ) -> Result<HashMap<String, PathBuf>, Trouble> {
        let names = pod.spec.claim_names();
        if names.is_empty() {
            return Ok(HashMap::new());
        }
        let project = slot.record.project.clone();
        let bound = self.api.claims(&self.config.node).await.map_err(|err| {
            (
                "FailedMount",
                format!("reading the claims bound to this node: {err}"),
            )
        })?;
        let mut wanted = Vec::new();
        for name in names {
            let claim = bound
                .iter()
                .find(|c| {
                    c.metadata.project.as_deref() == Some(&project) && c.metadata.name == name
                })
                .ok_or_else(|| {
                    (
                        "FailedMount",
                        format!(
                            "persistentvolumeclaim {name:?} is not bound to node {}",
                            self.config.node
                        ),
                    )
                })?;
            wanted.push((name.to_string(), claim.metadata.uid.clone()));
        }
        slot.claims = wanted
            .iter()
            .map(|(_, uid)| (project.clone(), uid.clone()))
            .collect();
        let dirs = self.claim_dirs.clone();
        off_worker(move || {
            wanted
                .into_iter()
                .map(|(name, uid)| Ok((name, dirs.make(&project, &uid)?)))
                .collect::<Result<_, String>>()
                .map_err(std::io::Error::other)
        })
        .await
        .map_err(|err| ("FailedMount", err.to_string()))
    }

    /// Removes the directories of claims no longer bound to this node that
    /// no pod held here uses.
    async fn release_claims(&self) {
        let bound = match self.api.claims(&self.config.node).await {
            Ok(bound) => bound,
            Err(err) => {
                tracing::debug!(error = %err, "could not list this node's claims");
                return;
            }
        };
        let bound: HashSet<(String, String)> = bound
            .into_iter()
            .map(|c| (c.metadata.project.unwrap_or_default(), c.metadata.uid))
            .collect();
        let cells: Vec<PodCell> = self
            .pods
            .lock()
            .expect("pod map lock")
            .values()
            .cloned()
            .collect();
        let mut in_use = HashSet::new();
        for cell in cells {
            if let Some(slot) = cell.lock().await.as_ref() {
                in_use.extend(slot.claims.iter().cloned());
            }
        }
        let dirs = self.claim_dirs.clone();
        let removed = off_worker(move || Ok(dirs.release(&bound, &in_use))).await;
        for dir in removed.unwrap_or_default() {
            tracing::info!(dir = %dir.display(), "removed the directory of a released claim");
        }
    }

    /// Writes the pod's configMap, secret and downwardAPI volumes from the
    /// objects as the control plane has them now and the pod as this node
    /// has it, at most every [`CONFIG_REFRESH`].
    async fn project(&self, pod: &Pod, slot: &mut PodSlot) -> Result<(), String> {
        if !pod.spec.volumes.iter().any(|v| v.is_projected())
            || slot
                .projected_at
                .is_some_and(|at| at.elapsed() < CONFIG_REFRESH)
        {
            return Ok(());
        }
        let objects = ConfigObjects::fetch(self.api.as_ref(), &self.config.node, pod)
            .await
            .map_err(|err| format!("reading the configmaps and secrets of the pod: {err}"))?;
        let projections = volumes::projections(pod, &objects, self.config.allocatable)?;
        let dir = self.pod_dir(&slot.record.project, &slot.record.name);
        let fs_group = pod.spec.security_context.as_ref().and_then(|s| s.fs_group);
        let changed = off_worker(move || {
            let mut changed = Vec::new();
            for (volume, files) in &projections {
                if volumes::project(&dir, volume, files, fs_group).map_err(std::io::Error::other)? {
                    changed.push(volume.name.clone());
                }
            }
            Ok(changed)
        })
        .await
        .map_err(|err| err.to_string())?;
        if slot.projected_at.is_some() && !changed.is_empty() {
            tracing::info!(pod = pod.metadata.name, volumes = ?changed, "volume files updated");
        }
        slot.projected_at = Some(Instant::now());
        Ok(())
    }

    /// Takes one container a step further: notices its exit, waits out its
    /// back-off, pulls its image and starts it. Says when to look again
    /// (`None`: it has finished for good).
    async fn step_container(
        &self,
        pod: &Pod,
        slot: &mut PodSlot,
        container: &Container,
        ip: Ipv4Addr,
        progress: Progress<'_>,
    ) -> Option<Duration> {
        let project = pod.metadata.project.as_deref().unwrap_or_default();
        let dir = self.container_dir(project, &pod.metadata.name, &container.name);
        match self.look_at(pod, slot, container, &dir).await {
            Stand::Running => return Some(self.watch_probes(pod, slot, container, &dir, ip).await),
            Stand::Finished => return None,
            Stand::Startable => {}
        }
        if let Some(wait) = self.held_off(slot, container) {
            return Some(wait);
        }
        let container = &match self.container_config(pod, container, ip).await {
            Ok(resolved) => resolved,
            Err(message) => {
                // Tried again soon, so the container starts once what it
                // needs appears, as kubelet retries.
                let waiting = ("CreateContainerConfigError", message);
                slot.waiting.insert(container.name.clone(), waiting);
                return Some(RETRY);
            }
        };
        let image = match self.image(pod, slot, container, progress).await {
            Ok(image) => image,
            Err(err) => {
                tracing::warn!(
                    pod = pod.metadata.name,
                    image = container.image,
                    error = %err,
                    "image pull failed"
                );
                self.fail_start(slot, &container.name, err);
                return Some(self.config.backoff);
            }
        };
        Some(self.start(pod, slot, container, dir, image, ip).await)
    }

    /// The container as it runs: its environment resolved from the
    /// ConfigMaps and Secrets it uses, the pod's fields (with this node's
    /// view of its addresses) and resource amounts. `Err` names what is
    /// missing, never a value.
    async fn container_config(
        &self,
        pod: &Pod,
        container: &Container,
        ip: Ipv4Addr,
    ) -> Result<Container, String> {
        let objects = ConfigObjects::fetch(self.api.as_ref(), &self.config.node, pod)
            .await
            .map_err(|err| format!("reading the configmaps and secrets of the pod: {err}"))?;
        let mut pod = pod.clone();
        pod.status.pod_ip = Some(ip.to_string());
        pod.status.host_ip = self.config.host_ip.clone();
        let resolved = resolve(&pod, container, self.config.allocatable, &objects)?;
        let project = pod.metadata.project.as_deref().unwrap_or_default();
        for skipped in resolved.skipped {
            let event = wharf_api::PodEventReport {
                event_type: wharf_api::EventType::Warning,
                reason: "InvalidEnvironmentVariableNames".into(),
                message: skipped,
            };
            // The container starts all the same: a lost event is only logged.
            if let Err(err) = self
                .api
                .pod_event(project, &pod.metadata.name, &event)
                .await
            {
                tracing::warn!(pod = pod.metadata.name, error = %err, "{}", event.message);
            }
        }
        Ok(resolved.container)
    }

    /// Whether the container still runs, and if it ended, whether it runs
    /// again; an exit seen now is recorded and starts its back-off.
    async fn look_at(
        &self,
        pod: &Pod,
        slot: &mut PodSlot,
        container: &Container,
        dir: &Path,
    ) -> Stand {
        let entry = container_record(&mut slot.record, &container.name);
        let mut exited_after = None;
        if entry.running {
            match self.containers.liveness(&entry.id, dir).await {
                Liveness::Running => return Stand::Running,
                Liveness::Exited(exit) => {
                    tracing::info!(
                        pod = pod.metadata.name,
                        container = container.name,
                        code = exit.code,
                        reason = exit.reason,
                        "container exited"
                    );
                    exited_after = Some(
                        entry
                            .started_at
                            .map(|s| Duration::from_millis(exit.finished_at.saturating_sub(s))),
                    );
                    entry.running = false;
                    entry.last_exit = Some(exit);
                    slot.probers.remove(&container.name);
                }
            }
        }
        let policy = pod.spec.restart_policy.as_deref().unwrap_or("Always");
        let finished = entry
            .last_exit
            .as_ref()
            .is_some_and(|exit| !restarts(policy, exit));
        if let Some(ran) = exited_after {
            let reset = ran.is_some_and(|r| r >= BACKOFF_RESET_AFTER);
            self.back_off(slot, &container.name, reset);
            self.save(slot).await;
        }
        if finished {
            Stand::Finished
        } else {
            Stand::Startable
        }
    }

    /// While the container's back-off lasts: how long is left, with why it
    /// waits noted for its status.
    fn held_off(&self, slot: &mut PodSlot, container: &Container) -> Option<Duration> {
        let backoff = slot.backoff.get(&container.name)?;
        let now = Instant::now();
        if backoff.not_before <= now {
            return None;
        }
        let wait = backoff.not_before - now;
        // Shown to a tenth of a second.
        let shown = Duration::from_millis(wait.as_millis().div_ceil(100) as u64 * 100);
        let waiting = match slot.failures.get(&container.name) {
            Some(error @ ContainerError::ImagePull(_)) => (
                "ImagePullBackOff",
                format!(
                    "back-off {shown:?} pulling image {}: {error}",
                    container.image
                ),
            ),
            Some(error) => (error.reason(), format!("back-off {shown:?} after: {error}")),
            None => (
                "CrashLoopBackOff",
                format!(
                    "back-off {shown:?} restarting failed container {}",
                    container.name
                ),
            ),
        };
        slot.waiting.insert(container.name.clone(), waiting);
        Some(wait)
    }

    /// The container's image: pulled once per agent run (the cache answers
    /// quickly once the image is here), with progress reported.
    async fn image(
        &self,
        pod: &Pod,
        slot: &mut PodSlot,
        container: &Container,
        progress: Progress<'_>,
    ) -> Result<Image, ContainerError> {
        if let Some(image) = slot.images.get(&container.name) {
            return Ok(image.clone());
        }
        let report = |line: String| {
            let mut status = pod.status.clone();
            status.phase = PodPhase::Pending;
            status.reason = Some("ContainerCreating".into());
            status.message = Some(line);
            progress(status);
        };
        let image = self
            .images
            .pull(&container.image, PullPolicy::of(container), &report)
            .await?;
        self.pulled_event(pod, container, &image.pulled).await;
        slot.images.insert(container.name.clone(), image.clone());
        Ok(image)
    }

    /// The pod's `Pulled` event, saying where the image's bytes came from.
    async fn pulled_event(&self, pod: &Pod, container: &Container, bytes: &wharf_image::PullBytes) {
        let fetched = bytes.registry + bytes.peers;
        let message = if fetched == 0 {
            format!(
                "image {} already present on the node ({} from the cache)",
                container.image,
                human_bytes(bytes.cache)
            )
        } else {
            format!(
                "pulled image {}: {} from the registry, {} from peers, {} from the node's cache",
                container.image,
                human_bytes(bytes.registry),
                human_bytes(bytes.peers),
                human_bytes(bytes.cache)
            )
        };
        let event = wharf_api::PodEventReport {
            event_type: wharf_api::EventType::Normal,
            reason: "Pulled".into(),
            message,
        };
        let project = pod.metadata.project.as_deref().unwrap_or_default();
        // The container starts all the same: a lost event is only logged.
        if let Err(err) = self
            .api
            .pod_event(project, &pod.metadata.name, &event)
            .await
        {
            tracing::warn!(pod = pod.metadata.name, error = %err, "{}", event.message);
        }
    }

    /// Starts a run of the container; says when to look at it again.
    async fn start(
        &self,
        pod: &Pod,
        slot: &mut PodSlot,
        container: &Container,
        dir: PathBuf,
        image: Image,
        ip: Ipv4Addr,
    ) -> Duration {
        let record = &mut slot.record;
        let launch = Launch {
            id: container_record(record, &container.name).id.clone(),
            dir,
            image,
            container: container.clone(),
            security: pod.spec.security_of(container),
            hostname: pod.metadata.name.clone(),
            netns: record.netns.clone(),
            ip: Some(ip),
            volumes: volumes::sources(
                &self.pod_dir(&record.project, &record.name),
                container,
                &pod.spec.volumes,
            ),
            resolv_conf: resolv_conf_for(
                pod,
                self.name_server(record).await,
                &self.config.resolv_conf,
            ),
        };
        match self.containers.start(&launch).await {
            Ok(()) => {
                let now = now_millis();
                let entry = container_record(record, &container.name);
                if entry.last_exit.is_some() {
                    entry.restart_count += 1;
                }
                entry.running = true;
                entry.started_at = Some(now);
                slot.probers.remove(&container.name);
                record.start_time.get_or_insert(now);
                slot.remember_pre_stop(container);
                self.save(slot).await;
                slot.waiting.remove(&container.name);
                slot.failures.remove(&container.name);
                self.post_start(slot, container, &launch.dir, ip).await;
                self.config.poll
            }
            Err(err) => {
                tracing::warn!(
                    pod = pod.metadata.name,
                    container = container.name,
                    error = %err,
                    "starting the container failed"
                );
                // The image may have been removed from the cache meanwhile.
                slot.images.remove(&container.name);
                self.fail_start(slot, &container.name, err);
                self.config.backoff
            }
        }
    }

    /// Notes a container that could not start and backs off.
    fn fail_start(&self, slot: &mut PodSlot, container: &str, error: ContainerError) {
        slot.waiting
            .insert(container.to_string(), (error.reason(), error.to_string()));
        slot.failures.insert(container.to_string(), error);
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

    /// Tears down what the node holds of a pod, giving its containers
    /// `grace` (else the pod's own grace period) to stop.
    async fn teardown(&self, slot: &PodSlot, grace: Option<Duration>) {
        let record = &slot.record;
        let pod_dir = self.pod_dir(&record.project, &record.name);
        let grace = grace.unwrap_or(Duration::from_secs(record.grace_seconds));
        let stops = record.containers.iter().map(|(name, container)| {
            let dir = self.container_dir(&record.project, &record.name, name);
            async move {
                if let Err(err) = self.stop_container(record, name, grace).await {
                    tracing::warn!(
                        container = container.id,
                        error = %err,
                        "stopping the container failed"
                    );
                }
                if let Err(err) = self.containers.remove(&container.id, &dir).await {
                    tracing::warn!(
                        container = container.id,
                        error = %err,
                        "removing the container failed"
                    );
                }
            }
        });
        join_all(stops).await;
        if let Err(message) = self.host_ports.remove(&record.pod_id).await {
            // The next change (or agent start) writes the set without it.
            tracing::warn!(
                pod = record.name,
                error = message,
                "removing the host ports failed"
            );
        }
        if let Err(err) = self.network.teardown(&record.pod_id).await {
            tracing::warn!(pod = record.name, error = %err, "removing the pod network failed");
        }
        if let Some(Address { pool: Some(_), .. }) = &record.address {
            if let Err(err) = self
                .api
                .release_ip(&record.project, &record.name, &record.uid)
                .await
            {
                // The control plane's reconciler frees it later.
                tracing::warn!(pod = record.name, error = %err, "releasing the address failed");
            }
        } else {
            let (local, uid) = (self.local.clone(), record.uid.clone());
            let ip = record.address.as_ref().map(|address| address.ip);
            // Releasing never fails: an address not held is no one's.
            let _ = off_worker(move || {
                match ip {
                    Some(ip) => local.release(ip, &uid),
                    None => local.release_any(&uid),
                }
                Ok(())
            })
            .await;
        }
        let (dir, gone) = (pod_dir.clone(), slot.removed.clone());
        // Volumes (tmpfs, hostPath binds) are unmounted before anything is
        // deleted, so a hostPath's files are never deleted through its bind.
        let removed = off_worker(move || {
            let mut gone = gone.lock().expect("pod directory lock");
            *gone = true;
            mounts::remove_unmounted(&dir).map_err(std::io::Error::other)
        })
        .await;
        if let Err(err) = removed {
            tracing::warn!(dir = %pod_dir.display(), error = %err, "removing the pod directory failed");
        }
        tracing::info!(project = record.project, pod = record.name, "pod removed");
    }

    /// The pod's status from what the node holds.
    fn status(&self, pod: &Pod, slot: &mut PodSlot) -> PodStatus {
        let record = &slot.record;
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
                    reason: reason.to_string(),
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
            // Without startup and readiness probes a running container is
            // ready; with them, once its prober says so.
            let gated = container.startup_probe.is_some() || container.readiness_probe.is_some();
            let passing = slot
                .probers
                .get(&container.name)
                .is_some_and(|prober| prober.verdict().ready);
            statuses.push(ContainerStatus {
                name: container.name.clone(),
                image: container.image.clone(),
                ready: entry.is_some_and(|e| e.running) && (!gated || passing),
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
            (Some((reason, message)), _) => (Some(reason.to_string()), Some(message.clone())),
            (None, PodPhase::Pending | PodPhase::Running) => {
                let first = pod
                    .spec
                    .containers
                    .iter()
                    .find_map(|c| slot.waiting.get(&c.name).map(|w| (&c.name, w)));
                match first {
                    Some((name, (reason, message))) => (
                        Some(reason.to_string()),
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
            pod_ip: self.ip_of(record).map(|ip| ip.to_string()),
            host_ip: self.config.host_ip.clone(),
            start_time: record.start_time,
            conditions: conditions::pod_conditions(
                &mut slot.conditions,
                &pod.status.conditions,
                &statuses,
                now_millis(),
            ),
            container_statuses: statuses,
        }
    }
}

/// `12.3 MiB`, as pull messages show sizes.
fn human_bytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
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
        let cell = self.cell(&key);
        let mut held = cell.lock().await;
        if let Some(old) = held
            .as_ref()
            .filter(|slot| slot.record.uid != pod.metadata.uid)
        {
            // A new pod of the same name: the old one goes first.
            self.teardown(old, None).await;
            *held = None;
        }
        if pod.spec.node_name.as_deref() != Some(self.config.node.as_str()) {
            return Synced {
                status: pod.status.clone(),
                again_in: None,
            };
        }
        let slot = match held.take() {
            Some(slot) => slot,
            None => {
                let record = PodRecord {
                    project,
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                    pod_id: pod_id(pod),
                    grace_seconds: pod.spec.grace_seconds(),
                    address: None,
                    netns: None,
                    start_time: None,
                    containers: Default::default(),
                    host_network: false,
                    host_ports: Vec::new(),
                };
                let slot = PodSlot::new(record);
                self.save(&slot).await;
                slot
            }
        };
        let slot = held.insert(slot);
        let again_in = self.advance(pod, slot, progress).await;
        Synced {
            status: self.status(pod, slot),
            again_in,
        }
    }

    async fn remove(&self, project: &str, name: &str, uid: Option<&str>) {
        self.remove_within(project, name, uid, None).await;
    }

    async fn terminate(&self, project: &str, name: &str, uid: &str, grace: Duration) {
        self.remove_within(project, name, Some(uid), Some(grace))
            .await;
    }

    async fn release_volumes(&self) {
        self.release_claims().await;
    }

    async fn usage(&self) -> Vec<PodUsage> {
        self.sample_usage().await
    }

    async fn cached_layers(&self) -> Option<Vec<wharf_api::CachedLayer>> {
        self.images.cached_layers().await
    }

    fn pull_bytes(&self) -> Option<wharf_image::PullBytes> {
        self.images.pulled_bytes()
    }

    async fn preheat(
        &self,
        image: &str,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<u64, String> {
        self.images
            .warm(image, progress)
            .await
            .map_err(|e| e.to_string())
    }

    /// runc answers `list` over its state root: it can be run, and the
    /// root is readable (a missing or broken runc, a root on a failed
    /// disk, fail here before any pod would).
    async fn health(&self) -> Result<(), String> {
        let Some(runc) = self.runc() else {
            return Ok(());
        };
        match runc.list().await {
            Ok(_) => Ok(()),
            Err(err) => Err(format!("the container runtime fails: runc list: {err}")),
        }
    }

    async fn pod_stats(&self) -> Vec<crate::metrics::containers::PodStats> {
        self.sample_stats().await
    }

    async fn pods(&self) -> Vec<(String, String)> {
        let cells = self.cells();
        // A locked cell is in use: a step (maybe a pull of many minutes) or
        // a removal holds it, so the pod is held. Waiting for the lock here
        // would stall the agent's pod watch behind that step, and with it
        // the deletion that is to cancel it.
        cells
            .into_iter()
            .filter(|(_, cell)| cell.try_lock().map_or(true, |slot| slot.is_some()))
            .map(|(key, _)| key)
            .collect()
    }
}

impl ContainerRuntime {
    /// Removes a pod (only the one with `uid`, when given), its containers
    /// given `grace` to stop (else the pod's own grace period).
    async fn remove_within(
        &self,
        project: &str,
        name: &str,
        uid: Option<&str>,
        grace: Option<Duration>,
    ) {
        let key = (project.to_string(), name.to_string());
        let cell = self.cell(&key);
        let mut held = cell.lock().await;
        let Some(slot) = held.as_ref() else {
            return;
        };
        if uid.is_some_and(|uid| uid != slot.record.uid) {
            return;
        }
        self.teardown(slot, grace).await;
        *held = None;
        drop(held);
        let mut pods = self.pods.lock().expect("pod map lock");
        if pods.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            pods.remove(&key);
        }
    }

    /// The names of the containers the node holds of a pod.
    pub async fn containers_of(&self, project: &str, name: &str) -> Vec<String> {
        self.with_record(project, name, |record| {
            Some(record.containers.keys().cloned().collect())
        })
        .await
        .unwrap_or_default()
    }

    /// The runtime id of a running container of a pod on this node.
    pub async fn running_container_id(
        &self,
        project: &str,
        name: &str,
        container: &str,
    ) -> Option<String> {
        self.with_record(project, name, |record| {
            let held = record.containers.get(container)?;
            held.running.then(|| held.id.clone())
        })
        .await
    }

    /// The runtime id and directory of a running container of a pod on
    /// this node (its overlay's `upper/` is in the directory).
    pub async fn running_container(
        &self,
        project: &str,
        name: &str,
        container: &str,
    ) -> Option<(String, PathBuf)> {
        let id = self.running_container_id(project, name, container).await?;
        Some((id, self.container_dir(project, name, container)))
    }

    /// The address of a pod on this node.
    pub async fn pod_ip(&self, project: &str, name: &str) -> Option<Ipv4Addr> {
        self.with_record(project, name, |record| self.ip_of(record))
            .await
    }

    /// The runc the containers run under, when they run under runc.
    pub fn runc(&self) -> Option<&wharf_runc::Runc> {
        self.containers.runc()
    }

    async fn with_record<T>(
        &self,
        project: &str,
        name: &str,
        read: impl FnOnce(&PodRecord) -> Option<T>,
    ) -> Option<T> {
        let key = (project.to_string(), name.to_string());
        let cell = self.pods.lock().expect("pod map lock").get(&key).cloned()?;
        let slot = cell.lock().await;
        read(&slot.as_ref()?.record)
    }

    fn container_dir(&self, project: &str, name: &str, container: &str) -> PathBuf {
        self.pod_dir(project, name)
            .join("containers")
            .join(container)
    }
}

/// The record of container `name` of the pod, made (with its runtime id,
/// named after the pod's) when first asked for.
fn container_record<'r>(record: &'r mut PodRecord, name: &str) -> &'r mut ContainerRecord {
    let pod_id = &record.pod_id;
    record
        .containers
        .entry(name.to_string())
        .or_insert_with(|| ContainerRecord {
            id: format!("{pod_id}-{name}"),
            ..ContainerRecord::default()
        })
}

/// Runs file work on a blocking thread, off the async workers.
async fn off_worker<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|err| Err(std::io::Error::other(err)))
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

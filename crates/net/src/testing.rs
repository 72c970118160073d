//! Helpers for tests here and in other crates (the agent's end-to-end tests),
//! behind the `testing` feature: running commands inside a namespace, a stand-in
//! "host" namespace so one machine can play several nodes, cleanup guards,
//! and an in-memory [`NetworkDriver`] for logic that needs no real network.
//!
//! The `Drop` implementations here run `ip` synchronously: fine in tests,
//! not meant for the agent itself.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use tokio::process::Command;

use crate::spec::{NETNS_DIR, short_ifname, validate_netns_name};
use crate::{
    BridgeConfig, Ipv4Cidr, NetError, NetworkDriver, PodNetwork, PodNetworkSpec, host_veth_name, ip,
};

/// A command that runs `program` inside the named network namespace
/// (`ip netns exec <netns> <program>`). It is killed when dropped, so a
/// listener spawned for a test does not outlive it.
pub fn netns_command(netns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", netns])
        .arg(program)
        .kill_on_drop(true);
    command
}

/// Runs `program args...` inside the named namespace and returns its stdout;
/// a non-zero exit is an error carrying the stderr.
pub async fn netns_exec<I, S>(netns: &str, program: &str, args: I) -> Result<String, NetError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut full: Vec<std::ffi::OsString> =
        vec!["netns".into(), "exec".into(), netns.into(), program.into()];
    full.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
    ip::run("ip", full).await
}

/// A named network namespace standing in for a separate host: it has a veth
/// to the root namespace with an address on each side, and nothing else
/// (no default route, no forwarding rules). Give its name to
/// [`BridgeConfig::host_netns`] to run a node's bridge and pods "inside" it.
///
/// Inside, the uplink is called `eth0`; in the root namespace its peer is
/// `wh<name>` (or `wh` and a hash of a long name). Deleted on drop.
#[derive(Debug)]
pub struct HostNamespace {
    name: String,
    root_veth: String,
    root_side: Ipv4Cidr,
    ns_side: Ipv4Cidr,
    deleted: bool,
}

impl HostNamespace {
    /// Creates namespace `name` and its uplink: `root_side` is the address
    /// on the root-namespace end (the real host), `ns_side` the one on the
    /// namespace's `eth0`.
    pub async fn create(
        name: &str,
        root_side: Ipv4Cidr,
        ns_side: Ipv4Cidr,
    ) -> Result<Self, NetError> {
        validate_netns_name("host namespace", name)?;
        let root_veth = short_ifname("wh", name);
        ip::run("ip", ["netns", "add", name]).await?;
        // From here on, dropping `host` (also on an early error return)
        // removes what was created.
        let host = Self {
            name: name.to_owned(),
            root_veth,
            root_side,
            ns_side,
            deleted: false,
        };
        let veth = host.root_veth.as_str();
        let (root_addr, ns_addr) = (root_side.to_string(), ns_side.to_string());
        ip::run(
            "ip",
            [
                "link", "add", "name", veth, "type", "veth", "peer", "name", "eth0", "netns", name,
            ],
        )
        .await?;
        ip::run("ip", ["addr", "add", &root_addr, "dev", veth]).await?;
        ip::run("ip", ["link", "set", "dev", veth, "up"]).await?;
        ip::run("ip", ["-n", name, "link", "set", "dev", "lo", "up"]).await?;
        ip::run("ip", ["-n", name, "addr", "add", &ns_addr, "dev", "eth0"]).await?;
        ip::run("ip", ["-n", name, "link", "set", "dev", "eth0", "up"]).await?;
        Ok(host)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The uplink's end in the root namespace.
    pub fn root_veth(&self) -> &str {
        &self.root_veth
    }

    /// The address on the root-namespace end of the uplink.
    pub fn root_side(&self) -> Ipv4Cidr {
        self.root_side
    }

    /// The address on the namespace's `eth0`.
    pub fn ns_side(&self) -> Ipv4Cidr {
        self.ns_side
    }

    /// A command running `program` inside this namespace (see [`netns_command`]).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        netns_command(&self.name, program)
    }

    /// Runs `program args...` inside this namespace (see [`netns_exec`]).
    pub async fn exec<I, S>(&self, program: &str, args: I) -> Result<String, NetError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        netns_exec(&self.name, program, args).await
    }

    /// Deletes the namespace and its uplink, reporting failures (dropping
    /// does the same, ignoring them).
    pub async fn delete(mut self) -> Result<(), NetError> {
        self.deleted = true;
        let veth = remove_link_async(None, &self.root_veth).await;
        let netns = ip::run("ip", ["netns", "delete", self.name.as_str()])
            .await
            .map(drop);
        veth.and(netns)
    }
}

impl Drop for HostNamespace {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        // The uplink would go with the namespace, but only once the kernel
        // gets round to destroying it; deleting it now frees its name.
        remove_link_blocking(None, &self.root_veth);
        report(ip::run_blocking("ip", &["netns", "delete", &self.name]));
    }
}

/// Removes, when dropped, every pod namespace named with `config`'s prefix,
/// their veths, and (unless [`keep_bridge`](Self::keep_bridge) is called)
/// the bridge: a test's network leftovers, even when it panics.
///
/// Give each test its own prefix and bridge name, since tests run in
/// parallel and this removes everything with the prefix.
#[derive(Debug)]
pub struct NodeCleanup {
    config: BridgeConfig,
    remove_bridge: bool,
}

impl NodeCleanup {
    /// A guard for the pods and bridge of `config`.
    pub fn new(config: BridgeConfig) -> Self {
        Self {
            config,
            remove_bridge: true,
        }
    }

    /// Leaves the bridge in place (e.g. when the test did not create it).
    pub fn keep_bridge(mut self) -> Self {
        self.remove_bridge = false;
        self
    }
}

impl Drop for NodeCleanup {
    fn drop(&mut self) {
        let host = self.config.host_netns.as_deref();
        let prefix = self.config.netns_prefix.as_str();
        let pods: Vec<String> = std::fs::read_dir(NETNS_DIR)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name();
                crate::bridge::pod_id_of(prefix, name.to_str()?).map(str::to_owned)
            })
            .collect();
        for pod_id in pods {
            remove_link_blocking(host, &host_veth_name(&pod_id));
            let netns = self.config.netns_name(&pod_id);
            if Path::new(NETNS_DIR).join(&netns).exists() {
                report(ip::run_blocking("ip", &["netns", "delete", &netns]));
            }
        }
        if self.remove_bridge {
            remove_link_blocking(host, &self.config.bridge);
        }
    }
}

fn link_args<'a>(host: Option<&'a str>, name: &'a str) -> Vec<&'a str> {
    let mut args = Vec::new();
    if let Some(ns) = host {
        args.extend(["-n", ns]);
    }
    args.extend(["link", "delete", "dev", name]);
    args
}

async fn remove_link_async(host: Option<&str>, name: &str) -> Result<(), NetError> {
    match ip::run("ip", link_args(host, name)).await {
        Err(NetError::Command { stderr, .. }) if is_gone(&stderr) => Ok(()),
        other => other.map(drop),
    }
}

fn remove_link_blocking(host: Option<&str>, name: &str) {
    match ip::run_blocking("ip", &link_args(host, name)) {
        Err(NetError::Command { stderr, .. }) if is_gone(&stderr) => {}
        other => report(other),
    }
}

/// `ip` wording for a device (or the namespace holding it) that is gone.
fn is_gone(stderr: &str) -> bool {
    stderr.contains("Cannot find device")
        || stderr.contains("does not exist")
        || stderr.contains("Cannot open network namespace")
}

fn report(result: Result<(), NetError>) {
    if let Err(error) = result {
        eprintln!("test network cleanup: {error}");
    }
}

/// A [`NetworkDriver`] that only records: pods "set up" are kept in memory
/// with the names a [`crate::BridgeDriver`] with the same prefix would use.
/// Specs are validated the same way; failures can be injected.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::net::Ipv4Addr;
/// use wharf_net::{NetworkDriver, PodNetworkSpec, testing::MemoryDriver};
///
/// let driver = MemoryDriver::new("wharf-");
/// let spec = PodNetworkSpec {
///     pod_id: "abc".into(),
///     ip: Ipv4Addr::new(10, 0, 0, 2),
///     prefix_len: 24,
///     gateway: Ipv4Addr::new(10, 0, 0, 1),
/// };
/// driver.setup(&spec).await.unwrap();
/// assert_eq!(driver.list().await.unwrap(), ["abc"]);
/// # }
/// ```
#[derive(Debug)]
pub struct MemoryDriver {
    config: BridgeConfig,
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    pods: BTreeMap<String, PodNetwork>,
    fail_setups: Option<String>,
    setups: usize,
    teardowns: usize,
}

impl MemoryDriver {
    /// An empty driver naming namespaces `<netns_prefix><pod_id>`.
    pub fn new(netns_prefix: &str) -> Self {
        Self {
            config: BridgeConfig {
                netns_prefix: netns_prefix.to_owned(),
                ..BridgeConfig::default()
            },
            state: Mutex::new(MemoryState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A test that panicked while holding the lock left consistent data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pods currently set up, by pod id.
    pub fn pods(&self) -> Vec<PodNetwork> {
        self.state().pods.values().cloned().collect()
    }

    /// The network of one pod, if set up.
    pub fn get(&self, pod_id: &str) -> Option<PodNetwork> {
        self.state().pods.get(pod_id).cloned()
    }

    /// Makes every following `setup` fail with `reason` (until called with `None`).
    pub fn fail_setups(&self, reason: Option<&str>) {
        self.state().fail_setups = reason.map(str::to_owned);
    }

    /// How many `setup` and `teardown` calls were made (including failed ones).
    pub fn calls(&self) -> (usize, usize) {
        let state = self.state();
        (state.setups, state.teardowns)
    }
}

#[async_trait]
impl NetworkDriver for MemoryDriver {
    async fn setup(&self, spec: &PodNetworkSpec) -> Result<PodNetwork, NetError> {
        let mut state = self.state();
        state.setups += 1;
        spec.validate()?;
        if let Some(reason) = &state.fail_setups {
            return Err(NetError::Injected {
                pod_id: spec.pod_id.clone(),
                reason: reason.clone(),
            });
        }
        let network = PodNetwork {
            pod_id: spec.pod_id.clone(),
            netns_name: self.config.netns_name(&spec.pod_id),
            netns_path: self.config.netns_path(&spec.pod_id),
            ip: spec.ip,
            prefix_len: spec.prefix_len,
            gateway: spec.gateway,
            host_veth: host_veth_name(&spec.pod_id),
        };
        state.pods.insert(spec.pod_id.clone(), network.clone());
        Ok(network)
    }

    async fn teardown(&self, pod_id: &str) -> Result<(), NetError> {
        let mut state = self.state();
        state.teardowns += 1;
        crate::validate_pod_id(pod_id)?;
        state.pods.remove(pod_id);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<String>, NetError> {
        Ok(self.state().pods.keys().cloned().collect())
    }
}

/// An in-memory [`crate::HostPortDriver`]: keeps the last forwards applied.
#[derive(Debug, Default)]
pub struct MemoryHostPorts {
    applied: Mutex<BTreeMap<String, Vec<crate::HostPortForward>>>,
}

impl MemoryHostPorts {
    /// The forwards in force, by pod id (pods without any left out).
    pub fn applied(&self) -> BTreeMap<String, Vec<crate::HostPortForward>> {
        self.applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[async_trait]
impl crate::HostPortDriver for MemoryHostPorts {
    async fn apply(
        &self,
        forwards: &BTreeMap<String, Vec<crate::HostPortForward>>,
    ) -> Result<(), NetError> {
        let mut applied = self.applied.lock().unwrap_or_else(PoisonError::into_inner);
        *applied = forwards
            .iter()
            .filter(|(_, list)| !list.is_empty())
            .map(|(pod, list)| (pod.clone(), list.clone()))
            .collect();
        Ok(())
    }
}

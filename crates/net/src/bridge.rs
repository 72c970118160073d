//! [`BridgeDriver`]: pods on a Linux bridge, the way pipework did it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Mutex;

use crate::ip::{self, Link, LinkAddrs};
use crate::spec::{NETNS_DIR, POD_INTERFACE, fnv1a64, validate_ifname, validate_netns_name};
use crate::{NetError, NetworkDriver, PodNetwork, PodNetworkSpec, host_veth_name, validate_pod_id};

/// Settings of a [`BridgeDriver`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// The node bridge pods attach to; created on first use. Default `wharf0`.
    pub bridge: String,
    /// Prefix of pod namespace names (`<prefix><pod_id>`). Default `wharf-`.
    /// Namespace names are shared by the whole machine (they are files under
    /// `/var/run/netns`), so drivers simulating different hosts on one
    /// machine need different prefixes.
    pub netns_prefix: String,
    /// MTU of both veth ends; `None` keeps the kernel's default (1500).
    pub mtu: Option<u32>,
    /// Run the node side (bridge, host veth ends) inside this named network
    /// namespace instead of the agent's own: lets one machine play several
    /// hosts in tests (see [`crate::testing::HostNamespace`]).
    pub host_netns: Option<String>,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            bridge: "wharf0".into(),
            netns_prefix: "wharf-".into(),
            mtu: None,
            host_netns: None,
        }
    }
}

impl BridgeConfig {
    /// Checks the names and MTU before any command uses them.
    pub fn validate(&self) -> Result<(), NetError> {
        validate_ifname("bridge name", &self.bridge)?;
        validate_netns_name("netns prefix", &self.netns_prefix)?;
        if let Some(ns) = &self.host_netns {
            validate_netns_name("host netns", ns)?;
        }
        // The upper bound depends on the device; the kernel checks it.
        if let Some(mtu) = self.mtu
            && mtu < 68
        {
            return Err(NetError::InvalidConfig(format!(
                "mtu {mtu} is below 68, the minimum for ipv4"
            )));
        }
        Ok(())
    }

    /// The namespace name of a pod: `<netns_prefix><pod_id>`.
    pub fn netns_name(&self, pod_id: &str) -> String {
        format!("{}{pod_id}", self.netns_prefix)
    }

    /// Where the pod's namespace is mounted: `/var/run/netns/<name>`.
    pub fn netns_path(&self, pod_id: &str) -> PathBuf {
        Path::new(NETNS_DIR).join(self.netns_name(pod_id))
    }
}

/// Pod networks on a node bridge, plumbed by running iproute2's `ip`.
///
/// Each pod gets a namespace `<prefix><pod_id>` holding `eth0` (its address,
/// a default route via the pool's gateway, `lo` up), the other end of a veth
/// pair (`vw<pod_id>`) attached to the bridge, and the bridge carries the
/// gateway address of every pool in use on the node. So the node reaches pod
/// addresses directly and pods reach each other over the bridge. No
/// iptables rules, no forwarding sysctls.
///
/// Operations on one pod are serialized, and each runs to completion in its
/// own task even if the caller's future is dropped, so a cancelled setup
/// still undoes what it created.
///
/// ```no_run
/// # async fn example() -> Result<(), wharf_net::NetError> {
/// use std::net::Ipv4Addr;
/// use wharf_net::{BridgeConfig, BridgeDriver, NetworkDriver, PodNetworkSpec};
///
/// let driver = BridgeDriver::new(BridgeConfig::default())?;
/// let net = driver
///     .setup(&PodNetworkSpec {
///         pod_id: "3f9a0c2b7d1e".into(),
///         ip: Ipv4Addr::new(10, 77, 0, 10),
///         prefix_len: 24,
///         gateway: Ipv4Addr::new(10, 77, 0, 1),
///     })
///     .await?;
/// assert_eq!(net.netns_path.to_str(), Some("/var/run/netns/wharf-3f9a0c2b7d1e"));
/// driver.teardown("3f9a0c2b7d1e").await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct BridgeDriver {
    inner: Arc<Inner>,
}

/// Locks per pod are striped: bounded memory, and two pods rarely share one.
const POD_LOCK_STRIPES: usize = 64;

#[derive(Debug)]
struct Inner {
    config: BridgeConfig,
    /// Serializes check-then-create of the bridge and its addresses between
    /// concurrent setups of different pods.
    bridge_lock: Mutex<()>,
    pod_locks: Vec<Mutex<()>>,
}

/// What one setup call created, so a failure can remove exactly that.
#[derive(Debug, Default)]
struct Created {
    netns: bool,
    veth: bool,
}

impl BridgeDriver {
    /// A driver with `config`, checked first.
    pub fn new(config: BridgeConfig) -> Result<Self, NetError> {
        config.validate()?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                bridge_lock: Mutex::new(()),
                pod_locks: (0..POD_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            }),
        })
    }

    /// The driver's configuration.
    pub fn config(&self) -> &BridgeConfig {
        &self.inner.config
    }
}

#[async_trait]
impl NetworkDriver for BridgeDriver {
    async fn setup(&self, spec: &PodNetworkSpec) -> Result<PodNetwork, NetError> {
        spec.validate()?;
        let inner = Arc::clone(&self.inner);
        let owned = spec.clone();
        // A separate task runs to the end even if our caller gives up, so a
        // setup cancelled between creating the veth and failing never skips
        // the undo.
        let task = tokio::spawn(async move { inner.setup(&owned).await });
        task.await.map_err(|e| NetError::Aborted {
            pod_id: spec.pod_id.clone(),
            reason: e.to_string(),
        })?
    }

    async fn teardown(&self, pod_id: &str) -> Result<(), NetError> {
        validate_pod_id(pod_id)?;
        let inner = Arc::clone(&self.inner);
        let owned = pod_id.to_owned();
        let task = tokio::spawn(async move { inner.teardown(&owned).await });
        task.await.map_err(|e| NetError::Aborted {
            pod_id: pod_id.to_owned(),
            reason: e.to_string(),
        })?
    }

    async fn list(&self) -> Result<Vec<String>, NetError> {
        list_pod_namespaces(&self.inner.config.netns_prefix).await
    }
}

/// Pod ids of the namespaces named `<prefix><pod id>`, sorted.
pub(crate) async fn list_pod_namespaces(prefix: &str) -> Result<Vec<String>, NetError> {
    let io_err = |source| NetError::Io {
        path: PathBuf::from(NETNS_DIR),
        source,
    };
    let mut dir = match tokio::fs::read_dir(NETNS_DIR).await {
        Ok(dir) => dir,
        // iproute2 creates the directory with the first namespace.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(e)),
    };
    let mut pods = Vec::new();
    while let Some(entry) = dir.next_entry().await.map_err(io_err)? {
        if let Some(pod_id) = entry
            .file_name()
            .to_str()
            .and_then(|n| pod_id_of(prefix, n))
        {
            pods.push(pod_id.to_owned());
        }
    }
    pods.sort();
    Ok(pods)
}

/// The pod id in namespace name `name`, if it is one of `prefix`'s.
pub(crate) fn pod_id_of<'a>(prefix: &str, name: &'a str) -> Option<&'a str> {
    let pod_id = name.strip_prefix(prefix)?;
    // Another prefix may extend ours ("wharf-" vs "wharf-test-"); only
    // well-formed pod ids can be ours.
    validate_pod_id(pod_id).is_ok().then_some(pod_id)
}

impl Inner {
    fn pod_lock(&self, pod_id: &str) -> &Mutex<()> {
        let stripe = (fnv1a64(pod_id.as_bytes()) % POD_LOCK_STRIPES as u64) as usize;
        &self.pod_locks[stripe]
    }

    /// `ip` in the node's namespace (ours, or `host_netns`).
    async fn ip_host(&self, args: &[&str]) -> Result<String, NetError> {
        ip::run("ip", self.host_args(args)).await
    }

    fn host_args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut full = Vec::with_capacity(args.len() + 2);
        if let Some(ns) = &self.config.host_netns {
            full.extend(["-n", ns.as_str()]);
        }
        full.extend_from_slice(args);
        full
    }

    /// `ip` inside a pod's namespace. `ip -n` enters it in the child process.
    async fn ip_pod(&self, netns: &str, args: &[&str]) -> Result<String, NetError> {
        let mut full = vec!["-n", netns];
        full.extend_from_slice(args);
        ip::run("ip", full).await
    }

    async fn host_links(&self) -> Result<Vec<Link>, NetError> {
        ip::query(&self.host_args(&["-d", "link", "show"])).await
    }

    async fn bridge_addrs(&self) -> Result<Vec<(Ipv4Addr, u8)>, NetError> {
        let bridge = self.config.bridge.as_str();
        let entries: Vec<LinkAddrs> =
            ip::query(&self.host_args(&["addr", "show", "dev", bridge])).await?;
        Ok(ip::ipv4_addrs(&entries))
    }

    async fn setup(&self, spec: &PodNetworkSpec) -> Result<PodNetwork, NetError> {
        let _pod = self.pod_lock(&spec.pod_id).lock().await;
        // The bridge is shared by all pods and never undone: leaving it (and
        // a gateway address) behind after a failure is harmless.
        self.ensure_bridge(spec).await?;
        let mut created = Created::default();
        match self.plumb_pod(spec, &mut created).await {
            Ok(network) => {
                tracing::info!(pod = %spec.pod_id, ip = %spec.ip, veth = %network.host_veth, "pod network ready");
                Ok(network)
            }
            Err(error) => {
                tracing::warn!(pod = %spec.pod_id, %error, ?created, "pod network setup failed; undoing");
                match self.undo(&spec.pod_id, &created).await {
                    Ok(()) => Err(error),
                    Err(cleanup) => Err(NetError::CleanupFailed {
                        pod_id: spec.pod_id.clone(),
                        error: Box::new(error),
                        cleanup: Box::new(cleanup),
                    }),
                }
            }
        }
    }

    async fn ensure_bridge(&self, spec: &PodNetworkSpec) -> Result<(), NetError> {
        let _bridge = self.bridge_lock.lock().await;
        let bridge = self.config.bridge.as_str();
        let links = self.host_links().await?;
        match links.iter().find(|l| l.ifname == bridge) {
            Some(link) if link.kind() != "bridge" => {
                return Err(NetError::NotABridge {
                    name: bridge.to_owned(),
                    kind: link.kind().to_owned(),
                });
            }
            Some(link) => {
                self.pin_bridge_mac().await?;
                if !link.is_admin_up() {
                    self.ip_host(&["link", "set", "dev", bridge, "up"]).await?;
                }
            }
            None => {
                let mac = random_bridge_mac()?;
                if let Err(error) = self
                    .ip_host(&[
                        "link", "add", "name", bridge, "address", &mac, "type", "bridge",
                    ])
                    .await
                {
                    // Another agent process on the machine may have won the race.
                    let now = self.host_links().await?;
                    if !now
                        .iter()
                        .any(|l| l.ifname == bridge && l.kind() == "bridge")
                    {
                        return Err(error);
                    }
                }
                self.ip_host(&["link", "set", "dev", bridge, "up"]).await?;
            }
        }
        self.ensure_gateway(spec).await
    }

    /// Gives a bridge created before its MAC was set at creation (by an
    /// earlier version, or by hand) a MAC of its own, once. Without one the
    /// kernel gives the bridge the lowest MAC of its ports, so the pods'
    /// gateway changes MAC as pods come and go, and a pod that cached the
    /// MAC of a gone pod's veth loses its gateway until its neighbour
    /// entry is probed again (seen as requests through a service timing
    /// out during rolling updates). Only the agent's own namespace is
    /// checked: `/sys` shows no other.
    async fn pin_bridge_mac(&self) -> Result<(), NetError> {
        if self.config.host_netns.is_some() {
            return Ok(());
        }
        let sys = Path::new("/sys/class/net").join(&self.config.bridge);
        // addr_assign_type 3 (NET_ADDR_SET): the address was chosen for it.
        let assign = std::fs::read_to_string(sys.join("addr_assign_type")).unwrap_or_default();
        if assign.trim() == "3" || assign.is_empty() {
            return Ok(());
        }
        let current = std::fs::read_to_string(sys.join("address")).unwrap_or_default();
        let current = current.trim();
        let mac = if current.is_empty() || current == "00:00:00:00:00:00" {
            random_bridge_mac()?
        } else {
            current.to_owned()
        };
        let bridge = self.config.bridge.as_str();
        self.ip_host(&["link", "set", "dev", bridge, "address", &mac])
            .await
            .map(drop)
    }

    /// One address per pool on the bridge: the pods' gateway, and the
    /// on-link route through which the node reaches that pool's pods.
    async fn ensure_gateway(&self, spec: &PodNetworkSpec) -> Result<(), NetError> {
        let bridge = self.config.bridge.as_str();
        let conflict = |existing_prefix_len| NetError::GatewayConflict {
            bridge: bridge.to_owned(),
            pod_id: spec.pod_id.clone(),
            gateway: spec.gateway,
            existing_prefix_len,
            wanted_prefix_len: spec.prefix_len,
        };
        match self
            .bridge_addrs()
            .await?
            .iter()
            .find(|(a, _)| *a == spec.gateway)
        {
            Some((_, len)) if *len == spec.prefix_len => return Ok(()),
            Some((_, len)) => return Err(conflict(*len)),
            None => {}
        }
        let gateway = spec.gateway_address().to_string();
        if let Err(error) = self
            .ip_host(&["addr", "add", &gateway, "brd", "+", "dev", bridge])
            .await
        {
            // As above: a concurrent agent process may have added it.
            if !self
                .bridge_addrs()
                .await?
                .contains(&(spec.gateway, spec.prefix_len))
            {
                return Err(error);
            }
        }
        Ok(())
    }

    async fn plumb_pod(
        &self,
        spec: &PodNetworkSpec,
        created: &mut Created,
    ) -> Result<PodNetwork, NetError> {
        let netns = self.config.netns_name(&spec.pod_id);
        let veth = host_veth_name(&spec.pod_id);
        self.ensure_netns(&netns, created).await?;
        self.ensure_veth(spec, &netns, &veth, created).await?;

        // Set MTU and state every time rather than only on creation, so a
        // retry (or a changed configuration) converges on what is asked.
        let mtu = self.config.mtu.map(|m| m.to_string());
        let mut host_end = vec![
            "link",
            "set",
            "dev",
            veth.as_str(),
            "master",
            self.config.bridge.as_str(),
        ];
        let mac = spec.mac();
        let mut pod_end = vec!["link", "set", "dev", POD_INTERFACE, "address", &mac];
        if let Some(mtu) = &mtu {
            host_end.extend(["mtu", mtu.as_str()]);
            pod_end.extend(["mtu", mtu.as_str()]);
        }
        host_end.push("up");
        pod_end.push("up");
        self.ip_host(&host_end).await?;
        // Hairpin: a pod reaching its own hostPort is translated back to
        // itself by the node, and where bridged traffic passes netfilter
        // (br_netfilter) the answer must leave by the port it came in.
        self.ip_host(&[
            "link",
            "set",
            "dev",
            veth.as_str(),
            "type",
            "bridge_slave",
            "hairpin",
            "on",
        ])
        .await?;
        self.ip_pod(&netns, &["link", "set", "dev", "lo", "up"])
            .await?;
        self.ip_pod(&netns, &pod_end).await?;
        self.ensure_pod_address(spec, &netns).await?;
        let gateway = spec.gateway.to_string();
        self.ip_pod(
            &netns,
            &[
                "route",
                "replace",
                "default",
                "via",
                &gateway,
                "dev",
                POD_INTERFACE,
            ],
        )
        .await?;

        Ok(PodNetwork {
            pod_id: spec.pod_id.clone(),
            netns_path: self.config.netns_path(&spec.pod_id),
            netns_name: netns,
            ip: spec.ip,
            prefix_len: spec.prefix_len,
            gateway: spec.gateway,
            host_veth: veth,
        })
    }

    async fn ensure_netns(&self, netns: &str, created: &mut Created) -> Result<(), NetError> {
        let path = Path::new(NETNS_DIR).join(netns);
        if path_exists(&path).await? {
            // `ip netns add` creates the file before bind-mounting the new
            // namespace on it; a crash in between leaves a plain file that
            // cannot be entered. Only a namespace we can enter is reused.
            match self.ip_pod(netns, &["link", "show", "dev", "lo"]).await {
                Ok(_) => return Ok(()),
                Err(error @ NetError::Command { .. }) => {
                    tracing::warn!(%netns, %error, "replacing unusable network namespace");
                    created.netns = true;
                    ip::run("ip", ["netns", "delete", netns]).await?;
                }
                Err(error) => return Err(error),
            }
        }
        created.netns = true;
        // Always from our own namespace context: `ip -n X netns add` would
        // mount the new namespace inside ip's private mount namespace, where
        // nobody else can see it.
        ip::run("ip", ["netns", "add", netns]).await?;
        Ok(())
    }

    /// Makes `veth` (node side) and `eth0` (pod side) the two ends of one
    /// pair, replacing leftovers of an earlier attempt that are not.
    async fn ensure_veth(
        &self,
        spec: &PodNetworkSpec,
        netns: &str,
        veth: &str,
        created: &mut Created,
    ) -> Result<(), NetError> {
        let host_links = self.host_links().await?;
        let pod_links: Vec<Link> = ip::query(&["-n", netns, "-d", "link", "show"]).await?;
        let host_end = host_links.iter().find(|l| l.ifname == veth);
        let pod_end = pod_links.iter().find(|l| l.ifname == POD_INTERFACE);
        if let Some(link) = host_end {
            if link.kind() != "veth" {
                return Err(NetError::InterfaceConflict {
                    pod_id: spec.pod_id.clone(),
                    name: veth.to_owned(),
                    kind: link.kind().to_owned(),
                });
            }
            if pod_end.is_some_and(|pod| link.is_veth_peer_of(pod)) {
                return Ok(());
            }
            tracing::warn!(%veth, pod = %spec.pod_id, "deleting veth whose peer is not the pod's eth0");
            self.ip_host(&["link", "delete", "dev", veth]).await?;
        }
        if pod_end.is_some() {
            tracing::warn!(%netns, "deleting eth0 without its node-side peer");
            self.ip_pod(netns, &["link", "delete", "dev", POD_INTERFACE])
                .await?;
        }
        created.veth = true;
        // Creating the peer directly inside the namespace under its final
        // name avoids a temporary name in the node namespace that a crash
        // could leave behind (or that two pods could collide on).
        self.ip_host(&[
            "link",
            "add",
            "name",
            veth,
            "type",
            "veth",
            "peer",
            "name",
            POD_INTERFACE,
            "netns",
            netns,
        ])
        .await?;
        Ok(())
    }

    async fn ensure_pod_address(&self, spec: &PodNetworkSpec, netns: &str) -> Result<(), NetError> {
        let entries: Vec<LinkAddrs> =
            ip::query(&["-n", netns, "addr", "show", "dev", POD_INTERFACE]).await?;
        let addrs = ip::ipv4_addrs(&entries);
        if addrs == [(spec.ip, spec.prefix_len)] {
            return Ok(());
        }
        // Anything else is from an earlier spec of this pod: the pod has
        // exactly the address the control plane gave it.
        if !addrs.is_empty() {
            self.ip_pod(netns, &["-4", "addr", "flush", "dev", POD_INTERFACE])
                .await?;
        }
        let address = spec.address().to_string();
        self.ip_pod(
            netns,
            &["addr", "add", &address, "brd", "+", "dev", POD_INTERFACE],
        )
        .await?;
        Ok(())
    }

    async fn undo(&self, pod_id: &str, created: &Created) -> Result<(), NetError> {
        let veth = if created.veth {
            self.delete_host_veth(pod_id).await
        } else {
            Ok(())
        };
        let netns = if created.netns {
            self.delete_netns(pod_id).await
        } else {
            Ok(())
        };
        veth.and(netns)
    }

    async fn teardown(&self, pod_id: &str) -> Result<(), NetError> {
        let _pod = self.pod_lock(pod_id).lock().await;
        // Both steps are attempted even if the first fails: a namespace left
        // behind would keep the pod listed forever.
        let veth = self.delete_host_veth(pod_id).await;
        let netns = self.delete_netns(pod_id).await;
        veth.and(netns)?;
        tracing::info!(pod = %pod_id, "pod network removed");
        Ok(())
    }

    /// Deleting one end of a veth pair deletes the other (the pod's eth0).
    async fn delete_host_veth(&self, pod_id: &str) -> Result<(), NetError> {
        let veth = host_veth_name(pod_id);
        let links = self.host_links().await?;
        match links.iter().find(|l| l.ifname == veth) {
            None => Ok(()),
            Some(link) if link.kind() != "veth" => {
                tracing::warn!(%veth, kind = link.kind(), "not deleting an interface that is not a veth");
                Ok(())
            }
            Some(_) => self
                .ip_host(&["link", "delete", "dev", &veth])
                .await
                .map(drop),
        }
    }

    async fn delete_netns(&self, pod_id: &str) -> Result<(), NetError> {
        let netns = self.config.netns_name(pod_id);
        if path_exists(&self.config.netns_path(pod_id)).await? {
            ip::run("ip", ["netns", "delete", netns.as_str()]).await?;
        }
        Ok(())
    }
}

async fn path_exists(path: &Path) -> Result<bool, NetError> {
    tokio::fs::try_exists(path)
        .await
        .map_err(|source| NetError::Io {
            path: path.to_owned(),
            source,
        })
}

/// A random unicast, locally administered MAC for a new bridge: random,
/// not derived from the node, so bridges of nodes sharing a segment never
/// collide.
fn random_bridge_mac() -> Result<String, NetError> {
    use std::io::Read;
    let mut bytes = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .map_err(|source| NetError::Io {
            path: "/dev/urandom".into(),
            source,
        })?;
    Ok(bridge_mac_from(bytes))
}

/// `bytes` as a MAC with the multicast bit cleared and the locally
/// administered bit set.
fn bridge_mac_from(mut bytes: [u8; 6]) -> String {
    bytes[0] = (bytes[0] & 0b1111_1100) | 0b10;
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::bridge_mac_from;

    #[test]
    fn bridge_macs_are_unicast_and_locally_administered() {
        assert_eq!(bridge_mac_from([0xff; 6]), "fe:ff:ff:ff:ff:ff");
        assert_eq!(bridge_mac_from([0; 6]), "02:00:00:00:00:00");
        assert_eq!(bridge_mac_from([0x0a, 1, 2, 3, 4, 5]), "0a:01:02:03:04:05");
    }
}

//! Assembling a real [`ContainerRuntime`] for this machine: the image
//! cache, the bridge driver, runc and the pods' name server, after
//! checking that what they need is here.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Weak;
use std::time::Duration;

use wharf_fs::private_dir;
use wharf_image::{ImageGcPolicy, ImageStore, ImageStoreOptions, RegistryCredentials};
use wharf_net::{BridgeConfig, BridgeDriver, NETNS_DIR, NftHostPorts};
use wharf_runc::{Runc, ShimCommand};

use super::mounts::unescape;
use super::{ContainerRuntime, ContainerRuntimeConfig, ImageStorePuller, RuncDriver};
use crate::AgentError;
use crate::api::NodeApi;
use crate::dns::{DNS_PORT, DnsServer, Upstreams, nameservers};
use crate::p2p::{P2pSettings, PeerNode};

/// What a node needs to run containers.
#[derive(Clone, Debug)]
pub struct NodeSetup {
    /// Node name.
    pub node: String,
    /// Pod records, container directories and the image cache.
    pub data_dir: PathBuf,
    /// The runc binary.
    pub runc: PathBuf,
    /// runc's state directory, Wharf's alone (tmpfs: a reboot clears it).
    pub runc_root: PathBuf,
    /// How to start a container's shim (`wharf shim`).
    pub shim: ShimCommand,
    /// Bridge, namespace names, optional host namespace.
    pub bridge: BridgeConfig,
    /// The node-local range (`a.b.c.0/len`); its first address is the gateway.
    pub local_cidr: String,
    /// The node's address, reported as the pods' `hostIP`.
    pub host_ip: Option<String>,
    /// Registry login for pulls (a robot account, usually).
    pub credentials: Option<RegistryCredentials>,
    /// Registry for references without a host (the server's `host:port`).
    pub default_registry: Option<String>,
    /// Registries reached over plain HTTP besides loopback ones.
    pub plain_http: Vec<String>,
    /// Unpacking limits, disk reserve (from the image cache's defaults,
    /// changed by the agent's flags).
    pub images: ImageStoreOptions,
    /// When unused images are removed from the cache.
    pub image_gc: ImageGcPolicy,
    /// How often the image garbage collection looks at the disk.
    pub image_gc_interval: Duration,
    /// The resolv.conf whose name servers the pods' name server forwards
    /// to, and which pods with `dnsPolicy: Default` get.
    pub resolv_conf: PathBuf,
    /// P2P layer distribution (`None`: layers come from the registry only).
    pub p2p: Option<P2pSettings>,
}

impl NodeSetup {
    /// Checks root, runc and iproute2, then opens the image cache and
    /// adopts the pods an earlier run left.
    pub async fn open(self, api: Arc<dyn NodeApi>) -> Result<Arc<ContainerRuntime>, AgentError> {
        let setup = |what: String| AgentError::Setup(what);
        if !nix::unistd::Uid::effective().is_root() {
            return Err(setup(
                "running containers needs root (namespaces, mounts, cgroups); run as root or use --runtime none".into(),
            ));
        }
        for (program, package) in [(self.runc.as_os_str(), "runc"), ("ip".as_ref(), "iproute2")] {
            if !found(program).await {
                return Err(setup(format!(
                    "{} not found: install it (apt-get install {package})",
                    program.to_string_lossy()
                )));
            }
        }
        // Images may carry setuid binaries and device nodes; every copy of
        // them (layer cache, container roots and upper directories) sits
        // below these, which no other user may enter (the cache makes its
        // own directory private too).
        for dir in [
            self.data_dir.clone(),
            self.data_dir.join("pods"),
            self.runc_root.clone(),
        ] {
            private_dir(&dir).map_err(|e| setup(format!("{}: {e}", dir.display())))?;
        }
        let subnet = wharf_api::Subnet::parse(&self.local_cidr)
            .map_err(|e| setup(format!("--pod-cidr: {e}")))?;
        let gateway = Ipv4Addr::from(u32::from(subnet.network) + 1);
        let peer = match self.p2p {
            Some(settings) => Some(
                PeerNode::open(
                    self.data_dir.join("blobs"),
                    api.clone(),
                    settings,
                    self.default_registry.clone(),
                )
                .await?,
            ),
            None => None,
        };
        let images = ImageStore::open(
            self.data_dir.join("images"),
            ImageStoreOptions {
                plain_http: self.plain_http.clone(),
                blob_fetcher: peer.as_ref().map(|p| p.blob_fetcher()),
                ..self.images.clone()
            },
        )
        .await
        .map_err(|e| setup(format!("opening the image cache: {e}")))?;
        let images = Arc::new(images);
        tokio::spawn(collect_images(
            Arc::downgrade(&images),
            peer.clone(),
            self.data_dir.join("pods"),
            self.image_gc,
            self.image_gc_interval,
        ));
        let network =
            BridgeDriver::new(self.bridge.clone()).map_err(|e| setup(format!("bridge: {e}")))?;
        let mut config = ContainerRuntimeConfig::new(&self.node, self.data_dir.clone());
        config.local_subnet = subnet;
        config.local_gateway = gateway;
        config.host_ip = self.host_ip.clone();
        config.resolv_conf = self.resolv_conf.clone();
        config.node_netns = self
            .bridge
            .host_netns
            .as_ref()
            .map(|ns| Path::new(NETNS_DIR).join(ns));
        let commits = crate::commit::CommitSource {
            store: images.clone(),
            credentials: self.credentials.clone(),
            default_registry: self.default_registry.clone(),
        };
        let puller = ImageStorePuller::new(
            images,
            self.credentials.clone(),
            self.default_registry.clone(),
        );
        let driver = RuncDriver::new(Runc::new(&self.runc, &self.runc_root), self.shim.clone());
        let mut runtime = ContainerRuntime::open(
            config,
            api,
            Arc::new(puller),
            Arc::new(driver),
            Arc::new(network),
        )
        .await
        .with_commits(commits);
        if let Some(peer) = peer {
            runtime = runtime.with_p2p(peer);
        }
        if let Some(dns) = self.pod_dns().await {
            runtime = runtime.with_dns(dns);
        }
        if !found("nft".as_ref()).await {
            tracing::warn!(
                "nft not found (apt-get install nftables): pods asking for a hostPort are refused"
            );
            return Ok(Arc::new(runtime));
        }
        let forwards = NftHostPorts::new(&self.node, self.bridge.host_netns.clone());
        let runtime = runtime
            .with_host_ports(Arc::new(forwards))
            .await
            .map_err(|e| setup(format!("host port forwards: {e}")))?;
        Ok(Arc::new(runtime))
    }

    /// The pods' name server, forwarding to the resolvers `resolv_conf`
    /// lists now. None for a simulated host
    /// (`host_netns`): its sockets would have to be made inside that
    /// namespace, which the agent process never enters; its pods keep the
    /// node's resolv.conf.
    async fn pod_dns(&self) -> Option<DnsServer> {
        if self.bridge.host_netns.is_some() {
            tracing::warn!(
                "no pod DNS on a simulated host (--host-netns): pods get the node's resolv.conf"
            );
            return None;
        }
        let host = tokio::fs::read_to_string(&self.resolv_conf)
            .await
            .unwrap_or_else(|err| {
                tracing::warn!(path = %self.resolv_conf.display(), error = %err,
                    "unreadable resolv.conf: pods' other names go to 127.0.0.1");
                String::new()
            });
        Some(DnsServer::new(Upstreams::new(nameservers(&host)), DNS_PORT))
    }
}

/// Whether `program` runs (it is asked for its version).
async fn found(program: &std::ffi::OsStr) -> bool {
    tokio::process::Command::new(program)
        .arg("-V")
        .output()
        .await
        .is_ok()
}

/// Runs the image cache's garbage collection every `interval` while the
/// cache is in use, sparing the images of mounted container roots.
async fn collect_images(
    images: Weak<ImageStore>,
    peer: Option<Arc<PeerNode>>,
    pods_dir: PathBuf,
    policy: ImageGcPolicy,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(images) = images.upgrade() else {
            return;
        };
        let dir = pods_dir.clone();
        let in_use = tokio::task::spawn_blocking(move || mounted_layers(&dir))
            .await
            .unwrap_or_default();
        match images.collect_garbage(&policy, &in_use).await {
            Ok(report) if !report.removed_images.is_empty() => {
                tracing::info!(
                    images = report.removed_images.len(),
                    layers = report.removed_layers.len(),
                    "removed unused images"
                );
                // The compressed blobs the layers came from go too.
                if let Some(peer) = &peer {
                    peer.forget(&report.removed_layers).await;
                }
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "image garbage collection failed"),
        }
    }
}

/// The lower directories of every overlay mounted under `pods_dir` (the
/// container roots), bottom layer first, from `/proc/self/mountinfo`.
pub fn mounted_layers(pods_dir: &Path) -> Vec<Vec<PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    overlay_layers(&text, pods_dir)
}

/// [`mounted_layers`] from the text of a mountinfo file.
fn overlay_layers(text: &str, pods_dir: &Path) -> Vec<Vec<PathBuf>> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mount_point = unescape(fields.get(4)?);
            let after = line.split_once(" - overlay ")?.1;
            if !Path::new(&mount_point).starts_with(pods_dir) {
                return None;
            }
            let options = after.split(' ').nth(1)?;
            let lower = options
                .split(',')
                .find_map(|o| o.strip_prefix("lowerdir="))?;
            let mut layers: Vec<PathBuf> = lower.split(':').map(|l| unescape(l).into()).collect();
            layers.reverse();
            Some(layers)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_lower_directories_are_read_from_mountinfo() {
        let text = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
98 22 0:52 / /var/lib/wharf/node/pods/shop_web-1/containers/web/rootfs rw,nodev,relatime - overlay overlay rw,lowerdir=/var/lib/wharf/node/images/layers/sha256/bb:/var/lib/wharf/node/images/layers/sha256/aa,upperdir=/u,workdir=/w
99 22 0:53 / /elsewhere rw - overlay overlay rw,lowerdir=/x,upperdir=/u,workdir=/w
100 22 0:54 / /var/lib/wharf/node/pods/my\\040pod/rootfs rw - overlay overlay rw,lowerdir=/l\\040a,upperdir=/u,workdir=/w
";
        let layers = overlay_layers(text, Path::new("/var/lib/wharf/node/pods"));
        assert_eq!(
            layers,
            vec![
                vec![
                    PathBuf::from("/var/lib/wharf/node/images/layers/sha256/aa"),
                    PathBuf::from("/var/lib/wharf/node/images/layers/sha256/bb"),
                ],
                vec![PathBuf::from("/l a")],
            ]
        );
    }
}

//! Assembling a real [`ContainerRuntime`] for this machine: the image
//! cache, the bridge driver and runc, after checking that what they need
//! is here.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use wharf_image::{ImageStore, ImageStoreOptions, RegistryCredentials, private_dir};
use wharf_net::{BridgeConfig, BridgeDriver};
use wharf_runc::{Runc, ShimCommand};

use super::{ContainerRuntime, ContainerRuntimeConfig, ImageStorePuller, RuncDriver};
use crate::AgentError;
use crate::api::NodeApi;

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
            let found = tokio::process::Command::new(program)
                .arg("-V")
                .output()
                .await
                .is_ok();
            if !found {
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
        let images = ImageStore::open(
            self.data_dir.join("images"),
            ImageStoreOptions {
                plain_http: self.plain_http.clone(),
                ..ImageStoreOptions::default()
            },
        )
        .await
        .map_err(|e| setup(format!("opening the image cache: {e}")))?;
        let network =
            BridgeDriver::new(self.bridge.clone()).map_err(|e| setup(format!("bridge: {e}")))?;
        let mut config = ContainerRuntimeConfig::new(&self.node, self.data_dir.clone());
        config.local_subnet = subnet;
        config.local_gateway = gateway;
        config.host_ip = self.host_ip.clone();
        let puller = ImageStorePuller::new(
            Arc::new(images),
            self.credentials.clone(),
            self.default_registry.clone(),
        );
        let driver = RuncDriver::new(Runc::new(&self.runc, &self.runc_root), self.shim.clone());
        Ok(Arc::new(ContainerRuntime::open(
            config,
            api,
            Arc::new(puller),
            Arc::new(driver),
            Arc::new(network),
        )))
    }
}

//! Node networking for pods, "the way pipework did it": a network namespace
//! per pod, a veth pair with `eth0` (the pod's fixed address, a default
//! route via its pool's gateway) inside and the other end on a node bridge
//! (`wharf0`) that carries the gateway address of every pool in use on the
//! node. The node reaches pod addresses directly; pods on one node reach
//! each other over the bridge.
//!
//! The control plane chooses each pod's address; this crate only plumbs it.
//! [`NetworkDriver`] is what the agent uses: [`BridgeDriver`] for real
//! (iproute2's `ip` as a child process, never `setns` in our own
//! multi-threaded process), [`testing::MemoryDriver`] for logic tests.
//! [`testing`] also has [`testing::HostNamespace`], which lets one machine
//! play several hosts.
//!
//! Pods' `hostPort`s are forwarded by [`NftHostPorts`]: nftables DNAT in a
//! table of the node's own ([`hostport`] explains why it is rewritten whole).
//!
//! Services' cluster IPs are forwarded to their ready endpoints by the
//! rules [`services::ruleset`] writes (not yet installed by the agent).
//!
//! [`lab`] builds many shaped "machines" (network namespaces on one bridge)
//! for the tests and benchmarks that play a fleet on one host.
//!
//! Requires root (`CAP_NET_ADMIN` and `CAP_SYS_ADMIN` for `ip netns`),
//! iproute2, and nftables' `nft` for host ports. No sysctls are touched.

mod bridge;
mod driver;
mod error;
pub mod hostport;
mod ip;
pub mod lab;
pub mod services;
mod spec;
#[cfg(feature = "testing")]
pub mod testing;

pub use bridge::{BridgeConfig, BridgeDriver};
pub use driver::NetworkDriver;
pub use error::NetError;
pub use hostport::{HostPortDriver, HostPortForward, NftHostPorts, PortProtocol};
pub use spec::{
    Ipv4Cidr, MAX_IFNAME_LEN, MAX_POD_ID_LEN, NETNS_DIR, POD_INTERFACE, PodNetwork, PodNetworkSpec,
    host_veth_name, validate_pod_id,
};

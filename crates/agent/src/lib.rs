//! The node agent: registers its machine (capacity read from the kernel,
//! labels for pool, IDC, cluster kind and machine class, cost, and
//! Kubernetes' standard hostname, os and arch labels), renews its
//! heartbeat lease, takes the pods bound to its node and reports their
//! status. A [`Simulation`] does the same for many hollow nodes at once.
//!
//! The agent talks to the control plane through [`NodeApi`]: over HTTP for
//! real agents (the binary has an in-process one for benchmarks). What it
//! does with a pod is the [`Runtime`]'s business.

mod agent;
mod api;
pub mod commit;
pub mod containers;
pub mod dns;
mod endpoint;
mod error;
pub mod exec;
mod fencing;
mod freezer;
mod health;
pub mod init_profile;
mod initialization;
mod load;
mod logs;
pub mod machine;
pub mod metrics;
pub mod p2p;
mod preheat;
pub mod probes;
mod runtime;
pub mod service_forwards;
mod service_rules;
mod service_sync;
pub mod service_view;
mod simulate;
mod streams;
pub mod usage;

pub use agent::{
    Agent, AgentConfig, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_LEASE_TTL, DEFAULT_STATUS_INTERVAL,
    DEFAULT_USAGE_INTERVAL,
};
pub use api::{
    HttpNodeApi, NodeApi, PodAccess, PodChange, PodChanges, ServiceChange, ServiceChanges,
    TokenSource,
};
pub use endpoint::{EXEC_PROTOCOL, PORT_FORWARD_PROTOCOL, serve_endpoint};
pub use error::AgentError;
pub use initialization::{DEFAULT_INIT_INTERVAL, InitSettings};
pub use load::{LoadMeter, LoadSource, LoadSummary};
pub use metrics::DEFAULT_METRICS_INTERVAL;
pub use preheat::DEFAULT_PREHEAT_INTERVAL;
pub use runtime::{NoRuntime, Progress, Runtime, SimulatedRuntime, Synced};
pub use service_rules::ServiceRules;
pub use simulate::{Simulation, SimulationConfig};

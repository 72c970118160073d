//! What every driver offers: the [`MachineProvider`] interface and the
//! machines it returns.

use async_trait::async_trait;

/// The tag (or label) naming the cluster a created machine belongs to.
pub const TAG_CLUSTER: &str = "wharf.io/cluster";
/// The tag naming the pool a created machine belongs to.
pub const TAG_POOL: &str = "wharf.io/pool";

/// Machines wanted for a pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineRequest {
    /// The cluster (tagged on each machine).
    pub cluster: String,
    /// The pool (tagged on each machine; listing finds them by it).
    pub pool: String,
    /// How many.
    pub count: u32,
    /// Their machine class (the driver maps it to an instance type).
    pub machine_class: String,
    /// What a new machine runs at first boot: the join command, when the
    /// caller has one. The EC2 driver passes it as the instance's
    /// UserData; the static driver returns it for the operator to run.
    pub join_command: Option<String>,
    /// Addresses already in use by nodes (the static driver hands out
    /// others only).
    pub in_use: Vec<String>,
}

/// Where a machine is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MachineState {
    /// Being created or booting.
    Pending,
    /// Up.
    Running,
    /// Being stopped or terminated.
    Stopping,
    /// Stopped or terminated.
    Gone,
}

impl MachineState {
    /// The state of an EC2 instance state name.
    pub fn from_ec2(name: &str) -> MachineState {
        match name {
            "pending" => MachineState::Pending,
            "running" => MachineState::Running,
            "shutting-down" | "stopping" => MachineState::Stopping,
            _ => MachineState::Gone,
        }
    }
}

/// A machine a provider made (or, for the static driver, handed out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// Its identity at the provider: an instance id, or the listed
    /// address. A node made from it carries it as `wharf.io/instance-id`.
    pub id: String,
    /// Its private address, once known.
    pub address: Option<String>,
    /// Its state.
    pub state: MachineState,
    /// For the static driver: the command to run on it to make it a node.
    pub join_command: Option<String>,
}

/// Why a provider call failed. Messages never hold credentials.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider's settings or credentials are unusable.
    #[error("provider settings: {0}")]
    Config(String),
    /// The provider could not be reached.
    #[error("provider unreachable: {0}")]
    Transport(String),
    /// The provider refused the call.
    #[error("provider refused {action}: {code}: {message}")]
    Refused {
        /// The API action.
        action: String,
        /// The provider's error code.
        code: String,
        /// Its message.
        message: String,
    },
    /// The provider's answer could not be read.
    #[error("unreadable answer to {action}: {message}")]
    Answer {
        /// The API action.
        action: String,
        /// What was wrong.
        message: String,
    },
    /// The static driver has no listed machine left.
    #[error("no listed machine is free (all {0} are nodes)")]
    Exhausted(usize),
}

/// Creates, lists and deletes a pool's machines.
#[async_trait]
pub trait MachineProvider: Send + Sync {
    /// The driver's name (`static`, `ec2`).
    fn driver(&self) -> &'static str;

    /// Makes `request.count` machines; returns them as created (an EC2
    /// instance is `Pending` at first).
    async fn create(&self, request: &MachineRequest) -> Result<Vec<Machine>, ProviderError>;

    /// The machines of `pool` in `cluster` that are not gone.
    async fn list(&self, cluster: &str, pool: &str) -> Result<Vec<Machine>, ProviderError>;

    /// Removes machines by id.
    async fn delete(&self, ids: &[String]) -> Result<(), ProviderError>;
}

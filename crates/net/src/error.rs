use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Why plumbing a pod's network failed.
///
/// Messages are lowercase and name the pod, interface or address involved;
/// a failed `ip` command carries the command line and its stderr.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A pod id outside `[a-z0-9]{1,40}`.
    #[error("invalid pod id {pod_id:?}: expected 1 to 40 characters from [a-z0-9]")]
    InvalidPodId {
        /// The id as given.
        pod_id: String,
    },
    /// A pod's address, gateway and prefix length do not fit together.
    #[error("invalid network spec for pod {pod_id}: {reason}")]
    InvalidSpec {
        /// The pod the spec is for.
        pod_id: String,
        /// What is wrong, naming the addresses involved.
        reason: String,
    },
    /// An interface, namespace or prefix name in the configuration is unusable.
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        /// Which setting: "bridge name", "netns prefix", ...
        what: &'static str,
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The configuration is unusable for another reason.
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    /// An `ip` command (or another helper program) exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line that was run.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// What it printed on stderr, trimmed.
        stderr: String,
    },
    /// A command could not be started (e.g. `ip` is not installed).
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line that was attempted.
        command: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A command did not finish in time and was killed.
    #[error("`{command}` did not finish within {timeout:?}")]
    Timeout {
        /// The command line that was run.
        command: String,
        /// How long it was given.
        timeout: Duration,
    },
    /// A command's output could not be understood.
    #[error("unexpected output from `{command}`: {reason}")]
    UnexpectedOutput {
        /// The command line that was run.
        command: String,
        /// What could not be parsed.
        reason: String,
    },
    /// An interface with the bridge's name exists but is not a bridge.
    #[error("interface {name} exists but is a {kind}, not a bridge")]
    NotABridge {
        /// The interface name.
        name: String,
        /// Its kind as iproute2 reports it (`veth`, `dummy`, `device`, ...).
        kind: String,
    },
    /// An interface with the name derived for a pod's veth exists and is not a veth.
    #[error(
        "interface {name} for pod {pod_id} exists but is a {kind}, not a veth; refusing to touch it"
    )]
    InterfaceConflict {
        /// The pod.
        pod_id: String,
        /// The interface name.
        name: String,
        /// Its kind as iproute2 reports it.
        kind: String,
    },
    /// The bridge already carries the gateway address with another prefix length.
    #[error(
        "bridge {bridge} already has {gateway}/{existing_prefix_len}; pod {pod_id} needs {gateway}/{wanted_prefix_len}"
    )]
    GatewayConflict {
        /// The bridge.
        bridge: String,
        /// The pod whose pool asked for the gateway.
        pod_id: String,
        /// The gateway address.
        gateway: Ipv4Addr,
        /// The prefix length found on the bridge.
        existing_prefix_len: u8,
        /// The prefix length the pod's pool uses.
        wanted_prefix_len: u8,
    },
    /// Reading the namespace directory failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A setup step failed and undoing what the call had created failed too,
    /// so something is left behind: the caller should tear the pod down.
    #[error("setting up pod {pod_id} failed: {error}; undoing it also failed: {cleanup}")]
    CleanupFailed {
        /// The pod.
        pod_id: String,
        /// Why setup failed.
        error: Box<NetError>,
        /// Why the undo failed.
        cleanup: Box<NetError>,
    },
    /// The task running the operation panicked or was cancelled by the runtime
    /// shutting down.
    #[error("network operation for pod {pod_id} did not complete: {reason}")]
    Aborted {
        /// The pod.
        pod_id: String,
        /// What happened to the task.
        reason: String,
    },
    /// A test double was told to fail.
    #[error("injected failure for pod {pod_id}: {reason}")]
    Injected {
        /// The pod.
        pod_id: String,
        /// The reason given to the test double.
        reason: String,
    },
}

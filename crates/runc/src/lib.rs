//! Runs OCI containers with the `runc` binary.
//!
//! - [`spec`] turns the image's process defaults and a pod's container
//!   into a runtime `config.json` (Kubernetes' command/args rules, env,
//!   user from the image's `/etc/passwd`, cgroup limits, Docker's default
//!   namespaces, mounts and capabilities).
//! - [`Bundle`] writes it, with `/etc/hosts`, `/etc/hostname` and
//!   `/etc/resolv.conf`, into a bundle directory; the rootfs is prepared
//!   elsewhere and only referenced.
//! - The shim ([`shim_main`]) supervises one container: it runs
//!   `runc run` in the foreground with the container's output going
//!   straight into its log file, and records the exit status in a file, so
//!   containers and their outcome survive a restart of the agent.
//! - [`Runc`] starts containers through the shim and queries, signals,
//!   stops and deletes them, always under Wharf's own runc `--root`.
//! - [`logs`] reads log files, following them as they grow.
//!
//! Starting a container (as root, with runc installed):
//!
//! ```no_run
//! # async fn run() -> Result<(), wharf_runc::RuncError> {
//! use std::time::Duration;
//! use wharf_runc::{Bundle, Runc, ShimCommand, spec::{ProcessDefaults, SpecOptions}};
//!
//! let image = ProcessDefaults { cmd: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()], ..Default::default() };
//! let container = wharf_api::Container { name: "hello".into(), ..Default::default() };
//! let options = SpecOptions::new("/var/lib/wharf/rootfs/hello", "hello", "/wharf/hello");
//! let bundle = Bundle::create("/var/lib/wharf/bundles/hello", &image, &container, &options).await?;
//!
//! let runc = Runc::new("/usr/sbin/runc", "/run/wharf/runc");
//! let shim = ShimCommand { program: "/usr/bin/wharf".into(), prefix: vec!["shim".into()] };
//! let exit_file = bundle.dir().join("exit.json");
//! runc.create_and_start(&bundle, "hello", &bundle.dir().join("log"), &exit_file, &shim).await?;
//! let status = runc.stop("hello", &exit_file, Duration::from_secs(30)).await?;
//! # Ok(()) }
//! ```

mod bundle;
mod error;
mod fsutil;
pub mod logs;
mod runc;
mod shim;
pub mod spec;

pub use bundle::Bundle;
pub use error::RuncError;
pub use nix::sys::signal::Signal;
pub use runc::{Runc, Started, State, Status, exit_status, wait_for_exit_file};
pub use shim::{
    ExitStatus, REASON_OOM_KILLED, REASON_START_ERROR, ShimArgs, ShimCommand, shim_main,
};

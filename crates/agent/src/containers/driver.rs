//! The node's side effects behind traits: getting images and running
//! containers. The real implementations ([`crate::containers::ImageStorePuller`],
//! [`crate::containers::RuncDriver`]) need root; the pod logic is tested
//! against fakes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use wharf_api::{Container, ContainerUsage, EffectiveSecurity};
use wharf_runc::spec::ProcessDefaults;

use crate::usage::CgroupStats;

/// An image ready to run: its unpacked layers and process defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Layer directories, bottom first.
    pub layers: Vec<PathBuf>,
    /// Entrypoint, command, environment, working directory, user.
    pub process: ProcessDefaults,
    /// Where the pull's bytes came from.
    pub pulled: wharf_image::PullBytes,
}

/// When a pull may be answered from the node's cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// Ask the registry every time (new layers only are downloaded).
    Always,
    /// Use the cached image when there is one.
    IfNotPresent,
    /// Only the cache.
    Never,
}

impl PullPolicy {
    /// The container's `imagePullPolicy`, or Kubernetes' default: `Always`
    /// for `:latest` or untagged references, else `IfNotPresent`.
    pub fn of(container: &Container) -> PullPolicy {
        match container.image_pull_policy.as_deref() {
            Some("Always") => PullPolicy::Always,
            Some("Never") => PullPolicy::Never,
            Some(_) => PullPolicy::IfNotPresent,
            None => {
                let image = container.image.as_str();
                let name = image.rsplit('/').next().unwrap_or(image);
                let pinned = image.contains('@');
                let tag = name.split_once(':').map(|(_, tag)| tag);
                if !pinned && tag.is_none_or(|t| t == "latest") {
                    PullPolicy::Always
                } else {
                    PullPolicy::IfNotPresent
                }
            }
        }
    }
}

/// A pull or container operation that failed, under the Kubernetes reason
/// a container waiting after it shows; displays as the detail alone.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContainerError {
    /// `ErrImagePull`: the image could not be pulled (or is not on the
    /// node and may not be).
    #[error("{0}")]
    ImagePull(String),
    /// `CreateContainerError`: the container could not be made or started.
    #[error("{0}")]
    Create(String),
    /// `CreateContainerConfigError`: the pod's settings forbid starting
    /// the container as it is (`runAsNonRoot` with a root user).
    #[error("{0}")]
    Config(String),
    /// `KillContainerError`: a container could not be stopped, or what is
    /// left of it removed.
    #[error("{0}")]
    Kill(String),
}

impl ContainerError {
    /// The reason, as a container's waiting state names it.
    pub fn reason(&self) -> &'static str {
        match self {
            ContainerError::ImagePull(_) => "ErrImagePull",
            ContainerError::Create(_) => "CreateContainerError",
            ContainerError::Config(_) => "CreateContainerConfigError",
            ContainerError::Kill(_) => "KillContainerError",
        }
    }
}

/// Pulls images into the node's layer cache.
#[async_trait]
pub trait ImagePuller: Send + Sync + 'static {
    /// Pulls `image`, calling `progress` with a line like
    /// `pulling 127.0.0.1:7700/shop/web:1: 3.1/12.0 MiB`.
    async fn pull(
        &self,
        image: &str,
        policy: PullPolicy,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<Image, ContainerError>;

    /// The layers in the cache (digest, size), for the node's load
    /// summary; `None` if they cannot be read (the node then reports no
    /// cache and scores neutral).
    async fn cached_layers(&self) -> Option<Vec<wharf_api::CachedLayer>> {
        None
    }

    /// Bytes pulled since the agent started, by origin; `None` if the
    /// puller does not count them.
    fn pulled_bytes(&self) -> Option<wharf_image::PullBytes> {
        None
    }

    /// Pulls `image` into the cache unless it is there (a preheat),
    /// calling `progress` with bytes done and in all; returns the image's
    /// bytes. Pullers without a cache of their own refuse.
    async fn warm(
        &self,
        image: &str,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<u64, ContainerError> {
        let _ = progress;
        Err(ContainerError::ImagePull(format!(
            "this image puller keeps no cache to preheat {image} into"
        )))
    }
}

/// What starting one container needs.
#[derive(Clone, Debug)]
pub struct Launch {
    /// Runtime id, unique on the node.
    pub id: String,
    /// The container's own directory (bundle, rootfs, log, exit file).
    pub dir: PathBuf,
    /// The image.
    pub image: Image,
    /// The container as the pod specifies it.
    pub container: Container,
    /// Its security context over the pod's, and the pod's host namespaces.
    pub security: EffectiveSecurity,
    /// Host name inside (the pod's name).
    pub hostname: String,
    /// The pod's network namespace.
    pub netns: Option<PathBuf>,
    /// The pod's address.
    pub ip: Option<std::net::Ipv4Addr>,
    /// The container's mounts of the pod's volumes (already prepared).
    pub volumes: Vec<super::VolumeSource>,
    /// What its `/etc/resolv.conf` says.
    pub resolv_conf: wharf_runc::spec::ResolvConf,
}

/// How a started container stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Its process runs.
    Running,
    /// It exited.
    Exited(Exit),
}

/// How a container ended.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Exit {
    /// Exit code (128 + signal when killed by one).
    pub code: i32,
    /// `Completed`, `Error`, `OOMKilled`, `ContainerStatusUnknown`, ...
    pub reason: String,
    /// Detail, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When, unix milliseconds.
    pub finished_at: u64,
}

/// Runs containers.
#[async_trait]
pub trait ContainerDriver: Send + Sync + 'static {
    /// Starts a fresh run of the container (a new writable layer); returns
    /// once its process runs.
    async fn start(&self, launch: &Launch) -> Result<(), ContainerError>;
    /// How the container started in `dir` as `id` stands.
    async fn liveness(&self, id: &str, dir: &Path) -> Liveness;
    /// Stops it: SIGTERM, `grace` to exit, then SIGKILL.
    async fn stop(&self, id: &str, dir: &Path, grace: Duration) -> Result<(), ContainerError>;
    /// Removes what is left of it: runtime state, mounts, cgroups, files.
    async fn remove(&self, id: &str, dir: &Path) -> Result<(), ContainerError>;
    /// The log file of the container in `dir`.
    fn log_path(&self, dir: &Path) -> PathBuf {
        dir.join("log")
    }
    /// The CPU and memory counters of running container `id`; `None` when
    /// the driver measures none or the container is gone.
    async fn usage(&self, id: &str) -> Option<ContainerUsage> {
        self.stats(id).await.map(|stats| stats.usage)
    }
    /// What monitoring reads of running container `id`'s cgroup; `None`
    /// when the driver measures none or the container is gone.
    async fn stats(&self, id: &str) -> Option<CgroupStats> {
        let _ = id;
        None
    }
    /// The runc the containers run under (for `exec`), if they do.
    fn runc(&self) -> Option<&wharf_runc::Runc> {
        None
    }
}

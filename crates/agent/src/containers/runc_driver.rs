//! [`ContainerDriver`] with runc: an overlayfs root over the cached layers
//! (a fresh upper layer each run), a bundle from the image and the pod,
//! and a shim per container that outlives the agent.
//!
//! ```text
//! <container dir>/rootfs   overlay mount point
//!                 upper/   this run's writes      work/  overlayfs' scratch
//!                 bundle/  config.json, hosts, hostname, resolv.conf
//!                 volumes/ binds of this run's subPath mounts
//!                 log      stdout and stderr of every run, appended
//!                 log.runs where each run's output begins in it
//!                 exit.json  written by the shim when the run ends
//!                 shim.pid
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use nix::mount::MsFlags;
use wharf_runc::spec::SpecOptions;
use wharf_runc::{Bundle, ExitStatus, Runc, RuncError, ShimCommand};

use super::driver::{ContainerDriver, ContainerError, Exit, Launch, Liveness};
use super::mounts::{remove_unmounted, unmount};
use super::volumes;
use crate::usage::{CgroupSampler, CgroupStats};

/// Runs containers with runc through shims.
pub struct RuncDriver {
    runc: Runc,
    shim: ShimCommand,
    sampler: CgroupSampler,
}

impl RuncDriver {
    /// A driver using `runc` and launching `shim` per container.
    pub fn new(runc: Runc, shim: ShimCommand) -> RuncDriver {
        RuncDriver {
            runc,
            shim,
            sampler: CgroupSampler::default(),
        }
    }
}

fn exit_file(dir: &Path) -> PathBuf {
    dir.join("exit.json")
}

fn exit_of(status: ExitStatus) -> Exit {
    let reason = status.reason.clone().unwrap_or_else(|| {
        if status.exit_code == 0 {
            "Completed".into()
        } else {
            "Error".into()
        }
    });
    Exit {
        code: status.exit_code,
        reason,
        message: status.message,
        finished_at: status.finished_at,
    }
}

/// Mounts a fresh overlay root for a run: `layers` (bottom first) below a
/// new, empty upper directory.
fn mount_rootfs(dir: &Path, layers: &[PathBuf]) -> Result<PathBuf, String> {
    let io = |what: &Path, e: std::io::Error| format!("{}: {e}", what.display());
    let rootfs = dir.join("rootfs");
    unmount(&rootfs)?;
    for scratch in ["upper", "work"] {
        let path = dir.join(scratch);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path, e)),
        }
    }
    for made in ["rootfs", "upper", "work", "empty"] {
        let path = dir.join(made);
        std::fs::create_dir_all(&path).map_err(|e| io(&path, e))?;
    }
    // overlayfs lists the top layer first; an image without layers gets an
    // empty lower directory.
    let mut lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|l| l.display().to_string())
        .collect();
    if lower.is_empty() {
        lower.push(dir.join("empty").display().to_string());
    }
    if let Some(bad) = lower.iter().find(|l| l.contains([',', ':'])) {
        return Err(format!(
            "layer path {bad} cannot be named in overlayfs options"
        ));
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    // The kernel takes at most a page of mount options.
    if options.len() >= 4096 {
        return Err(format!(
            "{} layers are more than one overlayfs mount can stack here",
            layers.len()
        ));
    }
    nix::mount::mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        // Device nodes in an image open nothing: the container's /dev is its own.
        MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(|e| {
        format!(
            "mounting the container's root ({} layers): {e}",
            layers.len()
        )
    })?;
    Ok(rootfs)
}

/// Whether process `pid` is alive and a shim (not a recycled pid).
fn shim_alive(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("shim.pid")) else {
        return false;
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        return false;
    };
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| cmdline.split(|&b| b == 0).any(|arg| arg == b"--exit-file"))
}

/// Where runc puts container `id`'s cgroup (under each hierarchy's root).
fn cgroups_path(id: &str) -> String {
    format!("/wharf/{id}")
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| format!("worker thread: {e}"))?
}

#[async_trait]
impl ContainerDriver for RuncDriver {
    async fn start(&self, launch: &Launch) -> Result<(), ContainerError> {
        let failed = ContainerError::Create;
        let dir = launch.dir.clone();
        let layers = launch.image.layers.clone();
        let sources = launch.volumes.clone();
        let (rootfs, binds) = blocking(move || {
            let rootfs = mount_rootfs(&dir, &layers)?;
            Ok((rootfs, volumes::binds(&dir, &sources)?))
        })
        .await
        .map_err(failed)?;
        let mut options = SpecOptions::new(&rootfs, &launch.hostname, cgroups_path(&launch.id));
        options.volumes = binds;
        options.netns = launch.netns.clone();
        options.pod_ip = launch.ip.map(std::net::IpAddr::V4);
        options.security = launch.security.clone();
        options.resolv_conf = Some(launch.resolv_conf.clone());
        let bundle = Bundle::create(
            launch.dir.join("bundle"),
            &launch.image.process,
            &launch.container,
            &options,
        )
        .await
        .map_err(|e| match e {
            RuncError::RunsAsRoot { .. } => ContainerError::Config(e.to_string()),
            e => failed(e.to_string()),
        })?;
        // A run left over from before (its shim killed with the machine).
        let _ = self.runc.delete(&launch.id).await;
        let log = self.log_path(&launch.dir);
        blocking(move || wharf_runc::logs::mark_run_start(&log).map_err(|e| e.to_string()))
            .await
            .map_err(failed)?;
        let started = self
            .runc
            .create_and_start(
                &bundle,
                &launch.id,
                &self.log_path(&launch.dir),
                &exit_file(&launch.dir),
                &self.shim,
            )
            .await
            .map_err(|e| failed(e.to_string()))?;
        let pid_file = launch.dir.join("shim.pid");
        tokio::fs::write(&pid_file, started.shim_pid.to_string())
            .await
            .map_err(|e| failed(format!("{}: {e}", pid_file.display())))?;
        Ok(())
    }

    fn runc(&self) -> Option<&Runc> {
        Some(&self.runc)
    }

    async fn stats(&self, id: &str) -> Option<CgroupStats> {
        let path = cgroups_path(id);
        let sampler = self.sampler.clone();
        blocking(move || sampler.stats(&path).map_err(|e| e.to_string()))
            .await
            .inspect_err(|err| tracing::debug!(container = id, error = %err, "no cgroup stats"))
            .ok()
    }

    async fn liveness(&self, id: &str, dir: &Path) -> Liveness {
        match wharf_runc::exit_status(&exit_file(dir)).await {
            Ok(Some(status)) => return Liveness::Exited(exit_of(status)),
            Ok(None) => {}
            Err(err) => tracing::warn!(container = id, error = %err, "unreadable exit status"),
        }
        if shim_alive(dir) {
            return Liveness::Running;
        }
        // The shim is gone (killed, or the machine restarted). The exit
        // file may have been written just now; look once more.
        if let Ok(Some(status)) = wharf_runc::exit_status(&exit_file(dir)).await {
            return Liveness::Exited(exit_of(status));
        }
        match self.runc.state(id).await {
            Ok(Some(state)) if state.status == wharf_runc::Status::Running => Liveness::Running,
            _ => Liveness::Exited(Exit {
                code: 137,
                reason: "ContainerStatusUnknown".into(),
                message: Some("the container's supervisor is gone".into()),
                finished_at: crate::runtime::now_millis(),
            }),
        }
    }

    async fn stop(&self, id: &str, dir: &Path, grace: Duration) -> Result<(), ContainerError> {
        self.runc
            .stop(id, &exit_file(dir), grace)
            .await
            .map(drop)
            .map_err(|e| ContainerError::Kill(e.to_string()))
    }

    async fn remove(&self, id: &str, dir: &Path) -> Result<(), ContainerError> {
        let failed = ContainerError::Kill;
        self.runc
            .delete(id)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let dir = dir.to_path_buf();
        // Its root and the binds of its subPaths go before the files: a
        // bind left mounted would have its volume's files deleted.
        blocking(move || remove_unmounted(&dir))
            .await
            .map_err(failed)
    }
}

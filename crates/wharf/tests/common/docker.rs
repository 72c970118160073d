//! A private `dockerd` for one test: its own socket, data root and exec root
//! in a temporary directory, no bridge network and no iptables changes, so
//! it neither sees nor disturbs any other docker on the machine.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::command::{checked, output, output_with_stdin};
use super::prereq::find_executable;
use super::registry::Credentials;
use super::server::log_tail;

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// The docker client matching the daemon Debian's `docker.io` installs; a
/// newer client elsewhere on the PATH may speak a newer API than the daemon.
const DEBIAN_DOCKER_CLIENT: &str = "/usr/bin/docker";

/// A running private `dockerd`, stopped (SIGTERM, then SIGKILL) and cleaned up
/// on drop.
pub struct DockerDaemon {
    // Short on purpose: unix socket paths are limited to 108 bytes and
    // containerd puts its sockets a few levels below the exec root.
    dir: tempfile::TempDir,
    child: Option<Child>,
    client: PathBuf,
}

impl DockerDaemon {
    /// Starts `dockerd` and waits until it answers `docker info`.
    pub async fn start() -> DockerDaemon {
        let dir = tempfile::Builder::new()
            .prefix("wd")
            .tempdir_in("/tmp")
            .expect("creating the dockerd directory");
        let log = std::fs::File::create(dir.path().join("dockerd.log")).expect("dockerd log");
        let root = dir.path();
        let child = Command::new("dockerd")
            .arg(format!("--host=unix://{}", root.join("d.sock").display()))
            .arg(format!("--data-root={}", root.join("root").display()))
            .arg(format!("--exec-root={}", root.join("x").display()))
            .arg(format!("--pidfile={}", root.join("pid").display()))
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dockerd log"))
            .stderr(log)
            .spawn()
            .expect("starting dockerd");
        let client =
            find_executable(DEBIAN_DOCKER_CLIENT).unwrap_or_else(|| PathBuf::from("docker"));
        let mut daemon = DockerDaemon {
            dir,
            child: Some(child),
            client,
        };
        daemon.wait_ready().await;
        daemon
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if output(self.docker().arg("info")).await.status.success() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("dockerd exited ({status}):\n{}", self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer within {START_TIMEOUT:?}:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `unix://...`, the daemon's address.
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("d.sock").display())
    }

    /// A `docker` client command bound to this daemon and to a private
    /// client config (no credential helpers of the machine's user).
    pub fn docker(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.client);
        command
            .env("DOCKER_CONFIG", self.dir.path().join("client"))
            .arg("--host")
            .arg(self.host());
        command
    }

    /// Runs `docker args...` and panics unless it succeeds.
    pub async fn run(&self, args: &[&str]) -> Output {
        checked(self.docker().args(args)).await
    }

    /// `docker login --username USER --password-stdin REGISTRY`, whatever
    /// its outcome. The credentials land in this daemon's private client
    /// config, replacing earlier ones for `registry`.
    pub async fn login(&self, registry: &str, credentials: &Credentials) -> Output {
        output_with_stdin(
            self.docker()
                .args(["login", "--username", &credentials.user, "--password-stdin"])
                .arg(registry),
            credentials.password.as_bytes(),
        )
        .await
    }

    /// `docker logout REGISTRY`; panics if it fails.
    pub async fn logout(&self, registry: &str) {
        self.run(&["logout", registry]).await;
    }

    /// The end of the daemon's log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.dir.path().join("dockerd.log"), 40)
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        // SIGTERM lets dockerd stop its containerd and unmount its data root.
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(child.try_wait(), Ok(None)) {
            eprintln!("dockerd ignored SIGTERM for {STOP_TIMEOUT:?}; killing it");
            let _ = child.kill();
            let _ = child.wait();
        }
        self.kill_leftover_containerd();
        unmount_below(self.dir.path());
    }

    /// After an unclean stop, dockerd's own containerd may outlive it.
    fn kill_leftover_containerd(&self) {
        let pidfile = self.dir.path().join("x/containerd/containerd.pid");
        let Some(pid) = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok())
        else {
            return;
        };
        // Only if that pid is still our containerd, not a reused number.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let ours = String::from_utf8_lossy(&cmdline).contains(&*self.dir.path().to_string_lossy());
        if ours {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

impl Drop for DockerDaemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- last lines of the dockerd log ---\n{}", self.log_tail());
        }
        self.stop();
    }
}

/// Unmounts whatever is still mounted below `dir`, deepest first, so that the
/// directory can be removed.
fn unmount_below(dir: &Path) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| Path::new(point).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = Command::new("umount").args(["-l", point]).status();
    }
}

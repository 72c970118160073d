//! The runc driver: starts containers through the shim and asks runc about
//! them. Every call names Wharf's own `--root`, so containers of other runc
//! users on the machine are never seen or touched.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::bundle::Bundle;
use crate::shim::{self, ExitStatus, ShimArgs, ShimCommand};
use crate::{RuncError, fsutil};

/// How long a runc query may take before it counts as hung.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop` waits after SIGKILL before deleting by force.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the shim may take to record the exit once runc has gone.
const EXIT_FILE_SETTLE: Duration = Duration::from_secs(2);
/// How long a container may stay stopped before `stop` concludes that no
/// `runc run` is left to delete it.
const ORPHAN_SETTLE: Duration = Duration::from_secs(1);
const FILE_POLL: Duration = Duration::from_millis(10);
const STATE_POLL: Duration = Duration::from_millis(200);

/// A container's lifecycle state, as runc reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, process not started yet.
    Created,
    /// The process runs.
    Running,
    /// Being frozen.
    Pausing,
    /// Frozen.
    Paused,
    /// The process has exited; the container is not deleted yet.
    Stopped,
}

/// A container known to runc.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The container id.
    pub id: String,
    /// Pid of the container's process on the host (0 when stopped).
    pub pid: u32,
    /// Lifecycle state.
    pub status: Status,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// Creation time (RFC 3339).
    #[serde(default)]
    pub created: String,
}

/// A container whose process has started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Started {
    /// Pid of the container's process on the host.
    pub pid: u32,
    /// Pid of its shim.
    pub shim_pid: u32,
}

/// Drives one runc binary over one state directory.
#[derive(Clone, Debug)]
pub struct Runc {
    binary: PathBuf,
    root: PathBuf,
    start_timeout: Duration,
}

impl Runc {
    /// runc at `binary` (e.g. `/usr/sbin/runc`) keeping its state under
    /// `root` (e.g. `/run/wharf/runc`), which should belong to Wharf alone.
    pub fn new(binary: impl Into<PathBuf>, root: impl Into<PathBuf>) -> Runc {
        Runc {
            binary: binary.into(),
            root: root.into(),
            start_timeout: Duration::from_secs(60),
        }
    }

    /// How long [`Runc::create_and_start`] waits for the process (default 60 s).
    pub fn with_start_timeout(mut self, timeout: Duration) -> Runc {
        self.start_timeout = timeout;
        self
    }

    /// The runc binary.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// runc's state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Starts container `id` from `bundle` under a new shim, which appends
    /// the container's output to `log` and records its end in `exit_file`.
    /// Returns once the process runs (it may have exited again already),
    /// which runc signals by writing the bundle's pid file; fails with
    /// runc's message when it could not start. Removes `exit_file` left by
    /// an earlier run first. After an error other than `StartFailed`, call
    /// [`Runc::delete`] to clean up.
    #[tracing::instrument(skip_all, fields(id = %id))]
    pub async fn create_and_start(
        &self,
        bundle: &Bundle,
        id: &str,
        log: &Path,
        exit_file: &Path,
        shim: &ShimCommand,
    ) -> Result<Started, RuncError> {
        check_id(id)?;
        let pid_file = bundle.pid_file();
        // Leftovers of an earlier run of the same bundle would read as news.
        for stale in [exit_file, pid_file.as_path()] {
            fsutil::remove_if_exists(stale).map_err(|e| RuncError::io(stale, e))?;
        }
        // runc's state names every container's bundle: root's business only.
        tokio::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .await
            .map_err(|e| RuncError::io(&self.root, e))?;
        let args = ShimArgs {
            runc: self.binary.clone(),
            root: absolute(&self.root)?,
            bundle: bundle.dir().to_path_buf(),
            id: id.to_string(),
            log: absolute(log)?,
            exit_file: absolute(exit_file)?,
        };
        // Its own process group: a signal to the agent's group (Ctrl-C in a
        // terminal, `kill -- -PGID`) does not reach the shim. Dropping
        // `child` later leaves the shim running; tokio reaps it on exit.
        let mut child = tokio::process::Command::new(&shim.program)
            .args(&shim.prefix)
            .args(args.to_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|source| RuncError::Spawn {
                program: shim.program.display().to_string(),
                source,
            })?;
        let shim_pid = child.id().unwrap_or(0);

        let deadline = Instant::now() + self.start_timeout;
        loop {
            // The exit file first: once it exists the pid file is final.
            let exit = exit_status(exit_file).await?;
            if let Some(pid) = read_pid(&pid_file).await {
                return Ok(Started { pid, shim_pid });
            }
            if let Some(exit) = exit {
                return Err(RuncError::StartFailed {
                    id: id.to_string(),
                    message: exit
                        .message
                        .unwrap_or_else(|| format!("exited with code {}", exit.exit_code)),
                });
            }
            if let Ok(Some(status)) = child.try_wait()
                && !tokio::fs::try_exists(exit_file).await.unwrap_or(false)
            {
                return Err(RuncError::ShimFailed {
                    id: id.to_string(),
                    status: status.to_string(),
                });
            }
            if Instant::now() > deadline {
                return Err(RuncError::Timeout {
                    id: id.to_string(),
                    what: "waiting for the process to start",
                });
            }
            tokio::time::sleep(FILE_POLL).await;
        }
    }

    /// The container's state; `None` when runc does not know it.
    pub async fn state(&self, id: &str) -> Result<Option<State>, RuncError> {
        check_id(id)?;
        match self.run(&["state".as_ref(), id.as_ref()]).await {
            Ok(stdout) => parse_json(&stdout, "runc state").map(Some),
            Err(RuncError::Runc { message, .. }) if message.contains("does not exist") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every container under the root, for adoption after a restart.
    pub async fn list(&self) -> Result<Vec<State>, RuncError> {
        let stdout = self
            .run(&["list".as_ref(), "--format".as_ref(), "json".as_ref()])
            .await?;
        let states: Option<Vec<State>> = parse_json(&stdout, "runc list")?;
        Ok(states.unwrap_or_default())
    }

    /// Sends `signal` to the container's process.
    pub async fn kill(&self, id: &str, signal: Signal) -> Result<(), RuncError> {
        check_id(id)?;
        let number = (signal as i32).to_string();
        self.run(&["kill".as_ref(), id.as_ref(), number.as_ref()])
            .await
            .map(drop)
    }

    /// Stops the container: SIGTERM, up to `grace` to exit, then SIGKILL.
    /// Returns the exit status its shim recorded in `exit_file` (`None` if
    /// the shim is gone). Also cleans up a container whose shim died.
    #[tracing::instrument(skip_all, fields(id = %id))]
    pub async fn stop(
        &self,
        id: &str,
        exit_file: &Path,
        grace: Duration,
    ) -> Result<Option<ExitStatus>, RuncError> {
        check_id(id)?;
        let Some(state) = self.state(id).await? else {
            return wait_for_exit_file(exit_file, EXIT_FILE_SETTLE).await;
        };
        let running = state.status != Status::Stopped;
        // Kill errors mean it exited meanwhile, which is what we want.
        if running {
            let _ = self.kill(id, Signal::SIGTERM).await;
        }
        if !(running && self.wait_exit(id, exit_file, grace).await?) {
            if running {
                tracing::debug!(?grace, "still running after the grace period: SIGKILL");
                let _ = self.kill(id, Signal::SIGKILL).await;
            }
            self.wait_exit(id, exit_file, KILL_TIMEOUT).await?;
        }
        if self.state(id).await?.is_none() {
            return wait_for_exit_file(exit_file, EXIT_FILE_SETTLE).await;
        }
        // Still there although its `runc run` has ended or never cleaned up:
        // the shim or runc died, nobody else will delete it, and nobody will
        // write an exit file now.
        self.delete(id).await?;
        exit_status(exit_file).await
    }

    /// Freezes every process of the container (the cgroup freezer), so its
    /// files hold still while they are read (`wharf commit`). Undo with
    /// [`Runc::resume`].
    pub async fn pause(&self, id: &str) -> Result<(), RuncError> {
        check_id(id)?;
        self.run(&["pause".as_ref(), id.as_ref()]).await.map(drop)
    }

    /// Thaws a container frozen by [`Runc::pause`].
    pub async fn resume(&self, id: &str) -> Result<(), RuncError> {
        check_id(id)?;
        self.run(&["resume".as_ref(), id.as_ref()]).await.map(drop)
    }

    /// Deletes the container, killing it if it runs. A missing container is
    /// fine.
    pub async fn delete(&self, id: &str) -> Result<(), RuncError> {
        check_id(id)?;
        self.run(&["delete".as_ref(), "--force".as_ref(), id.as_ref()])
            .await
            .map(drop)
    }

    /// Waits until the process has exited and been dealt with: the exit file
    /// appears, runc forgets the container, or it stays stopped longer than
    /// a live `runc run` would take to delete it. `false` after `timeout`.
    async fn wait_exit(
        &self,
        id: &str,
        exit_file: &Path,
        timeout: Duration,
    ) -> Result<bool, RuncError> {
        let deadline = Instant::now() + timeout;
        let mut next_state = Instant::now() + STATE_POLL;
        let mut stopped_since = None;
        while Instant::now() < deadline {
            if tokio::fs::try_exists(exit_file).await.unwrap_or(false) {
                return Ok(true);
            }
            // The exit file is cheap to look at; runc is a process to start.
            if Instant::now() >= next_state {
                match self.state(id).await? {
                    None => return Ok(true),
                    Some(state) if state.status == Status::Stopped => {
                        let since = *stopped_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= ORPHAN_SETTLE {
                            return Ok(true);
                        }
                    }
                    Some(_) => stopped_since = None,
                }
                next_state = Instant::now() + STATE_POLL;
            }
            tokio::time::sleep(FILE_POLL).await;
        }
        Ok(false)
    }

    /// Runs `runc --root <root> args...`; its stdout, or its error message.
    async fn run(&self, args: &[&OsStr]) -> Result<Vec<u8>, RuncError> {
        let command_line = || {
            let words: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
            format!("runc {}", words.join(" "))
        };
        let output = tokio::process::Command::new(&self.binary)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(COMMAND_TIMEOUT, output)
            .await
            .map_err(|_| RuncError::Runc {
                command: command_line(),
                message: format!("no answer in {COMMAND_TIMEOUT:?}"),
            })?
            .map_err(|source| RuncError::Spawn {
                program: self.binary.display().to_string(),
                source,
            })?;
        if output.status.success() {
            return Ok(output.stdout);
        }
        let message = shim::error_message(&String::from_utf8_lossy(&output.stderr))
            .unwrap_or_else(|| format!("failed ({})", output.status));
        Err(RuncError::Runc {
            command: command_line(),
            message,
        })
    }
}

/// The exit status the shim recorded, if it has.
pub async fn exit_status(exit_file: &Path) -> Result<Option<ExitStatus>, RuncError> {
    match tokio::fs::read(exit_file).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| RuncError::Json {
                path: exit_file.display().to_string(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RuncError::io(exit_file, e)),
    }
}

/// [`exit_status`], waiting up to `timeout` for the file to appear.
pub async fn wait_for_exit_file(
    exit_file: &Path,
    timeout: Duration,
) -> Result<Option<ExitStatus>, RuncError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = exit_status(exit_file).await? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(FILE_POLL).await;
    }
}

async fn read_pid(path: &Path) -> Option<u32> {
    let text = tokio::fs::read_to_string(path).await.ok()?;
    text.trim().parse().ok()
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, RuncError> {
    serde_json::from_slice(bytes).map_err(|source| RuncError::Json {
        path: what.into(),
        source,
    })
}

fn absolute(path: &Path) -> Result<PathBuf, RuncError> {
    std::path::absolute(path).map_err(|e| RuncError::io(path, e))
}

/// runc's own id grammar, minus a leading `-` or `.` (a flag, a hidden or
/// relative directory).
pub(crate) fn check_id(id: &str) -> Result<(), RuncError> {
    let valid = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with(['-', '.'])
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(RuncError::InvalidId(id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for good in ["web-1", "a", "pod_1.web+2"] {
            check_id(good).unwrap();
        }
        for bad in ["", "-rf", ".hidden", "a/b", "a b", "ü"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn state_json() {
        let state: State = parse_json(
            br#"{"ociVersion":"1.0.2-dev","id":"t2","pid":17956,"status":"running","bundle":"/tmp/b","rootfs":"/tmp/b/rootfs","created":"2026-11-22T01:25:00.898788072Z","owner":""}"#,
            "runc state",
        )
        .unwrap();
        assert_eq!((state.pid, state.status), (17956, Status::Running));
        let none: Option<Vec<State>> = parse_json(b"null\n", "runc list").unwrap();
        assert_eq!(none, None);
    }

    #[tokio::test]
    async fn exit_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit.json");
        assert_eq!(exit_status(&path).await.unwrap(), None);
        assert_eq!(
            wait_for_exit_file(&path, Duration::from_millis(30))
                .await
                .unwrap(),
            None
        );
        std::fs::write(&path, r#"{"exitCode":3,"signal":null,"finishedAt":1}"#).unwrap();
        assert_eq!(exit_status(&path).await.unwrap().unwrap().exit_code, 3);
        std::fs::write(&path, "{").unwrap();
        assert!(exit_status(&path).await.is_err());
    }
}

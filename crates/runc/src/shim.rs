//! The shim: one small supervisor process per container. It runs
//! `runc run` in the foreground (runc deletes the container when it exits),
//! waits, and records the exit status in a file, so the status survives a
//! restart of the agent that started it.
//!
//! The agent starts it in its own process group with stdio on `/dev/null`;
//! the container's stdout and stderr go straight into the log file (opened
//! for appending, no pipe), so neither a dead agent nor a dead shim can
//! block the container.
//!
//! A process group does not escape a cgroup: under systemd, whose default
//! `KillMode=control-group` signals every process of the service, the
//! agent's unit needs `KillMode=process` (or the shims their own scope) for
//! containers to outlive an agent restart. `runc run` forwards the SIGTERM
//! it would get to the container.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{SigSet, Signal};
use serde::{Deserialize, Serialize};

use crate::bundle::pid_file;
use crate::fsutil;

/// Arguments of the shim process.
#[derive(Clone, Debug, PartialEq, Eq, clap::Parser)]
#[command(name = "shim", about = "Supervises one container (internal)")]
pub struct ShimArgs {
    /// The runc binary.
    #[arg(long)]
    pub runc: PathBuf,
    /// runc's state directory (`runc --root`).
    #[arg(long)]
    pub root: PathBuf,
    /// The bundle directory.
    #[arg(long)]
    pub bundle: PathBuf,
    /// The container id.
    #[arg(long)]
    pub id: String,
    /// The container's log file (appended to).
    #[arg(long)]
    pub log: PathBuf,
    /// Where the exit status is recorded.
    #[arg(long)]
    pub exit_file: PathBuf,
}

impl ShimArgs {
    /// The command-line arguments that parse back into `self`.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args = Vec::new();
        for (flag, value) in [
            ("--runc", self.runc.as_os_str()),
            ("--root", self.root.as_os_str()),
            ("--bundle", self.bundle.as_os_str()),
            ("--id", self.id.as_ref()),
            ("--log", self.log.as_os_str()),
            ("--exit-file", self.exit_file.as_os_str()),
        ] {
            args.push(OsString::from(flag));
            args.push(value.to_os_string());
        }
        args
    }
}

/// How to launch the shim: `program prefix... <ShimArgs>`. In production
/// the wharf binary itself, with `prefix = ["shim"]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShimCommand {
    /// The executable.
    pub program: PathBuf,
    /// Arguments before the shim's own (the subcommand).
    pub prefix: Vec<String>,
}

impl ShimCommand {
    /// The running executable with `prefix`.
    pub fn current_exe(prefix: &[&str]) -> std::io::Result<ShimCommand> {
        Ok(ShimCommand {
            program: std::env::current_exe()?,
            prefix: prefix.iter().map(|s| s.to_string()).collect(),
        })
    }
}

/// How a container ended, as the shim recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitStatus {
    /// Exit code; 128 + n when killed by signal n (runc's convention).
    pub exit_code: i32,
    /// The signal that killed the process, when the code says so. runc
    /// reports a death by signal n as code 128 + n, so a process that
    /// exits with such a code on its own is indistinguishable.
    pub signal: Option<i32>,
    /// When the shim saw runc exit, in Unix milliseconds.
    pub finished_at: u64,
    /// `OOMKilled` when the memory cgroup ran out of memory, `StartError`
    /// when the process never started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a start error: runc's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ExitStatus {
    /// Whether the process never started (bad binary, bad mount, ...).
    pub fn is_start_error(&self) -> bool {
        self.reason.as_deref() == Some(REASON_START_ERROR)
    }
}

/// [`ExitStatus::reason`] after an out-of-memory kill.
pub const REASON_OOM_KILLED: &str = "OOMKilled";
/// [`ExitStatus::reason`] when the process never started.
pub const REASON_START_ERROR: &str = "StartError";

/// The shim's main function: runs the container to its end, records its
/// exit status, returns the shim's own exit code (0 once the status is
/// recorded). Call it from a single-threaded process, before starting any
/// threads: it changes the signal mask.
pub fn shim_main(args: ShimArgs) -> i32 {
    // Blocked rather than ignored: the process is not killed by a signal sent
    // to a group or session it was once part of, and, as std resets the mask
    // of the children it spawns, runc and the container do not inherit it
    // (ignored signals would be inherited across exec).
    let mut mask = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(signal);
    }
    let _ = mask.thread_block();

    let mut log = match OpenOptions::new().create(true).append(true).open(&args.log) {
        Ok(file) => file,
        Err(e) => {
            // Nowhere to say it but the exit file.
            return record(
                &args,
                start_error(127, format!("open log {}: {e}", args.log.display())),
            );
        }
    };
    let log_start = log.seek(SeekFrom::End(0)).unwrap_or(0);
    let pid_path = pid_file(&args.bundle);
    let _ = fsutil::remove_if_exists(&pid_path);

    let child = log.try_clone().and_then(|stdout| {
        let stderr = log.try_clone()?;
        Command::new(&args.runc)
            .arg("--root")
            .arg(&args.root)
            .arg("run")
            .arg("--bundle")
            .arg(&args.bundle)
            .arg("--pid-file")
            .arg(&pid_path)
            .arg(&args.id)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
    });
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            let message = format!("run {}: {e}", args.runc.display());
            let _ = writeln!(log, "wharf-shim: {message}");
            return record(&args, start_error(127, message));
        }
    };

    // Watch for OOM once the container's cgroup exists, i.e. once runc has
    // written the pid file; runc removes the cgroup before it exits.
    let mut oom = None;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        if let Some(pid) = read_pid(&pid_path) {
            oom = OomWatch::start(pid);
            break child.wait();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let started = pid_path.exists();
    let finished_at = unix_millis();
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            let _ = writeln!(log, "wharf-shim: wait for runc: {e}");
            return record(&args, start_error(255, format!("wait for runc: {e}")));
        }
    };
    let exit_code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255);
    let signal = status.signal().or_else(|| {
        (129..=128 + 31)
            .contains(&exit_code)
            .then(|| exit_code - 128)
    });
    let mut exit = ExitStatus {
        exit_code,
        signal,
        finished_at,
        reason: None,
        message: None,
    };
    if !started {
        exit.reason = Some(REASON_START_ERROR.into());
        exit.message = Some(runc_error(&args.log, log_start));
    } else if oom.is_some_and(OomWatch::finish) {
        exit.reason = Some(REASON_OOM_KILLED.into());
    }
    record(&args, exit)
}

fn start_error(exit_code: i32, message: String) -> ExitStatus {
    ExitStatus {
        exit_code,
        signal: None,
        finished_at: unix_millis(),
        reason: Some(REASON_START_ERROR.into()),
        message: Some(message),
    }
}

fn record(args: &ShimArgs, status: ExitStatus) -> i32 {
    let json = serde_json::to_vec(&status).expect("exit statuses serialize");
    match fsutil::write_atomic(&args.exit_file, &json) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub(crate) fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// runc's error message from what it appended to the log since `offset`:
/// the last `msg="..."` of its logrus lines, else the last line.
pub(crate) fn runc_error(log: &Path, offset: u64) -> String {
    const MAX: u64 = 16 * 1024;
    let mut text = Vec::new();
    if let Ok(mut file) = File::open(log) {
        let len = file.metadata().map_or(0, |m| m.len());
        let from = offset.max(len.saturating_sub(MAX));
        if file.seek(SeekFrom::Start(from)).is_ok() {
            let _ = file.take(MAX).read_to_end(&mut text);
        }
    }
    error_message(&String::from_utf8_lossy(&text))
        .unwrap_or_else(|| "runc exited without a message".into())
}

/// The last error in runc's output: the `msg="..."` of its last logrus
/// error line, else the last line.
pub(crate) fn error_message(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines
        .iter()
        .rev()
        .find(|l| l.contains("level=error"))
        .and_then(|l| logrus_msg(l))
        .or_else(|| lines.last().map(|l| l.trim().to_string()))
}

/// The unescaped `msg="..."` field of a logrus text line.
fn logrus_msg(line: &str) -> Option<String> {
    let start = line.find("msg=\"")? + 5;
    let mut out = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                other => out.push(other),
            },
            '"' => return Some(out),
            c => out.push(c),
        }
    }
    None
}

/// Out-of-memory notification from the container's cgroup v1 memory
/// controller: an eventfd registered on `memory.oom_control`. The kernel
/// signals it on every OOM in the cgroup, and once more when the cgroup is
/// removed; a thread tells the two apart by whether the cgroup still
/// exists when it wakes up. Best effort: without a v1 memory controller
/// (pure cgroup v2) there is no watch.
struct OomWatch {
    result: mpsc::Receiver<bool>,
}

impl OomWatch {
    fn start(pid: i32) -> Option<OomWatch> {
        let cgroup = memory_cgroup_dir(pid)?;
        let control = File::open(cgroup.join("memory.oom_control")).ok()?;
        let event = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC).ok()?;
        let registration = format!("{} {}", event.as_raw_fd(), control.as_raw_fd());
        std::fs::write(cgroup.join("cgroup.event_control"), registration).ok()?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _control = control;
            let mut oom = false;
            while let Ok(count) = event.read() {
                let alive = cgroup.join("memory.oom_control").exists();
                // Removed: this wake-up includes the removal's own signal.
                oom |= if alive { count > 0 } else { count > 1 };
                if !alive {
                    break;
                }
            }
            let _ = tx.send(oom);
        });
        Some(OomWatch { result: rx })
    }

    /// Whether an OOM happened. Waits briefly for the removal signal, which
    /// the kernel sends shortly after runc removes the cgroup.
    fn finish(self) -> bool {
        self.result
            .recv_timeout(Duration::from_millis(500))
            .unwrap_or(false)
    }
}

/// `/sys/fs/cgroup/memory/<path>` from `/proc/<pid>/cgroup`.
fn memory_cgroup_dir(pid: i32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then(|| Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/')))
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn args_round_trip() {
        let args = ShimArgs {
            runc: "/usr/sbin/runc".into(),
            root: "/run/wharf/runc".into(),
            bundle: "/var/lib/wharf/bundles/a b".into(),
            id: "web-1".into(),
            log: "/var/log/wharf/web-1.log".into(),
            exit_file: "/var/lib/wharf/bundles/a b/exit.json".into(),
        };
        let mut argv = vec![OsString::from("shim")];
        argv.extend(args.to_args());
        assert_eq!(ShimArgs::try_parse_from(argv).unwrap(), args);
    }

    #[test]
    fn exit_status_json() {
        let status = ExitStatus {
            exit_code: 137,
            signal: Some(9),
            finished_at: 1_700_000_000_000,
            reason: Some(REASON_OOM_KILLED.into()),
            message: None,
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"exitCode": 137, "signal": 9, "finishedAt": 1_700_000_000_000u64, "reason": "OOMKilled"})
        );
        let plain: ExitStatus =
            serde_json::from_str(r#"{"exitCode":0,"signal":null,"finishedAt":5}"#).unwrap();
        assert_eq!(
            (plain.exit_code, plain.signal, &plain.reason),
            (0, None, &None)
        );
        assert!(!plain.is_start_error());
    }

    #[test]
    fn runc_error_from_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(
            &log,
            "old output\ntime=\"2024-01-01T00:00:00Z\" level=error msg=\"old failure\"\n",
        )
        .unwrap();
        let offset = std::fs::metadata(&log).unwrap().len();
        assert_eq!(runc_error(&log, offset), "runc exited without a message");
        let mut file = OpenOptions::new().append(true).open(&log).unwrap();
        writeln!(
            file,
            r#"time="2024-01-01T00:00:01Z" level=error msg="runc run failed: exec: \"/nope\": stat /nope: no such file or directory""#
        )
        .unwrap();
        assert_eq!(
            runc_error(&log, offset),
            r#"runc run failed: exec: "/nope": stat /nope: no such file or directory"#
        );
        writeln!(file, "plain text").unwrap();
        assert!(runc_error(&log, offset).starts_with("runc run failed"));
        assert_eq!(runc_error(&log, 0).lines().count(), 1);
    }
}

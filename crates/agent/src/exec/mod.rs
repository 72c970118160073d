//! Running a command in a running container (`wharf exec`): `runc exec`
//! in the foreground, its stdio relayed as [`Frame`]s over an upgraded
//! connection.
//!
//! runc builds the new process from the container's own process spec, so
//! it gets the container's user, capabilities, no_new_privs, seccomp
//! profile, AppArmor label and cgroup; Wharf passes none of the flags that
//! would change them (`--user`, `--cap`, `--privileged`...).
//!
//! With a TTY the agent opens a pseudo-terminal of its own and gives its
//! slave end to runc as stdio: runc (in the foreground) makes the
//! container's terminal, relays between the two and copies our window
//! size to it on SIGWINCH. `--console-socket` would hand us the
//! container's terminal directly, but runc 1.1 honours it only with
//! `--detach`, and a detached process's exit code is lost to the agent.

mod frame;
mod tty;

pub use frame::{Frame, MAX_PAYLOAD};

use std::ffi::OsStr;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use bytes::Bytes;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use wharf_runc::Runc;

use tty::Pty;

/// How long output may keep arriving after the process exited (from
/// children it left behind holding its stdout) before the exit is sent.
const OUTPUT_DRAIN: Duration = Duration::from_secs(1);

/// What to run where.
#[derive(Clone, Debug)]
pub struct ExecCommand {
    /// The runc id of the container.
    pub id: String,
    /// The command and its arguments.
    pub command: Vec<String>,
    /// Whether the client sends input.
    pub stdin: bool,
    /// Whether the process gets a terminal, and its initial size.
    pub tty: Option<(u16, u16)>,
}

/// Runs `exec` in its container with stdio relayed over `conn`, ending with
/// an exit frame. A client that goes away hangs the process up (SIGHUP).
pub async fn run(
    runc: &Runc,
    exec: ExecCommand,
    conn: impl AsyncRead + AsyncWrite + Send + 'static,
) -> std::io::Result<()> {
    let (mut input, output) = tokio::io::split(conn);
    let (frames, outgoing) = mpsc::channel::<Frame>(16);
    let writer = tokio::spawn(write_frames(output, outgoing));
    let code = match relay(runc, exec, &mut input, frames.clone()).await {
        Ok(status) => exit_code(status),
        Err(err) => {
            let message = format!("wharf: exec failed: {err}\n");
            let _ = frames.send(Frame::Stderr(message.into())).await;
            // What a shell answers for a command it could not run.
            126
        }
    };
    let _ = frames.send(Frame::Exit(code)).await;
    drop(frames);
    writer.await.map_err(std::io::Error::other)?
}

async fn relay(
    runc: &Runc,
    exec: ExecCommand,
    input: &mut (impl AsyncRead + Unpin),
    frames: mpsc::Sender<Frame>,
) -> std::io::Result<ExitStatus> {
    let tty: &[&OsStr] = match exec.tty {
        Some(_) => &[OsStr::new("--tty")],
        None => &[],
    };
    let mut command = runc_exec(runc, tty, &exec.id, &exec.command);

    let mut outputs = Vec::new();
    let (stdin, pty): (Option<Box<dyn AsyncWrite + Send + Unpin>>, _) = match exec.tty {
        Some((cols, rows)) => {
            let pty = Pty::open(cols, rows)?;
            command
                .stdin(pty.slave()?)
                .stdout(pty.slave()?)
                .stderr(pty.slave()?);
            outputs.push(pty.reader(frames.clone())?);
            (exec.stdin.then(|| pty.writer()).transpose()?, Some(pty))
        }
        None => {
            let stdin = if exec.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            };
            command
                .stdin(stdin)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            (None, None)
        }
    };
    let mut child = command.spawn()?;
    // Our copies of the terminal's slave end go with the command, so the
    // terminal hangs up once the process and runc are gone.
    drop(command);
    let pid = child.id().map(|pid| Pid::from_raw(pid as i32));
    let stdin = match stdin {
        Some(stdin) => Some(stdin),
        None => child
            .stdin
            .take()
            .map(|s| Box::new(s) as Box<dyn AsyncWrite + Send + Unpin>),
    };
    if let Some(stdout) = child.stdout.take() {
        outputs.push(tokio::spawn(pump(stdout, frames.clone(), Frame::Stdout)));
    }
    if let Some(stderr) = child.stderr.take() {
        outputs.push(tokio::spawn(pump(stderr, frames.clone(), Frame::Stderr)));
    }
    drop(frames);

    let resize = |cols, rows| {
        if let (Some(pty), Some(pid)) = (&pty, pid) {
            pty.resize(cols, rows);
            let _ = nix::sys::signal::kill(pid, Signal::SIGWINCH);
        }
    };
    let status = tokio::select! {
        status = child.wait() => status?,
        () = forward_input(input, stdin, resize) => {
            // The client has gone: hang the process up as a closed terminal
            // would; runc passes the signal on.
            if let Some(pid) = pid {
                let _ = nix::sys::signal::kill(pid, Signal::SIGHUP);
            }
            child.wait().await?
        }
    };
    let drained = futures_util::future::join_all(outputs);
    let _ = tokio::time::timeout(OUTPUT_DRAIN, drained).await;
    Ok(status)
}

/// `runc exec` with `flags` of `command` in container `id`, killed when
/// dropped: the one way the agent runs a process in a container (`wharf
/// exec`, exec probes).
pub(crate) fn runc_exec(
    runc: &Runc,
    flags: &[&OsStr],
    id: &str,
    command: &[String],
) -> tokio::process::Command {
    let mut exec = tokio::process::Command::new(runc.binary());
    exec.arg("--root").arg(runc.root()).arg("exec").args(flags);
    // runc stops reading its own flags at the container id: the command's
    // arguments are passed on as they are.
    exec.arg(id).args(command).kill_on_drop(true);
    exec
}

/// Passes the client's frames on until its side of the connection ends.
async fn forward_input(
    input: &mut (impl AsyncRead + Unpin),
    mut stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    resize: impl Fn(u16, u16),
) {
    loop {
        match Frame::read_from(input).await {
            Ok(Some(Frame::Stdin(data))) => {
                if let Some(writer) = stdin.as_mut()
                    && (writer.write_all(&data).await.is_err() || writer.flush().await.is_err())
                {
                    stdin = None;
                }
            }
            Ok(Some(Frame::StdinClosed)) => {
                if let Some(mut writer) = stdin.take() {
                    let _ = writer.shutdown().await;
                }
            }
            Ok(Some(Frame::Resize { cols, rows })) => resize(cols, rows),
            // Frames only the agent sends: a confused client, ignored.
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
}

/// Copies a pipe into frames until it ends.
async fn pump(
    mut pipe: impl AsyncRead + Unpin,
    frames: mpsc::Sender<Frame>,
    frame: fn(Bytes) -> Frame,
) {
    let mut buf = vec![0; 32 * 1024];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0
            || frames
                .send(frame(Bytes::copy_from_slice(&buf[..n])))
                .await
                .is_err()
        {
            return;
        }
    }
}

async fn write_frames(
    mut output: impl AsyncWrite + Unpin,
    mut frames: mpsc::Receiver<Frame>,
) -> std::io::Result<()> {
    while let Some(frame) = frames.recv().await {
        frame.write_to(&mut output).await?;
    }
    output.shutdown().await
}

/// The code a shell would report: 128 + n for a death by signal n.
pub(crate) fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255)
}

#[cfg(test)]
mod tests;

//! `wharf exec POD [-c CONTAINER] [-i] [-t] -- CMD ARGS...`: runs a command
//! in a running container, through the server and the agent of the pod's
//! node, and exits with its exit code. With `-t` the command gets a
//! terminal: the local one is put in raw mode and its size changes follow.

use std::io::{IsTerminal, Write};

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio::sync::mpsc;
use wharf_agent::EXEC_PROTOCOL;
use wharf_agent::exec::Frame;

use super::objects::PodTarget;

/// Options of `wharf exec`.
#[derive(Args)]
pub struct ExecArgs {
    #[command(flatten)]
    target: PodTarget,
    /// The container (needed when the pod has several).
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// Pass standard input to the command.
    #[arg(short = 'i', long)]
    stdin: bool,
    /// Give the command a terminal (`-it` for an interactive shell).
    #[arg(short = 't', long)]
    tty: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// Runs the command; the process exits with the command's exit code.
pub async fn run(args: ExecArgs) -> Result<()> {
    let (mut client, project) = args.target.connect()?;
    let mut query = vec![
        ("command", serde_json::to_string(&args.command)?),
        ("stdin", args.stdin.to_string()),
        ("tty", args.tty.to_string()),
    ];
    if let Some(container) = &args.container {
        query.push(("container", container.clone()));
    }
    if args.tty {
        let (cols, rows) = terminal_size().unwrap_or((80, 24));
        query.push(("cols", cols.to_string()));
        query.push(("rows", rows.to_string()));
    }
    let conn = client
        .upgrade(
            &["projects", &project, "pods", &args.target.pod, "exec"],
            &query,
            EXEC_PROTOCOL,
        )
        .await
        .with_context(|| format!("exec in pod {project}/{}", args.target.pod))?;
    // Keys go to the remote terminal as typed, Ctrl-C included.
    let raw = if args.tty && args.stdin && std::io::stdin().is_terminal() {
        Some(RawMode::enter()?)
    } else {
        None
    };
    let code = relay(conn, args.stdin, args.tty).await;
    drop(raw);
    let code = code?;
    std::io::stdout().flush()?;
    std::process::exit(code);
}

/// Relays stdio as frames until the exit frame; returns the exit code.
async fn relay(conn: reqwest::Upgraded, stdin: bool, tty: bool) -> Result<i32> {
    let (mut input, mut output) = tokio::io::split(conn);
    let (frames, mut outgoing) = mpsc::channel::<Frame>(16);
    let writer = tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if frame.write_to(&mut output).await.is_err() {
                return;
            }
        }
    });
    if stdin {
        send_stdin(frames.clone());
    }
    if tty {
        tokio::spawn(send_resizes(frames.clone()));
    }
    drop(frames);
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    loop {
        let frame = Frame::read_from(&mut input)
            .await
            .context("the exec stream broke off")?;
        match frame {
            Some(Frame::Stdout(data)) => {
                stdout.write_all(&data)?;
                stdout.flush()?;
            }
            Some(Frame::Stderr(data)) => {
                stderr.write_all(&data)?;
                stderr.flush()?;
            }
            Some(Frame::Exit(code)) => {
                writer.abort();
                return Ok(code);
            }
            Some(_) => {}
            None => bail!("the exec stream ended before the command's exit code"),
        }
    }
}

/// Sends what is read from stdin, on a thread of its own: the read blocks,
/// and the process exits without waiting for it.
fn send_stdin(frames: mpsc::Sender<Frame>) {
    use std::io::Read;
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0; 16 * 1024];
        loop {
            let frame = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => Frame::StdinClosed,
                Ok(n) => Frame::Stdin(bytes::Bytes::copy_from_slice(&buf[..n])),
            };
            let last = frame == Frame::StdinClosed;
            if frames.blocking_send(frame).is_err() || last {
                return;
            }
        }
    });
}

/// Sends the terminal's size whenever it changes (SIGWINCH).
async fn send_resizes(frames: mpsc::Sender<Frame>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut changes) = signal(SignalKind::window_change()) else {
        return;
    };
    while changes.recv().await.is_some() {
        if let Some((cols, rows)) = terminal_size()
            && frames.send(Frame::Resize { cols, rows }).await.is_err()
        {
            return;
        }
    }
}

/// Columns and rows of the terminal on stdin, else on stdout.
fn terminal_size() -> Option<(u16, u16)> {
    let size = rustix::termios::tcgetwinsize(std::io::stdin())
        .or_else(|_| rustix::termios::tcgetwinsize(std::io::stdout()))
        .ok()?;
    (size.ws_col > 0 && size.ws_row > 0).then_some((size.ws_col, size.ws_row))
}

/// The local terminal in raw mode, restored when dropped.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enter() -> Result<RawMode> {
        use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).context("reading the terminal's mode")?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(&stdin, OptionalActions::Now, &raw).context("setting raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use rustix::termios::{OptionalActions, tcsetattr};
        let _ = tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
    }
}

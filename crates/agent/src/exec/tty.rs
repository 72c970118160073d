//! The agent's end of an exec with a TTY: a pseudo-terminal whose slave
//! end runc uses as its stdio, and whose master end the agent relays.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::process::Stdio;

use bytes::Bytes;
use rustix::fs::{Mode, OFlags};
use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Frame;

/// An open pseudo-terminal.
pub(super) struct Pty {
    master: OwnedFd,
    slave_path: CString,
}

impl Pty {
    /// A new terminal of `cols` x `rows`.
    pub(super) fn open(cols: u16, rows: u16) -> std::io::Result<Pty> {
        let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY)?;
        rustix::pty::grantpt(&master)?;
        rustix::pty::unlockpt(&master)?;
        let slave_path = rustix::pty::ptsname(&master, Vec::new())?;
        let pty = Pty { master, slave_path };
        pty.resize(cols, rows);
        Ok(pty)
    }

    /// The slave end, for one of runc's stdio streams. Not our controlling
    /// terminal: the agent has none and wants none.
    pub(super) fn slave(&self) -> std::io::Result<Stdio> {
        let flags = OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(self.slave_path.as_c_str(), flags, Mode::empty())?;
        Ok(Stdio::from(fd))
    }

    /// Sets the window size; runc copies it into the container on SIGWINCH.
    pub(super) fn resize(&self, cols: u16, rows: u16) {
        let size = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        if let Err(err) = rustix::termios::tcsetwinsize(&self.master, size) {
            tracing::debug!(error = %err, "resizing an exec terminal");
        }
    }

    /// Writes to the terminal, as typed input.
    pub(super) fn writer(&self) -> std::io::Result<Box<dyn tokio::io::AsyncWrite + Send + Unpin>> {
        let file = std::fs::File::from(self.master.try_clone()?);
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    /// Sends what the terminal shows as stdout frames until it hangs up
    /// (every slave end closed: the read fails with EIO).
    pub(super) fn reader(&self, frames: mpsc::Sender<Frame>) -> std::io::Result<JoinHandle<()>> {
        let mut file = std::fs::File::from(self.master.try_clone()?);
        // A read blocks for as long as the terminal is quiet: not on a worker.
        Ok(tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut buf = vec![0; 32 * 1024];
            while let Ok(n) = file.read(&mut buf) {
                let chunk = Bytes::copy_from_slice(&buf[..n]);
                if n == 0 || frames.blocking_send(Frame::Stdout(chunk)).is_err() {
                    return;
                }
            }
        }))
    }
}

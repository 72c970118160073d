//! The server's listener: TCP connections that close gracefully.
//!
//! When a handler answers before reading the request body (a 401 without a
//! token, a 413 for an oversize manifest, a 403), hyper cannot reuse the
//! connection and closes it. Closing a socket with unread bytes in its
//! receive queue makes the kernel send a reset, and a client still writing
//! its body then sees "connection reset" or "broken pipe" instead of the
//! answer. So, as mature servers do ("lingering close"), a connection being
//! shut down first sends its FIN after the response, then reads and
//! discards what the client still sends, up to [`LINGER_BYTES`] or for at
//! most [`LINGER_TIME`], before the socket is closed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Most bytes read and discarded from a client after the response.
pub const LINGER_BYTES: u64 = 64 << 20;
/// Longest a closing connection waits for its client to stop sending.
pub const LINGER_TIME: Duration = Duration::from_secs(5);

/// A TCP listener whose connections linger on close.
pub struct LingeringListener(pub TcpListener);

impl Listener for LingeringListener {
    type Io = LingeringStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = Listener::accept(&mut self.0).await;
        (LingeringStream::new(stream), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A TCP stream whose shutdown drains what the peer still sends.
pub struct LingeringStream {
    stream: TcpStream,
    closing: Option<Closing>,
}

/// Where a shutdown stands.
struct Closing {
    /// Our FIN is out.
    write_side_closed: bool,
    /// Bytes still allowed to be discarded.
    budget: u64,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl LingeringStream {
    fn new(stream: TcpStream) -> LingeringStream {
        LingeringStream {
            stream,
            closing: None,
        }
    }
}

impl AsyncRead for LingeringStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LingeringStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let closing = this.closing.get_or_insert_with(|| Closing {
            write_side_closed: false,
            budget: LINGER_BYTES,
            deadline: Box::pin(tokio::time::sleep(LINGER_TIME)),
        });
        if !closing.write_side_closed {
            ready!(Pin::new(&mut this.stream).poll_shutdown(cx))?;
            closing.write_side_closed = true;
        }
        let mut scratch = [0u8; 16 << 10];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.stream).poll_read(cx, &mut buf) {
                // The client closed too (or the connection broke): done.
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    let read = buf.filled().len() as u64;
                    closing.budget = closing.budget.saturating_sub(read);
                    if closing.budget == 0 {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Pending => {
                    return match closing.deadline.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Ok(())),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}

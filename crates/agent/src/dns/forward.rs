//! Relaying queries that are not the agent's to the host's resolvers, as
//! they came (flags, EDNS and all), over the transport the pod used.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one upstream gets before the next is asked; glibc's default.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// The host's name servers, asked in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstreams {
    servers: Vec<SocketAddr>,
    timeout: Duration,
}

impl Upstreams {
    /// `servers`, each given [`UPSTREAM_TIMEOUT`].
    pub fn new(servers: Vec<SocketAddr>) -> Upstreams {
        Upstreams {
            servers,
            timeout: UPSTREAM_TIMEOUT,
        }
    }

    /// The same servers with another timeout each (tests).
    pub fn with_timeout(self, timeout: Duration) -> Upstreams {
        Upstreams { timeout, ..self }
    }

    /// The first answer to `query` over UDP; `None` if no server answered.
    pub async fn udp(&self, query: &[u8]) -> Option<Vec<u8>> {
        self.first_answer(|server| udp_exchange(server, query))
            .await
    }

    /// The first answer to `query` over TCP; `None` if no server answered.
    pub async fn tcp(&self, query: &[u8]) -> Option<Vec<u8>> {
        self.first_answer(|server| tcp_exchange(server, query))
            .await
    }

    /// Asks each server in turn with `exchange`, each within the timeout.
    async fn first_answer<F, Fut>(&self, exchange: F) -> Option<Vec<u8>>
    where
        F: Fn(SocketAddr) -> Fut,
        Fut: Future<Output = std::io::Result<Vec<u8>>>,
    {
        for server in &self.servers {
            match tokio::time::timeout(self.timeout, exchange(*server)).await {
                Ok(Ok(answer)) => return Some(answer),
                Ok(Err(err)) => tracing::debug!(%server, error = %err, "upstream DNS failed"),
                Err(_) => tracing::debug!(%server, "upstream DNS timed out"),
            }
        }
        None
    }
}

/// One query on a fresh socket: a new random source port per query, and
/// only answers from `server` carrying the query's id are taken.
async fn udp_exchange(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buf = vec![0; usize::from(u16::MAX)];
    loop {
        let len = socket.recv(&mut buf).await?;
        if len >= 2 && query.len() >= 2 && buf[..2] == query[..2] {
            buf.truncate(len);
            return Ok(buf);
        }
    }
}

async fn tcp_exchange(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server).await?;
    write_framed(&mut stream, query).await?;
    read_framed(&mut stream)
        .await?
        .ok_or_else(|| std::io::ErrorKind::UnexpectedEof.into())
}

/// Writes one TCP DNS message: a two-byte length, then the message.
pub async fn write_framed(
    stream: &mut (impl AsyncWriteExt + Unpin),
    message: &[u8],
) -> std::io::Result<()> {
    let len = u16::try_from(message.len())
        .map_err(|_| std::io::Error::other("a DNS message over TCP is at most 65535 bytes"))?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed).await
}

/// Reads one TCP DNS message; `None` at a clean end of stream.
pub async fn read_framed(
    stream: &mut (impl AsyncReadExt + Unpin),
) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0; 2];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut message = vec![0; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut message).await?;
    Ok(Some(message))
}

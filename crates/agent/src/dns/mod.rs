//! The agent's name server for its pods. It answers `NAME.PROJECT.svc`
//! (and `NAME.PROJECT.svc.cluster.local`) from the latest
//! [`ServiceView`] — a service's cluster IP, a headless service's ready
//! endpoints — and relays every other query to the host's resolvers.
//!
//! It listens on port 53 of the node's pod gateways (the bridge
//! addresses pods route through), so agents on separate bridges never
//! share an address. Answers come from a [`NameTable`] rebuilt when the
//! view changes, on a task of its own: a lookup is one hash probe and
//! never waits for the agent's other work.
//!
//! hickory-proto only encodes and decodes messages: the sockets, the
//! forwarding and the name table are the agent's, which keeps the
//! dependency small (no resolver, no DNSSEC, no TLS).

mod answer;
mod forward;
mod names;
mod resolv;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Mutex, Semaphore, watch};
use tokio_util::task::AbortOnDropHandle;

pub use answer::TTL_SECONDS;
use answer::{Reply, reply, server_failure, udp_limit};
pub use forward::{Upstreams, read_framed, write_framed};
pub use names::{CLUSTER_DOMAIN, Lookup, NameTable, SERVICE_ZONE};
pub use resolv::{nameservers, pod_resolv_conf};

use crate::service_view::ServiceView;

/// The standard DNS port, where pods' resolvers look.
pub const DNS_PORT: u16 = 53;

/// Queries over UDP being answered at once; more are dropped (the client
/// asks again), so a flood cannot grow the agent without bound.
const UDP_IN_FLIGHT: usize = 512;

/// TCP connections served at once, and how long one may stay idle.
const TCP_CONNECTIONS: usize = 64;
const TCP_IDLE: Duration = Duration::from_secs(10);

/// The name server: one table, any number of listening addresses.
///
/// ```no_run
/// # async fn example() -> std::io::Result<()> {
/// use std::sync::Arc;
/// use wharf_agent::dns::{DnsServer, Upstreams, nameservers};
/// use wharf_agent::service_view::ServiceView;
///
/// let host = std::fs::read_to_string("/etc/resolv.conf")?;
/// let server = DnsServer::new(Upstreams::new(nameservers(&host)), 53);
/// let (_views, view) = tokio::sync::watch::channel(Arc::new(ServiceView::default()));
/// server.follow(view);
/// server.listen("10.88.0.1".parse().unwrap()).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct DnsServer {
    inner: Arc<Inner>,
}

struct Inner {
    tables: watch::Sender<Arc<NameTable>>,
    upstreams: Upstreams,
    port: u16,
    /// The serving tasks per address; dropped with the server.
    listeners: Mutex<HashMap<IpAddr, Listening>>,
    /// The task rebuilding the table from the views followed.
    follow: std::sync::Mutex<Option<AbortOnDropHandle<()>>>,
}

struct Listening {
    port: u16,
    _udp: AbortOnDropHandle<()>,
    _tcp: AbortOnDropHandle<()>,
}

impl DnsServer {
    /// A server with no service names yet, forwarding to `upstreams`, to
    /// listen on `port` (0: any free one, for tests).
    pub fn new(upstreams: Upstreams, port: u16) -> DnsServer {
        DnsServer {
            inner: Arc::new(Inner {
                tables: watch::channel(Arc::new(NameTable::default())).0,
                upstreams,
                port,
                listeners: Mutex::new(HashMap::new()),
                follow: std::sync::Mutex::new(None),
            }),
        }
    }

    /// Answers service names from `view` from now on, following its
    /// changes (instead of any view followed before).
    pub fn follow(&self, view: watch::Receiver<Arc<ServiceView>>) {
        self.inner
            .tables
            .send_replace(Arc::new(NameTable::build(&view.borrow())));
        let task = tokio::spawn(follow_views(view, self.inner.tables.clone()));
        *self.inner.follow.lock().expect("dns follow lock") = Some(AbortOnDropHandle::new(task));
    }

    /// Serves on `address` over UDP and TCP, if not already; returns the
    /// port (the same for both).
    pub async fn listen(&self, address: IpAddr) -> std::io::Result<u16> {
        let mut listeners = self.inner.listeners.lock().await;
        if let Some(listening) = listeners.get(&address) {
            return Ok(listening.port);
        }
        let udp = UdpSocket::bind((address, self.inner.port)).await?;
        let port = udp.local_addr()?.port();
        let tcp = TcpListener::bind((address, port)).await?;
        tracing::info!(%address, port, "serving DNS to pods");
        listeners.insert(
            address,
            Listening {
                port,
                _udp: AbortOnDropHandle::new(tokio::spawn(serve_udp(self.clone(), udp))),
                _tcp: AbortOnDropHandle::new(tokio::spawn(serve_tcp(self.clone(), tcp))),
            },
        );
        Ok(port)
    }

    /// The reply to one query; forwarded with `forward` when not ours.
    async fn answer<F, Fut>(&self, query: &[u8], limit: usize, forward: F) -> Option<Vec<u8>>
    where
        F: FnOnce(Upstreams) -> Fut,
        Fut: Future<Output = Option<Vec<u8>>>,
    {
        let table = self.inner.tables.borrow().clone();
        match reply(&table, query, limit) {
            Reply::Answer(bytes) => Some(bytes),
            Reply::Drop => None,
            Reply::Forward => match forward(self.inner.upstreams.clone()).await {
                Some(bytes) => Some(bytes),
                None => server_failure(query),
            },
        }
    }
}

/// Rebuilds the name table whenever the view changes, until its sender
/// is gone (the table is only read through the sender, which has no
/// receivers: hence `send_replace`).
async fn follow_views(
    mut view: watch::Receiver<Arc<ServiceView>>,
    tables: watch::Sender<Arc<NameTable>>,
) {
    while view.changed().await.is_ok() {
        let latest = view.borrow_and_update().clone();
        tables.send_replace(Arc::new(NameTable::build(&latest)));
    }
}

async fn serve_udp(server: DnsServer, socket: UdpSocket) {
    let socket = Arc::new(socket);
    let in_flight = Arc::new(Semaphore::new(UDP_IN_FLIGHT));
    let mut buf = vec![0; usize::from(u16::MAX)];
    loop {
        let (len, client) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(err) => {
                // ICMP errors from earlier sends surface here; go on.
                tracing::debug!(error = %err, "DNS receive failed");
                continue;
            }
        };
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            continue;
        };
        let query = buf[..len].to_vec();
        let (server, socket) = (server.clone(), socket.clone());
        tokio::spawn(async move {
            let limit = udp_limit(&query);
            let forwarded = query.clone();
            let answer = server
                .answer(&query, limit, |upstreams| async move {
                    upstreams.udp(&forwarded).await
                })
                .await;
            if let Some(answer) = answer {
                let _ = socket.send_to(&answer, client).await;
            }
            drop(permit);
        });
    }
}

async fn serve_tcp(server: DnsServer, listener: TcpListener) {
    let connections = Arc::new(Semaphore::new(TCP_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // Past the limit the connection is closed at once.
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            continue;
        };
        let server = server.clone();
        tokio::spawn(async move {
            serve_connection(server, stream).await;
            drop(permit);
        });
    }
}

/// Answers the queries of one connection in turn until it closes or
/// idles.
async fn serve_connection(server: DnsServer, mut stream: TcpStream) {
    loop {
        let query = match tokio::time::timeout(TCP_IDLE, read_framed(&mut stream)).await {
            Ok(Ok(Some(query))) => query,
            _ => return,
        };
        let forwarded = query.clone();
        let answer = server
            .answer(&query, usize::from(u16::MAX), |upstreams| async move {
                upstreams.tcp(&forwarded).await
            })
            .await;
        match answer {
            Some(answer) if write_framed(&mut stream, &answer).await.is_ok() => {}
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests;

//! The server over real sockets on loopback: service names, a view
//! change, forwarding over UDP and TCP to a stand-in upstream, and
//! SERVFAIL when no upstream answers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::*;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn view(cluster_ip: &str) -> Arc<ServiceView> {
    let web = json!({
        "metadata": {"name": "web", "project": "shop"},
        "spec": {"clusterIP": cluster_ip, "ports": [{"port": 80}]},
    });
    Arc::new(ServiceView {
        services: vec![serde_json::from_value(web).unwrap()],
        endpoints: vec![],
    })
}

fn query(name: &str) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    message.to_vec().unwrap()
}

fn addresses(answer: &[u8]) -> (ResponseCode, Vec<Ipv4Addr>) {
    let message = Message::from_vec(answer).unwrap();
    let ips = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    (message.metadata.response_code, ips)
}

async fn ask_udp(port: u16, name: &str) -> Vec<u8> {
    let socket = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    socket.connect((LOOPBACK, port)).await.unwrap();
    let asked = query(name);
    socket.send(&asked).await.unwrap();
    let mut buf = vec![0; 65535];
    let len = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buf))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    assert_eq!(buf[..2], asked[..2], "the answer carries the query's id");
    buf.truncate(len);
    buf
}

async fn ask_tcp(port: u16, names: &[&str]) -> Vec<Vec<u8>> {
    let mut stream = TcpStream::connect((LOOPBACK, port)).await.unwrap();
    let mut answers = Vec::new();
    // Several queries on one connection, as resolvers may send.
    for name in names {
        write_framed(&mut stream, &query(name)).await.unwrap();
        answers.push(read_framed(&mut stream).await.unwrap().unwrap());
    }
    answers
}

/// An upstream that answers every A query with `ip`, over UDP and TCP on
/// one port.
async fn upstream(ip: Ipv4Addr) -> SocketAddr {
    let udp = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    let address = udp.local_addr().unwrap();
    let tcp = TcpListener::bind(address).await.unwrap();
    let answer = move |query: &[u8]| {
        let request = Message::from_vec(query).unwrap();
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        let question = request.queries[0].clone();
        response.add_answer(Record::from_rdata(
            question.name().clone(),
            60,
            RData::A(A(ip)),
        ));
        response.add_query(question);
        response.to_vec().unwrap()
    };
    tokio::spawn(async move {
        let mut buf = vec![0; 65535];
        while let Ok((len, from)) = udp.recv_from(&mut buf).await {
            let _ = udp.send_to(&answer(&buf[..len]), from).await;
        }
    });
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            while let Ok(Some(query)) = read_framed(&mut stream).await {
                let _ = write_framed(&mut stream, &answer(&query)).await;
            }
        }
    });
    address
}

/// A server forwarding to `upstreams` and knowing service web.shop,
/// listening on loopback; the view's sender keeps it current.
async fn serving(upstreams: Upstreams) -> (DnsServer, watch::Sender<Arc<ServiceView>>, u16) {
    let (views, view_rx) = watch::channel(view("10.96.0.10"));
    let server = DnsServer::new(upstreams, 0);
    server.follow(view_rx);
    let port = server.listen(LOOPBACK).await.unwrap();
    (server, views, port)
}

#[tokio::test]
async fn service_names_are_answered_over_udp_and_tcp_and_follow_the_view() {
    let server = DnsServer::new(Upstreams::new(vec![]), 0);
    let port = server.listen(LOOPBACK).await.unwrap();
    assert_eq!(
        server.listen(LOOPBACK).await.unwrap(),
        port,
        "listening twice is once"
    );
    // Before any view, no service is known.
    assert_eq!(
        addresses(&ask_udp(port, "web.shop.svc.").await),
        (ResponseCode::NXDomain, vec![])
    );
    let (views, view_rx) = watch::channel(view("10.96.0.10"));
    server.follow(view_rx);

    let web = Ipv4Addr::new(10, 96, 0, 10);
    assert_eq!(
        addresses(&ask_udp(port, "web.shop.svc.").await),
        (ResponseCode::NoError, vec![web])
    );
    assert_eq!(
        addresses(&ask_udp(port, "nope.shop.svc.").await),
        (ResponseCode::NXDomain, vec![])
    );
    let answers = ask_tcp(port, &["WEB.shop.svc.cluster.local.", "nope.shop.svc."]).await;
    assert_eq!(addresses(&answers[0]), (ResponseCode::NoError, vec![web]));
    assert_eq!(addresses(&answers[1]).0, ResponseCode::NXDomain);

    views.send(view("10.96.0.99")).unwrap();
    let moved = Ipv4Addr::new(10, 96, 0, 99);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while addresses(&ask_udp(port, "web.shop.svc.").await).1 != [moved] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new view is never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn other_names_are_forwarded_over_the_transport_asked() {
    let upstream_ip = Ipv4Addr::new(192, 0, 2, 7);
    let dead = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    // The first upstream never answers; the second does.
    let upstreams = Upstreams::new(vec![
        dead.local_addr().unwrap(),
        upstream(upstream_ip).await,
    ])
    .with_timeout(Duration::from_millis(300));
    let (_server, _views, port) = serving(upstreams).await;

    assert_eq!(
        addresses(&ask_udp(port, "example.com.").await),
        (ResponseCode::NoError, vec![upstream_ip])
    );
    let answers = ask_tcp(port, &["example.org.", "web.shop.svc."]).await;
    assert_eq!(
        addresses(&answers[0]),
        (ResponseCode::NoError, vec![upstream_ip])
    );
    assert_eq!(
        addresses(&answers[1]),
        (ResponseCode::NoError, vec![Ipv4Addr::new(10, 96, 0, 10)])
    );
}

#[tokio::test]
async fn no_upstream_answering_is_a_server_failure() {
    let dead = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    let upstreams =
        Upstreams::new(vec![dead.local_addr().unwrap()]).with_timeout(Duration::from_millis(100));
    let (_server, _views, port) = serving(upstreams).await;
    assert_eq!(
        addresses(&ask_udp(port, "example.com.").await),
        (ResponseCode::ServFail, vec![])
    );
}

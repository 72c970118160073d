//! One query in, one answer out: from the [`NameTable`] for names under
//! `svc`, else a verdict to forward the query as it came.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};

use super::names::{Lookup, NameTable};

/// How long resolvers may keep an answer: short, so a new or moved
/// service is seen within seconds.
pub const TTL_SECONDS: u32 = 5;

/// The largest answer over UDP without EDNS (RFC 1035).
pub const CLASSIC_UDP_LIMIT: usize = 512;

/// The payload the agent offers over UDP with EDNS: the size DNS flag day
/// 2020 settled on, which avoids IP fragmentation.
const EDNS_PAYLOAD: u16 = 1232;

/// What to do with a query.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Send these bytes back.
    Answer(Vec<u8>),
    /// Not ours: relay the query to the host's resolvers.
    Forward,
    /// Not a query, or too broken to name an id to answer: say nothing.
    Drop,
}

/// The reply to `query` (wire format) that fits in `limit` bytes (the
/// transport's: UDP's negotiated payload, or 65535 over TCP).
pub fn reply(table: &NameTable, query: &[u8], limit: usize) -> Reply {
    let request = match Message::from_vec(query) {
        Ok(request) => request,
        Err(_) => {
            return match query {
                [high, low, ..] => error(u16::from_be_bytes([*high, *low]), ResponseCode::FormErr),
                _ => Reply::Drop,
            };
        }
    };
    let meta = &request.metadata;
    if meta.message_type != MessageType::Query {
        return Reply::Drop;
    }
    let [question] = request.queries.as_slice() else {
        return Reply::Forward;
    };
    if meta.op_code != OpCode::Query {
        return Reply::Forward;
    }
    let lookup = table.lookup(&question.name().to_ascii());
    let mut response = Message::response(meta.id, meta.op_code);
    response.metadata.recursion_desired = meta.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.authoritative = true;
    response.add_query(question.clone());
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        response.set_edns(edns);
    }
    match lookup {
        Lookup::Elsewhere => return Reply::Forward,
        Lookup::NoSuchName => response.metadata.response_code = ResponseCode::NXDomain,
        // The name exists: other types (AAAA above all) get an empty
        // NOERROR, so resolvers go on with the A answer.
        Lookup::Service(addresses) => {
            if matches!(question.query_type(), RecordType::A | RecordType::ANY) {
                for ip in addresses {
                    response.add_answer(Record::from_rdata(
                        question.name().clone(),
                        TTL_SECONDS,
                        RData::A(A(*ip)),
                    ));
                }
            }
        }
    }
    encode(response, limit)
}

/// The largest UDP answer `query`'s sender takes: its EDNS payload (at
/// most ours), else 512 bytes.
pub fn udp_limit(query: &[u8]) -> usize {
    Message::from_vec(query)
        .ok()
        .and_then(|m| m.edns.map(|e| e.max_payload()))
        .map_or(CLASSIC_UDP_LIMIT, |payload| {
            usize::from(payload.clamp(CLASSIC_UDP_LIMIT as u16, EDNS_PAYLOAD))
        })
}

/// SERVFAIL for `query`, for when no upstream answered; `None` if it
/// has no id to answer.
pub fn server_failure(query: &[u8]) -> Option<Vec<u8>> {
    let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
    match error(id, ResponseCode::ServFail) {
        Reply::Answer(bytes) => Some(bytes),
        _ => None,
    }
}

fn error(id: u16, code: ResponseCode) -> Reply {
    let mut response = Message::error_msg(id, OpCode::Query, code);
    response.metadata.recursion_available = true;
    encode(response, CLASSIC_UDP_LIMIT)
}

/// The wire form of `response`; past `limit`, the answers are dropped and
/// the truncation bit set, so the client asks again over TCP.
fn encode(response: Message, limit: usize) -> Reply {
    match response.to_vec() {
        Ok(bytes) if bytes.len() <= limit => Reply::Answer(bytes),
        Ok(_) => match response.truncate().to_vec() {
            Ok(bytes) => Reply::Answer(bytes),
            Err(_) => Reply::Drop,
        },
        Err(_) => Reply::Drop,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;
    use serde_json::json;

    use super::*;
    use crate::service_view::ServiceView;

    fn table(endpoints: usize) -> NameTable {
        let web = json!({
            "metadata": {"name": "web", "project": "shop"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]},
        });
        let many = json!({
            "metadata": {"name": "many", "project": "shop"},
            "spec": {"clusterIP": "None"},
        });
        let addresses: Vec<_> = (0..endpoints)
            .map(|i| json!({"ip": Ipv4Addr::from(0x0a58_0000 + i as u32).to_string()}))
            .collect();
        let many_endpoints = json!({
            "metadata": {"name": "many", "project": "shop"},
            "subsets": [{"addresses": addresses, "ports": [{"port": 80, "protocol": "TCP"}]}],
        });
        NameTable::build(&ServiceView {
            services: vec![
                serde_json::from_value(web).unwrap(),
                serde_json::from_value(many).unwrap(),
            ],
            endpoints: vec![serde_json::from_value(many_endpoints).unwrap()],
        })
    }

    fn query(name: &str, kind: RecordType) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        message.to_vec().unwrap()
    }

    fn answer(reply: Reply) -> Message {
        match reply {
            Reply::Answer(bytes) => Message::from_vec(&bytes).unwrap(),
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    fn addresses(message: &Message) -> Vec<Ipv4Addr> {
        message
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::A(a) => a.0,
                other => panic!("not an A record: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_service_answers_with_its_address_and_a_short_ttl() {
        let asked = query("web.shop.svc.", RecordType::A);
        let message = answer(reply(&table(0), &asked, 512));
        let id = Message::from_vec(&asked).unwrap().metadata.id;
        assert_eq!(message.metadata.id, id);
        assert_eq!(message.metadata.response_code, ResponseCode::NoError);
        assert!(message.metadata.authoritative && message.metadata.recursion_desired);
        assert_eq!(addresses(&message), [Ipv4Addr::new(10, 96, 0, 10)]);
        assert_eq!(message.answers[0].ttl, TTL_SECONDS);
        assert_eq!(message.answers[0].name.to_ascii(), "web.shop.svc.");
        assert_eq!(message.queries.len(), 1);
    }

    #[test]
    fn aaaa_of_a_service_is_empty_and_unknown_names_do_not_exist() {
        let message = answer(reply(
            &table(0),
            &query("web.shop.svc.", RecordType::AAAA),
            512,
        ));
        assert_eq!(message.metadata.response_code, ResponseCode::NoError);
        assert!(message.answers.is_empty());
        let message = answer(reply(
            &table(0),
            &query("api.shop.svc.", RecordType::A),
            512,
        ));
        assert_eq!(message.metadata.response_code, ResponseCode::NXDomain);
        assert!(message.answers.is_empty());
    }

    #[test]
    fn other_names_are_forwarded() {
        let asked = query("example.com.", RecordType::A);
        assert_eq!(reply(&table(0), &asked, 512), Reply::Forward);
    }

    #[test]
    fn edns_is_answered_with_edns() {
        let mut message = Message::from_vec(&query("web.shop.svc.", RecordType::A)).unwrap();
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        message.set_edns(edns);
        let asked = message.to_vec().unwrap();
        assert_eq!(udp_limit(&asked), 1232);
        assert_eq!(udp_limit(&query("web.shop.svc.", RecordType::A)), 512);
        let answered = answer(reply(&table(0), &asked, udp_limit(&asked)));
        assert_eq!(answered.edns.map(|e| e.max_payload()), Some(1232));
    }

    #[test]
    fn a_headless_service_too_large_for_udp_is_truncated() {
        let asked = query("many.shop.svc.", RecordType::A);
        let full = answer(reply(&table(100), &asked, 65535));
        assert_eq!(addresses(&full).len(), 100);
        assert!(!full.metadata.truncation);
        let cut = answer(reply(&table(100), &asked, 512));
        assert!(cut.metadata.truncation);
        assert!(cut.answers.is_empty());
    }

    #[test]
    fn garbage_gets_a_format_error_or_nothing() {
        let message = answer(reply(&table(0), &[0x12, 0x34, 0xff], 512));
        assert_eq!(message.metadata.id, 0x1234);
        assert_eq!(message.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(reply(&table(0), &[7], 512), Reply::Drop);
        let failure = Message::from_vec(&server_failure(&[0, 9]).unwrap()).unwrap();
        assert_eq!(failure.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(server_failure(&[0]), None);
    }

    #[test]
    fn answers_are_not_answered() {
        let mut message = Message::from_vec(&query("web.shop.svc.", RecordType::A)).unwrap();
        message.metadata.message_type = MessageType::Response;
        assert_eq!(
            reply(&table(0), &message.to_vec().unwrap(), 512),
            Reply::Drop
        );
    }
}

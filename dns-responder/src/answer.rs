//! Deciding what to do with one DNS query: answer it ourselves (the experiment covers the name)
//! or relay it unchanged.

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};

use crate::spec::{DnsAction, ResponderSpec};

/// Faked answers are not to be cached past the experiment.
const FAKE_TTL: u32 = 0;

#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send these bytes back to the client.
    Answer(Vec<u8>),
    /// Relay the query to the pod's resolvers as it is.
    Forward,
}

/// A source of random addresses (a seeded one in tests).
pub trait AddressSource {
    fn ipv4(&mut self) -> Ipv4Addr;
    fn ipv6(&mut self) -> Ipv6Addr;
}

pub struct ThreadRandom;

impl AddressSource for ThreadRandom {
    fn ipv4(&mut self) -> Ipv4Addr {
        Ipv4Addr::from(rand::random::<u32>())
    }
    fn ipv6(&mut self) -> Ipv6Addr {
        Ipv6Addr::from(rand::random::<u128>())
    }
}

/// Anything we cannot read (or that is not a plain query with one question) is relayed: the
/// upstream resolver answers it as it would have without the experiment.
pub fn decide(spec: &ResponderSpec, packet: &[u8], random: &mut dyn AddressSource) -> Decision {
    let Ok(query) = Message::from_vec(packet) else {
        return Decision::Forward;
    };
    if query.metadata.message_type != MessageType::Query || query.queries.len() != 1 {
        return Decision::Forward;
    }
    let question = &query.queries[0];
    if !spec.covers(&question.name().to_ascii()) {
        return Decision::Forward;
    }
    let mut response = Message::response(query.metadata.id, query.metadata.op_code);
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_query(question.clone());
    match spec.action {
        DnsAction::Error => response.metadata.response_code = ResponseCode::ServFail,
        DnsAction::Random => {
            let rdata = match question.query_type() {
                RecordType::A => Some(RData::A(A(random.ipv4()))),
                RecordType::AAAA => Some(RData::AAAA(AAAA(random.ipv6()))),
                // A covered name has no other records while the experiment lasts (NODATA).
                _ => None,
            };
            if let Some(rdata) = rdata {
                response.add_answer(Record::from_rdata(question.name().clone(), FAKE_TTL, rdata));
            }
        }
    }
    match response.to_vec() {
        Ok(bytes) => Decision::Answer(bytes),
        Err(_) => Decision::Forward,
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    use super::*;

    struct Fixed;
    impl AddressSource for Fixed {
        fn ipv4(&mut self) -> Ipv4Addr {
            Ipv4Addr::new(203, 0, 113, 9)
        }
        fn ipv6(&mut self) -> Ipv6Addr {
            Ipv6Addr::LOCALHOST
        }
    }

    fn query(name: &str, kind: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 4242;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_str(name).unwrap(), kind));
        m.to_vec().unwrap()
    }

    fn answer(spec: &ResponderSpec, packet: &[u8]) -> Message {
        match decide(spec, packet, &mut Fixed) {
            Decision::Answer(bytes) => Message::from_vec(&bytes).unwrap(),
            Decision::Forward => panic!("forwarded"),
        }
    }

    /// Chaos Mesh's `error` action makes the lookup fail: SERVFAIL, the question echoed, the
    /// client's id kept.
    #[test]
    fn error_answers_servfail_for_covered_names_only() {
        let spec = ResponderSpec::parse("error", &["*.example.com"]).unwrap();
        let reply = answer(&spec, &query("db.example.com.", RecordType::A));
        assert_eq!(reply.metadata.id, 4242);
        assert_eq!(reply.metadata.message_type, MessageType::Response);
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(reply.queries.len(), 1);
        assert!(reply.answers.is_empty());
        assert_eq!(
            decide(&spec, &query("db.example.org.", RecordType::A), &mut Fixed),
            Decision::Forward
        );
    }

    #[test]
    fn random_answers_an_address_of_the_asked_family() {
        let spec = ResponderSpec::parse("random", &["*.example.com"]).unwrap();
        let reply = answer(&spec, &query("db.example.com.", RecordType::A));
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(reply.answers.len(), 1);
        assert_eq!(
            reply.answers[0].data,
            RData::A(A(Ipv4Addr::new(203, 0, 113, 9)))
        );
        assert_eq!(reply.answers[0].ttl, FAKE_TTL);
        let reply = answer(&spec, &query("db.example.com.", RecordType::AAAA));
        assert_eq!(
            reply.answers[0].data,
            RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))
        );
        let reply = answer(&spec, &query("db.example.com.", RecordType::MX));
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert!(reply.answers.is_empty());
    }

    #[test]
    fn what_cannot_be_read_is_relayed() {
        let spec = ResponderSpec::parse::<&str>("error", &[]).unwrap();
        assert_eq!(decide(&spec, b"\x01\x02", &mut Fixed), Decision::Forward);
        let mut reply = Message::from_vec(&query("a.b.", RecordType::A)).unwrap();
        reply.metadata.message_type = MessageType::Response;
        assert_eq!(
            decide(&spec, &reply.to_vec().unwrap(), &mut Fixed),
            Decision::Forward
        );
    }
}

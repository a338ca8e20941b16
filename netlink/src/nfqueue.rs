//! NFQUEUE (nfnetlink_queue): binding a queue, its settings, the packets the kernel hands over
//! and the verdicts that give them back. A queue lives in the network namespace of the socket
//! that binds it.

use crate::message::{MessageBuilder, NLM_F_ACK, NLM_F_REQUEST, NetlinkError, parse_attrs, u32_at};

const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQNL_MSG_VERDICT_BATCH: u16 = 3;

const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;

const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_CFG_CMD_UNBIND: u8 = 2;
const NFQNL_COPY_PACKET: u8 = 2;

/// Accept packets instead of dropping them when the queue is full.
pub const NFQA_CFG_F_FAIL_OPEN: u32 = 0x1;
/// Hand over GSO packets whole, checksums not filled in (no segmentation for userspace).
pub const NFQA_CFG_F_GSO: u32 = 0x4;

const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_MARK: u16 = 3;
const NFQA_PAYLOAD: u16 = 10;

/// The message type of packets from the kernel.
pub const PACKET_MESSAGE_TYPE: u16 = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET;

/// What becomes of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Drop,
    Accept,
}

impl Verdict {
    fn code(self) -> u32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
        }
    }
}

fn message(kind: u16, flags: u16, queue: u16) -> MessageBuilder {
    let mut b = MessageBuilder::new((NFNL_SUBSYS_QUEUE << 8) | kind, flags);
    // struct nfgenmsg: family (AF_UNSPEC), version (NFNETLINK_V0), resource id (big endian).
    let q = queue.to_be_bytes();
    b.header(&[0, 0, q[0], q[1]]);
    b
}

fn command(queue: u16, cmd: u8) -> MessageBuilder {
    let mut b = message(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, queue);
    // struct nfqnl_msg_config_cmd: command, pad, pf (unused since 3.8).
    b.attr(NFQA_CFG_CMD, &[cmd, 0, 0, 0]);
    b
}

/// Binds this socket to `queue`.
pub fn bind(queue: u16) -> MessageBuilder {
    command(queue, NFQNL_CFG_CMD_BIND)
}

pub fn unbind(queue: u16) -> MessageBuilder {
    command(queue, NFQNL_CFG_CMD_UNBIND)
}

/// Copy whole packets (up to `range` bytes), hold at most `max_len` in the kernel, and set the
/// flags in `mask` to `flags`.
pub fn configure(queue: u16, range: u32, max_len: u32, flags: u32, mask: u32) -> MessageBuilder {
    let mut b = message(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, queue);
    // struct nfqnl_msg_config_params is packed: copy_range (be32), copy_mode.
    let mut params = range.to_be_bytes().to_vec();
    params.push(NFQNL_COPY_PACKET);
    b.attr(NFQA_CFG_PARAMS, &params);
    b.attr(NFQA_CFG_QUEUE_MAXLEN, &max_len.to_be_bytes());
    b.attr(NFQA_CFG_MASK, &mask.to_be_bytes());
    b.attr(NFQA_CFG_FLAGS, &flags.to_be_bytes());
    b
}

/// A verdict on one packet, optionally with a replacement payload (no ack: verdicts are hot).
pub fn verdict(queue: u16, id: u32, verdict: Verdict, payload: Option<&[u8]>) -> MessageBuilder {
    let mut b = message(NFQNL_MSG_VERDICT, NLM_F_REQUEST, queue);
    let mut hdr = verdict.code().to_be_bytes().to_vec();
    hdr.extend_from_slice(&id.to_be_bytes());
    b.attr(NFQA_VERDICT_HDR, &hdr);
    if let Some(payload) = payload {
        b.attr(NFQA_PAYLOAD, payload);
    }
    b
}

/// One verdict for every packet of the queue with an id up to `id`.
pub fn verdict_batch(queue: u16, id: u32, verdict: Verdict) -> MessageBuilder {
    let mut b = message(NFQNL_MSG_VERDICT_BATCH, NLM_F_REQUEST, queue);
    let mut hdr = verdict.code().to_be_bytes().to_vec();
    hdr.extend_from_slice(&id.to_be_bytes());
    b.attr(NFQA_VERDICT_HDR, &hdr);
    b
}

/// A packet the kernel queued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub queue: u16,
    pub id: u32,
    pub mark: u32,
    /// The network-layer packet (IP header first).
    pub payload: Vec<u8>,
}

impl Packet {
    /// Parses the payload of a [`PACKET_MESSAGE_TYPE`] message (after the netlink header).
    pub fn parse(body: &[u8]) -> Result<Packet, NetlinkError> {
        if body.len() < 4 {
            return Err(NetlinkError::Truncated("nfgenmsg"));
        }
        let queue = u16::from_be_bytes([body[2], body[3]]);
        let mut id = None;
        let mut mark = 0;
        let mut payload = Vec::new();
        for attr in parse_attrs(&body[4..])? {
            match attr.kind {
                NFQA_PACKET_HDR => {
                    id = u32_at(attr.payload, 0).map(u32::from_be);
                }
                NFQA_MARK => mark = attr.u32().map(u32::from_be).unwrap_or_default(),
                NFQA_PAYLOAD => payload = attr.payload.to_vec(),
                _ => {}
            }
        }
        Ok(Packet {
            queue,
            id: id.ok_or(NetlinkError::Truncated("packet header"))?,
            mark,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::split_messages;

    #[test]
    fn configuration_matches_the_kernel_structs() {
        let b = bind(7).finish(1);
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), 0x0302);
        assert_eq!(&b[16..20], &[0, 0, 0, 7]);
        assert_eq!(&b[20..28], &[8, 0, 1, 0, 1, 0, 0, 0]);
        let c = configure(7, 0xffff, 4096, NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_FAIL_OPEN).finish(2);
        // params: len 9 (4 + 5 packed bytes), padded to 12.
        assert_eq!(&c[20..29], &[9, 0, 2, 0, 0, 0, 0xff, 0xff, 2]);
    }

    #[test]
    fn packets_parse_and_verdicts_name_them() {
        let mut b = MessageBuilder::new(PACKET_MESSAGE_TYPE, 0);
        b.header(&[2, 0, 0, 9]);
        let mut hdr = 42u32.to_be_bytes().to_vec();
        hdr.extend_from_slice(&[0x08, 0x00, 4]);
        b.attr(NFQA_PACKET_HDR, &hdr);
        b.attr(NFQA_MARK, &5u32.to_be_bytes());
        b.attr(NFQA_PAYLOAD, &[0x45, 0, 0, 20]);
        let bytes = b.finish(0);
        let (header, body) = split_messages(&bytes).unwrap()[0];
        assert_eq!(header.message_type, PACKET_MESSAGE_TYPE);
        let packet = Packet::parse(body).unwrap();
        assert_eq!(
            packet,
            Packet {
                queue: 9,
                id: 42,
                mark: 5,
                payload: vec![0x45, 0, 0, 20]
            }
        );
        let v = verdict(9, 42, Verdict::Accept, Some(&[1, 2])).finish(0);
        assert_eq!(&v[20..32], &[12, 0, 2, 0, 0, 0, 0, 1, 0, 0, 0, 42]);
        assert!(Packet::parse(&[0, 0]).is_err());
        assert!(Packet::parse(&[0, 0, 0, 1]).is_err(), "no packet header");
    }
}

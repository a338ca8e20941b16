//! Netlink framing: the 16-byte message header, attributes (type-length-value, 4-byte aligned)
//! and nests, built the way iproute2's `addattr_l`/`addattr_nest` build them, and parsed back.

/// `struct nlmsghdr` is 16 bytes.
pub const HEADER_LEN: usize = 16;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_ROOT: u16 = 0x100;
pub const NLM_F_MATCH: u16 = 0x200;
pub const NLM_F_DUMP: u16 = NLM_F_ROOT | NLM_F_MATCH;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

/// Attributes are padded to 4 bytes.
pub const fn align(len: usize) -> usize {
    (len + 3) & !3
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetlinkError {
    #[error("truncated netlink message: {0}")]
    Truncated(&'static str),
    #[error("the kernel answered {}{}{message}", errno.desc(), if message.is_empty() { "" } else { ": " })]
    Kernel {
        errno: nix::errno::Errno,
        /// The extended ack message, when the kernel gave one.
        message: String,
    },
    #[error("netlink socket: {0}")]
    Io(nix::errno::Errno),
    #[error("{0}")]
    Invalid(String),
}

/// Builds one netlink message. The header's length is filled in by [`MessageBuilder::finish`];
/// the sequence number too, so a message can be compared byte for byte with another tool's
/// (whose sequence number is the time it ran).
#[derive(Clone, Debug)]
pub struct MessageBuilder {
    buf: Vec<u8>,
}

impl MessageBuilder {
    pub fn new(message_type: u16, flags: u16) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        buf.extend_from_slice(&message_type.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // sequence
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        Self { buf }
    }

    /// Appends a fixed family header (e.g. `struct tcmsg`), padded to 4 bytes.
    pub fn header(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self.pad();
        self
    }

    /// Appends one attribute: its length field excludes the padding, as in iproute2's `addattr_l`.
    pub fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let len = 4 + payload.len();
        self.buf
            .extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
        self
    }

    pub fn attr_u32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.attr(kind, &value.to_ne_bytes())
    }

    /// A NUL-terminated string attribute.
    pub fn attr_str(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut bytes = value.as_bytes().to_vec();
        bytes.push(0);
        self.attr(kind, &bytes)
    }

    /// Starts a nested attribute whose payload is what follows until [`Self::end_nest`];
    /// returns its offset.
    pub fn begin_nest(&mut self, kind: u16) -> usize {
        let start = self.buf.len();
        self.attr(kind, &[]);
        start
    }

    /// Ends a nest: its length covers everything appended since, padding included, as in
    /// iproute2's `addattr_nest_end`.
    pub fn end_nest(&mut self, start: usize) -> &mut Self {
        let len = u16::try_from(self.buf.len() - start).unwrap_or(u16::MAX);
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    fn pad(&mut self) {
        let aligned = align(self.buf.len());
        self.buf.resize(aligned, 0);
    }

    pub fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// The fixed part of a received message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub len: u32,
    pub message_type: u16,
    pub flags: u16,
    pub seq: u32,
    pub port: u32,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Splits a datagram from the kernel into messages: (header, payload after the header).
pub fn split_messages(mut datagram: &[u8]) -> Result<Vec<(Header, &[u8])>, NetlinkError> {
    let mut out = Vec::new();
    while datagram.len() >= HEADER_LEN {
        let header = Header {
            len: u32_at(datagram, 0).ok_or(NetlinkError::Truncated("header"))?,
            message_type: u16_at(datagram, 4).ok_or(NetlinkError::Truncated("header"))?,
            flags: u16_at(datagram, 6).ok_or(NetlinkError::Truncated("header"))?,
            seq: u32_at(datagram, 8).ok_or(NetlinkError::Truncated("header"))?,
            port: u32_at(datagram, 12).ok_or(NetlinkError::Truncated("header"))?,
        };
        let len = header.len as usize;
        if len < HEADER_LEN || len > datagram.len() {
            return Err(NetlinkError::Truncated("message length"));
        }
        out.push((header, &datagram[HEADER_LEN..len]));
        datagram = &datagram[align(len).min(datagram.len())..];
    }
    Ok(out)
}

/// NLMSGERR_ATTR_MSG: the extended ack's text.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// NLM_F_CAPPED: the error message carries only the request's header.
const NLM_F_CAPPED: u16 = 0x100;

/// Reads an NLMSG_ERROR payload (`flags` are the error message's own): `Ok(())` for an ack, the
/// errno and extended message otherwise.
pub fn parse_error(flags: u16, payload: &[u8]) -> Result<(), NetlinkError> {
    let code = u32_at(payload, 0).ok_or(NetlinkError::Truncated("error code"))? as i32;
    if code == 0 {
        return Ok(());
    }
    // After the code comes the offending request's header (and, without NLM_F_CAPPED, its
    // payload); the extended-ack attributes follow it.
    let mut message = String::new();
    if let Some(orig_len) = u32_at(payload, 4) {
        let capped = flags & NLM_F_CAPPED != 0;
        let skip = 4 + if capped {
            HEADER_LEN
        } else {
            align(orig_len as usize)
        };
        if let Some(rest) = payload.get(skip..) {
            for attr in parse_attrs(rest).unwrap_or_default() {
                if attr.kind == NLMSGERR_ATTR_MSG {
                    message = String::from_utf8_lossy(attr.payload)
                        .trim_end_matches('\0')
                        .to_owned();
                }
            }
        }
    }
    Err(NetlinkError::Kernel {
        // A kernel error is -errno; a peer that sends i32::MIN gets no overflow.
        errno: nix::errno::Errno::from_raw(code.saturating_neg()),
        message,
    })
}

/// One attribute: its type (flags masked off) and payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr<'a> {
    pub kind: u16,
    pub payload: &'a [u8],
}

impl Attr<'_> {
    pub fn u32(&self) -> Option<u32> {
        u32_at(self.payload, 0)
    }

    pub fn string(&self) -> String {
        String::from_utf8_lossy(self.payload)
            .trim_end_matches('\0')
            .to_owned()
    }
}

/// Parses a run of attributes.
pub fn parse_attrs(mut bytes: &[u8]) -> Result<Vec<Attr<'_>>, NetlinkError> {
    let mut out = Vec::new();
    while bytes.len() >= 4 {
        let len = u16_at(bytes, 0).ok_or(NetlinkError::Truncated("attribute"))? as usize;
        let kind = u16_at(bytes, 2).ok_or(NetlinkError::Truncated("attribute"))? & 0x3fff;
        if len < 4 || len > bytes.len() {
            return Err(NetlinkError::Truncated("attribute length"));
        }
        out.push(Attr {
            kind,
            payload: &bytes[4..len],
        });
        bytes = &bytes[align(len).min(bytes.len())..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_but_lengths_are_not() {
        let mut b = MessageBuilder::new(36, NLM_F_REQUEST);
        b.header(&[1, 2, 3]);
        b.attr_str(1, "tbf");
        let nest = b.begin_nest(2);
        b.attr_u32(6, 4096);
        b.end_nest(nest);
        let bytes = b.finish(7);
        assert_eq!(bytes.len(), 16 + 4 + 8 + 12);
        assert_eq!(u32_at(&bytes, 0), Some(40));
        assert_eq!(u32_at(&bytes, 8), Some(7));
        let attrs = parse_attrs(&bytes[20..]).unwrap();
        assert_eq!(attrs[0].string(), "tbf");
        assert_eq!(attrs[0].payload.len(), 4);
        let inner = parse_attrs(attrs[1].payload).unwrap();
        assert_eq!(inner[0].u32(), Some(4096));
    }

    #[test]
    fn errors_carry_the_kernels_extended_message() {
        // NLMSG_ERROR payload: -2, then a capped copy of the request header, then
        // NLMSGERR_ATTR_MSG.
        let mut payload = (-2i32).to_ne_bytes().to_vec();
        let req = MessageBuilder::new(36, NLM_F_REQUEST).finish(1);
        payload.extend_from_slice(&req);
        let mut attrs = MessageBuilder::new(0, 0);
        attrs.attr_str(NLMSGERR_ATTR_MSG, "Specified qdisc kind is unknown");
        payload.extend_from_slice(&attrs.finish(0)[HEADER_LEN..]);
        let err = parse_error(NLM_F_CAPPED, &payload).unwrap_err();
        assert_eq!(
            err,
            NetlinkError::Kernel {
                errno: nix::errno::Errno::ENOENT,
                message: "Specified qdisc kind is unknown".into()
            }
        );
        assert_eq!(parse_error(0, &0i32.to_ne_bytes()), Ok(()));
    }

    #[test]
    fn garbage_is_reported_not_panicked_on() {
        assert!(split_messages(&[0xff; 20]).is_err());
        assert!(parse_attrs(&[9, 0, 1, 0]).is_err());
        assert!(parse_error(0, &[1]).is_err());
    }
}

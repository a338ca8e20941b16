//! A blocking netlink socket (nix, no unsafe): requests with acknowledgements, dumps, and raw
//! send/receive for NFQUEUE. It belongs to the network namespace of the thread that opened it.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, sendto,
    setsockopt, sockopt,
};

use crate::message::{
    MessageBuilder, NLMSG_DONE, NLMSG_ERROR, NetlinkError, parse_error, split_messages,
};

/// Which netlink family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Route,
    Netfilter,
}

#[derive(Debug)]
pub struct NetlinkSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl NetlinkSocket {
    pub fn open(family: Family) -> Result<Self, NetlinkError> {
        let protocol = match family {
            Family::Route => SockProtocol::NetlinkRoute,
            Family::Netfilter => SockProtocol::NetlinkNetFilter,
        };
        let fd = nix::sys::socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            protocol,
        )
        .map_err(NetlinkError::Io)?;
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &NetlinkAddr::new(0, 0),
        )
        .map_err(NetlinkError::Io)?;
        Ok(Self {
            fd,
            seq: std::process::id().wrapping_mul(7919),
            buf: vec![0; 1 << 17],
        })
    }

    /// Asks for a bigger receive buffer (for a busy queue); needs CAP_NET_ADMIN to go past the
    /// system limit, falls back to the limit otherwise.
    pub fn set_receive_buffer(&self, bytes: usize) {
        if setsockopt(&self.fd, sockopt::RcvBufForce, &bytes).is_err() {
            let _ = setsockopt(&self.fd, sockopt::RcvBuf, &bytes);
        }
    }

    /// Bounds how long a receive may block.
    pub fn set_receive_timeout(&self, timeout: Duration) -> Result<(), NetlinkError> {
        let tv = nix::sys::time::TimeVal::new(timeout.as_secs() as _, timeout.subsec_micros() as _);
        setsockopt(&self.fd, sockopt::ReceiveTimeout, &tv).map_err(NetlinkError::Io)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends one finished message as is.
    pub fn send_raw(&self, bytes: &[u8]) -> Result<(), NetlinkError> {
        let raw = std::os::fd::AsRawFd::as_raw_fd(&self.fd);
        loop {
            match sendto(raw, bytes, &NetlinkAddr::new(0, 0), MsgFlags::empty()) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(NetlinkError::Io(e)),
            }
        }
    }

    /// Receives one datagram into the socket's buffer.
    pub fn recv_raw(&mut self, flags: MsgFlags) -> Result<&[u8], NetlinkError> {
        let raw = std::os::fd::AsRawFd::as_raw_fd(&self.fd);
        loop {
            match recv(raw, &mut self.buf, flags) {
                Ok(n) => return Ok(&self.buf[..n.min(self.buf.len())]),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(NetlinkError::Io(e)),
            }
        }
    }

    /// Sends a request that asks for an acknowledgement and waits for it.
    pub fn request(&mut self, message: MessageBuilder) -> Result<(), NetlinkError> {
        self.request_keeping(message, &mut Vec::new())
    }

    /// As [`Self::request`], keeping the other messages that arrive meanwhile (type, payload):
    /// on a busy NFQUEUE socket those are packets that still need a verdict.
    pub fn request_keeping(
        &mut self,
        message: MessageBuilder,
        others: &mut Vec<(u16, Vec<u8>)>,
    ) -> Result<(), NetlinkError> {
        let seq = self.next_seq();
        let bytes = message.finish(seq);
        self.send_raw(&bytes)?;
        loop {
            let datagram = self.recv_raw(MsgFlags::empty())?;
            let mut outcome = None;
            for (header, payload) in split_messages(datagram)? {
                if header.seq == seq && header.message_type == NLMSG_ERROR {
                    outcome = Some(parse_error(header.flags, payload));
                } else if header.message_type != NLMSG_ERROR {
                    others.push((header.message_type, payload.to_vec()));
                }
            }
            if let Some(outcome) = outcome {
                return outcome;
            }
        }
    }

    /// Sends a dump request and collects the payloads of every answer.
    pub fn dump(
        &mut self,
        message: MessageBuilder,
        message_type: u16,
    ) -> Result<Vec<Vec<u8>>, NetlinkError> {
        let seq = self.next_seq();
        let bytes = message.finish(seq);
        self.send_raw(&bytes)?;
        let mut out = Vec::new();
        loop {
            let datagram = self.recv_raw(MsgFlags::empty())?;
            for (header, payload) in split_messages(datagram)? {
                if header.seq != seq {
                    continue;
                }
                match header.message_type {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        parse_error(header.flags, payload)?;
                        return Ok(out);
                    }
                    t if t == message_type => out.push(payload.to_vec()),
                    _ => {}
                }
            }
        }
    }
}

impl AsFd for NetlinkSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

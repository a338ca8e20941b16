//! The netlink messages faultline speaks, encoded by hand because the usual crates do not model
//! them: tc qdiscs (netem, tbf, prio; add, delete, dump) built byte for byte the way iproute2's
//! `tc` builds them, NFQUEUE configuration, packets and verdicts, and a small blocking netlink
//! socket on nix.
//!
//! Boundaries: this crate knows wire formats and iproute2's argument syntax (`units`); it does not
//! know namespaces, pods or policy. A socket is opened in the network namespace of the calling
//! thread; entering the right one is the caller's job.
#![forbid(unsafe_code)]

pub mod message;
pub mod nfqueue;
pub mod psched;
pub mod socket;
pub mod tc;
pub mod units;

pub use message::{Attr, MessageBuilder, NetlinkError, parse_attrs};

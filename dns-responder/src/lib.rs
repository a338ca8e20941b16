//! The DNS responder of faultline's DNSChaos: one process per pod, in the pod's network
//! namespace, reached through a redirect of the pod's DNS traffic (the agent installs it). It
//! answers the names the experiment's patterns match as its action says (`error`: the lookup
//! fails with SERVFAIL; `random`: a random address) and relays every other query, unchanged, to
//! the pod's own resolvers from a socket carrying a mark the redirect skips.
//!
//! The spec types ([`DnsAction`], [`DomainPattern`], [`ResponderSpec`]) are shared with the
//! agent, which parses a request into them once and hands them to this process as arguments.
#![forbid(unsafe_code)]

pub mod answer;
pub mod pattern;
pub mod server;
pub mod spec;

pub use pattern::DomainPattern;
pub use spec::{DnsAction, ResponderSpec, SpecError};

//! HTTPChaos rules as Chaos Mesh's controller sends them in `ApplyHttpChaosRequest` (the tproxy
//! configuration: `rules` JSON, `proxy_ports`, `tls` JSON), parsed once into types that cannot
//! be invalid ([`HttpChaosSpec`]), and what a rule does to the head of a request or a response
//! ([`engine`]), and the proxy serving them in a pod ([`proxy`], the `faultline-http-proxy`
//! binary), controlled by one line per change: every experiment's rule set in force
//! ([`control`]). With `tls`, the proxy intercepts HTTPS ([`tls`]).
#![forbid(unsafe_code)]

pub mod control;
pub mod duration;
pub mod engine;
pub mod proxy;
pub mod spec;
pub mod tls;

pub use spec::{Action, BodyChange, HttpChaosSpec, Rule, Selector, SpecError, Target, TlsConfig};

//! faultline controller: the chaos custom resources (Chaos Mesh's field names), pod selection,
//! and the reconciler that drives the node agents over mTLS gRPC and guarantees recovery through
//! a finalizer.
//!
//! Boundaries: this crate talks to the Kubernetes API and to agents; it never touches a node
//! itself. What a fault does on a node is the agent's job.
#![forbid(unsafe_code)]

pub mod agent;
pub mod crd;
pub mod crdgen;
pub mod error;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod reconcile;
pub mod run;
pub mod schedule;
pub mod selection;
pub mod status_check;
pub mod webhook;
pub mod workflow;

//! The userspace netem path for kernels without sch_netem: iptables sends the pod's matching
//! packets to NFQUEUE queues that an agent thread serves with netem's own arithmetic.

pub mod model;
pub mod server;

pub use server::{QueueServer, QueueSet};

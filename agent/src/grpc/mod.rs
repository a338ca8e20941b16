//! The agent's gRPC surface: Chaos Mesh's `pb.ChaosDaemon` and our `faultline.agent.v1.Agent`,
//! served over mTLS on TCP and, for the local CLI, in plaintext on a unix socket.

mod agent_service;
mod chaos_daemon;
mod dns_rpc;
mod http_rpc;
mod listeners;
mod metrics_layer;
mod network_rpc;

pub use agent_service::AgentService;
pub use chaos_daemon::ChaosDaemonService;
pub use listeners::{Listeners, serve};
mod time_rpc;

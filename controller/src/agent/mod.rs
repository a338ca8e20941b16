//! Talking to the node agents: what the reconciler asks ([`AgentCall`]), what can go wrong
//! ([`AgentError`]), and [`Agents`], the one door to every node's agent. The real door
//! ([`pool::AgentPool`]) finds a node's agent through the EndpointSlices of the agents' headless
//! Service and keeps one mTLS channel per node; tests put a recording double in its place.

pub mod discovery;
mod dispatch;
pub mod pool;
pub mod tls;

use futures::future::BoxFuture;

use faultline_proto::agent::v1 as api;
use faultline_proto::pb;

/// One request to a node's agent.
#[derive(Clone, Debug, PartialEq)]
pub enum AgentCall {
    StartIo(api::StartIoExperimentRequest),
    StartNetwork(api::StartNetworkExperimentRequest),
    StartStress(api::StartStressExperimentRequest),
    StartDns(api::StartDnsExperimentRequest),
    StartHttp(api::StartHttpExperimentRequest),
    StartTime(api::StartTimeExperimentRequest),
    KillContainer(api::KillContainerRequest),
    /// Recovers one experiment by id; an id the agent does not know counts as recovered.
    Recover {
        id: String,
    },
    /// Chaos Mesh's ApplyIOChaos: with empty actions it recovers a container's volume, whatever
    /// the experiment id (used when the id was never recorded).
    ApplyIo(pb::ApplyIoChaosRequest),
    ListExperiments,
}

impl AgentCall {
    /// The RPC's name, for metrics and messages.
    pub fn method(&self) -> &'static str {
        match self {
            AgentCall::StartIo(_) => "StartIoExperiment",
            AgentCall::StartNetwork(_) => "StartNetworkExperiment",
            AgentCall::StartStress(_) => "StartStressExperiment",
            AgentCall::StartDns(_) => "StartDnsExperiment",
            AgentCall::StartHttp(_) => "StartHttpExperiment",
            AgentCall::StartTime(_) => "StartTimeExperiment",
            AgentCall::KillContainer(_) => "KillContainer",
            AgentCall::Recover { .. } => "Recover",
            AgentCall::ApplyIo(_) => "ApplyIOChaos",
            AgentCall::ListExperiments => "ListExperiments",
        }
    }
}

/// What an agent answered, reduced to what the records keep.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentReply {
    /// Experiment ids to recover by.
    pub ids: Vec<String>,
    /// The agent's plan or status text.
    pub detail: String,
    /// ListExperiments only.
    pub experiments: Vec<api::Experiment>,
}

/// Why a call to an agent failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AgentError {
    #[error("no ready agent on node {node} (EndpointSlices of service {service})")]
    NoAgent { node: String, service: String },
    #[error("cannot list the agents' EndpointSlices: {reason}")]
    Discovery { reason: String },
    #[error("agent on node {node} at {address} is unreachable: {reason}")]
    Unreachable {
        node: String,
        address: String,
        reason: String,
    },
    #[error("agent on node {node} at {address} did not answer {method} within {seconds}s")]
    Timeout {
        node: String,
        address: String,
        method: &'static str,
        seconds: u64,
    },
    #[error("agent on node {node} refused {method}: {code:?}: {message}")]
    Refused {
        node: String,
        method: &'static str,
        code: tonic::Code,
        message: String,
    },
}

impl AgentError {
    /// Whether trying again later may succeed (the agent is down or busy), as opposed to a
    /// request the agent will always refuse (bad argument, unknown container).
    pub fn is_transient(&self) -> bool {
        match self {
            AgentError::NoAgent { .. }
            | AgentError::Discovery { .. }
            | AgentError::Unreachable { .. }
            | AgentError::Timeout { .. } => true,
            AgentError::Refused { code, .. } => matches!(
                code,
                tonic::Code::Unavailable
                    | tonic::Code::Aborted
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::Unknown
                    | tonic::Code::Internal
            ),
        }
    }

    /// Whether the request may have reached the agent and taken effect (a timeout, or an
    /// answer that is not a clear refusal), so recovery must not assume nothing is in force.
    pub fn may_have_applied(&self) -> bool {
        match self {
            AgentError::Timeout { .. } => true,
            AgentError::Refused { code, .. } => {
                matches!(
                    code,
                    tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::DeadlineExceeded
                )
            }
            _ => false,
        }
    }

    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AgentError::NoAgent { .. } => "no_agent",
            AgentError::Discovery { .. } => "discovery",
            AgentError::Unreachable { .. } => "unreachable",
            AgentError::Timeout { .. } => "timeout",
            AgentError::Refused { .. } => "refused",
        }
    }
}

/// The door to every node's agent.
pub trait Agents: Send + Sync {
    fn call<'a>(
        &'a self,
        node: &'a str,
        call: AgentCall,
    ) -> BoxFuture<'a, Result<AgentReply, AgentError>>;
}

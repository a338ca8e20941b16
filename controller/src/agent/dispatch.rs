//! One [`AgentCall`] as its gRPC request on a channel.

use faultline_proto::agent::v1 as api;
use faultline_proto::agent::v1::agent_client::AgentClient;
use faultline_proto::pb::chaos_daemon_client::ChaosDaemonClient;
use tonic::transport::Channel;

use super::{AgentCall, AgentReply};

pub(super) async fn dispatch(
    channel: Channel,
    call: AgentCall,
) -> Result<AgentReply, tonic::Status> {
    let mut agent = AgentClient::new(channel.clone());
    let reply = match call {
        AgentCall::StartIo(request) => {
            let r = agent.start_io_experiment(request).await?.into_inner();
            AgentReply {
                ids: vec![r.id],
                detail: r.plan,
                ..Default::default()
            }
        }
        AgentCall::StartNetwork(request) => {
            let r = agent.start_network_experiment(request).await?.into_inner();
            AgentReply {
                ids: [r.id].into_iter().filter(|id| !id.is_empty()).collect(),
                detail: if r.status.is_empty() {
                    r.plan
                } else {
                    format!("{}; {}", r.plan, r.status)
                },
                ..Default::default()
            }
        }
        AgentCall::StartStress(request) => {
            let r = agent.start_stress_experiment(request).await?.into_inner();
            AgentReply {
                ids: r.instances.into_iter().map(|i| i.id).collect(),
                detail: r.plan,
                ..Default::default()
            }
        }
        AgentCall::StartTime(request) => {
            let r = agent.start_time_experiment(request).await?.into_inner();
            AgentReply {
                ids: vec![r.id],
                detail: r.plan,
                ..Default::default()
            }
        }
        AgentCall::StartDns(request) => {
            let r = agent.start_dns_experiment(request).await?.into_inner();
            AgentReply {
                ids: vec![r.id],
                detail: r.plan,
                ..Default::default()
            }
        }
        AgentCall::StartHttp(request) => {
            let r = agent.start_http_experiment(request).await?.into_inner();
            AgentReply {
                ids: [r.id].into_iter().filter(|id| !id.is_empty()).collect(),
                detail: r.plan,
                ..Default::default()
            }
        }
        AgentCall::KillContainer(request) => {
            let r = agent.kill_container(request).await?.into_inner();
            AgentReply {
                detail: r.plan,
                ..Default::default()
            }
        }
        AgentCall::Recover { id } => {
            match agent
                .recover(api::RecoverRequest {
                    id: id.clone(),
                    all: false,
                })
                .await
            {
                Ok(r) => {
                    let r = r.into_inner();
                    AgentReply {
                        ids: r.recovered,
                        detail: r.problems.join("; "),
                        ..Default::default()
                    }
                }
                // Already gone (its own duration ended, or the agent recovered it at start).
                Err(status) if status.code() == tonic::Code::NotFound => AgentReply {
                    detail: format!("{id} was not active"),
                    ..Default::default()
                },
                Err(status) => return Err(status),
            }
        }
        AgentCall::ApplyIo(request) => {
            let r = ChaosDaemonClient::new(channel)
                .apply_io_chaos(request)
                .await?
                .into_inner();
            AgentReply {
                ids: [r.instance_uid]
                    .into_iter()
                    .filter(|id| !id.is_empty())
                    .collect(),
                ..Default::default()
            }
        }
        AgentCall::ListExperiments => {
            let r = agent
                .list_experiments(api::ListExperimentsRequest {})
                .await?
                .into_inner();
            AgentReply {
                experiments: r.experiments,
                ..Default::default()
            }
        }
    };
    Ok(reply)
}

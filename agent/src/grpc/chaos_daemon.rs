use std::sync::Arc;

use faultline_proto::pb;
use faultline_proto::pb::chaos_daemon_server::ChaosDaemon;
use tonic::{Request, Response, Status};

use crate::container_runtime::Resolver;
use crate::error::AgentError;
use crate::io_chaos::{Applied, IoChaos};
use crate::journal::StressScope;
use crate::stress::{InstanceRef, StressChaos, StressError, StressRequest};

/// `pb.ChaosDaemon`, wire-compatible with Chaos Mesh's chaos-daemon.
#[derive(Clone, Debug)]
pub struct ChaosDaemonService {
    resolver: Resolver,
    io: Arc<IoChaos>,
    stress: Option<Arc<StressChaos>>,
    network: Option<Arc<crate::network::NetworkChaos>>,
}

impl ChaosDaemonService {
    pub fn new(resolver: Resolver, io: Arc<IoChaos>) -> Self {
        Self {
            resolver,
            io,
            stress: None,
            network: None,
        }
    }

    /// Serves SetTcs, FlushIPSets and SetIptablesChains.
    pub fn with_network(mut self, network: Arc<crate::network::NetworkChaos>) -> Self {
        self.network = Some(network);
        self
    }

    fn network(&self) -> Result<&Arc<crate::network::NetworkChaos>, Status> {
        self.network
            .as_ref()
            .ok_or_else(|| unimplemented("network chaos (not configured)"))
    }

    /// Serves ExecStressors and CancelStressors.
    pub fn with_stress(mut self, stress: Arc<StressChaos>) -> Self {
        self.stress = Some(stress);
        self
    }

    fn stress(&self) -> Result<&Arc<StressChaos>, Status> {
        self.stress.as_ref().ok_or_else(|| {
            unimplemented("ExecStressors/CancelStressors (stress chaos not configured)")
        })
    }
}

fn unimplemented(what: &'static str) -> Status {
    AgentError::Unimplemented(what).into()
}

#[tonic::async_trait]
impl ChaosDaemon for ChaosDaemonService {
    async fn set_tcs(&self, request: Request<pb::TcsRequest>) -> Result<Response<()>, Status> {
        super::network_rpc::set_tcs(self.network()?, request.into_inner()).await?;
        Ok(Response::new(()))
    }

    async fn flush_ip_sets(
        &self,
        request: Request<pb::IpSetsRequest>,
    ) -> Result<Response<()>, Status> {
        super::network_rpc::flush_ip_sets(self.network()?, request.into_inner()).await?;
        Ok(Response::new(()))
    }

    async fn set_iptables_chains(
        &self,
        request: Request<pb::IptablesChainsRequest>,
    ) -> Result<Response<()>, Status> {
        super::network_rpc::set_iptables_chains(self.network()?, request.into_inner()).await?;
        Ok(Response::new(()))
    }

    async fn set_time_offset(&self, _: Request<pb::TimeRequest>) -> Result<Response<()>, Status> {
        Err(unimplemented("SetTimeOffset (time chaos)"))
    }

    async fn recover_time_offset(
        &self,
        _: Request<pb::TimeRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("RecoverTimeOffset (time chaos)"))
    }

    /// SIGKILLs the container's processes through its runtime (the action field is not read,
    /// as in chaos-daemon).
    async fn container_kill(
        &self,
        request: Request<pb::ContainerRequest>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_inner();
        crate::container_kill::kill(&self.resolver, &request.container_id).await?;
        Ok(Response::new(()))
    }

    async fn container_get_pid(
        &self,
        request: Request<pb::ContainerRequest>,
    ) -> Result<Response<pb::ContainerResponse>, Status> {
        let request = request.into_inner();
        let pid = self
            .resolver
            .container_pid(&request.container_id)
            .await
            .map_err(AgentError::from)?;
        Ok(Response::new(pb::ContainerResponse { pid }))
    }

    /// Instances are reported as chaos-daemon does: the PID as a string, its start time (unix
    /// ms) and a uid (our experiment id).
    async fn exec_stressors(
        &self,
        request: Request<pb::ExecStressRequest>,
    ) -> Result<Response<pb::ExecStressResponse>, Status> {
        let request = request.into_inner();
        let scope = match pb::exec_stress_request::Scope::try_from(request.scope) {
            Ok(pb::exec_stress_request::Scope::Container) => StressScope::Container,
            Ok(pb::exec_stress_request::Scope::Pod) => StressScope::Pod,
            Err(_) => {
                return Err(AgentError::InvalidArgument {
                    field: "scope",
                    reason: format!("{} is not CONTAINER (0) or POD (1)", request.scope),
                }
                .into());
            }
        };
        let outcome = self
            .stress()?
            .exec(&StressRequest {
                container_id: &request.target,
                scope,
                cpu: &request.cpu_stressors,
                memory: &request.memory_stressors,
                oom_score_adj: request.oom_score_adj,
                duration: None,
            })
            .await?;
        let mut response = pb::ExecStressResponse::default();
        if let Some(cpu) = outcome.cpu {
            response.cpu_instance = cpu.pid.to_string();
            response.cpu_start_time = cpu.started_at_ms as i64;
            response.cpu_instance_uid = cpu.id;
        }
        if let Some(memory) = outcome.memory {
            response.memory_instance = memory.pid.to_string();
            response.memory_start_time = memory.started_at_ms as i64;
            response.memory_instance_uid = memory.id;
        }
        Ok(Response::new(response))
    }

    /// Kills the named instances; one that already ended (e.g. OOM-killed) is not an error, an
    /// unknown one is.
    async fn cancel_stressors(
        &self,
        request: Request<pb::CancelStressRequest>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_inner();
        let stress = self.stress()?;
        let instances = [
            InstanceRef::from_request(
                "cpuInstance",
                &request.cpu_instance,
                request.cpu_start_time,
                &request.cpu_instance_uid,
            ),
            InstanceRef::from_request(
                "memoryInstance",
                &request.memory_instance,
                request.memory_start_time,
                &request.memory_instance_uid,
            ),
        ]
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(AgentError::from)?;
        let instances: Vec<InstanceRef> = instances.into_iter().flatten().collect();
        if instances.is_empty() {
            return Err(AgentError::from(StressError::NothingToCancel).into());
        }
        for instance in &instances {
            stress.cancel(instance).await?;
        }
        Ok(Response::new(()))
    }

    async fn apply_io_chaos(
        &self,
        request: Request<pb::ApplyIoChaosRequest>,
    ) -> Result<Response<pb::ApplyIoChaosResponse>, Status> {
        let request = request.into_inner();
        let applied = self
            .io
            .apply(
                &request.container_id,
                &request.volume,
                &request.actions,
                None,
                true, // as Chaos Mesh does; pb.ChaosDaemon has no field to turn it off
            )
            .await?;
        let response = match applied {
            Applied::Started {
                id,
                injector_pid,
                started_at_ms,
                ..
            }
            | Applied::Updated {
                id,
                injector_pid,
                started_at_ms,
                ..
            } => pb::ApplyIoChaosResponse {
                instance: i64::from(injector_pid),
                start_time: started_at_ms as i64,
                instance_uid: id,
            },
            Applied::Recovered { .. } | Applied::NothingToRecover => {
                pb::ApplyIoChaosResponse::default()
            }
        };
        Ok(Response::new(response))
    }

    async fn apply_http_chaos(
        &self,
        _: Request<pb::ApplyHttpChaosRequest>,
    ) -> Result<Response<pb::ApplyHttpChaosResponse>, Status> {
        Err(unimplemented("ApplyHttpChaos (HTTP chaos)"))
    }

    async fn set_dns_server(
        &self,
        _: Request<pb::SetDnsServerRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("SetDNSServer (DNS chaos)"))
    }
}

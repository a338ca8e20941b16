use std::sync::Arc;

use faultline_proto::pb;
use faultline_proto::pb::chaos_daemon_server::ChaosDaemon;
use tonic::{Request, Response, Status};

use crate::container_runtime::Resolver;
use crate::error::AgentError;
use crate::io_chaos::{Applied, IoChaos};

/// `pb.ChaosDaemon`, wire-compatible with Chaos Mesh's chaos-daemon.
#[derive(Clone, Debug)]
pub struct ChaosDaemonService {
    resolver: Resolver,
    io: Arc<IoChaos>,
    network: Option<Arc<crate::network::NetworkChaos>>,
}

impl ChaosDaemonService {
    pub fn new(resolver: Resolver, io: Arc<IoChaos>) -> Self {
        Self {
            resolver,
            io,
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

    async fn container_kill(
        &self,
        _: Request<pb::ContainerRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("ContainerKill (pod chaos)"))
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

    async fn exec_stressors(
        &self,
        _: Request<pb::ExecStressRequest>,
    ) -> Result<Response<pb::ExecStressResponse>, Status> {
        Err(unimplemented("ExecStressors (stress chaos)"))
    }

    async fn cancel_stressors(
        &self,
        _: Request<pb::CancelStressRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unimplemented("CancelStressors (stress chaos)"))
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

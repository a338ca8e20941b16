use std::sync::Arc;

use faultline_proto::pb;
use faultline_proto::pb::chaos_daemon_server::ChaosDaemon;
use faultline_proto::pb::container_action::Action;
use tonic::{Request, Response, Status};

use crate::error::AgentError;
use crate::faults::Faults;
use crate::io_chaos::Applied;
use crate::io_spec::IoSpec;
use crate::stress::{InstanceRef, StressError, StressRequest, StressScope};

/// `pb.ChaosDaemon`, wire-compatible with Chaos Mesh's chaos-daemon.
#[derive(Clone, Debug)]
pub struct ChaosDaemonService {
    faults: Arc<Faults>,
}

impl ChaosDaemonService {
    pub fn new(faults: Arc<Faults>) -> Self {
        Self { faults }
    }
}

/// chaos-daemon serves ContainerKill only for action KILL and ContainerGetPid only for GETPID,
/// and refuses the other before touching the container. A request without `action` is refused
/// too (chaos-daemon cannot read one).
fn expect_action(
    request: &pb::ContainerRequest,
    expected: Action,
    rpc: &str,
) -> Result<(), AgentError> {
    let Some(action) = &request.action else {
        return Err(AgentError::InvalidArgument {
            field: "action",
            reason: format!(
                "missing: {rpc} takes action {} ({})",
                expected.as_str_name(),
                expected as i32
            ),
        });
    };
    if action.action == expected as i32 {
        return Ok(());
    }
    let given = Action::try_from(action.action)
        .map(|a| a.as_str_name().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    Err(AgentError::InvalidArgument {
        field: "action.action",
        reason: format!(
            "{given} ({}): {rpc} takes only action {} ({})",
            action.action,
            expected.as_str_name(),
            expected as i32
        ),
    })
}

/// The answer of an rpc whose Chaos Mesh kind faultline does not inject yet: UNIMPLEMENTED,
/// naming the kind and what faultline offers instead (docs/chaos-mesh.md has the table).
fn kind_not_yet(rpc: &'static str) -> Status {
    let (kind, instead) = match rpc {
        "ApplyBlockChaos" | "RecoverBlockChaos" => (
            "BlockChaos",
            "for slow or failing disk IO use IOChaos on the volume (ApplyIOChaos: latency, fault); nothing was changed",
        ),
        _ => (
            "JVMChaos",
            "faultline injects no bytecode rules; PodChaos container-kill, NetworkChaos, IOChaos and StressChaos act on a JVM from outside; nothing was changed",
        ),
    };
    AgentError::KindNotYet { rpc, kind, instead }.into()
}

#[tonic::async_trait]
impl ChaosDaemon for ChaosDaemonService {
    async fn set_tcs(&self, request: Request<pb::TcsRequest>) -> Result<Response<()>, Status> {
        super::network_rpc::set_tcs(&self.faults.network, request.into_inner()).await?;
        Ok(Response::new(()))
    }

    async fn flush_ip_sets(
        &self,
        request: Request<pb::IpSetsRequest>,
    ) -> Result<Response<()>, Status> {
        super::network_rpc::flush_ip_sets(&self.faults.network, request.into_inner()).await?;
        Ok(Response::new(()))
    }

    async fn set_iptables_chains(
        &self,
        request: Request<pb::IptablesChainsRequest>,
    ) -> Result<Response<()>, Status> {
        super::network_rpc::set_iptables_chains(&self.faults.network, request.into_inner()).await?;
        Ok(Response::new(()))
    }

    async fn set_time_offset(
        &self,
        request: Request<pb::TimeRequest>,
    ) -> Result<Response<()>, Status> {
        super::time_rpc::set_time_offset(&self.faults.time, request.into_inner()).await?;
        Ok(Response::new(()))
    }

    async fn recover_time_offset(
        &self,
        request: Request<pb::TimeRequest>,
    ) -> Result<Response<()>, Status> {
        super::time_rpc::recover_time_offset(&self.faults.time, request.into_inner()).await?;
        Ok(Response::new(()))
    }

    /// SIGKILLs the container's processes through its runtime; as in chaos-daemon, only for
    /// action KILL.
    async fn container_kill(
        &self,
        request: Request<pb::ContainerRequest>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_inner();
        expect_action(&request, Action::Kill, "ContainerKill")?;
        crate::container_kill::kill(&self.faults.resolver, &request.container_id).await?;
        Ok(Response::new(()))
    }

    async fn container_get_pid(
        &self,
        request: Request<pb::ContainerRequest>,
    ) -> Result<Response<pb::ContainerResponse>, Status> {
        let request = request.into_inner();
        expect_action(&request, Action::Getpid, "ContainerGetPid")?;
        let pid = self
            .faults
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
            .faults
            .stress
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
        let stress = &self.faults.stress;
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
            .faults
            .io
            .apply(
                IoSpec::parse(
                    &self.faults.resolver,
                    &request.container_id,
                    &request.volume,
                    &request.actions,
                )?,
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
        request: Request<pb::ApplyHttpChaosRequest>,
    ) -> Result<Response<pb::ApplyHttpChaosResponse>, Status> {
        let response =
            super::http_rpc::apply_http_chaos(&self.faults.http, request.into_inner()).await?;
        Ok(Response::new(response))
    }

    async fn set_dns_server(
        &self,
        request: Request<pb::SetDnsServerRequest>,
    ) -> Result<Response<()>, Status> {
        super::dns_rpc::set_dns_server(&self.faults.dns, request.into_inner()).await?;
        Ok(Response::new(()))
    }

    async fn apply_block_chaos(
        &self,
        _: Request<pb::ApplyBlockChaosRequest>,
    ) -> Result<Response<pb::ApplyBlockChaosResponse>, Status> {
        Err(kind_not_yet("ApplyBlockChaos"))
    }

    async fn recover_block_chaos(
        &self,
        _: Request<pb::RecoverBlockChaosRequest>,
    ) -> Result<Response<()>, Status> {
        Err(kind_not_yet("RecoverBlockChaos"))
    }

    async fn install_jvm_rules(
        &self,
        _: Request<pb::InstallJvmRulesRequest>,
    ) -> Result<Response<()>, Status> {
        Err(kind_not_yet("InstallJVMRules"))
    }

    async fn uninstall_jvm_rules(
        &self,
        _: Request<pb::UninstallJvmRulesRequest>,
    ) -> Result<Response<()>, Status> {
        Err(kind_not_yet("UninstallJVMRules"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(action: Option<i32>) -> pb::ContainerRequest {
        pb::ContainerRequest {
            action: action.map(|action| pb::ContainerAction { action }),
            container_id: "containerd://abc".into(),
        }
    }

    /// chaos-daemon: ContainerKill refuses an action other than KILL, ContainerGetPid one other
    /// than GETPID ("container action is X , not kill/getpid").
    #[test]
    fn each_container_rpc_takes_its_own_action() {
        assert!(expect_action(&request(Some(0)), Action::Kill, "ContainerKill").is_ok());
        assert!(expect_action(&request(Some(1)), Action::Getpid, "ContainerGetPid").is_ok());
        let err = expect_action(&request(Some(1)), Action::Kill, "ContainerKill").unwrap_err();
        assert_eq!(
            err.to_string(),
            "action.action: GETPID (1): ContainerKill takes only action KILL (0)"
        );
        let err = expect_action(&request(Some(0)), Action::Getpid, "ContainerGetPid").unwrap_err();
        assert_eq!(
            err.to_string(),
            "action.action: KILL (0): ContainerGetPid takes only action GETPID (1)"
        );
        let err = expect_action(&request(Some(7)), Action::Kill, "ContainerKill").unwrap_err();
        assert!(err.to_string().contains("unknown (7)"), "{err}");
        let err = expect_action(&request(None), Action::Kill, "ContainerKill").unwrap_err();
        assert_eq!(
            err.to_string(),
            "action: missing: ContainerKill takes action KILL (0)"
        );
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn kinds_not_injected_yet_say_what_to_use_instead() {
        for (rpc, kind, instead) in [
            ("ApplyBlockChaos", "BlockChaos", "IOChaos"),
            ("RecoverBlockChaos", "BlockChaos", "IOChaos"),
            ("InstallJVMRules", "JVMChaos", "container-kill"),
            ("UninstallJVMRules", "JVMChaos", "container-kill"),
        ] {
            let status = kind_not_yet(rpc);
            assert_eq!(status.code(), tonic::Code::Unimplemented, "{rpc}");
            assert!(
                status.message().starts_with(&format!("{rpc} ({kind})")),
                "{}",
                status.message()
            );
            assert!(status.message().contains(instead), "{}", status.message());
        }
    }
}

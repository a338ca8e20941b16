use std::sync::Arc;
use std::time::Duration;

use faultline_proto::agent::v1 as api;
use faultline_proto::agent::v1::agent_server::Agent;
use tonic::{Request, Response, Status};

use crate::container_fs;
use crate::error::AgentError;
use crate::fault_kinds::ExperimentView;
use crate::faults::Faults;
use crate::io_chaos::{Applied, validate_actions};
use crate::io_spec::IoSpec;
use crate::journal::FaultRecord;
use crate::stress::{StressRequest, StressScope};

/// `faultline.agent.v1.Agent`: experiments with a duration, listing, recovery, health.
#[derive(Clone, Debug)]
pub struct AgentService {
    faults: Arc<Faults>,
}

impl AgentService {
    pub fn new(faults: Arc<Faults>) -> Self {
        Self { faults }
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn start_io_experiment(
        &self,
        request: Request<api::StartIoExperimentRequest>,
    ) -> Result<Response<api::StartIoExperimentResponse>, Status> {
        let request = request.into_inner();
        let duration =
            (request.duration_ms > 0).then(|| Duration::from_millis(request.duration_ms));
        if request.dry_run {
            let plan = self.plan(&request).await?;
            return Ok(Response::new(plan));
        }
        if request.actions.trim().is_empty() || request.actions.trim() == "[]" {
            return Err(AgentError::InvalidArgument {
                field: "actions",
                reason: "no fault to inject (use Recover to end an experiment)".into(),
            }
            .into());
        }
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
                duration,
                !request.no_handover,
            )
            .await?;
        let response = match applied {
            Applied::Started {
                id,
                target_pid,
                injector_pid,
                handover,
                ..
            } => api::StartIoExperimentResponse {
                plan: format!(
                    "mounted the fault filesystem over {} in process {target_pid}'s mount namespace (injector pid {injector_pid}); handover: {}",
                    request.volume,
                    handover.as_deref().unwrap_or("off")
                ),
                id,
                target_pid,
            },
            Applied::Updated {
                id,
                target_pid,
                report,
                ..
            } => api::StartIoExperimentResponse {
                plan: format!(
                    "replaced the rules of the fault mount over {} (no remount){}",
                    request.volume,
                    report
                        .warnings
                        .iter()
                        .map(|w| format!("; WARNING: {w}"))
                        .collect::<String>()
                ),
                id,
                target_pid,
            },
            Applied::Recovered { id } => api::StartIoExperimentResponse {
                plan: "recovered".into(),
                id,
                target_pid: 0,
            },
            Applied::NothingToRecover => api::StartIoExperimentResponse::default(),
        };
        Ok(Response::new(response))
    }

    async fn list_experiments(
        &self,
        _: Request<api::ListExperimentsRequest>,
    ) -> Result<Response<api::ListExperimentsResponse>, Status> {
        let experiments = self
            .faults
            .registry
            .list()
            .await
            .into_iter()
            .map(experiment)
            .collect();
        Ok(Response::new(api::ListExperimentsResponse { experiments }))
    }

    async fn recover(
        &self,
        request: Request<api::RecoverRequest>,
    ) -> Result<Response<api::RecoverResponse>, Status> {
        let request = request.into_inner();
        let ids = match (request.all, request.id.is_empty()) {
            (true, true) => self.faults.registry.ids()?,
            (false, false) => vec![request.id],
            _ => {
                return Err(AgentError::InvalidArgument {
                    field: "id",
                    reason: "give either an experiment id or all, not both and not neither".into(),
                }
                .into());
            }
        };
        let single = ids.len() == 1 && !request.all;
        let mut response = api::RecoverResponse::default();
        for id in ids {
            let outcome = self.faults.registry.recover(&id).await;
            match outcome {
                Ok(()) => response.recovered.push(id),
                Err(err) if single => return Err(err.into()),
                Err(err) => response.problems.push(format!("{id}: {err}")),
            }
        }
        Ok(Response::new(response))
    }

    async fn start_stress_experiment(
        &self,
        request: Request<api::StartStressExperimentRequest>,
    ) -> Result<Response<api::StartStressExperimentResponse>, Status> {
        let request = request.into_inner();
        let stress = &self.faults.stress;
        let spec = StressRequest {
            container_id: &request.container_id,
            scope: if request.pod_scope {
                StressScope::Pod
            } else {
                StressScope::Container
            },
            cpu: &request.cpu_stressors,
            memory: &request.memory_stressors,
            oom_score_adj: request.oom_score_adj,
            duration: (request.duration_ms > 0).then(|| Duration::from_millis(request.duration_ms)),
        };
        if request.dry_run {
            let (target_pid, plan) = stress.plan(&spec).await?;
            return Ok(Response::new(api::StartStressExperimentResponse {
                instances: Vec::new(),
                plan,
                target_pid,
            }));
        }
        let outcome = stress.exec(&spec).await?;
        let instances: Vec<api::StressInstance> = [outcome.cpu, outcome.memory]
            .into_iter()
            .flatten()
            .map(|started| api::StressInstance {
                id: started.id,
                kind: started.kind.name().into(),
                pid: started.pid,
                cgroups: started
                    .cgroups
                    .iter()
                    .map(|c| c.display().to_string())
                    .collect(),
                summary: started.summary,
            })
            .collect();
        let plan = instances
            .iter()
            .map(|i| {
                format!(
                    "started {} (pid {}) in {}",
                    i.summary,
                    i.pid,
                    i.cgroups.join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        Ok(Response::new(api::StartStressExperimentResponse {
            instances,
            plan,
            target_pid: outcome.target_pid,
        }))
    }

    async fn start_http_experiment(
        &self,
        request: Request<api::StartHttpExperimentRequest>,
    ) -> Result<Response<api::StartHttpExperimentResponse>, Status> {
        let response = super::http_rpc::start(&self.faults.http, request.into_inner()).await?;
        Ok(Response::new(response))
    }

    async fn start_dns_experiment(
        &self,
        request: Request<api::StartDnsExperimentRequest>,
    ) -> Result<Response<api::StartDnsExperimentResponse>, Status> {
        let response = super::dns_rpc::start(&self.faults.dns, request.into_inner()).await?;
        Ok(Response::new(response))
    }

    async fn kill_container(
        &self,
        request: Request<api::KillContainerRequest>,
    ) -> Result<Response<api::KillContainerResponse>, Status> {
        let request = request.into_inner();
        let (kill, verb) = if request.dry_run {
            (
                crate::container_kill::plan(&self.faults.resolver, &request.container_id).await?,
                "would send",
            )
        } else {
            (
                crate::container_kill::kill(&self.faults.resolver, &request.container_id).await?,
                "sent",
            )
        };
        Ok(Response::new(api::KillContainerResponse {
            plan: format!(
                "{verb} {}: {} (init pid {})",
                kill.method.describe(),
                kill.container,
                kill.pid
            ),
            pid: kill.pid,
        }))
    }

    async fn start_network_experiment(
        &self,
        request: Request<api::StartNetworkExperimentRequest>,
    ) -> Result<Response<api::StartNetworkExperimentResponse>, Status> {
        let response =
            super::network_rpc::start_experiment(&self.faults.network, request.into_inner())
                .await?;
        Ok(Response::new(response))
    }

    async fn start_time_experiment(
        &self,
        request: Request<api::StartTimeExperimentRequest>,
    ) -> Result<Response<api::StartTimeExperimentResponse>, Status> {
        let response =
            super::time_rpc::start_experiment(&self.faults.time, request.into_inner()).await?;
        Ok(Response::new(response))
    }

    async fn health(
        &self,
        _: Request<api::HealthRequest>,
    ) -> Result<Response<api::HealthResponse>, Status> {
        let kernel = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Response::new(api::HealthResponse {
            serving: true,
            version: env!("CARGO_PKG_VERSION").into(),
            fuse_passthrough: kernel_at_least(&kernel, 6, 9),
            netem: netem_available(&kernel),
            kernel,
            active_experiments: self.faults.registry.ids()?.len() as u32,
        }))
    }
}

impl AgentService {
    async fn plan(
        &self,
        request: &api::StartIoExperimentRequest,
    ) -> Result<api::StartIoExperimentResponse, AgentError> {
        container_fs::validate_volume_path(&request.volume)?;
        let actions = validate_actions(&request.actions, &request.volume)?;
        let target_pid = self
            .faults
            .resolver
            .container_pid(&request.container_id)
            .await?;
        drop(container_fs::open_volume(target_pid, &request.volume)?);
        let count = actions
            .as_ref()
            .and_then(|a| a.wire().as_array().map(Vec::len))
            .unwrap_or(0);
        Ok(api::StartIoExperimentResponse {
            id: String::new(),
            target_pid,
            plan: format!(
                "would mount the fault filesystem over {} in the mount namespace of process {target_pid} ({}) with {count} action(s){}",
                request.volume,
                request.container_id,
                if request.duration_ms > 0 {
                    format!(", recovering after {} ms", request.duration_ms)
                } else {
                    String::new()
                }
            ),
        })
    }
}

fn kernel_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

fn netem_available(release: &str) -> bool {
    std::path::Path::new("/sys/module/sch_netem").exists()
        || ["ko", "ko.xz", "ko.zst", "ko.gz"].iter().any(|ext| {
            std::path::Path::new(&format!(
                "/lib/modules/{release}/kernel/net/sched/sch_netem.{ext}"
            ))
            .exists()
        })
}

/// An experiment of any kind, as the API lists it.
fn experiment(view: ExperimentView) -> api::Experiment {
    let record = view.record;
    api::Experiment {
        kind: view.kind.into(),
        id: record.id,
        container_id: record.container_id,
        target_pid: record.target.pid,
        since_unix_ms: record.started_at_ms as i64,
        deadline_unix_ms: record.deadline_ms.unwrap_or_default() as i64,
        rules: view.rules,
        volume: view.volume,
        injector_status: view.status,
        handover: (view.kind == crate::io_chaos::IoRecord::KIND)
            .then(|| handover_status(view.handover)),
    }
}

/// The handover part of an IO experiment's status.
fn handover_status(report: Option<handover::Report>) -> api::HandoverReport {
    let Some(report) = report else {
        return api::HandoverReport::default();
    };
    api::HandoverReport {
        enabled: true,
        scanned: report.scanned,
        stopped: report.stopped,
        fds: report.fds,
        cwds: report.cwds,
        mappings: report.mappings,
        skipped: report
            .skipped
            .into_iter()
            .map(|s| api::HandoverSkip {
                pid: s.pid,
                what: s.what,
                reason: s.reason,
            })
            .collect(),
        longest_stop_us: report.longest_stop_us,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn compares_kernel_releases() {
        assert!(super::kernel_at_least("6.18.44-fc", 6, 9));
        assert!(super::kernel_at_least("6.9.0", 6, 9));
        assert!(!super::kernel_at_least("6.8.12", 6, 9));
        assert!(!super::kernel_at_least("5.15", 6, 9));
        assert!(!super::kernel_at_least("", 6, 9));
    }
}

//! The gRPC edges of time chaos (pb.ChaosDaemon's SetTimeOffset/RecoverTimeOffset,
//! faultline.agent.v1's StartTimeExperiment): translation only, the pipeline is
//! `crate::time_chaos`; listing and recovery by id go through the registry like every kind.

use std::sync::Arc;

use faultline_proto::agent::v1 as api;
use faultline_proto::pb;

use crate::error::AgentError;
use crate::time_chaos::TimeChaos;
use crate::time_chaos::spec::{TimeSpec, id_of};

pub async fn set_time_offset(
    time: &Arc<TimeChaos>,
    request: pb::TimeRequest,
) -> Result<(), AgentError> {
    let spec = TimeSpec::from_chaos_daemon(&request)?;
    time.apply(spec).await.map(|_| ())
}

/// Chaos Mesh sends container_id, uid and pod_container_name only. Recovering an experiment
/// this agent does not have is no error (the controller retries recoveries).
pub async fn recover_time_offset(
    time: &Arc<TimeChaos>,
    request: pb::TimeRequest,
) -> Result<(), AgentError> {
    let id = id_of(&request.uid)?;
    match time.recover(&id).await {
        Err(AgentError::UnknownExperiment(_)) => Ok(()),
        other => other,
    }
}

pub async fn start_experiment(
    time: &Arc<TimeChaos>,
    request: api::StartTimeExperimentRequest,
) -> Result<api::StartTimeExperimentResponse, AgentError> {
    let spec = TimeSpec::from_agent(&request)?;
    let applied = time.apply(spec).await?;
    Ok(api::StartTimeExperimentResponse {
        id: applied.id,
        plan: applied.plan,
        target_pid: applied.target_pid,
    })
}

//! The network RPCs of both services, translated to [`NetworkChaos`]: Chaos Mesh's SetTcs,
//! FlushIPSets and SetIptablesChains (each replaces its part of the pod's state), and our
//! StartNetworkExperiment (the whole state at once, with a duration, a dry run and a netem path).

use std::sync::Arc;
use std::time::Duration;

use faultline_proto::agent::v1 as api;
use faultline_proto::pb;

use crate::error::AgentError;
use crate::network::spec::{self, NetworkSpec};
use crate::network::{NetemPath, NetworkChaos, NetworkError, Part, Target};

fn target(container_id: &str, pod_uid: &str) -> Target {
    Target {
        container_id: container_id.to_owned(),
        pod_uid: pod_uid.to_owned(),
    }
}

pub async fn set_tcs(
    network: &Arc<NetworkChaos>,
    request: pb::TcsRequest,
) -> Result<(), AgentError> {
    let tcs = spec::tcs_from_pb(&request.tcs)?;
    network
        .apply(
            &target(&request.container_id, &request.pod_uid),
            Part::Tcs(tcs),
            None,
            None,
        )
        .await?;
    Ok(())
}

pub async fn flush_ip_sets(
    network: &Arc<NetworkChaos>,
    request: pb::IpSetsRequest,
) -> Result<(), AgentError> {
    let sets = spec::ipsets_from_pb(&request.ipsets)?;
    network
        .apply(
            &target(&request.container_id, &request.pod_uid),
            Part::IpSets(sets),
            None,
            None,
        )
        .await?;
    Ok(())
}

pub async fn set_iptables_chains(
    network: &Arc<NetworkChaos>,
    request: pb::IptablesChainsRequest,
) -> Result<(), AgentError> {
    let chains = spec::chains_from_pb(&request.chains)?;
    network
        .apply(
            &target(&request.container_id, &request.pod_uid),
            Part::Chains(chains),
            None,
            None,
        )
        .await?;
    Ok(())
}

pub async fn start_experiment(
    network: &Arc<NetworkChaos>,
    request: api::StartNetworkExperimentRequest,
) -> Result<api::StartNetworkExperimentResponse, AgentError> {
    let spec = NetworkSpec {
        tcs: spec::tcs_with_ports(&request.tcs, &request.tc_ports)?,
        ipsets: spec::ipsets_from_pb(&request.ipsets)?,
        chains: spec::chains_from_pb(&request.chains)?,
    };
    let path = if request.netem_path.is_empty() {
        None
    } else {
        Some(request.netem_path.parse::<NetemPath>().map_err(|reason| {
            NetworkError::InvalidArgument {
                field: "netem_path".into(),
                reason,
            }
        })?)
    };
    let target = target(&request.container_id, &request.pod_uid);
    if request.dry_run {
        let plan = network.plan(&target, &spec, path).await?;
        return Ok(api::StartNetworkExperimentResponse {
            id: String::new(),
            plan: format!("{}: {}", plan.status, plan.summary),
            target_pid: plan.target_pid,
            status: String::new(),
        });
    }
    let duration = (request.duration_ms > 0).then(|| Duration::from_millis(request.duration_ms));
    let applied = network
        .apply(&target, Part::All(spec), path, duration)
        .await?;
    Ok(api::StartNetworkExperimentResponse {
        plan: if applied.id.is_empty() {
            "no network fault in force".into()
        } else {
            format!(
                "in force in the network namespace of process {}: {}",
                applied.target_pid, applied.summary
            )
        },
        id: applied.id,
        target_pid: applied.target_pid,
        status: applied.status,
    })
}

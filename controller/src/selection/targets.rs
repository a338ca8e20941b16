//! An experiment's targets from its plan: the pods its selector and mode choose (and, for
//! NetworkChaos, its `target` pods under the selector key `.Target`), as records. The reconciler
//! and `plan` both call [`choose_targets`].

use k8s_openapi::api::core::v1::Pod;
use rand::Rng;

use super::{ClusterView, Scoping, SelectError, pod_cidrs, records, select};
use crate::crd::TargetRecord;
use crate::plan::{Action, Plan, Scope, TARGET_KEY};

/// What selection found.
#[derive(Clone, Debug, Default)]
pub struct Chosen {
    /// One per target, `.` first, then `.Target`.
    pub records: Vec<TargetRecord>,
    /// NetworkChaos: the `.Target` pods' CIDRs.
    pub target_cidrs: Vec<String>,
    /// NetworkChaos: the selected pods' CIDRs.
    pub source_cidrs: Vec<String>,
    /// Which selector matched nothing (Chaos Mesh fails the selection then): `.` or `.Target`.
    pub no_match: Option<&'static str>,
}

pub async fn choose_targets<R: Rng>(
    view: &dyn ClusterView,
    plan: &Plan,
    scoping: &Scoping,
    rng: &mut R,
) -> Result<Chosen, SelectError> {
    let selection = &plan.selection;
    let pods: Vec<Pod> = select(view, &selection.selector, selection.mode, scoping, rng).await?;
    let mut chosen = Chosen {
        records: records(&pods, &selection.scope, "."),
        source_cidrs: pod_cidrs(&pods),
        ..Chosen::default()
    };
    if pods.is_empty() {
        chosen.no_match = Some(".");
        return Ok(chosen);
    }
    if let Action::Network(network) = &plan.action
        && let Some((selector, mode)) = &network.target
    {
        let targets = select(view, selector, *mode, scoping, rng).await?;
        if targets.is_empty() {
            chosen.no_match = Some(TARGET_KEY);
        }
        chosen.target_cidrs = pod_cidrs(&targets);
        chosen
            .records
            .extend(records(&targets, &Scope::Pod, TARGET_KEY));
    }
    Ok(chosen)
}

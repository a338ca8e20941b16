//! What an experiment does, parsed once from its spec into types that cannot be invalid: the
//! selection (selector, mode, containers), the duration, and the per-target action. Everything
//! a spec asks that faultline cannot do is refused here, naming the field.

mod dns;
mod duration;
pub mod http;
mod invalid;
mod io;
mod mode;
mod network;
mod pod;
pub mod preview;
mod stress;
mod time;

use std::time::Duration;

pub use duration::parse_go_duration;
pub use invalid::{FieldProblem, InvalidSpec};
pub use mode::Mode;
pub use network::{
    External, NetworkFault, NetworkPlan, Peers, PodNetworkState, TARGET_KEY, network_request,
};

use crate::crd::{
    ContainerSelector, DNSChaos, HTTPChaos, IOChaos, NetworkChaos, PodChaos, PodSelector,
    PodSelectorSpec, StressChaos, TimeChaos,
};

/// A validated experiment.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub selection: Selection,
    /// None: until the resource is deleted.
    pub duration: Option<Duration>,
    pub action: Action,
}

/// Which targets: pods, or containers of pods.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    /// With the namespaces defaulted to the experiment's own.
    pub selector: PodSelectorSpec,
    pub mode: Mode,
    pub scope: Scope,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Scope {
    /// One target per pod.
    Pod,
    /// One target per named container of each pod; no names: the pod's first container.
    Containers(Vec<String>),
}

/// What is done to each target.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Chaos Mesh IOChaos actions (JSON, checked with io-rules) under a volume.
    Io {
        volume: String,
        actions: String,
    },
    Network(Box<NetworkPlan>),
    /// stress-ng style option strings for the agent.
    Stress {
        cpu: String,
        memory: String,
        oom_score_adj: i32,
    },
    /// The agent's DNS experiment: a responder in the pod answering `patterns` per `action`.
    Dns {
        action: String,
        patterns: Vec<String>,
    },
    /// The agent's HTTP experiment: a proxy in the pod on `port` with `rules` (Chaos Mesh's
    /// tproxy JSON), intercepting HTTPS with the material of `tls` (read from its Secret when
    /// injecting; its namespace filled in).
    Http {
        rules: String,
        port: u16,
        tls: Option<crate::crd::HttpChaosTls>,
    },
    /// A signed Go duration and the clock names, for the agent's StartTimeExperiment.
    Time {
        offset: String,
        clock_ids: Vec<String>,
    },
    PodKill {
        grace_period_seconds: i64,
    },
    PodFailure,
    ContainerKill,
}

impl Action {
    /// Whether the action acts once and leaves nothing to recover.
    pub fn is_one_shot(&self) -> bool {
        matches!(self, Action::PodKill { .. } | Action::ContainerKill)
    }
}

/// A chaos resource whose spec can be planned.
pub trait Plannable {
    /// Validates the spec. Selectors default to the resource's own namespace.
    fn plan(&self) -> Result<Plan, InvalidSpec>;
}

fn namespace_of(meta: &kube::api::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

impl Plannable for IOChaos {
    fn plan(&self) -> Result<Plan, InvalidSpec> {
        io::plan(&self.spec, namespace_of(&self.metadata))
    }
}

impl Plannable for NetworkChaos {
    fn plan(&self) -> Result<Plan, InvalidSpec> {
        let name = self.metadata.name.as_deref().unwrap_or_default();
        network::plan(&self.spec, namespace_of(&self.metadata), name)
    }
}

impl Plannable for StressChaos {
    fn plan(&self) -> Result<Plan, InvalidSpec> {
        stress::plan(&self.spec, namespace_of(&self.metadata))
    }
}

impl Plannable for DNSChaos {
    fn plan(&self) -> Result<Plan, InvalidSpec> {
        dns::plan(&self.spec, namespace_of(&self.metadata))
    }
}

impl Plannable for HTTPChaos {
    fn plan(&self) -> Result<Plan, InvalidSpec> {
        http::plan(&self.spec, namespace_of(&self.metadata))
    }
}

impl Plannable for TimeChaos {
    fn plan(&self) -> Result<Plan, InvalidSpec> {
        time::plan(&self.spec, namespace_of(&self.metadata))
    }
}

impl Plannable for PodChaos {
    fn plan(&self) -> Result<Plan, InvalidSpec> {
        pod::plan(&self.spec, namespace_of(&self.metadata))
    }
}

/// The parts every kind shares: selector, mode, value, duration, remoteCluster.
fn common(
    problems: &mut InvalidSpec,
    pod_selector: &PodSelector,
    field_prefix: &str,
    namespace: &str,
) -> Option<(PodSelectorSpec, Mode)> {
    let mut selector = pod_selector.selector.clone();
    if selector.namespaces.is_empty() && selector.pods.is_empty() {
        selector.namespaces.push(namespace.to_owned());
    }
    for (i, req) in selector.expression_selectors.iter().enumerate() {
        use crate::crd::LabelOperator::*;
        let field = format!("{field_prefix}selector.expressionSelectors[{i}].values");
        match req.operator {
            In | NotIn if req.values.is_empty() => {
                problems.invalid(field, "In and NotIn need at least one value")
            }
            Exists | DoesNotExist if !req.values.is_empty() => {
                problems.invalid(field, "Exists and DoesNotExist take no values")
            }
            _ => {}
        }
    }
    for (i, phase) in selector.pod_phase_selectors.iter().enumerate() {
        let name = phase.trim().strip_prefix('!').unwrap_or(phase.trim());
        let label_key = !name.is_empty()
            && name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !label_key {
            problems.invalid(
                format!("{field_prefix}selector.podPhaseSelectors[{i}]"),
                format!(
                    "{phase:?}: a pod phase (Pending, Running, Succeeded, Failed, Unknown) or its exclusion (!Running)"
                ),
            );
        }
    }
    match Mode::parse(pod_selector.mode, pod_selector.value.as_deref()) {
        Ok(mode) => Some((selector, mode)),
        Err(problem) => {
            problems.invalid(format!("{field_prefix}value"), problem);
            None
        }
    }
}

fn duration(problems: &mut InvalidSpec, duration: Option<&str>) -> Option<Duration> {
    // Chaos Mesh (Duration.Validate): an empty duration is allowed and means none.
    let text = duration.filter(|d| !d.trim().is_empty())?;
    match parse_go_duration(text) {
        Ok(d) => Some(d),
        Err(problem) => {
            problems.invalid("duration", problem);
            None
        }
    }
}

fn remote_cluster(problems: &mut InvalidSpec, remote: Option<&str>) {
    if remote.is_some_and(|r| !r.is_empty()) {
        problems.unsupported(
            "remoteCluster",
            "remote clusters are not supported; apply the experiment in the target cluster",
        );
    }
}

fn container_selection(
    problems: &mut InvalidSpec,
    cs: &ContainerSelector,
    namespace: &str,
) -> Option<(PodSelectorSpec, Mode)> {
    for (i, name) in cs.container_names.iter().enumerate() {
        if name.is_empty() {
            problems.invalid(format!("containerNames[{i}]"), "empty container name");
        }
    }
    common(problems, &cs.pod_selector, "", namespace)
}

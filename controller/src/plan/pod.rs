//! PodChaos spec -> pod-kill (delete with a grace period), pod-failure (images swapped for a
//! pause image, restored at recovery) or container-kill (through the agent).

use super::{Action, InvalidSpec, Plan, Scope, Selection};
use crate::crd::{PodAction, PodChaosSpec};

pub(super) fn plan(spec: &PodChaosSpec, namespace: &str) -> Result<Plan, InvalidSpec> {
    let mut problems = InvalidSpec::default();
    super::remote_cluster(&mut problems, spec.remote_cluster.as_deref());
    let selection = super::container_selection(&mut problems, &spec.container_selector, namespace);
    let duration = super::duration(&mut problems, spec.duration.as_deref());
    if spec.grace_period < 0 {
        problems.invalid(
            "gracePeriod",
            format!("{} is negative (seconds, 0 = at once)", spec.grace_period),
        );
    }
    let names = &spec.container_selector.container_names;
    let (scope, action) = match spec.action {
        PodAction::PodKill => (
            Scope::Pod,
            Action::PodKill {
                grace_period_seconds: spec.grace_period,
            },
        ),
        PodAction::PodFailure => (Scope::Pod, Action::PodFailure),
        PodAction::ContainerKill => {
            if names.is_empty() {
                problems.invalid(
                    "containerNames",
                    "container-kill needs the names of the containers to kill",
                );
            }
            (Scope::Containers(names.clone()), Action::ContainerKill)
        }
    };
    if spec.action != PodAction::ContainerKill && !names.is_empty() {
        problems.invalid(
            "containerNames",
            format!(
                "{} acts on whole pods; containerNames is for container-kill",
                spec.action.as_str()
            ),
        );
    }
    if spec.action != PodAction::PodFailure && spec.duration.is_some() {
        problems.invalid(
            "duration",
            format!(
                "{} acts once; a duration is for pod-failure",
                spec.action.as_str()
            ),
        );
    }
    let plan = selection.map(|(selector, mode)| Plan {
        selection: Selection {
            selector,
            mode,
            scope,
        },
        duration,
        action,
    });
    problems.finish(plan)
}

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
    // Chaos Mesh accepts containerNames on pod-kill and pod-failure (its selector for them is
    // the pod selector, the names are ignored) and a duration on the one-shot actions (pod-kill,
    // container-kill act once; the duration only bounds the experiment's life).
    let duration = if spec.action == PodAction::PodFailure {
        duration
    } else {
        None
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::PodChaosSpec;

    fn spec(yaml: &str) -> PodChaosSpec {
        yaml_serde::from_str(yaml).expect("a PodChaos spec")
    }

    /// Chaos Mesh (api/v1alpha1/podchaos_webhook.go): the only PodChaos rule is that
    /// container-kill needs containerNames; a duration on pod-kill or container-kill and
    /// containerNames on pod-kill or pod-failure are accepted (and the names ignored:
    /// GetSelectorSpecs uses the pod selector for those actions).
    #[test]
    fn accepts_what_chaos_mesh_accepts() {
        let kill = plan(
            &spec(
                "{action: pod-kill, mode: one, selector: {}, duration: 30s, containerNames: [app]}",
            ),
            "d",
        )
        .expect("pod-kill with a duration and containerNames");
        assert_eq!(kill.selection.scope, Scope::Pod);
        let failure = plan(
            &spec("{action: pod-failure, mode: one, selector: {}, duration: 30s, containerNames: [app]}"),
            "d",
        )
        .expect("pod-failure with containerNames");
        assert_eq!(failure.selection.scope, Scope::Pod);
        assert!(failure.duration.is_some());
        plan(
            &spec("{action: container-kill, mode: one, selector: {}, duration: 30s, containerNames: [app]}"),
            "d",
        )
        .expect("container-kill with a duration");
        let refused = plan(
            &spec("{action: container-kill, mode: one, selector: {}}"),
            "d",
        )
        .expect_err("container-kill without names");
        assert_eq!(refused.problems[0].field, "containerNames");
    }
}

#[cfg(test)]
mod duration_tests {
    use super::*;

    /// Chaos Mesh (Duration.Validate): `duration: ""` is allowed (no duration); one that does
    /// not parse is refused, naming the field.
    #[test]
    fn empty_duration_is_none() {
        let spec: PodChaosSpec =
            yaml_serde::from_str("{action: pod-failure, mode: one, selector: {}, duration: ''}")
                .expect("spec");
        assert_eq!(plan(&spec, "d").expect("accepted").duration, None);
        let spec: PodChaosSpec =
            yaml_serde::from_str("{action: pod-failure, mode: one, selector: {}, duration: soon}")
                .expect("spec");
        assert_eq!(
            plan(&spec, "d").expect_err("refused").problems[0].field,
            "duration"
        );
    }
}

//! TimeChaos spec -> the agent's StartTimeExperiment fields: the offset as a signed Go duration
//! and the clock names, both checked here with the agent's own parsers (timeshift).

use timeshift::{ClockMask, Offset};

use super::{Action, InvalidSpec, Plan, Scope, Selection};
use crate::crd::TimeChaosSpec;

pub(super) fn plan(spec: &TimeChaosSpec, namespace: &str) -> Result<Plan, InvalidSpec> {
    let mut problems = InvalidSpec::default();
    super::remote_cluster(&mut problems, spec.remote_cluster.as_deref());
    let selection = super::container_selection(&mut problems, &spec.container_selector, namespace);
    let duration = super::duration(&mut problems, spec.duration.as_deref());
    if let Err(e) = Offset::parse_go(&spec.time_offset) {
        problems.invalid("timeOffset", e.to_string());
    }
    let mask = match ClockMask::from_names(&spec.clock_ids) {
        Ok(mask) => mask,
        Err(e) => {
            problems.invalid("clockIds", e.to_string());
            ClockMask::REALTIME
        }
    };
    let plan = selection.map(|(selector, mode)| Plan {
        selection: Selection {
            selector,
            mode,
            scope: Scope::Containers(spec.container_selector.container_names.clone()),
        },
        duration,
        action: Action::Time {
            offset: spec.time_offset.trim().to_owned(),
            clock_ids: mask.names().iter().map(|n| (*n).to_owned()).collect(),
        },
    });
    problems.finish(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(value: serde_json::Value) -> TimeChaosSpec {
        serde_json::from_value(value).expect("spec")
    }

    /// Chaos Mesh: clockIds default to CLOCK_REALTIME; timeOffset is a Go duration, signed.
    #[test]
    fn defaults_and_chaos_mesh_fields() {
        let plan = plan(
            &spec(serde_json::json!({"mode": "all", "selector": {}, "timeOffset": "-5m"})),
            "d",
        )
        .expect("valid");
        assert_eq!(
            plan.action,
            Action::Time {
                offset: "-5m".into(),
                clock_ids: vec!["CLOCK_REALTIME".into()]
            }
        );
        let plan = plan_of(serde_json::json!({
            "mode": "one", "selector": {"labelSelectors": {"app": "web"}},
            "timeOffset": "24h", "clockIds": ["CLOCK_MONOTONIC", "CLOCK_REALTIME"],
            "containerNames": ["app"], "duration": "30s"
        }));
        assert_eq!(
            plan.action,
            Action::Time {
                offset: "24h".into(),
                clock_ids: vec!["CLOCK_REALTIME".into(), "CLOCK_MONOTONIC".into()]
            }
        );
        assert_eq!(plan.duration, Some(std::time::Duration::from_secs(30)));
        assert_eq!(plan.selection.scope, Scope::Containers(vec!["app".into()]));
    }

    fn plan_of(value: serde_json::Value) -> Plan {
        plan(&spec(value), "d").expect("valid")
    }

    #[test]
    fn bad_fields_are_named() {
        let bad = plan(
            &spec(serde_json::json!({
                "mode": "all", "selector": {},
                "timeOffset": "1d", "clockIds": ["CLOCK_TAI"]
            })),
            "d",
        )
        .unwrap_err()
        .to_string();
        assert!(bad.contains("timeOffset"), "{bad}");
        assert!(bad.contains("clockIds"), "{bad}");
        assert!(bad.contains("CLOCK_TAI"), "{bad}");
    }
}

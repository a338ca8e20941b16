//! The experiment's conditions, computed from its records: AllInjected, AllRecovered, Paused.

use crate::crd::{
    ChaosStatus, ConditionStatus, ConditionType, DesiredPhase, TargetPhase, TargetRecord,
};

/// Whether a fault may be in force on the target.
pub fn in_force(rec: &TargetRecord) -> bool {
    rec.state == TargetPhase::Injected || rec.uncertain
}

fn summary(records: &[TargetRecord]) -> String {
    let count = |phase| records.iter().filter(|r| r.state == phase).count();
    let mut text = format!(
        "{} injected, {} recovered, {} failed, {} pending of {}",
        count(TargetPhase::Injected),
        count(TargetPhase::Recovered),
        count(TargetPhase::Failed),
        count(TargetPhase::Pending),
        records.len()
    );
    for r in records
        .iter()
        .filter(|r| r.state == TargetPhase::Failed)
        .take(3)
    {
        text.push_str(&format!(
            "; {}: {}",
            r.id,
            r.message.as_deref().unwrap_or("failed")
        ));
    }
    text
}

pub fn update(status: &mut ChaosStatus, paused: bool, expired: bool, now: &str) {
    let records = status.experiment.container_records.clone();
    let desired = status.experiment.desired_phase.unwrap_or(DesiredPhase::Run);
    let live: Vec<&TargetRecord> = records.iter().filter(|r| !r.gone).collect();
    let text = summary(&records);
    use ConditionStatus::{False, True};
    use ConditionType::*;

    let all_injected = desired == DesiredPhase::Run
        && !live.is_empty()
        && live.iter().all(|r| r.state == TargetPhase::Injected);
    let reason = if all_injected {
        "AllInjected"
    } else if paused {
        "Paused"
    } else if expired {
        "DurationOver"
    } else if records.iter().any(|r| r.state == TargetPhase::Failed) {
        "InjectionFailed"
    } else {
        "Injecting"
    };
    status.set_condition(
        AllInjected,
        if all_injected { True } else { False },
        reason,
        text.clone(),
        now,
    );

    let all_recovered = desired == DesiredPhase::Stop && !records.iter().any(in_force);
    let reason = match (all_recovered, desired) {
        (true, _) => "AllRecovered",
        (false, DesiredPhase::Stop) => "RecoveryFailed",
        (false, DesiredPhase::Run) => "Running",
    };
    status.set_condition(
        AllRecovered,
        if all_recovered { True } else { False },
        reason,
        text,
        now,
    );

    let (paused_status, reason) = if paused {
        (True, "PauseAnnotation")
    } else {
        (False, "NotPaused")
    };
    status.set_condition(Paused, paused_status, reason, "", now);
}

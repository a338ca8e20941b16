//! The StatusCheck reconciler (Chaos Mesh's controllers/statuscheck, driven by the context's
//! clock instead of a ticker). Each pass: a refused spec gets an event and nothing else; a
//! completed check is left alone; otherwise the start time is recorded, and once
//! `intervalSeconds` have passed since the last request (or the start) one request is made and
//! its outcome recorded (the latest `recordsHistoryLimit` kept); then the conditions are worked
//! out as Chaos Mesh does: DurationExceed (past start + `duration`), FailureThresholdExceed
//! (`failureThreshold` failures in a row), SuccessThresholdExceed (`successThreshold` successes
//! in a row), Completed (the first of those, success counting only in Synchronous mode).

pub mod probe;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::crd::status_check_conditions::{
    COMPLETED, DURATION_EXCEED, FAILURE_THRESHOLD_EXCEED, SUCCESS_THRESHOLD_EXCEED,
};
use crate::crd::{
    StatusCheck, StatusCheckCondition, StatusCheckMode, StatusCheckRecord, StatusCheckSpec,
    StatusCheckStatus,
};
use crate::error::{Error, Result};
use crate::reconcile::{Context, rfc3339};

pub async fn reconcile(obj: Arc<StatusCheck>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciled("StatusCheck");
    let namespace = obj.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<StatusCheck> = Api::namespaced(ctx.client.clone(), &namespace);
    apply(&api, obj.as_ref(), &ctx).await
}

pub fn error_policy(obj: Arc<StatusCheck>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(kind = "StatusCheck", name = %obj.name_any(), error = %error, "reconcile failed");
    ctx.metrics.failed("StatusCheck", error.metric_label());
    Action::requeue(ctx.settings.backoff_base.max(Duration::from_secs(1)))
}

async fn publish(ctx: &Context, obj: &StatusCheck, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "StatusCheck".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(reason, error = %e, "cannot publish an event");
    }
}

fn at(t: &str) -> Option<Timestamp> {
    t.parse().ok()
}

fn plus(t: Timestamp, d: Duration) -> Timestamp {
    let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2);
    Timestamp::from_millisecond(t.as_millisecond().saturating_add(ms)).unwrap_or(Timestamp::MAX)
}

fn secs(n: i64) -> Duration {
    Duration::from_secs(u64::try_from(n).unwrap_or(1).max(1))
}

async fn apply(api: &Api<StatusCheck>, obj: &StatusCheck, ctx: &Context) -> Result<Action> {
    let spec = &obj.spec;
    let problems = spec.problems("spec.");
    if !problems.is_empty() {
        let note = problems
            .iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect::<Vec<_>>()
            .join("; ");
        publish(ctx, obj, EventType::Warning, "InvalidSpec", note).await;
        return Ok(Action::await_change());
    }
    let before = obj.status.clone().unwrap_or_default();
    if before.completed() {
        return Ok(Action::await_change());
    }
    let now = ctx.clock.now();
    let mut status = before.clone();
    let start = match status.start_time.as_deref().and_then(at) {
        Some(start) => start,
        None => {
            status.start_time = Some(rfc3339(now));
            now
        }
    };
    let interval = secs(spec.interval_seconds);
    let last = status
        .records
        .last()
        .and_then(|r| at(&r.start_time))
        .unwrap_or(start);
    let duration = spec
        .duration
        .as_deref()
        .and_then(|d| crate::plan::parse_go_duration(d).ok());
    let over = duration.is_some_and(|d| plus(start, d) < now);
    if !over && now >= plus(last, interval) {
        let Some(http) = &spec.http else {
            return Ok(Action::await_change());
        };
        let outcome = probe::probe(http, secs(spec.timeout_seconds)).await;
        let (text, message) = match outcome {
            Ok(()) => ("Success", None),
            Err(message) => {
                publish(
                    ctx,
                    obj,
                    EventType::Warning,
                    "StatusCheckExecutionFailed",
                    message.clone(),
                )
                .await;
                ("Failure", Some(message))
            }
        };
        status.count += 1;
        status.records.push(StatusCheckRecord {
            start_time: rfc3339(now),
            outcome: text.into(),
            message,
        });
        let limit = usize::try_from(spec.records_history_limit)
            .unwrap_or(1)
            .max(1);
        let excess = status.records.len().saturating_sub(limit);
        status.records.drain(..excess);
    }
    conditions(spec, &mut status, over, &rfc3339(now));
    if status.completed() {
        status.completion_time = Some(rfc3339(now));
        let reason = status
            .conditions
            .iter()
            .find(|c| c.type_ == COMPLETED)
            .map(|c| c.reason.clone())
            .unwrap_or_default();
        publish(ctx, obj, EventType::Normal, "StatusCheckCompleted", reason).await;
    }
    if status != before {
        api.patch_status(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await?;
    }
    if status.completed() {
        return Ok(Action::await_change());
    }
    let last = status
        .records
        .last()
        .and_then(|r| at(&r.start_time))
        .unwrap_or(start);
    let mut wake = plus(last, interval);
    if let Some(d) = duration {
        // Chaos Mesh: over strictly after start + duration.
        wake = wake.min(plus(plus(start, d), Duration::from_secs(1)));
    }
    let ms = u64::try_from(wake.as_millisecond() - now.as_millisecond()).unwrap_or(0);
    Ok(Action::requeue(
        Duration::from_millis(ms).max(Duration::from_secs(1)),
    ))
}

/// Whether the latest records are `threshold` of `outcome` in a row (Chaos Mesh's
/// isThresholdExceed).
pub fn threshold_exceeded(records: &[StatusCheckRecord], outcome: &str, threshold: i64) -> bool {
    let run = records
        .iter()
        .rev()
        .take_while(|r| r.outcome == outcome)
        .count();
    i64::try_from(run).unwrap_or(i64::MAX) >= threshold.max(1)
}

/// Chaos Mesh's conditions, in its order: duration, failure threshold, success threshold
/// (Synchronous only) complete the check.
pub fn conditions(spec: &StatusCheckSpec, status: &mut StatusCheckStatus, over: bool, now: &str) {
    let failed = threshold_exceeded(&status.records, "Failure", spec.failure_threshold);
    let succeeded = threshold_exceeded(&status.records, "Success", spec.success_threshold);
    set(status, DURATION_EXCEED, over, "", now);
    set(status, FAILURE_THRESHOLD_EXCEED, failed, "", now);
    set(status, SUCCESS_THRESHOLD_EXCEED, succeeded, "", now);
    let completed = if over {
        Some("StatusCheckDurationExceed")
    } else if failed {
        Some("StatusCheckFailureThresholdExceed")
    } else if succeeded && spec.mode == StatusCheckMode::Synchronous {
        Some("StatusCheckSuccessThresholdExceed")
    } else {
        None
    };
    set(
        status,
        COMPLETED,
        completed.is_some(),
        completed.unwrap_or(""),
        now,
    );
}

fn set(status: &mut StatusCheckStatus, type_: &str, value: bool, reason: &str, now: &str) {
    let text = if value { "True" } else { "False" };
    match status.conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != text {
                c.status = text.into();
                c.last_transition_time = Some(now.into());
                c.last_probe_time = Some(now.into());
            }
            c.reason = reason.into();
        }
        None => status.conditions.push(StatusCheckCondition {
            type_: type_.into(),
            status: text.into(),
            reason: reason.into(),
            last_probe_time: Some(now.into()),
            last_transition_time: Some(now.into()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(outcomes: &[&str]) -> Vec<StatusCheckRecord> {
        outcomes
            .iter()
            .map(|o| StatusCheckRecord {
                start_time: "2026-11-24T12:00:00Z".into(),
                outcome: (*o).into(),
                message: None,
            })
            .collect()
    }

    fn spec(v: serde_json::Value) -> StatusCheckSpec {
        serde_json::from_value(v).expect("spec")
    }

    #[test]
    fn thresholds_count_the_latest_outcomes_in_a_row() {
        // Chaos Mesh's isThresholdExceed: from the newest record back while the outcome holds.
        let r = records(&["Failure", "Failure", "Success", "Failure", "Failure"]);
        assert!(threshold_exceeded(&r, "Failure", 2));
        assert!(!threshold_exceeded(&r, "Failure", 3));
        assert!(!threshold_exceeded(&r, "Success", 1));
        assert!(!threshold_exceeded(&[], "Failure", 1));
    }

    #[test]
    fn success_completes_only_a_synchronous_check() {
        let now = "2026-11-24T12:00:00Z";
        let mut status = StatusCheckStatus {
            records: records(&["Success"]),
            ..StatusCheckStatus::default()
        };
        conditions(&spec(serde_json::json!({})), &mut status, false, now);
        assert!(status.completed() && !status.failed());
        let mut status = StatusCheckStatus {
            records: records(&["Success"]),
            ..StatusCheckStatus::default()
        };
        conditions(
            &spec(serde_json::json!({"mode": "Continuous"})),
            &mut status,
            false,
            now,
        );
        assert!(!status.completed());
        // Continuous ends with its duration: completed without the success threshold... which
        // is met here, so a workflow would not abort.
        conditions(
            &spec(serde_json::json!({"mode": "Continuous"})),
            &mut status,
            true,
            now,
        );
        assert!(status.completed() && !status.failed());
        // Three failures (the default threshold) complete it as failed.
        let mut status = StatusCheckStatus {
            records: records(&["Success", "Failure", "Failure", "Failure"]),
            ..StatusCheckStatus::default()
        };
        conditions(
            &spec(serde_json::json!({"mode": "Continuous"})),
            &mut status,
            false,
            now,
        );
        assert!(status.completed() && status.failed());
    }
}

//! The Schedule reconciler (Chaos Mesh's controllers/schedule: cron, active, gc and pause in one
//! pass). A run creates a chaos experiment or, with `type: Workflow`, a Workflow ([`Spawn`]).
//! Each pass, with the time from the context's clock:
//! 1. lists the children (label `managed-by: <schedule>`, Chaos Mesh's);
//! 2. gives each chaos child the Schedule's pause state (the pause annotation, both keys); a
//!    Workflow cannot be paused: a paused Schedule only stops creating them, as in Chaos Mesh;
//! 3. deletes the oldest finished children beyond `historyLimit`;
//! 4. unless paused, finds the most recent run due since `status.lastScheduleTime` (else the
//!    creation time), no earlier than `startingDeadlineSeconds` ago; skips it if it is later
//!    than that deadline, or if `concurrencyPolicy` is Forbid and a child has not finished;
//!    otherwise creates the child, owned by the Schedule, and records the run time;
//! 5. writes `status.active` (every child, sorted by name) and comes back at the next run.
//!
//! Deletion: the finalizer deletes every child (whose own finalizer recovers its targets)
//! before the Schedule goes.

pub mod cron;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::NamespaceResourceScope;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Resource, ResourceExt};
use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::crd::{
    ChildReference, ConcurrencyPolicy, DNSChaos, HTTPChaos, IOChaos, NetworkChaos, PodChaos,
    Schedule, ScheduleStatus, ScheduleType, StressChaos, TargetPhase, TimeChaos, Workflow,
};
use crate::error::{Error, Result};
use crate::reconcile::{
    CHAOS_MESH_PAUSE_ANNOTATION, Chaos, Context, FINALIZER, PAUSE_ANNOTATION, Recovery, in_force,
    is_paused, rfc3339,
};
pub use cron::{Cron, CronError, next_runs};

/// Chaos Mesh's label naming the Schedule that created a child.
pub const MANAGED_BY_LABEL: &str = "managed-by";
/// Chaos Mesh gives up past this many missed runs (set or lower startingDeadlineSeconds).
pub const MAX_MISSED_RUNS: usize = 100;

/// The run to start now and the one after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    /// The most recent run time at or before now not yet started, if any.
    pub missed: Option<Timestamp>,
    pub next: Option<Timestamp>,
}

/// Chaos Mesh's getRecentUnmetScheduleTime: runs after the last one (or the creation time),
/// but none older than startingDeadlineSeconds; the most recent of them is the one to start.
pub fn due(
    cron: &Cron,
    last: Option<Timestamp>,
    created: Timestamp,
    starting_deadline_seconds: Option<i64>,
    now: Timestamp,
) -> Result<Due, String> {
    let mut earliest = last.unwrap_or(created);
    if let Some(secs) = starting_deadline_seconds {
        let limit = Timestamp::from_second(now.as_second().saturating_sub(secs)).unwrap_or(now);
        if limit > earliest {
            earliest = limit;
        }
    }
    if earliest > now {
        return Err(format!(
            "the last run ({earliest}) is later than now ({now}): clock skew?"
        ));
    }
    let mut missed = None;
    let mut next = cron.next(earliest);
    let mut count = 0;
    while let Some(t) = next.filter(|t| *t <= now) {
        missed = Some(t);
        next = cron.next(t);
        count += 1;
        if count > MAX_MISSED_RUNS {
            return Err(format!(
                "too many missed runs (> {MAX_MISSED_RUNS}): set or decrease spec.startingDeadlineSeconds, or check clock skew"
            ));
        }
    }
    Ok(Due { missed, next })
}

pub async fn reconcile(obj: Arc<Schedule>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciled("Schedule");
    let namespace = obj.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<Schedule> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(obj) => apply(&api, obj.as_ref(), &ctx).await,
            Finalizer::Cleanup(obj) => cleanup(obj.as_ref(), &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

pub fn error_policy(obj: Arc<Schedule>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(kind = "Schedule", name = %obj.name_any(), error = %error, "reconcile failed");
    ctx.metrics.failed("Schedule", error.metric_label());
    Action::requeue(ctx.settings.backoff_base.max(Duration::from_secs(1)))
}

async fn publish(ctx: &Context, obj: &Schedule, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Schedule".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(reason, error = %e, "cannot publish an event");
    }
}

fn until(now: Timestamp, t: Timestamp) -> Duration {
    Duration::from_millis(u64::try_from(t.as_millisecond() - now.as_millisecond()).unwrap_or(0))
        .max(Duration::from_secs(1))
}

/// What a Schedule needs of the kind its runs create.
pub trait Spawn:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    const KIND: &'static str;
    /// Whether the Schedule's pause reaches its children (Chaos Mesh's pause controller skips
    /// Workflows: "pausing a workflow schedule is not supported").
    const PAUSABLE: bool;
    /// Finished: no longer active for Forbid, and may be pruned by historyLimit.
    fn finished(&self, now: Timestamp) -> bool;
}

impl<K: Chaos> Spawn for K {
    const KIND: &'static str = <K as Chaos>::KIND;
    const PAUSABLE: bool = true;
    fn finished(&self, now: Timestamp) -> bool {
        finished(self, now)
    }
}

/// Chaos Mesh's schedule controllers: a Workflow child has finished once its `Accomplished`
/// condition is True (its entry node accomplished, past its deadline, or aborted); a Workflow
/// without that condition yet is still running.
impl Spawn for Workflow {
    const KIND: &'static str = "Workflow";
    const PAUSABLE: bool = false;
    fn finished(&self, _now: Timestamp) -> bool {
        self.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Accomplished" && c.status == "True")
        })
    }
}

/// A child as the Schedule sees it.
struct Child {
    name: String,
    finished: bool,
    paused: bool,
    reference: ChildReference,
}

fn child_of<K: Spawn>(child: &K, now: Timestamp) -> Child {
    Child {
        name: child.name_any(),
        finished: child.finished(now),
        paused: is_paused(child),
        reference: ChildReference {
            api_version: K::api_version(&()).into_owned(),
            kind: K::KIND.into(),
            name: child.name_any(),
            namespace: child.namespace().unwrap_or_default(),
            uid: child.meta().uid.clone(),
        },
    }
}

/// Chaos Mesh's IsChaosFinished: a one-shot action once every target has been hit; any other
/// once its duration is over and nothing is left in force (one without a duration never is).
pub fn finished<K: Chaos>(child: &K, now: Timestamp) -> bool {
    let Some(status) = child.status() else {
        return false;
    };
    let records = &status.experiment.container_records;
    if child.recovery() == Recovery::Nothing {
        return !records.is_empty()
            && records
                .iter()
                .all(|r| r.state == TargetPhase::Injected || r.gone);
    }
    let over = status
        .experiment
        .deadline
        .as_deref()
        .and_then(|d| d.parse::<Timestamp>().ok())
        .is_some_and(|d| now >= d);
    over && !records.iter().any(in_force)
}

async fn apply(api: &Api<Schedule>, obj: &Schedule, ctx: &Context) -> Result<Action> {
    match obj.spec.type_ {
        ScheduleType::PodChaos => pass::<PodChaos>(api, obj, ctx).await,
        ScheduleType::NetworkChaos => pass::<NetworkChaos>(api, obj, ctx).await,
        ScheduleType::IOChaos => pass::<IOChaos>(api, obj, ctx).await,
        ScheduleType::StressChaos => pass::<StressChaos>(api, obj, ctx).await,
        ScheduleType::DNSChaos => pass::<DNSChaos>(api, obj, ctx).await,
        ScheduleType::HTTPChaos => pass::<HTTPChaos>(api, obj, ctx).await,
        ScheduleType::TimeChaos => pass::<TimeChaos>(api, obj, ctx).await,
        ScheduleType::Workflow => pass::<Workflow>(api, obj, ctx).await,
    }
}

fn children_api<K: Spawn>(ctx: &Context, namespace: &str) -> Api<K> {
    Api::namespaced(ctx.client.clone(), namespace)
}

async fn list<K: Spawn>(children: &Api<K>, schedule: &str) -> Result<Vec<K>> {
    let selector = format!("{MANAGED_BY_LABEL}={schedule}");
    let mut items = children
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    items.sort_by(|a, b| {
        (
            a.meta().creation_timestamp.as_ref().map(|t| t.0),
            a.name_any(),
        )
            .cmp(&(
                b.meta().creation_timestamp.as_ref().map(|t| t.0),
                b.name_any(),
            ))
    });
    Ok(items)
}

async fn pass<K: Spawn>(api: &Api<Schedule>, obj: &Schedule, ctx: &Context) -> Result<Action> {
    let now = ctx.clock.now();
    let namespace = obj.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let name = obj.name_any();
    let children: Api<K> = children_api(ctx, &namespace);
    let paused = is_paused(obj);
    let mut kids: Vec<Child> = list(&children, &name)
        .await?
        .iter()
        .map(|c| child_of(c, now))
        .collect();

    // Pause: every chaos child follows the Schedule (Chaos Mesh's pause controller); a
    // Workflow has no pause, so Chaos Mesh says so and only stops creating them.
    if !K::PAUSABLE && paused {
        let note = format!(
            "pausing a {} schedule is not supported: no new run starts, the running ones go on",
            K::KIND
        );
        publish(ctx, obj, EventType::Warning, "NotSupported", note).await;
    }
    for kid in kids
        .iter_mut()
        .filter(|k| K::PAUSABLE && k.paused != paused)
    {
        let value = paused.to_string();
        let patch = json!({"metadata": {"annotations": {
            PAUSE_ANNOTATION: value, CHAOS_MESH_PAUSE_ANNOTATION: value}}});
        children
            .patch(&kid.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        kid.paused = paused;
    }

    // History: the oldest finished children beyond historyLimit go. Unset is 0, as in Chaos
    // Mesh (its gc subtracts the zero value): every finished child goes.
    {
        let limit = obj.spec.history_limit.unwrap_or(0).max(0);
        let excess = kids
            .len()
            .saturating_sub(usize::try_from(limit).unwrap_or(usize::MAX));
        let doomed: Vec<String> = kids[..excess]
            .iter()
            .filter(|k| k.finished)
            .map(|k| k.name.clone())
            .collect();
        for victim in &doomed {
            match children.delete(victim, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        kids.retain(|k| !doomed.contains(&k.name));
    }

    let mut status = obj.status.clone().unwrap_or_default();
    let before = status.clone();
    let mut action = Action::requeue(ctx.settings.resync);
    if !paused {
        action = run_if_due::<K>(obj, ctx, &children, &mut kids, &mut status, now).await?;
    }
    let mut active: Vec<ChildReference> = kids.iter().map(|k| k.reference.clone()).collect();
    active.sort_by(|a, b| a.name.cmp(&b.name));
    status.active = active;
    write_status(api, &name, &before, &status).await?;
    Ok(action)
}

async fn write_status(
    api: &Api<Schedule>,
    name: &str,
    before: &ScheduleStatus,
    status: &ScheduleStatus,
) -> Result<()> {
    if before == status {
        return Ok(());
    }
    let patch = json!({ "status": status });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

async fn run_if_due<K: Spawn>(
    obj: &Schedule,
    ctx: &Context,
    children: &Api<K>,
    kids: &mut Vec<Child>,
    status: &mut ScheduleStatus,
    now: Timestamp,
) -> Result<Action> {
    let cron = match Cron::parse(&obj.spec.schedule) {
        Ok(cron) => cron,
        Err(e) => {
            publish(
                ctx,
                obj,
                EventType::Warning,
                "InvalidSchedule",
                e.to_string(),
            )
            .await;
            return Ok(Action::await_change());
        }
    };
    let last = status
        .last_schedule_time
        .as_deref()
        .or(status.time.as_deref())
        .and_then(|t| t.parse::<Timestamp>().ok());
    let created = obj
        .meta()
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(now);
    let due = match due(
        &cron,
        last,
        created,
        obj.spec.starting_deadline_seconds,
        now,
    ) {
        Ok(due) => due,
        Err(message) => {
            publish(ctx, obj, EventType::Warning, "ScheduleFailed", message).await;
            return Ok(Action::requeue(ctx.settings.resync));
        }
    };
    let later = |next: Option<Timestamp>| match next {
        Some(t) => Action::requeue(until(now, t).min(ctx.settings.resync)),
        None => Action::await_change(),
    };
    let Some(missed) = due.missed else {
        return Ok(later(due.next));
    };
    if let Some(secs) = obj.spec.starting_deadline_seconds
        && missed.as_second().saturating_add(secs) < now.as_second()
    {
        let note = format!(
            "missed the run at {} by more than startingDeadlineSeconds ({secs}s)",
            rfc3339(missed)
        );
        publish(ctx, obj, EventType::Warning, "MissedSchedule", note).await;
        return Ok(later(due.next));
    }
    if obj.spec.concurrency_policy == ConcurrencyPolicy::Forbid
        && let Some(running) = kids.iter().find(|k| !k.finished)
    {
        let note = format!(
            "run at {} not started: {} is still running (concurrencyPolicy Forbid)",
            rfc3339(missed),
            running.name
        );
        publish(ctx, obj, EventType::Normal, "ScheduleForbid", note).await;
        // Come back when the child may have finished (its changes wake us too).
        return Ok(Action::requeue(
            ctx.settings.no_match_retry.min(ctx.settings.resync),
        ));
    }
    let spec = match obj.spec.child_spec() {
        Ok(spec) => spec,
        Err(message) => {
            publish(ctx, obj, EventType::Warning, "InvalidSpec", message).await;
            return Ok(Action::await_change());
        }
    };
    let child_name = format!("{}-{}", obj.name_any(), suffix(ctx));
    let child: K = match serde_json::from_value(json!({
        "apiVersion": K::api_version(&()),
        "kind": K::KIND,
        "metadata": {
            "name": child_name,
            "namespace": obj.namespace(),
            "labels": {MANAGED_BY_LABEL: obj.name_any()},
            "ownerReferences": [{
                "apiVersion": Schedule::api_version(&()),
                "kind": "Schedule",
                "name": obj.name_any(),
                "uid": obj.meta().uid.clone().unwrap_or_default(),
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": spec,
    })) {
        Ok(child) => child,
        Err(e) => {
            let note = format!("spec.{}: {e}", obj.spec.type_.field());
            publish(ctx, obj, EventType::Warning, "InvalidSpec", note).await;
            return Ok(Action::await_change());
        }
    };
    let created = children.create(&PostParams::default(), &child).await?;
    publish(
        ctx,
        obj,
        EventType::Normal,
        "ScheduleSpawn",
        format!(
            "created {} {} for the run at {}",
            K::KIND,
            created.name_any(),
            rfc3339(missed)
        ),
    )
    .await;
    kids.push(child_of(&created, now));
    // Chaos Mesh records the time the run was started, not the cron time.
    status.last_schedule_time = Some(rfc3339(now));
    status.time = status.last_schedule_time.clone();
    Ok(later(due.next))
}

/// Five characters as Kubernetes' generateName appends (lowercase consonants and digits).
pub(crate) fn suffix(ctx: &Context) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = ctx.rng.lock();
    (0..5)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// Deletion: every child is deleted (a chaos child's finalizer recovers its targets, a
/// Workflow's recovers everything it started); the Schedule goes once none is left.
async fn cleanup(obj: &Schedule, ctx: &Context) -> Result<Action> {
    match obj.spec.type_ {
        ScheduleType::PodChaos => delete_children::<PodChaos>(obj, ctx).await,
        ScheduleType::NetworkChaos => delete_children::<NetworkChaos>(obj, ctx).await,
        ScheduleType::IOChaos => delete_children::<IOChaos>(obj, ctx).await,
        ScheduleType::StressChaos => delete_children::<StressChaos>(obj, ctx).await,
        ScheduleType::DNSChaos => delete_children::<DNSChaos>(obj, ctx).await,
        ScheduleType::HTTPChaos => delete_children::<HTTPChaos>(obj, ctx).await,
        ScheduleType::TimeChaos => delete_children::<TimeChaos>(obj, ctx).await,
        ScheduleType::Workflow => delete_children::<Workflow>(obj, ctx).await,
    }
}

async fn delete_children<K: Spawn>(obj: &Schedule, ctx: &Context) -> Result<Action> {
    let namespace = obj.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let children: Api<K> = children_api(ctx, &namespace);
    let kids = list(&children, &obj.name_any()).await?;
    let mut waiting = Vec::new();
    for kid in &kids {
        let name = kid.name_any();
        if kid.meta().deletion_timestamp.is_none() {
            match children.delete(&name, &DeleteParams::default()).await {
                Ok(either) => {
                    if either.is_right() {
                        continue;
                    }
                }
                Err(kube::Error::Api(e)) if e.code == 404 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        waiting.push(name);
    }
    if waiting.is_empty() {
        return Ok(Action::await_change());
    }
    Err(Error::RecoveryIncomplete {
        remaining: waiting.len(),
        detail: format!(
            "waiting for the children to be recovered and deleted: {}",
            waiting.join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    #[test]
    fn due_follows_chaos_mesh_get_recent_unmet_schedule_time() {
        let every5 = Cron::parse("*/5 * * * *").expect("cron");
        let created = at("2026-11-24T11:58:00Z");
        // Nothing since the creation time yet: the next is 12:00.
        assert_eq!(
            due(&every5, None, created, None, at("2026-11-24T11:59:59Z")),
            Ok(Due {
                missed: None,
                next: Some(at("2026-11-24T12:00:00Z"))
            })
        );
        // A run exactly at now is due (robfig's loop runs while !t.After(now)).
        assert_eq!(
            due(&every5, None, created, None, at("2026-11-24T12:00:00Z")).map(|d| d.missed),
            Ok(Some(at("2026-11-24T12:00:00Z")))
        );
        // Several missed: the most recent one.
        assert_eq!(
            due(
                &every5,
                Some(at("2026-11-24T12:00:00Z")),
                created,
                None,
                at("2026-11-24T12:17:00Z")
            ),
            Ok(Due {
                missed: Some(at("2026-11-24T12:15:00Z")),
                next: Some(at("2026-11-24T12:20:00Z"))
            })
        );
        // @every counts from the last run (Chaos Mesh records the start time, not the cron's).
        let every = Cron::parse("@every 90s").expect("cron");
        assert_eq!(
            due(
                &every,
                Some(at("2026-11-24T12:00:07Z")),
                created,
                None,
                at("2026-11-24T12:01:40Z")
            )
            .map(|d| d.missed),
            Ok(Some(at("2026-11-24T12:01:37Z")))
        );
        // A last run in the future is clock skew.
        assert!(
            due(
                &every5,
                Some(at("2026-11-24T13:00:00Z")),
                created,
                None,
                at("2026-11-24T12:00:00Z")
            )
            .unwrap_err()
            .contains("clock skew")
        );
    }
}

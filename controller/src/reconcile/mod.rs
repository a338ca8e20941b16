//! The reconciler, in kube-rs controller-rs's shape: `reconcile(obj, ctx) -> Result<Action>`
//! behind the finalizer helper (added before anything is injected, removed only once every
//! target is recovered), and `error_policy`.
//!
//! One pass of `apply`: validate the spec (a refused spec gets `Accepted=False` and nothing
//! else); select the targets once and record them in the status before touching any; then
//! drive every record towards the desired phase (Run, or Stop when paused or past the
//! deadline) through the agents; write the status only if it changed; come back at the
//! deadline, at the next retry, or after the resync period.

mod conditions;
mod context;
mod kind;
mod network;
mod targets;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Resource, ResourceExt};
use rand::SeedableRng;
use serde_json::json;

pub use conditions::in_force;
pub use context::{Clock, Context, Settings, SystemClock};
pub use kind::{Chaos, Recovery};
pub use targets::{POD_FAILURE_ANNOTATION, pod_failure_patch, pod_failure_restore_patch};

use crate::crd::{
    ChaosStatus, ConditionStatus, ConditionType, DesiredPhase, TargetPhase, TargetRecord,
};
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::selection;
use targets::Outcome;

pub const FINALIZER: &str = "chaos.faultline.dev/recover";
/// `true` pauses an experiment: every target is recovered until the annotation goes.
pub const PAUSE_ANNOTATION: &str = "experiment.chaos.faultline.dev/pause";
/// Chaos Mesh's pause annotation, honoured too.
pub const CHAOS_MESH_PAUSE_ANNOTATION: &str = "experiment.chaos-mesh.org/pause";
/// `true` lets a deleted experiment go although some targets could not be recovered (their
/// agent is gone for good).
pub const FORCE_CLEANUP_ANNOTATION: &str = "experiment.chaos.faultline.dev/force-cleanup";
/// Chaos Mesh's way of saying the same (value `forced`): the finalizer goes whatever is left.
pub const CHAOS_MESH_CLEAN_FINALIZER_ANNOTATION: &str = "chaos-mesh.chaos-mesh.org/cleanFinalizer";
/// faultline's name for Chaos Mesh's annotation (value `forced`).
pub const CLEAN_FINALIZER_ANNOTATION: &str = "chaos.faultline.dev/cleanFinalizer";

/// Whether a deleted experiment may lose its finalizer with targets not recovered.
pub fn forced_cleanup<K: Resource>(obj: &K) -> bool {
    let forced = |key: &str| {
        obj.meta()
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .is_some_and(|v| v == "forced")
    };
    annotation_true(obj, FORCE_CLEANUP_ANNOTATION)
        || forced(CHAOS_MESH_CLEAN_FINALIZER_ANNOTATION)
        || forced(CLEAN_FINALIZER_ANNOTATION)
}

fn annotation_true<K: Resource>(obj: &K, key: &str) -> bool {
    obj.meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .is_some_and(|v| v == "true")
}

pub fn is_paused<K: Resource>(obj: &K) -> bool {
    annotation_true(obj, PAUSE_ANNOTATION) || annotation_true(obj, CHAOS_MESH_PAUSE_ANNOTATION)
}

/// RFC 3339, whole seconds.
pub fn rfc3339(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

fn parse_time(text: Option<&str>) -> Option<Timestamp> {
    text.and_then(|t| t.parse().ok())
}

fn after(t: Timestamp, d: Duration) -> Timestamp {
    let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2);
    Timestamp::from_millisecond(t.as_millisecond().saturating_add(ms)).unwrap_or(Timestamp::MAX)
}

fn until(now: Timestamp, t: Timestamp) -> Duration {
    Duration::from_millis(u64::try_from(t.as_millisecond() - now.as_millisecond()).unwrap_or(0))
}

pub async fn reconcile<K: Chaos>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciled(K::KIND);
    let namespace = obj.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    // Several NetworkChaos share a pod's state in the agent: one reconciles at a time.
    let _network = if K::KIND == "NetworkChaos" {
        Some(ctx.network.lock().await)
    } else {
        None
    };
    finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(obj) => apply(&api, obj.as_ref(), &ctx).await,
            Finalizer::Cleanup(obj) => cleanup(&api, obj.as_ref(), &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

pub fn error_policy<K: Chaos>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(kind = K::KIND, name = %obj.name_any(), error = %error, "reconcile failed");
    ctx.metrics.failed(K::KIND, error.metric_label());
    Action::requeue(ctx.settings.backoff_base.max(Duration::from_secs(1)))
}

fn key<K: Chaos>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::KIND,
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

async fn publish<K: Chaos>(
    ctx: &Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
    pod: Option<&TargetRecord>,
) {
    let secondary = pod.map(|r| ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(r.pod.clone()),
        namespace: Some(r.namespace.clone()),
        uid: r.pod_uid.clone(),
        ..ObjectReference::default()
    });
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(reason, error = %e, "cannot publish an event");
    }
}

async fn write_status<K: Chaos>(
    api: &Api<K>,
    obj: &K,
    before: &ChaosStatus,
    status: &ChaosStatus,
) -> Result<()> {
    if before == status {
        return Ok(());
    }
    let patch = json!({ "status": status });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

async fn apply<K: Chaos>(api: &Api<K>, obj: &K, ctx: &Context) -> Result<Action> {
    let now = ctx.clock.now();
    let now_text = rfc3339(now);
    let mut before = obj.status().cloned().unwrap_or_default();
    let mut status = before.clone();
    status.observed_generation = obj.meta().generation;

    let plan = match obj.plan() {
        Ok(plan) => plan,
        Err(invalid) => {
            let message = invalid.to_string();
            let changed = status
                .condition(ConditionType::Accepted)
                .is_none_or(|c| c.status != ConditionStatus::False || c.message != message);
            status.set_condition(
                ConditionType::Accepted,
                ConditionStatus::False,
                invalid.reason(),
                message.clone(),
                &now_text,
            );
            if changed {
                publish(
                    ctx,
                    obj,
                    EventType::Warning,
                    invalid.reason(),
                    "Validate",
                    message,
                    None,
                )
                .await;
            }
            write_status(api, obj, &before, &status).await?;
            return Ok(Action::await_change());
        }
    };
    status.set_condition(
        ConditionType::Accepted,
        ConditionStatus::True,
        "Valid",
        "",
        &now_text,
    );

    if status.experiment.container_records.is_empty() {
        match select(ctx, obj, &plan, &mut status, now).await? {
            Some(()) => {
                // Recorded before anything is injected: recovery is computed from the record.
                write_status(api, obj, &before, &status).await?;
                before = status.clone();
            }
            None => {
                write_status(api, obj, &before, &status).await?;
                return Ok(Action::requeue(ctx.settings.no_match_retry));
            }
        }
    }

    let paused = is_paused(obj);
    let deadline = parse_time(status.experiment.deadline.as_deref());
    let expired = deadline.is_some_and(|d| now >= d);
    let desired = if paused || expired {
        DesiredPhase::Stop
    } else {
        DesiredPhase::Run
    };
    let was_paused = before.is_true(ConditionType::Paused);
    status.experiment.desired_phase = Some(desired);
    let refresh = desired == DesiredPhase::Run && refresh_external_peers(&plan, &mut status).await;

    let remaining_ms = deadline
        .map(|d| {
            u64::try_from(until(now, d).as_millis())
                .unwrap_or(u64::MAX)
                .max(1)
        })
        .unwrap_or(0);
    let recovery = obj.recovery();
    let one_shot = plan.action.is_one_shot();
    let peers = status.experiment.network_peers();
    for i in 0..status.experiment.container_records.len() {
        let rec = status.experiment.container_records[i].clone();
        let due = parse_time(rec.next_retry_at.as_deref()).is_none_or(|t| t <= now);
        let updated = match desired {
            DesiredPhase::Run
                if due
                    && (needs_injection(&rec, one_shot)
                        || (refresh
                            && rec.state == TargetPhase::Injected
                            && rec.selector_key != crate::plan::TARGET_KEY)) =>
            {
                let share = if side_is_empty(&plan, &rec, &peers) {
                    None
                } else {
                    network_share(
                        ctx,
                        obj,
                        Some(&plan),
                        &peers,
                        &status.experiment.container_records,
                        i,
                        status.experiment.deadline.as_deref(),
                    )
                    .await?
                };
                let duration_ms = match &share {
                    Some(share) => share.duration_ms(now, deadline, true),
                    None => remaining_ms,
                };
                let outcome =
                    targets::inject(ctx, &plan, &peers, &rec, duration_ms, share.as_ref()).await?;
                Some(injected(ctx, obj, rec, outcome, now).await)
            }
            DesiredPhase::Stop if due && in_force(&rec) => {
                let share = if rec.container_id.is_none() {
                    None
                } else {
                    network_share(
                        ctx,
                        obj,
                        Some(&plan),
                        &peers,
                        &status.experiment.container_records,
                        i,
                        status.experiment.deadline.as_deref(),
                    )
                    .await?
                };
                let outcome = targets::recover(ctx, &recovery, &rec, share.as_ref(), now).await?;
                Some(recovered(ctx, obj, rec, outcome, now).await)
            }
            _ => None,
        };
        if let Some(updated) = updated {
            status.experiment.container_records[i] = updated;
        }
    }

    conditions::update(&mut status, paused, expired, &now_text);
    if paused != was_paused {
        let (reason, note) = if paused {
            ("Paused", "pause annotation set: targets recovered")
        } else {
            (
                "Resumed",
                "pause annotation removed: targets injected again",
            )
        };
        publish(
            ctx,
            obj,
            EventType::Normal,
            reason,
            "Pause",
            note.into(),
            None,
        )
        .await;
    }
    if expired
        && status.is_true(ConditionType::AllRecovered)
        && !before.is_true(ConditionType::AllRecovered)
    {
        publish(
            ctx,
            obj,
            EventType::Normal,
            "Finished",
            "Recover",
            "duration over: every target recovered".into(),
            None,
        )
        .await;
    }
    ctx.set_active(
        K::KIND,
        key(obj),
        Some(status.experiment.container_records.iter().any(in_force)),
    );
    write_status(api, obj, &before, &status).await?;

    // Come back at the deadline, at the earliest retry, or after the resync period.
    let mut wake = after(now, ctx.settings.resync);
    if let Some(d) = deadline.filter(|_| !expired) {
        wake = wake.min(d);
    }
    for rec in &status.experiment.container_records {
        if let Some(t) = parse_time(rec.next_retry_at.as_deref()) {
            wake = wake.min(t);
        }
    }
    if desired == DesiredPhase::Stop && status.is_true(ConditionType::AllRecovered) && !paused {
        return Ok(Action::await_change());
    }
    Ok(Action::requeue(
        until(now, wake).max(Duration::from_secs(1)),
    ))
}

/// NetworkChaos: whether this record's side of the experiment has nothing to do.
fn side_is_empty(plan: &Plan, rec: &TargetRecord, peers: &crate::plan::Peers) -> bool {
    match &plan.action {
        crate::plan::Action::Network(network) => network.state(&rec.selector_key, peers).is_empty(),
        _ => false,
    }
}

/// NetworkChaos: what the other experiments (and this one's other records on the same pod) keep
/// in force on record `i`'s pod; None for the other kinds.
async fn network_share<K: Chaos>(
    ctx: &Context,
    obj: &K,
    plan: Option<&Plan>,
    peers: &crate::plan::Peers,
    records: &[TargetRecord],
    i: usize,
    deadline: Option<&str>,
) -> Result<Option<network::PodShare>> {
    if obj.recovery() != Recovery::Network {
        return Ok(None);
    }
    let mut share =
        network::others_on_pod(&ctx.client, obj.meta().uid.as_deref(), &records[i]).await?;
    if let Some(crate::plan::Action::Network(plan)) = plan.map(|p| &p.action) {
        network::add_own(&mut share, plan, peers, records, i, deadline);
    }
    Ok(Some(share))
}

fn needs_injection(rec: &TargetRecord, one_shot: bool) -> bool {
    match rec.state {
        TargetPhase::Pending => true,
        TargetPhase::Failed => rec.next_retry_at.is_some(),
        TargetPhase::Recovered => !rec.gone && !one_shot,
        TargetPhase::Injected => false,
    }
}

/// NetworkChaos with host names among its external targets: resolves them again (as Chaos
/// Mesh's controller does at every apply); true when the addresses changed, so the selected
/// pods get their rules again with the new ones. A failed lookup keeps the old addresses.
async fn refresh_external_peers(plan: &Plan, status: &mut ChaosStatus) -> bool {
    use crate::plan::External;
    let crate::plan::Action::Network(network) = &plan.action else {
        return false;
    };
    let has_host = network.external.iter().any(|e| match e {
        External::Host(_) => true,
        External::WithPort { host, .. } => {
            !host.contains('/') && host.parse::<std::net::IpAddr>().is_err()
        }
        External::Cidr(_) => false,
    });
    if !has_host || status.experiment.container_records.is_empty() {
        return false;
    }
    match resolve_externals(&network.external).await {
        Ok(fresh) if fresh != status.experiment.external_peers => {
            tracing::info!(
                old = ?status.experiment.external_peers,
                new = ?fresh,
                "external targets resolve to new addresses"
            );
            status.experiment.external_peers = fresh;
            true
        }
        Ok(_) => false,
        Err(e) => {
            tracing::warn!(error = %e, "external targets not resolved again; keeping the old addresses");
            false
        }
    }
}

/// `externalTargets` as peers: CIDRs as they are, host names resolved to their IPv4 addresses
/// (as Chaos Mesh's controller resolves them), `:port` kept.
async fn resolve_externals(external: &[crate::plan::External]) -> Result<Vec<String>, String> {
    use crate::plan::External;
    let mut peers = Vec::new();
    for e in external {
        let (host, port) = match e {
            External::Cidr(c) => {
                peers.push(c.clone());
                continue;
            }
            External::Host(h) => (h.as_str(), None),
            External::WithPort { host, port } => (host.as_str(), Some(*port)),
        };
        let cidrs: Vec<String> = if host.contains('/') || host.parse::<std::net::IpAddr>().is_ok() {
            vec![if host.contains('/') {
                host.to_owned()
            } else {
                format!("{host}/32")
            }]
        } else {
            tokio::net::lookup_host((host, 0))
                .await
                .map_err(|e| format!("externalTargets: cannot resolve {host}: {e}"))?
                .filter(|a| a.is_ipv4())
                .map(|a| format!("{}/32", a.ip()))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        if cidrs.is_empty() {
            return Err(format!("externalTargets: {host} has no IPv4 address"));
        }
        for c in cidrs {
            peers.push(match port {
                Some(p) => format!("{c}:{p}"),
                None => c,
            });
        }
    }
    Ok(peers)
}

/// Chooses the targets and records them (and, for NetworkChaos, the peers); None when the
/// selector matches nothing.
async fn select<K: Chaos>(
    ctx: &Context,
    obj: &K,
    plan: &Plan,
    status: &mut ChaosStatus,
    now: Timestamp,
) -> Result<Option<()>> {
    let now_text = rfc3339(now);
    let selection = &plan.selection;
    let view = selection::ApiView(ctx.client.clone());
    let chosen = {
        // The random source is locked only around choices made from what was already read.
        let mut rng = rand::rngs::StdRng::from_rng(&mut *ctx.rng.lock());
        selection::choose_targets(&view, plan, &ctx.settings.scoping, &mut rng).await
    };
    let chosen = match chosen {
        Ok(chosen) => chosen,
        Err(selection::SelectError::Kube(e)) => return Err(e.into()),
        Err(e @ selection::SelectError::OutOfScope { .. }) => {
            let message = e.to_string();
            status.set_condition(
                ConditionType::Selected,
                ConditionStatus::False,
                "OutOfScope",
                message.clone(),
                &now_text,
            );
            publish(
                ctx,
                obj,
                EventType::Warning,
                "OutOfScope",
                "Select",
                message,
                None,
            )
            .await;
            return Ok(None);
        }
    };
    let peers = chosen.target_cidrs.clone();
    let mut external_peers = Vec::new();
    if let crate::plan::Action::Network(network) = &plan.action {
        match resolve_externals(&network.external).await {
            Ok(external) => external_peers = external,
            Err(message) => {
                status.set_condition(
                    ConditionType::Selected,
                    ConditionStatus::False,
                    "ResolveFailed",
                    message.clone(),
                    &now_text,
                );
                publish(
                    ctx,
                    obj,
                    EventType::Warning,
                    "ResolveFailed",
                    "Select",
                    message,
                    None,
                )
                .await;
                return Ok(None);
            }
        }
    }
    if let Some(key) = chosen.no_match {
        let message = format!(
            "no pod matches the selector {key} (namespaces {}) with mode {:?}; trying again in {}s",
            selection.selector.namespaces.join(", "),
            selection.mode,
            ctx.settings.no_match_retry.as_secs()
        );
        let first = status.condition(ConditionType::Selected).is_none();
        status.set_condition(
            ConditionType::Selected,
            ConditionStatus::False,
            "NoMatch",
            message.clone(),
            &now_text,
        );
        if first {
            publish(
                ctx,
                obj,
                EventType::Warning,
                "NoMatch",
                "Select",
                message,
                None,
            )
            .await;
        }
        return Ok(None);
    }
    if matches!(plan.action, crate::plan::Action::Network(_)) {
        status.experiment.peers = peers;
        status.experiment.external_peers = external_peers;
        status.experiment.source_peers = chosen.source_cidrs.clone();
    }
    let records = chosen.records;
    let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let message = format!("{} target(s): {}", records.len(), ids.join(", "));
    status.set_condition(
        ConditionType::Selected,
        ConditionStatus::True,
        "Selected",
        message.clone(),
        &now_text,
    );
    status.experiment.start_time = Some(now_text.clone());
    status.experiment.deadline = plan.duration.map(|d| rfc3339(after(now, d)));
    status.experiment.container_records = records;
    publish(
        ctx,
        obj,
        EventType::Normal,
        "Selected",
        "Select",
        message,
        None,
    )
    .await;
    Ok(Some(()))
}

async fn injected<K: Chaos>(
    ctx: &Context,
    obj: &K,
    mut rec: TargetRecord,
    outcome: Outcome,
    now: Timestamp,
) -> TargetRecord {
    match outcome {
        Outcome::Done {
            detail,
            ids,
            container_id,
            node,
        } => {
            rec.state = TargetPhase::Injected;
            rec.record_event(true, true, &detail, &rfc3339(now));
            rec.injected_at = Some(rfc3339(now));
            rec.recovered_at = None;
            rec.experiment_ids = ids;
            rec.container_id = container_id.or(rec.container_id);
            rec.node = node.or(rec.node);
            rec.attempts = 0;
            rec.next_retry_at = None;
            rec.uncertain = false;
            rec.message = (!detail.is_empty()).then(|| detail.clone());
            let on = rec
                .node
                .as_deref()
                .map(|n| format!(" on {n}"))
                .unwrap_or_default();
            let note = format!(
                "{}{on}: {}",
                rec.id,
                if detail.is_empty() {
                    "injected"
                } else {
                    &detail
                }
            );
            publish(
                ctx,
                obj,
                EventType::Normal,
                "Injected",
                "Inject",
                note,
                Some(&rec),
            )
            .await;
        }
        Outcome::Gone => {
            gone(&mut rec, now);
            publish(
                ctx,
                obj,
                EventType::Warning,
                "TargetGone",
                "Inject",
                format!("{}: the pod is gone", rec.id),
                Some(&rec),
            )
            .await;
        }
        Outcome::Failed {
            message,
            transient,
            uncertain,
        } => {
            rec.state = TargetPhase::Failed;
            rec.record_event(true, false, &message, &rfc3339(now));
            rec.attempts += 1;
            rec.uncertain = rec.uncertain || uncertain;
            rec.next_retry_at =
                transient.then(|| rfc3339(after(now, ctx.settings.backoff(rec.attempts))));
            let retry = match &rec.next_retry_at {
                Some(t) => format!(" (attempt {}, retrying at {t})", rec.attempts),
                None => String::new(),
            };
            rec.message = Some(format!("{message}{retry}"));
            publish(
                ctx,
                obj,
                EventType::Warning,
                "InjectFailed",
                "Inject",
                format!("{}: {message}{retry}", rec.id),
                Some(&rec),
            )
            .await;
        }
    }
    rec
}

fn gone(rec: &mut TargetRecord, now: Timestamp) {
    if rec.phase == crate::crd::RecordPhase::Injected {
        rec.record_event(false, true, "the pod is gone", &rfc3339(now));
    }
    rec.state = TargetPhase::Recovered;
    rec.gone = true;
    rec.uncertain = false;
    rec.next_retry_at = None;
    rec.recovered_at = Some(rfc3339(now));
    rec.message = Some("the pod is gone: counted as recovered".into());
}

async fn recovered<K: Chaos>(
    ctx: &Context,
    obj: &K,
    mut rec: TargetRecord,
    outcome: Outcome,
    now: Timestamp,
) -> TargetRecord {
    match outcome {
        Outcome::Done { detail, .. } => {
            rec.state = TargetPhase::Recovered;
            rec.record_event(false, true, &detail, &rfc3339(now));
            rec.recovered_at = Some(rfc3339(now));
            rec.attempts = 0;
            rec.next_retry_at = None;
            rec.uncertain = false;
            rec.experiment_ids.clear();
            rec.message = (!detail.is_empty()).then(|| detail.clone());
            let note = format!(
                "{}: {}",
                rec.id,
                if detail.is_empty() {
                    "recovered"
                } else {
                    &detail
                }
            );
            publish(
                ctx,
                obj,
                EventType::Normal,
                "Recovered",
                "Recover",
                note,
                Some(&rec),
            )
            .await;
        }
        Outcome::Gone => {
            gone(&mut rec, now);
            publish(
                ctx,
                obj,
                EventType::Normal,
                "TargetGone",
                "Recover",
                format!("{}: the pod is gone: counted as recovered", rec.id),
                Some(&rec),
            )
            .await;
        }
        Outcome::Failed { message, .. } => {
            // Still in force: retried with backoff whatever the error.
            rec.record_event(false, false, &message, &rfc3339(now));
            rec.attempts += 1;
            let at = rfc3339(after(now, ctx.settings.backoff(rec.attempts)));
            let text = format!(
                "recovery failed: {message} (attempt {}, retrying at {at})",
                rec.attempts
            );
            rec.next_retry_at = Some(at);
            rec.message = Some(text.clone());
            publish(
                ctx,
                obj,
                EventType::Warning,
                "RecoverFailed",
                "Recover",
                format!("{}: {text}", rec.id),
                Some(&rec),
            )
            .await;
        }
    }
    rec
}

/// Deletion: recover every target that may have a fault in force; the finalizer is removed
/// only when none is left (or the force-cleanup annotation says to give up on them).
async fn cleanup<K: Chaos>(api: &Api<K>, obj: &K, ctx: &Context) -> Result<Action> {
    let now = ctx.clock.now();
    let now_text = rfc3339(now);
    let before = obj.status().cloned().unwrap_or_default();
    let mut status = before.clone();
    status.experiment.desired_phase = Some(DesiredPhase::Stop);
    let recovery = obj.recovery();
    for i in 0..status.experiment.container_records.len() {
        let rec = status.experiment.container_records[i].clone();
        let due = parse_time(rec.next_retry_at.as_deref()).is_none_or(|t| t <= now);
        if in_force(&rec) && due {
            let plan = obj.plan().ok();
            let share = if rec.container_id.is_none() {
                None
            } else {
                network_share(
                    ctx,
                    obj,
                    plan.as_ref(),
                    &status.experiment.network_peers(),
                    &status.experiment.container_records,
                    i,
                    status.experiment.deadline.as_deref(),
                )
                .await?
            };
            let outcome = targets::recover(ctx, &recovery, &rec, share.as_ref(), now).await?;
            status.experiment.container_records[i] = recovered(ctx, obj, rec, outcome, now).await;
        }
    }
    let left: Vec<String> = status
        .experiment
        .container_records
        .iter()
        .filter(|r| in_force(r))
        .map(|r| format!("{}: {}", r.id, r.message.as_deref().unwrap_or("in force")))
        .collect();
    conditions::update(&mut status, is_paused(obj), false, &now_text);
    write_status(api, obj, &before, &status).await?;
    if !left.is_empty() {
        if forced_cleanup(obj) {
            let note = format!(
                "forced cleanup: removing the finalizer with {} target(s) not recovered: {}",
                left.len(),
                left.join("; ")
            );
            publish(
                ctx,
                obj,
                EventType::Warning,
                "ForcedCleanup",
                "Recover",
                note,
                None,
            )
            .await;
        } else {
            return Err(Error::RecoveryIncomplete {
                remaining: left.len(),
                detail: left.join("; "),
            });
        }
    }
    ctx.set_active(K::KIND, key(obj), None);
    Ok(Action::await_change())
}

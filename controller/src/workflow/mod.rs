//! The Workflow reconciler (Chaos Mesh's pkg/workflow/controllers, in one pass). Each running
//! template is a WorkflowNode object (labels `chaos-mesh.org/workflow` and
//! `chaos-mesh.org/controlled-by`, owned by its parent node or, for the entry, by the Workflow).
//! Each pass, with the time from the context's clock:
//! 1. validates the spec (Chaos Mesh's webhook rules); a refused one gets `Accepted=False`;
//! 2. lists the nodes and creates the entry node if there is none;
//! 3. steps every node until nothing changes: an aborted workflow aborts its entry node, an
//!    aborted parent its children; a node past its deadline, or whose Serial/Parallel/Task parent
//!    is, is finished (`DeadlineExceed`); a finished node deletes what it created (its chaos
//!    object's finalizer recovers the targets); a Serial creates its next child when the last one
//!    has finished, a Parallel all at once (each after following a changed spec, below); a
//!    chaos, Schedule or StatusCheck node creates its
//!    object; a Task runs a pod, then evaluates its branches on the container's exit code and
//!    output and runs the templates that hold; a StatusCheck node finishes with its check, and
//!    with `abortWithStatusCheck` a check that failed aborts the workflow;
//! 4. writes the nodes' and the workflow's status, and comes back at the next deadline.
//!
//! A changed spec under a running Serial, Parallel or Task node (Chaos Mesh's
//! RerunBySpecChanged). The node first takes its template's new `children` (Serial, Parallel) or
//! `conditionalBranches` (Task) from the Workflow; Chaos Mesh only reads the node's own spec,
//! which a `kubectl edit workflownode` changes and a changed Workflow does not, so faultline
//! copies it over (event `NodeSpecUpdated`), and both ways rerun alike. Then Chaos Mesh's rules:
//! - Parallel: if the templates of its children are not the set of `children`, every child goes
//!   and every one of `children` starts again;
//! - Task: new branches are evaluated again on the ended pod; if the chosen templates are not
//!   those of its children, every child goes and the chosen ones start;
//! - Serial: its children are kept while they match `children` position by position; the first
//!   that does not goes with every one after it, and the Serial goes on from there (Chaos Mesh's
//!   "partial rerun": its code compares the names the wrong way round and never reaches it, so
//!   its Serial only ever runs the child at the next index; faultline does what it documents).
//!
//! A child that goes is cleaned up with everything under it: each object a node created is
//! deleted (a chaos object's finalizer recovers its targets), then the node. The parent gets the
//! event `RerunBySpecChanged` ("rerun by spec changed, remove children nodes: [a b]", Chaos
//! Mesh's) and its `activeChildren`/`finishedChildren` say what runs now.
//!
//! Deletion: the finalizer deletes every object the nodes created and waits until they are gone
//! (recovered) before the Workflow goes; the nodes follow through their owner references.

pub mod expr;
pub mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, LogParams, Patch,
    PatchParams, PostParams,
};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};

use crate::crd::node_conditions::{ABORTED, ACCOMPLISHED, CHAOS_INJECTED, DEADLINE_EXCEED};
use crate::crd::{
    ABORT_ANNOTATION, CONTROLLED_BY_LABEL, ChaosResource, ConditionalBranchStatus,
    ConditionalBranchesStatus, GROUP, LocalReference, StatusCheckStatus, TEMPLATE_ANNOTATION,
    Template, VERSION, WORKFLOW_LABEL, Workflow, WorkflowCondition, WorkflowNode,
    WorkflowNodeStatus, WorkflowStatus,
};
use crate::error::{Error, Result};
use crate::reconcile::{Context, FINALIZER, rfc3339};
pub use validate::Kind;

pub async fn reconcile(obj: Arc<Workflow>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciled("Workflow");
    let namespace = obj.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<Workflow> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(obj) => apply(&api, obj.as_ref(), &ctx).await,
            Finalizer::Cleanup(obj) => cleanup(obj.as_ref(), &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

pub fn error_policy(obj: Arc<Workflow>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(kind = "Workflow", name = %obj.name_any(), error = %error, "reconcile failed");
    ctx.metrics.failed("Workflow", error.metric_label());
    Action::requeue(ctx.settings.backoff_base.max(Duration::from_secs(1)))
}

async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Workflow".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(reason, error = %e, "cannot publish an event");
    }
}

fn set_condition(
    status: &mut WorkflowStatus,
    type_: &str,
    value: bool,
    reason: &str,
    message: Option<String>,
    now: &str,
) {
    let text = if value { "True" } else { "False" };
    match status.conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) if c.status == text && c.reason == reason && c.message == message => {}
        Some(c) => {
            c.status = text.into();
            c.reason = reason.into();
            c.message = message;
            c.start_time = Some(now.into());
        }
        None => status.conditions.push(WorkflowCondition {
            type_: type_.into(),
            status: text.into(),
            reason: reason.into(),
            message,
            start_time: Some(now.into()),
        }),
    }
}

async fn apply(api: &Api<Workflow>, wf: &Workflow, ctx: &Context) -> Result<Action> {
    let now = ctx.clock.now();
    let now_text = rfc3339(now);
    let name = wf.name_any();
    let before = wf.status.clone().unwrap_or_default();
    let mut status = before.clone();

    let problems = validate::problems(&wf.spec);
    if !problems.is_empty() {
        let message = problems
            .iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect::<Vec<_>>()
            .join("; ");
        set_condition(
            &mut status,
            "Accepted",
            false,
            "InvalidSpec",
            Some(message.clone()),
            &now_text,
        );
        if status != before {
            publish(ctx, wf, EventType::Warning, "InvalidSpec", message).await;
        }
        write_status(api, &name, &before, &status).await?;
        return Ok(Action::await_change());
    }
    status.conditions.retain(|c| c.type_ != "Accepted");

    let mut pass = Pass::new(ctx, wf, now).await?;
    let entry = pass
        .nodes
        .iter()
        .find(|n| n.parent.as_deref() == Some(name.as_str()))
        .map(|n| n.obj.name_any());
    let entry = match entry {
        Some(entry) => entry,
        None => {
            let template = pass.template(&wf.spec.entry)?;
            let created = pass.create_node(None, &template).await?;
            publish(
                ctx,
                wf,
                EventType::Normal,
                "EntryCreated",
                format!("entry node {created} created"),
            )
            .await;
            status.start_time = Some(now_text.clone());
            created
        }
    };
    status.entry_node = Some(entry.clone());
    if status.start_time.is_none() {
        status.start_time = Some(now_text.clone());
    }
    set_condition(&mut status, "Scheduled", true, "", None, &now_text);

    // Until nothing changes: a finished child lets its Serial parent start the next in the
    // same pass.
    for _ in 0..64 {
        let mut changed = false;
        for i in 0..pass.nodes.len() {
            if pass.nodes[i].removed {
                continue;
            }
            // Boxed: a node's step is a large future (a task's pod, logs, branches).
            changed |= Box::pin(pass.step(i)).await?;
        }
        if !changed {
            break;
        }
    }
    pass.write_nodes().await?;

    let entry_finished = pass
        .nodes
        .iter()
        .find(|n| n.obj.name_any() == entry)
        .is_some_and(|n| n.status.finished());
    set_condition(
        &mut status,
        "Accomplished",
        entry_finished,
        "",
        None,
        &now_text,
    );
    if entry_finished && status.end_time.is_none() {
        status.end_time = Some(now_text.clone());
        publish(
            ctx,
            wf,
            EventType::Normal,
            "WorkflowAccomplished",
            "the entry node has finished".into(),
        )
        .await;
    }
    write_status(api, &name, &before, &status).await?;

    if entry_finished {
        return Ok(Action::await_change());
    }
    // The next deadline, or a look after a while (a StatusCheck's or a Task's progress also
    // wakes the workflow through the watches).
    let mut wake = ctx.settings.resync.min(ctx.settings.no_match_retry);
    for node in pass
        .nodes
        .iter()
        .filter(|n| !n.removed && !n.status.finished())
    {
        if let Some(d) = node
            .obj
            .spec
            .deadline
            .as_deref()
            .and_then(|d| d.parse::<Timestamp>().ok())
        {
            let ms = u64::try_from(d.as_millisecond() - now.as_millisecond()).unwrap_or(0);
            wake = wake.min(Duration::from_millis(ms));
        }
    }
    Ok(Action::requeue(wake.max(Duration::from_secs(1))))
}

async fn write_status(
    api: &Api<Workflow>,
    name: &str,
    before: &WorkflowStatus,
    status: &WorkflowStatus,
) -> Result<()> {
    if before == status {
        return Ok(());
    }
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": status })),
    )
    .await?;
    Ok(())
}

/// A node as the pass sees it.
struct Node {
    obj: WorkflowNode,
    /// The node (or, for the entry, the Workflow) that created it.
    parent: Option<String>,
    status: WorkflowNodeStatus,
    /// Cleaned up in this pass (a rerun): deleted, no longer stepped or written.
    removed: bool,
}

struct Pass<'a> {
    ctx: &'a Context,
    wf: &'a Workflow,
    namespace: String,
    now: Timestamp,
    nodes: Vec<Node>,
    aborted: bool,
    /// Nodes created, removed or respecified so far (a step that changes it changed something).
    edits: usize,
}

/// The API of a kind the workflow creates (chaos kinds, Schedule, StatusCheck).
fn dynamic_api(ctx: &Context, namespace: &str, kind: &str) -> (Api<DynamicObject>, ApiResource) {
    let plural = match kind {
        "Schedule" => "schedules".to_owned(),
        "StatusCheck" => "statuschecks".to_owned(),
        chaos => chaos.to_lowercase(),
    };
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, kind), &plural);
    (
        Api::namespaced_with(ctx.client.clone(), namespace, &resource),
        resource,
    )
}

fn annotation_true(wf: &Workflow) -> bool {
    wf.annotations()
        .get(ABORT_ANNOTATION)
        .is_some_and(|v| v == "true")
}

impl<'a> Pass<'a> {
    async fn new(ctx: &'a Context, wf: &'a Workflow, now: Timestamp) -> Result<Pass<'a>> {
        let namespace = wf.namespace().ok_or(Error::MissingMetadata("namespace"))?;
        let api: Api<WorkflowNode> = Api::namespaced(ctx.client.clone(), &namespace);
        let selector = format!("{WORKFLOW_LABEL}={}", wf.name_any());
        let mut listed = api
            .list(&ListParams::default().labels(&selector))
            .await?
            .items;
        listed.sort_by(|a, b| {
            (a.spec.start_time.as_str(), a.name_any())
                .cmp(&(b.spec.start_time.as_str(), b.name_any()))
        });
        let nodes = listed
            .into_iter()
            .map(|obj| Node {
                parent: obj.labels().get(CONTROLLED_BY_LABEL).cloned(),
                status: obj.status.clone().unwrap_or_default(),
                obj,
                removed: false,
            })
            .collect();
        Ok(Pass {
            ctx,
            wf,
            namespace,
            now,
            nodes,
            aborted: annotation_true(wf),
            edits: 0,
        })
    }

    /// The template of that name; a node started from an older spec may name one the Workflow
    /// no longer has (Chaos Mesh's NoSuchTemplate): an error, retried, until the spec has it.
    fn template(&self, name: &str) -> Result<Template> {
        self.wf
            .spec
            .templates
            .iter()
            .find(|t| t.name == name)
            .cloned()
            .ok_or_else(|| Error::Build(format!("a node: the workflow has no template {name:?}")))
    }

    fn children(&self, parent: &str) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| !self.nodes[i].removed && self.nodes[i].parent.as_deref() == Some(parent))
            .collect()
    }

    /// Creates the node of `template` under `parent` (None: the entry); returns its name.
    async fn create_node(&mut self, parent: Option<usize>, template: &Template) -> Result<String> {
        let wf_name = self.wf.name_any();
        let (owner_kind, owner_name, owner_uid) = match parent {
            Some(p) => (
                "WorkflowNode",
                self.nodes[p].obj.name_any(),
                self.nodes[p].obj.meta().uid.clone().unwrap_or_default(),
            ),
            None => (
                "Workflow",
                wf_name.clone(),
                self.wf.meta().uid.clone().unwrap_or_default(),
            ),
        };
        let deadline = template
            .deadline
            .as_deref()
            .and_then(|d| crate::plan::parse_go_duration(d).ok())
            .map(|d| {
                let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2);
                rfc3339(
                    Timestamp::from_millisecond(self.now.as_millisecond().saturating_add(ms))
                        .unwrap_or(Timestamp::MAX),
                )
            });
        let name = format!("{}-{}", template.name, crate::schedule::suffix(self.ctx));
        let mut spec = json!({
            "templateName": template.name,
            "workflowName": wf_name,
            "type": template.template_type,
            "startTime": rfc3339(self.now),
            "deadline": deadline,
            "task": template.task,
            "children": template.children,
            "conditionalBranches": template.conditional_branches,
            "schedule": template.schedule,
            "statusCheck": template.status_check,
            "abortWithStatusCheck": template.abort_with_status_check,
        });
        if let Some(map) = spec.as_object_mut() {
            map.extend(template.chaos.fields());
            map.retain(|_, v| !v.is_null());
        }
        let node: WorkflowNode = serde_json::from_value(json!({
            "apiVersion": WorkflowNode::api_version(&()),
            "kind": "WorkflowNode",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {CONTROLLED_BY_LABEL: owner_name, WORKFLOW_LABEL: wf_name},
                "annotations": {TEMPLATE_ANNOTATION: followed(template)},
                "ownerReferences": [{
                    "apiVersion": format!("{GROUP}/{VERSION}"),
                    "kind": owner_kind,
                    "name": owner_name,
                    "uid": owner_uid,
                    "controller": true,
                    "blockOwnerDeletion": true,
                }],
            },
            "spec": spec,
        }))
        .map_err(|e| Error::Build(format!("a workflow node: {e}")))?;
        let api: Api<WorkflowNode> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let created = api.create(&PostParams::default(), &node).await?;
        self.nodes.push(Node {
            parent: Some(owner_name),
            status: created.status.clone().unwrap_or_default(),
            obj: created,
            removed: false,
        });
        self.edits += 1;
        Ok(name)
    }

    /// One step of node `i`; true if its status changed or it created something.
    async fn step(&mut self, i: usize) -> Result<bool> {
        let before = self.nodes[i].status.clone();
        let edits = self.edits;
        let mut st = before.clone();
        let name = self.nodes[i].obj.name_any();
        let mut spec = self.nodes[i].obj.spec.clone();
        let parent = self.nodes[i]
            .parent
            .as_deref()
            .and_then(|p| self.nodes.iter().find(|n| n.obj.name_any() == p));
        let is_entry = self.nodes[i].parent.as_deref() == Some(self.wf.name_any().as_str());
        let deadline_passes_down = |t: &str| matches!(t, "Serial" | "Parallel" | "Task");

        if !st.finished() {
            if is_entry && self.aborted {
                st.set(ABORTED, true, "WorkflowAborted");
            } else if parent.is_some_and(|p| p.status.is_true(ABORTED)) {
                st.set(ABORTED, true, "ParentNodeAborted");
            } else if spec
                .deadline
                .as_deref()
                .and_then(|d| d.parse::<Timestamp>().ok())
                .is_some_and(|d| self.now >= d)
            {
                st.set(DEADLINE_EXCEED, true, "NodeDeadlineExceed");
            } else if parent.is_some_and(|p| {
                p.status.is_true(DEADLINE_EXCEED) && deadline_passes_down(&p.obj.spec.type_)
            }) {
                st.set(DEADLINE_EXCEED, true, "ParentNodeDeadlineExceed");
            }
        }

        let kind = Kind::of(&spec.type_);
        if !st.finished() && matches!(kind, Some(Kind::Serial | Kind::Parallel | Kind::Task)) {
            self.follow_template(i, &mut st).await?;
            spec = self.nodes[i].obj.spec.clone();
        }
        if st.finished() {
            // What the node created goes (a chaos object's finalizer recovers its targets).
            if st.is_true(CHAOS_INJECTED)
                && let Some(resource) = st.chaos_resource.clone()
            {
                let (api, _) = dynamic_api(self.ctx, &self.namespace, &resource.kind);
                match api.delete(&resource.name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
                st.set(CHAOS_INJECTED, false, "ChaosCRDeleted");
            }
        } else {
            match kind {
                Some(Kind::Serial) => {
                    // Kept while they match `children` position by position; the first that
                    // does not goes, with every one after it.
                    let children = self.children(&name);
                    let kept = children
                        .iter()
                        .zip(&spec.children)
                        .take_while(|&(&c, t)| &self.nodes[c].obj.spec.template_name == t)
                        .count();
                    if kept < children.len() {
                        self.rerun(i, children[kept..].to_vec()).await?;
                    }
                    let children = self.children(&name);
                    if children.iter().all(|&c| self.nodes[c].status.finished()) {
                        match spec.children.get(children.len()) {
                            Some(next) => {
                                let template = self.template(next)?;
                                self.create_node(Some(i), &template).await?;
                            }
                            None => st.set(ACCOMPLISHED, true, "NodeAccomplished"),
                        }
                    }
                }
                Some(Kind::Parallel) => {
                    let children = self.children(&name);
                    if !children.is_empty() && !self.same_templates(&children, &spec.children) {
                        self.rerun(i, children).await?;
                    }
                    let children = self.children(&name);
                    if children.is_empty() && !spec.children.is_empty() {
                        for child in &spec.children {
                            let template = self.template(child)?;
                            self.create_node(Some(i), &template).await?;
                        }
                    } else if children.iter().all(|&c| self.nodes[c].status.finished()) {
                        st.set(ACCOMPLISHED, true, "NodeAccomplished");
                    }
                }
                Some(Kind::Suspend) | None => {}
                Some(Kind::Chaos(type_)) => {
                    if st.chaos_resource.is_none() {
                        let body = spec
                            .chaos
                            .fields()
                            .remove(type_.field())
                            .unwrap_or(Value::Null);
                        let created = self.create_object(i, type_.as_str(), body).await?;
                        st.chaos_resource = Some(created);
                        st.set(CHAOS_INJECTED, true, "ChaosCRCreated");
                    }
                }
                Some(Kind::Schedule) => {
                    if st.chaos_resource.is_none() {
                        let body = serde_json::to_value(&spec.schedule).unwrap_or(Value::Null);
                        st.chaos_resource = Some(self.create_object(i, "Schedule", body).await?);
                        st.set(CHAOS_INJECTED, true, "ChaosCRCreated");
                    }
                }
                Some(Kind::StatusCheck) => match st.chaos_resource.clone() {
                    None => {
                        let body = serde_json::to_value(&spec.status_check).unwrap_or(Value::Null);
                        st.chaos_resource = Some(self.create_object(i, "StatusCheck", body).await?);
                        st.set(CHAOS_INJECTED, true, "StatusCheckCreated");
                    }
                    Some(resource) => {
                        let (api, _) = dynamic_api(self.ctx, &self.namespace, "StatusCheck");
                        let check = api.get_opt(&resource.name).await?;
                        let check: StatusCheckStatus = check
                            .and_then(|c| c.data.get("status").cloned())
                            .and_then(|s| serde_json::from_value(s).ok())
                            .unwrap_or_default();
                        if check.completed() {
                            if spec.abort_with_status_check && check.failed() {
                                st.set(ABORTED, true, "StatusCheckNotExceedSuccessThreshold");
                                self.abort_workflow(&name).await?;
                            } else {
                                st.set(ACCOMPLISHED, true, "StatusCheckCompleted");
                            }
                        }
                    }
                },
                Some(Kind::Task) => Box::pin(self.step_task(i, &mut st)).await?,
            }
        }

        if matches!(kind, Some(Kind::Serial | Kind::Parallel | Kind::Task)) {
            let children = self.children(&name);
            let refs = |finished: bool| {
                children
                    .iter()
                    .filter(|&&c| self.nodes[c].status.finished() == finished)
                    .map(|&c| LocalReference {
                        name: self.nodes[c].obj.name_any(),
                    })
                    .collect::<Vec<_>>()
            };
            st.active_children = refs(false);
            st.finished_children = refs(true);
        }
        let phase = if st.is_true(ABORTED) {
            "Aborted"
        } else if st.is_true(DEADLINE_EXCEED) {
            "DeadlineExceeded"
        } else if st.is_true(ACCOMPLISHED) {
            "Accomplished"
        } else {
            "Running"
        };
        st.phase = Some(phase.into());
        if st.finished() && st.finish_time.is_none() {
            st.finish_time = Some(rfc3339(self.now));
        }
        let changed = st != before || self.edits != edits;
        self.nodes[i].status = st;
        Ok(changed)
    }

    /// A Task: its pod, then its branches once the pod has ended, then its branches' nodes.
    async fn step_task(&mut self, i: usize, st: &mut WorkflowNodeStatus) -> Result<()> {
        let spec = self.nodes[i].obj.spec.clone();
        let name = self.nodes[i].obj.name_any();
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let Some(resource) = st.chaos_resource.clone() else {
            // A pod made before the node's status was written is adopted.
            let selector = format!("{CONTROLLED_BY_LABEL}={name}");
            if let Some(existing) = pods
                .list(&ListParams::default().labels(&selector))
                .await?
                .items
                .first()
            {
                st.chaos_resource = Some(ChaosResource {
                    api_group: None,
                    kind: "Pod".into(),
                    name: existing.name_any(),
                });
                return Ok(());
            }
            let task = spec.task.clone().unwrap_or_default();
            let pod_name = format!("{name}-{}", crate::schedule::suffix(self.ctx));
            let mut labels: BTreeMap<String, String> = task.labels.clone();
            labels.insert(CONTROLLED_BY_LABEL.into(), name.clone());
            labels.insert(WORKFLOW_LABEL.into(), self.wf.name_any());
            let pod: Pod = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod_name, "namespace": self.namespace, "labels": labels,
                    "ownerReferences": [self.owner(i)]},
                "spec": {"restartPolicy": "Never", "containers": [task.container],
                    "volumes": task.volumes},
            }))
            .map_err(|e| Error::Build(format!("a task pod: {e}")))?;
            pods.create(&PostParams::default(), &pod).await?;
            st.chaos_resource = Some(ChaosResource {
                api_group: None,
                kind: "Pod".into(),
                name: pod_name.clone(),
            });
            publish(
                self.ctx,
                &self.nodes[i].obj,
                EventType::Normal,
                "TaskPodSpawned",
                format!("pod {pod_name} started"),
            )
            .await;
            return Ok(());
        };
        // Chaos Mesh evaluates again when the branches no longer match their results (the
        // node's conditionalBranches edited).
        if st.conditional_branches_status.as_ref().is_some_and(|c| {
            !c.branches
                .iter()
                .map(|b| &b.target)
                .eq(spec.conditional_branches.iter().map(|b| &b.target))
        }) {
            st.conditional_branches_status = None;
        }
        if st.conditional_branches_status.is_none() {
            let Some(pod) = pods.get_opt(&resource.name).await? else {
                return Ok(());
            };
            let phase = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default();
            if phase != "Succeeded" && phase != "Failed" {
                return Ok(());
            }
            let container = spec
                .task
                .as_ref()
                .and_then(|t| t.container.as_ref())
                .and_then(|c| c.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let exit_code = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|all| all.iter().find(|c| c.name == container))
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.terminated.as_ref())
                .map(|t| i64::from(t.exit_code));
            let stdout = pods
                .logs(
                    &resource.name,
                    &LogParams {
                        container: Some(container.clone()),
                        ..LogParams::default()
                    },
                )
                .await
                .map(|s| s.trim().to_owned())
                .ok();
            let mut env = BTreeMap::new();
            if let Some(code) = exit_code {
                env.insert("exitCode".to_owned(), expr::Value::Int(code));
            }
            if let Some(out) = &stdout {
                env.insert("stdout".to_owned(), expr::Value::Str(out.clone()));
            }
            let branches: Vec<ConditionalBranchStatus> = spec
                .conditional_branches
                .iter()
                .map(|b| ConditionalBranchStatus {
                    target: b.target.clone(),
                    evaluation_result: match expr::eval_bool(&b.expression, &env) {
                        Ok(true) => "True",
                        Ok(false) => "False",
                        Err(_) => "Unknown",
                    }
                    .into(),
                })
                .collect();
            let context = json!({"exitCode": exit_code, "stdout": stdout}).to_string();
            let chosen: Vec<String> = branches
                .iter()
                .filter(|b| b.evaluation_result == "True")
                .map(|b| b.target.clone())
                .collect();
            st.conditional_branches_status = Some(ConditionalBranchesStatus {
                branches,
                context: vec![context],
            });
            publish(
                self.ctx,
                &self.nodes[i].obj,
                EventType::Normal,
                "ConditionalBranchesSelected",
                format!(
                    "pod {} ended ({phase}); branches chosen: {chosen:?}",
                    resource.name
                ),
            )
            .await;
            // Evaluated again after its branches changed: the children follow the choice.
            let children = self.children(&name);
            if !children.is_empty() && !self.same_templates(&children, &chosen) {
                self.rerun(i, children).await?;
            }
            if self.children(&name).is_empty() {
                for target in chosen {
                    let template = self.template(&target)?;
                    self.create_node(Some(i), &template).await?;
                }
            }
            return Ok(());
        }
        let children = self.children(&name);
        if children.iter().all(|&c| self.nodes[c].status.finished()) {
            st.set(ACCOMPLISHED, true, "NodeAccomplished");
        }
        Ok(())
    }

    /// Whether `children` run exactly the templates named (as sets, as Chaos Mesh compares).
    fn same_templates(&self, children: &[usize], names: &[String]) -> bool {
        let running: std::collections::BTreeSet<&str> = children
            .iter()
            .map(|&c| self.nodes[c].obj.spec.template_name.as_str())
            .collect();
        let wanted: std::collections::BTreeSet<&str> = names.iter().map(String::as_str).collect();
        running == wanted
    }

    /// A running Serial, Parallel or Task node takes its template's new `children` or
    /// `conditionalBranches` (new branches are evaluated again) once the template has changed
    /// since the node last took it. A template gone from the Workflow, or now of another type,
    /// leaves the node as it is; so does one unchanged (the node may have been edited).
    async fn follow_template(&mut self, i: usize, st: &mut WorkflowNodeStatus) -> Result<()> {
        let obj = &self.nodes[i].obj;
        let spec = &obj.spec;
        let Ok(template) = self.template(&spec.template_name) else {
            return Ok(());
        };
        if template.template_type != spec.type_ {
            return Ok(());
        }
        let current = followed(&template);
        let recorded = obj.annotations().get(TEMPLATE_ANNOTATION);
        if recorded == Some(&current) {
            return Ok(());
        }
        let mut patch = serde_json::Map::new();
        let mut changes = Vec::new();
        // A node made before the annotation existed: which of a changed template and an edited
        // node made them differ is unknown, so the node is only marked (Chaos Mesh's rules read
        // it as it is).
        let marking = recorded.is_none();
        if !marking && template.children != spec.children {
            changes.push(format!(
                "children [{}] -> [{}]",
                spec.children.join(" "),
                template.children.join(" ")
            ));
            patch.insert("children".into(), json!(template.children));
        }
        if !marking && template.conditional_branches != spec.conditional_branches {
            let targets = |b: &[crate::crd::ConditionalBranch]| {
                b.iter()
                    .map(|b| b.target.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            changes.push(format!(
                "conditionalBranches [{}] -> [{}]",
                targets(&spec.conditional_branches),
                targets(&template.conditional_branches)
            ));
            patch.insert(
                "conditionalBranches".into(),
                json!(template.conditional_branches),
            );
            // Chaos Mesh evaluates again when the branches no longer match their results.
            st.conditional_branches_status = None;
        }
        let name = self.nodes[i].obj.name_any();
        let api: Api<WorkflowNode> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let updated = api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({
                    "metadata": {"annotations": {TEMPLATE_ANNOTATION: current}},
                    "spec": patch,
                })),
            )
            .await?;
        self.nodes[i].obj.spec = updated.spec;
        self.nodes[i].obj.metadata.annotations = updated.metadata.annotations;
        self.edits += 1;
        if changes.is_empty() {
            return Ok(());
        }
        publish(
            self.ctx,
            &self.nodes[i].obj,
            EventType::Normal,
            "NodeSpecUpdated",
            format!(
                "the workflow's template {} changed: {}",
                template.name,
                changes.join(", ")
            ),
        )
        .await;
        Ok(())
    }

    /// Chaos Mesh's RerunBySpecChanged: `doomed` children of node `i` are cleaned up.
    async fn rerun(&mut self, i: usize, doomed: Vec<usize>) -> Result<()> {
        let names: Vec<String> = doomed
            .iter()
            .map(|&c| self.nodes[c].obj.name_any())
            .collect();
        publish(
            self.ctx,
            &self.nodes[i].obj,
            EventType::Normal,
            "RerunBySpecChanged",
            format!(
                "rerun by spec changed, remove children nodes: [{}]",
                names.join(" ")
            ),
        )
        .await;
        for c in doomed {
            self.remove(c).await?;
        }
        Ok(())
    }

    /// Node `c` and every node under it: what each created is deleted (a chaos object's
    /// finalizer recovers its targets), then the node.
    async fn remove(&mut self, c: usize) -> Result<()> {
        let mut pending = vec![c];
        let mut order = Vec::new();
        while let Some(n) = pending.pop() {
            order.push(n);
            pending.extend(self.children(&self.nodes[n].obj.name_any()));
        }
        let api: Api<WorkflowNode> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        for n in order {
            if let Some(resource) = self.nodes[n].status.chaos_resource.clone() {
                delete_resource(self.ctx, &self.namespace, &resource).await?;
            }
            match api
                .delete(&self.nodes[n].obj.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            self.nodes[n].removed = true;
            self.edits += 1;
        }
        Ok(())
    }

    fn owner(&self, i: usize) -> Value {
        let node = &self.nodes[i].obj;
        json!({
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "kind": "WorkflowNode",
            "name": node.name_any(),
            "uid": node.meta().uid.clone().unwrap_or_default(),
            "controller": true,
            "blockOwnerDeletion": true,
        })
    }

    /// Creates a chaos object, Schedule or StatusCheck for node `i`, owned by it.
    async fn create_object(&self, i: usize, kind: &str, spec: Value) -> Result<ChaosResource> {
        let node = self.nodes[i].obj.name_any();
        let (api, resource) = dynamic_api(self.ctx, &self.namespace, kind);
        // One made before its node's status was written (a failed pass, a restart) is adopted,
        // not made twice (Chaos Mesh finds a node's objects by this label too).
        let selector = format!("{CONTROLLED_BY_LABEL}={node}");
        if let Some(existing) = api
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
            .first()
        {
            return Ok(ChaosResource {
                api_group: Some(GROUP.into()),
                kind: kind.into(),
                name: existing.name_any(),
            });
        }
        let name = format!("{node}-{}", crate::schedule::suffix(self.ctx));
        let mut object = DynamicObject::new(&name, &resource).within(&self.namespace);
        object.metadata.labels = Some(BTreeMap::from([
            (CONTROLLED_BY_LABEL.to_owned(), node.clone()),
            (WORKFLOW_LABEL.to_owned(), self.wf.name_any()),
        ]));
        object.metadata.owner_references = serde_json::from_value(json!([self.owner(i)])).ok();
        object.data = json!({ "spec": spec });
        api.create(&PostParams::default(), &object).await?;
        publish(
            self.ctx,
            &self.nodes[i].obj,
            EventType::Normal,
            "ChaosCRCreated",
            format!("{kind} {name} created"),
        )
        .await;
        Ok(ChaosResource {
            api_group: Some(GROUP.into()),
            kind: kind.into(),
            name,
        })
    }

    /// A failed StatusCheck with abortWithStatusCheck: the workflow's abort annotation.
    async fn abort_workflow(&mut self, node: &str) -> Result<()> {
        if self.aborted {
            return Ok(());
        }
        let api: Api<Workflow> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let patch = json!({"metadata": {"annotations": {ABORT_ANNOTATION: "true"}}});
        api.patch(
            &self.wf.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        self.aborted = true;
        publish(
            self.ctx,
            self.wf,
            EventType::Warning,
            "WorkflowAborted",
            format!("status check {node} failed: every running node stops"),
        )
        .await;
        Ok(())
    }

    async fn write_nodes(&self) -> Result<()> {
        let api: Api<WorkflowNode> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        for node in self.nodes.iter().filter(|n| !n.removed) {
            let old = node.obj.status.clone().unwrap_or_default();
            if old == node.status {
                continue;
            }
            // A merge patch keeps what it does not name: a field now empty is named, as null.
            let mut status = serde_json::to_value(&node.status)
                .map_err(|e| Error::Build(format!("a workflow node's status: {e}")))?;
            if let (Ok(Value::Object(old)), Some(new)) =
                (serde_json::to_value(&old), status.as_object_mut())
            {
                for key in old.keys() {
                    new.entry(key.clone()).or_insert(Value::Null);
                }
            }
            api.patch_status(
                &node.obj.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": status })),
            )
            .await?;
        }
        Ok(())
    }
}

/// Deletion: every object a node created is deleted (a chaos object's finalizer recovers its
/// targets, a Schedule's deletes its children); the Workflow goes once none is left.
async fn cleanup(wf: &Workflow, ctx: &Context) -> Result<Action> {
    let namespace = wf.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<WorkflowNode> = Api::namespaced(ctx.client.clone(), &namespace);
    let selector = format!("{WORKFLOW_LABEL}={}", wf.name_any());
    let nodes = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    let mut waiting = Vec::new();
    for node in &nodes {
        let Some(resource) = node.status.as_ref().and_then(|s| s.chaos_resource.as_ref()) else {
            continue;
        };
        if !delete_resource(ctx, &namespace, resource).await? {
            waiting.push(format!("{} {}", resource.kind, resource.name));
        }
    }
    if waiting.is_empty() {
        return Ok(Action::await_change());
    }
    Err(Error::RecoveryIncomplete {
        remaining: waiting.len(),
        detail: format!(
            "waiting for what the workflow started to be recovered and deleted: {}",
            waiting.join(", ")
        ),
    })
}

/// Deletes what a node created (a task's Pod, or an object of ours); true once it is gone,
/// false while its finalizer is still at work.
async fn delete_resource(ctx: &Context, namespace: &str, resource: &ChaosResource) -> Result<bool> {
    let deleted = if resource.kind == "Pod" {
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
        pods.delete(&resource.name, &DeleteParams::default())
            .await
            .map(|e| e.is_right())
    } else {
        let (objects, _) = dynamic_api(ctx, namespace, &resource.kind);
        objects
            .delete(&resource.name, &DeleteParams::default())
            .await
            .map(|e| e.is_right())
    };
    match deleted {
        Ok(gone) => Ok(gone),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// What a node takes from its template and follows when it changes (TEMPLATE_ANNOTATION).
fn followed(template: &Template) -> String {
    json!({
        "children": template.children,
        "conditionalBranches": template.conditional_branches,
    })
    .to_string()
}

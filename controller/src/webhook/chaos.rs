//! Admission for the chaos kinds, as Chaos Mesh's webhooks do it: `/validate-chaos` refuses an
//! object whose spec the controller would refuse (every field named, with its reason, as
//! `kubectl apply` prints them) and a change to the spec of an existing one ("Cannot update
//! chaos spec"); `/default-chaos` fills in what Chaos Mesh's defaulting fills in (the selectors'
//! namespaces, `direction: to`, netem's jitter and correlations, the device without `@ifN`).
//! Validation is the controller's own ([`crate::plan::preview::validate`]), so what the webhook
//! lets in, the reconciler accepts.

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use serde_json::{Value, json};

use super::review::{
    ADMISSION_V1, BadReview, Response, ReviewOut, Status, StatusCause, StatusDetails,
};
use crate::plan::preview;

/// The path the ValidatingWebhookConfiguration calls.
pub const VALIDATE_PATH: &str = "/validate-chaos";
/// The path the defaulting MutatingWebhookConfiguration calls.
pub const DEFAULT_PATH: &str = "/default-chaos";

fn read(body: &[u8]) -> Result<(String, AdmissionRequest<DynamicObject>), BadReview> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|e| BadReview(e.to_string()))?;
    let api_version = review.types.api_version.clone();
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|_| BadReview("no request".into()))?;
    Ok((api_version, request))
}

fn write(api_version: &str, response: Response) -> Result<Vec<u8>, BadReview> {
    let review = ReviewOut {
        api_version: if api_version.is_empty() {
            ADMISSION_V1
        } else {
            api_version
        },
        kind: "AdmissionReview",
        response,
    };
    serde_json::to_vec(&review).map_err(|e| BadReview(e.to_string()))
}

/// The object as the controller reads it: kind and apiVersion from the request when the object
/// lacks them, the namespace from the request.
fn object_value(request: &AdmissionRequest<DynamicObject>, object: &DynamicObject) -> Value {
    let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
    if value
        .get("kind")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        value["kind"] = json!(request.kind.kind);
        value["apiVersion"] = json!(format!("{}/{}", request.kind.group, request.kind.version));
    }
    if let Some(ns) = &request.namespace
        && value["metadata"].get("namespace").is_none()
        && value["metadata"].is_object()
    {
        value["metadata"]["namespace"] = json!(ns);
    }
    if value["metadata"].get("name").is_none() && value["metadata"].is_object() {
        value["metadata"]["name"] = json!(request.name);
    }
    value
}

/// Answers a validation review.
pub fn validate_review(body: &[u8]) -> Result<Vec<u8>, BadReview> {
    let (api_version, request) = read(body)?;
    write(&api_version, validate(&request))
}

pub fn validate(request: &AdmissionRequest<DynamicObject>) -> Response {
    let allow = Response::allow(&request.uid);
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return allow;
    }
    let Some(object) = &request.object else {
        return allow;
    };
    let value = object_value(request, object);
    let name = request.name.clone();
    let kind = request.kind.kind.clone();
    let deny = |causes: Vec<StatusCause>| {
        let list: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let mut response = allow.clone();
        response.allowed = false;
        response.status = Some(Status {
            code: 422,
            message: format!("{kind} {name:?} is invalid: {}", list.join("; ")),
            reason: Some("Invalid".into()),
            details: Some(StatusDetails {
                name: name.clone(),
                group: request.kind.group.clone(),
                kind: kind.clone(),
                causes,
            }),
        });
        response
    };
    // A Schedule's or a Workflow's spec may change (Chaos Mesh validates the new one); a chaos
    // object's not.
    if request.operation == Operation::Update && !matches!(kind.as_str(), "Schedule" | "Workflow") {
        let old = request
            .old_object
            .as_ref()
            .map(|o| object_value(request, o));
        let spec_changed = old.is_some_and(|old| old.get("spec") != value.get("spec"));
        if spec_changed {
            // Chaos Mesh: ErrCanNotUpdateChaos.
            return deny(vec![StatusCause {
                reason: "FieldValueForbidden".into(),
                message: "Cannot update chaos spec".into(),
                field: "spec".into(),
            }]);
        }
        // An unchanged spec (a finalizer or annotation update) is let through, so an experiment
        // applied before the webhook existed can still be paused, recovered and deleted.
        return allow;
    }
    let (verdict, _) = preview::validate(&value);
    if verdict.accepted {
        return allow;
    }
    deny(
        verdict
            .problems
            .into_iter()
            .map(|p| StatusCause {
                reason: "FieldValueInvalid".into(),
                message: p.message,
                field: p.field,
            })
            .collect(),
    )
}

/// Answers a defaulting review with a JSON Patch.
pub fn default_review(body: &[u8]) -> Result<Vec<u8>, BadReview> {
    let (api_version, request) = read(body)?;
    write(&api_version, default(&request))
}

pub fn default(request: &AdmissionRequest<DynamicObject>) -> Response {
    let allow = Response::allow(&request.uid);
    if request.operation != Operation::Create {
        return allow;
    }
    let Some(object) = &request.object else {
        return allow;
    };
    let before = serde_json::to_value(object).unwrap_or(Value::Null);
    let namespace = request
        .namespace
        .clone()
        .or_else(|| object.metadata.namespace.clone())
        .unwrap_or_else(|| "default".into());
    let mut after = before.clone();
    apply_defaults(&request.kind.kind, &namespace, &mut after);
    let patch = json_patch::diff(&before, &after);
    if patch.0.is_empty() {
        return allow;
    }
    match serde_json::to_vec(&patch) {
        Ok(bytes) => allow.with_patch(&bytes),
        Err(e) => allow.warn(format!(
            "faultline webhook: cannot serialize the defaults: {e}"
        )),
    }
}

/// Chaos Mesh's defaults (PodSelector.Default, Direction.Default, NetworkChaosSpec.Default,
/// the `default` tags of DelaySpec, LossSpec, DuplicateSpec, CorruptSpec and ReorderSpec).
pub fn apply_defaults(kind: &str, namespace: &str, object: &mut Value) {
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let default_namespaces = |selector: Option<&mut Value>| {
        if let Some(selector) = selector.and_then(Value::as_object_mut) {
            let empty = selector
                .get("namespaces")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
            if empty {
                selector.insert("namespaces".into(), json!([namespace]));
            }
        }
    };
    default_namespaces(spec.get_mut("selector"));
    if kind != "NetworkChaos" {
        return;
    }
    if let Some(target) = spec.get_mut("target") {
        default_namespaces(target.get_mut("selector"));
    }
    if spec
        .get("direction")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        spec.insert("direction".into(), json!("to"));
    }
    if let Some(device) = spec.get("device").and_then(Value::as_str)
        && let Some((name, _)) = device.split_once('@')
    {
        let name = name.to_owned();
        spec.insert("device".into(), json!(name));
    }
    let set_empty = |block: Option<&mut Value>, field: &str, value: &str| {
        if let Some(block) = block.and_then(Value::as_object_mut) {
            let empty = block
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty);
            if empty {
                block.insert(field.into(), json!(value));
            }
        }
    };
    if let Some(delay) = spec.get_mut("delay") {
        set_empty(Some(delay), "jitter", "0ms");
        set_empty(Some(delay), "correlation", "0");
        set_empty(delay.get_mut("reorder"), "correlation", "0");
    }
    for block in ["loss", "duplicate", "corrupt"] {
        set_empty(spec.get_mut(block), "correlation", "0");
    }
}

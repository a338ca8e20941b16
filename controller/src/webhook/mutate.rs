//! A pod and an injection → the RFC 6902 JSON Patch that injects it.
//!
//! Semantics (those of the original sidecar documentation): init containers and containers are
//! appended; volumes are added, one with the same name as the pod's is replaced; volume mounts
//! are added to every application container, one with the same name replaced; `postStart`
//! commands run before the named container's own command, by wrapping it in
//! `/bin/sh -c '<postStart> && exec "$@"' faultline-poststart <command> <args>`, so the original
//! command and arguments still run afterwards (as PID 1 of the container, through exec).

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::{Container, Pod, VolumeMount};
use serde::Serialize;
use serde_json::Value;

use super::config::Injection;

/// The annotation suffix marking an injected pod.
pub const STATUS: &str = "status";
pub const INJECTED: &str = "injected";
/// `$0` of the wrapping shell, which names it in `ps`.
pub const WRAPPER_NAME: &str = "faultline-poststart";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MutateError {
    #[error(
        "postStart names container {container:?}, which the pod does not have (containers: {have})"
    )]
    NoSuchContainer { container: String, have: String },
    #[error(
        "postStart of container {container:?}: the pod spec gives no command to wrap and the image's entrypoint is unknown to the webhook; set the container's command (and args) in the pod spec"
    )]
    NoCommand { container: String },
    #[error("the pod has no spec")]
    NoSpec,
    #[error("cannot serialize {what}: {reason}")]
    Serialize { what: &'static str, reason: String },
}

fn ptr(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

fn json<T: Serialize>(what: &'static str, value: &T) -> Result<Value, MutateError> {
    serde_json::to_value(value).map_err(|e| MutateError::Serialize {
        what,
        reason: e.to_string(),
    })
}

fn add(ops: &mut Vec<PatchOperation>, path: PointerBuf, value: Value) {
    ops.push(PatchOperation::Add(AddOperation { path, value }));
}

fn replace(ops: &mut Vec<PatchOperation>, path: PointerBuf, value: Value) {
    ops.push(PatchOperation::Replace(ReplaceOperation { path, value }));
}

/// Appends `items` to the array at `field` (created when the pod has none).
fn append<T: Serialize>(
    ops: &mut Vec<PatchOperation>,
    base: &[&str],
    field: &str,
    existing: usize,
    items: &[T],
    what: &'static str,
) -> Result<(), MutateError> {
    if items.is_empty() {
        return Ok(());
    }
    let mut path: Vec<&str> = base.to_vec();
    path.push(field);
    if existing == 0 {
        add(ops, ptr(&path), json(what, &items)?);
    } else {
        path.push("-");
        for item in items {
            add(ops, ptr(&path), json(what, item)?);
        }
    }
    Ok(())
}

/// `'word'` for sh, quotes inside closed and escaped.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r#"'\''"#))
}

/// The container's new command: the postStart command, then exec of the original.
pub fn wrap_command(post_start: &[String], container: &Container) -> Option<Vec<String>> {
    let command = container.command.as_ref().filter(|c| !c.is_empty())?;
    let script: Vec<String> = post_start.iter().map(|w| shell_quote(w)).collect();
    let mut wrapped = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        format!("{} && exec \"$@\"", script.join(" ")),
        WRAPPER_NAME.to_owned(),
    ];
    wrapped.extend(command.iter().cloned());
    wrapped.extend(container.args.iter().flatten().cloned());
    Some(wrapped)
}

/// The injected containers with the config's `volumeMounts` added, except those a container
/// already declares by name: the shared volumes (scripts, the pidfile's directory) reach the
/// init container and the sidecar as they reach the application, while a mount the injected
/// container names itself (chaosfs's Bidirectional data mount) stays as written. This is what
/// the sidecar injector Chaos Mesh's webhook came from did (a same-named mount is not
/// overridden in injected containers).
fn with_shared_mounts(containers: &[Container], mounts: &[VolumeMount]) -> Vec<Container> {
    containers
        .iter()
        .map(|container| {
            let mut container = container.clone();
            let own = container.volume_mounts.get_or_insert_with(Vec::new);
            for mount in mounts {
                if !own.iter().any(|m| m.name == mount.name) {
                    own.push(mount.clone());
                }
            }
            if own.is_empty() {
                container.volume_mounts = None;
            }
            container
        })
        .collect()
}

/// The patch injecting `injection` into `pod`, marking it with `<prefix>/status: injected`.
pub fn patch(pod: &Pod, injection: &Injection, prefix: &str) -> Result<Patch, MutateError> {
    let spec = pod.spec.as_ref().ok_or(MutateError::NoSpec)?;
    let mut ops = Vec::new();

    // Checked first: a refused pod gets no partial patch.
    let mut wrapped = Vec::new();
    for (name, post_start) in &injection.post_start {
        let Some(index) = spec.containers.iter().position(|c| &c.name == name) else {
            let have: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
            return Err(MutateError::NoSuchContainer {
                container: name.clone(),
                have: have.join(", "),
            });
        };
        let container = &spec.containers[index];
        let command =
            wrap_command(&post_start.command, container).ok_or_else(|| MutateError::NoCommand {
                container: name.clone(),
            })?;
        wrapped.push((index, command, container.args.is_some()));
    }

    let status_key = format!("{prefix}/{STATUS}");
    match &pod.metadata.annotations {
        None => add(
            &mut ops,
            ptr(&["metadata", "annotations"]),
            serde_json::json!({ status_key: INJECTED }),
        ),
        Some(annotations) if annotations.contains_key(&status_key) => replace(
            &mut ops,
            ptr(&["metadata", "annotations", &status_key]),
            Value::from(INJECTED),
        ),
        Some(_) => add(
            &mut ops,
            ptr(&["metadata", "annotations", &status_key]),
            Value::from(INJECTED),
        ),
    }

    // Application containers: mounts first, so their indexes are those of the pod as sent.
    for (index, container) in spec.containers.iter().enumerate() {
        let i = index.to_string();
        let base = ["spec", "containers", i.as_str()];
        let mounts = container.volume_mounts.as_deref().unwrap_or_default();
        let mut added = Vec::new();
        for mount in &injection.volume_mounts {
            match mounts.iter().position(|m| m.name == mount.name) {
                Some(at) => {
                    let at = at.to_string();
                    replace(
                        &mut ops,
                        ptr(&[base[0], base[1], base[2], "volumeMounts", &at]),
                        json("a volume mount", mount)?,
                    );
                }
                None => added.push(mount.clone()),
            }
        }
        append(
            &mut ops,
            &base,
            "volumeMounts",
            mounts.len(),
            &added,
            "a volume mount",
        )?;
    }
    for (index, command, had_args) in wrapped {
        let i = index.to_string();
        let has_command = spec.containers[index].command.is_some();
        let path = ptr(&["spec", "containers", &i, "command"]);
        if has_command {
            replace(&mut ops, path, json("a command", &command)?);
        } else {
            add(&mut ops, path, json("a command", &command)?);
        }
        if had_args {
            ops.push(PatchOperation::Remove(RemoveOperation {
                path: ptr(&["spec", "containers", &i, "args"]),
            }));
        }
    }

    let volumes = spec.volumes.as_deref().unwrap_or_default();
    let mut new_volumes = Vec::new();
    for volume in &injection.volumes {
        match volumes.iter().position(|v| v.name == volume.name) {
            Some(at) => {
                let at = at.to_string();
                replace(
                    &mut ops,
                    ptr(&["spec", "volumes", &at]),
                    json("a volume", volume)?,
                );
            }
            None => new_volumes.push(volume.clone()),
        }
    }
    append(
        &mut ops,
        &["spec"],
        "volumes",
        volumes.len(),
        &new_volumes,
        "a volume",
    )?;
    append(
        &mut ops,
        &["spec"],
        "initContainers",
        spec.init_containers.as_ref().map_or(0, Vec::len),
        &with_shared_mounts(&injection.init_containers, &injection.volume_mounts),
        "an init container",
    )?;
    append(
        &mut ops,
        &["spec"],
        "containers",
        spec.containers.len(),
        &with_shared_mounts(&injection.containers, &injection.volume_mounts),
        "a container",
    )?;
    Ok(Patch(ops))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn injection(v: Value) -> Injection {
        serde_json::from_value(v).unwrap()
    }

    /// The patch applied to the pod (which, as on the wire, has metadata).
    fn applied(mut pod_json: Value, inj: Value) -> Value {
        pod_json["metadata"] = json!({"name": "p"});
        let p = patch(
            &pod(pod_json.clone()),
            &injection(inj),
            "admission-webhook.faultline.dev",
        )
        .unwrap();
        let mut doc = pod_json;
        json_patch::patch(&mut doc, &p).unwrap();
        doc
    }

    #[test]
    fn annotations_are_created_or_added_with_the_slash_escaped() {
        let p = patch(
            &pod(json!({"spec": {"containers": [{"name": "a"}]}})),
            &Injection::default(),
            "admission-webhook.faultline.dev",
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!([{"op": "add", "path": "/metadata/annotations",
                    "value": {"admission-webhook.faultline.dev/status": "injected"}}])
        );
        let p = patch(
            &pod(json!({"metadata": {"annotations": {"x": "y"}}, "spec": {"containers": [{"name": "a"}]}})),
            &Injection::default(),
            "admission-webhook.faultline.dev",
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!([{"op": "add", "path": "/metadata/annotations/admission-webhook.faultline.dev~1status",
                    "value": "injected"}])
        );
    }

    #[test]
    fn same_names_overwrite_and_new_ones_are_appended() {
        let doc = applied(
            json!({"spec": {
                "containers": [
                    {"name": "app", "volumeMounts": [{"name": "data", "mountPath": "/old"}]},
                    {"name": "other"}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "c"}}]}}),
            json!({
                "containers": [{"name": "side", "volumeMounts": [
                    {"name": "data", "mountPath": "/side-own", "mountPropagation": "Bidirectional"}]}],
                "initContainers": [{"name": "init"}],
                "volumes": [{"name": "data", "emptyDir": {}}, {"name": "fuse", "emptyDir": {}}],
                "volumeMounts": [{"name": "data", "mountPath": "/new"}, {"name": "fuse", "mountPath": "/f"}]}),
        );
        let spec = &doc["spec"];
        assert_eq!(
            spec["containers"][0]["volumeMounts"],
            json!([
            {"name": "data", "mountPath": "/new"}, {"name": "fuse", "mountPath": "/f"}])
        );
        assert_eq!(
            spec["containers"][1]["volumeMounts"],
            json!([
            {"name": "data", "mountPath": "/new"}, {"name": "fuse", "mountPath": "/f"}])
        );
        assert_eq!(spec["containers"][2]["name"], "side");
        assert_eq!(
            spec["containers"][2]["volumeMounts"],
            json!([{"name": "data", "mountPath": "/side-own", "mountPropagation": "Bidirectional"},
                   {"name": "fuse", "mountPath": "/f"}]),
            "an injected container keeps the mount it names and gets the others"
        );
        assert_eq!(
            spec["initContainers"],
            json!([{"name": "init", "volumeMounts": [
                {"name": "data", "mountPath": "/new"}, {"name": "fuse", "mountPath": "/f"}]}])
        );
        assert_eq!(
            spec["volumes"],
            json!([
            {"name": "data", "emptyDir": {}}, {"name": "fuse", "emptyDir": {}}])
        );
    }

    #[test]
    fn post_start_wraps_the_command_and_args() {
        let doc = applied(
            json!({"spec": {"containers": [{"name": "app", "command": ["/bin/app"], "args": ["--x", "it's"]}]}}),
            json!({"postStart": {"app": {"command": ["/tmp/scripts/wait-fuse.sh", "-d", "5"]}}}),
        );
        assert_eq!(
            doc["spec"]["containers"][0]["command"],
            json!([
                "/bin/sh",
                "-c",
                "'/tmp/scripts/wait-fuse.sh' '-d' '5' && exec \"$@\"",
                "faultline-poststart",
                "/bin/app",
                "--x",
                "it's"
            ])
        );
        assert!(doc["spec"]["containers"][0]["args"].is_null());
        // The shell really runs the wrapped command after the postStart one.
        let cmd: Vec<String> =
            serde_json::from_value(doc["spec"]["containers"][0]["command"].clone()).unwrap();
        let script = cmd[2].replace("'/tmp/scripts/wait-fuse.sh' '-d' '5'", "echo first");
        let out = std::process::Command::new(&cmd[0])
            .args(["-c", &script, &cmd[3], "echo", "then", "it's"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "first\nthen it's\n");
    }

    #[test]
    fn post_start_without_a_command_or_container_is_refused() {
        let inj = injection(json!({"postStart": {"app": {"command": ["w"]}}}));
        let err = patch(
            &pod(json!({"spec": {"containers": [{"name": "app", "args": ["x"]}]}})),
            &inj,
            "p",
        )
        .unwrap_err();
        assert_eq!(
            err,
            MutateError::NoCommand {
                container: "app".into()
            }
        );
        let err = patch(
            &pod(json!({"spec": {"containers": [{"name": "web"}]}})),
            &inj,
            "p",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("\"app\", which the pod does not have (containers: web)"),
            "{err}"
        );
    }
}

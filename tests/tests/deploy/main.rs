//! Deployment: what `kubectl apply -k deploy/overlays/...` and the Dockerfile install is what
//! the code expects. Every overlay renders with `kubectl kustomize` and every object validates
//! (schemas.rs); the agent DaemonSet and the controller Deployment pass only flags the binaries
//! have, with ports, probes, mounts and paths that agree with them (flags.rs); the Dockerfile
//! copies what the build makes to where the manifests run it (dockerfile.rs); and the
//! certificates of `faultline-controller certs` are accepted by the real agent over mTLS while a
//! wrong CA, a wrong identity or a wrong server name are refused (mtls.rs).
//!
//! Needs `kubectl` (scripts/setup.sh installs it) and the workspace's binaries
//! (`cargo build --workspace`, which scripts/test.sh does first). No cluster, no root.

#[path = "../e2e/binaries.rs"]
mod binaries;
mod chaos_mesh;
mod dockerfile;
mod flags;
mod help;
mod images;
mod mtls;
mod schemas;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use yaml_serde::Value;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The overlays a user installs (deploy/overlays/*), sorted.
pub fn overlays() -> Vec<PathBuf> {
    let dir = root().join("deploy/overlays");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.join("kustomization.yaml").exists())
        .collect();
    found.sort();
    assert!(found.len() >= 5, "overlays: {found:?}");
    found
}

/// The overlays that install faultline whole (controller, webhook, agents): every overlay but
/// chaos-mesh, which installs only agents, for Chaos Mesh's controller to drive.
pub fn faultline_overlays() -> Vec<PathBuf> {
    overlays()
        .into_iter()
        .filter(|p| !p.ends_with("chaos-mesh"))
        .collect()
}

pub fn kubectl() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into())
}

/// `kubectl kustomize DIR`, one Value per object.
pub fn render(dir: &Path) -> Vec<Value> {
    let out = Command::new(kubectl())
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {} kustomize: {e} (scripts/setup.sh installs kubectl)",
                kubectl()
            )
        });
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 YAML");
    yaml_serde::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The one object of `kind` named `name` in a rendering.
pub fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in the rendering"))
}

pub fn text(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v:?}"))
}

pub fn list(v: &Value) -> &[Value] {
    v.as_sequence().map(Vec::as_slice).unwrap_or_default()
}

/// Runs a workspace binary and returns its stdout (panics on failure).
pub fn run(binary: &str, args: &[&str]) -> String {
    let path = binaries::path(binary).unwrap_or_else(|e| panic!("{e:#}"));
    let out = Command::new(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        out.status.success(),
        "{binary} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

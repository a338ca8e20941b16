//! Every kustomization under deploy/ renders, and every object in it validates: Kubernetes
//! kinds with kubernetes-validate (strict, several Kubernetes versions), our chaos kinds against
//! the CRDs, cert-manager kinds against their schema subset, plus references across objects
//! (validate.sh → validate_overlays.py). And deploy/crds/kustomization.yml lists exactly the
//! CRDs that crdgen writes.

use std::process::Command;

use crate::{list, root, text};

#[test]
fn every_overlay_renders_and_every_object_validates() {
    let script = root().join("tests/tests/deploy/validate.sh");
    let out = Command::new(&script)
        .env("KUBECTL", crate::kubectl())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("all overlays checked: 0 failure(s)"),
        "{stdout}"
    );
    for overlay in crate::overlays() {
        let name = overlay.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            stdout.contains(&format!("ok   deploy/overlays/{name}:")),
            "{name} not checked:\n{stdout}"
        );
    }
}

#[test]
fn the_crd_kustomization_lists_every_generated_crd() {
    let dir = root().join("deploy/crds");
    let mut generated: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    generated.sort();
    let kustomization: yaml_serde::Value =
        yaml_serde::from_str(&std::fs::read_to_string(dir.join("kustomization.yml")).unwrap())
            .unwrap();
    let mut listed: Vec<String> = list(&kustomization["resources"])
        .iter()
        .map(|r| text(r).to_owned())
        .collect();
    listed.sort();
    assert_eq!(
        listed, generated,
        "deploy/crds/kustomization.yml must list every CRD crdgen writes"
    );
}

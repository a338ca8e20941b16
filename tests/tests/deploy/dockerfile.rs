//! The Dockerfile cannot be built here (no container engine), so it is kept correct by
//! construction: every binary it copies out of the build stage is a binary target of a package
//! its `cargo build` builds, and that build makes it; the paths the manifests
//! run are where it copies them; the build context keeps every workspace member; the builder's
//! toolchain is new enough for every dependency; builder and runtime are the same Debian
//! release (the binaries link glibc); the agent image has the tools the agent runs.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value as Json;

use crate::{list, object, render, root, text};

struct Stage {
    name: String,
    from: String,
    /// COPY --from=build SOURCE DEST
    copies: Vec<(String, String)>,
    runs: Vec<String>,
}

fn dockerfile() -> (BTreeMap<String, String>, Vec<Stage>) {
    let source = std::fs::read_to_string(root().join("Dockerfile")).expect("a Dockerfile");
    // Continuation lines joined, comments dropped.
    let joined = source
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let mut args = BTreeMap::new();
    let mut stages: Vec<Stage> = Vec::new();
    for line in joined.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (instruction, rest) = line.split_once(' ').unwrap_or((line, ""));
        let words: Vec<&str> = rest.split_whitespace().collect();
        match instruction.to_ascii_uppercase().as_str() {
            "ARG" if stages.is_empty() => {
                if let Some((k, v)) = rest.trim().split_once('=') {
                    args.insert(k.to_owned(), v.to_owned());
                }
            }
            "FROM" => {
                let mut from = words[0].to_owned();
                for (k, v) in &args {
                    from = from.replace(&format!("${{{k}}}"), v);
                }
                let name = match words.as_slice() {
                    [_, as_, name] if as_.eq_ignore_ascii_case("as") => (*name).to_owned(),
                    _ => panic!("every stage is named: {line}"),
                };
                stages.push(Stage {
                    name,
                    from,
                    copies: Vec::new(),
                    runs: Vec::new(),
                });
            }
            "COPY" if words.first().is_some_and(|w| w.starts_with("--from=")) => {
                let stage = stages.last_mut().expect("COPY inside a stage");
                stage
                    .copies
                    .push((words[1].to_owned(), words[2].to_owned()));
            }
            "RUN" => stages
                .last_mut()
                .expect("RUN inside a stage")
                .runs
                .push(rest.to_owned()),
            _ => {}
        }
    }
    (args, stages)
}

fn stage<'a>(stages: &'a [Stage], name: &str) -> &'a Stage {
    stages
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no stage {name}"))
}

fn cargo_metadata(with_deps: bool) -> Json {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["metadata", "--format-version", "1", "--offline", "--locked"])
        .current_dir(root());
    if with_deps {
        // Only this platform's packages: `cargo build` never downloads the others (Windows
        // console crates and the like), so on a fresh cargo home an unfiltered resolve would
        // need the network, which `--offline` forbids.
        let host = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
        cmd.args(["--filter-platform", &host]);
    } else {
        cmd.arg("--no-deps");
    }
    let out = cmd.output().expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("metadata JSON")
}

fn version(v: &str) -> Vec<u32> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

#[test]
fn the_images_hold_what_the_build_makes_where_the_manifests_run_it() {
    let (args, stages) = dockerfile();
    let build = stage(&stages, "build");
    let cargo_build = build
        .runs
        .iter()
        .find(|r| r.contains("cargo build"))
        .expect("a cargo build in the build stage");
    assert!(
        cargo_build.contains("--release") && cargo_build.contains("--locked"),
        "{cargo_build}"
    );
    let built_packages: BTreeSet<&str> = cargo_build
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "-p")
        .map(|w| w[1])
        .collect();

    let metadata = cargo_metadata(false);
    let mut bins: BTreeMap<String, String> = BTreeMap::new();
    for package in metadata["packages"].as_array().unwrap() {
        for target in package["targets"].as_array().unwrap() {
            if target["kind"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k == "bin")
            {
                bins.insert(
                    target["name"].as_str().unwrap().to_owned(),
                    package["name"].as_str().unwrap().to_owned(),
                );
            }
        }
    }
    for package in &built_packages {
        assert!(
            bins.values().any(|p| p == package),
            "cargo build -p {package}: no such package with binaries"
        );
    }

    let mut installed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in &stages {
        for (source, dest) in &s.copies {
            let binary = source
                .strip_prefix("/src/target/release/")
                .unwrap_or_else(|| panic!("{} copies {source}, not a release binary", s.name));
            let package = bins
                .get(binary)
                .unwrap_or_else(|| panic!("{binary} is no binary of the workspace"));
            assert!(
                built_packages.contains(package.as_str()),
                "{binary} is made by {package}, which the Dockerfile does not build"
            );
            // The build of these packages makes this file (here in the test's profile; the
            // image's build is the same with --release).
            if let Err(e) = crate::binaries::path(binary) {
                panic!("{binary}: {e:#}");
            }
            installed
                .entry(s.name.clone())
                .or_default()
                .insert(dest.clone());
        }
    }

    // The manifests run the binaries from where the images have them; the injector sits
    // beside the agent, where the agent looks for it.
    let objects = render(&root().join("deploy/overlays/containerd"));
    for (kind, name, stage_name) in [
        ("DaemonSet", "faultline-agent", "agent"),
        ("Deployment", "faultline-controller", "controller"),
    ] {
        let workload = object(&objects, kind, name);
        let container = &list(&workload["spec"]["template"]["spec"]["containers"])[0];
        let command = text(&list(&container["command"])[0]);
        assert!(
            installed[stage_name].contains(command),
            "{kind}/{name} runs {command}, which stage {stage_name} does not install"
        );
        let image = text(&container["image"]);
        assert!(
            image.starts_with(&format!("{name}:")),
            "{kind}/{name}: image {image}, the Dockerfile's docs build {name}:<version>"
        );
    }
    assert!(installed["agent"].contains("/usr/local/bin/faultline-injector"));

    // The agent runs iptables (legacy and nft, chosen per node) and ipset in pods' namespaces.
    let agent_packages = stage(&stages, "agent").runs.join(" ");
    for tool in ["iptables", "ipset"] {
        assert!(
            agent_packages.contains(tool),
            "the agent image does not install {tool}"
        );
    }
    // The controller image runs as a non-root user.
    let source = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let controller_section = source.split("AS controller").nth(1).unwrap();
    let controller_section = controller_section.split("FROM ").next().unwrap();
    assert!(
        controller_section.contains("USER 65532"),
        "{controller_section}"
    );

    // Builder and runtime images are of one Debian release.
    for s in &stages {
        assert!(
            s.from.rsplit(['-', ':']).any(|p| p == "bookworm"),
            "stage {} is from {}",
            s.name,
            s.from
        );
    }

    // The toolchain is new enough for the workspace and for every dependency.
    let rust = args.get("RUST_VERSION").expect("ARG RUST_VERSION");
    assert_eq!(build.from, format!("rust:{rust}-slim-bookworm"));
    let all = cargo_metadata(true);
    let (needed, by) = all["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| Some((p["rust_version"].as_str()?, p["name"].as_str()?)))
        .max_by_key(|(v, _)| version(v))
        .expect("rust_version of some package");
    assert!(
        version(rust) >= version(needed),
        "RUST_VERSION {rust} is older than {by}'s {needed}"
    );
}

#[test]
fn the_build_context_keeps_every_workspace_member() {
    let ignored: Vec<String> = std::fs::read_to_string(root().join(".dockerignore"))
        .expect(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_matches('/').to_owned())
        .collect();
    let metadata = cargo_metadata(false);
    let workspace = metadata["workspace_root"].as_str().unwrap().to_owned();
    let mut needed = vec!["Cargo.toml".to_owned(), "Cargo.lock".to_owned()];
    for package in metadata["packages"].as_array().unwrap() {
        let manifest = package["manifest_path"].as_str().unwrap();
        let dir = manifest
            .strip_prefix(&format!("{workspace}/"))
            .unwrap()
            .trim_end_matches("Cargo.toml")
            .trim_end_matches('/');
        needed.push(dir.to_owned());
    }
    for path in needed {
        for pattern in &ignored {
            assert!(
                !(path == *pattern || path.starts_with(&format!("{pattern}/"))),
                ".dockerignore's {pattern} leaves {path} out of the build context"
            );
        }
    }
    assert!(ignored.iter().any(|p| p == "target"), "{ignored:?}");
}

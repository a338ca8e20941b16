//! The Docker-free images (`scripts/build-images.sh`, through `faultline-image`) agree with the
//! Dockerfile's targets: the files its COPYs copy, with the same bytes, at the same paths, owned
//! by root; its USER and ENTRYPOINT; its Debian release and its `apt-get install` packages for
//! the base. The Dockerfile is read here with plain string handling, independently of the
//! builder's reader, and the images are built for real from the workspace's binaries on a stand-in
//! base (the real Debian base needs the mirror; the e2e suite builds and runs that one).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use testbed::oci_archive::{self, LayerEntry};

use crate::{binaries, root};

/// Per target stage, as the Dockerfile says: copies (source, destination), USER, ENTRYPOINT,
/// FROM, packages.
#[derive(Debug, Default)]
struct Expected {
    from: String,
    copies: Vec<(String, String)>,
    user: Option<String>,
    entrypoint: Option<String>,
    packages: Vec<String>,
}

fn expected() -> BTreeMap<String, Expected> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("a Dockerfile");
    let text = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let mut stages: BTreeMap<String, Expected> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().copied() {
            Some("FROM") => {
                current = words[3].to_owned();
                stages.entry(current.clone()).or_default().from = words[1].to_owned();
            }
            Some("COPY") => {
                let stage = stages.get_mut(&current).expect("COPY in a stage");
                let args: Vec<&str> = words[1..]
                    .iter()
                    .copied()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let (dest, sources) = args.split_last().expect("COPY SRC DEST");
                for source in sources {
                    let dest = if dest.ends_with('/') {
                        format!("{dest}{}", source.rsplit('/').next().unwrap())
                    } else {
                        (*dest).to_owned()
                    };
                    stage.copies.push(((*source).to_owned(), dest));
                }
            }
            Some("USER") => stages.get_mut(&current).unwrap().user = Some(words[1].to_owned()),
            Some("ENTRYPOINT") => {
                stages.get_mut(&current).unwrap().entrypoint = Some(line[10..].trim().to_owned())
            }
            Some("RUN") if line.contains("apt-get install") => {
                let install = line.split("apt-get install").nth(1).unwrap();
                let install = install.split("&&").next().unwrap();
                stages.get_mut(&current).unwrap().packages.extend(
                    install
                        .split_whitespace()
                        .filter(|w| !w.starts_with('-'))
                        .map(str::to_owned),
                );
            }
            _ => {}
        }
    }
    stages
}

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(
        std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    ))
}

fn faultline_image(args: &[&str]) -> String {
    let tool = binaries::path("faultline-image").unwrap_or_else(|e| panic!("{e:#}"));
    let out = Command::new(&tool)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", tool.display()));
    assert!(
        out.status.success(),
        "faultline-image {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// A stand-in base layer: one file, so the test needs no mirror.
fn stand_in_base(dir: &Path) -> PathBuf {
    let marker = dir.join("os-release");
    std::fs::write(&marker, "ID=stand-in\n").unwrap();
    let base = dir.join("base.tar");
    oci_archive::write_files_layer(
        &[oci_archive::LayerFile {
            source: marker,
            dest: "/etc/os-release".into(),
            mode: 0o644,
        }],
        &base,
    )
    .unwrap();
    base
}

#[test]
fn the_docker_free_images_are_the_dockerfiles_targets() {
    let expected = expected();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let base = stand_in_base(dir.path());
    // The binaries of this test's profile stand in for the release ones (same names).
    let binaries_dir = binaries::path("faultline-agent")
        .unwrap_or_else(|e| panic!("{e:#}"))
        .parent()
        .unwrap()
        .to_owned();
    let version = env!("CARGO_PKG_VERSION");
    for target in ["agent", "controller"] {
        let want = &expected[target];
        // The base: the Dockerfile's Debian release and packages.
        let plan = faultline_image(&["plan", "--target", target]);
        let suite = want
            .from
            .trim_start_matches("debian:")
            .trim_end_matches("-slim");
        assert!(plan.contains(&format!("suite {suite}\n")), "{plan}");
        assert!(
            plan.contains(&format!("packages {}\n", want.packages.join(" "))),
            "{target}: {plan} (the Dockerfile installs {:?})",
            want.packages
        );

        let out = dir.path().join(format!("{target}.tar"));
        let printed = faultline_image(&[
            "build",
            "--target",
            target,
            "--base",
            base.to_str().unwrap(),
            "--binaries",
            binaries_dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(
            printed.starts_with(&format!("faultline-{target}:{version} ")),
            "{printed}"
        );
        let image = oci_archive::read_archive(&out).expect("a readable OCI archive");
        // Named as the manifests name it, the way CRI looks it up.
        assert_eq!(
            image.name,
            format!("docker.io/library/faultline-{target}:{version}")
        );
        assert_eq!(
            image.config["User"].as_str(),
            want.user.as_deref(),
            "{target}: USER"
        );
        let entrypoint: serde_json::Value =
            serde_json::from_str(want.entrypoint.as_deref().expect("an ENTRYPOINT")).unwrap();
        assert_eq!(image.config["Entrypoint"], entrypoint, "{target}");
        assert_eq!(image.layers.len(), 2, "{target}: the base and the files");
        assert!(image.layers[0].iter().any(|e| e.path == "etc/os-release"));

        // Exactly the copied files (plus their directories), same bytes, root's, executable
        // where the source is.
        let files: BTreeMap<&str, &LayerEntry> = image.layers[1]
            .iter()
            .filter(|e| e.kind == 'f')
            .map(|e| (e.path.as_str(), e))
            .collect();
        assert_eq!(
            files.len(),
            want.copies.len(),
            "{target}: {:?} vs {:?}",
            files.keys(),
            want.copies
        );
        for (source, dest) in &want.copies {
            let entry = files
                .get(dest.trim_start_matches('/'))
                .unwrap_or_else(|| panic!("{target}: {dest} is not in the image"));
            let local = match source.strip_prefix("/src/target/release/") {
                Some(binary) => binaries_dir.join(binary),
                None => root().join(source),
            };
            assert_eq!(
                entry.sha256.as_deref(),
                Some(sha256_of(&local).as_str()),
                "{dest}"
            );
            assert_eq!((entry.uid, entry.gid), (0, 0), "{dest}");
            assert_eq!(entry.mode & 0o111, 0o111, "{dest} is executable");
        }
    }
}

#[test]
fn an_instruction_the_docker_free_build_cannot_reproduce_fails_it() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    // Something a later edit might add to the agent stage.
    let edited = text.replace(
        "ENTRYPOINT [\"/usr/local/bin/faultline-agent\"]",
        "RUN curl -fsSL https://example.invalid/tool -o /usr/local/bin/tool\nENTRYPOINT [\"/usr/local/bin/faultline-agent\"]",
    );
    assert_ne!(edited, text, "the agent's ENTRYPOINT line moved");
    let dockerfile = dir.path().join("Dockerfile");
    std::fs::write(&dockerfile, edited).unwrap();
    let tool = binaries::path("faultline-image").unwrap_or_else(|e| panic!("{e:#}"));
    let out = Command::new(tool)
        .args(["plan", "--target", "agent", "--dockerfile"])
        .arg(&dockerfile)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("RUN curl") && stderr.contains("\"curl"),
        "{stderr}"
    );
}

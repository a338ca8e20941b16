//! The Dockerfile read into what each of its images is made of, so that
//! `scripts/build-images.sh` builds the same images without a Docker engine: the Debian release
//! of the base, the packages `apt-get install` adds, the files copied (binaries out of the build
//! stage, files of the build context) and where, the user and the entrypoint.
//!
//! Only the instructions our Dockerfile uses are understood; anything else in a runtime stage
//! is an error naming the instruction, so the Dockerfile and the Docker-free build can never
//! silently differ.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where a file of an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A binary the build stage's `cargo build --release` makes (`/src/target/release/NAME`).
    Built { binary: String },
    /// A file of the build context (the repository), relative to its root.
    Context { path: PathBuf },
}

/// One file of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    pub source: Source,
    /// Absolute path in the image.
    pub dest: String,
}

/// What a runtime stage of the Dockerfile makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePlan {
    pub target: String,
    /// The `FROM` image, arguments substituted (`debian:bookworm-slim`).
    pub base: String,
    /// The Debian release of the base (`bookworm`).
    pub suite: String,
    /// What `apt-get install` adds to the base.
    pub packages: Vec<String>,
    pub files: Vec<ImageFile>,
    /// `USER`, if any (`uid:gid`).
    pub user: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
}

/// A stage: `FROM <from> AS <name>` and its instructions (keyword upper-cased, rest as written).
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    pub from: String,
    pub instructions: Vec<(String, String)>,
}

/// The parsed Dockerfile.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    /// Global `ARG`s (before the first `FROM`) and their defaults.
    pub args: BTreeMap<String, String>,
    pub stages: Vec<Stage>,
}

/// Where the build stage's release binaries are.
const RELEASE_DIR: &str = "/src/target/release/";

fn invalid(reason: String) -> Error {
    Error::InvalidSpec {
        field: "Dockerfile",
        reason,
    }
}

impl Dockerfile {
    pub fn read(path: &Path) -> Result<Dockerfile> {
        let text = std::fs::read_to_string(path).map_err(Error::io("reading", path))?;
        Dockerfile::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Dockerfile> {
        // Comment lines dropped, continuation lines joined.
        let joined = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
            .replace("\\\n", " ");
        let mut args = BTreeMap::new();
        let mut stages: Vec<Stage> = Vec::new();
        for line in joined.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let keyword = keyword.to_ascii_uppercase();
            let rest = rest.trim();
            match keyword.as_str() {
                "ARG" if stages.is_empty() => {
                    let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
                    args.insert(k.to_owned(), v.to_owned());
                }
                "FROM" => {
                    let words: Vec<&str> = rest.split_whitespace().collect();
                    let name = match words.as_slice() {
                        [_, as_, name] if as_.eq_ignore_ascii_case("as") => (*name).to_owned(),
                        _ => return Err(invalid(format!("every stage needs a name: {line}"))),
                    };
                    let mut from = words[0].to_owned();
                    for (k, v) in &args {
                        from = from.replace(&format!("${{{k}}}"), v);
                    }
                    stages.push(Stage {
                        name,
                        from,
                        instructions: Vec::new(),
                    });
                }
                _ => match stages.last_mut() {
                    Some(stage) => stage.instructions.push((keyword, rest.to_owned())),
                    None => return Err(invalid(format!("{keyword} before the first FROM"))),
                },
            }
        }
        Ok(Dockerfile { args, stages })
    }

    pub fn stage(&self, name: &str) -> Result<&Stage> {
        self.stages.iter().find(|s| s.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.stages.iter().map(|s| s.name.as_str()).collect();
            invalid(format!("no stage {name:?} (stages: {})", names.join(", ")))
        })
    }

    /// The packages the build stage's `cargo build` builds (`-p NAME`).
    pub fn built_packages(&self) -> Result<Vec<String>> {
        let build = self.stage("build")?;
        let run = build
            .instructions
            .iter()
            .find(|(k, rest)| k == "RUN" && rest.contains("cargo build"))
            .ok_or_else(|| invalid("the build stage runs no cargo build".into()))?;
        let words: Vec<&str> = run.1.split_whitespace().collect();
        Ok(words
            .windows(2)
            .filter(|w| w[0] == "-p")
            .map(|w| w[1].to_owned())
            .collect())
    }

    /// What the runtime stage `target` makes.
    pub fn image(&self, target: &str) -> Result<ImagePlan> {
        let stage = self.stage(target)?;
        let suite = debian_suite(&stage.from).ok_or_else(|| {
            invalid(format!(
                "stage {target} is FROM {}: the Docker-free build makes Debian bases only (debian:<release>[-slim])",
                stage.from
            ))
        })?;
        let mut plan = ImagePlan {
            target: target.to_owned(),
            base: stage.from.clone(),
            suite,
            packages: Vec::new(),
            files: Vec::new(),
            user: None,
            entrypoint: None,
            cmd: None,
            env: Vec::new(),
            workdir: None,
        };
        for (keyword, rest) in &stage.instructions {
            match keyword.as_str() {
                "RUN" => plan.packages.extend(apt_get_install(rest)?),
                "COPY" => plan.files.extend(copy(rest)?),
                "USER" => plan.user = Some(rest.clone()),
                "ENTRYPOINT" => plan.entrypoint = Some(exec_form(keyword, rest)?),
                "CMD" => plan.cmd = Some(exec_form(keyword, rest)?),
                "WORKDIR" => plan.workdir = Some(rest.clone()),
                "ENV" => {
                    for pair in rest.split_whitespace() {
                        let (k, v) = pair.split_once('=').ok_or_else(|| {
                            invalid(format!("ENV {rest}: only the KEY=VALUE form is understood"))
                        })?;
                        plan.env.push((k.to_owned(), v.to_owned()));
                    }
                }
                "LABEL" => {}
                other => {
                    return Err(invalid(format!(
                        "stage {target}: {other} {rest}: the Docker-free build does not understand {other}"
                    )));
                }
            }
        }
        Ok(plan)
    }
}

/// `debian:bookworm-slim` → `bookworm`.
fn debian_suite(image: &str) -> Option<String> {
    let tag = image
        .strip_prefix("debian:")
        .or_else(|| image.strip_prefix("docker.io/library/debian:"))?;
    let suite = tag.strip_suffix("-slim").unwrap_or(tag);
    (!suite.is_empty() && suite.bytes().all(|b| b.is_ascii_lowercase())).then(|| suite.to_owned())
}

/// The packages of `apt-get update && apt-get install -y --no-install-recommends P... && rm -rf
/// /var/lib/apt/lists/*`, the one RUN form a runtime stage may use.
fn apt_get_install(run: &str) -> Result<Vec<String>> {
    let mut packages = Vec::new();
    for step in run.split("&&").map(str::trim) {
        let words: Vec<&str> = step.split_whitespace().collect();
        match words.as_slice() {
            ["apt-get", "update"] => {}
            ["rm", "-rf", "/var/lib/apt/lists/*"] => {}
            ["apt-get", "install", options @ ..] => packages.extend(
                options
                    .iter()
                    .filter(|w| !w.starts_with('-'))
                    .map(|w| (*w).to_owned()),
            ),
            _ => {
                return Err(invalid(format!(
                    "RUN {run}: the Docker-free build understands only apt-get update/install and removing the apt lists, not {step:?}"
                )));
            }
        }
    }
    Ok(packages)
}

/// `COPY [--from=build] SRC... DEST`.
fn copy(rest: &str) -> Result<Vec<ImageFile>> {
    let mut words: Vec<&str> = rest.split_whitespace().collect();
    let from = match words.first() {
        Some(w) if w.starts_with("--from=") => Some(words.remove(0).trim_start_matches("--from=")),
        Some(w) if w.starts_with("--") => {
            return Err(invalid(format!(
                "COPY {rest}: option {w} is not understood"
            )));
        }
        _ => None,
    };
    let Some((dest, sources)) = words.split_last() else {
        return Err(invalid(format!(
            "COPY {rest}: needs a source and a destination"
        )));
    };
    if sources.is_empty() || !dest.starts_with('/') {
        return Err(invalid(format!(
            "COPY {rest}: needs a source and an absolute destination"
        )));
    }
    if sources.len() > 1 && !dest.ends_with('/') {
        return Err(invalid(format!(
            "COPY {rest}: several sources need a directory destination (ending in /)"
        )));
    }
    sources
        .iter()
        .map(|source| {
            let name = source.rsplit('/').next().unwrap_or(source);
            let dest = if dest.ends_with('/') {
                format!("{dest}{name}")
            } else {
                (*dest).to_owned()
            };
            let source = match from {
                Some("build") => Source::Built {
                    binary: source
                        .strip_prefix(RELEASE_DIR)
                        .filter(|b| !b.is_empty() && !b.contains('/'))
                        .ok_or_else(|| {
                            invalid(format!(
                                "COPY --from=build {source}: only release binaries ({RELEASE_DIR}NAME) are understood"
                            ))
                        })?
                        .to_owned(),
                },
                Some(other) => {
                    return Err(invalid(format!(
                        "COPY --from={other}: only the build stage is understood"
                    )));
                }
                None if source.starts_with('/') || source.split('/').any(|c| c == "..") => {
                    return Err(invalid(format!(
                        "COPY {source}: a build-context path must be relative and stay inside the context"
                    )));
                }
                None => Source::Context {
                    path: PathBuf::from(source),
                },
            };
            Ok(ImageFile { source, dest })
        })
        .collect()
}

/// `["a", "b"]` (the exec form; the shell form would need a shell in every image).
fn exec_form(keyword: &str, rest: &str) -> Result<Vec<String>> {
    serde_json::from_str(rest).map_err(|e| {
        invalid(format!(
            "{keyword} {rest}: only the exec form (a JSON array) is understood: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
ARG V=1.95
FROM rust:${V}-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y protobuf-compiler
RUN cargo build --release --locked \
      -p a -p b --bins
# a comment
FROM debian:bookworm-slim AS small
RUN apt-get update && apt-get install -y --no-install-recommends iptables ipset && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/a /usr/local/bin/a
COPY x/one.sh x/two.sh /scripts/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/a"]
"#;

    #[test]
    fn a_runtime_stage_reads_into_its_plan() {
        let file = Dockerfile::parse(SAMPLE).expect("parses");
        assert_eq!(file.stage("build").unwrap().from, "rust:1.95-slim-bookworm");
        assert_eq!(file.built_packages().unwrap(), ["a", "b"]);
        let plan = file.image("small").expect("plan");
        assert_eq!(plan.suite, "bookworm");
        assert_eq!(plan.packages, ["iptables", "ipset"]);
        assert_eq!(plan.user.as_deref(), Some("65532:65532"));
        assert_eq!(plan.entrypoint.unwrap(), ["/usr/local/bin/a"]);
        assert_eq!(
            plan.files,
            [
                ImageFile {
                    source: Source::Built { binary: "a".into() },
                    dest: "/usr/local/bin/a".into()
                },
                ImageFile {
                    source: Source::Context {
                        path: "x/one.sh".into()
                    },
                    dest: "/scripts/one.sh".into()
                },
                ImageFile {
                    source: Source::Context {
                        path: "x/two.sh".into()
                    },
                    dest: "/scripts/two.sh".into()
                },
            ]
        );
    }

    #[test]
    fn what_the_docker_free_build_cannot_do_is_refused_by_name() {
        for (line, expected) in [
            ("RUN curl -o /x http://example", "not \"curl"),
            ("COPY --from=other /a /b", "--from=other"),
            ("COPY ../secret /b", "inside the context"),
            ("ENTRYPOINT /bin/a", "exec form"),
            ("HEALTHCHECK CMD true", "does not understand HEALTHCHECK"),
        ] {
            let text = format!("FROM debian:bookworm-slim AS t\n{line}\n");
            let err = Dockerfile::parse(&text)
                .unwrap()
                .image("t")
                .expect_err(line);
            assert!(err.to_string().contains(expected), "{line}: {err}");
        }
        let err = Dockerfile::parse("FROM alpine:3 AS t\n")
            .unwrap()
            .image("t")
            .expect_err("not Debian");
        assert!(err.to_string().contains("Debian bases only"), "{err}");
    }
}

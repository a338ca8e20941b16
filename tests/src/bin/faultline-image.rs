//! `faultline-image`: the Docker-free half of `scripts/build-images.sh`. It reads the
//! Dockerfile (testbed::dockerfile) and either says what a target's base needs (`plan`) or
//! writes the target's image as an OCI archive (`build`): the Debian base the script made with
//! mmdebstrap as the first layer, the files the Dockerfile copies as the second, and the
//! Dockerfile's USER and ENTRYPOINT as its config.
//!
//! ```text
//! faultline-image plan  --target agent                  # "suite bookworm", "packages iptables ipset"
//! faultline-image cargo-packages                         # what the build stage's cargo build -p's
//! faultline-image build --target agent --base BASE.tar --binaries target/release --out OUT.tar
//! ```

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use testbed::dockerfile::{Dockerfile, Source};
use testbed::oci_archive::{self, ImageConfig, LayerFile};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const USAGE: &str = "usage: faultline-image plan --target T | cargo-packages | build --target T --base TAR --binaries DIR --out TAR [--reference REF] [--context DIR] [--dockerfile FILE]";

fn main() {
    if let Err(e) = run(std::env::args().skip(1).collect()) {
        eprintln!("faultline-image: {e}");
        std::process::exit(1);
    }
}

/// `--name value` options.
struct Options(Vec<(String, String)>);

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut pairs = Vec::new();
        let mut it = args.iter();
        while let Some(name) = it.next() {
            let key = name
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {name:?}; {USAGE}"))?;
            let value = it
                .next()
                .ok_or_else(|| format!("{name} needs a value; {USAGE}"))?;
            pairs.push((key.to_owned(), value.clone()));
        }
        Ok(Options(pairs))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn required(&self, key: &str) -> Result<&str> {
        self.get(key)
            .ok_or_else(|| format!("--{key} is required; {USAGE}").into())
    }
}

fn run(args: Vec<String>) -> Result<()> {
    let (command, rest) = args.split_first().ok_or(USAGE)?;
    let options = Options::parse(rest)?;
    let context = PathBuf::from(options.get("context").unwrap_or("."));
    let dockerfile_path = options
        .get("dockerfile")
        .map_or_else(|| context.join("Dockerfile"), PathBuf::from);
    let dockerfile = Dockerfile::read(&dockerfile_path)?;
    match command.as_str() {
        "plan" => {
            let plan = dockerfile.image(options.required("target")?)?;
            println!("suite {}", plan.suite);
            println!("packages {}", plan.packages.join(" "));
            Ok(())
        }
        "cargo-packages" => {
            println!("{}", dockerfile.built_packages()?.join(" "));
            Ok(())
        }
        "build" => build(&dockerfile, &options, &context),
        other => Err(format!("unknown command {other:?}; {USAGE}").into()),
    }
}

fn build(dockerfile: &Dockerfile, options: &Options, context: &Path) -> Result<()> {
    let target = options.required("target")?;
    let plan = dockerfile.image(target)?;
    let binaries = PathBuf::from(options.required("binaries")?);
    let base = PathBuf::from(options.required("base")?);
    let out = PathBuf::from(options.required("out")?);
    let reference = options.get("reference").map_or_else(
        || format!("faultline-{target}:{}", env!("CARGO_PKG_VERSION")),
        str::to_owned,
    );

    let mut files = Vec::new();
    for file in &plan.files {
        let (source, mode) = match &file.source {
            Source::Built { binary } => (binaries.join(binary), 0o755),
            Source::Context { path } => {
                let source = context.join(path);
                let mode = std::fs::metadata(&source)
                    .map_err(|e| format!("{}: {e}", source.display()))?
                    .permissions()
                    .mode()
                    & 0o7777;
                (source, mode)
            }
        };
        if !source.is_file() {
            return Err(format!(
                "{} (for {} in the {target} image) is missing: build it first",
                source.display(),
                file.dest
            )
            .into());
        }
        files.push(LayerFile {
            source,
            dest: file.dest.clone(),
            mode,
        });
    }
    let layer = out.with_extension("files-layer.tar");
    oci_archive::write_files_layer(&files, &layer)?;
    let config = ImageConfig {
        reference: reference.clone(),
        entrypoint: plan.entrypoint.clone(),
        cmd: plan.cmd.clone(),
        user: plan.user.clone(),
        env: plan.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        workdir: plan.workdir.clone(),
    };
    let written = oci_archive::write_archive(&config, &[base, layer.clone()], &out);
    let _ = std::fs::remove_file(&layer);
    let size = written?;
    println!("{reference} {} {size}", out.display());
    Ok(())
}

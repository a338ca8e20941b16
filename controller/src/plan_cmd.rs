//! `faultline-controller plan`: what chaos objects would hit, offline (a saved cluster state)
//! or live (the kubeconfig's cluster), through the reconciler's validation and selection.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use controller::plan::preview;
use controller::selection::{ApiView, ClusterState, ClusterView, Scoping};
use rand::SeedableRng;
use rand::rngs::StdRng;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Output {
    Json,
    Text,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// The cluster: what `kubectl get pods,nodes,namespaces -A -o yaml` prints (a v1 List or
    /// multi-document YAML). Without it, the kubeconfig's cluster is read.
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// Chaos manifests (YAML, several documents each; "-" reads stdin).
    #[arg(short = 'f', long = "filename")]
    files: Vec<PathBuf>,
    /// Seeds the random modes (one, fixed, fixed-percent, random-max-percent).
    #[arg(long)]
    seed: Option<u64>,
    /// The time the plan is made at (RFC 3339), for the deadlines; default now.
    #[arg(long)]
    now: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    output: Output,
    /// Prints the supported kinds instead.
    #[arg(long)]
    list_kinds: bool,
    /// Only this namespace (Chaos Mesh's clusterScoped=false with targetNamespace).
    #[arg(long)]
    target_namespace: Option<String>,
    /// Only namespaces annotated chaos-mesh.org/inject=enabled (Chaos Mesh's
    /// enableFilterNamespace).
    #[arg(long)]
    filter_namespaces: bool,
}

pub fn run(args: PlanArgs) -> anyhow::Result<()> {
    if args.list_kinds {
        match args.output {
            Output::Json => emit(&format!("{}\n", serde_json::to_string(&preview::KINDS)?))?,
            Output::Text => emit(&format!("{}\n", preview::KINDS.join("\n")))?,
        }
        return Ok(());
    }
    if args.files.is_empty() {
        anyhow::bail!("plan: give the chaos manifests with -f FILE (or --list-kinds)");
    }
    let now = match &args.now {
        Some(now) => now
            .parse::<k8s_openapi::jiff::Timestamp>()
            .with_context(|| format!("--now {now:?}: an RFC 3339 time"))?,
        None => k8s_openapi::jiff::Timestamp::now(),
    };
    let mut objects = Vec::new();
    for file in &args.files {
        let text = if file.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).context("reading stdin")?
        } else {
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
        };
        objects.extend(
            preview::documents(&text).with_context(|| format!("parsing {}", file.display()))?,
        );
    }
    let scoping = Scoping {
        cluster_scoped: args.target_namespace.is_none(),
        target_namespace: args.target_namespace.clone().unwrap_or_default(),
        filter_namespaces: args.filter_namespaces,
    };
    let mut rng = match args.seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => StdRng::from_os_rng(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let verdicts = runtime.block_on(async {
        let view: Box<dyn ClusterView> = match &args.cluster {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                Box::new(
                    ClusterState::from_yaml(&text)
                        .with_context(|| format!("parsing {}", path.display()))?,
                )
            }
            None => Box::new(ApiView(
                kube::Client::try_default()
                    .await
                    .context("no --cluster and no usable kubeconfig")?,
            )),
        };
        let mut verdicts = Vec::new();
        for object in &objects {
            verdicts.push(preview::preview(view.as_ref(), &scoping, object, now, &mut rng).await?);
        }
        anyhow::Ok(verdicts)
    })?;
    match args.output {
        Output::Json => emit(&format!("{}\n", serde_json::to_string_pretty(&verdicts)?))?,
        Output::Text => emit(&preview::text_table(&verdicts))?,
    }
    Ok(())
}

/// Writes the answer to stdout. A reader that stops early (`plan … | head`) is not an error:
/// `print!` panicked on the broken pipe.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(err).context("writing the plan to stdout"))
        }
        _ => Ok(()),
    }
}

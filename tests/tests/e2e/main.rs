//! End-to-end stories against a real container runtime: one private containerd (the testbed)
//! shared by every story in this process, pods made through CRI like kubelet makes them.
//!
//! A plain binary (`harness = false`) on libtest-mimic: stories are plain functions, run on
//! libtest's threads, panics caught. After the run the testbed is torn down and the harness
//! fails if anything of it is left on the host. Needs root; otherwise every story is ignored.

mod agent_restart;
mod agent_support;
mod binaries;
mod chaos_mesh;
mod controller_pod;
mod daemonset;
mod dns;
mod handover;
mod http;
mod http_streams;
mod https;
mod injector_in_pod;
mod io_chaos;
mod network;
mod nsexec_stories;
mod reconciler;
mod resolution;
mod sidecar;
mod stress;
mod testbed_pods;
mod time_chaos;
mod workflow;

use std::process::ExitCode;
use std::sync::Arc;

use libtest_mimic::{Arguments, Failed, Trial};
use testbed::Testbed;

/// One story: a function of the shared testbed that tells what a user would see.
pub type Story = fn(&Testbed) -> anyhow::Result<()>;

fn stories() -> Vec<(&'static str, Story)> {
    let mut all = Vec::new();
    all.extend(testbed_pods::stories());
    all.extend(resolution::stories());
    all.extend(nsexec_stories::stories());
    all.extend(injector_in_pod::stories());
    all.extend(io_chaos::stories());
    all.extend(handover::stories());
    all.extend(stress::stories());
    all.extend(network::stories());
    all.extend(agent_restart::stories());
    all.extend(reconciler::stories());
    all.extend(workflow::stories());
    all.extend(sidecar::stories());
    all.extend(chaos_mesh::stories());
    all.extend(daemonset::stories());
    all.extend(controller_pod::stories());
    all.extend(dns::stories());
    all.extend(http::stories());
    all.extend(http_streams::stories());
    all.extend(https::stories());
    all.extend(time_chaos::stories());
    all
}

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let stories = stories();

    let root = nix::unistd::geteuid().is_root();
    // No story is marked ignored, so `--ignored` selects none.
    let needs_testbed =
        !args.list && !args.ignored && stories.iter().any(|(name, _)| selected(&args, name));
    if !root || !needs_testbed {
        if !root && needs_testbed {
            eprintln!("e2e: not running as root: every story needs a real containerd, all ignored");
        }
        let trials = stories
            .into_iter()
            .map(|(name, _)| Trial::test(name, || Ok(())).with_ignored_flag(!root))
            .collect();
        return libtest_mimic::run(&args, trials).exit_code();
    }

    let started = std::time::Instant::now();
    let testbed = match Testbed::start() {
        Ok(testbed) => Arc::new(testbed),
        Err(e) => {
            eprintln!("e2e: the testbed did not start: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "e2e: testbed up in {:.2?} at {} (subnet {}, bridge {})",
        started.elapsed(),
        testbed.base_dir().display(),
        testbed.subnet(),
        testbed.bridge()
    );

    let trials = stories
        .into_iter()
        .map(|(name, story)| {
            let testbed = Arc::clone(&testbed);
            Trial::test(name, move || {
                story(&testbed).map_err(|e| Failed::from(format!("{e:#}")))
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);

    let teardown = testbed.shutdown();
    let left = testbed.leftovers();
    let mut clean = true;
    if let Err(e) = teardown {
        eprintln!("e2e: {e}");
        clean = false;
    }
    if !left.is_empty() {
        eprintln!(
            "e2e: the testbed left these behind:\n  {}",
            left.join("\n  ")
        );
        clean = false;
    }
    if clean {
        eprintln!(
            "e2e: testbed torn down, nothing left (total {:.2?})",
            started.elapsed()
        );
        conclusion.exit_code()
    } else {
        ExitCode::FAILURE
    }
}

/// libtest's selection rules (filter, --exact, --skip), to avoid starting a testbed for nothing.
fn selected(args: &Arguments, name: &str) -> bool {
    let matches = |pattern: &str| {
        if args.exact {
            name == pattern
        } else {
            name.contains(pattern)
        }
    };
    args.filter.as_deref().is_none_or(matches) && !args.skip.iter().any(|s| matches(s))
}

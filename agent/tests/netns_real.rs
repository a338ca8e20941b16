//! Running work inside a network namespace for real (setns needs root). Runs under
//! libtest-mimic so that, without root, the test is reported *ignored* instead of passing
//! after an early return.

use agent::network::netns::{device_names, inode_of, run_in};

/// The work runs on a thread of its own (never the caller's, never a runtime worker), sees the
/// namespace's devices, and a namespace inode that is not the process's any more is refused.
fn work_runs_on_its_own_thread() -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let me = std::process::id();
        let inode = inode_of(me).map_err(|e| e.to_string())?;
        let caller = std::thread::current().id();
        let (thread, devices) = run_in(me, inode, move || {
            Ok((std::thread::current().id(), device_names()?))
        })
        .await
        .map_err(|e| e.to_string())?;
        if thread == caller {
            return Err("the work ran on the caller's thread".into());
        }
        if !devices.iter().any(|d| d == "lo") {
            return Err(format!("no lo among {devices:?}"));
        }
        match run_in(me, inode + 1, || Ok(())).await {
            Err(err) if err.to_string().contains("no longer") => Ok(()),
            other => Err(format!("a stale inode was not refused: {other:?}")),
        }
    })
}

fn main() -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!(
            "not running as root: setns into a network namespace is ignored (needs CAP_SYS_ADMIN)"
        );
    }
    let trials = vec![
        libtest_mimic::Trial::test("work_runs_on_its_own_thread", || {
            work_runs_on_its_own_thread().map_err(libtest_mimic::Failed::from)
        })
        .with_ignored_flag(!root),
    ];
    libtest_mimic::run(&args, trials).exit_code()
}

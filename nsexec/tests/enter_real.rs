//! Entering namespaces for real (root only). Runs under libtest-mimic so that, without root,
//! the test is reported *ignored* instead of passing after an early return.

use std::process::Command;

use nsexec::namespace::{Namespace, NamespaceRequest};
use nsexec::spawn::enter_before_exec;

/// Entering our own namespaces needs CAP_SYS_ADMIN but changes nothing: the point is that it
/// works from a multi-threaded test process (the setns happens in the child).
fn joins_own_namespaces_from_a_threaded_process() {
    let me = std::process::id();
    let mut cmd = Command::new("readlink");
    cmd.arg("/proc/self/ns/mnt");
    enter_before_exec(
        &mut cmd,
        &NamespaceRequest::of_pid(me, &[Namespace::Mnt, Namespace::Net]),
    )
    .expect("configure the namespaces");
    let out = cmd.output().expect("run readlink");
    assert!(out.status.success());
    let ours = std::fs::read_link("/proc/self/ns/mnt").expect("our mnt ns");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        ours.to_string_lossy()
    );
}

fn main() -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("not running as root: entering namespaces is ignored (needs CAP_SYS_ADMIN)");
    }
    let trials = vec![
        libtest_mimic::Trial::test("joins_own_namespaces_from_a_threaded_process", || {
            std::panic::catch_unwind(joins_own_namespaces_from_a_threaded_process).map_err(|e| {
                let text = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                libtest_mimic::Failed::from(text)
            })
        })
        .with_ignored_flag(!root),
    ];
    libtest_mimic::run(&args, trials).exit_code()
}

//! Spawning processes into namespaces from a multi-threaded program.

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::path::Path;
use std::process::Command;

use crate::namespace::{Namespace, NamespaceRequest, NamespaceTarget, OpenedNamespaces};
use crate::syscall::{LinuxSyscall, Syscall};
use crate::{Error, Result, sys};

/// What the child of a spawned command gets set up with, between fork and exec.
#[derive(Debug, Default)]
pub struct ChildSetup {
    /// Namespaces to join (not a pid namespace: see [`helper_command`]).
    pub namespaces: Vec<NamespaceRequest>,
    /// Signal the child gets when the thread that spawned it dies (PR_SET_PDEATHSIG). Spawn
    /// from a long-lived thread (a tokio worker, not a `spawn_blocking` thread, which exits
    /// when idle).
    pub die_with_parent: Option<nix::sys::signal::Signal>,
    /// Descriptors to hand to the child at fixed numbers (`(descriptor, number in the child)`,
    /// numbers above 2); the child's copies are not close-on-exec.
    pub pass_fds: Vec<(OwnedFd, RawFd)>,
}

/// Makes `cmd`'s child join the requested namespaces between fork and exec.
///
/// The namespace files are opened now (so a dead target fails here, not in the child) and live
/// inside `cmd` until it is dropped: drop the command right after spawning it. A pid namespace is
/// refused ([`Error::PidNamespaceNeedsHelper`]): use [`helper_command`] for that.
/// Works with `tokio::process::Command::from(cmd)`.
pub fn enter_before_exec(cmd: &mut Command, requests: &[NamespaceRequest]) -> Result<()> {
    prepare(
        cmd,
        ChildSetup {
            namespaces: requests.to_vec(),
            ..ChildSetup::default()
        },
    )
}

/// Sets the child of `cmd` up as `setup` says: joins namespaces (mount last, then `chdir /`),
/// arms the parent-death signal and places the passed descriptors.
pub fn prepare(cmd: &mut Command, setup: ChildSetup) -> Result<()> {
    if setup
        .namespaces
        .iter()
        .any(|r| r.namespace == Namespace::Pid)
    {
        return Err(Error::PidNamespaceNeedsHelper);
    }
    if let Some(&(_, target)) = setup.pass_fds.iter().find(|(_, target)| *target < 3) {
        return Err(Error::InvalidTarget {
            flag: 'f',
            value: target.to_string(),
            reason: "descriptors 0-2 are the child's stdio",
        });
    }
    let opened = OpenedNamespaces::open(&setup.namespaces, &LinuxSyscall)?;
    let enters_mount_ns = opened.contains(Namespace::Mnt);
    let mut pending = Some(opened);
    let die_with_parent = setup.die_with_parent;
    let pass_fds = setup.pass_fds;
    sys::before_exec(cmd, move || {
        if let Some(opened) = pending.take() {
            opened.enter(&LinuxSyscall).map_err(io::Error::other)?;
        }
        if enters_mount_ns {
            // The old working directory belongs to the namespace we left.
            nix::unistd::chdir("/")?;
        }
        if let Some(signal) = die_with_parent {
            nix::sys::prctl::set_pdeathsig(signal)?;
        }
        sys::place_fds(&pass_fds)?;
        Ok(())
    });
    Ok(())
}

/// A command that runs `program args...` through the `nsexec` binary at `nsexec`, which enters
/// the namespaces (a pid namespace included), forwards SIGTERM/SIGINT and exits with the child's
/// status (128+signal when it was killed).
pub fn helper_command<S: AsRef<std::ffi::OsStr>>(
    nsexec: &Path,
    requests: &[NamespaceRequest],
    program: S,
    args: &[S],
) -> Command {
    let mut cmd = Command::new(nsexec);
    for request in requests {
        cmd.arg(format!("-{}", request.namespace.flag()));
        match &request.target {
            NamespaceTarget::Pid(pid) => cmd.arg(pid.to_string()),
            NamespaceTarget::File(path) => cmd.arg(path),
        };
    }
    cmd.arg("--").arg(program).args(args);
    cmd
}

/// Checks that every namespace of `requests` can be opened, without entering any.
pub fn check(requests: &[NamespaceRequest]) -> Result<()> {
    check_with(requests, &LinuxSyscall)
}

fn check_with(requests: &[NamespaceRequest], sys: &dyn Syscall) -> Result<()> {
    OpenedNamespaces::open(requests, sys).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_command_passes_every_namespace_and_the_command() {
        let requests = vec![
            NamespaceRequest::new(Namespace::Mnt, NamespaceTarget::Pid(12)),
            NamespaceRequest::new(Namespace::Net, NamespaceTarget::File("/run/netns/x".into())),
        ];
        let cmd = helper_command(
            Path::new("/usr/bin/nsexec"),
            &requests,
            "cat",
            &["/etc/hostname"],
        );
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "-m",
                "12",
                "-n",
                "/run/netns/x",
                "--",
                "cat",
                "/etc/hostname"
            ]
        );
    }

    #[test]
    fn pid_namespace_is_refused_before_exec() {
        let mut cmd = Command::new("true");
        let err = enter_before_exec(&mut cmd, &NamespaceRequest::of_pid(1, &[Namespace::Pid]))
            .unwrap_err();
        assert!(matches!(err, Error::PidNamespaceNeedsHelper));
    }
}

#[cfg(test)]
mod setup_tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn passes_a_socket_at_a_fixed_number() {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo hello >&5; read line <&5; echo \"got $line\" >&5",
        ]);
        prepare(
            &mut cmd,
            ChildSetup {
                die_with_parent: Some(nix::sys::signal::Signal::SIGKILL),
                pass_fds: vec![(theirs.into(), 5)],
                ..ChildSetup::default()
            },
        )
        .unwrap();
        let mut child = cmd.spawn().unwrap();
        drop(cmd);
        ours.write_all(b"ping\n").unwrap();
        let status = child.wait().unwrap();
        assert!(status.success());
        let mut text = String::new();
        ours.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        ours.read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello\ngot ping\n");
    }

    #[test]
    fn stdio_numbers_are_refused() {
        let (_, theirs) = UnixStream::pair().unwrap();
        let err = prepare(
            &mut Command::new("true"),
            ChildSetup {
                pass_fds: vec![(theirs.into(), 1)],
                ..ChildSetup::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("stdio"), "{err}");
    }
}

//! A pod's network namespace: its identity (the namespace inode, shared by every container of
//! the pod and owned by its sandbox), finding a live process in it, and running code inside it
//! on a dedicated OS thread (never a tokio worker: the thread ends with the work).

use std::os::unix::fs::MetadataExt;

use nix::sched::CloneFlags;

use super::error::NetworkError;

/// The inode of a process's network namespace.
pub fn inode_of(pid: u32) -> Result<u64, NetworkError> {
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .map(|m| m.ino())
        .map_err(|e| NetworkError::Namespace {
            pid,
            reason: e.to_string(),
        })
}

/// Whether `inode` is the node's own network namespace (that of PID 1 or of this agent).
pub fn is_host(inode: u64) -> bool {
    let of = |path: &str| std::fs::metadata(path).ok().map(|m| m.ino());
    of("/proc/1/ns/net") == Some(inode) || of("/proc/self/ns/net") == Some(inode)
}

/// A live process in the namespace with this inode: `hint` if it still is, else any.
pub fn find_process(inode: u64, hint: Option<u32>) -> Option<u32> {
    if let Some(pid) = hint
        && inode_of(pid).ok() == Some(inode)
    {
        return Some(pid);
    }
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| inode_of(*pid).ok() == Some(inode))
}

/// Moves the calling thread into the network namespace of `pid`, checking it got the one with
/// `inode` (the PID may have been reused). Only for threads that end with their work.
pub fn enter(pid: u32, inode: u64) -> Result<(), NetworkError> {
    let ns_err = |reason: String| NetworkError::Namespace { pid, reason };
    // Already there (the sidecar agent, inside the pod): setns would ask for CAP_SYS_ADMIN,
    // which a container with NET_ADMIN alone does not have, and would change nothing.
    if std::fs::metadata("/proc/thread-self/ns/net").is_ok_and(|m| m.ino() == inode) {
        return Ok(());
    }
    let file =
        std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(|e| ns_err(e.to_string()))?;
    if file.metadata().map(|m| m.ino()).ok() != Some(inode) {
        return Err(ns_err(
            "the process is no longer in the pod's namespace".into(),
        ));
    }
    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| ns_err(e.to_string()))?;
    drop(file);
    let now = std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino());
    if now.ok() != Some(inode) {
        return Err(ns_err("setns did not take effect".into()));
    }
    Ok(())
}

/// Runs `work` on a new OS thread inside the namespace and waits for it without blocking the
/// runtime.
pub async fn run_in<T, F>(pid: u32, inode: u64, work: F) -> Result<T, NetworkError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, NetworkError> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("netns-{pid}"))
        .spawn(move || {
            let result = enter(pid, inode).and_then(|()| work());
            let _ = tx.send(result);
        })
        .map_err(|e| NetworkError::Internal(format!("spawning a namespace thread: {e}")))?;
    rx.await
        .map_err(|_| NetworkError::Internal("the namespace thread panicked".into()))?
}

/// The names of the namespace's network devices (read from inside it).
pub fn device_names() -> Result<Vec<String>, NetworkError> {
    nix::net::if_::if_nameindex()
        .map(|list| {
            list.iter()
                .map(|i| i.name().to_string_lossy().into_owned())
                .collect()
        })
        .map_err(|e| NetworkError::Internal(format!("listing the network devices: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_namespace_is_the_hosts() {
        let me = std::process::id();
        let inode = inode_of(me).unwrap();
        assert!(is_host(inode));
        assert_eq!(find_process(inode, Some(me)), Some(me));
        assert!(inode_of(u32::MAX).is_err());
    }
}

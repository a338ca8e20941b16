//! The mount logic against a recording fake: order of namespace operations, fallbacks,
//! and errors, without root.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use super::volume_policy::DirIdentity;
use super::*;

#[derive(Default, Debug)]
struct Fake {
    calls: Mutex<Vec<String>>,
    /// Errors to return from a call, by name (consumed once).
    fail: Mutex<HashMap<&'static str, Vec<i32>>>,
    /// Mount id reported by `mount_id_of` (for every descriptor).
    mount_id: Mutex<u64>,
    table: Mutex<String>,
    /// What `server_alive` answers.
    alive: Mutex<bool>,
    /// Inode of a descriptor's (unique, temporary) file → name of the call that made it;
    /// by inode so that duplicates keep the name.
    fds: Mutex<HashMap<u64, String>>,
    /// The volume path resolves to the target's root directory (`ln -s / /data/x`).
    dir_is_root: Mutex<bool>,
    /// The statfs magic `identify` reports.
    dir_magic: Mutex<u64>,
}

impl Fake {
    fn new() -> Self {
        let f = Fake::default();
        *f.mount_id.lock() = 812;
        *f.table.lock() = "812 36 0:77 / /data rw - fuse.faultline faultline rw\n".into();
        f
    }

    fn failing(self, call: &'static str, errno: i32) -> Self {
        self.fail.lock().entry(call).or_default().push(errno);
        self
    }

    fn record(&self, call: String) {
        self.calls.lock().push(call);
    }

    fn check(&self, name: &'static str) -> io::Result<()> {
        match self.fail.lock().get_mut(name).and_then(|v| v.pop()) {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => Ok(()),
        }
    }

    fn fd(&self, what: &str) -> io::Result<OwnedFd> {
        let file: File = tempfile::tempfile()?;
        self.fds
            .lock()
            .insert(file.metadata()?.ino(), what.to_owned());
        Ok(file.into())
    }

    fn name(&self, fd: BorrowedFd<'_>) -> String {
        let ino = nix::sys::stat::fstat(fd).map(|st| st.st_ino).unwrap_or(0);
        self.fds
            .lock()
            .get(&ino)
            .cloned()
            .unwrap_or_else(|| "?".into())
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().clone()
    }
}

impl MountSys for Fake {
    fn open_root(&self, target: Target) -> io::Result<OwnedFd> {
        self.record(format!("open_root {target:?}"));
        self.check("open_root")?;
        self.fd(&format!("root {target:?}"))
    }
    fn resolve_dir(&self, root: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
        self.record(format!("resolve {} in {}", path.display(), self.name(root)));
        self.check("resolve_dir")?;
        self.fd("dir")
    }
    fn identify(&self, dir: BorrowedFd<'_>) -> io::Result<DirIdentity> {
        // Every descriptor of the fake is a directory of its own, except that the volume may
        // be told to resolve to the root.
        let name = self.name(dir);
        let is_root = name.starts_with("root") || (name == "dir" && *self.dir_is_root.lock());
        Ok(DirIdentity {
            dev: 1,
            ino: if is_root {
                1
            } else {
                nix::sys::stat::fstat(dir)?.st_ino
            },
            fs_magic: if name == "dir" {
                *self.dir_magic.lock()
            } else {
                0xef53
            },
        })
    }
    fn mount_attrs_of(&self, _dir: BorrowedFd<'_>) -> io::Result<u64> {
        Ok(libc::MOUNT_ATTR_NOSUID)
    }
    fn open_fuse_device(&self) -> io::Result<OwnedFd> {
        self.record("open /dev/fuse".into());
        self.check("open_fuse_device")?;
        self.fd("fuse")
    }
    fn create_fuse_fs(&self, fuse: BorrowedFd<'_>) -> io::Result<OwnedFd> {
        self.record(format!("create_fuse_fs {}", self.name(fuse)));
        self.check("create_fuse_fs")?;
        self.fd("superblock")
    }
    fn fsmount(&self, fs: BorrowedFd<'_>, attrs: u64) -> io::Result<OwnedFd> {
        self.record(format!("fsmount {} attrs={attrs:#x}", self.name(fs)));
        self.fd("mnt")
    }
    fn mount_id_of(&self, fd: BorrowedFd<'_>) -> io::Result<u64> {
        self.record(format!("mount_id_of {}", self.name(fd)));
        Ok(*self.mount_id.lock())
    }
    fn mountinfo(&self, target: Target) -> io::Result<String> {
        self.record(format!("mountinfo {target:?}"));
        Ok(self.table.lock().clone())
    }
    fn unshare_fs(&self) -> io::Result<()> {
        self.record("unshare_fs".into());
        self.check("unshare_fs")
    }
    fn open_mnt_ns(&self, target: Target) -> io::Result<OwnedFd> {
        self.record(format!("open_mnt_ns {target:?}"));
        self.check("open_mnt_ns")?;
        self.fd(&format!("ns {target:?}"))
    }
    fn setns_mnt(&self, ns: BorrowedFd<'_>) -> io::Result<()> {
        self.record(format!("setns {}", self.name(ns)));
        self.check("setns_mnt")
    }
    fn chroot_to(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        self.record(format!("chroot {}", self.name(dir)));
        Ok(())
    }
    fn move_mount(&self, mnt: BorrowedFd<'_>, onto: BorrowedFd<'_>) -> io::Result<()> {
        self.record(format!(
            "move_mount {} onto {}",
            self.name(mnt),
            self.name(onto)
        ));
        self.check("move_mount")
    }
    fn open_path(&self, path: &Path) -> io::Result<OwnedFd> {
        self.record(format!("open_path {}", path.display()));
        self.check("open_path")?;
        self.fd("top")
    }
    fn umount(&self, path: &Path, detach: bool) -> io::Result<()> {
        self.record(format!("umount {} detach={detach}", path.display()));
        self.check(if detach { "umount_detach" } else { "umount" })?;
        self.table.lock().clear();
        Ok(())
    }
    fn server_alive(&self, fd: BorrowedFd<'_>) -> bool {
        self.record(format!("server_alive {}", self.name(fd)));
        *self.alive.lock()
    }
}

fn request(pid: u32, path: &str) -> MountRequest {
    MountRequest {
        target: Target::Process(pid),
        path: PathBuf::from(path),
    }
}

#[test]
fn paths_are_validated_before_anything_is_opened() {
    for (path, reason) in [
        ("data", "must be absolute"),
        ("/data/../../etc", "must not contain '..'"),
        ("/", "cannot mount over the root directory"),
        ("//", "cannot mount over the root directory"),
    ] {
        let sys = Arc::new(Fake::new());
        match prepare(sys.clone(), &request(7, path)) {
            Err(MountError::InvalidPath { reason: r, .. }) => assert_eq!(r, reason, "{path}"),
            other => panic!("{path}: {other:?}"),
        }
        assert!(sys.calls().is_empty(), "{path}: {:?}", sys.calls());
    }
    assert!(validate_path(Path::new("/data/./x")).is_ok());
}

#[test]
fn a_volume_that_resolves_to_the_root_or_a_pseudo_filesystem_is_refused_before_fuse_opens() {
    let sys = Arc::new(Fake::new());
    *sys.dir_is_root.lock() = true;
    match prepare(sys.clone(), &request(7, "/data/escape")) {
        Err(e @ MountError::Refused { .. }) => {
            assert!(e.to_string().contains("container's root directory"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !sys.calls().iter().any(|c| c.contains("/dev/fuse")),
        "{:?}",
        sys.calls()
    );

    let sys = Arc::new(Fake::new());
    *sys.dir_magic.lock() = 0x9fa0;
    match prepare(sys.clone(), &request(7, "/data/proc-link")) {
        Err(e @ MountError::Refused { .. }) => assert!(e.to_string().contains("proc"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn prepare_opens_everything_from_the_host_side_in_order() {
    let sys = Arc::new(Fake::new());
    let prepared = prepare(sys.clone(), &request(42, "/data")).expect("prepare");
    assert_eq!(
        sys.calls(),
        [
            "open_root Process(42)",
            "resolve /data in root Process(42)",
            "open /dev/fuse",
            "create_fuse_fs fuse",
        ]
    );
    drop(prepared);
}

#[test]
fn prepare_reports_missing_process_and_path() {
    let sys = Arc::new(Fake::new().failing("open_root", libc::ENOENT));
    assert!(matches!(
        prepare(sys, &request(9, "/data")),
        Err(MountError::NoProcess { pid: 9 })
    ));
    let sys = Arc::new(Fake::new().failing("resolve_dir", libc::ENOENT));
    let err = prepare(sys.clone(), &request(9, "/nope")).expect_err("missing path");
    assert!(matches!(err, MountError::PathNotFound { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "\"/nope\" does not exist in the mount namespace of process 9"
    );
    assert!(!sys.calls().iter().any(|c| c.contains("fuse")));
    let sys = Arc::new(Fake::new().failing("resolve_dir", libc::ENOTDIR));
    assert!(matches!(
        prepare(sys, &request(9, "/etc/passwd")),
        Err(MountError::NotADirectory { .. })
    ));
}

#[test]
fn attach_enters_the_namespace_only_to_move_the_mount_and_always_returns() {
    let sys = Arc::new(Fake::new());
    let prepared = prepare(sys.clone(), &request(42, "/data")).expect("prepare");
    sys.calls.lock().clear();
    let mounted = prepared.pending.attach().expect("attach");
    assert_eq!(mounted.mount_id(), 812);
    assert_eq!(
        sys.calls(),
        [
            format!("fsmount superblock attrs={:#x}", libc::MOUNT_ATTR_NOSUID),
            "unshare_fs".into(),
            "open_mnt_ns Own".into(),
            "open_mnt_ns Process(42)".into(),
            "setns ns Process(42)".into(),
            "move_mount mnt onto dir".into(),
            "setns ns Own".into(),
            "mount_id_of mnt".into(),
        ]
    );
}

#[test]
fn failed_attach_still_returns_to_our_namespace() {
    let sys = Arc::new(Fake::new().failing("move_mount", libc::EACCES));
    let prepared = prepare(sys.clone(), &request(42, "/data")).expect("prepare");
    let err = prepared.pending.attach().expect_err("move_mount fails");
    assert!(matches!(err, MountError::Attach { .. }), "{err}");
    let calls = sys.calls();
    assert_eq!(calls.last().map(String::as_str), Some("setns ns Own"));
}

#[test]
fn own_namespace_needs_no_setns() {
    let sys = Arc::new(Fake::new());
    let req = MountRequest {
        target: Target::Own,
        path: PathBuf::from("/tmp/x"),
    };
    let prepared = prepare(sys.clone(), &req).expect("prepare");
    prepared.pending.attach().expect("attach");
    assert!(!sys.calls().iter().any(|c| c.starts_with("setns")));
    assert!(sys.calls().iter().any(|c| c == "move_mount mnt onto dir"));
}

#[test]
fn busy_unmount_detaches_lazily_and_says_so() {
    let sys = Arc::new(Fake::new().failing("umount", libc::EBUSY));
    let prepared = prepare(sys.clone(), &request(42, "/data")).expect("prepare");
    let mounted = prepared.pending.attach().expect("attach");
    sys.calls.lock().clear();
    assert_eq!(mounted.unmount().expect("unmount"), Unmounted::Detached);
    assert_eq!(
        sys.calls(),
        [
            "mountinfo Process(42)",
            "open_root Process(42)",
            "unshare_fs",
            "open_mnt_ns Own",
            "open_mnt_ns Process(42)",
            "setns ns Process(42)",
            "chroot root Process(42)",
            "open_path /data",
            "mount_id_of top",
            "umount /data detach=false",
            "umount /data detach=true",
            "setns ns Own",
        ]
    );
}

#[test]
fn unmount_of_a_vanished_mount_is_not_an_error() {
    let sys = Arc::new(Fake::new());
    let prepared = prepare(sys.clone(), &request(42, "/data")).expect("prepare");
    let mounted = prepared.pending.attach().expect("attach");
    *sys.table.lock() = String::new();
    assert_eq!(mounted.unmount().expect("unmount"), Unmounted::NotMounted);
}

#[test]
fn a_covered_mount_is_left_alone() {
    let sys = Arc::new(Fake::new());
    let prepared = prepare(sys.clone(), &request(42, "/data")).expect("prepare");
    let mounted = prepared.pending.attach().expect("attach");
    *sys.mount_id.lock() = 999;
    let err = mounted.unmount().expect_err("covered");
    assert!(matches!(err, MountError::Replaced { .. }), "{err}");
    let calls = sys.calls();
    assert!(!calls.iter().any(|c| c.starts_with("umount")), "{calls:?}");
    assert_eq!(calls.last().map(String::as_str), Some("setns ns Own"));
    // Uncovered again: now it goes.
    *sys.mount_id.lock() = 812;
    assert_eq!(mounted.unmount().expect("unmount"), Unmounted::Clean);
}

#[test]
fn cleanup_only_touches_a_dead_faultline_mount() {
    let sys = Fake::new();
    assert_eq!(
        cleanup(&sys, &request(42, "/data")).expect("cleanup"),
        Unmounted::Clean
    );
    assert!(sys.calls().iter().any(|c| c == "umount /data detach=false"));
    assert!(sys.calls().iter().any(|c| c == "server_alive dir"));

    let sys = Fake::new();
    *sys.alive.lock() = true;
    let err = cleanup(&sys, &request(42, "/data")).expect_err("live");
    assert!(matches!(err, MountError::Live { .. }), "{err}");
    assert!(!sys.calls().iter().any(|c| c.starts_with("umount")));

    let sys = Fake::new();
    *sys.table.lock() = "812 36 0:77 / /data rw - ext4 /dev/sda rw\n".into();
    assert_eq!(
        cleanup(&sys, &request(42, "/data")).expect("cleanup"),
        Unmounted::NotMounted
    );
    assert!(!sys.calls().iter().any(|c| c.starts_with("umount")));
}

#[test]
fn entering_a_dead_process_namespace_is_a_clear_error() {
    let sys = Arc::new(Fake::new());
    let prepared = prepare(sys.clone(), &request(42, "/data")).expect("prepare");
    let sys2 = Arc::new(Fake::new().failing("open_mnt_ns", libc::ENOENT));
    let pending = PendingMount {
        sys: sys2,
        ..prepared.pending
    };
    let err = pending.attach().expect_err("dead");
    assert!(matches!(err, MountError::EnterNamespace { .. }), "{err}");
}

#[test]
fn a_separate_original_is_resolved_in_the_same_root_and_checked_like_the_mount_point() {
    let sys = Arc::new(Fake::new());
    let prepared = prepare_serving(sys.clone(), &request(42, "/data"), Some(Path::new("/orig")))
        .expect("prepare");
    assert_eq!(
        sys.calls(),
        [
            "open_root Process(42)",
            "resolve /data in root Process(42)",
            "resolve /orig in root Process(42)",
            "open /dev/fuse",
            "create_fuse_fs fuse",
        ]
    );
    drop(prepared);

    // The original is validated before anything is opened, and a missing one is named.
    let sys = Arc::new(Fake::new());
    let err = prepare_serving(sys.clone(), &request(42, "/data"), Some(Path::new("orig")))
        .expect_err("relative original");
    assert!(matches!(err, MountError::InvalidPath { .. }), "{err}");
    assert!(sys.calls().is_empty(), "{:?}", sys.calls());
}

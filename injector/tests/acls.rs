//! POSIX ACLs and the umask through the mount: the kernel enforces the ACLs the original
//! holds, ACL and mode changes made through the mount take effect at once (no remount), and
//! new files get exactly the mode, owner and ACLs a native create in the same directory
//! gives, default ACLs and the creator's umask included.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::xattr::{self, ACCESS, DEFAULT, acl, acl_of};
use common::{Fixture, PYTHON};
use injector::fs::FsOptions;
use injector::serve::ServeOptions;
use nix::errno::Errno;
use serde_json::json;

/// The user ACLs let in (no such account: a bare uid is enough).
const USER: u32 = 4242;
/// Another user, named in ACLs but never let in by them.
const OTHER_USER: u32 = 4343;

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Let other users walk to the volume (the fixture's temporary directory is private).
fn open_to_others(vol: &Path) {
    chmod(vol.parent().expect("fixture dir"), 0o755);
    chmod(vol, 0o755);
}

/// `cat path` as `uid`: the contents, or what cat said.
fn read_as(uid: u32, path: &Path) -> Result<Vec<u8>, String> {
    let out = Command::new("cat")
        .arg(path)
        .uid(uid)
        .gid(uid)
        .output()
        .expect("cat");
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn denied(read: Result<Vec<u8>, String>) -> bool {
    matches!(&read, Err(e) if e.contains("Permission denied"))
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).expect("stat").mode() & 0o7777
}

const GRANTED: &str = "u::rw- u:4242:r-- g::--- m::r-- o::---";

fn an_acl_lets_a_user_in_and_changing_it_through_the_mount_takes_effect_at_once() {
    let fx = Fixture::mount_with(|p| {
        open_to_others(p);
        let secret = p.join("secret");
        fs::write(&secret, b"for 4242").expect("secret");
        chmod(&secret, 0o600);
        xattr::set(&secret, ACCESS, &acl(GRANTED)).expect("setfacl on the original");
    });
    let secret = fx.at("secret");
    let orig = fx.orig("secret");
    assert_eq!(read_as(USER, &secret), Ok(b"for 4242".to_vec()));
    assert!(denied(read_as(OTHER_USER, &secret)));

    // setfacl -x u:4242 -m u:4343:r, through the mount.
    let moved = "u::rw- u:4343:r-- g::--- m::r-- o::---";
    xattr::set(&secret, ACCESS, &acl(moved)).expect("setfacl through the mount");
    assert!(denied(read_as(USER, &secret)));
    assert_eq!(read_as(OTHER_USER, &secret), Ok(b"for 4242".to_vec()));
    assert_eq!(acl_of(&orig, ACCESS).as_deref(), Ok(moved));

    // setfacl -b: no ACL left; the group bits keep the last mask, as natively.
    xattr::remove(&secret, ACCESS).expect("removexattr through the mount");
    assert!(denied(read_as(OTHER_USER, &secret)));
    assert_eq!(acl_of(&orig, ACCESS), Err(Errno::ENODATA));
    assert_eq!(mode(&secret), 0o640);

    // And back in: the kernel does not hold on to the absence of an ACL.
    xattr::set(&secret, ACCESS, &acl(GRANTED)).expect("setfacl through the mount");
    assert_eq!(read_as(USER, &secret), Ok(b"for 4242".to_vec()));

    // chmod g-r through the mount empties the mask (the original's filesystem keeps the
    // ACL consistent) and the kernel sees the new ACL and mode at once.
    chmod(&secret, 0o600);
    assert!(denied(read_as(USER, &secret)));
    let masked = "u::rw- u:4242:r-- g::--- m::--- o::---";
    assert_eq!(acl_of(&orig, ACCESS).as_deref(), Ok(masked));
    assert_eq!(acl_of(&secret, ACCESS).as_deref(), Ok(masked));
    chmod(&secret, 0o640);
    assert_eq!(read_as(USER, &secret), Ok(b"for 4242".to_vec()));
    assert_eq!(acl_of(&secret, ACCESS).as_deref(), Ok(GRANTED));
    assert_eq!((mode(&secret), mode(&orig)), (0o640, 0o640));
}

fn an_acl_changed_behind_the_mounts_back_is_seen_when_cached_attributes_expire() {
    let ttl = Duration::from_millis(300);
    let opts = ServeOptions {
        fs: FsOptions {
            cache_ttl: ttl,
            ..FsOptions::default()
        },
        ..ServeOptions::default()
    };
    let fx = Fixture::mount_opts(
        |p| {
            open_to_others(p);
            fs::write(p.join("secret"), b"for 4242").expect("secret");
            chmod(&p.join("secret"), 0o600);
            xattr::set(&p.join("secret"), ACCESS, &acl(GRANTED)).expect("setfacl");
        },
        opts,
    );
    let secret = fx.at("secret");
    assert_eq!(read_as(USER, &secret), Ok(b"for 4242".to_vec()));
    // setfacl -x u:4242 on the original: the kernel's cached ACL goes with its cached
    // attributes, so the change shows within the attribute timeout.
    let moved = "u::rw- u:4343:r-- g::--- m::r-- o::---";
    xattr::set(&fx.orig("secret"), ACCESS, &acl(moved)).expect("setfacl natively");
    std::thread::sleep(ttl * 2);
    assert!(denied(read_as(USER, &secret)));
    assert_eq!(read_as(OTHER_USER, &secret), Ok(b"for 4242".to_vec()));
}

fn a_getxattr_fault_rule_leaves_the_kernels_acl_checks_alone() {
    let fx = Fixture::mount_with(|p| {
        open_to_others(p);
        fs::write(p.join("secret"), b"for 4242").expect("secret");
        chmod(&p.join("secret"), 0o600);
        xattr::set(&p.join("secret"), "user.k", b"v").expect("user xattr");
    });
    let secret = fx.at("secret");
    fx.update(json!([{
        "type": "fault", "path": format!("{}/**", fx.path.display()),
        "methods": ["getxattr"], "faults": [{"errno": libc::EIO}]
    }]));
    // Setting an ACL through the mount drops the kernel's cached one: the next access by
    // 4242 makes the kernel read it again, and that read is not faulted.
    xattr::set(&secret, ACCESS, &acl(GRANTED)).expect("setxattr is not faulted");
    assert_eq!(read_as(USER, &secret), Ok(b"for 4242".to_vec()));
    assert_eq!(acl_of(&secret, ACCESS).as_deref(), Ok(GRANTED));
    // Every other xattr read is.
    assert_eq!(xattr::get(&secret, "user.k"), Err(Errno::EIO));
    fx.update(json!([]));
    assert_eq!(xattr::get(&secret, "user.k"), Ok(b"v".to_vec()));
}

/// Makes a file, a set-user-ID file, a directory and a FIFO in `argv[1]` under umask
/// `argv[2]`, names prefixed with `argv[3]`: create, mkdir and mknod through FUSE.
const CREATE: &str = r#"
import os, sys
os.chdir(sys.argv[1])
os.umask(int(sys.argv[2], 8))
prefix = sys.argv[3]
os.close(os.open(prefix + "file", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
os.close(os.open(prefix + "setuid", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o4775))
os.mkdir(prefix + "dir", 0o777)
os.mkfifo(prefix + "fifo", 0o666)
"#;
const MADE: [&str; 4] = ["file", "setuid", "dir", "fifo"];

/// Run a Python snippet as `uid` (in its own group only) with `args`; `what` names it in
/// the failure message.
fn python_as(uid: u32, script: &str, args: &[&std::ffi::OsStr], what: &str) {
    let out = Command::new(PYTHON)
        .args(["-I", "-c", script])
        .args(args)
        .uid(uid)
        .gid(uid)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{what} as {uid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn create_as(uid: u32, dir: &Path, umask: u32, prefix: &str) {
    let umask = format!("{umask:o}");
    python_as(
        uid,
        CREATE,
        &[dir.as_os_str(), umask.as_ref(), prefix.as_ref()],
        &format!("creating in {}", dir.display()),
    );
}

/// What a create decided: mode, owner and ACLs.
fn made(path: &Path) -> String {
    let m = fs::symlink_metadata(path).expect("stat");
    let acl = |which| acl_of(path, which).unwrap_or_else(|e| format!("none ({e})"));
    format!(
        "mode {:o}, owner {}:{}, access [{}], default [{}]",
        m.mode() & 0o7777,
        m.uid(),
        m.gid(),
        acl(ACCESS),
        acl(DEFAULT)
    )
}

/// Creates as `uid` under `umask` through the mount in `rel` and natively in `native`, and
/// checks that both made the same files, as the original and as the mount shows them.
fn same_as_native(fx: &Fixture, rel: &str, native: &Path, uid: u32, umask: u32) {
    let (mounted, natively) = (format!("m-{uid}-{umask:o}-"), format!("n-{uid}-{umask:o}-"));
    create_as(uid, &fx.at(rel), umask, &mounted);
    create_as(uid, native, umask, &natively);
    for kind in MADE {
        let name = format!("{rel}/{mounted}{kind}");
        let want = made(&native.join(format!("{natively}{kind}")));
        assert_eq!(
            made(&fx.orig(&name)),
            want,
            "{kind} as {uid}, umask {umask:o}"
        );
        assert_eq!(made(&fx.at(&name)), want, "{kind} seen through the mount");
    }
}

/// Lets `USER` create there; new entries inherit `INHERITED`.
const DIR_ACL: &str = "u::rwx u:4242:rwx g::r-x m::rwx o::r-x";
/// Its mask (r--) is narrower than the modes created with, and `u:4242:rw-` is wider.
const INHERITED: &str = "u::rwx u:4242:rw- g::r-x g:4343:rwx m::r-- o::---";

fn dir_with_default_acl(dir: &Path) {
    fs::create_dir(dir).expect("mkdir");
    chmod(dir, 0o755);
    xattr::set(dir, ACCESS, &acl(DIR_ACL)).expect("access ACL");
    xattr::set(dir, DEFAULT, &acl(INHERITED)).expect("default ACL");
}

fn new_files_inherit_a_default_acl_exactly_as_native_creates_do() {
    let fx = Fixture::mount_with(|p| {
        open_to_others(p);
        dir_with_default_acl(&p.join("inherit"));
        // USER cannot reach the original under the mount: a twin beside it stands in.
        dir_with_default_acl(&p.with_file_name("twin"));
    });
    // Root, against the original directory itself.
    same_as_native(&fx, "inherit", &fx.orig("inherit"), 0, 0o077);
    // Not vacuous: the umask (077) gave way to the default ACL, masked by the mode.
    assert_eq!(
        made(&fx.at("inherit/m-0-77-file")),
        "mode 640, owner 0:0, access [u::rw- u:4242:rw- g::r-x g:4343:rwx m::r-- o::---], \
         default [none (ENODATA: No data available)]"
    );
    assert_eq!(
        acl_of(&fx.at("inherit/m-0-77-dir"), DEFAULT).as_deref(),
        Ok(INHERITED)
    );
    // Another user: the daemon creates as root and hands the file over; set-ID bits and
    // the inherited mask must survive that.
    let twin = fx.path.with_file_name("twin");
    same_as_native(&fx, "inherit", &twin, USER, 0o077);
    same_as_native(&fx, "inherit", &twin, USER, 0o022);
    assert_eq!(mode(&fx.at("inherit/m-4242-22-setuid")), 0o4740);
}

fn without_a_default_acl_new_files_get_the_creators_umask() {
    let fx = Fixture::mount_with(|p| {
        open_to_others(p);
        for dir in [p.join("plain"), p.with_file_name("twin")] {
            fs::create_dir(&dir).expect("mkdir");
            chmod(&dir, 0o777);
        }
    });
    let twin = fx.path.with_file_name("twin");
    for umask in [0o022, 0o077, 0o000] {
        same_as_native(&fx, "plain", &fx.orig("plain"), 0, umask);
        same_as_native(&fx, "plain", &twin, USER, umask);
    }
    let modes: Vec<u32> = MADE
        .iter()
        .map(|kind| mode(&fx.at(&format!("plain/m-4242-22-{kind}"))))
        .collect();
    assert_eq!(modes, [0o644, 0o4755, 0o755, 0o644]);
    assert_eq!(mode(&fx.at("plain/m-0-77-dir")), 0o700);
}

/// `setxattr(path, system.posix_acl_access, acl(text))` as `uid` (in its own group only).
fn set_access_acl_as(uid: u32, path: &Path, text: &str) {
    let hex: String = acl(text).iter().map(|b| format!("{b:02x}")).collect();
    python_as(
        uid,
        "import os, sys; os.setxattr(sys.argv[1], 'system.posix_acl_access', bytes.fromhex(sys.argv[2]))",
        &[path.as_os_str(), hex.as_ref()],
        &format!("setting an ACL on {}", path.display()),
    );
}

/// A set-group-ID file `uid` owns, in `group`.
fn sgid_file(path: &Path, uid: u32, group: u32) {
    fs::write(path, b"x").expect("file");
    std::os::unix::fs::chown(path, Some(uid), Some(group)).expect("chown");
    chmod(path, 0o2770);
}

fn setting_an_acl_clears_set_group_id_as_natively_when_the_owner_is_not_in_the_group() {
    let fx = Fixture::mount_with(|p| {
        open_to_others(p);
        sgid_file(&p.join("foreign"), USER, OTHER_USER);
        sgid_file(&p.join("own"), USER, USER);
        // USER cannot reach the original under the mount: twins beside it stand in.
        let twin = p.with_file_name("twin");
        fs::create_dir(&twin).expect("twin");
        chmod(&twin, 0o755);
        sgid_file(&twin.join("foreign"), USER, OTHER_USER);
        sgid_file(&twin.join("own"), USER, USER);
    });
    let twin = fx.path.with_file_name("twin");
    let text = "u::rwx u:4343:r-x g::r-x m::r-x o::---";
    for name in ["foreign", "own"] {
        set_access_acl_as(USER, &twin.join(name), text);
        set_access_acl_as(USER, &fx.at(name), text);
        let native = mode(&twin.join(name));
        assert_eq!(mode(&fx.orig(name)), native, "{name}: the original");
        assert_eq!(mode(&fx.at(name)), native, "{name}: through the mount");
        assert_eq!(acl_of(&fx.at(name), ACCESS).as_deref(), Ok(text), "{name}");
    }
    // Not vacuous: natively the bit goes only where the owner is not in the file's group.
    assert_eq!(mode(&twin.join("foreign")), 0o750);
    assert_eq!(mode(&twin.join("own")), 0o2750);
}

fn main() -> std::process::ExitCode {
    common::run_tests(
        &[
            (
                "an_acl_lets_a_user_in_and_changing_it_through_the_mount_takes_effect_at_once",
                an_acl_lets_a_user_in_and_changing_it_through_the_mount_takes_effect_at_once,
            ),
            (
                "an_acl_changed_behind_the_mounts_back_is_seen_when_cached_attributes_expire",
                an_acl_changed_behind_the_mounts_back_is_seen_when_cached_attributes_expire,
            ),
            (
                "a_getxattr_fault_rule_leaves_the_kernels_acl_checks_alone",
                a_getxattr_fault_rule_leaves_the_kernels_acl_checks_alone,
            ),
            (
                "new_files_inherit_a_default_acl_exactly_as_native_creates_do",
                new_files_inherit_a_default_acl_exactly_as_native_creates_do,
            ),
            (
                "without_a_default_acl_new_files_get_the_creators_umask",
                without_a_default_acl_new_files_get_the_creators_umask,
            ),
            (
                "setting_an_acl_clears_set_group_id_as_natively_when_the_owner_is_not_in_the_group",
                setting_an_acl_clears_set_group_id_as_natively_when_the_owner_is_not_in_the_group,
            ),
        ],
        &[],
    )
}

//! Which directories a fault mount may cover. Decided on the directory the volume path resolved
//! to (inside the target's root, symlinks followed), never on the path's text: `ln -s / /data/x`
//! makes the harmless-looking `/data/x` the container's root, and a FUSE mount there takes the
//! whole container with it.
//!
//! Refused: the target's root directory, and kernel pseudo-filesystems (procfs, sysfs, cgroup,
//! devpts, mqueue, debugfs and the like), whose files are not data and whose owners (the kernel,
//! the runtime) do not expect to be covered. Everything else holding files may be faulted,
//! tmpfs and overlay included.

/// A directory: which one, and on which kind of filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirIdentity {
    pub dev: u64,
    pub ino: u64,
    /// `statfs(2)`'s `f_type`.
    pub fs_magic: u64,
}

/// Kernel pseudo-filesystems, by their `statfs` magic (linux/magic.h), with the name we report.
const PSEUDO_FILESYSTEMS: &[(u64, &str)] = &[
    (0x9fa0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x0027_e0eb, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0x1cd1, "devpts"),
    (0x1980_0202, "mqueue"),
    (0x7363_6673, "securityfs"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0xcafe_4a11, "bpf"),
    (0x6265_6570, "configfs"),
    (0x6165_676c, "pstore"),
    (0x6573_5543, "fusectl"),
    (0xf97c_ff8c, "selinuxfs"),
    (0xde5e_81e4, "efivarfs"),
    (0x4249_4e4d, "binfmt_misc"),
    (0x6e73_6673, "nsfs"),
];

/// Why `dir` may not be covered by a fault mount in a target whose root is `root`, if it may not.
pub fn refusal(root: &DirIdentity, dir: &DirIdentity) -> Option<String> {
    if (dir.dev, dir.ino) == (root.dev, root.ino) {
        return Some("it resolves to the container's root directory (a symlink to /?)".to_owned());
    }
    PSEUDO_FILESYSTEMS
        .iter()
        .find(|(magic, _)| *magic == dir.fs_magic)
        .map(|(_, name)| format!("it resolves to a directory of the kernel's {name} filesystem, which holds no data to fault"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXT4: u64 = 0xef53;
    const ROOT: DirIdentity = DirIdentity {
        dev: 2049,
        ino: 2,
        fs_magic: EXT4,
    };

    #[test]
    fn the_root_itself_is_refused_whatever_path_led_there() {
        let same = DirIdentity { ..ROOT };
        assert!(refusal(&ROOT, &same).unwrap().contains("root directory"));
        let data = DirIdentity { ino: 1234, ..ROOT };
        assert_eq!(refusal(&ROOT, &data), None);
    }

    #[test]
    fn pseudo_filesystems_are_refused_by_name() {
        let proc = DirIdentity {
            dev: 5,
            ino: 1,
            fs_magic: 0x9fa0,
        };
        assert!(refusal(&ROOT, &proc).unwrap().contains("proc filesystem"));
        let tmpfs = DirIdentity {
            dev: 40,
            ino: 1,
            fs_magic: 0x0102_1994,
        };
        assert_eq!(refusal(&ROOT, &tmpfs), None);
    }

    #[test]
    fn the_magic_numbers_match_the_kernel() {
        // Read off this machine where it has them: /proc and /sys.
        for (path, name) in [("/proc", "proc"), ("/sys", "sysfs")] {
            let Ok(fs) = nix::sys::statfs::statfs(path) else {
                continue;
            };
            let magic = fs.filesystem_type().0 as u64;
            assert!(
                PSEUDO_FILESYSTEMS.contains(&(magic, name)),
                "{path}: magic {magic:#x} is not listed as {name}"
            );
        }
    }
}

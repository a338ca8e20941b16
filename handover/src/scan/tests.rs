use super::*;
use crate::proc_source::FixtureProc;

const FAULT: FaultMount = FaultMount {
    mount_id: 900,
    dev: Dev {
        major: 0,
        minor: 0x4d,
    },
};

fn scope(direction: Direction) -> Scope {
    Scope {
        volume: PathBuf::from("/data"),
        fault: FAULT,
        direction,
    }
}

fn fdinfo(pos: u64, flags: &str, mnt: u64) -> String {
    format!("pos:\t{pos}\nflags:\t{flags}\nmnt_id:\t{mnt}\nino:\t12\n")
}

/// A process with: fd 0 a pipe, fd 3 /data/f read at offset 8 (original mount 40), fd 4
/// /etc/hosts, fd 5 /database (a sibling, not under /data), fd 6 /data/new already on the
/// fault mount, fd 7 a deleted file under /data, fd 8 /data/locked with a POSIX lock.
fn process() -> FixtureProc {
    FixtureProc::default()
        .link("7/fd/0", "pipe:[123]")
        .file("7/fdinfo/0", &fdinfo(0, "02", 15))
        .link("7/fd/3", "/data/f")
        .file("7/fdinfo/3", &fdinfo(8, "02100002", 40))
        .link("7/fd/4", "/etc/hosts")
        .file("7/fdinfo/4", &fdinfo(0, "0100000", 30))
        .link("7/fd/5", "/database")
        .file("7/fdinfo/5", &fdinfo(0, "0100000", 30))
        .link("7/fd/6", "/data/new")
        .file("7/fdinfo/6", &fdinfo(3, "0100001", 900))
        .link("7/fd/7", "/data/gone (deleted)")
        .file("7/fdinfo/7", &fdinfo(0, "0100000", 40))
        .link("7/fd/8", "/data/locked")
        .file(
            "7/fdinfo/8",
            &(fdinfo(0, "0100002", 40) + "lock:\t1: POSIX  ADVISORY  WRITE 7 00:2d:12 0 EOF\n"),
        )
        .link("7/cwd", "/data/dir")
        .mount_id("7/cwd", 40)
        .file("7/maps", MAPS)
        .file("7/smaps", SMAPS)
}

const MAPS: &str = "\
55d0c0000000-55d0c0001000 r--p 00000000 fd:01 1311 /usr/bin/app
7f0000000000-7f0000002000 rw-s 00001000 00:2d 12 /data/shared
7f0000010000-7f0000011000 r--p 00000000 00:2d 13 /data/clean private
7f0000020000-7f0000021000 rw-p 00000000 00:2d 14 /data/written
7f0000030000-7f0000031000 rw-s 00000000 00:4d 15 /data/on-fault
7f0000040000-7f0000041000 rw-p 00000000 00:00 0 
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]
";

const SMAPS: &str = "\
7f0000010000-7f0000011000 r--p 00000000 00:2d 13 /data/clean private
Size:                  4 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
VmFlags: rd mr mw me
7f0000020000-7f0000021000 rw-p 00000000 00:2d 14 /data/written
Size:                  4 kB
Private_Dirty:         4 kB
Anonymous:             4 kB
VmFlags: rd wr mr mw me
";

#[test]
fn fields_of_fdinfo() {
    let info = fdinfo(8, "02100002", 40);
    assert_eq!(field(&info, "pos"), Some(8));
    assert_eq!(field(&info, "flags"), Some(0o2100002));
    assert_eq!(field(&info, "mnt_id"), Some(40));
    assert_eq!(field(&info, "lock"), None);
}

#[test]
fn onto_the_fault_mount_only_what_lives_under_the_volume_on_the_original() {
    let plan = scan_process(&process(), 7, &scope(Direction::ToFault)).unwrap();
    assert_eq!(
        plan.fds,
        vec![FdMove {
            fd: 3,
            path: PathBuf::from("/data/f"),
            flags: libc::O_RDWR | 0o100000,
            cloexec: true,
            pos: Some(8),
        }]
    );
    assert_eq!(
        plan.cwd,
        Some(CwdMove {
            path: PathBuf::from("/data/dir")
        })
    );
    let maps: Vec<(u64, bool, i32, u64, &str)> = plan
        .maps
        .iter()
        .map(|m| {
            (
                m.start,
                m.shared,
                m.prot,
                m.offset,
                m.path.to_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        maps,
        vec![
            (
                0x7f00_0000_0000,
                true,
                libc::PROT_READ | libc::PROT_WRITE,
                0x1000,
                "/data/shared"
            ),
            (
                0x7f00_0001_0000,
                false,
                libc::PROT_READ,
                0,
                "/data/clean private"
            ),
        ]
    );
    let skipped: Vec<(&str, &str)> = plan
        .skipped
        .iter()
        .map(|s| (s.what.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    assert!(skipped[0].0 == "fd 7 /data/gone" && skipped[0].1.contains("deleted"));
    assert!(skipped[1].0 == "fd 8 /data/locked" && skipped[1].1.contains("lock"));
    assert!(
        skipped[2]
            .0
            .starts_with("mapping 7f0000020000-7f0000021000")
            && skipped[2].1.contains("4 kB written")
    );
    assert!(!plan.is_empty());
}

#[test]
fn back_to_the_original_what_lives_on_the_detached_fault_mount() {
    // After the lazy detach, paths on the fault mount read relative to its root.
    let src = FixtureProc::default()
        .link("9/fd/3", "/f")
        .file("9/fdinfo/3", &fdinfo(4, "0100000", 900))
        .link("9/fd/4", "/data/f") // the original again: stays
        .file("9/fdinfo/4", &fdinfo(0, "0100000", 40))
        .link("9/fd/5", "/")
        .file("9/fdinfo/5", &fdinfo(0, "0300000", 900))
        .link("9/cwd", "/sub")
        .mount_id("9/cwd", 900)
        .file(
            "9/maps",
            "7f0000030000-7f0000031000 rw-s 00000000 00:4d 15 /m\n",
        );
    let plan = scan_process(&src, 9, &scope(Direction::ToOriginal)).unwrap();
    assert!(plan.skipped.is_empty());
    let fds: Vec<(i32, &str, Option<u64>)> = plan
        .fds
        .iter()
        .map(|f| (f.fd, f.path.to_str().unwrap(), f.pos))
        .collect();
    assert_eq!(fds, vec![(3, "/data/f", Some(4)), (5, "/data", Some(0))]);
    assert_eq!(plan.cwd.unwrap().path, PathBuf::from("/data/sub"));
    assert_eq!(plan.maps.len(), 1);
    assert_eq!(plan.maps[0].path, PathBuf::from("/data/m"));
    assert!(plan.skipped.is_empty());
}

#[test]
fn a_process_holding_nothing_there_has_an_empty_plan() {
    let src = FixtureProc::default()
        .link("5/fd/0", "/dev/null")
        .file("5/fdinfo/0", &fdinfo(0, "02", 20))
        .link("5/cwd", "/")
        .mount_id("5/cwd", 20)
        .file("5/maps", MAPS.lines().next().unwrap());
    let plan = scan_process(&src, 5, &scope(Direction::ToFault)).unwrap();
    assert!(plan.is_empty() && plan.skipped.is_empty(), "{plan:?}");
}

#[test]
fn a_vanished_process_is_reported_as_gone() {
    let err = scan_process(&FixtureProc::default(), 11, &scope(Direction::ToFault)).unwrap_err();
    assert!(matches!(err, ScanError::Gone { pid: 11 }), "{err}");
}

#[test]
fn a_directory_being_read_is_not_moved() {
    let src = FixtureProc::default()
        .link("5/fd/3", "/data/dir")
        .file(
            "5/fdinfo/3",
            &fdinfo(77, &format!("{:o}", Native::O_DIRECTORY), 40),
        )
        .link("5/cwd", "/")
        .file("5/maps", "");
    let plan = scan_process(&src, 5, &scope(Direction::ToFault)).unwrap();
    assert!(plan.fds.is_empty());
    assert!(plan.skipped[0].reason.contains("directory being read"));
}

#[test]
fn map_lines_parse_with_spaces_in_names() {
    let line =
        parse_map_line("7f0000010000-7f0000011000 r--p 00000000 00:2d 13 /data/clean private")
            .unwrap();
    assert_eq!(line.path, "/data/clean private");
    assert_eq!(
        line.dev,
        Dev {
            major: 0,
            minor: 0x2d
        }
    );
    assert_eq!(line.offset, 0);
    let anon = parse_map_line("7f0000040000-7f0000041000 rw-p 00000000 00:00 0 ").unwrap();
    assert_eq!(anon.inode, 0);
    assert!(parse_map_line("garbage").is_none());
}

#[test]
fn the_topmost_fault_mount_over_the_volume() {
    let table = "\
22 1 253:1 / / rw - ext4 /dev/vda1 rw
40 22 253:1 /srv/vol /data rw - ext4 /dev/vda1 rw
900 40 0:77 / /data rw,nosuid - fuse.faultline faultline rw
901 900 0:78 / /data rw,nosuid - fuse.faultline faultline rw
902 22 0:79 / /data\\040x rw - fuse.faultline faultline rw
";
    let src = FixtureProc::default().file("3/mountinfo", table);
    assert_eq!(
        find_fault_mount(&src, 3, Path::new("/data"), "fuse.faultline").unwrap(),
        Some(FaultMount {
            mount_id: 901,
            dev: Dev {
                major: 0,
                minor: 78
            }
        })
    );
    assert_eq!(
        find_fault_mount(&src, 3, Path::new("/data x"), "fuse.faultline")
            .unwrap()
            .map(|m| m.mount_id),
        Some(902)
    );
    assert_eq!(
        find_fault_mount(&src, 3, Path::new("/srv"), "fuse.faultline").unwrap(),
        None
    );
}

#[test]
fn processes_are_selected_by_mount_namespace() {
    let src = FixtureProc::default()
        .link("1/ns/mnt", "mnt:[4026531841]")
        .link("100/ns/mnt", "mnt:[4026532000]")
        .link("101/ns/mnt", "mnt:[4026532000]")
        .link("102/ns/mnt", "mnt:[4026531841]")
        .file("self/status", "");
    assert_eq!(processes_sharing_mounts(&src, 101).unwrap(), vec![100, 101]);
}

#[test]
fn a_name_fuse_shows_as_deleted_moves_back_if_the_same_file_is_still_there() {
    // The injector invalidated the cached entries of /f and /g: both read "(deleted)". /f is
    // still in the original directory (same inode); /g was replaced by another file.
    let src = FixtureProc::default()
        .link("9/fd/3", "/f (deleted)")
        .file(
            "9/fdinfo/3",
            "pos:\t8\nflags:\t0100000\nmnt_id:\t900\nino:\t12\n",
        )
        .link("9/fd/4", "/g (deleted)")
        .file(
            "9/fdinfo/4",
            "pos:\t0\nflags:\t0100000\nmnt_id:\t900\nino:\t13\n",
        )
        .inode(9, "/data/f", 12)
        .inode(9, "/data/g", 99)
        .link("9/cwd", "/")
        .mount_id("9/cwd", 20)
        .file("9/maps", "");
    let plan = scan_process(&src, 9, &scope(Direction::ToOriginal)).unwrap();
    assert_eq!(plan.fds.len(), 1);
    assert_eq!(plan.fds[0].path, PathBuf::from("/data/f"));
    assert_eq!(plan.fds[0].pos, Some(8));
    assert_eq!(plan.skipped.len(), 1);
    assert!(plan.skipped[0].what.starts_with("fd 4") && plan.skipped[0].reason.contains("deleted"));
    // Onto the fault mount, "(deleted)" on the original filesystem is believed.
    let src = FixtureProc::default()
        .link("9/fd/3", "/data/f (deleted)")
        .file(
            "9/fdinfo/3",
            "pos:\t8\nflags:\t0100000\nmnt_id:\t40\nino:\t12\n",
        )
        .inode(9, "/data/f", 12)
        .link("9/cwd", "/")
        .file("9/maps", "");
    let plan = scan_process(&src, 9, &scope(Direction::ToFault)).unwrap();
    assert!(plan.fds.is_empty() && plan.skipped.len() == 1);
}

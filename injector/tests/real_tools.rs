//! Real programs through the mount must find nothing wrong: fio's checksummed verify, tar
//! extraction compared byte for byte with a native extraction, SQLite's integrity check
//! (WAL mode: shared mmap of the -shm file), git's object store through commit, gc and fsck.
//! A missing tool skips its test with a message. Each tool runs three ways: kernel
//! passthrough (no rules), every request through the daemon (a rule that matches everything
//! and injects nothing: `FOPEN_DIRECT_IO`, mmap through the daemon), and through the daemon
//! with the page cache (passthrough off); and once more through the daemon with requests
//! read from `/dev/fuse` only (where the kernel offers FUSE over io_uring, the other modes
//! use it).

mod common;

use std::path::Path;
use std::process::Command;

use common::Fixture;
use injector::fs::{FileIo, FsOptions};
use injector::serve::ServeOptions;

#[derive(Debug, Clone, Copy)]
enum Mode {
    Passthrough,
    ThroughTheDaemon,
    PageCache,
    /// Through the daemon, requests from `/dev/fuse` only (no io_uring queues).
    DevFuseOnly,
}

const MODES: [Mode; 4] = [
    Mode::Passthrough,
    Mode::ThroughTheDaemon,
    Mode::PageCache,
    Mode::DevFuseOnly,
];

fn mount(mode: Mode) -> Fixture {
    let opts = ServeOptions {
        io_uring: !matches!(mode, Mode::DevFuseOnly),
        fs: FsOptions {
            file_io: match mode {
                Mode::Passthrough => FileIo::Passthrough,
                Mode::PageCache => FileIo::Cached,
                Mode::ThroughTheDaemon | Mode::DevFuseOnly => FileIo::Reachable,
            },
            ..FsOptions::default()
        },
        ..ServeOptions::default()
    };
    let fx = Fixture::mount_opts(|_| {}, opts);
    if let Mode::ThroughTheDaemon | Mode::DevFuseOnly = mode {
        fx.update(serde_json::json!([{
            "type": "latency", "path": format!("{}/**", fx.path.display()), "latency": "0ms"
        }]));
    }
    fx
}

fn require(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is not installed: scripts/setup.sh installs it"
    );
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn fio_verify_crc32c() {
    require("fio");
    for mode in MODES {
        fio_verify(mode);
    }
}

fn fio_verify(mode: Mode) {
    let fx = mount(mode);
    for (rw, bs) in [("randwrite", "4k"), ("write", "1M")] {
        let out = run(Command::new("fio")
            .arg(format!("--name=verify-{rw}"))
            .arg(format!(
                "--filename={}",
                fx.at(&format!("{rw}.dat")).display()
            ))
            .args([
                "--size=64M",
                "--ioengine=psync",
                "--verify=crc32c",
                "--do_verify=1",
                // fio would save its verify state into the working directory (the crate's).
                "--verify_state_save=0",
            ])
            .arg(format!("--rw={rw}"))
            .arg(format!("--bs={bs}")));
        assert!(
            !out.contains("verify:") || out.contains("err= 0"),
            "{mode:?}: {out}"
        );
    }
}

fn tar_extract_matches_a_native_extraction() {
    require("tar");
    require("diff");
    let source = ["/usr/include", "/usr/share/doc"]
        .into_iter()
        .find(|p| Path::new(p).is_dir());
    let source = source.expect("a source tree to archive (/usr/share/doc is on every Debian)");
    let scratch = tempfile::tempdir().expect("tempdir");
    let tarball = scratch.path().join("tree.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tarball)
        .arg("-C")
        .arg(Path::new(source).parent().expect("parent"))
        .arg(Path::new(source).file_name().expect("name")));
    let native = scratch.path().join("native");
    std::fs::create_dir(&native).expect("mkdir");
    run(Command::new("tar")
        .arg("-xpf")
        .arg(&tarball)
        .arg("-C")
        .arg(&native));
    for mode in MODES {
        tar_extract(mode, &tarball, &native);
    }
}

fn tar_extract(mode: Mode, tarball: &Path, native: &Path) {
    let fx = mount(mode);
    run(Command::new("tar")
        .arg("-xpf")
        .arg(tarball)
        .arg("-C")
        .arg(&fx.path));
    run(Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(native)
        .arg(&fx.path));
    // And what landed in the original is the same too.
    run(Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(native)
        .arg(fx.orig("")));
}

fn sqlite_integrity_check_after_a_workload() {
    require("sqlite3");
    for mode in MODES {
        sqlite_workload(mode);
    }
}

fn sqlite_workload(mode: Mode) {
    let fx = mount(mode);
    let db = fx.at("test.db");
    let script = "\
        PRAGMA journal_mode=WAL;\n\
        CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, n REAL);\n\
        CREATE INDEX t_v ON t(v);\n\
        WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 20000)\n\
          INSERT INTO t(v, n) SELECT hex(randomblob(16)), random() FROM c;\n\
        UPDATE t SET v = lower(v) WHERE id % 3 = 0;\n\
        DELETE FROM t WHERE id % 7 = 0;\n\
        PRAGMA wal_checkpoint(TRUNCATE);\n\
        VACUUM;\n\
        PRAGMA integrity_check;\n\
        SELECT count(*) FROM t;";
    let out = run(Command::new("sqlite3").arg(&db).arg(script));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"ok"), "{mode:?}: {out}");
    assert!(lines.contains(&"17143"), "{mode:?}: {out}");
    // The original database (copied out from under the mount) is sound on its own.
    let scratch = tempfile::tempdir().expect("tempdir");
    let copy = scratch.path().join("copy.db");
    std::fs::copy(fx.orig("test.db"), &copy).expect("copy");
    let out = run(Command::new("sqlite3")
        .arg(&copy)
        .arg("PRAGMA integrity_check;"));
    assert_eq!(out.trim(), "ok", "{mode:?}");
}

fn git_commit_gc_fsck() {
    require("git");
    for mode in MODES {
        git_workload(mode);
    }
}

fn git_workload(mode: Mode) {
    let fx = mount(mode);
    let git = |args: &[&str]| {
        run(Command::new("git")
            .args([
                "-c",
                "user.name=faultline",
                "-c",
                "user.email=f@example.invalid",
            ])
            .args(["-c", "init.defaultBranch=main", "-c", "gc.auto=0"])
            .args(args)
            .current_dir(&fx.path))
    };
    git(&["init", "-q"]);
    for round in 0..5 {
        for i in 0..50 {
            std::fs::write(
                fx.at(&format!("file-{i}.txt")),
                format!("round {round} file {i}\n").repeat(100),
            )
            .expect("write");
        }
        git(&["add", "-A"]);
        git(&["commit", "-q", "-m", &format!("round {round}")]);
    }
    git(&["gc", "-q", "--aggressive", "--prune=now"]);
    git(&["fsck", "--full", "--strict"]);
    assert_eq!(
        git(&["rev-list", "--count", "HEAD"]).trim(),
        "5",
        "{mode:?}"
    );
}

fn main() -> std::process::ExitCode {
    common::run_tests(
        &[
            ("fio_verify_crc32c", fio_verify_crc32c),
            (
                "tar_extract_matches_a_native_extraction",
                tar_extract_matches_a_native_extraction,
            ),
            (
                "sqlite_integrity_check_after_a_workload",
                sqlite_integrity_check_after_a_workload,
            ),
            ("git_commit_gc_fsck", git_commit_gc_fsck),
        ],
        &[],
    )
}

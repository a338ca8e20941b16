//! init.sh and wait-fuse.sh (injector/scripts/, shipped in the image under /scripts) under
//! every POSIX shell found here: busybox's (what the sidecar's containers run) and dash.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// The shells to run the scripts with: `[program, args before the script]`.
fn shells() -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for shell in [vec!["busybox", "sh"], vec!["dash"], vec!["sh"]] {
        let works = Command::new(shell[0])
            .args(&shell[1..])
            .args(["-c", "true"])
            .output()
            .is_ok_and(|o| o.status.success());
        if works {
            found.push(shell.iter().map(|s| s.to_string()).collect());
        }
    }
    assert!(!found.is_empty(), "no POSIX shell to run the scripts with");
    found
}

fn run(shell: &[String], name: &str, args: &[&str]) -> Output {
    Command::new(&shell[0])
        .args(&shell[1..])
        .arg(script(name))
        .args(args)
        .output()
        .expect("run the script")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn init_moves_the_data_once_copies_the_scripts_and_never_overwrites() {
    for shell in shells() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("vol/data");
        let fuse = dir.path().join("vol/fuse-data");
        let scripts = dir.path().join("scripts");
        std::fs::create_dir_all(data.join("sub")).expect("mkdir");
        std::fs::write(data.join("f"), "f").expect("f");
        std::fs::write(data.join(".hidden"), "h").expect("hidden");
        let args = [
            "-d",
            data.to_str().expect("utf-8"),
            "-f",
            fuse.to_str().expect("utf-8"),
            "-s",
            scripts.to_str().expect("utf-8"),
        ];
        let out = run(&shell, "init.sh", &args);
        assert!(out.status.success(), "{shell:?}: {}", stderr(&out));
        assert_eq!(names(&fuse), [".hidden", "f", "sub"], "{shell:?}");
        assert!(names(&data).is_empty(), "{shell:?}");
        assert_eq!(names(&scripts), ["init.sh", "wait-fuse.sh"], "{shell:?}");
        let copied = std::fs::read(scripts.join("wait-fuse.sh")).expect("copied");
        assert_eq!(
            copied,
            std::fs::read(script("wait-fuse.sh")).expect("source")
        );

        // Again (a pod restart): nothing to move, nothing lost.
        let out = run(&shell, "init.sh", &args);
        assert!(out.status.success(), "{shell:?}: {}", stderr(&out));
        assert_eq!(names(&fuse), [".hidden", "f", "sub"], "{shell:?}");

        // A name in both: the script stops before moving anything.
        std::fs::write(data.join("f"), "new").expect("f again");
        std::fs::write(data.join("g"), "g").expect("g");
        let out = run(&shell, "init.sh", &args);
        assert_eq!(out.status.code(), Some(1), "{shell:?}");
        assert!(stderr(&out).contains("exists already"), "{}", stderr(&out));
        assert_eq!(names(&data), ["f", "g"], "{shell:?}");
        assert_eq!(std::fs::read_to_string(fuse.join("f")).expect("kept"), "f");
    }
}

#[test]
fn init_refuses_bad_arguments_naming_them() {
    for shell in shells() {
        for (args, code, says) in [
            (vec!["-f", "/x"], 2, "-d <data directory> is required"),
            (vec!["-d", "/x"], 2, "-f <fuse directory> is required"),
            (vec!["-d", "rel", "-f", "/x"], 1, "must be an absolute path"),
            (vec!["-d", "/a", "-f", "/a/b"], 1, "inside it"),
            (
                vec!["-d", "/a/b", "-f", "/a"],
                1,
                "inside the fuse directory",
            ),
            (vec!["-d", "/", "-f", "/x"], 1, "root directory"),
            (vec!["-x"], 2, "unknown option -x"),
            (vec!["-d"], 2, "needs an argument"),
        ] {
            let out = run(&shell, "init.sh", &args);
            assert_eq!(out.status.code(), Some(code), "{shell:?} {args:?}");
            assert!(
                stderr(&out).contains(says),
                "{shell:?} {args:?}: {}",
                stderr(&out)
            );
        }
        let out = run(&shell, "init.sh", &["-h"]);
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("-s <scripts directory>"));
    }
}

#[test]
fn wait_fuse_waits_for_a_pid_and_gives_up_after_the_retries() {
    for shell in shells() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("pid");
        let file = pidfile.to_str().expect("utf-8");

        let start = Instant::now();
        let out = run(
            &shell,
            "wait-fuse.sh",
            &["-f", file, "-d", "0.1", "-r", "3"],
        );
        assert_eq!(out.status.code(), Some(1), "{shell:?}");
        assert!(stderr(&out).contains("after 3 retries"), "{}", stderr(&out));
        assert!(start.elapsed() >= Duration::from_millis(300), "{shell:?}");

        // An empty or partial file is not a PID yet.
        std::fs::write(&pidfile, "").expect("empty");
        let out = run(
            &shell,
            "wait-fuse.sh",
            &["-f", file, "-d", "0.05", "-r", "1"],
        );
        assert_eq!(out.status.code(), Some(1), "{shell:?}");

        std::fs::remove_file(&pidfile).expect("rm");
        let writer = {
            let pidfile = pidfile.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                std::fs::write(&pidfile, "4242\n").expect("pidfile");
            })
        };
        let out = run(
            &shell,
            "wait-fuse.sh",
            &["-f", file, "-d", "0.05", "-r", "200"],
        );
        writer.join().expect("writer");
        assert!(out.status.success(), "{shell:?}: {}", stderr(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("pid 4242"));

        for (args, says) in [
            (vec!["-r", "many"], "-r many"),
            (vec!["-d", "1.2.3"], "-d 1.2.3"),
            (vec!["-q"], "unknown option -q"),
        ] {
            let out = run(&shell, "wait-fuse.sh", &args);
            assert_eq!(out.status.code(), Some(2), "{shell:?} {args:?}");
            assert!(stderr(&out).contains(says), "{}", stderr(&out));
        }
    }
}

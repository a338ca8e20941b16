//! The contract of `update`: once it returns, every operation the rules match is faulted, on
//! every file, whenever it was opened. A separate process opens a file through the mount
//! before any rule could match it and keeps it open; rules put in force later must reach its
//! next read, write and fsync, and after the rules are cleared its IO is normal again.
//! Through the `faultline-injector` binary as it is used: the chaosfs sidecar (rules over
//! HTTP, none at start) and agent mode (`mount --pid`, rules on an inherited socket, an
//! experiment whose rules are updated to cover the file). With `--file-io passthrough` the
//! same steps show what the contract rules out (reads and writes not faulted) and that it is
//! said loudly.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use common::PYTHON;
use common::injector_bin::{AgentInjector, Sidecar};
use serde_json::{Value, json};

/// Opens its file once (read-write) and then, per line on stdin, does one operation on that
/// descriptor and answers `ok` or `errno N`.
const HOLDER: &str = r#"
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
print("open", flush=True)
for line in sys.stdin:
    op = line.strip()
    try:
        if op == "read":
            data = os.pread(fd, 4096, 0)
            assert len(data) == 4096, len(data)
        elif op == "write":
            os.pwrite(fd, b"w" * 4096, 4096)
        elif op == "fsync":
            os.fsync(fd)
        print("ok", flush=True)
    except OSError as e:
        print("errno %d" % e.errno, flush=True)
"#;

/// The application process holding a file open.
struct Holder {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Holder {
    fn open(file: &Path) -> Holder {
        let mut child = Command::new(PYTHON)
            .args(["-c", HOLDER])
            .arg(file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn holder");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("holder");
        assert_eq!(line.trim(), "open", "the holder could not open {file:?}");
        Holder {
            child,
            stdin,
            stdout,
        }
    }

    /// `ok`, or `errno N`.
    fn op(&mut self, op: &str) -> String {
        writeln!(self.stdin, "{op}").expect("to holder");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("from holder");
        line.trim().to_owned()
    }

    fn all(&mut self) -> [String; 3] {
        ["read", "write", "fsync"].map(|op| self.op(op))
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const OK: [&str; 3] = ["ok", "ok", "ok"];
const EIO: [&str; 3] = ["errno 5", "errno 5", "errno 5"];

/// EIO on every read, write and fsync under `dir`.
fn eio_rule(dir: &Path) -> Value {
    json!([{"type": "fault", "path": format!("{}/**", dir.display()),
            "methods": ["read", "write", "fsync"], "percent": 100,
            "faults": [{"errno": 5, "weight": 1}]}])
}

// ---- sidecar mode -------------------------------------------------------------------------

fn sidecar_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("faultline-late-")
        .tempdir()
        .expect("tempdir");
    fs::create_dir(dir.path().join("data")).expect("data");
    fs::create_dir(dir.path().join("fuse-data")).expect("fuse-data");
    fs::write(dir.path().join("fuse-data/db"), vec![b'a'; 8192]).expect("db");
    dir
}

fn sidecar_a_file_opened_before_any_rule_is_faulted_once_update_returns() {
    let dir = sidecar_dir();
    let sidecar = Sidecar::start(dir.path(), &[]);
    let status = sidecar.call("get_status", json!([]));
    assert_eq!(status["fileIo"], "reachable", "{status}");

    let mut app = Holder::open(&sidecar.mountpoint.join("db"));
    assert_eq!(app.all(), OK, "no rule yet");

    let updated = sidecar.call("update", json!([eio_rule(&sidecar.mountpoint)]));
    assert_eq!(updated["warnings"], json!([]), "{updated}");
    assert_eq!(
        app.all(),
        EIO,
        "the next read, write and fsync after update"
    );
    let status = sidecar.call("get_status", json!([]));
    assert_eq!(status["unreachableOpenFiles"], json!([]), "{status}");
    assert_eq!(status["warnings"], json!([]), "{status}");

    sidecar.call("update", json!([[]]));
    assert_eq!(app.all(), OK, "rules cleared");
    drop(app);
    let data = fs::read(dir.path().join("fuse-data/db")).expect("original");
    assert_eq!(&data[..4096], &[b'a'; 4096][..]);
    assert_eq!(
        &data[4096..],
        &[b'w'; 4096][..],
        "the write after recovery landed"
    );
    sidecar.stop();
}

/// What the contract rules out, and that it is never silent: with `--file-io passthrough`
/// the kernel serves the open file's reads and writes itself, so they escape the rule (its
/// fsync still comes to the injector), and both `update` and `get_status` say so.
fn sidecar_with_passthrough_open_files_escape_and_it_is_said_loudly() {
    let dir = sidecar_dir();
    let sidecar = Sidecar::start(dir.path(), &["-file-io=passthrough"]);
    assert!(
        sidecar.passthrough,
        "the kernel is 6.9+ but the sidecar reports no FUSE passthrough"
    );
    let mut app = Holder::open(&sidecar.mountpoint.join("db"));
    let updated = sidecar.call("update", json!([eio_rule(&sidecar.mountpoint)]));
    let db = sidecar.mountpoint.join("db");
    assert_eq!(updated["unreachableOpenFiles"], json!([db]), "{updated}");
    let warning = updated["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.starts_with("NOT FAULTED: 1 open file(s)"),
        "{updated}"
    );
    assert!(warning.contains(db.to_str().expect("utf-8")), "{warning}");
    assert_eq!(
        sidecar.call("get_status", json!([]))["warnings"],
        updated["warnings"]
    );
    assert_eq!(app.all(), ["ok", "ok", "errno 5"], "read and write escape");
    sidecar.call("update", json!([[]]));
    assert_eq!(sidecar.call("get_status", json!([]))["warnings"], json!([]));
    drop(app);
    sidecar.stop();
}

// ---- agent mode ---------------------------------------------------------------------------

fn agent_a_file_opened_under_one_rule_set_is_faulted_after_the_update() {
    let dir = tempfile::Builder::new()
        .prefix("faultline-late-")
        .tempdir()
        .expect("tempdir");
    let volume = dir.path().join("vol");
    fs::create_dir_all(volume.join("logs")).expect("logs");
    fs::write(volume.join("db"), vec![b'a'; 8192]).expect("db");
    // The experiment starts with a rule elsewhere in the volume (what Chaos Mesh's controller
    // sends for a first IOChaos on it); the application opens its file during it.
    let mut injector = AgentInjector::start(&volume, &eio_rule(&volume.join("logs")));
    let mut app = Holder::open(&volume.join("db"));
    assert_eq!(app.all(), OK, "the first rule set does not match the file");

    // A second IOChaos on the volume: the controller sends the whole new set.
    let mut both = eio_rule(&volume.join("logs"));
    both.as_array_mut()
        .expect("array")
        .extend(eio_rule(&volume).as_array().expect("array").clone());
    let updated = injector.call("update", json!({"actions": both}));
    assert_eq!(updated["warnings"], json!([]), "{updated}");
    assert_eq!(
        app.all(),
        EIO,
        "the next read, write and fsync after update"
    );

    injector.call("update", json!({"actions": eio_rule(&volume.join("logs"))}));
    assert_eq!(app.all(), OK, "the rule on the file removed");
    injector.call("update", json!({"actions": []}));
    assert_eq!(app.all(), OK, "rules cleared");
}

fn main() -> std::process::ExitCode {
    common::run_tests_when(
        &[
            (
                "sidecar_a_file_opened_before_any_rule_is_faulted_once_update_returns",
                sidecar_a_file_opened_before_any_rule_is_faulted_once_update_returns,
            ),
            (
                "agent_a_file_opened_under_one_rule_set_is_faulted_after_the_update",
                agent_a_file_opened_under_one_rule_set_is_faulted_after_the_update,
            ),
        ],
        &[],
        &[(
            "sidecar_with_passthrough_open_files_escape_and_it_is_said_loudly",
            sidecar_with_passthrough_open_files_escape_and_it_is_said_loudly,
            common::needs_fuse_passthrough,
        )],
    )
}

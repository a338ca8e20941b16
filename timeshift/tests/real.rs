//! Timeshift for real. As root: a test program (programs/clock_reader.c, built dynamic and
//! static) reads the clocks through the vDSO and through the system call, and the test shifts
//! it, updates the offset, puts it back. Without root: the replacement code runs directly
//! (programs/stub_harness.c), natively and, for aarch64, under qemu-user.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;

use timeshift::arch::aarch64::Aarch64;
use timeshift::arch::x86_64::X86_64;
use timeshift::arch::{Function, ShiftArch, page_image};
use timeshift::{ClockMask, Offset, Options, Outcome, Shift, Skip, shift, unshift};

const DAY_NS: i128 = 86_400_000_000_000;
const SECOND_NS: i128 = 1_000_000_000;

fn scratch() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("timeshift");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn program(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/programs")
        .join(name)
}

fn build(cc: &str, args: &[&str], out: &Path, src: &Path) {
    let result = Command::new(cc)
        .args(args)
        .arg("-o")
        .arg(out)
        .arg(src)
        .output()
        .unwrap_or_else(|e| panic!("{cc}: {e}"));
    assert!(
        result.status.success(),
        "building {}: {}",
        src.display(),
        String::from_utf8_lossy(&result.stderr)
    );
}

fn reader(linking: &'static str) -> &'static Path {
    static DYNAMIC: OnceLock<PathBuf> = OnceLock::new();
    static STATIC: OnceLock<PathBuf> = OnceLock::new();
    let cell = if linking == "static" {
        &STATIC
    } else {
        &DYNAMIC
    };
    cell.get_or_init(|| {
        let bin = scratch().join(format!("clock_reader_{linking}"));
        let mut args = vec!["-O2", "-pthread"];
        if linking == "static" {
            args.push("-static");
        }
        build("cc", &args, &bin, &program("clock_reader.c"));
        bin
    })
}

struct Reader {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

#[derive(Debug)]
struct Reading(BTreeMap<String, i128>);

impl Reading {
    fn get(&self, key: &str) -> i128 {
        self.0[key]
    }
    /// vDSO realtime minus the system call's, in ns.
    fn rt_shift(&self) -> i128 {
        self.get("rt") - self.get("rt_sys")
    }
    fn mono_shift(&self) -> i128 {
        self.get("mono") - self.get("mono_sys")
    }
}

impl Reader {
    fn start(linking: &'static str, args: &[&str]) -> Reader {
        let mut child = Command::new(reader(linking))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        Reader {
            child,
            stdin,
            stdout,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn read(&mut self) -> Reading {
        self.stdin.write_all(b"q").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        Reading(
            line.split_whitespace()
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_owned(), v.parse().ok()?))
                })
                .collect(),
        )
    }

    fn vdso_bytes(&self) -> Vec<u8> {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid())).unwrap();
        let line = maps.lines().find(|l| l.ends_with("[vdso]")).unwrap();
        let (a, b) = line
            .split_whitespace()
            .next()
            .unwrap()
            .split_once('-')
            .unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        let mut buf = vec![0; (b - a) as usize];
        std::fs::File::open(format!("/proc/{}/mem", self.pid()))
            .unwrap()
            .read_exact_at(&mut buf, a)
            .unwrap();
        buf
    }

    fn maps(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/maps", self.pid())).unwrap()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn near(actual: i128, expected: i128) -> bool {
    (actual - expected).abs() < SECOND_NS
}

fn shifted_then_updated_then_restored(linking: &'static str) {
    let mut r = Reader::start(linking, &[]);
    let before = r.read();
    assert!(near(before.rt_shift(), 0), "{before:?}");
    let vdso_before = r.vdso_bytes();
    let maps_before = r.maps();
    let base = timeshift::vdso_base(r.pid()).unwrap();
    assert!(maps_before.contains(&format!("{base:x}-")), "{maps_before}");

    let day = Shift {
        offset: Offset::parse_go("24h").unwrap(),
        mask: ClockMask::REALTIME,
    };
    let report = shift(r.pid(), day, &Options::default());
    let Outcome::Shifted(patched) = &report.outcome else {
        panic!("{report:?}");
    };
    // The originals are this kernel's, as the tracer's own vDSO has them.
    assert_eq!(patched.sites, timeshift::this_kernels_originals().unwrap());
    let functions: Vec<Function> = patched.sites.iter().map(|s| s.function).collect();
    assert!(functions.contains(&Function::ClockGettime), "{functions:?}");
    assert!(functions.contains(&Function::Gettimeofday), "{functions:?}");
    let shifted = r.read();
    assert!(near(shifted.rt_shift(), DAY_NS), "{shifted:?}");
    // CLOCK_MONOTONIC is not in the mask.
    assert!(near(shifted.mono_shift(), 0), "{shifted:?}");
    assert!(
        near(shifted.get("tod") * 1000 - shifted.get("rt_sys"), DAY_NS),
        "{shifted:?}"
    );
    assert!(
        near(
            shifted.get("time") * SECOND_NS - shifted.get("rt_sys"),
            DAY_NS
        ),
        "{shifted:?}"
    );
    // The other thread sees it too, once it has sampled again since the shift: it samples
    // every millisecond, but a loaded machine may not run it for a while (CI once read a
    // sample from before the shift, and once none at all). Never shifted: fails after 5 s.
    let thread_sees_it = |r: &Reading| near(r.get("thread_rt") - r.get("rt_sys"), DAY_NS);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut latest = r.read();
    while !thread_sees_it(&latest) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
        latest = r.read();
    }
    assert!(thread_sees_it(&latest), "{latest:?}");
    // Callee-saved registers across the blocking read the process was stopped in.
    assert_eq!(shifted.get("regs"), 0, "{shifted:?}");

    // A second shift updates the offset in place, also the mask.
    let minus = Shift {
        offset: Offset::parse_go("-5m").unwrap(),
        mask: ClockMask::from_names(&["CLOCK_REALTIME", "CLOCK_MONOTONIC"]).unwrap(),
    };
    let report = shift(r.pid(), minus, &Options::default());
    assert_eq!(report.outcome, Outcome::Updated { page: patched.page });
    let updated = r.read();
    assert!(near(updated.rt_shift(), -300 * SECOND_NS), "{updated:?}");
    assert!(near(updated.mono_shift(), -300 * SECOND_NS), "{updated:?}");
    assert_eq!(updated.get("regs"), 0);

    let report = unshift(r.pid(), &patched.sites, &Options::default());
    assert_eq!(
        report.outcome,
        Outcome::Restored {
            page_unmapped: true
        }
    );
    let after = r.read();
    assert!(near(after.rt_shift(), 0), "{after:?}");
    assert!(near(after.mono_shift(), 0), "{after:?}");
    assert_eq!(after.get("regs"), 0);
    // Byte for byte, and no page left behind.
    assert!(
        r.vdso_bytes() == vdso_before,
        "the vDSO differs after recovery"
    );
    assert_eq!(r.maps(), maps_before);
    // Nothing of ours left: a second recovery finds nothing.
    let again = unshift(r.pid(), &patched.sites, &Options::default());
    assert_eq!(again.outcome, Outcome::NotShifted);
}

fn dynamic_reader_is_shifted_updated_and_restored() {
    shifted_then_updated_then_restored("dynamic");
}

fn static_reader_is_shifted_updated_and_restored() {
    shifted_then_updated_then_restored("static");
}

fn seccomp_refusing_the_call_is_reported_and_nothing_changes() {
    let mut r = Reader::start("dynamic", &["seccomp"]);
    let vdso_before = r.vdso_bytes();
    let maps_before = r.maps();
    let report = shift(
        r.pid(),
        Shift {
            offset: Offset::parse_go("1h").unwrap(),
            mask: ClockMask::REALTIME,
        },
        &Options::default(),
    );
    assert_eq!(
        report.outcome,
        Outcome::Skipped(Skip::Refused {
            call: "clock_gettime".into(),
            errno: "EPERM: Operation not permitted".into()
        }),
    );
    assert!(r.vdso_bytes() == vdso_before);
    assert_eq!(r.maps(), maps_before);
    let reading = r.read();
    assert!(
        near(reading.rt_shift(), 0) || reading.get("rt_sys") == 0,
        "{reading:?}"
    );
    assert_eq!(reading.get("regs"), 0);
}

fn a_process_exiting_mid_patch_is_reported_and_harms_nothing() {
    // Gone before we start.
    let report = shift(
        u32::MAX / 2,
        Shift {
            offset: Offset::parse_go("1s").unwrap(),
            mask: ClockMask::REALTIME,
        },
        &Options::default(),
    );
    assert_eq!(report.outcome, Outcome::Skipped(Skip::Exited));
    // Killed at some point while being shifted: either shifted before it died or reported.
    let what = Shift {
        offset: Offset::parse_go("1h").unwrap(),
        mask: ClockMask::REALTIME,
    };
    let mut outcomes = BTreeMap::new();
    for i in 0..40u64 {
        let mut r = Reader::start("dynamic", &[]);
        let pid = r.pid();
        let killer = std::thread::spawn(move || {
            // Spread the kill over the patching (a few hundred microseconds).
            std::thread::sleep(std::time::Duration::from_micros(i * 25));
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        });
        let report = shift(pid, what, &Options::default());
        killer.join().unwrap();
        let _ = r.child.wait();
        let key = match report.outcome {
            Outcome::Shifted(_) => "shifted".to_owned(),
            Outcome::Skipped(Skip::Exited) => "exited".to_owned(),
            other => panic!("pid {pid}: {other:?}"),
        };
        *outcomes.entry(key).or_insert(0) += 1;
    }
    eprintln!("outcomes over 40 kills: {outcomes:?}");
    // This process (the tracer) is unharmed and can still shift a live one.
    let mut r = Reader::start("dynamic", &[]);
    assert!(matches!(
        shift(r.pid(), what, &Options::default()).outcome,
        Outcome::Shifted(_)
    ));
    assert!(near(r.read().rt_shift(), 3600 * SECOND_NS));
}

// --- the replacement code run directly ---

const PAGE_ADDR: u64 = 0x2_0000_0000;
/// Entries in the page after the code page: one 8-aligned, one 4 mod 8 (aarch64's literal
/// padding), one more.
const ENTRIES: [u64; 3] = [
    PAGE_ADDR + 4096,
    PAGE_ADDR + 4096 + 0x104,
    PAGE_ADDR + 4096 + 0x200,
];

fn bytes(name: &str, b: &[u8]) -> String {
    let list: Vec<String> = b.iter().map(|x| format!("{x:#04x}")).collect();
    format!(
        "static const unsigned char {name}[] = {{{}}};\n",
        list.join(",")
    )
}

fn stub_header<A: ShiftArch>(offset: Offset, mask: u64) -> String {
    let mut h = format!("#define PAGE_ADDR {PAGE_ADDR:#x}ULL\n");
    h += &bytes(
        "page_image",
        &page_image::<A>(offset.sec, offset.nsec, mask),
    );
    for (target, (entry, name)) in A::TARGETS
        .iter()
        .zip(ENTRIES.iter().zip(["CGT", "GTOD", "TIME"]))
    {
        h += &format!("#define {name}_ENTRY {entry:#x}ULL\n");
        h += &bytes(
            &format!("{}_jump", name.to_lowercase()),
            &A::jump(*entry, PAGE_ADDR + target.stub_offset),
        );
    }
    h
}

fn run_harness<A: ShiftArch>(cc: &str, runner: &[&str], offset: Offset, mask: u64) -> String {
    let dir = scratch().join(format!("harness-{}-{mask}", A::NAME));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("stub.h"), stub_header::<A>(offset, mask)).unwrap();
    let bin = dir.join("harness");
    let include = format!("-I{}", dir.display());
    build(
        cc,
        &["-O1", "-static", &include],
        &bin,
        &program("stub_harness.c"),
    );
    let mut command = if runner.is_empty() {
        Command::new(&bin)
    } else {
        let mut c = Command::new(runner[0]);
        c.args(&runner[1..]).arg(&bin);
        c
    };
    let out = command.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn field(out: &str, line: &str, key: &str) -> i128 {
    let l = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(line))
        .unwrap_or_else(|| panic!("no {line} in {out}"));
    l.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {l}"))
        .parse()
        .unwrap()
}

fn check_harness<A: ShiftArch>(cc: &str, runner: &[&str]) {
    // An offset with nanoseconds that carry: -1d + 0.9999999s.
    let offset = Offset::from_nanos(-DAY_NS + 999_999_900).unwrap();
    let out = run_harness::<A>(cc, runner, offset, 1);
    let o = offset.nanos();
    assert_eq!(field(&out, "clock0", "rc"), 0, "{out}");
    assert!(
        near(
            field(&out, "clock0", "got") - field(&out, "clock0", "real"),
            o
        ),
        "{out}"
    );
    assert!(
        (0..SECOND_NS).contains(&field(&out, "clock0", "nsec")),
        "{out}"
    );
    // CLOCK_MONOTONIC not in the mask: the system call's value.
    assert!(
        near(
            field(&out, "clock1", "got") - field(&out, "clock1", "real"),
            0
        ),
        "{out}"
    );
    // Errors come back as the raw -errno, as from the vDSO's own fallback.
    assert_eq!(field(&out, "badclock", "rc"), -22, "{out}");
    assert_eq!(field(&out, "negclock", "rc"), -22, "{out}");
    assert_eq!(field(&out, "gtod", "rc"), 0);
    assert!(
        near(
            (field(&out, "gtod", "got") - field(&out, "gtod", "real")) * 1000,
            o
        ),
        "{out}"
    );
    assert!(
        (0..1_000_000).contains(&field(&out, "gtod", "usec")),
        "{out}"
    );
    assert_eq!(field(&out, "gtodnull", "rc"), 0);
    if A::TARGETS.iter().any(|t| t.function == Function::Time) {
        let got = field(&out, "time", "got");
        assert_eq!(got, field(&out, "time", "stored"));
        assert!(
            (got - field(&out, "time", "real") - (o / SECOND_NS)).abs() <= 1,
            "{out}"
        );
        assert!((field(&out, "timenull", "got") - got).abs() <= 1);
    }
    // Both clocks in the mask.
    let out = run_harness::<A>(cc, runner, offset, 3);
    assert!(
        near(
            field(&out, "clock1", "got") - field(&out, "clock1", "real"),
            o
        ),
        "{out}"
    );
    // Nothing in the mask for these clocks (CLOCK_BOOTTIME only): nothing shifted, not even
    // gettimeofday.
    let out = run_harness::<A>(cc, runner, offset, 1 << 7);
    assert!(
        near(
            field(&out, "clock0", "got") - field(&out, "clock0", "real"),
            0
        ),
        "{out}"
    );
    assert!(
        near(
            (field(&out, "gtod", "got") - field(&out, "gtod", "real")) * 1000,
            0
        ),
        "{out}"
    );
}

fn x86_64_replacements_run_natively() {
    check_harness::<X86_64>("cc", &[]);
}

fn aarch64_replacements_run_under_qemu_user() {
    check_harness::<Aarch64>(
        "aarch64-linux-gnu-gcc",
        &["qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu"],
    );
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

type Test = (&'static str, fn());

fn main() -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let root = nix::unistd::geteuid().is_root();
    let native = cfg!(target_arch = "x86_64");
    let cross = native && have("aarch64-linux-gnu-gcc") && have("qemu-aarch64-static");
    let rooted: [Test; 4] = [
        (
            "dynamic_reader_is_shifted_updated_and_restored",
            dynamic_reader_is_shifted_updated_and_restored,
        ),
        (
            "static_reader_is_shifted_updated_and_restored",
            static_reader_is_shifted_updated_and_restored,
        ),
        (
            "seccomp_refusing_the_call_is_reported_and_nothing_changes",
            seccomp_refusing_the_call_is_reported_and_nothing_changes,
        ),
        (
            "a_process_exiting_mid_patch_is_reported_and_harms_nothing",
            a_process_exiting_mid_patch_is_reported_and_harms_nothing,
        ),
    ];
    if !root {
        eprintln!("not running as root: the tests that trace processes are ignored (ptrace)");
    }
    if !cross {
        eprintln!(
            "aarch64-linux-gnu-gcc or qemu-aarch64-static missing (scripts/setup.sh installs \
             them): the aarch64 replacement test is ignored"
        );
    }
    let trial = |name: &'static str, test: fn()| {
        libtest_mimic::Trial::test(name, move || {
            std::panic::catch_unwind(test).map_err(|e| {
                let text = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                libtest_mimic::Failed::from(text)
            })
        })
    };
    let mut trials: Vec<_> = rooted
        .iter()
        .map(|&(name, test)| trial(name, test).with_ignored_flag(!root))
        .collect();
    trials.push(
        trial(
            "x86_64_replacements_run_natively",
            x86_64_replacements_run_natively,
        )
        .with_ignored_flag(!native),
    );
    trials.push(
        trial(
            "aarch64_replacements_run_under_qemu_user",
            aarch64_replacements_run_under_qemu_user,
        )
        .with_ignored_flag(!cross),
    );
    libtest_mimic::run(&args, trials).exit_code()
}

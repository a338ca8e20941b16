//! Handover with many idle processes beside one holder (root only):
//! `idle_bench [IDLE_COUNTS..]` (default 0 500 2000).
//!
//! For each count, a private mount namespace (`unshare -m`) holds that many idle `sleep`s and
//! one holder (tests/programs/holder.c) reading a file in a directory; a tmpfs mounted over the
//! directory inside that namespace plays the fault mount. Measured, median of 5 rounds: the
//! whole handover (scanning every process that sees the mount, stopping and moving the holder)
//! and the longest time any process was stopped; then the same with every process of the
//! namespace frozen for the whole handover (what toda does), for comparison.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use handover::proc_source::HostProc;
use handover::scan::{find_fault_mount, processes_sharing_mounts, scan_process};
use handover::{Direction, Options, Report, Scope, hand_over};

type Error = Box<dyn std::error::Error>;

fn run(cmd: &mut Command) -> Result<(), Error> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

fn build_holder(dir: &Path) -> Result<PathBuf, Error> {
    let bin = dir.join("holder");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/holder.c");
    run(Command::new("cc")
        .args(["-O2", "-static", "-mno-red-zone", "-o"])
        .arg(&bin)
        .arg(src))?;
    Ok(bin)
}

struct Namespace {
    child: Child,
    vol: PathBuf,
}

impl Namespace {
    fn start(base: &Path, holder: &Path, idle: usize) -> Result<Namespace, Error> {
        let vol = base.join("vol");
        std::fs::create_dir_all(&vol)?;
        std::fs::write(vol.join("f"), "O000".repeat(100_000))?;
        let script = format!(
            "i=0; while [ $i -lt {idle} ]; do sleep 100000 & i=$((i+1)); done; exec {} fd {} {}",
            holder.display(),
            vol.join("f").display(),
            base.join("log").display()
        );
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .spawn()?;
        let ns = Namespace { child, vol };
        let deadline = Instant::now() + Duration::from_secs(120);
        while processes_sharing_mounts(&HostProc::default(), ns.pid())?.len() < idle + 1
            || !base.join("log").exists()
        {
            if Instant::now() > deadline {
                return Err("the namespace did not fill up".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(ns)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn nsenter(&self, args: &[&str]) -> Result<(), Error> {
        run(Command::new("nsenter")
            .args(["-t", &self.pid().to_string(), "-m", "--"])
            .args(args))
    }

    fn mount(&self) -> Result<Scope, Error> {
        let vol = self.vol.to_str().ok_or("path")?;
        self.nsenter(&["mount", "-t", "tmpfs", "handover-bench", vol])?;
        let inside =
            PathBuf::from(format!("/proc/{}/root", self.pid())).join(vol.trim_start_matches('/'));
        std::fs::write(inside.join("f"), "F000".repeat(100_000))?;
        let fault = find_fault_mount(&HostProc::default(), self.pid(), &self.vol, "tmpfs")?
            .ok_or("no tmpfs over the volume")?;
        Ok(Scope {
            volume: self.vol.clone(),
            fault,
            direction: Direction::ToFault,
        })
    }

    fn detach(&self) -> Result<(), Error> {
        self.nsenter(&["umount", "-l", self.vol.to_str().ok_or("path")?])
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Ok(pids) = processes_sharing_mounts(&HostProc::default(), self.pid()) {
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = self.child.wait();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One handover onto the mount and back; (milliseconds onto it, its report).
fn round(ns: &Namespace, options: &Options) -> Result<(f64, Report), Error> {
    let scope = ns.mount()?;
    let started = Instant::now();
    let report = hand_over(ns.pid(), &scope, options)?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    ns.detach()?;
    let back = Scope {
        direction: Direction::ToOriginal,
        ..scope
    };
    hand_over(ns.pid(), &back, &Options::default())?;
    Ok((ms, report))
}

fn main() -> Result<(), Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err("run as root (mount namespaces, ptrace)".into());
    }
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let counts = if counts.is_empty() {
        vec![0, 500, 2000]
    } else {
        counts
    };
    let base = std::env::temp_dir().join(format!("handover-bench-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    let holder = build_holder(&base)?;
    let host_processes = HostProc::default().list_pids();
    println!(
        "host processes outside the namespace (scanned too, by mount namespace): {host_processes}"
    );
    println!(
        "| idle processes | scan only (ms) | handover (ms) | longest stop (µs) | stopped | moved fds | freeze-everything (ms) | stopped |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for idle in counts {
        let dir = base.join(format!("n{idle}"));
        let ns = Namespace::start(&dir, &holder, idle)?;
        // Scanning alone (nothing stopped): listing the namespace's processes and reading
        // their fd, cwd and maps entries.
        let scope = ns.mount()?;
        let mut scans = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let src = HostProc::default();
            for pid in processes_sharing_mounts(&src, ns.pid())? {
                let _ = scan_process(&src, pid, &scope);
            }
            scans.push(started.elapsed().as_secs_f64() * 1e3);
        }
        ns.detach()?;
        let mut ours = Vec::new();
        let mut stops = Vec::new();
        let mut last = Report::default();
        for _ in 0..5 {
            let (ms, report) = round(&ns, &Options::default())?;
            ours.push(ms);
            stops.push(report.longest_stop_us as f64);
            last = report;
        }
        let freeze = Options {
            freeze_everything: true,
            ..Options::default()
        };
        let mut frozen = Vec::new();
        let mut frozen_report = Report::default();
        for _ in 0..3 {
            let (ms, report) = round(&ns, &freeze)?;
            frozen.push(ms);
            frozen_report = report;
        }
        println!(
            "| {idle} | {:.2} | {:.2} | {:.0} | {} | {} | {:.2} | {} |",
            median(scans),
            median(ours),
            median(stops),
            last.stopped,
            last.fds,
            median(frozen),
            frozen_report.stopped
        );
        drop(ns);
    }
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}

trait CountPids {
    fn list_pids(&self) -> usize;
}

impl CountPids for HostProc {
    fn list_pids(&self) -> usize {
        use handover::proc_source::ProcSource;
        self.list("")
            .map(|names| names.iter().filter(|n| n.parse::<u32>().is_ok()).count())
            .unwrap_or(0)
    }
}

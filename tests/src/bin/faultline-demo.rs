//! The main job, on this machine: a private containerd, a pod made the way kubelet makes it, the
//! agent resolving and entering it, then an IO fault the pod's own processes see (one of them
//! through a descriptor it opened before the fault, handed over to the fault mount), and recovery.
//! Everything it starts is stopped and removed at the end.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testbed::{PodSpec, Testbed, Volume};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("faultline-demo: run as root (it starts containerd and mounts FUSE)");
        std::process::exit(1);
    }
    let started = Instant::now();
    let testbed = match Testbed::start() {
        Ok(tb) => tb,
        Err(e) => {
            eprintln!("faultline-demo: the testbed did not start: {e}");
            std::process::exit(1);
        }
    };
    step(&format!(
        "private containerd up in {:.2?} at {} (CNI bridge {}, subnet {})",
        started.elapsed(),
        testbed.base_dir().display(),
        testbed.bridge(),
        testbed.subnet()
    ));
    let outcome = demo(&testbed);
    let teardown = testbed.shutdown();
    let left = testbed.leftovers();
    match (&outcome, &teardown) {
        (Ok(()), Ok(())) if left.is_empty() => {
            step(&format!(
                "torn down, nothing left behind; demo took {:.2?}",
                started.elapsed()
            ));
        }
        _ => {
            if let Err(e) = &outcome {
                eprintln!("faultline-demo: FAILED: {e}");
            }
            if let Err(e) = &teardown {
                eprintln!("faultline-demo: teardown: {e}");
            }
            for l in &left {
                eprintln!("faultline-demo: left behind: {l}");
            }
            std::process::exit(1);
        }
    }
}

fn step(text: &str) {
    println!("==> {text}");
}

fn binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().ok_or("no binary directory")?.join(name);
    if !path.exists() {
        return Err(format!(
            "{} is missing: run `cargo build --workspace` first",
            path.display()
        )
        .into());
    }
    Ok(path)
}

fn run(program: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(program).args(args).output()?;
    if !out.status.success() {
        return Err(format!(
            "{} {} failed ({}): {}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn demo(tb: &Testbed) -> Result<()> {
    let data = tb.host_dir("demo-data")?;
    let out = tb.host_dir("demo-out")?;
    std::fs::write(data.join("greeting"), "hello from the host\n")?;
    // A book of fixed-width pages ("page 0001\n", 10 bytes each) for a reader that opens it once.
    let book: String = (1..=9999).map(|n| format!("page {n:04}\n")).collect();
    std::fs::write(data.join("book"), book)?;
    // The reader: opens /data/book once (fd 3, before any fault exists) and reads one page per
    // 50 ms from that same descriptor; its outcome per attempt goes to /out/reader.
    // The writer: every 50 ms, appends a line to /data/journal and reads it back (new opens each
    // time); its outcome per attempt goes to /out/log. /out is a volume without faults.
    let workload = "( exec 3</data/book; j=0; while true; do j=$((j+1)); \
        if p=$(dd bs=10 count=1 <&3 2>/out/rerr); then echo \"$j ok: $p\"; \
        else echo \"$j FAILED: $(head -n 1 /out/rerr)\"; fi >> /out/reader; sleep 0.05; done ) & \
        i=0; while true; do i=$((i+1)); \
        if echo \"line $i\" >> /data/journal 2>/out/err && tail -n 1 /data/journal > /dev/null 2>>/out/err; \
        then echo \"$i ok\"; else echo \"$i FAILED: $(tail -n 1 /out/err)\"; fi >> /out/log; sleep 0.05; done";
    let t = Instant::now();
    let pod = tb.run_pod(
        PodSpec::new("demo")
            .container_name("app")
            .shell(workload)
            .volume(Volume::host_dir(&data, "/data"))
            .volume(Volume::host_dir(&out, "/out")),
    )?;
    step(&format!(
        "pod {} ({}) running in {:.2?}: container {}, IP {}",
        pod.name,
        pod.uid,
        t.elapsed(),
        pod.container_uri(),
        pod.ip.as_deref().unwrap_or("-")
    ));

    let agent_bin = binary("faultline-agent")?;
    let socket = tb.containerd_socket().to_string_lossy().into_owned();
    let via_api = run(
        &agent_bin,
        &["--containerd-socket", &socket, "pid", &pod.container_uri()],
    )?;
    let sandbox = run(
        &agent_bin,
        &["--containerd-socket", &socket, "sandbox-pid", &pod.uid],
    )?;
    step(&format!(
        "resolved through the containerd API: host PID {} (sandbox PID {} by pod UID)",
        via_api.trim(),
        sandbox.trim()
    ));

    let nsexec = binary("nsexec")?;
    let pid = pod.pid.to_string();
    let greeting = run(
        &nsexec,
        &["-m", &pid, "-p", &pid, "--", "cat", "/data/greeting"],
    )?;
    step(&format!(
        "nsexec into its mount+pid namespaces: cat /data/greeting -> {}",
        greeting.trim()
    ));
    let ps = run(
        &nsexec,
        &["-m", &pid, "-p", &pid, "--", "ps", "-o", "pid,args"],
    )?;
    for line in ps.lines() {
        println!("      {line}");
    }
    let ip = run(
        &nsexec,
        &[
            "-n", &pid, "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0",
        ],
    )?;
    step(&format!(
        "nsexec into its network namespace: {}",
        ip.split_whitespace().take(4).collect::<Vec<_>>().join(" ")
    ));

    io_fault(tb, &pod, &out)
}

/// The agent serves the local CLI on a unix socket; `faultline attack io` makes the pod's own
/// reads and writes fail with EIO, including the reader's, whose descriptor was opened before
/// the experiment (handed over to the fault mount); `faultline recover` ends it, the reader
/// goes on from the page after its last good one on the same descriptor, and the data is
/// intact.
fn io_fault(tb: &Testbed, pod: &testbed::Pod, out: &Path) -> Result<()> {
    let agent_socket = tb.base_dir().join("agent.sock");
    let state_dir = tb.base_dir().join("agent-state");
    let mut agent = Agent::start(&agent_socket, &state_dir, tb.containerd_socket())?;
    let cli = binary("faultline")?;
    let sock = agent_socket.to_string_lossy().into_owned();

    let reader = out.join("reader");
    wait_for(&reader, 0, " ok: page", Duration::from_secs(5))
        .ok_or("the reader never read a page")?;
    let lines_before = count_lines(&out.join("log"));
    let reader_before = count_lines(&reader);
    let t = Instant::now();
    let id = run(
        &cli,
        &[
            "--socket",
            &sock,
            "attack",
            "io",
            "--container",
            &pod.container_uri(),
            "--path",
            "/data",
            "--errno",
            "5",
            "--methods",
            "read,write",
            "--duration",
            "30s",
        ],
    )?;
    let id = id.trim().to_owned();
    step(&format!(
        "faultline attack io --errno 5 --methods read,write: experiment {id} in {:.2?}",
        t.elapsed()
    ));
    let first_failure = wait_for(
        &out.join("log"),
        lines_before,
        "FAILED",
        Duration::from_secs(5),
    )
    .ok_or("the pod never saw the fault")?;
    step(&format!("the pod's own log: {first_failure}"));
    let reader_failure = wait_for(&reader, reader_before, "FAILED", Duration::from_secs(5))
        .ok_or("the reader, whose descriptor predates the experiment, never saw the fault")?;
    let last_page = last_good_page(&reader).ok_or("the reader has no good page")?;
    step(&format!(
        "the reader's log (fd 3 opened before the attack): {reader_failure} (last good: page {last_page:04})"
    ));
    for line in run(&cli, &["--socket", &sock, "list"])?.lines() {
        println!("      {line}");
    }

    let t = Instant::now();
    run(&cli, &["--socket", &sock, "recover", &id])?;
    step(&format!("faultline recover {id} in {:.2?}", t.elapsed()));
    let after = count_lines(&out.join("log"));
    let recovered = wait_for(&out.join("log"), after + 1, " ok", Duration::from_secs(5))
        .ok_or("the pod did not recover")?;
    step(&format!("the pod's own log after recovery: {recovered}"));
    let resumed = first_good_after_failures(&reader, Duration::from_secs(5))
        .ok_or("the reader did not recover")?;
    let next_page = page_of(&resumed).ok_or("unreadable reader line")?;
    if next_page != last_page + 1 {
        return Err(format!(
            "the reader resumed at page {next_page}, expected {} (its offset moved)",
            last_page + 1
        )
        .into());
    }
    step(&format!(
        "the reader after recovery: {resumed} — the page after {last_page:04}: same descriptor, offset unchanged"
    ));
    let listed = run(&cli, &["--socket", &sock, "list"])?;
    if !listed.trim().is_empty() {
        return Err(format!("experiments still listed after recovery: {listed}").into());
    }
    agent.stop()?;
    step("agent stopped; every fault it injected is recovered. Its log:");
    let log = std::fs::read_to_string(state_dir.with_extension("log"))?;
    for line in log.lines() {
        println!("      {line}");
    }
    Ok(())
}

/// The page number of a reader line `N ok: page NNNN`.
fn page_of(line: &str) -> Option<u32> {
    line.split_once(" ok: page ")?.1.trim().parse().ok()
}

/// The page of the reader's last successful read before its first failure.
fn last_good_page(reader: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(reader).ok()?;
    text.lines()
        .take_while(|l| !l.contains("FAILED"))
        .filter_map(page_of)
        .last()
}

/// The reader's first successful read after its failures, waiting up to `within`.
fn first_good_after_failures(reader: &Path, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(reader)
            && let Some(line) = text
                .lines()
                .skip_while(|l| !l.contains("FAILED"))
                .find(|l| page_of(l).is_some())
        {
            return Some(line.to_owned());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// The first line after line `skip` that contains `needle`, waiting up to `within`.
fn wait_for(path: &Path, skip: usize, needle: &str, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Some(line) = text.lines().skip(skip).find(|l| l.contains(needle))
        {
            return Some(line.to_owned());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// The agent process, stopped (SIGTERM, by PID) when dropped.
struct Agent {
    child: Option<Child>,
}

impl Agent {
    fn start(socket: &Path, state_dir: &Path, containerd: &Path) -> Result<Self> {
        let log_path = state_dir.with_extension("log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(binary("faultline-agent")?)
            .arg("--containerd-socket")
            .arg(containerd)
            .arg("serve")
            .arg("--unix-socket")
            .arg(socket)
            .arg("--insecure-unix-plaintext")
            .args(["--http-listen", "off"])
            .arg("--state-dir")
            .arg(state_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()?;
        let agent = Agent { child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if Instant::now() > deadline {
                return Err("the agent did not open its socket".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        step(&format!(
            "faultline-agent serving the CLI on {}",
            socket.display()
        ));
        Ok(agent)
    }

    fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )?;
            let status = child.wait()?;
            if !status.success() {
                return Err(format!("the agent exited with {status}").into());
            }
        }
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }
}

//! PostgreSQL from Debian's packages (scripts/setup.sh installs `postgresql`) on a fault
//! mount, as a user of either mode would run it: the database starts before any rule can
//! reach its files, pgbench runs, and then
//! 1. a write-EIO rule makes its transactions fail at once (the WAL write that commits one
//!    fails, the server PANICs and, as its crash recovery cannot write either, shuts down);
//! 2. with the rules cleared it recovers by itself on restart and pgbench runs clean;
//! 3. a latency rule on fsync lowers TPS to what the latency allows (every commit waits for
//!    a WAL flush: at most `clients / latency` transactions per second);
//! 4. with the rules cleared pgbench runs clean again; after a restart
//!    `pg_amcheck --heapallindexed` finds nothing, no checksum failed, every row is there and
//!    the balances add up (each committed transaction changed all four tables or none).
//!
//! Sidecar mode: the chaosfs command line, no rules at start, rules over HTTP. Agent mode:
//! `mount --pid` with an experiment's rule on another path of the volume, then an update (a
//! second IOChaos on the volume). The server runs as the `postgres` user from a temporary
//! directory on a free port, started with `pg_ctl` and stopped by its PID.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::injector_bin::{AgentInjector, Control, Sidecar};
use serde_json::{Value, json};

/// pgbench's scale: 100,000 accounts per unit.
const SCALE: u64 = 4;
const CLIENTS: u32 = 4;
/// The fsync latency of step 3.
const FSYNC_LATENCY_MS: u64 = 50;

/// The newest PostgreSQL under /usr/lib/postgresql (Debian's layout).
fn pg_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run scripts/setup.sh (Debian's postgresql package)")
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("pg_amcheck").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .expect("no PostgreSQL with pg_amcheck under /usr/lib/postgresql")
}

/// A free TCP port on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// One PostgreSQL server, its data directory under the fault mount.
struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    port: u16,
    uid: u32,
    gid: u32,
}

impl Postgres {
    fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(tool));
        cmd.uid(self.uid)
            .gid(self.gid)
            .env("PGHOST", &self.socket_dir)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGDATABASE", "postgres")
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        self.command(tool)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"))
    }

    fn must(&self, tool: &str, args: &[&str]) -> String {
        let out = self.run(tool, args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{tool} {args:?} failed:\n{text}");
        text
    }

    fn initdb(&self) {
        let data = self.data.to_str().expect("utf-8");
        // -k: data checksums, so that a torn or wrong page is found.
        self.must(
            "initdb",
            &["-D", data, "-k", "-A", "trust", "-U", "postgres"],
        );
    }

    fn start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=''",
            self.port,
            self.socket_dir.display()
        );
        self.must(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().expect("utf-8"),
                "-o",
                &opts,
                "-l",
                self.log.to_str().expect("utf-8"),
                "-t",
                "300",
                "-w",
                "start",
            ],
        );
    }

    /// The postmaster's PID, from its pidfile (read through the mount).
    fn pid(&self) -> Option<i32> {
        fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    fn alive(pid: i32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
            && !fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
    }

    /// Waits (up to `within`) for the postmaster `pid` to exit by itself.
    fn wait_exit(pid: i32, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Self::alive(pid) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// Fast shutdown by PID (SIGINT), waiting for the postmaster to exit.
    fn stop(&self, pid: i32) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGINT,
        );
        assert!(
            Self::wait_exit(pid, Duration::from_secs(120)),
            "postmaster {pid} did not stop"
        );
    }

    fn sql(&self, query: &str) -> String {
        self.must("psql", &["-XAtq", "-v", "ON_ERROR_STOP=1", "-c", query])
            .trim()
            .to_owned()
    }

    /// A pgbench run of `seconds`: TPS, and the whole output.
    fn bench(&self, seconds: u32) -> (f64, String) {
        let out = self
            .command("pgbench")
            .args(bench_args(seconds, false))
            .output()
            .expect("pgbench");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "pgbench failed:\n{text}");
        assert!(
            text.contains("number of failed transactions: 0 (0.000%)"),
            "{text}"
        );
        (tps_of(&text), text)
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn bench_args(seconds: u32, progress: bool) -> Vec<String> {
    // -n: no VACUUM and, above all, no TRUNCATE of pgbench_history before each run, so the
    // history holds every committed transaction of the story.
    let mut args: Vec<String> = [
        "-n",
        "-c",
        &CLIENTS.to_string(),
        "-j",
        "2",
        "-T",
        &seconds.to_string(),
    ]
    .map(str::to_owned)
    .into();
    if progress {
        args.extend(["-P".to_owned(), "1".to_owned()]);
    }
    args
}

fn tps_of(pgbench_output: &str) -> f64 {
    pgbench_output
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no tps in:\n{pgbench_output}"))
}

/// `rules[0]` of `get_status`: how many operations it matched and injected.
fn injected(control: &mut dyn Control) -> u64 {
    let status = control.status();
    status["rules"][0]["injected"]
        .as_u64()
        .unwrap_or_else(|| panic!("no rule in force: {status}"))
}

fn write_eio(data: &Path) -> Value {
    json!([{"type": "fault", "path": format!("{}/**", data.display()), "methods": ["write"],
            "percent": 100, "faults": [{"errno": 5, "weight": 1}]}])
}

fn fsync_latency(data: &Path) -> Value {
    json!([{"type": "latency", "path": format!("{}/**", data.display()), "methods": ["fsync"],
            "latency": format!("{FSYNC_LATENCY_MS}ms")}])
}

/// UTC milliseconds of a PostgreSQL log line (`2026-12-07 11:36:37.232 UTC [..] ...`).
fn log_time_ms(line: &str) -> Option<u64> {
    let (date, rest) = line.split_once(' ')?;
    let time = rest.split_whitespace().next()?;
    let mut d = date.split('-').map(|n| n.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, ms) = time.split_once('.')?;
    let mut t = hms.split(':').map(|n| n.parse::<i64>().ok());
    let (h, min, s) = (t.next()??, t.next()??, t.next()??);
    // Days since the epoch (civil calendar).
    let (yy, mm) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + min * 60 + s;
    u64::try_from(secs * 1000 + ms.parse::<i64>().ok()?).ok()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .expect("clock")
}

/// A directory the `postgres` user owns.
fn owned_dir(path: &Path, uid: u32, gid: u32) {
    fs::create_dir_all(path).expect("mkdir");
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .expect("chown");
}

/// The story, on a mount already in place at `mount` (its rules given by `control`);
/// `base_rules` are the rules that stay in force throughout (agent mode: the experiment's
/// rule elsewhere in the volume).
fn story(control: &mut dyn Control, mount: &Path, work: &Path, base_rules: Value) {
    let user = nix::unistd::User::from_name("postgres")
        .expect("passwd")
        .expect("the postgres user (Debian's postgresql package makes it)");
    let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
    let with_base = |rules: Value| {
        let mut all = base_rules.as_array().cloned().unwrap_or_default();
        all.extend(rules.as_array().cloned().unwrap_or_default());
        Value::Array(all)
    };
    let first_rule = |rules: Value| {
        // `injected` reads rules[0]: put the step's rule first.
        let mut all = rules.as_array().cloned().unwrap_or_default();
        all.extend(base_rules.as_array().cloned().unwrap_or_default());
        Value::Array(all)
    };
    owned_dir(&work.join("sock"), uid, gid);
    owned_dir(&work.join("logs"), uid, gid);
    let pg = Postgres {
        bin: pg_bin(),
        data: mount.join("pg"),
        socket_dir: work.join("sock"),
        log: work.join("logs/postgres.log"),
        port: free_port(),
        uid,
        gid,
    };
    pg.initdb();
    pg.start();
    let accounts = SCALE * 100_000;
    pg.must("pgbench", &["-i", "-q", "-s", &SCALE.to_string()]);
    let (tps_clean, _) = pg.bench(3);
    eprintln!("clean: {tps_clean:.0} tps");

    // 1. A write-EIO rule while pgbench runs.
    let mut running: Child = pg
        .command("pgbench")
        .args(bench_args(60, true))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pgbench");
    let mut progress = BufReader::new(running.stderr.take().expect("stderr"));
    // Wait for pgbench to report progress (it is committing transactions).
    let mut line = String::new();
    while !line.starts_with("progress:") {
        line.clear();
        assert!(
            progress.read_line(&mut line).expect("pgbench") > 0,
            "pgbench ended early"
        );
    }
    let postmaster = pg.pid().expect("postmaster.pid");
    let updated = control.update(first_rule(write_eio(mount)));
    let update_returned_ms = now_ms();
    assert_eq!(updated["warnings"], json!([]), "{updated}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut progress, &mut rest).expect("pgbench output");
    let ended = running.wait().expect("pgbench");
    assert!(
        !ended.success(),
        "pgbench ran through the write-EIO rule:\n{rest}"
    );
    assert!(rest.contains("aborted"), "{rest}");
    let log = pg.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("PANIC:") && l.contains("Input/output error")),
        "no PANIC on EIO in the server log:\n{log}"
    );
    let first = log
        .lines()
        .find(|l| l.contains("Input/output error"))
        .expect("a failed write");
    let first_ms = log_time_ms(first).expect("log time");
    // Negative: the rule was in force, and a write failed, before the answer arrived.
    eprintln!(
        "write EIO: first failure {} ms after update returned: {first}",
        first_ms as i64 - update_returned_ms as i64
    );
    assert!(injected(control) > 0);
    // Crash recovery cannot write either: the postmaster gives up by itself.
    assert!(
        Postgres::wait_exit(postmaster, Duration::from_secs(120)),
        "the postmaster kept running with every write failing"
    );

    // 2. Rules cleared: a restart recovers and pgbench runs clean.
    control.update(with_base(json!([])));
    pg.start();
    let (tps_recovered, _) = pg.bench(3);
    eprintln!("recovered: {tps_recovered:.0} tps");

    // 3. Latency on fsync: every commit waits for its WAL flush.
    control.update(first_rule(fsync_latency(mount)));
    let (tps_latency, _) = pg.bench(3);
    let bound = f64::from(CLIENTS) * 1000.0 / FSYNC_LATENCY_MS as f64;
    eprintln!("fsync +{FSYNC_LATENCY_MS} ms: {tps_latency:.0} tps (at most {bound:.0})");
    assert!(injected(control) > 0);
    assert!(
        tps_latency <= bound,
        "{tps_latency} tps: commits did not wait for the delayed fsync"
    );

    // 4. Clean again; restart; check everything.
    control.update(with_base(json!([])));
    let (tps_after, _) = pg.bench(3);
    eprintln!("after recovery: {tps_after:.0} tps");
    pg.stop(pg.pid().expect("postmaster.pid"));
    pg.start();
    let amcheck = pg.must("pg_amcheck", &["--install-missing", "--heapallindexed"]);
    assert_eq!(amcheck.trim(), "", "pg_amcheck found problems");
    assert_eq!(
        pg.sql("select coalesce(sum(checksum_failures), 0) from pg_stat_database"),
        "0"
    );
    assert_eq!(
        pg.sql("select count(*) from pgbench_accounts"),
        accounts.to_string()
    );
    let sums = pg.sql(
        "select (select sum(abalance) from pgbench_accounts) || ' ' || \
                (select sum(tbalance) from pgbench_tellers) || ' ' || \
                (select sum(bbalance) from pgbench_branches) || ' ' || \
                (select sum(delta) from pgbench_history)",
    );
    let sums: Vec<&str> = sums.split(' ').collect();
    assert!(
        sums.len() == 4 && sums.iter().all(|s| *s == sums[0]),
        "balances disagree with the history: {sums:?}"
    );
    let transactions = pg.sql("select count(*) from pgbench_history");
    eprintln!("{accounts} accounts, {transactions} committed transactions, balances add up");
    pg.stop(pg.pid().expect("postmaster.pid"));
}

fn workdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("faultline-pg-")
        .tempdir()
        .expect("tempdir");
    // The postgres user must reach its directories below.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

fn postgres_under_a_sidecar_mount_gets_every_fault_and_loses_nothing() {
    let work = workdir();
    let user = nix::unistd::User::from_name("postgres")
        .expect("passwd")
        .expect("the postgres user");
    for d in ["data", "fuse-data"] {
        owned_dir(&work.path().join(d), user.uid.as_raw(), user.gid.as_raw());
    }
    let mut sidecar = Sidecar::start(work.path(), &[]);
    let mount = sidecar.mountpoint.clone();
    story(&mut sidecar, &mount, work.path(), json!([]));
    sidecar.stop();
}

fn postgres_in_an_agent_mode_experiment_gets_the_updated_rules() {
    let work = workdir();
    let user = nix::unistd::User::from_name("postgres")
        .expect("passwd")
        .expect("the postgres user");
    let volume = work.path().join("vol");
    owned_dir(&volume, user.uid.as_raw(), user.gid.as_raw());
    owned_dir(
        &volume.join("elsewhere"),
        user.uid.as_raw(),
        user.gid.as_raw(),
    );
    // The experiment's first IOChaos: a rule elsewhere in the volume.
    let elsewhere = json!([{"type": "latency", "path": format!("{}/elsewhere/**", volume.display()),
                            "latency": "1ms"}]);
    let mut injector = AgentInjector::start(&volume, &elsewhere);
    story(&mut injector, &volume, work.path(), elsewhere);
}

fn postgres_log_times_are_read_as_utc_milliseconds() {
    assert_eq!(
        log_time_ms("2026-12-07 11:36:37.232 UTC [3792] PANIC:  could not write"),
        Some(1_796_643_397_232)
    );
    assert_eq!(
        log_time_ms("1970-01-01 00:00:01.005 UTC [1] LOG: x"),
        Some(1005)
    );
    assert_eq!(log_time_ms("not a log line"), None);
}

fn main() -> std::process::ExitCode {
    common::run_tests(
        &[
            (
                "postgres_under_a_sidecar_mount_gets_every_fault_and_loses_nothing",
                postgres_under_a_sidecar_mount_gets_every_fault_and_loses_nothing,
            ),
            (
                "postgres_in_an_agent_mode_experiment_gets_the_updated_rules",
                postgres_in_an_agent_mode_experiment_gets_the_updated_rules,
            ),
        ],
        &[(
            "postgres_log_times_are_read_as_utc_milliseconds",
            postgres_log_times_are_read_as_utc_milliseconds,
        )],
    )
}

//! HTTP chaos end to end, driven as Chaos Mesh's controller drives it (ApplyHttpChaos over
//! mTLS): busybox httpd in one pod, busybox wget in another; abort, delay, replace and patch
//! only where selected; then the pod is served directly again (no redirect left), also after
//! the proxy is killed and after an agent SIGKILL + restart.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use faultline_proto::agent::v1 as api;
use faultline_proto::pb;
use testbed::{Pod, PodSpec, Testbed};

use crate::Story;
use crate::agent_support::{AgentProcess, Pki, eventually, runtime};

pub fn stories() -> Vec<(&'static str, Story)> {
    vec![
        (
            "http::abort_delay_replace_patch_only_where_selected_then_direct",
            actions,
        ),
        (
            "http::a_killed_proxy_and_an_agent_crash_leave_no_redirect",
            proxy_and_agent_die,
        ),
        ("http::cli_attack_with_duration_recovers_by_itself", cli),
        (
            "http::two_experiments_on_one_pod_both_in_force_each_recovered_alone",
            two_experiments,
        ),
    ]
}

const PORT: u32 = 8080;

const RULES: &str = r#"[
  {"target": "Request", "selector": {"port": 8080, "path": "/abort.html"}, "actions": {"abort": true}},
  {"target": "Request", "selector": {"port": 8080, "path": "/slow.html", "method": "GET"}, "actions": {"delay": "400ms"}},
  {"target": "Response", "selector": {"port": 8080, "path": "/replace.html"}, "actions": {"replace": {"code": 503, "body": "Y2hhb3M="}}},
  {"target": "Response", "selector": {"port": 8080, "path": "/patch.html"}, "actions": {"patch": {"headers": [["X-Chaos", "patched"]]}}}
]"#;

fn server(tb: &Testbed, name: &str) -> anyhow::Result<Pod> {
    let script = "mkdir -p /www && for f in index abort slow replace patch; do echo \"$f body\" > /www/$f.html; done && exec httpd -f -p 8080 -h /www";
    Ok(tb.run_pod(PodSpec::new(name).shell(script))?)
}

struct Fetched {
    ok: bool,
    text: String,
    took: Duration,
}

/// One GET on a fresh connection from the client pod's network namespace (a thread that joins
/// it: busybox's static wget cannot be relied on): the whole answer, `ok` for a 200.
fn fetch(client: &Pod, server: &Pod, path: &str) -> anyhow::Result<Fetched> {
    use std::io::{Read, Write};
    let address = (server.ipv4().context("no IP")?, PORT as u16);
    let netns = format!("/proc/{}/ns/net", client.sandbox_pid);
    let path = path.to_owned();
    let probe = std::thread::spawn(move || -> anyhow::Result<Fetched> {
        let ns = std::fs::File::open(&netns)?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        drop(ns);
        let started = Instant::now();
        let mut stream =
            std::net::TcpStream::connect_timeout(&address.into(), Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: server\r\nConnection: close\r\n\r\n"
        )?;
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer).into_owned();
        Ok(Fetched {
            ok: read.is_ok() && text.starts_with("HTTP/1.") && text[8..].starts_with(" 200"),
            text: match read {
                Ok(_) => text,
                Err(e) => format!("{text} (read: {e})"),
            },
            took: started.elapsed(),
        })
    });
    probe
        .join()
        .map_err(|_| anyhow::anyhow!("the probe thread panicked"))?
}

pub(crate) fn redirect_rules(pod: &Pod) -> anyhow::Result<String> {
    let mut all = String::new();
    for save in ["iptables-legacy-save", "iptables-nft-save"] {
        let out = Command::new("nsenter")
            .args(["-t", &pod.sandbox_pid.to_string(), "-n", save, "-t", "nat"])
            .output()?;
        all.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    Ok(all
        .lines()
        .filter(|l| l.contains("FAULTLINE-HTTP"))
        .collect::<Vec<_>>()
        .join("\n"))
}

struct Bed {
    pki: Pki,
    agent: AgentProcess,
    server: Pod,
    client: Pod,
}

impl Bed {
    fn new(tb: &Testbed, name: &str) -> anyhow::Result<Bed> {
        let pki = Pki::create(&tb.base_dir().join(format!("pki-{name}")))?;
        let agent = AgentProcess::start(tb, &pki, &format!("agent-{name}"))?;
        let server = server(tb, &format!("{name}-server"))?;
        let client = crate::network::idle_pod(tb, &format!("{name}-client"))?;
        let bed = Bed {
            pki,
            agent,
            server,
            client,
        };
        let mut last = String::new();
        let answered = eventually(Duration::from_secs(10), || match bed.fetch("/index.html") {
            Ok(f) if f.ok => true,
            Ok(f) => {
                last = f.text;
                false
            }
            Err(e) => {
                last = e.to_string();
                false
            }
        });
        ensure!(
            answered,
            "httpd never answered: {last}; server log: {}",
            bed.server.log("main")
        );
        Ok(bed)
    }

    fn fetch(&self, path: &str) -> anyhow::Result<Fetched> {
        fetch(&self.client, &self.server, path)
    }

    fn apply(&self, rules: &str, ports: Vec<u32>) -> anyhow::Result<pb::ApplyHttpChaosResponse> {
        let rt = runtime()?;
        let (mut daemon, _) = rt.block_on(self.agent.controller(&self.pki))?;
        Ok(rt
            .block_on(daemon.apply_http_chaos(pb::ApplyHttpChaosRequest {
                rules: rules.into(),
                proxy_ports: ports,
                container_id: self.server.container_uri(),
                enter_ns: true,
                ..Default::default()
            }))?
            .into_inner())
    }

    /// One experiment more in the pod through our own API (beside those already there).
    fn start(&self, rules: &str) -> anyhow::Result<api::StartHttpExperimentResponse> {
        let rt = runtime()?;
        let (_, mut agent) = rt.block_on(self.agent.controller(&self.pki))?;
        Ok(rt
            .block_on(
                agent.start_http_experiment(api::StartHttpExperimentRequest {
                    container_id: self.server.container_uri(),
                    rules: rules.into(),
                    proxy_ports: vec![PORT],
                    duration_ms: 0,
                    tls: String::new(),
                }),
            )?
            .into_inner())
    }

    fn recover(&self, id: &str) -> anyhow::Result<api::RecoverResponse> {
        let rt = runtime()?;
        let (_, mut agent) = rt.block_on(self.agent.controller(&self.pki))?;
        Ok(rt
            .block_on(agent.recover(api::RecoverRequest {
                id: id.into(),
                all: false,
            }))?
            .into_inner())
    }

    /// Served directly: every page as it is, no redirect, no record.
    fn expect_direct(&self) -> anyhow::Result<()> {
        for page in ["index", "abort", "slow", "replace", "patch"] {
            let f = self.fetch(&format!("/{page}.html"))?;
            ensure!(
                f.ok && f.text.contains(&format!("{page} body")),
                "{page}: {}",
                f.text
            );
            ensure!(
                !f.text.to_ascii_lowercase().contains("x-chaos"),
                "{}",
                f.text
            );
        }
        let left = redirect_rules(&self.server)?;
        ensure!(left.is_empty(), "redirect left: {left}");
        let journal = std::fs::read_dir(self.agent.state_dir.join("journal"))
            .map(|d| d.flatten().count())
            .unwrap_or(0);
        ensure!(journal == 0, "{journal} journal records left");
        Ok(())
    }

    fn remove(self, tb: &Testbed) -> anyhow::Result<()> {
        drop(self.agent);
        tb.remove_pod(&self.server)?;
        tb.remove_pod(&self.client)?;
        Ok(())
    }
}

fn actions(tb: &Testbed) -> anyhow::Result<()> {
    let bed = Bed::new(tb, "http-actions")?;
    let applied = bed.apply(RULES, vec![PORT])?;
    ensure!(applied.status_code == 200, "{applied:?}");
    ensure!(
        applied.instance > 0 && !applied.instance_uid.is_empty(),
        "{applied:?}"
    );

    let aborted = bed.fetch("/abort.html")?;
    ensure!(
        !aborted.ok && !aborted.text.contains("abort body"),
        "abort: {}",
        aborted.text
    );
    let slow = bed.fetch("/slow.html")?;
    ensure!(slow.ok && slow.text.contains("slow body"), "{}", slow.text);
    ensure!(
        slow.took >= Duration::from_millis(400),
        "delay: {:?}",
        slow.took
    );
    let replaced = bed.fetch("/replace.html")?;
    ensure!(
        !replaced.ok && replaced.text.contains("503"),
        "replace: {}",
        replaced.text
    );
    let patched = bed.fetch("/patch.html")?;
    ensure!(
        patched.ok
            && patched
                .text
                .to_ascii_lowercase()
                .contains("x-chaos: patched"),
        "patch: {}",
        patched.text
    );
    // Unselected paths are untouched.
    let plain = bed.fetch("/index.html")?;
    ensure!(
        plain.ok && plain.text.contains("index body"),
        "{}",
        plain.text
    );
    ensure!(
        !plain.text.to_ascii_lowercase().contains("x-chaos"),
        "{}",
        plain.text
    );

    // Rules change live: the same experiment, the abort gone.
    let only_patch = r#"[{"target": "Response", "selector": {"path": "/patch.html"}, "actions": {"patch": {"headers": [["X-Chaos", "patched"]]}}}]"#;
    let again = bed.apply(only_patch, vec![PORT])?;
    ensure!(again.instance_uid == applied.instance_uid, "{again:?}");
    ensure!(
        bed.fetch("/abort.html")?.ok,
        "the abort rule outlived its update"
    );

    // Chaos Mesh removes with no rules and no ports.
    let removed = bed.apply("", vec![])?;
    ensure!(removed.status_code == 200, "{removed:?}");
    ensure!(
        !std::path::Path::new(&format!("/proc/{}", applied.instance)).exists(),
        "the proxy outlived the removal"
    );
    bed.expect_direct()?;
    bed.remove(tb)
}

fn proxy_and_agent_die(tb: &Testbed) -> anyhow::Result<()> {
    let mut bed = Bed::new(tb, "http-die")?;
    let applied = bed.apply(RULES, vec![PORT])?;
    ensure!(!bed.fetch("/abort.html")?.ok);
    // The proxy (started by this story's agent) killed by its PID: traffic flows within 1 s.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(applied.instance as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    ensure!(
        eventually(Duration::from_secs(1), || redirect_rules(&bed.server)
            .is_ok_and(|r| r.is_empty())),
        "the redirect outlived its proxy by more than a second"
    );
    bed.expect_direct()?;

    // Agent SIGKILL: the proxy keeps serving the experiment; the restart recovers.
    let applied = bed.apply(RULES, vec![PORT])?;
    bed.agent.kill()?;
    ensure!(
        std::path::Path::new(&format!("/proc/{}", applied.instance)).exists(),
        "the proxy died with the agent"
    );
    ensure!(
        !bed.fetch("/abort.html")?.ok,
        "the experiment ended with the agent"
    );
    bed.agent.spawn()?;
    ensure!(
        eventually(Duration::from_secs(5), || !std::path::Path::new(&format!(
            "/proc/{}",
            applied.instance
        ))
        .exists()),
        "the restarted agent left the proxy running"
    );
    bed.expect_direct()?;
    bed.remove(tb)
}

fn cli(tb: &Testbed) -> anyhow::Result<()> {
    let bed = Bed::new(tb, "http-cli")?;
    let out = bed.agent.cli(&[
        "attack",
        "http",
        "--container",
        &bed.server.container_uri(),
        "--port",
        "8080",
        "--path",
        "/abort.html",
        "--abort",
        "--duration",
        "3s",
    ])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        !bed.fetch("/abort.html")?.ok,
        "the CLI's abort is not in force"
    );
    ensure!(bed.fetch("/index.html")?.ok);
    ensure!(
        eventually(Duration::from_secs(10), || redirect_rules(&bed.server)
            .is_ok_and(|r| r.is_empty())),
        "the experiment did not end after its duration"
    );
    bed.expect_direct()?;
    // A bad flag is named before anything is sent.
    let out = bed.agent.cli(&[
        "attack",
        "http",
        "--container",
        &bed.server.container_uri(),
        "--port",
        "8080",
        "--delay",
        "10",
    ])?;
    ensure!(!out.status.success());
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("rules[0].actions.delay"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bed.remove(tb)
}

fn aborted(f: &Fetched) -> bool {
    !f.ok && !f.text.contains("abort body")
}

fn patched(f: &Fetched) -> bool {
    f.ok && f.text.to_ascii_lowercase().contains("x-chaos: patched")
}

/// Two experiments on one pod, on different paths, through our own API: one proxy serves both
/// and a client in another pod sees both; one recovered, only the other applies; both
/// recovered, the server is reached directly with no redirect left.
fn two_experiments(tb: &Testbed) -> anyhow::Result<()> {
    let bed = Bed::new(tb, "http-two")?;
    let abort = bed.start(
        r#"[{"target": "Request", "selector": {"port": 8080, "path": "/abort.html"}, "actions": {"abort": true}}]"#,
    )?;
    let patch = bed.start(
        r#"[{"target": "Response", "selector": {"port": 8080, "path": "/patch.html"}, "actions": {"patch": {"headers": [["X-Chaos", "patched"]]}}}]"#,
    )?;
    ensure!(
        !abort.id.is_empty() && !patch.id.is_empty() && abort.id != patch.id,
        "{abort:?} {patch:?}"
    );
    ensure!(
        abort.proxy_pid == patch.proxy_pid,
        "one proxy per pod: {abort:?} {patch:?}"
    );
    let a = bed.fetch("/abort.html")?;
    ensure!(
        aborted(&a),
        "the first experiment is not in force: {}",
        a.text
    );
    let p = bed.fetch("/patch.html")?;
    ensure!(
        patched(&p),
        "the second experiment is not in force: {}",
        p.text
    );
    let plain = bed.fetch("/index.html")?;
    ensure!(
        plain.ok && !plain.text.to_ascii_lowercase().contains("x-chaos"),
        "{}",
        plain.text
    );

    let recovered = bed.recover(&abort.id)?;
    ensure!(
        recovered.recovered == [abort.id.clone()] && recovered.problems.is_empty(),
        "{recovered:?}"
    );
    let a = bed.fetch("/abort.html")?;
    ensure!(
        a.ok && a.text.contains("abort body"),
        "the recovered experiment still applies: {}",
        a.text
    );
    let p = bed.fetch("/patch.html")?;
    ensure!(patched(&p), "the other experiment ended too: {}", p.text);
    ensure!(
        std::path::Path::new(&format!("/proc/{}", patch.proxy_pid)).exists(),
        "the proxy ended with one of two experiments"
    );
    ensure!(
        !redirect_rules(&bed.server)?.is_empty(),
        "the redirect went with the first experiment"
    );

    bed.recover(&patch.id)?;
    ensure!(
        !std::path::Path::new(&format!("/proc/{}", patch.proxy_pid)).exists(),
        "the proxy outlived the last experiment"
    );
    bed.expect_direct()?;
    bed.remove(tb)
}

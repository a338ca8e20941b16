//! The bodies of the fuzz targets: one function per parser of outside input, taking raw bytes.
//! The libFuzzer binaries in `fuzz_targets/` call them; so does the workspace test
//! `tests/tests/fuzz_regressions.rs`, which replays every kept input (corpus and regressions)
//! on the stable toolchain in CI. A body returns normally on any input: bad input is a named
//! error, and the asserts state what must hold on the way.

use std::path::Path;
use std::sync::{Arc, OnceLock};

/// A target's body: any bytes in, a normal return out.
pub type Body = fn(&[u8]);

/// The names of the targets, as `fuzz_targets/NAME.rs` and the input directories name them.
pub const TARGETS: &[(&str, Body)] = &[
    ("io_actions", io_actions),
    ("io_request", io_request),
    ("injector_jsonrpc_lines", injector_jsonrpc_lines),
    ("injector_mountinfo", injector_mountinfo),
    ("network_requests", network_requests),
    ("stress_options", stress_options),
    ("netlink_replies", netlink_replies),
    ("go_template", go_template),
    ("webhook_review", webhook_review),
    ("handover_proc", handover_proc),
    ("time_request", time_request),
    ("http_rules", http_rules),
    ("dns_query", dns_query),
    ("resolv_conf", resolv_conf),
    ("controller_plan", controller_plan),
    ("sidecar_command_line", sidecar_command_line),
];

/// Two inputs from one: split at the first NUL byte (the second is empty without one).
fn two(data: &[u8]) -> (String, String) {
    let (a, b) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    (
        String::from_utf8_lossy(a).into_owned(),
        String::from_utf8_lossy(b).into_owned(),
    )
}

/// Two inputs from one, as bytes: split at the first NUL byte.
fn two_bytes(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    }
}

/// IOChaos actions JSON, as ApplyIOChaos and the injector's `update` receive it: a rule set or a
/// named error; a parsed set goes into the live store.
pub fn io_actions(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(rules) = io_rules::RuleSet::parse(text, Path::new("/data")) {
        io_rules::RuleStore::new("/data").update(rules);
    }
}

/// The agent's validation of an ApplyIOChaos request: a volume path, then the actions against it.
pub fn io_request(data: &[u8]) {
    let (volume, actions) = two(data);
    if agent::container_fs::validate_volume_path(&volume).is_ok() {
        let _ = agent::io_chaos::validate_actions(&actions, &volume);
    }
}

struct Mounted;

impl injector::control::FsStatus for Mounted {
    fn mounted(&self) -> bool {
        true
    }
    fn open_passthrough_files(&self) -> Vec<String> {
        Vec::new()
    }
    fn file_io(&self) -> injector::fs::FileIo {
        injector::fs::FileIo::Reachable
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

/// The injector's control channel: JSON-RPC 2.0, one request per line, from whoever holds the
/// socket; every line answered or refused.
pub fn injector_jsonrpc_lines(data: &[u8]) {
    use injector::control::{ControlContext, ControlPlane};
    let rules = Arc::new(io_rules::RuleStore::new("/data"));
    let context = ControlContext::new(rules, Arc::new(Mounted));
    let Ok(plane) = ControlPlane::new(context) else {
        return;
    };
    let mut out = Vec::new();
    let _ = runtime().block_on(plane.serve_lines(data, &mut out));
}

/// /proc/PID/mountinfo as the injector reads it (whose mount is where, is it ours).
pub fn injector_mountinfo(data: &[u8]) {
    let _ = injector::mount::parse_mountinfo(&String::from_utf8_lossy(data));
}

/// Chaos Mesh's network requests (SetTcs, FlushIPSets, SetIptablesChains) off the wire: decoded,
/// validated into specs, rendered into iptables and ipset input; nothing rendered may carry a
/// line break or a command we did not mean.
pub fn network_requests(data: &[u8]) {
    use agent::network::spec::{self, NetworkSpec};
    use faultline_proto::pb;
    use prost::Message;
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let spec = match which % 3 {
        0 => pb::TcsRequest::decode(bytes)
            .ok()
            .and_then(|r| spec::tcs_from_pb(&r.tcs).ok())
            .map(|tcs| NetworkSpec {
                tcs,
                ..NetworkSpec::default()
            }),
        1 => pb::IpSetsRequest::decode(bytes)
            .ok()
            .and_then(|r| spec::ipsets_from_pb(&r.ipsets).ok())
            .map(|ipsets| NetworkSpec {
                ipsets,
                ..NetworkSpec::default()
            }),
        _ => pb::IptablesChainsRequest::decode(bytes)
            .ok()
            .and_then(|r| spec::chains_from_pb(&r.chains).ok())
            .map(|chains| NetworkSpec {
                chains,
                ..NetworkSpec::default()
            }),
    };
    let Some(spec) = spec else { return };
    let _ = spec.summary();
    let _ = spec.check_set_references(&Default::default());
    for tc in &spec.tcs {
        for arg in tc.filter.iptables_match() {
            assert!(
                !arg.contains('\n'),
                "a line break in an iptables argument: {arg:?}"
            );
        }
    }
    for chain in &spec.chains {
        assert!(
            !chain.target.contains('\n') && !chain.name.contains('\n'),
            "a line break in a chain: {chain:?}"
        );
    }
    for set in &spec.ipsets {
        let input = agent::network::ipset::restore_input(set);
        for line in input.lines() {
            let verb = line.split(' ').next().unwrap_or_default();
            assert!(
                ["create", "flush", "add", "swap", "destroy"].contains(&verb),
                "an ipset restore line we did not mean: {line:?}"
            );
        }
    }
}

/// StressChaos option strings as ExecStressors receives them (Chaos Mesh's Normalize prefix and
/// the user's options): CPU and memory stressors parsed, or the option named.
pub fn stress_options(data: &[u8]) {
    use agent::stress::options::{CpuSpec, MemorySpec};
    let (cpu, memory) = two(data);
    let _ = CpuSpec::parse(&cpu, 2);
    let _ = MemorySpec::parse(&memory, 2);
}

/// What the kernel answers over netlink, as our parsers read it: datagrams split into
/// messages, errors, qdisc dumps, attributes.
pub fn netlink_replies(data: &[u8]) {
    if let Ok(messages) = netlink::message::split_messages(data) {
        for (header, payload) in messages {
            let _ = netlink::message::parse_error(header.flags, payload);
            let _ = netlink::tc::QdiscInfo::parse(payload);
        }
    }
    if let Ok(attrs) = netlink::parse_attrs(data) {
        for attr in attrs {
            let _ = attr.u32();
            let _ = attr.string();
        }
    }
}

/// The webhook's Go-template engine: a template from a ConfigMap and the arguments a pod's
/// annotations select, both written by users; compiled and rendered, or a named error.
pub fn go_template(data: &[u8]) {
    use controller::webhook::template::{GoTemplates, TemplateEngine};
    let (source, arguments) = two(data);
    let Ok(template) = GoTemplates.compile("fuzz", &source) else {
        return;
    };
    let arguments = serde_json::from_str(&arguments).unwrap_or(serde_json::Value::Null);
    let _ = template.render(&arguments);
}

fn webhook() -> &'static controller::webhook::Webhook {
    use controller::webhook::template::GoTemplates;
    use controller::webhook::{Settings, sources};
    static HOOK: OnceLock<controller::webhook::Webhook> = OnceLock::new();
    HOOK.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/sidecar");
        sources::offline(&GoTemplates, Settings::default(), &dir).expect("the example catalog")
    })
}

/// The mutating webhook's AdmissionReview handling: any body is answered or refused as a bad
/// review. The catalog is the sidecar templates of docs/examples/sidecar.
pub fn webhook_review(data: &[u8]) {
    let _ = webhook().review(data);
}

/// The handover's /proc parsers: maps lines and the mount table of a process in a pod, which
/// the pod's own processes shape (their paths appear there).
pub fn handover_proc(data: &[u8]) {
    let (maps, mountinfo) = two(data);
    for line in maps.lines() {
        let _ = handover::scan::parse_map_line(line);
    }
    let proc = handover::proc_source::FixtureProc::default().file("7/mountinfo", &mountinfo);
    let _ = handover::scan::find_fault_mount(&proc, 7, Path::new("/data"), handover::FAULT_FSTYPE);
}

/// TimeChaos requests: Chaos Mesh's SetTimeOffset off the wire, our API's Go-duration offset and
/// clock names; a spec or a named error, and what parses survives the trip to the wire intact.
pub fn time_request(data: &[u8]) {
    use prost::Message;
    use timeshift::clock::{ClockMask, Offset};
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            if let Ok(request) = faultline_proto::pb::TimeRequest::decode(bytes) {
                let _ = agent::time_chaos::spec::TimeSpec::from_chaos_daemon(&request);
            }
        }
        1 => {
            if let Ok(offset) = Offset::parse_go(&String::from_utf8_lossy(bytes)) {
                assert_eq!(Offset::new(offset.sec, offset.nsec).ok(), Some(offset));
                assert!((0..1_000_000_000).contains(&offset.nsec), "{offset:?}");
            }
        }
        _ => {
            let text = String::from_utf8_lossy(bytes);
            let names: Vec<&str> = text.split(',').collect();
            if let Ok(mask) = ClockMask::from_names(&names) {
                assert_eq!(ClockMask::from_wire(mask.0).ok(), Some(mask));
            }
        }
    }
}

/// ApplyHttpChaos's rules JSON (and its TLS field): parsed into rules or a named error; every
/// parsed rule then selects, rewrites and patches a request and a response, and changes a
/// body, without a panic (the proxy does this to every request the pod gets).
pub fn http_rules(data: &[u8]) {
    use http_chaos::engine::{apply_to_request, apply_to_response, change_body, fix_length};
    use http_chaos::spec::HttpChaosSpec;
    let (rules, rest) = two(data);
    let (tls, body) = two(rest.as_bytes());
    let Ok(spec) = HttpChaosSpec::parse(&rules, &[80, 8080], &tls) else {
        return;
    };
    let request = || {
        http::Request::builder()
            .method("POST")
            .uri("/api/v1/items?id=7&x=%20y")
            .header("content-type", "application/json")
            .header("x-user", "fuzz")
            .body(())
            .map(|r| r.into_parts().0)
            .expect("a fixed request")
    };
    let response = || {
        http::Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(())
            .map(|r| r.into_parts().0)
            .expect("a fixed response")
    };
    for rule in &spec.rules {
        let mut head = request();
        let _ = rule.selects_request(80, &head);
        apply_to_request(&rule.action, &mut head);
        let mut answer = response();
        let _ = rule.selects_response(8080, &request(), &answer);
        apply_to_response(&rule.action, &mut answer);
        if let Some(changed) = change_body(&rule.action.body, body.as_bytes()) {
            fix_length(&mut answer.headers, changed.len());
        }
    }
}

/// Addresses handed out for `random` answers: a counter, so a run is repeatable.
struct Counting(u32);

impl dns_responder::answer::AddressSource for Counting {
    fn ipv4(&mut self) -> std::net::Ipv4Addr {
        self.0 = self.0.wrapping_add(1);
        std::net::Ipv4Addr::from(self.0)
    }
    fn ipv6(&mut self) -> std::net::Ipv6Addr {
        self.0 = self.0.wrapping_add(1);
        std::net::Ipv6Addr::from(u128::from(self.0))
    }
}

/// The DNS responder: DNSChaos patterns (one per line) and any datagram a pod sends to port 53;
/// a query is answered (with its own id) or relayed, never a panic.
pub fn dns_query(data: &[u8]) {
    use dns_responder::answer::{Decision, decide};
    use dns_responder::spec::ResponderSpec;
    let (patterns, packet) = two_bytes(data);
    let patterns = String::from_utf8_lossy(patterns);
    let patterns: Vec<&str> = patterns.lines().filter(|l| !l.is_empty()).collect();
    for action in ["error", "random"] {
        let Ok(spec) = ResponderSpec::parse(action, &patterns) else {
            return;
        };
        if let Decision::Answer(answer) = decide(&spec, packet, &mut Counting(0)) {
            assert!(
                answer.len() >= 12 && answer[..2] == packet[..2],
                "an answer without the query's id"
            );
        }
    }
}

/// A container's /etc/resolv.conf as SetDNSServer rewrites it: afterwards every nameserver a
/// resolver reads is ours, and the file keeps its line count.
pub fn resolv_conf(data: &[u8]) {
    use agent::dns::resolv_conf::{nameservers, point_at};
    let ours = std::net::IpAddr::from([10, 96, 0, 53]);
    let pointed = point_at(data, ours);
    assert!(
        nameservers(&pointed).iter().all(|server| *server == ours),
        "a nameserver left in place: {:?}",
        nameservers(&pointed)
    );
    assert_eq!(
        pointed.split(|&b| b == b'\n').count(),
        data.split(|&b| b == b'\n').count()
    );
}

fn cluster() -> &'static controller::selection::ClusterState {
    static CLUSTER: OnceLock<controller::selection::ClusterState> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../controller/tests/plan/cluster.yaml");
        let text = std::fs::read_to_string(path).expect("the plan tests' cluster");
        controller::selection::ClusterState::from_yaml(&text).expect("a cluster state")
    })
}

/// `faultline-controller plan` on manifests a user wrote (any kind: the chaos kinds, Schedule,
/// Workflow, StatusCheck), against a saved cluster: a verdict per object or a named error.
pub fn controller_plan(data: &[u8]) {
    use controller::plan::preview;
    use controller::selection::Scoping;
    use rand::SeedableRng;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(objects) = preview::documents(text) else {
        return;
    };
    let scoping = Scoping {
        cluster_scoped: true,
        target_namespace: String::new(),
        filter_namespaces: false,
    };
    let now = "2026-12-07T12:00:00Z"
        .parse::<k8s_openapi::jiff::Timestamp>()
        .expect("a fixed time");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for object in objects.iter().take(16) {
        let _ = runtime().block_on(preview::preview(cluster(), &scoping, object, now, &mut rng));
    }
}

/// A sidecar template's command line, written for chaosfs (Go flags), and its listen address:
/// translated for our parser, or refused with a reason.
pub fn sidecar_command_line(data: &[u8]) {
    use injector::sidecar::{go_flags, listen_addr};
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    let args: Vec<OsString> = data
        .split(|&b| b == 0)
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    let translated = go_flags::translate(args.clone());
    assert!(translated.len() <= args.len() + 1, "{translated:?}");
    for arg in &args {
        let _ = listen_addr::parse_listen_addr(&arg.to_string_lossy());
    }
}

//! NetworkChaos spec -> the network state the agent keeps in each pod (`StartNetworkExperiment`:
//! tc rules, ipsets, iptables chains), built as Chaos Mesh's controller builds its
//! PodNetworkChaos: on the selected pods (`.`) for direction to/both, on the target pods
//! (`.Target`) for from/both; netem/tbf rules filtered through an ipset of the peers' addresses
//! when a `target` or `externalTargets` is given, DROP chains for a partition. Several
//! experiments on one pod are merged into one state ([`PodNetworkState::merge`]).

use std::net::IpAddr;

use faultline_proto::pb;

use super::{Action, InvalidSpec, Plan, Scope, Selection};
use crate::crd::{Direction, NetworkAction, NetworkChaosSpec, PodSelectorSpec};
use crate::plan::Mode;

/// What one NetworkChaos does to each of its targets, less the peers' addresses (known once the
/// pods are selected).
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkPlan {
    pub fault: NetworkFault,
    pub direction: Direction,
    /// The selected pods' device ("" = eth0).
    pub device: String,
    /// The target pods' device, for the rules Chaos Mesh puts on the target side.
    pub target_device: String,
    /// The target pods (records with selector key `.Target`).
    pub target: Option<(PodSelectorSpec, Mode)>,
    /// From `externalTargets`.
    pub external: Vec<External>,
    /// Names the experiment's ipsets and chains.
    pub hash: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum NetworkFault {
    /// netem or tbf, one rule (its ipset filled in per side).
    Tc(Box<pb::Tc>),
    Partition,
}

/// One `externalTargets` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum External {
    /// An IPv4 CIDR (an address is /32).
    Cidr(String),
    /// A host name, resolved by the controller when the targets are selected.
    Host(String),
    /// `host:port` or `ip:port`: only traffic to that port.
    WithPort { host: String, port: u16 },
}

/// The addresses the rules filter by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peers {
    /// The target pods' and external targets' CIDRs.
    pub targets: Vec<String>,
    /// External targets with a port: (CIDR, port).
    pub target_ports: Vec<(String, u16)>,
    /// The selected pods' CIDRs (the filter of the rules on the target side).
    pub sources: Vec<String>,
}

/// The pod network state for one side of one experiment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodNetworkState {
    pub tcs: Vec<pb::Tc>,
    pub ipsets: Vec<pb::IpSet>,
    pub chains: Vec<pb::Chain>,
}

impl PodNetworkState {
    pub fn is_empty(&self) -> bool {
        self.tcs.is_empty() && self.ipsets.is_empty() && self.chains.is_empty()
    }

    /// Adds another experiment's state (Chaos Mesh's PodNetworkChaos merge: every experiment's
    /// rules side by side).
    pub fn merge(&mut self, other: PodNetworkState) {
        self.tcs.extend(other.tcs);
        self.ipsets.extend(other.ipsets);
        self.chains.extend(other.chains);
    }
}

impl NetworkPlan {
    /// Whether traffic is filtered by peer: a target or external targets were given.
    fn filtered(&self) -> bool {
        self.target.is_some() || !self.external.is_empty()
    }

    /// The state this experiment puts on a pod it selected with `selector_key`; empty when that
    /// side has nothing to do (Chaos Mesh's traffic control and partition Apply).
    pub fn state(&self, selector_key: &str, peers: &Peers) -> PodNetworkState {
        let mut state = PodNetworkState::default();
        let to = matches!(self.direction, Direction::To | Direction::Both);
        let from = matches!(self.direction, Direction::From | Direction::Both);
        let h = &self.hash;
        let source_side = selector_key != TARGET_KEY;
        let (set, device) = if source_side {
            let set = self.filtered().then(|| {
                ipsets(
                    &mut state.ipsets,
                    &format!("fl-{h}-tgt"),
                    &peers.targets,
                    &peers.target_ports,
                )
            });
            (set, self.device.clone())
        } else {
            let set = ipsets(
                &mut state.ipsets,
                &format!("fl-{h}-src"),
                &peers.sources,
                &[],
            );
            (Some(set), self.target_device.clone())
        };
        let chain = |name: String, direction: pb::chain::Direction| pb::Chain {
            name,
            direction: direction as i32,
            ipsets: set.iter().cloned().collect(),
            target: "DROP".into(),
            device: device.clone(),
            ..Default::default()
        };
        match &self.fault {
            NetworkFault::Tc(tc) => {
                if (source_side && to) || (!source_side && from) {
                    state.tcs.push(pb::Tc {
                        ipset: set.clone().unwrap_or_default(),
                        device: device.clone(),
                        ..(**tc).clone()
                    });
                }
            }
            NetworkFault::Partition if source_side => {
                if to {
                    state
                        .chains
                        .push(chain(format!("FL-OUT-{h}"), pb::chain::Direction::Output));
                }
                if from {
                    state
                        .chains
                        .push(chain(format!("FL-IN-{h}"), pb::chain::Direction::Input));
                }
            }
            NetworkFault::Partition => {
                if from {
                    state
                        .chains
                        .push(chain(format!("FL-TOUT-{h}"), pb::chain::Direction::Output));
                }
                if to {
                    state
                        .chains
                        .push(chain(format!("FL-TIN-{h}"), pb::chain::Direction::Input));
                }
            }
        }
        if state.tcs.is_empty() && state.chains.is_empty() {
            return PodNetworkState::default();
        }
        state
    }
}

/// The selector key of NetworkChaos's target pods.
pub const TARGET_KEY: &str = ".Target";

/// The ipsets for a list of CIDRs and (CIDR, port) pairs: one hash:net set, or, with ports, a
/// hash:net and a hash:net,port set joined by a list:set (as Chaos Mesh builds them). Returns
/// the name to filter by.
fn ipsets(
    out: &mut Vec<pb::IpSet>,
    name: &str,
    cidrs: &[String],
    ports: &[(String, u16)],
) -> String {
    if ports.is_empty() {
        out.push(pb::IpSet {
            name: name.to_owned(),
            cidrs: cidrs.to_vec(),
            r#type: "hash:net".into(),
            ..Default::default()
        });
        return name.to_owned();
    }
    let nets = format!("{name}n");
    let net_ports = format!("{name}p");
    out.push(pb::IpSet {
        name: nets.clone(),
        cidrs: cidrs.to_vec(),
        r#type: "hash:net".into(),
        ..Default::default()
    });
    out.push(pb::IpSet {
        name: net_ports.clone(),
        cidr_and_ports: ports
            .iter()
            .map(|(cidr, port)| pb::CidrAndPort {
                cidr: cidr.clone(),
                port: u32::from(*port),
            })
            .collect(),
        r#type: "hash:net,port".into(),
        ..Default::default()
    });
    out.push(pb::IpSet {
        name: name.to_owned(),
        set_names: vec![nets, net_ports],
        r#type: "list:set".into(),
        ..Default::default()
    });
    name.to_owned()
}

/// The request for one pod: its whole network state (the merge of every experiment on it).
pub fn network_request(
    state: &PodNetworkState,
    container_id: &str,
    pod_uid: &str,
    duration_ms: u64,
) -> faultline_proto::agent::v1::StartNetworkExperimentRequest {
    faultline_proto::agent::v1::StartNetworkExperimentRequest {
        container_id: container_id.to_owned(),
        pod_uid: pod_uid.to_owned(),
        tcs: state.tcs.clone(),
        ipsets: state.ipsets.clone(),
        chains: state.chains.clone(),
        duration_ms,
        dry_run: false,
        netem_path: String::new(),
        tc_ports: Vec::new(),
    }
}

/// A short name for the experiment's ipset and chains (ipset names: 31 characters, chains 28).
pub fn short_name(namespace: &str, name: &str) -> String {
    // FNV-1a: stable across versions and processes, unlike std's hasher.
    let mut hash: u32 = 0x811c_9dc5;
    for b in namespace.bytes().chain([b'/']).chain(name.bytes()) {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{hash:08x}")
}

pub(super) fn plan(
    spec: &NetworkChaosSpec,
    namespace: &str,
    name: &str,
) -> Result<Plan, InvalidSpec> {
    let mut problems = InvalidSpec::default();
    super::remote_cluster(&mut problems, spec.remote_cluster.as_deref());
    let selection = super::common(&mut problems, &spec.pod_selector, "", namespace);
    let duration = super::duration(&mut problems, spec.duration.as_deref());
    let device = spec.device.clone().unwrap_or_default();
    // Chaos Mesh's default: `eth0@if12` names the device eth0.
    let device = device.split('@').next().unwrap_or_default().to_owned();
    let target_device = spec.target_device.clone().unwrap_or_default();
    for (field, dev) in [("device", &device), ("targetDevice", &target_device)] {
        if !dev.is_empty()
            && (dev.len() > 15
                || !dev
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        {
            problems.invalid(field, format!("{dev:?} is not a network device name"));
        }
    }

    let target = spec.target.as_ref().and_then(|t| {
        let before = problems.problems.len();
        let parsed = super::common(&mut problems, t, "target.", namespace);
        (problems.problems.len() == before)
            .then_some(parsed)
            .flatten()
    });
    let mut external = Vec::new();
    for (i, t) in spec.external_targets.iter().enumerate() {
        match external_target(t) {
            Ok(e) => external.push(e),
            Err(p) => problems.invalid(format!("externalTargets[{i}]"), p),
        }
    }
    let direction = spec.direction.unwrap_or(Direction::To);
    // Chaos Mesh (NetworkChaosSpec.Validate): a partition takes any direction, with or without
    // targets; traffic control with from or both needs `target` and no externalTargets (the
    // rules for the other way go on the target pods).
    if spec.action != NetworkAction::Partition && direction != Direction::To {
        if !spec.external_targets.is_empty() {
            problems.invalid(
                "direction",
                "external targets cannot be used with `from` and `both` direction in netem action yet",
            );
        }
        if spec.target.is_none() {
            problems.invalid(
                "direction",
                "`from` and `both` direction cannot be used when targets is empty in netem action",
            );
        }
    }

    let fault = match spec.action {
        NetworkAction::Partition => Some(NetworkFault::Partition),
        NetworkAction::Bandwidth => match &spec.bandwidth {
            None => {
                problems.invalid("bandwidth", "required for action bandwidth");
                None
            }
            Some(b) => {
                if let Err(p) = rate(&b.rate) {
                    problems.invalid("bandwidth.rate", p);
                }
                Some(NetworkFault::Tc(Box::new(pb::Tc {
                    r#type: pb::tc::Type::Bandwidth as i32,
                    tbf: Some(pb::Tbf {
                        rate: b.rate.clone(),
                        limit: b.limit,
                        buffer: b.buffer,
                        peak_rate: b.peakrate.unwrap_or(0),
                        min_burst: b.minburst.unwrap_or(0),
                    }),
                    ..Default::default()
                })))
            }
        },
        action => netem(&mut problems, spec, action).map(|mut netem| {
            if let Some(r) = &spec.rate {
                if let Err(p) = rate(&r.rate) {
                    problems.invalid("rate.rate", p);
                }
                netem.rate = r.rate.clone();
            }
            NetworkFault::Tc(Box::new(pb::Tc {
                r#type: pb::tc::Type::Netem as i32,
                netem: Some(netem),
                ..Default::default()
            }))
        }),
    };

    let plan = selection.zip(fault).map(|((selector, mode), fault)| Plan {
        selection: Selection {
            selector,
            mode,
            scope: Scope::Pod,
        },
        duration,
        action: Action::Network(Box::new(NetworkPlan {
            fault,
            direction,
            device,
            target_device,
            target,
            external,
            hash: short_name(namespace, name),
        })),
    });
    problems.finish(plan)
}

/// Chaos Mesh's rate syntax: a whole number with one of its units (kbit, mbit, gbit, tbit,
/// tbps, gbps, mbps, kbps, bps, bit), case-insensitive.
fn rate(text: &str) -> Result<(), String> {
    let s = text.trim().to_ascii_lowercase();
    for unit in [
        "kbit", "mbit", "gbit", "tbit", "tbps", "gbps", "mbps", "kbps", "bps", "bit",
    ] {
        if let Some(number) = s.strip_suffix(unit) {
            return number.trim().parse::<u64>().map(|_| ()).map_err(|_| {
                format!("parse rate field error: {text:?} is not a whole number of {unit}")
            });
        }
    }
    Err(format!(
        "parse rate field error: {text:?}: invalid unit (kbit, mbit, gbit, tbit, bit, bps, kbps, mbps, gbps, tbps)"
    ))
}

/// An `externalTargets` entry as Chaos Mesh reads it (netutils.ResolveCidr): `host:port`, an
/// IPv4 CIDR, an IP, or a host name (resolved by the controller).
fn external_target(text: &str) -> Result<External, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty".into());
    }
    if let Some((host, port)) = text.rsplit_once(':')
        && !host.contains(':')
    {
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("{text:?}: the port {port:?} is not 0-65535"))?;
        host_or_cidr(host)?;
        return Ok(External::WithPort {
            host: host.to_owned(),
            port,
        });
    }
    host_or_cidr(text)
}

fn host_or_cidr(text: &str) -> Result<External, String> {
    if text.contains('/') || text.parse::<IpAddr>().is_ok() {
        return cidr(text).map(External::Cidr);
    }
    let host_name = text.len() <= 253
        && text.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if host_name {
        Ok(External::Host(text.to_owned()))
    } else {
        Err(format!(
            "{text:?}: an IPv4 address, a CIDR, a host name, or one of them with :port"
        ))
    }
}

/// An IP or CIDR (IPv4, as the agent's ipsets are).
fn cidr(text: &str) -> Result<String, String> {
    let (ip, prefix) = match text.split_once('/') {
        Some((ip, prefix)) => (ip, Some(prefix)),
        None => (text, None),
    };
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => {}
        Ok(IpAddr::V6(_)) => return Err(format!("{text:?}: IPv6 peers are not supported")),
        Err(_) => return Err(format!("{text:?}: not an IPv4 address or CIDR")),
    }
    match prefix {
        None => Ok(format!("{ip}/32")),
        Some(p) if p.parse::<u8>().is_ok_and(|p| p <= 32) => Ok(text.to_owned()),
        Some(p) => Err(format!("{text:?}: /{p} is not a prefix length 0-32")),
    }
}

/// Chaos Mesh's netem merge: each block present (or the one the action names) contributes.
fn netem(
    problems: &mut InvalidSpec,
    spec: &NetworkChaosSpec,
    action: NetworkAction,
) -> Option<pb::Netem> {
    let mut netem = pb::Netem::default();
    let mut any = false;
    let wants = |block: NetworkAction| action == NetworkAction::Netem || action == block;
    let need = |problems: &mut InvalidSpec, present: bool, field: &str| {
        if !present && action != NetworkAction::Netem {
            problems.invalid(field, format!("required for action {}", action.as_str()));
        }
    };
    need(
        problems,
        spec.delay.is_some() || !wants(NetworkAction::Delay),
        "delay",
    );
    need(
        problems,
        spec.loss.is_some() || !wants(NetworkAction::Loss),
        "loss",
    );
    need(
        problems,
        spec.duplicate.is_some() || !wants(NetworkAction::Duplicate),
        "duplicate",
    );
    need(
        problems,
        spec.corrupt.is_some() || !wants(NetworkAction::Corrupt),
        "corrupt",
    );

    if let Some(d) = spec.delay.as_ref().filter(|_| wants(NetworkAction::Delay)) {
        any = true;
        netem.time = micros(problems, "delay.latency", &d.latency);
        if let Some(j) = d.jitter.as_deref().filter(|j| !j.is_empty()) {
            netem.jitter = micros(problems, "delay.jitter", j);
        }
        netem.delay_corr = percent(problems, "delay.correlation", d.correlation.as_deref());
        if let Some(r) = &d.reorder {
            netem.reorder = percent(problems, "delay.reorder.reorder", Some(&r.reorder));
            netem.reorder_corr = percent(
                problems,
                "delay.reorder.correlation",
                r.correlation.as_deref(),
            );
            netem.gap = u32::try_from(r.gap).unwrap_or(0);
        }
    }
    if let Some(l) = spec.loss.as_ref().filter(|_| wants(NetworkAction::Loss)) {
        any = true;
        netem.loss = percent(problems, "loss.loss", Some(&l.loss));
        netem.loss_corr = percent(problems, "loss.correlation", l.correlation.as_deref());
    }
    if let Some(d) = spec
        .duplicate
        .as_ref()
        .filter(|_| wants(NetworkAction::Duplicate))
    {
        any = true;
        netem.duplicate = percent(problems, "duplicate.duplicate", Some(&d.duplicate));
        netem.duplicate_corr = percent(problems, "duplicate.correlation", d.correlation.as_deref());
    }
    if let Some(c) = spec
        .corrupt
        .as_ref()
        .filter(|_| wants(NetworkAction::Corrupt))
    {
        any = true;
        netem.corrupt = percent(problems, "corrupt.corrupt", Some(&c.corrupt));
        netem.corrupt_corr = percent(problems, "corrupt.correlation", c.correlation.as_deref());
    }
    if !any && action == NetworkAction::Netem {
        problems.invalid(
            "delay",
            "action netem needs at least one of delay, loss, duplicate, corrupt",
        );
    }
    any.then_some(netem)
}

/// A Go duration as tc's microseconds ("100ms" -> "100000us").
fn micros(problems: &mut InvalidSpec, field: &str, text: &str) -> String {
    match super::duration::parse_non_negative(text) {
        Ok(d) => format!("{}us", d.as_micros()),
        Err(p) => {
            problems.invalid(field, p);
            String::new()
        }
    }
}

/// A percentage string ("25", "0.5") as netem's float.
fn percent(problems: &mut InvalidSpec, field: &str, text: Option<&str>) -> f32 {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return 0.0;
    };
    match text.trim_end_matches('%').parse::<f32>() {
        Ok(p) if (0.0..=100.0).contains(&p) => p,
        _ => {
            problems.invalid(
                field,
                format!("{text:?} is not a percentage between 0 and 100"),
            );
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(yaml: &str) -> Result<NetworkPlan, InvalidSpec> {
        let spec: NetworkChaosSpec = yaml_serde::from_str(yaml).expect("a NetworkChaos spec");
        plan(&spec, "d", "n").map(|p| match p.action {
            Action::Network(n) => *n,
            other => panic!("{other:?}"),
        })
    }

    fn peers() -> Peers {
        Peers {
            targets: vec!["10.0.0.9/32".into()],
            target_ports: vec![],
            sources: vec!["10.0.0.7/32".into()],
        }
    }

    const TARGET: &str = "target: {mode: all, selector: {labelSelectors: {app: db}}}";

    /// Chaos Mesh (trafficcontrol Apply): direction to puts the rule on the selected pods
    /// filtered by the targets' addresses; from puts it on the target pods filtered by the
    /// selected pods' addresses (on targetDevice); both does both.
    #[test]
    fn traffic_control_sides_follow_the_direction() {
        for (direction, source_side, target_side) in [
            ("to", true, false),
            ("from", false, true),
            ("both", true, true),
        ] {
            let p = plan_of(&format!(
                "{{action: delay, mode: all, selector: {{}}, delay: {{latency: 10ms}}, direction: {direction}, targetDevice: eth1, {TARGET}}}"
            ))
            .expect("accepted");
            let here = p.state(".", &peers());
            let there = p.state(TARGET_KEY, &peers());
            assert_eq!(!here.is_empty(), source_side, "{direction}");
            assert_eq!(!there.is_empty(), target_side, "{direction}");
            if target_side {
                assert_eq!(there.ipsets[0].cidrs, ["10.0.0.7/32"]);
                assert_eq!(there.tcs[0].ipset, there.ipsets[0].name);
                assert_eq!(there.tcs[0].device, "eth1");
            }
            if source_side {
                assert_eq!(here.ipsets[0].cidrs, ["10.0.0.9/32"]);
            }
        }
    }

    /// Chaos Mesh (NetworkChaosSpec.Validate): from/both for traffic control needs a target and
    /// no externalTargets; a partition is never refused for its direction.
    #[test]
    fn direction_rules() {
        let e =
            plan_of("{action: loss, mode: all, selector: {}, loss: {loss: '5'}, direction: both}")
                .expect_err("both without a target");
        assert_eq!(e.problems[0].field, "direction");
        let e = plan_of(&format!(
            "{{action: loss, mode: all, selector: {{}}, loss: {{loss: '5'}}, direction: from, externalTargets: [1.2.3.4], {TARGET}}}"
        ))
        .expect_err("from with externalTargets");
        assert!(e.problems[0].problem.contains("external targets"));
        plan_of("{action: partition, mode: all, selector: {}, direction: both}")
            .expect("a partition in both directions without targets");
        plan_of("{action: bandwidth, mode: all, selector: {}, direction: to, bandwidth: {rate: 1mbps, limit: 100, buffer: 100}}")
            .expect("bandwidth");
    }

    /// Chaos Mesh (partition SetDrop): with no target and no external target the chain has no
    /// ipset, so all traffic that way is dropped.
    #[test]
    fn partition_without_target_drops_everything() {
        let p =
            plan_of("{action: partition, mode: all, selector: {}, direction: both}").expect("ok");
        let s = p.state(".", &Peers::default());
        assert_eq!(s.chains.len(), 2);
        assert!(
            s.chains
                .iter()
                .all(|c| c.ipsets.is_empty() && c.target == "DROP")
        );
        assert!(s.ipsets.is_empty());
    }

    /// Chaos Mesh (netutils.ResolveCidr): externalTargets take IPs, CIDRs, host names and
    /// host:port; ports go into a hash:net,port set joined with the nets by a list:set.
    #[test]
    fn external_targets_and_ports() {
        let p = plan_of(
            "{action: partition, mode: all, selector: {}, externalTargets: [example.com, '192.0.2.1:5432', 10.0.0.0/8, 'db.internal:80']}",
        )
        .expect("accepted");
        assert_eq!(
            p.external,
            [
                External::Host("example.com".into()),
                External::WithPort {
                    host: "192.0.2.1".into(),
                    port: 5432
                },
                External::Cidr("10.0.0.0/8".into()),
                External::WithPort {
                    host: "db.internal".into(),
                    port: 80
                },
            ]
        );
        let peers = Peers {
            targets: vec!["10.0.0.0/8".into()],
            target_ports: vec![("192.0.2.1/32".into(), 5432)],
            sources: vec![],
        };
        let s = p.state(".", &peers);
        let types: Vec<&str> = s.ipsets.iter().map(|i| i.r#type.as_str()).collect();
        assert_eq!(types, ["hash:net", "hash:net,port", "list:set"]);
        assert_eq!(s.chains[0].ipsets, [s.ipsets[2].name.clone()]);
        assert!(s.ipsets.iter().all(|i| i.name.len() <= 31));
        let e =
            plan_of("{action: partition, mode: all, selector: {}, externalTargets: ['bad host!']}")
                .expect_err("not a host");
        assert_eq!(e.problems[0].field, "externalTargets[0]");
    }

    /// Chaos Mesh (Rate.Validate, TcParameter.rate): netem's rate is accepted with tc's units,
    /// and `device: eth0@if12` means eth0 (NetworkChaosSpec.Default).
    #[test]
    fn netem_rate_and_device_default() {
        let p = plan_of("{action: netem, mode: all, selector: {}, delay: {latency: 1ms}, rate: {rate: 1mbps}, device: eth0@if12}")
            .expect("accepted");
        let NetworkFault::Tc(tc) = &p.fault else {
            panic!()
        };
        assert_eq!(tc.netem.as_ref().map(|n| n.rate.as_str()), Some("1mbps"));
        assert_eq!(p.device, "eth0");
        let e = plan_of(
            "{action: netem, mode: all, selector: {}, delay: {latency: 1ms}, rate: {rate: fast}}",
        )
        .expect_err("no unit");
        assert_eq!(e.problems[0].field, "rate.rate");
    }

    /// Several experiments on one pod: the states side by side.
    #[test]
    fn states_merge() {
        let a =
            plan_of("{action: delay, mode: all, selector: {}, delay: {latency: 1ms}}").expect("a");
        let b = plan_of("{action: partition, mode: all, selector: {}}").expect("b");
        let mut s = a.state(".", &Peers::default());
        s.merge(b.state(".", &Peers::default()));
        assert_eq!((s.tcs.len(), s.chains.len()), (1, 1));
    }
}

//! NetworkChaos spec -> the network state the agent keeps in each selected pod
//! (`StartNetworkExperiment`: tc rules, ipsets, iptables chains), built as Chaos Mesh's
//! controller builds its PodNetworkChaos: netem/tbf rules, filtered through an ipset of the
//! peers' addresses when a `target` or `externalTargets` is given, and DROP chains for a
//! partition.

use std::net::IpAddr;

use faultline_proto::pb;

use super::{Action, InvalidSpec, Plan, Scope, Selection};
use crate::crd::{Direction, NetworkAction, NetworkChaosSpec, PodSelectorSpec};
use crate::plan::Mode;

/// The network state for one selected pod, less the peers' addresses (known once the target
/// pods are selected).
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkPlan {
    pub tcs: Vec<pb::Tc>,
    pub chains: Vec<pb::Chain>,
    /// The ipset of the peers, when traffic is filtered by peer.
    pub peer_set: Option<String>,
    /// The target pods whose addresses are peers.
    pub target: Option<(PodSelectorSpec, Mode)>,
    /// CIDRs from `externalTargets`.
    pub external: Vec<String>,
}

impl NetworkPlan {
    /// The request for one pod, given the peers' CIDRs.
    pub fn request(
        &self,
        container_id: &str,
        pod_uid: &str,
        peers: &[String],
        duration_ms: u64,
    ) -> faultline_proto::agent::v1::StartNetworkExperimentRequest {
        let ipsets = self
            .peer_set
            .iter()
            .map(|name| pb::IpSet {
                name: name.clone(),
                cidrs: peers.to_vec(),
                r#type: "hash:net".into(),
                ..Default::default()
            })
            .collect();
        faultline_proto::agent::v1::StartNetworkExperimentRequest {
            container_id: container_id.to_owned(),
            pod_uid: pod_uid.to_owned(),
            tcs: self.tcs.clone(),
            ipsets,
            chains: self.chains.clone(),
            duration_ms,
            dry_run: false,
            netem_path: String::new(),
            tc_ports: Vec::new(),
        }
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
    if spec.rate.is_some() {
        problems.unsupported(
            "rate",
            "netem rate limits are not supported; use action bandwidth",
        );
    }
    if spec.target_device.as_deref().is_some_and(|d| !d.is_empty()) {
        problems.unsupported(
            "targetDevice",
            "faultline changes only the selected pods, never the target pods",
        );
    }
    let device = spec.device.clone().unwrap_or_default();
    if !device.is_empty()
        && (device.len() > 15
            || !device
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
    {
        problems.invalid("device", format!("{device:?} is not a network device name"));
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
        match cidr(t) {
            Ok(c) => external.push(c),
            Err(p) => problems.unsupported(format!("externalTargets[{i}]"), p),
        }
    }
    let filtered = spec.target.is_some() || !spec.external_targets.is_empty();
    let hash = short_name(namespace, name);
    let peer_set = filtered.then(|| format!("fl-{hash}"));
    let direction = spec.direction.unwrap_or(Direction::To);

    let mut tcs = Vec::new();
    let mut chains = Vec::new();
    match spec.action {
        NetworkAction::Partition => {
            let Some(set) = peer_set.clone() else {
                problems.invalid(
                    "target",
                    "a partition needs a target or externalTargets (the peers to cut off)",
                );
                return problems.finish(None);
            };
            let chain = |suffix: &str, direction: pb::chain::Direction| pb::Chain {
                name: format!("FL-{suffix}-{hash}"),
                direction: direction as i32,
                ipsets: vec![set.clone()],
                target: "DROP".into(),
                device: device.clone(),
                ..Default::default()
            };
            if matches!(direction, Direction::To | Direction::Both) {
                chains.push(chain("OUT", pb::chain::Direction::Output));
            }
            if matches!(direction, Direction::From | Direction::Both) {
                chains.push(chain("IN", pb::chain::Direction::Input));
            }
        }
        NetworkAction::Bandwidth => {
            if direction != Direction::To {
                unsupported_direction(&mut problems);
            }
            match &spec.bandwidth {
                None => problems.invalid("bandwidth", "required for action bandwidth"),
                Some(b) => tcs.push(pb::Tc {
                    r#type: pb::tc::Type::Bandwidth as i32,
                    tbf: Some(pb::Tbf {
                        rate: b.rate.clone(),
                        limit: b.limit,
                        buffer: b.buffer,
                        peak_rate: b.peakrate.unwrap_or(0),
                        min_burst: b.minburst.unwrap_or(0),
                    }),
                    ipset: peer_set.clone().unwrap_or_default(),
                    device: device.clone(),
                    ..Default::default()
                }),
            }
        }
        action => {
            if direction != Direction::To {
                unsupported_direction(&mut problems);
            }
            if let Some(netem) = netem(&mut problems, spec, action) {
                tcs.push(pb::Tc {
                    r#type: pb::tc::Type::Netem as i32,
                    netem: Some(netem),
                    ipset: peer_set.clone().unwrap_or_default(),
                    device: device.clone(),
                    ..Default::default()
                });
            }
        }
    }

    let plan = selection.map(|(selector, mode)| Plan {
        selection: Selection {
            selector,
            mode,
            scope: Scope::Pod,
        },
        duration,
        action: Action::Network(Box::new(NetworkPlan {
            tcs,
            chains,
            peer_set,
            target,
            external,
        })),
    });
    problems.finish(plan)
}

fn unsupported_direction(problems: &mut InvalidSpec) {
    problems.unsupported(
        "direction",
        "traffic control acts on the selected pods' outgoing traffic only (direction to); \
         from and both are supported for partition",
    );
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
        Err(_) => {
            return Err(format!(
                "{text:?}: an IPv4 address or CIDR (host names are not resolved)"
            ));
        }
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

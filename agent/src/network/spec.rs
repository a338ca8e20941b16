//! The desired network state of one pod, validated once at the edge from Chaos Mesh's messages
//! (TcsRequest, IPSetsRequest, IptablesChainsRequest) into types that cannot be invalid. Each
//! request replaces its own part of the state as a whole.

use faultline_proto::agent::v1 as api;
use faultline_proto::pb;
use netlink::tc::{Netem, Tbf};
use netlink::units::{Fraction, UnitError, parse_rate_bytes, parse_time_us};
use serde::{Deserialize, Serialize};

use super::error::NetworkError;

/// The device Chaos Mesh means when it names none.
pub const DEFAULT_DEVICE: &str = "eth0";

/// Everything faultline should have in force in one pod's network namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub tcs: Vec<TcRule>,
    pub ipsets: Vec<IpSetSpec>,
    pub chains: Vec<ChainSpec>,
}

/// How many entries one of our ipsets may hold. The kernel's default (`maxelem 65536`) is raised
/// to this for every hash set we create; a request beyond it is refused before anything runs,
/// instead of failing halfway through `ipset restore`.
pub const MAX_SET_ENTRIES: usize = 262_144;

impl NetworkSpec {
    /// Every ipset a chain or a tc filter matches on must be one the pod has: among this state's
    /// sets, or among `existing` (ours, still in the namespace: Chaos Mesh empties the sets
    /// before it empties the chains that use them). Otherwise iptables would fail with its own
    /// words, after other parts were already applied.
    pub fn check_set_references(
        &self,
        existing: &std::collections::BTreeSet<String>,
    ) -> Result<(), NetworkError> {
        let known =
            |name: &str| existing.contains(name) || self.ipsets.iter().any(|s| s.name == name);
        let list = || {
            let mut names: Vec<&str> = self.ipsets.iter().map(|s| s.name.as_str()).collect();
            names.extend(existing.iter().map(String::as_str));
            names.sort_unstable();
            names.dedup();
            if names.is_empty() {
                "the pod has none: send FlushIPSets first".to_owned()
            } else {
                format!("the pod has: {}", names.join(", "))
            }
        };
        for (i, chain) in self.chains.iter().enumerate() {
            for (j, set) in chain.ipsets.iter().enumerate() {
                if !known(set) {
                    return Err(invalid(
                        format!("chains[{i}].ipsets[{j}]"),
                        format!("no ipset {set} ({})", list()),
                    ));
                }
            }
        }
        for (i, set) in self.ipsets.iter().enumerate() {
            if let IpSetKind::Sets(members) = &set.kind {
                for (j, member) in members.iter().enumerate() {
                    if !known(member) {
                        return Err(invalid(
                            format!("ipsets[{i}].set_names[{j}]"),
                            format!("no ipset {member} ({})", list()),
                        ));
                    }
                }
            }
        }
        for (i, tc) in self.tcs.iter().enumerate() {
            if !tc.filter.ipset.is_empty() && !known(&tc.filter.ipset) {
                return Err(invalid(
                    format!("tcs[{i}].ipset"),
                    format!("no ipset {} ({})", tc.filter.ipset, list()),
                ));
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.tcs.is_empty() && self.ipsets.is_empty() && self.chains.is_empty()
    }

    /// Devices whose egress tree we own.
    pub fn devices(&self) -> Vec<String> {
        let mut devices: Vec<String> = self.tcs.iter().map(|t| t.device.clone()).collect();
        devices.sort();
        devices.dedup();
        devices
    }

    /// A one-line summary for listings and logs.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for tc in &self.tcs {
            parts.push(tc.describe());
        }
        for set in &self.ipsets {
            parts.push(format!("ipset {} ({})", set.name, set.kind.type_name()));
        }
        for chain in &self.chains {
            parts.push(format!(
                "chain {} {} -j {}",
                chain.name,
                chain.direction.as_str(),
                chain.target
            ));
        }
        parts.join("; ")
    }
}

/// Which traffic a tc rule applies to; all empty means every packet leaving the device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TcFilter {
    pub ipset: String,
    pub protocol: String,
    pub source_port: String,
    pub egress_port: String,
}

impl TcFilter {
    pub fn is_global(&self) -> bool {
        self.ipset.is_empty()
            && self.protocol.is_empty()
            && self.source_port.is_empty()
            && self.egress_port.is_empty()
    }

    /// iptables match arguments for this filter (destination side, egress).
    pub fn iptables_match(&self) -> Vec<String> {
        let mut args = Vec::new();
        if !self.protocol.is_empty() {
            args.extend(["-p".to_owned(), self.protocol.clone()]);
            push_ports(&mut args, "--source-ports", "--sport", &self.source_port);
            push_ports(
                &mut args,
                "--destination-ports",
                "--dport",
                &self.egress_port,
            );
        }
        if !self.ipset.is_empty() {
            args.extend([
                "-m".to_owned(),
                "set".to_owned(),
                "--match-set".to_owned(),
                self.ipset.clone(),
                "dst".to_owned(),
            ]);
        }
        args
    }
}

fn push_ports(args: &mut Vec<String>, multi: &str, single: &str, ports: &str) {
    if ports.is_empty() {
        return;
    }
    if ports.contains(',') {
        args.extend([
            "-m".to_owned(),
            "multiport".to_owned(),
            multi.to_owned(),
            ports.to_owned(),
        ]);
    } else {
        args.extend([single.to_owned(), ports.to_owned()]);
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcRule {
    pub device: String,
    pub filter: TcFilter,
    pub action: TcAction,
}

impl TcRule {
    pub fn describe(&self) -> String {
        let what = match &self.action {
            TcAction::Netem(n) => format!("netem {}", n.describe()),
            TcAction::Bandwidth(t) => {
                format!("tbf rate {}B/s burst {} limit {}", t.rate, t.burst, t.limit)
            }
        };
        if self.filter.is_global() {
            format!("{what} on {}", self.device)
        } else {
            format!(
                "{what} on {} for {}",
                self.device,
                self.filter.iptables_match().join(" ")
            )
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TcAction {
    Netem(NetemSpec),
    Bandwidth(TbfSpec),
}

/// netem in kernel units (probabilities as fractions of 2^32-1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetemSpec {
    pub latency_us: u32,
    pub jitter_us: u32,
    pub delay_correlation: u32,
    pub limit: u32,
    pub loss: u32,
    pub loss_correlation: u32,
    pub gap: u32,
    pub duplicate: u32,
    pub duplicate_correlation: u32,
    pub reorder: u32,
    pub reorder_correlation: u32,
    pub corrupt: u32,
    pub corrupt_correlation: u32,
    pub rate: Option<u64>,
}

impl NetemSpec {
    pub fn to_qdisc(&self) -> Netem {
        Netem {
            limit: self.limit,
            latency_us: self.latency_us,
            jitter_us: self.jitter_us,
            delay_correlation: Fraction(self.delay_correlation),
            loss: Fraction(self.loss),
            loss_correlation: Fraction(self.loss_correlation),
            duplicate: Fraction(self.duplicate),
            duplicate_correlation: Fraction(self.duplicate_correlation),
            reorder: Fraction(self.reorder),
            reorder_correlation: Fraction(self.reorder_correlation),
            gap: self.gap,
            corrupt: Fraction(self.corrupt),
            corrupt_correlation: Fraction(self.corrupt_correlation),
            rate: self.rate,
        }
    }

    /// Whether the userspace path can do all of it (it has no rate limiting: use bandwidth).
    pub fn needs_kernel(&self) -> bool {
        self.rate.is_some()
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.latency_us > 0 {
            parts.push(format!("delay {}us", self.latency_us));
            if self.jitter_us > 0 {
                parts.push(format!("jitter {}us", self.jitter_us));
            }
        }
        for (name, v) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("corrupt", self.corrupt),
            ("reorder", self.reorder),
        ] {
            if v > 0 {
                parts.push(format!("{name} {}", Fraction(v)));
            }
        }
        if let Some(rate) = self.rate {
            parts.push(format!("rate {rate}B/s"));
        }
        if parts.is_empty() {
            "(no effect)".into()
        } else {
            parts.join(" ")
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TbfSpec {
    pub rate: u64,
    pub burst: u32,
    pub limit: u32,
    pub peak_rate: Option<u64>,
    pub mtu: u32,
}

impl TbfSpec {
    pub fn to_qdisc(&self) -> Tbf {
        Tbf {
            rate: self.rate,
            burst: self.burst,
            limit: self.limit,
            peak_rate: self.peak_rate,
            mtu: self.mtu,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpSetSpec {
    pub name: String,
    pub kind: IpSetKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IpSetKind {
    /// hash:net
    Nets(Vec<String>),
    /// hash:net,port
    NetPorts(Vec<(String, u16)>),
    /// list:set
    Sets(Vec<String>),
}

impl IpSetKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            IpSetKind::Nets(_) => "hash:net",
            IpSetKind::NetPorts(_) => "hash:net,port",
            IpSetKind::Sets(_) => "list:set",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    Input,
    Output,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Input => "INPUT",
            Direction::Output => "OUTPUT",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainSpec {
    pub name: String,
    pub direction: Direction,
    pub ipsets: Vec<String>,
    pub target: String,
    pub protocol: String,
    pub source_ports: String,
    pub destination_ports: String,
    pub tcp_flags: String,
    pub device: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> NetworkError {
    NetworkError::InvalidArgument {
        field: field.into(),
        reason: reason.into(),
    }
}

fn unit(field: &str) -> impl FnOnce(UnitError) -> NetworkError + '_ {
    move |e| invalid(field, e.to_string())
}

/// Names that reach iptables, ipset and tc: no spaces, quotes or control characters.
fn check_name(field: &str, value: &str, max: usize) -> Result<(), NetworkError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{value:?}: 1 to {max} letters, digits, '-', '_', '.', ':' or '/'"),
        ))
    }
}

fn device_of(field: &str, device: &str) -> Result<String, NetworkError> {
    if device.is_empty() {
        return Ok(DEFAULT_DEVICE.to_owned());
    }
    // IFNAMSIZ is 16 with the terminating NUL.
    check_name(field, device, 15)?;
    Ok(device.to_owned())
}

fn protocol_of(field: &str, protocol: &str) -> Result<String, NetworkError> {
    match protocol.to_ascii_lowercase().as_str() {
        "" => Ok(String::new()),
        p @ ("tcp" | "udp" | "icmp" | "all") => Ok(p.to_owned()),
        other => Err(invalid(
            field,
            format!("{other:?}: one of tcp, udp, icmp, all"),
        )),
    }
}

/// "80", "80,443", "8000:8080".
fn ports_of(field: &str, ports: &str) -> Result<String, NetworkError> {
    if ports.is_empty() {
        return Ok(String::new());
    }
    for part in ports.split(',') {
        for port in part.split(':') {
            port.parse::<u16>().map_err(|_| {
                invalid(
                    field,
                    format!("{ports:?}: ports are 0-65535, as 80, 80,443 or 8000:8080"),
                )
            })?;
        }
    }
    Ok(ports.to_owned())
}

fn percent(field: &str, value: f32) -> Result<u32, NetworkError> {
    Fraction::from_f32_percent(value).map(|f| f.0).map_err(|_| {
        invalid(
            field,
            format!("{value} is not a percentage between 0 and 100"),
        )
    })
}

fn time(field: &str, value: &str) -> Result<u32, NetworkError> {
    if value.trim().is_empty() {
        return Ok(0);
    }
    parse_time_us(value).map_err(unit(field))
}

impl NetemSpec {
    pub fn from_pb(field: &str, n: &pb::Netem) -> Result<NetemSpec, NetworkError> {
        let f = |name: &str| format!("{field}.{name}");
        let mut spec = NetemSpec {
            latency_us: time(&f("time"), &n.time)?,
            jitter_us: time(&f("jitter"), &n.jitter)?,
            delay_correlation: percent(&f("delay_corr"), n.delay_corr)?,
            limit: if n.limit == 0 { 1000 } else { n.limit },
            loss: percent(&f("loss"), n.loss)?,
            loss_correlation: percent(&f("loss_corr"), n.loss_corr)?,
            gap: n.gap,
            duplicate: percent(&f("duplicate"), n.duplicate)?,
            duplicate_correlation: percent(&f("duplicate_corr"), n.duplicate_corr)?,
            reorder: percent(&f("reorder"), n.reorder)?,
            reorder_correlation: percent(&f("reorder_corr"), n.reorder_corr)?,
            corrupt: percent(&f("corrupt"), n.corrupt)?,
            corrupt_correlation: percent(&f("corrupt_corr"), n.corrupt_corr)?,
            rate: if n.rate.trim().is_empty() {
                None
            } else {
                Some(parse_rate_bytes(&n.rate).map_err(unit(&f("rate")))?)
            },
        };
        // As Chaos Mesh gives tc: a delay correlation only with a jitter, a reorder and its gap
        // only with a delay.
        if spec.jitter_us == 0 {
            spec.delay_correlation = 0;
        }
        if spec.reorder > 0 && spec.latency_us == 0 {
            return Err(invalid(f("reorder"), "reordering needs a delay (time)"));
        }
        if spec.reorder == 0 && spec.gap > 0 {
            return Err(invalid(f("gap"), "a gap needs a reorder percentage"));
        }
        if spec.jitter_us > spec.latency_us && spec.latency_us > 0 {
            return Err(invalid(f("jitter"), "the jitter must not exceed the delay"));
        }
        spec.to_qdisc()
            .validate(&netlink::psched::Psched::default())
            .map_err(|e| invalid(field, e.to_string()))?;
        Ok(spec)
    }
}

impl TbfSpec {
    pub fn from_pb(field: &str, t: &pb::Tbf) -> Result<TbfSpec, NetworkError> {
        let f = |name: &str| format!("{field}.{name}");
        if t.rate.trim().is_empty() {
            return Err(invalid(f("rate"), "a bandwidth needs a rate, e.g. 1mbit"));
        }
        let spec = TbfSpec {
            rate: parse_rate_bytes(&t.rate).map_err(unit(&f("rate")))?,
            burst: t.buffer,
            limit: t.limit,
            // Chaos Mesh hands the peak rate to tc as a bare number: bits per second.
            peak_rate: (t.peak_rate > 0).then_some(t.peak_rate / 8),
            mtu: t.min_burst,
        };
        if spec.burst == 0 {
            return Err(invalid(
                f("buffer"),
                "a bandwidth needs a buffer (burst) in bytes",
            ));
        }
        if spec.limit == 0 {
            return Err(invalid(f("limit"), "a bandwidth needs a limit in bytes"));
        }
        if spec.peak_rate.is_some() && spec.mtu == 0 {
            return Err(invalid(f("min_burst"), "a peak rate needs a min burst"));
        }
        Ok(spec)
    }
}

impl TcRule {
    /// `ports` come from faultline's own API (`faultline.agent.v1.TcPorts`); pb.Tc has none.
    pub fn from_pb(
        index: usize,
        tc: &pb::Tc,
        ports: Option<&api::TcPorts>,
    ) -> Result<TcRule, NetworkError> {
        let field = format!("tcs[{index}]");
        let f = |name: &str| format!("{field}.{name}");
        let action = match pb::tc::Type::try_from(tc.r#type) {
            Ok(pb::tc::Type::Netem) => {
                let netem = tc
                    .netem
                    .as_ref()
                    .ok_or_else(|| invalid(f("netem"), "type NETEM needs netem"))?;
                TcAction::Netem(NetemSpec::from_pb(&f("netem"), netem)?)
            }
            Ok(pb::tc::Type::Bandwidth) => {
                let tbf = tc
                    .tbf
                    .as_ref()
                    .ok_or_else(|| invalid(f("tbf"), "type BANDWIDTH needs tbf"))?;
                TcAction::Bandwidth(TbfSpec::from_pb(&f("tbf"), tbf)?)
            }
            Err(_) => {
                return Err(invalid(
                    f("type"),
                    format!("{}: NETEM (0) or BANDWIDTH (1)", tc.r#type),
                ));
            }
        };
        let filter = TcFilter {
            ipset: if tc.ipset.is_empty() {
                String::new()
            } else {
                check_name(&f("ipset"), &tc.ipset, 31)?;
                tc.ipset.clone()
            },
            protocol: protocol_of(&f("protocol"), &tc.protocol)?,
            source_port: match ports {
                Some(p) => ports_of(&format!("tc_ports[{index}].source_port"), &p.source_port)?,
                None => String::new(),
            },
            egress_port: match ports {
                Some(p) => ports_of(&format!("tc_ports[{index}].egress_port"), &p.egress_port)?,
                None => String::new(),
            },
        };
        if filter.protocol.is_empty()
            && (!filter.source_port.is_empty() || !filter.egress_port.is_empty())
        {
            return Err(invalid(f("protocol"), "ports need a protocol (tcp or udp)"));
        }
        Ok(TcRule {
            device: device_of(&f("device"), &tc.device)?,
            filter,
            action,
        })
    }
}

/// Reserved chain names: the kernel's and ours.
const RESERVED_CHAINS: &[&str] = &[
    "INPUT",
    "OUTPUT",
    "FORWARD",
    "PREROUTING",
    "POSTROUTING",
    "CHAOS-INPUT",
    "CHAOS-OUTPUT",
    "CHAOS-TC",
    "CHAOS-NETEM",
];

/// The iptables targets a chain's rules may jump to: the verdicts and the common extensions.
/// Anything else (a user chain, a typo) would fail inside iptables-restore with its own words.
const KNOWN_TARGETS: &[&str] = &[
    "ACCEPT", "DROP", "REJECT", "RETURN", "LOG", "NFLOG", "MARK", "CONNMARK", "CLASSIFY", "DSCP",
    "TOS", "NFQUEUE", "TCPMSS", "NOTRACK", "CT", "AUDIT",
];

/// An iptables target with its options, e.g. "DROP", "REJECT --reject-with tcp-reset",
/// "CLASSIFY --set-class 1:4".
fn target_of(field: &str, target: &str) -> Result<String, NetworkError> {
    let target = target.trim();
    let target = if target.is_empty() { "DROP" } else { target };
    // One line of iptables-restore input: no line breaks, and options only as "--name".
    let one_line = !target.chars().any(|c| c.is_control());
    let mut words = target.split_whitespace();
    let head_ok = words.next().is_some_and(|w| {
        w.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '-')
    });
    let rest_ok = words.all(|w| {
        (w.starts_with("--") || !w.starts_with('-'))
            && w.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | ',' | '.' | '/')
            })
    });
    let head = target.split_whitespace().next().unwrap_or_default();
    if one_line && head_ok && rest_ok && !KNOWN_TARGETS.contains(&head) {
        return Err(invalid(
            field,
            format!("unknown target {head}: one of {}", KNOWN_TARGETS.join(", ")),
        ));
    }
    if one_line && head_ok && rest_ok {
        Ok(target.to_owned())
    } else {
        Err(invalid(
            field,
            format!(
                "{target:?}: an iptables target such as DROP or REJECT --reject-with tcp-reset"
            ),
        ))
    }
}

impl ChainSpec {
    pub fn from_pb(index: usize, chain: &pb::Chain) -> Result<ChainSpec, NetworkError> {
        let field = format!("chains[{index}]");
        let f = |name: &str| format!("{field}.{name}");
        check_name(&f("name"), &chain.name, 28)?;
        if RESERVED_CHAINS.contains(&chain.name.as_str()) {
            return Err(invalid(f("name"), format!("{} is reserved", chain.name)));
        }
        let direction = match pb::chain::Direction::try_from(chain.direction) {
            Ok(pb::chain::Direction::Input) => Direction::Input,
            Ok(pb::chain::Direction::Output) => Direction::Output,
            Err(_) => {
                return Err(invalid(
                    f("direction"),
                    format!("{}: INPUT (0) or OUTPUT (1)", chain.direction),
                ));
            }
        };
        for (i, set) in chain.ipsets.iter().enumerate() {
            check_name(&format!("{field}.ipsets[{i}]"), set, 31)?;
        }
        let tcp_flags = chain.tcp_flags.trim().to_owned();
        if !tcp_flags.is_empty()
            && !tcp_flags
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == ',' || c == ' ')
        {
            return Err(invalid(
                f("tcp_flags"),
                format!("{tcp_flags:?}: e.g. \"SYN,ACK SYN\""),
            ));
        }
        let protocol = protocol_of(&f("protocol"), &chain.protocol)?;
        if protocol.is_empty()
            && (!chain.source_ports.is_empty()
                || !chain.destination_ports.is_empty()
                || !tcp_flags.is_empty())
        {
            return Err(invalid(
                f("protocol"),
                "ports and TCP flags need a protocol",
            ));
        }
        Ok(ChainSpec {
            name: chain.name.clone(),
            direction,
            ipsets: chain.ipsets.clone(),
            target: target_of(&f("target"), &chain.target)?,
            protocol,
            source_ports: ports_of(&f("source_ports"), &chain.source_ports)?,
            destination_ports: ports_of(&f("destination_ports"), &chain.destination_ports)?,
            tcp_flags,
            device: device_of(&f("device"), &chain.device)?,
        })
    }
}

fn cidr_of(field: &str, cidr: &str) -> Result<String, NetworkError> {
    let (addr, prefix) = match cidr.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (cidr, None),
    };
    let ip: std::net::IpAddr = addr
        .parse()
        .map_err(|_| invalid(field, format!("{cidr:?} is not an address or CIDR")))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if let Some(p) = prefix {
        match p.parse::<u8>() {
            Ok(n) if n <= max => {}
            _ => return Err(invalid(field, format!("{cidr:?}: prefix length 0-{max}"))),
        }
    }
    if !ip.is_ipv4() {
        return Err(invalid(
            field,
            format!("{cidr:?}: only IPv4 sets are supported"),
        ));
    }
    Ok(cidr.to_owned())
}

impl IpSetSpec {
    pub fn from_pb(index: usize, set: &pb::IpSet) -> Result<IpSetSpec, NetworkError> {
        let field = format!("ipsets[{index}]");
        let f = |name: &str| format!("{field}.{name}");
        check_name(&f("name"), &set.name, 31)?;
        let declared = set.r#type.trim();
        let kind = if !set.set_names.is_empty() || declared == "list:set" {
            let mut names = Vec::new();
            for (i, n) in set.set_names.iter().enumerate() {
                check_name(&format!("{field}.set_names[{i}]"), n, 31)?;
                names.push(n.clone());
            }
            IpSetKind::Sets(names)
        } else if !set.cidr_and_ports.is_empty() || declared == "hash:net,port" {
            let mut entries = Vec::new();
            for (i, cp) in set.cidr_and_ports.iter().enumerate() {
                let cidr = cidr_of(&format!("{field}.cidr_and_ports[{i}].cidr"), &cp.cidr)?;
                let port = u16::try_from(cp.port)
                    .map_err(|_| invalid(format!("{field}.cidr_and_ports[{i}].port"), "0-65535"))?;
                entries.push((cidr, port));
            }
            IpSetKind::NetPorts(entries)
        } else {
            if !declared.is_empty() && declared != "hash:net" {
                return Err(invalid(
                    f("type"),
                    format!("{declared:?}: hash:net, hash:net,port or list:set"),
                ));
            }
            let mut cidrs = Vec::new();
            for (i, c) in set.cidrs.iter().enumerate() {
                cidrs.push(cidr_of(&format!("{field}.cidrs[{i}]"), c)?);
            }
            IpSetKind::Nets(cidrs)
        };
        let entries = match &kind {
            IpSetKind::Nets(v) => v.len(),
            IpSetKind::NetPorts(v) => v.len(),
            IpSetKind::Sets(_) => 0,
        };
        if entries > MAX_SET_ENTRIES {
            let list = if matches!(kind, IpSetKind::NetPorts(_)) {
                "cidr_and_ports"
            } else {
                "cidrs"
            };
            return Err(invalid(
                f(list),
                format!("{entries} entries; a set holds at most {MAX_SET_ENTRIES}"),
            ));
        }
        Ok(IpSetSpec {
            name: set.name.clone(),
            kind,
        })
    }
}

/// Parses every rule of a request, or names the first bad field.
pub fn tcs_from_pb(tcs: &[pb::Tc]) -> Result<Vec<TcRule>, NetworkError> {
    tcs_with_ports(tcs, &[])
}

/// As [`tcs_from_pb`], with faultline's port filters (each naming a rule by its index, once).
pub fn tcs_with_ports(tcs: &[pb::Tc], ports: &[api::TcPorts]) -> Result<Vec<TcRule>, NetworkError> {
    for (i, p) in ports.iter().enumerate() {
        if p.tc as usize >= tcs.len() {
            return Err(invalid(
                format!("tc_ports[{i}].tc"),
                format!("{}: there are {} tcs", p.tc, tcs.len()),
            ));
        }
        if ports[..i].iter().any(|o| o.tc == p.tc) {
            return Err(invalid(
                format!("tc_ports[{i}].tc"),
                format!("tcs[{}] is given ports twice", p.tc),
            ));
        }
    }
    tcs.iter()
        .enumerate()
        .map(|(i, t)| TcRule::from_pb(i, t, ports.iter().find(|p| p.tc as usize == i)))
        .collect()
}

pub fn chains_from_pb(chains: &[pb::Chain]) -> Result<Vec<ChainSpec>, NetworkError> {
    let parsed: Vec<ChainSpec> = chains
        .iter()
        .enumerate()
        .map(|(i, c)| ChainSpec::from_pb(i, c))
        .collect::<Result<_, _>>()?;
    for (i, c) in parsed.iter().enumerate() {
        if parsed[..i].iter().any(|o| o.name == c.name) {
            return Err(invalid(
                format!("chains[{i}].name"),
                format!("{} is given twice", c.name),
            ));
        }
    }
    Ok(parsed)
}

pub fn ipsets_from_pb(sets: &[pb::IpSet]) -> Result<Vec<IpSetSpec>, NetworkError> {
    let parsed: Vec<IpSetSpec> = sets
        .iter()
        .enumerate()
        .map(|(i, s)| IpSetSpec::from_pb(i, s))
        .collect::<Result<_, _>>()?;
    for (i, s) in parsed.iter().enumerate() {
        if parsed[..i].iter().any(|o| o.name == s.name) {
            return Err(invalid(
                format!("ipsets[{i}].name"),
                format!("{} is given twice", s.name),
            ));
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn netem(f: impl FnOnce(&mut pb::Netem)) -> pb::Tc {
        let mut n = pb::Netem::default();
        f(&mut n);
        pb::Tc {
            r#type: pb::tc::Type::Netem as i32,
            netem: Some(n),
            ..Default::default()
        }
    }

    fn err_of(tc: pb::Tc) -> String {
        TcRule::from_pb(0, &tc, None).unwrap_err().to_string()
    }

    #[test]
    fn netem_values_become_kernel_units() {
        let rule = TcRule::from_pb(
            0,
            &netem(|n| {
                n.time = "100ms".into();
                n.jitter = "10ms".into();
                n.delay_corr = 25.0;
                n.loss = 50.0;
            }),
            None,
        )
        .unwrap();
        assert_eq!(rule.device, "eth0");
        let TcAction::Netem(spec) = rule.action else {
            panic!("netem")
        };
        assert_eq!(spec.latency_us, 100_000);
        assert_eq!(spec.jitter_us, 10_000);
        assert_eq!(spec.delay_correlation, 0x4000_0000);
        assert_eq!(spec.loss, 0x8000_0000);
        assert_eq!(spec.limit, 1000);
    }

    #[test]
    fn bad_values_name_their_field() {
        assert!(err_of(netem(|n| n.time = "soon".into())).contains("tcs[0].netem.time"));
        assert!(err_of(netem(|n| n.loss = 150.0)).contains("tcs[0].netem.loss"));
        assert!(err_of(netem(|n| n.corrupt = -1.0)).contains("tcs[0].netem.corrupt"));
        assert!(err_of(netem(|n| n.reorder = 10.0)).contains("needs a delay"));
        assert!(err_of(netem(|n| n.rate = "fast".into())).contains("tcs[0].netem.rate"));
        let mut tc = netem(|_| {});
        tc.device = "eth0; rm".into();
        assert!(err_of(tc).contains("tcs[0].device"));
        let bw = |rate: &str, buffer, limit| pb::Tc {
            r#type: pb::tc::Type::Bandwidth as i32,
            tbf: Some(pb::Tbf {
                rate: rate.into(),
                buffer,
                limit,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(err_of(bw("1 zillion", 10000, 10000)).contains("tcs[0].tbf.rate"));
        assert!(err_of(bw("1mbit", 0, 10000)).contains("tcs[0].tbf.buffer"));
        assert!(err_of(bw("1mbit", 10000, 0)).contains("tcs[0].tbf.limit"));
        assert!(TcRule::from_pb(0, &bw("1mbit", 10000, 10000), None).is_ok());
        let mut typeless = bw("1mbit", 1, 1);
        typeless.r#type = 7;
        assert!(err_of(typeless).contains("tcs[0].type"));
    }

    #[test]
    fn chains_and_sets_are_checked() {
        let chain = |name: &str, target: &str| pb::Chain {
            name: name.into(),
            direction: pb::chain::Direction::Output as i32,
            ipsets: vec!["targets".into()],
            target: target.into(),
            ..Default::default()
        };
        let ok = ChainSpec::from_pb(0, &chain("OUTPUT/abc", "DROP")).unwrap();
        assert_eq!(ok.device, "eth0");
        assert!(ChainSpec::from_pb(0, &chain("INPUT", "DROP")).is_err());
        assert!(ChainSpec::from_pb(0, &chain("x", "DROP\n-A INPUT -j ACCEPT")).is_err());
        assert!(ChainSpec::from_pb(0, &chain("a-very-long-chain-name-beyond-28", "DROP")).is_err());
        assert!(chains_from_pb(&[chain("a", "DROP"), chain("a", "DROP")]).is_err());
        let set = |cidrs: &[&str]| pb::IpSet {
            name: "targets".into(),
            cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        };
        assert_eq!(
            IpSetSpec::from_pb(0, &set(&["10.0.0.0/8", "10.1.2.3"]))
                .unwrap()
                .kind,
            IpSetKind::Nets(vec!["10.0.0.0/8".into(), "10.1.2.3".into()])
        );
        assert!(IpSetSpec::from_pb(0, &set(&["10.0.0.0/33"])).is_err());
        assert!(IpSetSpec::from_pb(0, &set(&["example.com"])).is_err());
    }

    /// pb.Tc has no ports (Chaos Mesh reserved 6 and 7); faultline's own API gives them per
    /// rule index.
    #[test]
    fn tc_ports_come_from_faultlines_api() {
        let mut tc = netem(|n| n.time = "10ms".into());
        tc.protocol = "tcp".into();
        let ports = |tc: u32, egress: &str| api::TcPorts {
            tc,
            egress_port: egress.into(),
            ..Default::default()
        };
        let rules = tcs_with_ports(&[tc.clone()], &[ports(0, "80,443")]).unwrap();
        assert_eq!(rules[0].filter.egress_port, "80,443");
        assert!(
            tcs_from_pb(&[tc.clone()]).unwrap()[0]
                .filter
                .egress_port
                .is_empty()
        );
        let err = tcs_with_ports(&[tc.clone()], &[ports(1, "80")]).unwrap_err();
        assert!(err.to_string().contains("tc_ports[0].tc"), "{err}");
        let err = tcs_with_ports(&[tc.clone()], &[ports(0, "80"), ports(0, "81")]).unwrap_err();
        assert!(err.to_string().contains("given ports twice"), "{err}");
        let err = tcs_with_ports(&[tc.clone()], &[ports(0, "http")]).unwrap_err();
        assert!(err.to_string().contains("tc_ports[0].egress_port"), "{err}");
        tc.protocol.clear();
        let err = tcs_with_ports(&[tc], &[ports(0, "80")]).unwrap_err();
        assert!(err.to_string().contains("tcs[0].protocol"), "{err}");
    }

    #[test]
    fn an_unknown_target_is_named_before_iptables_sees_it() {
        let chain = pb::Chain {
            name: "c".into(),
            direction: pb::chain::Direction::Input as i32,
            target: "NO-SUCH-CHAIN".into(),
            ..Default::default()
        };
        let err = ChainSpec::from_pb(2, &chain).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let text = err.to_string();
        assert!(
            text.starts_with("chains[2].target: unknown target NO-SUCH-CHAIN"),
            "{text}"
        );
        let reject = pb::Chain {
            target: "REJECT --reject-with tcp-reset".into(),
            ..chain
        };
        assert!(ChainSpec::from_pb(0, &reject).is_ok());
    }

    #[test]
    fn a_set_beyond_the_entry_limit_is_refused_naming_the_list() {
        let cidrs: Vec<String> = (0..=MAX_SET_ENTRIES)
            .map(|i| format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255))
            .collect();
        let set = pb::IpSet {
            name: "big".into(),
            cidrs,
            ..Default::default()
        };
        let err = IpSetSpec::from_pb(1, &set).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "ipsets[1].cidrs: {} entries; a set holds at most {MAX_SET_ENTRIES}",
                MAX_SET_ENTRIES + 1
            )
        );
        let mut fits = set.clone();
        fits.cidrs.truncate(MAX_SET_ENTRIES);
        assert!(IpSetSpec::from_pb(1, &fits).is_ok());
    }

    #[test]
    fn chains_and_filters_must_match_on_sets_the_pod_has() {
        let tc = |set: &str| pb::Tc {
            r#type: pb::tc::Type::Netem as i32,
            netem: Some(pb::Netem {
                time: "10ms".into(),
                ..Default::default()
            }),
            ipset: set.into(),
            ..Default::default()
        };
        let chain = |set: &str| pb::Chain {
            name: "c".into(),
            direction: pb::chain::Direction::Output as i32,
            ipsets: vec![set.into()],
            target: "DROP".into(),
            ..Default::default()
        };
        let spec = NetworkSpec {
            tcs: tcs_from_pb(&[tc("peers")]).unwrap(),
            ipsets: ipsets_from_pb(&[pb::IpSet {
                name: "peers".into(),
                cidrs: vec!["10.0.0.1".into()],
                ..Default::default()
            }])
            .unwrap(),
            chains: chains_from_pb(&[chain("peers")]).unwrap(),
        };
        let none = std::collections::BTreeSet::new();
        spec.check_set_references(&none).unwrap();

        let missing = NetworkSpec {
            chains: chains_from_pb(&[chain("typo")]).unwrap(),
            ..spec.clone()
        };
        let err = missing.check_set_references(&none).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            err.to_string(),
            "chains[0].ipsets[0]: no ipset typo (the pod has: peers)"
        );

        // Chaos Mesh empties the sets (FlushIPSets) before the chains that use them
        // (SetIptablesChains): a set of ours still in the namespace counts.
        let emptied = NetworkSpec {
            ipsets: Vec::new(),
            ..spec.clone()
        };
        let ours = std::collections::BTreeSet::from(["peers".to_owned()]);
        emptied.check_set_references(&ours).unwrap();
        let err = emptied.check_set_references(&none).unwrap_err();
        assert_eq!(
            err.to_string(),
            "chains[0].ipsets[0]: no ipset peers (the pod has none: send FlushIPSets first)"
        );
        let filter_only = NetworkSpec {
            tcs: tcs_from_pb(&[tc("gone")]).unwrap(),
            ..NetworkSpec::default()
        };
        assert!(
            filter_only
                .check_set_references(&none)
                .unwrap_err()
                .to_string()
                .starts_with("tcs[0].ipset: no ipset gone")
        );
    }

    #[test]
    fn filters_render_as_iptables_matches() {
        let f = TcFilter {
            ipset: "s".into(),
            protocol: "tcp".into(),
            source_port: String::new(),
            egress_port: "80,443".into(),
        };
        assert_eq!(
            f.iptables_match().join(" "),
            "-p tcp -m multiport --destination-ports 80,443 -m set --match-set s dst"
        );
        assert!(TcFilter::default().is_global());
    }
}

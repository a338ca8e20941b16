//! Queueing disciplines over rtnetlink: add (netem, tbf, prio), delete and dump, with the options
//! encoded exactly as iproute2's `tc qdisc add ...` encodes them (checked byte for byte against
//! captured `tc` requests in tests/golden).

use crate::message::{
    Attr, MessageBuilder, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
    NetlinkError, parse_attrs, u32_at, u64_at,
};
use crate::psched::Psched;
use crate::units::Fraction;

pub const RTM_NEWQDISC: u16 = 36;
pub const RTM_DELQDISC: u16 = 37;
pub const RTM_GETQDISC: u16 = 38;
pub const RTM_NEWTCLASS: u16 = 40;

const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;

/// The root of a device's egress tree.
pub const TC_H_ROOT: u32 = 0xffff_ffff;

/// A qdisc or class handle `major:minor`.
pub const fn handle(major: u16, minor: u16) -> u32 {
    ((major as u32) << 16) | minor as u32
}

/// Where a qdisc sits: device, parent and its own handle (0: let the kernel pick).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub ifindex: u32,
    pub parent: u32,
    pub handle: u32,
}

impl Placement {
    pub fn root(ifindex: u32) -> Self {
        Self {
            ifindex,
            parent: TC_H_ROOT,
            handle: 0,
        }
    }

    /// `struct tcmsg`: family, padding, ifindex, handle, parent, info.
    fn tcmsg(&self) -> [u8; 20] {
        let mut b = [0u8; 20];
        b[4..8].copy_from_slice(&self.ifindex.to_ne_bytes());
        b[8..12].copy_from_slice(&self.handle.to_ne_bytes());
        b[12..16].copy_from_slice(&self.parent.to_ne_bytes());
        b
    }
}

/// netem's parameters in kernel units (times in microseconds, probabilities as fractions).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Netem {
    /// Packets netem may hold (tc's default 1000).
    pub limit: u32,
    pub latency_us: u32,
    pub jitter_us: u32,
    pub delay_correlation: Fraction,
    pub loss: Fraction,
    pub loss_correlation: Fraction,
    pub duplicate: Fraction,
    pub duplicate_correlation: Fraction,
    pub reorder: Fraction,
    pub reorder_correlation: Fraction,
    /// Every gap-th packet is sent at once (reordering); tc makes it 1 when reorder is set.
    pub gap: u32,
    pub corrupt: Fraction,
    pub corrupt_correlation: Fraction,
    /// Rate limit in bytes per second.
    pub rate: Option<u64>,
}

const TCA_NETEM_CORR: u16 = 1;
const TCA_NETEM_REORDER: u16 = 3;
const TCA_NETEM_CORRUPT: u16 = 4;
const TCA_NETEM_RATE: u16 = 6;
const TCA_NETEM_RATE64: u16 = 8;

impl Netem {
    /// tc's defaults: limit 1000, nothing else.
    pub fn new() -> Self {
        Self {
            limit: 1000,
            ..Self::default()
        }
    }

    /// Checks what tc checks before sending: reordering needs a delay, a gap needs reordering,
    /// times must fit 32-bit ticks.
    pub fn validate(&self, psched: &Psched) -> Result<(), NetlinkError> {
        if !self.reorder.is_zero() && self.latency_us == 0 {
            return Err(NetlinkError::Invalid(
                "reordering is not possible without a delay".into(),
            ));
        }
        if self.reorder.is_zero() && self.gap > 0 {
            return Err(NetlinkError::Invalid(
                "a gap needs a reorder probability".into(),
            ));
        }
        if psched.time_too_big(self.latency_us) || psched.time_too_big(self.jitter_us) {
            return Err(NetlinkError::Invalid(
                "delay and jitter must be below 274 s".into(),
            ));
        }
        Ok(())
    }

    /// TCA_OPTIONS' payload: `struct tc_netem_qopt` then the attributes tc adds only when needed.
    ///
    /// One deliberate difference from tc: tc sends TCA_NETEM_CORR only when a delay, loss,
    /// reorder or corrupt correlation was given, so a duplicate correlation given alone is lost;
    /// we send it whenever any correlation is non-zero.
    fn options(&self, psched: &Psched) -> Vec<u8> {
        let gap = if !self.reorder.is_zero() && self.gap == 0 {
            1
        } else {
            self.gap
        };
        let mut b = MessageBuilder::new(0, 0);
        let mut qopt = Vec::with_capacity(24);
        for v in [
            psched.time_to_ticks(self.latency_us),
            self.limit,
            self.loss.0,
            gap,
            self.duplicate.0,
            psched.time_to_ticks(self.jitter_us),
        ] {
            qopt.extend_from_slice(&v.to_ne_bytes());
        }
        b.header(&qopt);
        let delay_correlation = if self.jitter_us > 0 {
            self.delay_correlation
        } else {
            Fraction::ZERO
        };
        let correlations = [
            delay_correlation,
            self.loss_correlation,
            self.duplicate_correlation,
            self.reorder_correlation,
            self.corrupt_correlation,
        ];
        if correlations.iter().any(|c| !c.is_zero()) {
            b.attr(
                TCA_NETEM_CORR,
                &words(&[
                    delay_correlation.0,
                    self.loss_correlation.0,
                    self.duplicate_correlation.0,
                ]),
            );
        }
        if !self.reorder.is_zero() {
            b.attr(
                TCA_NETEM_REORDER,
                &words(&[self.reorder.0, self.reorder_correlation.0]),
            );
        }
        if !self.corrupt.is_zero() {
            b.attr(
                TCA_NETEM_CORRUPT,
                &words(&[self.corrupt.0, self.corrupt_correlation.0]),
            );
        }
        if let Some(rate) = self.rate {
            let rate32 = if rate >= 1 << 32 {
                b.attr(TCA_NETEM_RATE64, &rate.to_ne_bytes());
                u32::MAX
            } else {
                rate as u32
            };
            // struct tc_netem_rate: rate, packet_overhead, cell_size, cell_overhead.
            b.attr(TCA_NETEM_RATE, &words(&[rate32, 0, 0, 0]));
        }
        b.finish(0)[crate::message::HEADER_LEN..].to_vec()
    }
}

fn words(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

/// tbf's parameters in bytes and bytes per second, as tc takes them (`rate`, `burst`, `limit`,
/// optional `peakrate` with `mtu`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tbf {
    pub rate: u64,
    pub burst: u32,
    pub limit: u32,
    pub peak_rate: Option<u64>,
    /// The peak bucket's size (tc's `mtu`/`minburst`); needed with a peak rate.
    pub mtu: u32,
}

const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RTAB: u16 = 2;
const TCA_TBF_PTAB: u16 = 3;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_PRATE64: u16 = 5;
const TCA_TBF_BURST: u16 = 6;
const TCA_TBF_PBURST: u16 = 7;

/// iproute2's LINKLAYER_ETHERNET.
const LINKLAYER_ETHERNET: u8 = 1;

/// `struct tc_ratespec` and its 256-entry rate table, as tc_calc_rtable computes them.
struct RateTable {
    spec: [u8; 12],
    table: Vec<u8>,
    rate32: u32,
}

fn rate_table(rate: u64, mtu: u32, psched: &Psched) -> RateTable {
    let rate32 = if rate >= 1 << 32 {
        u32::MAX
    } else {
        rate as u32
    };
    let mtu = if mtu == 0 { 2047 } else { mtu };
    let mut cell_log = 0u8;
    while (mtu >> cell_log) > 255 {
        cell_log += 1;
    }
    let mut table = Vec::with_capacity(1024);
    for i in 0..256u32 {
        let size = (i + 1) << cell_log;
        table.extend_from_slice(&psched.xmit_ticks(rate32, size).to_ne_bytes());
    }
    let mut spec = [0u8; 12];
    spec[0] = cell_log;
    spec[1] = LINKLAYER_ETHERNET;
    // overhead (u16) 0, cell_align (i16) -1, mpu (u16) 0, rate (u32).
    spec[4..6].copy_from_slice(&(-1i16).to_ne_bytes());
    spec[8..12].copy_from_slice(&rate32.to_ne_bytes());
    RateTable {
        spec,
        table,
        rate32,
    }
}

impl Tbf {
    pub fn validate(&self) -> Result<(), NetlinkError> {
        if self.rate == 0 {
            return Err(NetlinkError::Invalid("tbf needs a rate".into()));
        }
        if self.burst == 0 {
            return Err(NetlinkError::Invalid(
                "tbf needs a burst (buffer) size".into(),
            ));
        }
        if self.limit == 0 {
            return Err(NetlinkError::Invalid("tbf needs a limit".into()));
        }
        if self.peak_rate.is_some_and(|p| p > 0) && self.mtu == 0 {
            return Err(NetlinkError::Invalid(
                "a tbf peak rate needs an mtu (min burst)".into(),
            ));
        }
        Ok(())
    }

    fn options(&self, b: &mut MessageBuilder, psched: &Psched) {
        let peak = self.peak_rate.filter(|p| *p > 0);
        // With no mtu given tc builds the rate table for its default (0 → 2047).
        let rtab = rate_table(self.rate, self.mtu, psched);
        let ptab = peak.map(|p| rate_table(p, self.mtu, psched));
        // struct tc_tbf_qopt: rate, peakrate, limit, buffer, mtu.
        let mut qopt = Vec::with_capacity(36);
        qopt.extend_from_slice(&rtab.spec);
        qopt.extend_from_slice(&ptab.as_ref().map(|p| p.spec).unwrap_or([0; 12]));
        qopt.extend_from_slice(&self.limit.to_ne_bytes());
        qopt.extend_from_slice(&psched.xmit_ticks(rtab.rate32, self.burst).to_ne_bytes());
        let mtu_ticks = ptab
            .as_ref()
            .map(|p| psched.xmit_ticks(p.rate32, self.mtu))
            .unwrap_or(0);
        qopt.extend_from_slice(&mtu_ticks.to_ne_bytes());

        let nest = b.begin_nest(TCA_OPTIONS);
        b.attr(TCA_TBF_PARMS, &qopt);
        b.attr_u32(TCA_TBF_BURST, self.burst);
        if self.rate >= 1 << 32 {
            b.attr(TCA_TBF_RATE64, &self.rate.to_ne_bytes());
        }
        b.attr(TCA_TBF_RTAB, &rtab.table);
        if let (Some(peak), Some(ptab)) = (peak, &ptab) {
            if peak >= 1 << 32 {
                b.attr(TCA_TBF_PRATE64, &peak.to_ne_bytes());
            }
            b.attr_u32(TCA_TBF_PBURST, self.mtu);
            b.attr(TCA_TBF_PTAB, &ptab.table);
        }
        b.end_nest(nest);
    }
}

/// prio's parameters: the number of bands and the priority map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prio {
    pub bands: u32,
    pub priomap: [u8; 16],
}

impl Prio {
    /// tc's default map, for `bands` bands.
    pub const DEFAULT_PRIOMAP: [u8; 16] = [1, 2, 2, 2, 1, 2, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];

    pub fn with_bands(bands: u32) -> Self {
        Self {
            bands,
            priomap: Self::DEFAULT_PRIOMAP,
        }
    }
}

/// htb's qdisc parameters: where unclassified traffic goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Htb {
    /// The minor number of the default class.
    pub default_class: u32,
}

const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_CTAB: u16 = 3;
const TCA_HTB_RTAB: u16 = 4;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;

/// An htb class: a rate, and a ceiling it may borrow up to (tc's default: the rate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HtbClass {
    pub rate: u64,
    pub ceil: Option<u64>,
}

impl HtbClass {
    /// The class options, as `htb_parse_class_opt` builds them (mtu 1600, default bursts).
    fn options(&self, b: &mut MessageBuilder, psched: &Psched) {
        const MTU: u32 = 1600;
        let ceil = self.ceil.unwrap_or(self.rate);
        let hz = u64::from(psched.hz().max(1));
        let buffer = (self.rate / hz) as u32 + MTU;
        let cbuffer = (ceil / hz) as u32 + MTU;
        let rtab = rate_table(self.rate, MTU, psched);
        let ctab = rate_table(ceil, MTU, psched);
        let mut opt = Vec::with_capacity(44);
        opt.extend_from_slice(&rtab.spec);
        opt.extend_from_slice(&ctab.spec);
        opt.extend_from_slice(&psched.xmit_ticks(rtab.rate32, buffer).to_ne_bytes());
        opt.extend_from_slice(&psched.xmit_ticks(ctab.rate32, cbuffer).to_ne_bytes());
        opt.extend_from_slice(&[0u8; 12]); // quantum, level, prio
        let nest = b.begin_nest(TCA_OPTIONS);
        if self.rate >= 1 << 32 {
            b.attr(TCA_HTB_RATE64, &self.rate.to_ne_bytes());
        }
        if ceil >= 1 << 32 {
            b.attr(TCA_HTB_CEIL64, &ceil.to_ne_bytes());
        }
        b.attr(TCA_HTB_PARMS, &opt);
        b.attr(TCA_HTB_RTAB, &rtab.table);
        b.attr(TCA_HTB_CTAB, &ctab.table);
        b.end_nest(nest);
    }
}

/// A qdisc to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Qdisc {
    Netem(Netem),
    Tbf(Tbf),
    Prio(Prio),
    Htb(Htb),
}

impl Qdisc {
    pub fn kind(&self) -> &'static str {
        match self {
            Qdisc::Netem(_) => "netem",
            Qdisc::Tbf(_) => "tbf",
            Qdisc::Prio(_) => "prio",
            Qdisc::Htb(_) => "htb",
        }
    }

    pub fn validate(&self, psched: &Psched) -> Result<(), NetlinkError> {
        match self {
            Qdisc::Netem(n) => n.validate(psched),
            Qdisc::Tbf(t) => t.validate(),
            Qdisc::Prio(p) if !(2..=16).contains(&p.bands) => {
                Err(NetlinkError::Invalid("prio takes 2 to 16 bands".into()))
            }
            Qdisc::Prio(_) | Qdisc::Htb(_) => Ok(()),
        }
    }
}

/// `tc qdisc add dev DEV PLACEMENT KIND OPTIONS`: RTM_NEWQDISC with NLM_F_EXCL|NLM_F_CREATE.
pub fn add_qdisc(placement: Placement, qdisc: &Qdisc, psched: &Psched) -> MessageBuilder {
    let mut b = MessageBuilder::new(
        RTM_NEWQDISC,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE,
    );
    b.header(&placement.tcmsg());
    b.attr_str(TCA_KIND, qdisc.kind());
    match qdisc {
        Qdisc::Netem(netem) => {
            b.attr(TCA_OPTIONS, &netem.options(psched));
        }
        Qdisc::Tbf(tbf) => tbf.options(&mut b, psched),
        Qdisc::Prio(prio) => {
            // addattr_nest_compat: the struct, then an (empty) nest of the same type.
            let mut payload = prio.bands.to_ne_bytes().to_vec();
            payload.extend_from_slice(&prio.priomap);
            let mut inner = MessageBuilder::new(0, 0);
            inner.header(&payload);
            inner.attr(TCA_OPTIONS, &[]);
            let inner = inner.finish(0);
            b.attr(TCA_OPTIONS, &inner[crate::message::HEADER_LEN..]);
        }
        Qdisc::Htb(htb) => {
            // struct tc_htb_glob: version 3, rate2quantum 10, default class, debug, direct_pkts.
            let nest = b.begin_nest(TCA_OPTIONS);
            b.attr(TCA_HTB_INIT, &words(&[3, 10, htb.default_class, 0, 0]));
            b.end_nest(nest);
        }
    }
    b
}

/// `tc class add dev DEV parent P: classid P:N htb rate R [ceil C]`: RTM_NEWTCLASS.
pub fn add_htb_class(placement: Placement, class: &HtbClass, psched: &Psched) -> MessageBuilder {
    let mut b = MessageBuilder::new(
        RTM_NEWTCLASS,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE,
    );
    b.header(&placement.tcmsg());
    b.attr_str(TCA_KIND, "htb");
    class.options(&mut b, psched);
    b
}

/// A qdisc of any kind with options as the kernel dumped them: how a qdisc that was there
/// before is put back.
pub fn add_raw_qdisc(placement: Placement, kind: &str, options: &[u8]) -> MessageBuilder {
    let mut b = MessageBuilder::new(
        RTM_NEWQDISC,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE,
    );
    b.header(&placement.tcmsg());
    b.attr_str(TCA_KIND, kind);
    if !options.is_empty() {
        b.attr(TCA_OPTIONS, options);
    }
    b
}

/// `tc qdisc del dev DEV PLACEMENT`: RTM_DELQDISC.
pub fn delete_qdisc(placement: Placement) -> MessageBuilder {
    let mut b = MessageBuilder::new(RTM_DELQDISC, NLM_F_REQUEST | NLM_F_ACK);
    b.header(&placement.tcmsg());
    b
}

/// `tc qdisc show`: a dump of every qdisc of every device.
pub fn dump_qdiscs() -> MessageBuilder {
    let mut b = MessageBuilder::new(RTM_GETQDISC, NLM_F_REQUEST | NLM_F_DUMP);
    b.header(&[0u8; 20]);
    b
}

/// One qdisc as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QdiscInfo {
    pub ifindex: u32,
    pub handle: u32,
    pub parent: u32,
    pub kind: String,
    /// TCA_OPTIONS as dumped (enough to tell two configurations apart).
    pub options: Vec<u8>,
}

impl QdiscInfo {
    /// Parses an RTM_NEWQDISC payload (tcmsg + attributes).
    pub fn parse(payload: &[u8]) -> Result<Self, NetlinkError> {
        if payload.len() < 20 {
            return Err(NetlinkError::Truncated("tcmsg"));
        }
        let mut info = QdiscInfo {
            ifindex: u32_at(payload, 4).unwrap_or_default(),
            handle: u32_at(payload, 8).unwrap_or_default(),
            parent: u32_at(payload, 12).unwrap_or_default(),
            kind: String::new(),
            options: Vec::new(),
        };
        for Attr { kind, payload } in parse_attrs(&payload[20..])? {
            match kind {
                TCA_KIND => {
                    info.kind = String::from_utf8_lossy(payload)
                        .trim_end_matches('\0')
                        .to_owned()
                }
                TCA_OPTIONS => info.options = payload.to_vec(),
                _ => {}
            }
        }
        Ok(info)
    }

    pub fn is_root(&self) -> bool {
        self.parent == TC_H_ROOT
    }

    /// `tc`-like text for logs and comparisons: "netem 1: root" or "tbf 2: parent 1:".
    pub fn describe(&self) -> String {
        let h = |v: u32| format!("{:x}:{}", v >> 16, fmt_minor(v & 0xffff));
        let place = if self.is_root() {
            "root".to_owned()
        } else {
            format!("parent {}", h(self.parent))
        };
        format!("{} {} {place}", self.kind, h(self.handle))
    }

    /// Reads a netem's rate limit back (RATE64 wins over RATE), for reporting.
    pub fn netem_rate(&self) -> Option<u64> {
        let attrs = parse_attrs(self.options.get(24..)?).ok()?;
        let rate64 = attrs
            .iter()
            .find(|a| a.kind == TCA_NETEM_RATE64)
            .and_then(|a| u64_at(a.payload, 0));
        rate64.or_else(|| {
            attrs
                .iter()
                .find(|a| a.kind == TCA_NETEM_RATE)
                .and_then(|a| a.u32())
                .map(u64::from)
        })
    }
}

fn fmt_minor(minor: u32) -> String {
    if minor == 0 {
        String::new()
    } else {
        format!("{minor:x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_combinations_are_refused_like_tc_refuses_them() {
        let p = Psched::default();
        let mut n = Netem::new();
        n.reorder = Fraction::parse("25").unwrap();
        assert!(n.validate(&p).is_err(), "reorder without delay");
        let mut n = Netem::new();
        n.gap = 5;
        assert!(n.validate(&p).is_err(), "gap without reorder");
        let mut n = Netem::new();
        n.latency_us = 300_000_000;
        assert!(n.validate(&p).is_err(), "delay beyond 32-bit ticks");
        assert!(Tbf::default().validate().is_err());
        assert!(Qdisc::Prio(Prio::with_bands(1)).validate(&p).is_err());
    }

    #[test]
    fn a_duplicate_correlation_alone_is_kept() {
        let p = Psched::default();
        let mut n = Netem::new();
        n.duplicate = Fraction::parse("10").unwrap();
        n.duplicate_correlation = Fraction::parse("50").unwrap();
        let opts = n.options(&p);
        let attrs = parse_attrs(&opts[24..]).unwrap();
        assert_eq!(attrs[0].kind, TCA_NETEM_CORR);
        assert_eq!(u32_at(attrs[0].payload, 8), Some(0x8000_0000));
    }

    #[test]
    fn dumps_parse_back() {
        let p = Psched::default();
        let mut n = Netem::new();
        n.rate = Some(12_500_000_000);
        let bytes = add_qdisc(
            Placement {
                ifindex: 3,
                parent: handle(1, 4),
                handle: handle(5, 0),
            },
            &Qdisc::Netem(n),
            &p,
        )
        .finish(1);
        let info = QdiscInfo::parse(&bytes[16..]).unwrap();
        assert_eq!(info.kind, "netem");
        assert_eq!(info.ifindex, 3);
        assert_eq!(info.describe(), "netem 5: parent 1:4");
        assert_eq!(info.netem_rate(), Some(12_500_000_000));
        assert!(QdiscInfo::parse(&[0; 4]).is_err());
    }
}

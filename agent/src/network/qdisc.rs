//! The egress qdisc tree of a device, planned from the pod's tc rules and built over netlink.
//!
//! Layout (as Chaos Mesh builds it, so a Chaos Mesh user recognises `tc qdisc show`): rules for
//! every packet are chained from the root (handles 1:, 2:, …); rules with a filter hang under a
//! prio qdisc with 3 + N bands, one band per filter from band 4 on, and an iptables CLASSIFY
//! rule (mangle CHAOS-TC) sends matching packets to their band. netem rules that go to the
//! userspace path are not in the tree at all: they become NFQUEUE rules.
//!
//! What was there before is recorded once (the baseline) and put back on recovery: the kernel's
//! default root (handle 0:) comes back by itself when ours is deleted; a classless qdisc someone
//! installed is re-created from its dumped options; a deeper tree is refused up front.

use netlink::NetlinkError;
use netlink::psched::Psched;
use netlink::tc::{
    Htb, HtbClass, Placement, Prio, Qdisc, QdiscInfo, RTM_NEWQDISC, TC_H_ROOT, add_htb_class,
    add_qdisc, add_raw_qdisc, delete_qdisc, dump_qdiscs, handle,
};
use serde::{Deserialize, Serialize};

use super::error::NetworkError;
use super::spec::{TcAction, TcFilter, TcRule};

/// The parent of ingress and clsact qdiscs: not part of the egress tree.
const TC_H_INGRESS: u32 = 0xffff_fff1;

/// What a device's root was before we touched it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Baseline {
    /// The kernel's default (handle 0:); it returns when our root is deleted.
    Default { kind: String },
    /// A classless qdisc someone installed; re-created on recovery.
    Custom {
        kind: String,
        handle: u32,
        options: Vec<u8>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub device: String,
    pub baseline: Baseline,
}

/// One qdisc to add, and the classes to add to it right after (htb's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedQdisc {
    pub parent: u32,
    pub handle: u32,
    pub qdisc: Qdisc,
    pub classes: Vec<(u32, HtbClass)>,
}

/// The classful qdisc filtered rules hang under: prio (as Chaos Mesh builds it), or htb where the
/// kernel has no sch_prio (classes as fast as the link, so only the rules under them shape).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Classful {
    Prio,
    Htb,
}

/// The rate of the htb classes that only sort traffic: 32 Gbit/s, above any pod's veth here and
/// still a 32-bit rate.
const SORTING_RATE: u64 = 4_000_000_000;

/// An iptables CLASSIFY rule: packets matching `filter` leaving `device` go to `class`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classify {
    pub device: String,
    pub filter: TcFilter,
    pub class: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DevicePlan {
    pub qdiscs: Vec<PlannedQdisc>,
    pub classify: Vec<Classify>,
}

/// Plans one device's tree from its rules. `in_kernel` says which rules belong in the tree
/// (tbf always; netem unless it goes to the userspace path).
pub fn plan_device(
    device: &str,
    rules: &[&TcRule],
    in_kernel: impl Fn(&TcRule) -> bool,
    classful: Classful,
) -> DevicePlan {
    let tree: Vec<&TcRule> = rules.iter().copied().filter(|r| in_kernel(r)).collect();
    let mut plan = DevicePlan::default();
    let qdisc_of = |rule: &TcRule| match &rule.action {
        TcAction::Netem(n) => Qdisc::Netem(n.to_qdisc()),
        TcAction::Bandwidth(t) => Qdisc::Tbf(t.to_qdisc()),
    };
    let mut next: u16 = 1;
    let mut parent = TC_H_ROOT;
    for rule in tree.iter().filter(|r| r.filter.is_global()) {
        plan.qdiscs.push(PlannedQdisc {
            parent,
            handle: handle(next, 0),
            qdisc: qdisc_of(rule),
            classes: Vec::new(),
        });
        parent = handle(next, 0);
        next += 1;
    }
    let mut groups: Vec<(&TcFilter, Vec<&TcRule>)> = Vec::new();
    for rule in tree.iter().filter(|r| !r.filter.is_global()) {
        match groups.iter_mut().find(|(f, _)| **f == rule.filter) {
            Some((_, list)) => list.push(rule),
            None => groups.push((&rule.filter, vec![rule])),
        }
    }
    if groups.is_empty() {
        return plan;
    }
    let prio = next;
    next += 1;
    let sorting = HtbClass {
        rate: SORTING_RATE,
        ceil: None,
    };
    plan.qdiscs.push(match classful {
        Classful::Prio => PlannedQdisc {
            parent,
            handle: handle(prio, 0),
            qdisc: Qdisc::Prio(Prio::with_bands(3 + groups.len() as u32)),
            classes: Vec::new(),
        },
        // Unclassified traffic goes to class 1; the filters' classes are 4, 5, … as prio's bands.
        Classful::Htb => PlannedQdisc {
            parent,
            handle: handle(prio, 0),
            qdisc: Qdisc::Htb(Htb { default_class: 1 }),
            classes: std::iter::once(1)
                .chain((0..groups.len()).map(|g| g as u16 + 4))
                .map(|minor| (handle(prio, minor), sorting.clone()))
                .collect(),
        },
    });
    for (band, (filter, group)) in groups.into_iter().enumerate() {
        let class = handle(prio, band as u16 + 4);
        let mut parent = class;
        for rule in group {
            plan.qdiscs.push(PlannedQdisc {
                parent,
                handle: handle(next, 0),
                qdisc: qdisc_of(rule),
                classes: Vec::new(),
            });
            parent = handle(next, 0);
            next += 1;
        }
        plan.classify.push(Classify {
            device: device.to_owned(),
            filter: filter.clone(),
            class,
        });
    }
    plan
}

/// The netlink operations on one namespace's qdiscs (the real one is a route socket opened
/// inside the namespace).
pub trait TrafficControl {
    fn ifindex(&self, device: &str) -> Option<u32>;
    /// Every device of the namespace, for errors that list what there is.
    fn devices(&self) -> Result<Vec<String>, NetworkError>;
    fn dump(&mut self) -> Result<Vec<QdiscInfo>, NetlinkError>;
    fn add(&mut self, placement: Placement, qdisc: &Qdisc) -> Result<(), NetlinkError>;
    fn add_class(&mut self, placement: Placement, class: &HtbClass) -> Result<(), NetlinkError>;
    fn add_raw(
        &mut self,
        placement: Placement,
        kind: &str,
        options: &[u8],
    ) -> Result<(), NetlinkError>;
    fn delete(&mut self, placement: Placement) -> Result<(), NetlinkError>;
}

/// The real [`TrafficControl`].
pub struct NetlinkTc {
    socket: netlink::socket::NetlinkSocket,
    psched: Psched,
}

impl NetlinkTc {
    /// Opens a route socket in the calling thread's namespace.
    pub fn open() -> Result<Self, NetworkError> {
        Ok(Self {
            socket: netlink::socket::NetlinkSocket::open(netlink::socket::Family::Route)
                .map_err(NetworkError::netlink("opening a route netlink socket"))?,
            psched: Psched::from_proc(),
        })
    }
}

impl TrafficControl for NetlinkTc {
    fn ifindex(&self, device: &str) -> Option<u32> {
        nix::net::if_::if_nametoindex(device).ok()
    }

    fn devices(&self) -> Result<Vec<String>, NetworkError> {
        super::netns::device_names()
    }

    fn dump(&mut self) -> Result<Vec<QdiscInfo>, NetlinkError> {
        self.socket
            .dump(dump_qdiscs(), RTM_NEWQDISC)?
            .iter()
            .map(|p| QdiscInfo::parse(p))
            .collect()
    }

    fn add(&mut self, placement: Placement, qdisc: &Qdisc) -> Result<(), NetlinkError> {
        self.socket
            .request(add_qdisc(placement, qdisc, &self.psched))
    }

    fn add_class(&mut self, placement: Placement, class: &HtbClass) -> Result<(), NetlinkError> {
        self.socket
            .request(add_htb_class(placement, class, &self.psched))
    }

    fn add_raw(
        &mut self,
        placement: Placement,
        kind: &str,
        options: &[u8],
    ) -> Result<(), NetlinkError> {
        self.socket.request(add_raw_qdisc(placement, kind, options))
    }

    fn delete(&mut self, placement: Placement) -> Result<(), NetlinkError> {
        self.socket.request(delete_qdisc(placement))
    }
}

/// Whether the kernel refused a qdisc kind it does not have (no sch_netem).
pub fn is_unknown_kind(err: &NetlinkError) -> bool {
    matches!(err, NetlinkError::Kernel { errno, .. } if *errno == nix::errno::Errno::ENOENT || *errno == nix::errno::Errno::EOPNOTSUPP)
}

fn ifindex_of(tc: &dyn TrafficControl, device: &str) -> Result<u32, NetworkError> {
    match tc.ifindex(device) {
        Some(ifindex) => Ok(ifindex),
        None => Err(NetworkError::UnknownDevice {
            device: device.to_owned(),
            available: tc.devices()?,
        }),
    }
}

/// Records what a device's root is now, refusing trees we could not put back.
pub fn baseline(tc: &mut dyn TrafficControl, device: &str) -> Result<Baseline, NetworkError> {
    let ifindex = ifindex_of(tc, device)?;
    let all = tc.dump().map_err(NetworkError::netlink(format!(
        "listing the qdiscs of {device}"
    )))?;
    let mine: Vec<&QdiscInfo> = all
        .iter()
        .filter(|q| q.ifindex == ifindex && q.parent != TC_H_INGRESS)
        .collect();
    let Some(root) = mine.iter().find(|q| q.is_root()) else {
        return Ok(Baseline::Default {
            kind: "noqueue".into(),
        });
    };
    if root.handle >> 16 == 0 {
        return Ok(Baseline::Default {
            kind: root.kind.clone(),
        });
    }
    let children: Vec<String> = mine
        .iter()
        .filter(|q| !q.is_root())
        .map(|q| q.describe())
        .collect();
    if !children.is_empty() {
        return Err(NetworkError::UnrestorableQdisc {
            device: device.to_owned(),
            tree: format!("{}, {}", root.describe(), children.join(", ")),
        });
    }
    Ok(Baseline::Custom {
        kind: root.kind.clone(),
        handle: root.handle,
        options: root.options.clone(),
    })
}

/// Deletes whatever root the device has; "nothing to delete" is fine.
fn delete_root(
    tc: &mut dyn TrafficControl,
    device: &str,
    ifindex: u32,
) -> Result<(), NetworkError> {
    match tc.delete(Placement::root(ifindex)) {
        Ok(()) => Ok(()),
        Err(NetlinkError::Kernel { errno, .. })
            if errno == nix::errno::Errno::ENOENT || errno == nix::errno::Errno::EINVAL =>
        {
            Ok(())
        }
        Err(e) => Err(NetworkError::netlink(format!(
            "deleting the root qdisc of {device}"
        ))(e)),
    }
}

/// Why building a tree failed: the kernel lacks netem (the caller may fall back), or anything
/// else.
#[derive(Debug)]
pub enum BuildError {
    NetemRefused(String),
    /// The kernel has no sch_prio: plan with htb instead.
    PrioRefused,
    Other(NetworkError),
}

/// Replaces the device's tree with `plan` (an empty plan leaves the device as the baseline).
/// On failure the device is put back to its baseline before returning.
pub fn build(
    tc: &mut dyn TrafficControl,
    device: &str,
    plan: &DevicePlan,
    baseline: &Baseline,
) -> Result<(), BuildError> {
    let ifindex = ifindex_of(tc, device).map_err(BuildError::Other)?;
    delete_root(tc, device, ifindex).map_err(BuildError::Other)?;
    for planned in &plan.qdiscs {
        let placement = Placement {
            ifindex,
            parent: planned.parent,
            handle: planned.handle,
        };
        if let Err(err) = tc.add(placement, &planned.qdisc) {
            let _ = restore(tc, device, baseline);
            if matches!(planned.qdisc, Qdisc::Netem(_)) && is_unknown_kind(&err) {
                return Err(BuildError::NetemRefused(format!(
                    "no netem qdisc in this kernel (sch_netem missing): {err}"
                )));
            }
            if matches!(planned.qdisc, Qdisc::Prio(_)) && is_unknown_kind(&err) {
                return Err(BuildError::PrioRefused);
            }
            return Err(BuildError::Other(NetworkError::netlink(format!(
                "adding {} to {device}",
                planned.qdisc.kind()
            ))(err)));
        }
        for (classid, class) in &planned.classes {
            let placement = Placement {
                ifindex,
                parent: planned.handle,
                handle: *classid,
            };
            if let Err(err) = tc.add_class(placement, class) {
                let _ = restore(tc, device, baseline);
                return Err(BuildError::Other(NetworkError::netlink(format!(
                    "adding an htb class to {device}"
                ))(err)));
            }
        }
    }
    if plan.qdiscs.is_empty() {
        restore(tc, device, baseline).map_err(BuildError::Other)?;
    }
    Ok(())
}

/// Puts the device's root back as it was.
pub fn restore(
    tc: &mut dyn TrafficControl,
    device: &str,
    baseline: &Baseline,
) -> Result<(), NetworkError> {
    let Some(ifindex) = tc.ifindex(device) else {
        return Ok(()); // the device is gone, and our tree with it
    };
    delete_root(tc, device, ifindex)?;
    if let Baseline::Custom {
        kind,
        handle,
        options,
    } = baseline
    {
        tc.add_raw(
            Placement {
                ifindex,
                parent: TC_H_ROOT,
                handle: *handle,
            },
            kind,
            options,
        )
        .map_err(NetworkError::netlink(format!(
            "restoring {kind} on {device}"
        )))?;
    }
    Ok(())
}

#[cfg(test)]
pub mod fake {
    //! A namespace's traffic control in memory, recording what is asked of it.
    use super::*;

    /// A namespace's qdiscs in memory.
    #[derive(Debug, Default)]
    pub struct FakeTc {
        pub qdiscs: Vec<QdiscInfo>,
        pub no_netem: bool,
        pub log: Vec<String>,
    }

    impl TrafficControl for FakeTc {
        fn ifindex(&self, device: &str) -> Option<u32> {
            (device == "eth0").then_some(2)
        }
        fn devices(&self) -> Result<Vec<String>, NetworkError> {
            Ok(vec!["lo".into(), "eth0".into()])
        }
        fn dump(&mut self) -> Result<Vec<QdiscInfo>, NetlinkError> {
            Ok(self.qdiscs.clone())
        }
        fn add(&mut self, p: Placement, q: &Qdisc) -> Result<(), NetlinkError> {
            if self.no_netem && q.kind() == "netem" {
                return Err(NetlinkError::Kernel {
                    errno: nix::errno::Errno::ENOENT,
                    message: "Specified qdisc kind is unknown".into(),
                });
            }
            self.log.push(format!("add {} {:x}", q.kind(), p.handle));
            Ok(())
        }
        fn add_class(&mut self, p: Placement, _: &HtbClass) -> Result<(), NetlinkError> {
            self.log.push(format!("class {:x}", p.handle));
            Ok(())
        }
        fn add_raw(&mut self, p: Placement, kind: &str, _: &[u8]) -> Result<(), NetlinkError> {
            self.log.push(format!("add {kind} {:x}", p.handle));
            Ok(())
        }
        fn delete(&mut self, _: Placement) -> Result<(), NetlinkError> {
            self.log.push("delete root".into());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeTc;
    use super::*;
    use crate::network::spec::{NetemSpec, TbfSpec};

    fn netem(filter: &str) -> TcRule {
        TcRule {
            device: "eth0".into(),
            filter: TcFilter {
                ipset: filter.into(),
                ..Default::default()
            },
            action: TcAction::Netem(NetemSpec {
                latency_us: 1000,
                limit: 1000,
                ..Default::default()
            }),
        }
    }

    fn tbf() -> TcRule {
        TcRule {
            device: "eth0".into(),
            filter: TcFilter::default(),
            action: TcAction::Bandwidth(TbfSpec {
                rate: 125_000,
                burst: 10_000,
                limit: 10_000,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn trees_are_laid_out_like_chaos_mesh() {
        let rules = [netem(""), tbf(), netem("a"), netem("b"), netem("a")];
        let refs: Vec<&TcRule> = rules.iter().collect();
        let plan = plan_device("eth0", &refs, |_| true, Classful::Prio);
        let layout: Vec<(u32, u32, &str)> = plan
            .qdiscs
            .iter()
            .map(|q| (q.parent, q.handle, q.qdisc.kind()))
            .collect();
        assert_eq!(
            layout,
            [
                (TC_H_ROOT, handle(1, 0), "netem"),
                (handle(1, 0), handle(2, 0), "tbf"),
                (handle(2, 0), handle(3, 0), "prio"),
                (handle(3, 4), handle(4, 0), "netem"),
                (handle(4, 0), handle(5, 0), "netem"),
                (handle(3, 5), handle(6, 0), "netem"),
            ]
        );
        assert_eq!(plan.classify.len(), 2);
        assert_eq!(plan.classify[1].class, handle(3, 5));
        // The userspace path keeps netem out of the tree.
        let plan = plan_device(
            "eth0",
            &refs,
            |r| matches!(r.action, TcAction::Bandwidth(_)),
            Classful::Prio,
        );
        assert_eq!(plan.qdiscs.len(), 1);
        assert!(plan.classify.is_empty());
    }

    #[test]
    fn without_prio_filters_hang_under_htb_classes() {
        let rules = [tbf(), netem("a")];
        let refs: Vec<&TcRule> = rules.iter().collect();
        let plan = plan_device("eth0", &refs, |_| true, Classful::Htb);
        assert_eq!(plan.qdiscs[1].qdisc, Qdisc::Htb(Htb { default_class: 1 }));
        let classes: Vec<u32> = plan.qdiscs[1].classes.iter().map(|(c, _)| *c).collect();
        assert_eq!(classes, [handle(2, 1), handle(2, 4)]);
        assert_eq!(plan.qdiscs[2].parent, handle(2, 4));
        assert_eq!(plan.classify[0].class, handle(2, 4));
        let mut tc = FakeTc::default();
        build(
            &mut tc,
            "eth0",
            &plan,
            &Baseline::Default {
                kind: "noqueue".into(),
            },
        )
        .unwrap();
        assert_eq!(
            tc.log,
            [
                "delete root",
                "add tbf 10000",
                "add htb 20000",
                "class 20001",
                "class 20004",
                "add netem 30000"
            ]
        );
    }

    fn info(handle: u32, parent: u32, kind: &str) -> QdiscInfo {
        QdiscInfo {
            ifindex: 2,
            handle,
            parent,
            kind: kind.into(),
            options: vec![1, 2, 3, 4],
        }
    }

    #[test]
    fn baselines_tell_defaults_custom_and_unrestorable_apart() {
        let mut tc = FakeTc {
            qdiscs: vec![
                info(0, TC_H_ROOT, "noqueue"),
                info(0xffff_0000, TC_H_INGRESS, "ingress"),
            ],
            ..Default::default()
        };
        assert_eq!(
            baseline(&mut tc, "eth0").unwrap(),
            Baseline::Default {
                kind: "noqueue".into()
            }
        );
        tc.qdiscs = vec![info(handle(8, 0), TC_H_ROOT, "fq_codel")];
        assert!(matches!(
            baseline(&mut tc, "eth0").unwrap(),
            Baseline::Custom {
                handle: 0x8_0000,
                ..
            }
        ));
        tc.qdiscs.push(info(handle(9, 0), handle(8, 1), "sfq"));
        let err = baseline(&mut tc, "eth0").unwrap_err();
        assert!(
            err.to_string()
                .contains("fq_codel 8: root, sfq 9: parent 8:1"),
            "{err}"
        );
        let err = baseline(&mut tc, "eth7").unwrap_err();
        assert_eq!(
            err.to_string(),
            "device eth7 does not exist in the pod's network namespace (it has: lo, eth0)"
        );
    }

    #[test]
    fn a_refused_netem_puts_the_baseline_back() {
        let mut tc = FakeTc {
            no_netem: true,
            ..Default::default()
        };
        let rules = [tbf(), netem("")];
        let refs: Vec<&TcRule> = rules.iter().collect();
        let plan = plan_device("eth0", &refs, |_| true, Classful::Prio);
        let custom = Baseline::Custom {
            kind: "fq".into(),
            handle: handle(8, 0),
            options: vec![],
        };
        let err = build(&mut tc, "eth0", &plan, &custom).unwrap_err();
        assert!(matches!(err, BuildError::NetemRefused(_)));
        assert_eq!(
            tc.log,
            [
                "delete root",
                "add tbf 10000",
                "delete root",
                "add fq 80000"
            ]
        );
    }
}

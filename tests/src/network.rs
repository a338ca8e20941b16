//! The pod network of one testbed: a CNI bridge of its own and a /24 nobody else on this host uses.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use crate::error::{Error, Result};
use crate::layout::{DIR_PREFIX, Layout, TMP};

/// Candidates are 10.200.0.0/24 .. 10.255.255.0/24.
const FIRST: u32 = u32::from_be_bytes([10, 200, 0, 0]) >> 8;
const COUNT: u32 = 56 * 256;
const RANGE: &str = "10.200.0.0/16-10.255.0.0/16";

/// A /24 subnet, stored as its network address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet(Ipv4Addr);

impl Subnet {
    pub fn network(&self) -> Ipv4Addr {
        self.0
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & 0xffff_ff00 == u32::from(self.0)
    }

    fn overlaps(&self, net: u32, mask: u32) -> bool {
        let own = u32::from(self.0);
        own & mask == net & mask || net & 0xffff_ff00 == own
    }

    fn parse(s: &str) -> Option<Subnet> {
        let net: Ipv4Addr = s.trim().strip_suffix("/24")?.parse().ok()?;
        (u32::from(net) & 0xff == 0).then_some(Subnet(net))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/24", self.0)
    }
}

/// Picks a /24 derived from the testbed's identity, stepping past any that overlaps a route of
/// this host or the subnet of another testbed (which may not have a bridge, hence no route, yet).
pub(crate) fn choose_subnet(layout: &Layout) -> Result<Subnet> {
    let mut taken = routes();
    taken.extend(
        other_testbed_subnets(layout)
            .into_iter()
            .map(|s| (u32::from(s.0), 0xffff_ff00)),
    );
    let start = layout.pid.wrapping_mul(16).wrapping_add(layout.seq) % COUNT;
    (0..COUNT)
        .map(|i| Subnet(Ipv4Addr::from((FIRST + (start + i) % COUNT) << 8)))
        .find(|candidate| {
            !taken
                .iter()
                .any(|&(net, mask)| candidate.overlaps(net, mask))
        })
        .ok_or(Error::NoFreeSubnet { range: RANGE })
}

/// (destination, mask) of every IPv4 route but the default one.
fn routes() -> Vec<(u32, u32)> {
    let Ok(table) = std::fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // /proc/net/route prints addresses as the hex of the in-memory (network order) u32.
            let hex = |i: usize| {
                fields
                    .get(i)
                    .and_then(|f| u32::from_str_radix(f, 16).ok())
                    .map(|v| u32::from_be_bytes(v.to_le_bytes()))
            };
            Some((hex(1)?, hex(7)?))
        })
        .filter(|&(_, mask)| mask != 0)
        .collect()
}

fn other_testbed_subnets(own: &Layout) -> Vec<Subnet> {
    let Ok(entries) = std::fs::read_dir(TMP) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(DIR_PREFIX))
        .filter(|e| e.path() != own.base)
        .filter_map(|e| std::fs::read_to_string(e.path().join("subnet")).ok())
        .filter_map(|s| Subnet::parse(&s))
        .collect()
}

/// A bridge + host-local + loopback chain, as a cluster's simplest CNI setup would have it.
pub(crate) fn conflist(bridge: &str, subnet: Subnet, ipam_dir: &Path) -> String {
    let gateway = Ipv4Addr::from(u32::from(subnet.network()) + 1);
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "faultline-testbed",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "dataDir": ipam_dir,
                    "ranges": [[{ "subnet": subnet.to_string(), "gateway": gateway.to_string() }]],
                    "routes": [{ "dst": "0.0.0.0/0" }]
                }
            },
            { "type": "loopback" }
        ]
    })
    .to_string()
}

pub(crate) fn bridge_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Deletes the bridge if it exists (CNI creates it with the first pod).
pub(crate) fn delete_bridge(name: &str) -> Result<()> {
    if !bridge_exists(name) {
        return Ok(());
    }
    let out = Command::new("ip")
        .args(["link", "del", name])
        .output()
        .map_err(|source| Error::Spawn {
            program: "ip".into(),
            source,
        })?;
    if out.status.success() || !bridge_exists(name) {
        Ok(())
    } else {
        Err(Error::Command {
            command: format!("ip link del {name}"),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_both_ways() {
        let s = Subnet(Ipv4Addr::new(10, 222, 0, 0));
        assert!(s.overlaps(u32::from(Ipv4Addr::new(10, 0, 0, 0)), 0xff00_0000));
        assert!(s.overlaps(u32::from(Ipv4Addr::new(10, 222, 0, 128)), 0xffff_ff80));
        assert!(!s.overlaps(u32::from(Ipv4Addr::new(10, 223, 0, 0)), 0xffff_ff00));
    }

    #[test]
    fn contains_only_its_24() {
        let s = Subnet(Ipv4Addr::new(10, 222, 7, 0));
        assert!(s.contains(Ipv4Addr::new(10, 222, 7, 254)));
        assert!(!s.contains(Ipv4Addr::new(10, 222, 8, 1)));
    }

    #[test]
    fn parse_round_trips() {
        let s = Subnet(Ipv4Addr::new(10, 201, 3, 0));
        assert_eq!(Subnet::parse(&s.to_string()), Some(s));
        assert_eq!(Subnet::parse("10.1.1.1/24"), None);
    }

    #[test]
    fn chosen_subnet_is_in_range() {
        let s = choose_subnet(&Layout::new(123, 0)).expect("a free subnet");
        assert_eq!(s.network().octets()[0], 10);
        assert!(s.network().octets()[1] >= 200);
    }
}

//! /etc/resolv.conf as Chaos Mesh's chaos-daemon treats it: SetDNSServer replaces every line
//! that contains `nameserver` with `nameserver SERVER`, and nothing else; the nameservers are
//! what our responder relays to.

use std::net::IpAddr;

pub const PATH: &str = "/etc/resolv.conf";
/// Where chaos-daemon keeps the original while the experiment runs.
pub const BACKUP: &str = "/etc/resolv.conf.chaos.bak";

/// chaos-daemon's `sed -i 's/.*nameserver.*/nameserver SERVER/'`: every line containing
/// `nameserver` anywhere (a commented one too) becomes exactly `nameserver SERVER`; every other
/// byte, the line endings and a missing final newline included, stays.
pub fn point_at(original: &[u8], server: IpAddr) -> Vec<u8> {
    let replacement = format!("nameserver {server}");
    let mut out = Vec::with_capacity(original.len() + 32);
    for (i, line) in original.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        if line.windows(10).any(|w| w == b"nameserver") {
            out.extend_from_slice(replacement.as_bytes());
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

/// The addresses of the `nameserver` lines a resolver reads (comments skipped; the glibc
/// resolver ignores unparsable ones, and so do we).
pub fn nameservers(content: &[u8]) -> Vec<IpAddr> {
    String::from_utf8_lossy(content)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .filter_map(|address| address.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// chaos-daemon rewrites with `sed 's/.*nameserver.*/nameserver X/'`: whole lines, every
    /// one that mentions `nameserver`, the rest untouched.
    #[test]
    fn every_nameserver_line_is_replaced_and_nothing_else() {
        let original = b"search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\n  nameserver   10.0.0.2 # second\n# nameserver in a comment\noptions ndots:5";
        let rewritten = point_at(original, "10.0.0.53".parse().unwrap());
        assert_eq!(
            String::from_utf8(rewritten).unwrap(),
            "search default.svc.cluster.local svc.cluster.local\nnameserver 10.0.0.53\nnameserver 10.0.0.53\nnameserver 10.0.0.53\noptions ndots:5"
        );
        // CRLF and a trailing newline survive.
        assert_eq!(
            point_at(
                b"nameserver 1.1.1.1\r\nsearch x\r\n",
                "::1".parse().unwrap()
            ),
            b"nameserver ::1\nsearch x\r\n"
        );
        assert_eq!(point_at(b"", "1.2.3.4".parse().unwrap()), b"");
    }

    #[test]
    fn nameservers_are_read_as_a_resolver_reads_them() {
        let conf = b"# nameserver 9.9.9.9\nnameserver 10.96.0.10\nnameserver fd00::a\nnameserver bogus\nsearch a\n";
        assert_eq!(
            nameservers(conf),
            [
                "10.96.0.10".parse::<IpAddr>().unwrap(),
                "fd00::a".parse().unwrap()
            ]
        );
    }
}

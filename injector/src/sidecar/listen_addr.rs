//! Go's listen addresses (`net.Listen("tcp", addr)`): `:65534` (every address), `HOST:PORT`,
//! `[V6]:PORT`.

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};

use super::SidecarError;

/// Parses an `-addr` value. `:PORT` binds every IPv4 address (pod IPs are IPv4 on most
/// clusters; `[::]:PORT` asks for IPv6 and, where the node allows it, IPv4 too).
pub fn parse_listen_addr(value: &str) -> Result<SocketAddr, SidecarError> {
    let err = |reason: String| SidecarError::Addr {
        value: value.to_owned(),
        reason,
    };
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| err("expected HOST:PORT or :PORT".into()))?;
    let port: u16 = port
        .parse()
        .map_err(|_| err(format!("port {port:?} is not a number from 0 to 65535")))?;
    if host.is_empty() {
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, port)
        .to_socket_addrs()
        .map_err(|e| err(format!("cannot resolve {host:?}: {e}")))?
        .next()
        .ok_or_else(|| err(format!("{host:?} has no address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_addresses() {
        assert_eq!(
            parse_listen_addr(":65534").unwrap(),
            "0.0.0.0:65534".parse().unwrap()
        );
        assert_eq!(
            parse_listen_addr("127.0.0.1:1").unwrap(),
            "127.0.0.1:1".parse().unwrap()
        );
        assert_eq!(
            parse_listen_addr("[::]:2").unwrap(),
            "[::]:2".parse().unwrap()
        );
        assert!(parse_listen_addr("localhost:3").unwrap().ip().is_loopback());
        for (bad, why) in [
            ("65534", "HOST:PORT"),
            (":http", "not a number"),
            (":70000", "not a number"),
        ] {
            let e = parse_listen_addr(bad).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("-addr {bad:?}")) && e.contains(why),
                "{e}"
            );
        }
    }
}

//! The delay in `GET /latency/<delay>` and the `--listen` address, parsed at the edge.

use std::net::{Ipv4Addr, SocketAddr};

use netlink::units::parse_time_us;

use agent::network::NetworkError;

/// The longest delay accepted: the agent's own answers leave through the delayed device, so
/// a longer one would also hold back the request that removes it.
pub const MAX_DELAY_US: u32 = 60_000_000;

/// `20ms`, `1.5s`, `250us` (tc's units); a bare number is milliseconds, as the original
/// agent's `/latency/:time` took it; `0` (any unit) removes the delay.
pub fn parse_delay(text: &str) -> Result<u32, NetworkError> {
    let invalid = |reason: String| NetworkError::InvalidArgument {
        field: "delay".into(),
        reason,
    };
    let text = text.trim();
    let us = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        parse_time_us(&format!("{text}ms"))
    } else {
        parse_time_us(text)
    }
    .map_err(|e| invalid(e.to_string()))?;
    if us > MAX_DELAY_US {
        return Err(invalid(format!(
            "{text:?} is longer than {} (the answer to removing it would wait that long too)",
            format_delay(MAX_DELAY_US)
        )));
    }
    Ok(us)
}

/// A delay as tc would print it: `20ms`, `1500us`, `0`.
pub fn format_delay(us: u32) -> String {
    match us {
        0 => "0".into(),
        us if us % 1_000_000 == 0 => format!("{}s", us / 1_000_000),
        us if us % 1_000 == 0 => format!("{}ms", us / 1_000),
        us => format!("{us}us"),
    }
}

/// `--listen`: `ADDR:PORT`, or Go's `:PORT` for every IPv4 address.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{text:?}: port {port:?} is not a number from 0 to 65535"))?;
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    text.parse()
        .map_err(|_| format!("{text:?}: expected ADDR:PORT or :PORT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_in_tc_units_bare_numbers_in_milliseconds() {
        assert_eq!(parse_delay("20ms").unwrap(), 20_000);
        assert_eq!(parse_delay("20").unwrap(), 20_000);
        assert_eq!(parse_delay("1.5s").unwrap(), 1_500_000);
        assert_eq!(parse_delay("250us").unwrap(), 250);
        assert_eq!(parse_delay("0").unwrap(), 0);
        assert_eq!(parse_delay("0ms").unwrap(), 0);
        for bad in ["", "fast", "-5ms", "20 parsecs", "61s"] {
            let e = parse_delay(bad).unwrap_err().to_string();
            assert!(e.starts_with("delay: "), "{bad}: {e}");
        }
        assert!(parse_delay("61s").unwrap_err().to_string().contains("60s"));
    }

    #[test]
    fn delays_print_as_tc_prints_them() {
        assert_eq!(format_delay(20_000), "20ms");
        assert_eq!(format_delay(2_000_000), "2s");
        assert_eq!(format_delay(1_500), "1500us");
        assert_eq!(format_delay(0), "0");
    }

    #[test]
    fn go_listen_addresses() {
        assert_eq!(
            parse_listen(":2332").unwrap(),
            "0.0.0.0:2332".parse().unwrap()
        );
        assert_eq!(
            parse_listen("127.0.0.1:1").unwrap(),
            "127.0.0.1:1".parse().unwrap()
        );
        assert!(parse_listen(":x").unwrap_err().contains("not a number"));
        assert!(parse_listen("2332").unwrap_err().contains(":PORT"));
    }
}

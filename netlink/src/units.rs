//! iproute2's argument syntax for times, rates, sizes and percentages, converted exactly the way
//! `tc` converts them (same suffixes, same truncation and rounding), so a value given as Chaos
//! Mesh gives it to `tc` encodes to the same bytes.

use std::fmt;

/// Why a value could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid {what}: {expected}")]
pub struct UnitError {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static str,
}

fn err(what: &'static str, value: &str, expected: &'static str) -> UnitError {
    UnitError {
        what,
        value: value.to_owned(),
        expected,
    }
}

/// Splits a leading decimal number (like C's `strtod`, without hex or inf) from its suffix.
fn number_and_suffix(s: &str) -> Option<(f64, &str)> {
    let s = s.trim();
    let bytes = s.as_bytes();
    let mut end = 0;
    let mut seen_digit = false;
    while end < bytes.len() && (bytes[end].is_ascii_digit() || bytes[end] == b'.') {
        seen_digit |= bytes[end].is_ascii_digit();
        end += 1;
    }
    if !seen_digit {
        return None;
    }
    // An exponent only if digits follow it.
    if end < bytes.len() && (bytes[end] == b'e' || bytes[end] == b'E') {
        let mut exp_end = end + 1;
        if exp_end < bytes.len() && (bytes[exp_end] == b'+' || bytes[exp_end] == b'-') {
            exp_end += 1;
        }
        let digits_start = exp_end;
        while exp_end < bytes.len() && bytes[exp_end].is_ascii_digit() {
            exp_end += 1;
        }
        if exp_end > digits_start {
            end = exp_end;
        }
    }
    let value: f64 = s[..end].parse().ok()?;
    value.is_finite().then_some((value, &s[end..]))
}

/// A time in microseconds, as iproute2's `get_time`: a number with `s`/`sec`/`secs`,
/// `ms`/`msec`/`msecs`, `us`/`usec`/`usecs` (no suffix: microseconds); we also take `ns` and `µs`
/// as Go writes them. The result is truncated to whole microseconds, as `tc` does.
pub fn parse_time_us(s: &str) -> Result<u32, UnitError> {
    const EXPECTED: &str = "a non-negative time such as 100ms, 1.5s or 250us";
    let (value, suffix) = number_and_suffix(s).ok_or_else(|| err("time", s, EXPECTED))?;
    let scale = match suffix.to_ascii_lowercase().as_str() {
        "" | "us" | "usec" | "usecs" | "µs" => 1.0,
        "s" | "sec" | "secs" => 1e6,
        "ms" | "msec" | "msecs" => 1e3,
        "ns" | "nsec" | "nsecs" => 1e-3,
        _ => return Err(err("time", s, EXPECTED)),
    };
    let us = value * scale;
    if us >= f64::from(u32::MAX) {
        return Err(err("time", s, "at most 4294 seconds"));
    }
    Ok(us as u32)
}

/// A rate in bytes per second, as iproute2's `get_rate64`: bits per second with `bit`, `kbit`,
/// `mbit`, `gbit`, `tbit` (and `kibit`… powers of 1024), or bytes per second with `bps`, `kbps`,
/// `mbps`… (`Bps` in tc's spelling; case does not matter, so `mbps` is megaBYTES per second as in
/// tc and Chaos Mesh). A bare number is bits per second.
pub fn parse_rate_bytes(s: &str) -> Result<u64, UnitError> {
    const EXPECTED: &str = "a rate such as 1mbit, 100kbit or 1mbps (bytes/s)";
    let (value, suffix) = number_and_suffix(s).ok_or_else(|| err("rate", s, EXPECTED))?;
    let scale = match suffix.to_ascii_lowercase().as_str() {
        "" | "bit" => 1.0,
        "kibit" => 1024.0,
        "kbit" => 1000.0,
        "mibit" => 1024.0 * 1024.0,
        "mbit" => 1e6,
        "gibit" => 1024.0 * 1024.0 * 1024.0,
        "gbit" => 1e9,
        "tibit" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "tbit" => 1e12,
        "bps" => 8.0,
        "kibps" => 8.0 * 1024.0,
        "kbps" => 8000.0,
        "mibps" => 8.0 * 1024.0 * 1024.0,
        "mbps" => 8e6,
        "gibps" => 8.0 * 1024.0 * 1024.0 * 1024.0,
        "gbps" => 8e9,
        "tibps" => 8.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "tbps" => 8e12,
        _ => return Err(err("rate", s, EXPECTED)),
    };
    let bytes = value * scale / 8.0;
    if bytes < 1.0 {
        return Err(err("rate", s, "at least 8bit (1 byte per second)"));
    }
    if bytes >= u64::MAX as f64 {
        return Err(err("rate", s, "a rate that fits 64 bits"));
    }
    Ok(bytes as u64)
}

/// A size in bytes, as iproute2's `get_size`: `b`, `k`/`kb`, `m`/`mb`, `g`/`gb` (powers of 1024)
/// or `kbit`/`mbit`/`gbit`; a bare number is bytes.
pub fn parse_size(s: &str) -> Result<u32, UnitError> {
    const EXPECTED: &str = "a size such as 32k, 10000 or 32kbit";
    let (value, suffix) = number_and_suffix(s).ok_or_else(|| err("size", s, EXPECTED))?;
    let scale = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1024.0,
        "m" | "mb" => 1024.0 * 1024.0,
        "g" | "gb" => 1024.0 * 1024.0 * 1024.0,
        "kbit" => 1024.0 / 8.0,
        "mbit" => 1024.0 * 1024.0 / 8.0,
        "gbit" => 1024.0 * 1024.0 * 1024.0 / 8.0,
        _ => return Err(err("size", s, EXPECTED)),
    };
    let bytes = value * scale;
    if bytes >= f64::from(u32::MAX) {
        return Err(err("size", s, "less than 4 GiB"));
    }
    Ok(bytes as u32)
}

/// A probability as the kernel takes it: a fraction of 2^32-1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fraction(pub u32);

impl Fraction {
    pub const ZERO: Fraction = Fraction(0);

    /// From a percentage in 0..=100, rounded like iproute2's `set_percent` (`rint`).
    pub fn from_percent(percent: f64) -> Result<Fraction, UnitError> {
        if !(0.0..=100.0).contains(&percent) {
            return Err(err(
                "percentage",
                &percent.to_string(),
                "a percentage between 0 and 100",
            ));
        }
        Ok(Fraction(
            (percent / 100.0 * f64::from(u32::MAX)).round_ties_even() as u32,
        ))
    }

    /// From a percentage carried as a 32-bit float (Chaos Mesh's `float` fields), through the
    /// same text `tc` would have been given (`%f`, six decimals), so the bytes match.
    pub fn from_f32_percent(percent: f32) -> Result<Fraction, UnitError> {
        if !percent.is_finite() {
            return Err(err(
                "percentage",
                &percent.to_string(),
                "a percentage between 0 and 100",
            ));
        }
        let text = format!("{percent:.6}");
        Self::from_percent(text.parse().unwrap_or(f64::NAN))
    }

    /// A percentage as tc's text ("5%"), e.g. `"5"` or `"5%"`.
    pub fn parse(s: &str) -> Result<Fraction, UnitError> {
        let trimmed = s.trim();
        let number = trimmed.strip_suffix('%').unwrap_or(trimmed);
        let value: f64 = number
            .parse()
            .map_err(|_| err("percentage", s, "a percentage between 0 and 100"))?;
        Self::from_percent(value)
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// The probability in 0.0..=1.0.
    pub fn probability(self) -> f64 {
        f64::from(self.0) / f64::from(u32::MAX)
    }
}

impl fmt::Display for Fraction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.probability() * 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_follow_tc() {
        assert_eq!(parse_time_us("20ms"), Ok(20_000));
        assert_eq!(parse_time_us("1.5s"), Ok(1_500_000));
        assert_eq!(parse_time_us("250"), Ok(250));
        assert_eq!(parse_time_us("250usec"), Ok(250));
        assert_eq!(parse_time_us("1.0000005ms"), Ok(1000));
        assert_eq!(parse_time_us("1500ns"), Ok(1));
        assert_eq!(parse_time_us("0ms"), Ok(0));
        for bad in ["", "ms", "-1ms", "10 parsecs", "1h", "5000s", "nan"] {
            assert!(parse_time_us(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rates_follow_tc() {
        assert_eq!(parse_rate_bytes("1mbit"), Ok(125_000));
        assert_eq!(parse_rate_bytes("1mbps"), Ok(1_000_000));
        assert_eq!(parse_rate_bytes("1MBps"), Ok(1_000_000));
        assert_eq!(parse_rate_bytes("8000"), Ok(1000));
        assert_eq!(parse_rate_bytes("1kibit"), Ok(128));
        assert_eq!(parse_rate_bytes("10gbit"), Ok(1_250_000_000));
        assert_eq!(parse_rate_bytes("100gbit"), Ok(12_500_000_000));
        for bad in ["", "fast", "1 furlong", "-1mbit", "0bit", "4bit"] {
            assert!(parse_rate_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_follow_tc() {
        assert_eq!(parse_size("32kbit"), Ok(4096));
        assert_eq!(parse_size("10000"), Ok(10_000));
        assert_eq!(parse_size("32k"), Ok(32_768));
        assert_eq!(parse_size("1mb"), Ok(1 << 20));
        assert!(parse_size("5g").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn percentages_round_like_rint() {
        assert_eq!(Fraction::parse("5%").unwrap(), Fraction(0x0ccc_cccd));
        assert_eq!(Fraction::parse("25").unwrap(), Fraction(0x4000_0000));
        assert_eq!(Fraction::parse("50%").unwrap(), Fraction(0x8000_0000));
        assert_eq!(Fraction::parse("100").unwrap(), Fraction(u32::MAX));
        assert_eq!(Fraction::from_f32_percent(5.0), Fraction::parse("5"));
        assert!(Fraction::parse("101").is_err());
        assert!(Fraction::parse("-1").is_err());
        assert!(Fraction::from_f32_percent(f32::NAN).is_err());
        assert!(Fraction::from_f32_percent(100.5).is_err());
    }
}

//! Latency strings: Go's `time.ParseDuration` syntax (what Chaos Mesh validates and sends:
//! "300ms", "1.5s", "2h45m", "100us", "10µs"), with humantime's forms ("1min", "2 s") accepted
//! as a fallback for hand-written rules.

use std::time::Duration;

/// Why a latency string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("is empty")]
    Empty,
    #[error("is negative")]
    Negative,
    #[error("has no unit after {0:?} (use ns, us, µs, ms, s, m or h)")]
    MissingUnit(String),
    #[error("has unknown unit {0:?} (use ns, us, µs, ms, s, m or h)")]
    UnknownUnit(String),
    #[error("is not a number followed by a unit")]
    Malformed,
    #[error("is too long to represent")]
    Overflow,
}

/// Parses a Go duration string (an optional sign, then one or more `<decimal><unit>` terms,
/// or a bare "0"). Negative durations are refused: a latency cannot be negative.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DurationError::Empty);
    }
    match parse_go_duration(trimmed) {
        Ok(duration) => Ok(duration),
        Err(go_error) => humantime::parse_duration(trimmed).map_err(|_| go_error),
    }
}

fn parse_go_duration(text: &str) -> Result<Duration, DurationError> {
    let rest = match text.as_bytes().first() {
        Some(b'-') => {
            // "-0" is zero in Go; any other negative value is meaningless for a delay.
            return if text[1..].trim_start_matches('0').is_empty() && text.len() > 1 {
                Ok(Duration::ZERO)
            } else {
                Err(DurationError::Negative)
            };
        }
        Some(b'+') => &text[1..],
        _ => text,
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(DurationError::Malformed);
    }

    let mut total_nanos: u128 = 0;
    let mut remaining = rest;
    while !remaining.is_empty() {
        let (term_nanos, after) = parse_term(remaining)?;
        total_nanos = total_nanos
            .checked_add(term_nanos)
            .ok_or(DurationError::Overflow)?;
        remaining = after;
    }
    let nanos = u64::try_from(total_nanos).map_err(|_| DurationError::Overflow)?;
    Ok(Duration::from_nanos(nanos))
}

/// Parses one `<decimal><unit>` term and returns its length in nanoseconds and the rest.
fn parse_term(text: &str) -> Result<(u128, &str), DurationError> {
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, after_number) = text.split_at(number_end);
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(DurationError::Malformed);
    }

    let unit_end = after_number
        .find(|c: char| c.is_ascii_digit() || c == '.')
        .unwrap_or(after_number.len());
    let (unit, rest) = after_number.split_at(unit_end);
    if unit.is_empty() {
        return Err(DurationError::MissingUnit(number.to_owned()));
    }
    let unit_nanos: u128 = match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        other => return Err(DurationError::UnknownUnit(other.to_owned())),
    };

    let whole_value: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| DurationError::Overflow)?
    };
    let mut nanos = whole_value
        .checked_mul(unit_nanos)
        .ok_or(DurationError::Overflow)?;
    // Digits past the 18th cannot change a nanosecond count; dropping them keeps u128 safe.
    let fraction = &fraction[..fraction.len().min(18)];
    if !fraction.is_empty() {
        let numerator: u128 = fraction.parse().map_err(|_| DurationError::Malformed)?;
        let denominator = 10u128.pow(fraction.len() as u32);
        nanos = nanos
            .checked_add(numerator * unit_nanos / denominator)
            .ok_or(DurationError::Overflow)?;
    }
    Ok((nanos, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("10ms"), Ok(ms(10)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1500)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("10µs"), Ok(Duration::from_micros(10)));
        assert_eq!(
            parse_duration("2h45m"),
            Ok(Duration::from_secs(2 * 3600 + 45 * 60))
        );
        assert_eq!(parse_duration(".5s"), Ok(ms(500)));
        assert_eq!(parse_duration("1.s"), Ok(ms(1000)));
        assert_eq!(parse_duration("+300ms"), Ok(ms(300)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1h0.5m1ns"), Ok(Duration::new(3630, 1)));
        assert_eq!(parse_duration("0.000000001s"), Ok(Duration::from_nanos(1)));
    }

    #[test]
    fn humantime_fallback() {
        assert_eq!(parse_duration("1min"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2 s"), Ok(Duration::from_secs(2)));
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("-1.5h"), Err(DurationError::Negative));
        assert_eq!(
            parse_duration("10"),
            Err(DurationError::MissingUnit("10".into()))
        );
        assert_eq!(
            parse_duration("10xs"),
            Err(DurationError::UnknownUnit("xs".into()))
        );
        assert_eq!(parse_duration("ms"), Err(DurationError::Malformed));
        assert_eq!(parse_duration("1..2s"), Err(DurationError::Malformed));
        assert_eq!(
            parse_duration("99999999999999999999h"),
            Err(DurationError::Overflow)
        );
    }
}

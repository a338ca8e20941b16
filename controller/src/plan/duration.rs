//! Go durations ("300ms", "1.5h", "2h45m"), as Chaos Mesh's `duration` and `delay` fields are.

use std::str::FromStr;
use std::time::Duration;

/// The longest Go duration (`math.MaxInt64` nanoseconds), as Go prints it.
const MAX_GO_DURATION_TEXT: &str = "2562047h47m16.854775807s";

/// A positive Go duration.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_non_negative(text)?;
    if duration.is_zero() {
        return Err(format!("{text:?} is zero"));
    }
    Ok(duration)
}

/// A Go duration that may be zero ("0ms" jitter).
pub fn parse_non_negative(text: &str) -> Result<Duration, String> {
    // kube-core's parser panics on a value past `Duration`'s range (fuzzing found
    // `155555555555555555555555555555555m` in a Workflow's deadline); Go's ParseDuration, which
    // Chaos Mesh uses, refuses it. So does this.
    let out_of_range = || format!("{text:?} is out of range: at most {MAX_GO_DURATION_TEXT}");
    if beyond_go_range(text.trim()) {
        return Err(out_of_range());
    }
    let parsed = kube::core::Duration::from_str(text.trim()).map_err(|e| {
        format!("{text:?} is not a duration ({e}); e.g. \"30s\", \"1m30s\", \"100ms\"")
    })?;
    if parsed.is_negative() {
        return Err(format!("{text:?} is negative"));
    }
    let duration: Duration = parsed.into();
    // Go's durations are i64 nanoseconds: about 292 years.
    if duration.as_nanos() > i64::MAX as u128 {
        return Err(out_of_range());
    }
    Ok(duration)
}

/// Whether the number-and-unit parts of a Go duration add up past Go's range (checked before
/// kube-core's parser sees it: that one panics past `Duration`'s range, and a fuzzer's
/// `155555555555555555555555555555555m` in a Workflow deadline took the planner down).
/// Unknown units are left for the parser to name.
fn beyond_go_range(text: &str) -> bool {
    const GO_MAX_SECONDS: f64 = 9_223_372_036.854_775;
    let text = text.trim_start_matches(['+', '-']);
    let mut total = 0.0_f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let seconds_per_unit = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return false,
        };
        total += number.parse::<f64>().unwrap_or(0.0) * seconds_per_unit;
        rest = next;
    }
    total > GO_MAX_SECONDS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("30s"), Ok(Duration::from_secs(30)));
        // Found by fuzzing: this panicked inside kube-core's parser.
        let huge = parse_go_duration("155555555555555555555555555555555m").unwrap_err();
        assert!(huge.contains("out of range"), "{huge}");
        assert!(
            parse_go_duration("2562048h")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(parse_go_duration("2562047h").is_ok());
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(parse_go_duration("thirty seconds").is_err());
        assert!(parse_go_duration("30").is_err());
        assert!(parse_go_duration("-5s").unwrap_err().contains("negative"));
        assert!(parse_go_duration("0s").unwrap_err().contains("zero"));
    }
}

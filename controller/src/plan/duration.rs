//! Go durations ("300ms", "1.5h", "2h45m"), as Chaos Mesh's `duration` and `delay` fields are.

use std::str::FromStr;
use std::time::Duration;

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
    let parsed = kube::core::Duration::from_str(text.trim()).map_err(|e| {
        format!("{text:?} is not a duration ({e}); e.g. \"30s\", \"1m30s\", \"100ms\"")
    })?;
    if parsed.is_negative() {
        return Err(format!("{text:?} is negative"));
    }
    Ok(parsed.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(parse_go_duration("thirty seconds").is_err());
        assert!(parse_go_duration("30").is_err());
        assert!(parse_go_duration("-5s").unwrap_err().contains("negative"));
        assert!(parse_go_duration("0s").unwrap_err().contains("zero"));
    }
}

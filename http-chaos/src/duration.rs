//! Go duration strings (`time.ParseDuration`), as Chaos Mesh writes a rule's `delay`: a sequence
//! of decimal numbers with units ns, us (µs), ms, s, m, h, e.g. `400ms`, `1m30s`, `1.5s`.

use std::time::Duration;

pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| {
        Err(format!(
            "{text:?}: {why} (a Go duration such as 400ms or 1m30s)"
        ))
    };
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return bad("empty");
    }
    if s.starts_with('-') {
        return bad("negative");
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return bad("a number must come before each unit");
        }
        let Ok(number) = rest[..number_len].parse::<f64>() else {
            return bad("not a number");
        };
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return bad("missing unit"),
            _ => return bad("unknown unit"),
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).or_else(|_| bad("out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse("400ms").unwrap(), Duration::from_millis(400));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        for bad in ["", "10", "-1s", "1x", "ms"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}

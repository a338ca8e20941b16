//! Schedule's `schedule` field, parsed as Chaos Mesh parses it: robfig/cron v3 with the fields
//! second (optional), minute, hour, day of month, month, day of week, and the descriptors
//! (`@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`,
//! `@every <Go duration>`).
//!
//! Written here rather than taken from crates.io: the `cron` crate requires the seconds field
//! (6 or 7 fields) and has no `@every`; `croner` accepts more than robfig does (`L`, `#`, `W`,
//! day-of-week 7) and combines day of month and day of week differently. A Schedule that
//! Chaos Mesh accepts must mean the same here, and one it refuses must be refused, so the
//! small grammar is spelled out and pinned by tests. Times are UTC (a `TZ=`/`CRON_TZ=` prefix
//! other than UTC is refused: the controller has no time zone database).

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::civil::Date;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.schedule {spec:?}: {reason}")]
pub struct CronError {
    pub spec: String,
    pub reason: String,
}

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cron {
    /// `@every`: whole seconds after the previous run (robfig's ConstantDelaySchedule).
    Every(u64),
    Fields(Fields),
}

/// One bit per allowed value; `*_star`: the field was `*` or `?` (no step), which makes day of
/// month and day of week combine with AND instead of OR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    second: u64,
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    dom_star: bool,
    dow_star: bool,
}

struct Bounds {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const SECOND: Bounds = Bounds {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
};
const MINUTE: Bounds = Bounds {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Bounds = Bounds {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Bounds = Bounds {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const DOW: Bounds = Bounds {
    name: "day of week",
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

impl Cron {
    pub fn parse(spec: &str) -> Result<Cron, CronError> {
        let fail = |reason: String| CronError {
            spec: spec.to_owned(),
            reason,
        };
        let mut text = spec.trim();
        if text.is_empty() {
            return Err(fail("empty schedule".into()));
        }
        for prefix in ["TZ=", "CRON_TZ="] {
            if let Some(rest) = text.strip_prefix(prefix) {
                let (zone, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                if !matches!(zone, "UTC" | "Etc/UTC") {
                    return Err(fail(format!(
                        "time zone {zone}: only UTC is supported (schedules run in UTC)"
                    )));
                }
                text = rest.trim();
            }
        }
        if let Some(descriptor) = text.strip_prefix('@') {
            return descriptor_of(descriptor).map_err(fail);
        }
        let fields: Vec<&str> = text.split_whitespace().collect();
        let fields: Vec<&str> = match fields.len() {
            5 => std::iter::once("0").chain(fields).collect(),
            6 => fields,
            n => {
                return Err(fail(format!(
                    "expected 5 to 6 fields (optional second, minute, hour, day of month, month, day of week), found {n}"
                )));
            }
        };
        let (second, _) = field(fields[0], &SECOND).map_err(fail)?;
        let (minute, _) = field(fields[1], &MINUTE).map_err(fail)?;
        let (hour, _) = field(fields[2], &HOUR).map_err(fail)?;
        let (dom, dom_star) = field(fields[3], &DOM).map_err(fail)?;
        let (month, _) = field(fields[4], &MONTH).map_err(fail)?;
        let (dow, dow_star) = field(fields[5], &DOW).map_err(fail)?;
        Ok(Cron::Fields(Fields {
            second,
            minute,
            hour,
            dom,
            month,
            dow,
            dom_star,
            dow_star,
        }))
    }

    /// The first run strictly after `after`; None when none comes within five years (robfig
    /// gives up there too).
    pub fn next(&self, after: Timestamp) -> Option<Timestamp> {
        match self {
            // robfig: the previous time truncated to the second, plus the delay.
            Cron::Every(secs) => {
                Timestamp::from_second(after.as_second().checked_add(i64::try_from(*secs).ok()?)?)
                    .ok()
            }
            Cron::Fields(f) => f.next(after),
        }
    }
}

fn descriptor_of(descriptor: &str) -> Result<Cron, String> {
    let fields = match descriptor {
        "yearly" | "annually" => "0 0 0 1 1 *",
        "monthly" => "0 0 0 1 * *",
        "weekly" => "0 0 0 * * 0",
        "daily" | "midnight" => "0 0 0 * * *",
        "hourly" => "0 0 * * * *",
        _ => {
            let Some(duration) = descriptor.strip_prefix("every ") else {
                return Err(format!("unrecognized descriptor @{descriptor}"));
            };
            let parsed = duration
                .trim()
                .parse::<kube::core::Duration>()
                .map_err(|e| format!("@every {duration:?}: not a Go duration ({e})"))?;
            if parsed.is_negative() {
                return Err(format!("@every {duration:?}: negative"));
            }
            let d: Duration = parsed.into();
            // robfig: under a second becomes a second; the rest is truncated to whole seconds.
            return Ok(Cron::Every(d.as_secs().max(1)));
        }
    };
    Cron::parse(fields).map_err(|e| e.reason)
}

/// One field: comma-separated ranges `a`, `a-b`, `*`, `?`, each with an optional `/step`.
fn field(text: &str, b: &Bounds) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut star = false;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (part, None),
        };
        let (start, end, is_star) = if range == "*" || range == "?" {
            (b.min, b.max, true)
        } else {
            match range.split_once('-') {
                Some((lo, hi)) => (value(lo, b)?, value(hi, b)?, false),
                None => {
                    let v = value(range, b)?;
                    // robfig: "N/step" runs from N to the maximum.
                    (v, if step.is_some() { b.max } else { v }, false)
                }
            }
        };
        let step = match step {
            Some(s) => s
                .parse::<u32>()
                .map_err(|_| format!("{} field: bad step {s:?} in {part:?}", b.name))?,
            None => 1,
        };
        if step == 0 {
            return Err(format!("{} field: step of zero in {part:?}", b.name));
        }
        if start < b.min || end > b.max {
            return Err(format!(
                "{} field: {part:?} is outside {}-{}",
                b.name, b.min, b.max
            ));
        }
        if start > end {
            return Err(format!(
                "{} field: beginning of range after end in {part:?}",
                b.name
            ));
        }
        star |= is_star && step == 1;
        let mut v = start;
        while v <= end {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, star))
}

fn value(text: &str, b: &Bounds) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) = b.names.iter().position(|n| *n == lower) {
        return Ok(u32::try_from(i).unwrap_or(0) + b.min);
    }
    text.parse::<u32>()
        .map_err(|_| format!("{} field: {text:?} is not a number", b.name))
}

impl Fields {
    fn day_matches(&self, date: Date) -> bool {
        let dom = self.dom & (1 << date.day()) != 0;
        let dow = self.dow & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        // robfig (and cron): a `*` in either makes both apply; otherwise either one.
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    fn next(&self, after: Timestamp) -> Option<Timestamp> {
        let start = after.as_second().checked_add(1)?;
        let dt = Timestamp::from_second(start)
            .ok()?
            .to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC)
            .datetime();
        let (mut year, mut month, mut day) = (dt.year(), dt.month(), dt.day());
        let (mut hour, mut minute, mut second) = (dt.hour(), dt.minute(), dt.second());
        let limit = year + 5;
        loop {
            if year > limit {
                return None;
            }
            if self.month & (1 << month) == 0 {
                (day, hour, minute, second) = (1, 0, 0, 0);
                month += 1;
                if month > 12 {
                    (year, month) = (year + 1, 1);
                }
                continue;
            }
            let date = Date::new(year, month, day).ok()?;
            if !self.day_matches(date) {
                (hour, minute, second) = (0, 0, 0);
                day += 1;
                if day > date.days_in_month() {
                    day = 1;
                    month += 1;
                    if month > 12 {
                        (year, month) = (year + 1, 1);
                    }
                }
                continue;
            }
            if self.hour & (1 << hour) == 0 {
                (minute, second) = (0, 0);
                hour += 1;
                if hour > 23 {
                    hour = 0;
                    day += 1;
                    if day > date.days_in_month() {
                        day = 1;
                        month += 1;
                        if month > 12 {
                            (year, month) = (year + 1, 1);
                        }
                    }
                }
                continue;
            }
            if self.minute & (1 << minute) == 0 {
                second = 0;
                minute += 1;
                if minute > 59 {
                    // The hour check above moves on to the next hour (or day).
                    minute = 0;
                    hour += 1;
                    if hour > 23 {
                        hour = 0;
                        day += 1;
                        if day > date.days_in_month() {
                            day = 1;
                            month += 1;
                            if month > 12 {
                                (year, month) = (year + 1, 1);
                            }
                        }
                    }
                }
                continue;
            }
            if self.second & (1 << second) == 0 {
                second += 1;
                if second > 59 {
                    second = 0;
                    minute += 1;
                    if minute > 59 {
                        minute = 0;
                        hour += 1;
                        if hour > 23 {
                            hour = 0;
                            day += 1;
                            if day > date.days_in_month() {
                                day = 1;
                                month += 1;
                                if month > 12 {
                                    (year, month) = (year + 1, 1);
                                }
                            }
                        }
                    }
                }
                continue;
            }
            return date
                .at(hour, minute, second, 0)
                .to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC)
                .ok()
                .map(|z| z.timestamp());
        }
    }
}

/// The next `count` runs after `after`.
pub fn next_runs(cron: &Cron, after: Timestamp, count: usize) -> Vec<Timestamp> {
    let mut runs = Vec::with_capacity(count);
    let mut t = after;
    while runs.len() < count {
        match cron.next(t) {
            Some(n) => {
                runs.push(n);
                t = n;
            }
            None => break,
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    fn runs(spec: &str, from: &str, n: usize) -> Vec<String> {
        let cron = Cron::parse(spec).expect("parses");
        next_runs(&cron, at(from), n)
            .into_iter()
            .map(|t| t.to_string())
            .collect()
    }

    #[test]
    fn five_fields_start_at_second_zero() {
        // Chaos Mesh: SecondOptional, so 5 fields mean second 0.
        assert_eq!(
            runs("*/15 * * * *", "2026-11-24T12:07:30Z", 3),
            [
                "2026-11-24T12:15:00Z",
                "2026-11-24T12:30:00Z",
                "2026-11-24T12:45:00Z"
            ]
        );
    }

    #[test]
    fn six_fields_have_seconds() {
        assert_eq!(
            runs("*/20 * * * * *", "2026-11-24T12:00:00Z", 3),
            [
                "2026-11-24T12:00:20Z",
                "2026-11-24T12:00:40Z",
                "2026-11-24T12:01:00Z"
            ]
        );
    }

    #[test]
    fn descriptors() {
        // robfig: @hourly = 0 0 * * * *, @daily/@midnight = 0 0 0 * * *, @weekly = Sunday
        // midnight, @monthly = the 1st at midnight, @yearly/@annually = 1 January.
        assert_eq!(
            runs("@hourly", "2026-11-24T12:07:00Z", 1),
            ["2026-11-24T13:00:00Z"]
        );
        assert_eq!(
            runs("@daily", "2026-11-24T12:07:00Z", 1),
            ["2026-11-25T00:00:00Z"]
        );
        assert_eq!(
            runs("@midnight", "2026-11-24T12:07:00Z", 1),
            ["2026-11-25T00:00:00Z"]
        );
        // 2026-11-24 is a Tuesday: the next Sunday is the 29th.
        assert_eq!(
            runs("@weekly", "2026-11-24T12:07:00Z", 1),
            ["2026-11-29T00:00:00Z"]
        );
        assert_eq!(
            runs("@monthly", "2026-11-24T12:07:00Z", 1),
            ["2026-12-01T00:00:00Z"]
        );
        assert_eq!(
            runs("@yearly", "2026-11-24T12:07:00Z", 1),
            ["2027-01-01T00:00:00Z"]
        );
        assert_eq!(
            runs("@annually", "2026-11-24T12:07:00Z", 1),
            ["2027-01-01T00:00:00Z"]
        );
    }

    #[test]
    fn every_is_a_constant_delay_in_whole_seconds() {
        // robfig: ConstantDelaySchedule, the previous time truncated to the second plus the
        // delay; under a second counts as one second; fractions of seconds are dropped.
        assert_eq!(
            runs("@every 5s", "2026-11-24T12:00:00.700Z", 2),
            ["2026-11-24T12:00:05Z", "2026-11-24T12:00:10Z"]
        );
        assert_eq!(Cron::parse("@every 1m30s"), Ok(Cron::Every(90)));
        assert_eq!(Cron::parse("@every 100ms"), Ok(Cron::Every(1)));
        assert_eq!(Cron::parse("@every 2.5s"), Ok(Cron::Every(2)));
        assert!(Cron::parse("@every five").is_err());
    }

    #[test]
    fn names_ranges_lists_and_steps() {
        // Weekdays at 09:30: Tuesday 24th -> Wednesday 25th, Thursday, Friday, Monday.
        assert_eq!(
            runs("30 9 * * MON-FRI", "2026-11-24T10:00:00Z", 4),
            [
                "2026-11-25T09:30:00Z",
                "2026-11-26T09:30:00Z",
                "2026-11-27T09:30:00Z",
                "2026-11-30T09:30:00Z"
            ]
        );
        assert_eq!(
            runs("0 0 1,15 jan,Jul *", "2026-11-24T00:00:00Z", 3),
            [
                "2027-01-01T00:00:00Z",
                "2027-01-15T00:00:00Z",
                "2027-07-01T00:00:00Z"
            ]
        );
        // "N/step": from N to the field's maximum.
        assert_eq!(
            runs("50/5 * * * *", "2026-11-24T12:00:00Z", 3),
            [
                "2026-11-24T12:50:00Z",
                "2026-11-24T12:55:00Z",
                "2026-11-24T13:50:00Z"
            ]
        );
        // `?` is `*`.
        assert_eq!(
            runs("0 0 ? * *", "2026-11-24T12:00:00Z", 1),
            ["2026-11-25T00:00:00Z"]
        );
    }

    #[test]
    fn day_of_month_and_day_of_week_combine_like_cron() {
        // Both restricted: either matches (the 1st, or any Sunday).
        assert_eq!(
            runs("0 0 1 * SUN", "2026-11-24T12:00:00Z", 3),
            [
                "2026-11-29T00:00:00Z",
                "2026-12-01T00:00:00Z",
                "2026-12-06T00:00:00Z"
            ]
        );
        // Day of month `*`: only the day of week counts.
        assert_eq!(
            runs("0 0 * * SUN", "2026-11-24T12:00:00Z", 1),
            ["2026-11-29T00:00:00Z"]
        );
        // February 30th never comes: robfig gives up after five years.
        assert_eq!(
            runs("0 0 30 2 *", "2026-11-24T12:00:00Z", 1),
            Vec::<String>::new()
        );
    }

    #[test]
    fn refused_like_robfig() {
        for (spec, why) in [
            ("", "empty"),
            ("* * * *", "found 4"),
            ("* * * * * * *", "found 7"),
            ("60 * * * *", "outside 0-59"),
            ("* 24 * * *", "outside 0-23"),
            ("* * 0 * *", "outside 1-31"),
            ("* * * 13 *", "outside 1-12"),
            // robfig's day of week is 0-6: 7 is refused.
            ("* * * * 7", "outside 0-6"),
            ("5-1 * * * *", "beginning of range after end"),
            ("*/0 * * * *", "step of zero"),
            ("L * * * *", "not a number"),
            ("@fortnightly", "unrecognized descriptor"),
            ("TZ=Europe/Paris 0 0 * * *", "only UTC"),
        ] {
            let err = Cron::parse(spec).expect_err(spec).to_string();
            assert!(err.contains(why), "{spec:?}: {err}");
            assert!(err.contains("spec.schedule"), "{err}");
        }
        assert!(Cron::parse("CRON_TZ=UTC 0 0 * * *").is_ok());
    }
}

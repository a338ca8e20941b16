//! What is shifted and by how much: the clock ids (Chaos Mesh's names and its `clk_ids_mask`
//! bits, which are the Linux clock ids from `uapi/linux/time.h`) and the offset (seconds and
//! nanoseconds, as `TimeRequest` carries them, or a signed Go duration such as `-5m`).

use serde::{Deserialize, Serialize};

/// The clocks Chaos Mesh accepts in `clockIds`, by Linux clock id (bit `id` of the mask).
pub const CLOCK_NAMES: [&str; 10] = [
    "CLOCK_REALTIME",
    "CLOCK_MONOTONIC",
    "CLOCK_PROCESS_CPUTIME_ID",
    "CLOCK_THREAD_CPUTIME_ID",
    "CLOCK_MONOTONIC_RAW",
    "CLOCK_REALTIME_COARSE",
    "CLOCK_MONOTONIC_COARSE",
    "CLOCK_BOOTTIME",
    "CLOCK_REALTIME_ALARM",
    "CLOCK_BOOTTIME_ALARM",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    #[error("clockIds: unknown clock id {0:?} (known: {known})", known = CLOCK_NAMES.join(", "))]
    UnknownClock(String),
    #[error(
        "clk_ids_mask: {0:#x} selects no clock Linux knows (bits 0..=9 are CLOCK_REALTIME..CLOCK_BOOTTIME_ALARM)"
    )]
    UnknownBits(u64),
    #[error("clk_ids_mask: selects no clock")]
    EmptyMask,
    #[error("offset: {0}")]
    Offset(String),
}

/// The clocks whose readings are shifted: bit N is clock id N.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClockMask(pub u64);

impl ClockMask {
    pub const REALTIME: ClockMask = ClockMask(1);

    /// From Chaos Mesh's clock names; an empty list means CLOCK_REALTIME (its default).
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<ClockMask, ClockError> {
        if names.is_empty() {
            return Ok(ClockMask::REALTIME);
        }
        let mut mask = 0;
        for name in names {
            let name = name.as_ref().trim();
            let id = CLOCK_NAMES
                .iter()
                .position(|n| *n == name)
                .ok_or_else(|| ClockError::UnknownClock(name.to_owned()))?;
            mask |= 1 << id;
        }
        Ok(ClockMask(mask))
    }

    /// Checks a mask as the wire carries it.
    pub fn from_wire(mask: u64) -> Result<ClockMask, ClockError> {
        if mask == 0 {
            return Err(ClockError::EmptyMask);
        }
        if mask >> CLOCK_NAMES.len() != 0 {
            return Err(ClockError::UnknownBits(mask));
        }
        Ok(ClockMask(mask))
    }

    pub fn contains(self, clock_id: u32) -> bool {
        clock_id < 64 && self.0 & (1 << clock_id) != 0
    }

    pub fn names(self) -> Vec<&'static str> {
        CLOCK_NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, n)| *n)
            .collect()
    }
}

/// A clock offset, normalized: `nsec` in `0..1_000_000_000`, `sec` carries the sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Offset {
    pub sec: i64,
    pub nsec: i64,
}

const NANOS: i64 = 1_000_000_000;

impl Offset {
    /// From `TimeRequest`'s `sec` and `nsec` (Chaos Mesh sends both with the duration's sign:
    /// `-1.5s` is `sec = -1, nsec = -500000000`).
    pub fn new(sec: i64, nsec: i64) -> Result<Offset, ClockError> {
        let total = i128::from(sec) * i128::from(NANOS) + i128::from(nsec);
        Offset::from_nanos(total)
    }

    pub fn from_nanos(total: i128) -> Result<Offset, ClockError> {
        let sec = total.div_euclid(i128::from(NANOS));
        let nsec = total.rem_euclid(i128::from(NANOS));
        let sec = i64::try_from(sec).map_err(|_| ClockError::Offset("out of range".into()))?;
        Ok(Offset {
            sec,
            nsec: nsec as i64,
        })
    }

    pub fn nanos(self) -> i128 {
        i128::from(self.sec) * i128::from(NANOS) + i128::from(self.nsec)
    }

    /// A signed Go duration (`-5m`, `+24h`, `1h30m`, `-1.5s`, `300ms`), as Chaos Mesh's
    /// `timeOffset` is parsed (Go's `time.ParseDuration`: units ns, us, µs, ms, s, m, h).
    pub fn parse_go(text: &str) -> Result<Offset, ClockError> {
        let bad = |why: &str| ClockError::Offset(format!("{text:?}: {why}"));
        let s = text.trim();
        let (negative, mut rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        if rest == "0" {
            return Ok(Offset { sec: 0, nsec: 0 });
        }
        if rest.is_empty() {
            return Err(bad("empty"));
        }
        let mut total: i128 = 0;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| bad("a number without a unit (ns, us, ms, s, m, h)"))?;
            if num_len == 0 {
                return Err(bad("expected a number"));
            }
            let number = &rest[..num_len];
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit: i128 = match &rest[..unit_len] {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                other => return Err(bad(&format!("unknown unit {other:?}"))),
            };
            rest = &rest[unit_len..];
            let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
            if whole.is_empty() && frac.is_empty() {
                return Err(bad("expected a number"));
            }
            let whole: i128 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| bad("number too large"))?
            };
            let mut part = whole.checked_mul(unit).ok_or_else(|| bad("too large"))?;
            let mut scale = unit;
            for d in frac.chars() {
                scale /= 10;
                part += i128::from(d.to_digit(10).unwrap_or(0)) * scale;
            }
            total = total.checked_add(part).ok_or_else(|| bad("too large"))?;
        }
        // Go's durations are int64 nanoseconds.
        if total > i128::from(i64::MAX) {
            return Err(bad("larger than Go's largest duration (about 292 years)"));
        }
        Offset::from_nanos(if negative { -total } else { total })
    }

    /// Chaos Mesh's split of a duration into `TimeRequest.sec`/`nsec` (truncating division,
    /// both with the duration's sign).
    pub fn to_wire(self) -> (i64, i64) {
        let total = self.nanos();
        let sec = total / i128::from(NANOS);
        let nsec = total - sec * i128::from(NANOS);
        (sec as i64, nsec as i64)
    }
}

impl std::fmt::Display for Offset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total = self.nanos();
        let sign = if total < 0 { "-" } else { "+" };
        let abs = total.unsigned_abs();
        write!(
            f,
            "{sign}{}.{:09}s",
            abs / 1_000_000_000,
            abs % 1_000_000_000
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chaos_mesh_clock_bits() {
        // Chaos Mesh encodes clockIds as 1 << (Linux clock id): CLOCK_REALTIME = 1,
        // CLOCK_REALTIME + CLOCK_MONOTONIC = 3, CLOCK_MONOTONIC = 2, CLOCK_BOOTTIME_ALARM = 1 << 9.
        assert_eq!(ClockMask::from_names(&["CLOCK_REALTIME"]), Ok(ClockMask(1)));
        assert_eq!(
            ClockMask::from_names(&["CLOCK_REALTIME", "CLOCK_MONOTONIC"]),
            Ok(ClockMask(3))
        );
        assert_eq!(
            ClockMask::from_names(&["CLOCK_MONOTONIC"]),
            Ok(ClockMask(2))
        );
        assert_eq!(
            ClockMask::from_names(&["CLOCK_BOOTTIME_ALARM"]),
            Ok(ClockMask(1 << 9))
        );
        // No clockIds: CLOCK_REALTIME, Chaos Mesh's default.
        assert_eq!(ClockMask::from_names::<&str>(&[]), Ok(ClockMask::REALTIME));
        assert_eq!(
            ClockMask::from_names(&["CLOCK_TAI"]),
            Err(ClockError::UnknownClock("CLOCK_TAI".into()))
        );
        assert_eq!(ClockMask(3).names(), ["CLOCK_REALTIME", "CLOCK_MONOTONIC"]);
        assert!(ClockMask(2).contains(1) && !ClockMask(2).contains(0));
        assert!(!ClockMask(u64::MAX).contains(64));
    }

    #[test]
    fn wire_masks_are_checked() {
        assert_eq!(ClockMask::from_wire(0), Err(ClockError::EmptyMask));
        assert_eq!(
            ClockMask::from_wire(1 << 10),
            Err(ClockError::UnknownBits(1 << 10))
        );
        assert_eq!(ClockMask::from_wire(0x3ff), Ok(ClockMask(0x3ff)));
    }

    #[test]
    fn offsets_normalize_and_round_trip_to_chaos_mesh_wire() {
        // Chaos Mesh: sec = d / 1e9, nsec = d - sec * 1e9 (Go's truncating division).
        let o = Offset::parse_go("-1.5s").unwrap();
        assert_eq!(
            o,
            Offset {
                sec: -2,
                nsec: 500_000_000
            }
        );
        assert_eq!(o.to_wire(), (-1, -500_000_000));
        assert_eq!(Offset::new(-1, -500_000_000), Ok(o));
        assert_eq!(Offset::parse_go("-5m").unwrap().to_wire(), (-300, 0));
        assert_eq!(
            Offset::parse_go("+24h").unwrap(),
            Offset {
                sec: 86_400,
                nsec: 0
            }
        );
        assert_eq!(Offset::parse_go("1h30m").unwrap().sec, 5400);
        assert_eq!(
            Offset::parse_go("300ms").unwrap(),
            Offset {
                sec: 0,
                nsec: 300_000_000
            }
        );
        assert_eq!(Offset::parse_go("1us").unwrap().nsec, 1_000);
        assert_eq!(Offset::parse_go("0").unwrap(), Offset { sec: 0, nsec: 0 });
        assert_eq!(
            Offset::parse_go("-5m").unwrap().to_string(),
            "-300.000000000s"
        );
    }

    #[test]
    fn bad_durations_say_why() {
        // Go's ParseDuration has no day unit.
        let e = Offset::parse_go("1d").unwrap_err().to_string();
        assert!(e.contains("unknown unit \"d\""), "{e}");
        assert!(
            Offset::parse_go("5")
                .unwrap_err()
                .to_string()
                .contains("without a unit")
        );
        assert!(Offset::parse_go("").is_err());
        assert!(Offset::parse_go("-").is_err());
        assert!(Offset::parse_go("m").is_err());
        assert!(
            Offset::parse_go("3000000h")
                .unwrap_err()
                .to_string()
                .contains("largest")
        );
    }
}

//! The packet scheduler's clock: qdisc times are in "ticks" whose length the kernel publishes in
//! /proc/net/psched. Converted as iproute2's tc_core does (same doubles, same truncation).

/// Microseconds per second, iproute2's TIME_UNITS_PER_SEC.
const TIME_UNITS_PER_SEC: f64 = 1_000_000.0;

/// The tick length the kernel announced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Psched {
    tick_in_usec: f64,
    /// iproute2's get_hz: the clock rate when the clock resolution is 1 µs (the third field
    /// 1000000), else its compile-time HZ (100).
    hz: u32,
}

impl Default for Psched {
    /// What every kernel since 2.6.31 announces (`000003e8 00000040 000f4240 3b9aca00`):
    /// 15.625 ticks per microsecond.
    fn default() -> Self {
        Self::parse("000003e8 00000040 000f4240 3b9aca00").unwrap_or(Self {
            tick_in_usec: 15.625,
            hz: 1_000_000_000,
        })
    }
}

impl Psched {
    /// Reads /proc/net/psched (of the calling thread's network namespace; it is the same in all).
    pub fn from_proc() -> Self {
        std::fs::read_to_string("/proc/net/psched")
            .ok()
            .and_then(|text| Self::parse(&text))
            .unwrap_or_default()
    }

    /// Parses the file's text, as tc_core_init does.
    pub fn parse(text: &str) -> Option<Self> {
        let mut fields = text
            .split_whitespace()
            .map(|f| u32::from_str_radix(f, 16).ok());
        let t2us = fields.next()??;
        let us2t = fields.next()??;
        let clock_res = fields.next()??;
        let fourth = fields.next().flatten();
        let hz = match fourth {
            Some(hz) if clock_res == 1_000_000 && hz > 0 => hz,
            _ => 100,
        };
        if us2t == 0 {
            return None;
        }
        // iproute2's compatibility rule for nanosecond clocks.
        let t2us = if clock_res == 1_000_000_000 {
            us2t
        } else {
            t2us
        };
        let clock_factor = f64::from(clock_res) / TIME_UNITS_PER_SEC;
        Some(Self {
            tick_in_usec: f64::from(t2us) / f64::from(us2t) * clock_factor,
            hz,
        })
    }

    /// tc_core_time2tick: microseconds to ticks (truncated).
    pub fn time_to_ticks(&self, usec: u32) -> u32 {
        (f64::from(usec) * self.tick_in_usec) as u32
    }

    /// tc_core_time2big: whether the time does not fit 32-bit ticks.
    pub fn time_too_big(&self, usec: u32) -> bool {
        (u64::from(usec) as f64 * self.tick_in_usec) >= 4_294_967_296.0
    }

    /// tc_calc_xmittime: the ticks it takes to send `size` bytes at `rate` bytes per second.
    pub fn xmit_ticks(&self, rate: u32, size: u32) -> u32 {
        let usec = TIME_UNITS_PER_SEC * (f64::from(size) / f64::from(rate));
        // tc_core_time2tick takes an unsigned int: the time is truncated first.
        self.time_to_ticks(usec as u32)
    }

    pub fn hz(&self) -> u32 {
        self.hz
    }

    /// Ticks to microseconds (for reading dumps back).
    pub fn ticks_to_usec(&self, ticks: u32) -> f64 {
        f64::from(ticks) / self.tick_in_usec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_match_iproute2_on_this_clock() {
        let p = Psched::default();
        assert_eq!(p.time_to_ticks(20_000), 0x0004_c4b4);
        assert_eq!(p.time_to_ticks(10_000), 156_250);
        // tbf rate 1mbit burst 32kbit: 4096 bytes at 125000 B/s.
        assert_eq!(p.xmit_ticks(125_000, 4096), 512_000);
        assert!(p.time_too_big(300_000_000));
        assert!(!p.time_too_big(200_000_000));
        assert_eq!(
            Psched::from_proc(),
            p,
            "this kernel's psched differs from the default"
        );
    }

    #[test]
    fn nanosecond_clocks_use_the_compatibility_rule() {
        let p = Psched::parse("000003e8 00000040 3b9aca00 3b9aca00").unwrap();
        assert_eq!(p.time_to_ticks(1), 1000);
        assert!(Psched::parse("garbage").is_none());
        assert!(Psched::parse("1 0 1").is_none());
    }
}

//! `mode` and `value`, checked together: how many of the matching pods are taken.

use crate::crd::SelectorMode;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    One,
    All,
    Fixed(usize),
    FixedPercent(u8),
    RandomMaxPercent(u8),
}

impl Mode {
    pub fn parse(mode: SelectorMode, value: Option<&str>) -> Result<Mode, String> {
        let number = |what: &str| -> Result<u64, String> {
            let text = value
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| format!("mode {} needs a value ({what})", mode.as_str()))?;
            text.trim().parse::<u64>().map_err(|_| {
                format!(
                    "{text:?} is not a whole number ({what}, for mode {})",
                    mode.as_str()
                )
            })
        };
        let percent = |low: u64| -> Result<u8, String> {
            let p = number("a percentage")?;
            if (low..=100).contains(&p) {
                Ok(p as u8)
            } else {
                Err(format!(
                    "{p} is out of range {low}..=100 (percent, for mode {})",
                    mode.as_str()
                ))
            }
        };
        Ok(match mode {
            SelectorMode::One => Mode::One,
            SelectorMode::All => Mode::All,
            SelectorMode::Fixed => {
                let n = number("a number of pods")?;
                if n == 0 {
                    return Err("0 pods: mode fixed needs a value of at least 1".into());
                }
                Mode::Fixed(usize::try_from(n).unwrap_or(usize::MAX))
            }
            SelectorMode::FixedPercent => Mode::FixedPercent(percent(1)?),
            SelectorMode::RandomMaxPercent => Mode::RandomMaxPercent(percent(1)?),
        })
    }

    /// How many of `matching` pods to take; `random_percent` draws 0..=max for
    /// random-max-percent.
    pub fn count(self, matching: usize, random_percent: impl FnOnce(u8) -> u8) -> usize {
        // Rounded up, as Chaos Mesh's math.Ceil: at least one pod for any percentage above 0.
        let of_percent = |p: u8| (matching * usize::from(p)).div_ceil(100);
        match self {
            Mode::One => matching.min(1),
            Mode::All => matching,
            Mode::Fixed(n) => n.min(matching),
            Mode::FixedPercent(p) => of_percent(p),
            Mode::RandomMaxPercent(max) => of_percent(random_percent(max).min(max)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_per_mode() {
        use SelectorMode::*;
        assert_eq!(Mode::parse(One, None), Ok(Mode::One));
        assert_eq!(Mode::parse(All, Some("7")), Ok(Mode::All));
        assert_eq!(Mode::parse(Fixed, Some("3")), Ok(Mode::Fixed(3)));
        assert!(
            Mode::parse(Fixed, None)
                .unwrap_err()
                .contains("needs a value")
        );
        assert!(Mode::parse(Fixed, Some("0")).is_err());
        assert!(
            Mode::parse(Fixed, Some("two"))
                .unwrap_err()
                .contains("whole number")
        );
        assert_eq!(
            Mode::parse(FixedPercent, Some("50")),
            Ok(Mode::FixedPercent(50))
        );
        assert!(
            Mode::parse(FixedPercent, Some("200"))
                .unwrap_err()
                .contains("out of range 1..=100")
        );
    }

    /// Chaos Mesh (api/v1alpha1/common_webhook.go, PodSelector.Validate): fixed needs a value
    /// above 0; fixed-percent and random-max-percent need a percentage in (0,100], so 0 is
    /// refused for both; one and all ignore the value.
    #[test]
    fn zero_is_refused_as_chaos_mesh_refuses_it() {
        use SelectorMode::*;
        assert!(Mode::parse(Fixed, Some("0")).is_err());
        assert!(Mode::parse(FixedPercent, Some("0")).is_err());
        assert!(
            Mode::parse(RandomMaxPercent, Some("0"))
                .unwrap_err()
                .contains("out of range 1..=100")
        );
        assert!(Mode::parse(RandomMaxPercent, Some("101")).is_err());
        assert_eq!(
            Mode::parse(RandomMaxPercent, Some("100")),
            Ok(Mode::RandomMaxPercent(100))
        );
        assert_eq!(Mode::parse(All, Some("0")), Ok(Mode::All));
    }

    /// Chaos Mesh (pkg/selector/generic/mode.go): fixed-percent and random-max-percent take
    /// ceil(count * percent / 100) pods, so 25 % of 3 pods is 1 pod, not 0; random-max-percent
    /// first draws the percentage uniformly from 0..=value.
    #[test]
    fn percentages_round_up() {
        assert_eq!(Mode::FixedPercent(25).count(3, |_| 0), 1);
        assert_eq!(Mode::FixedPercent(50).count(5, |_| 0), 3);
        assert_eq!(Mode::FixedPercent(1).count(1000, |_| 0), 10);
        assert_eq!(Mode::FixedPercent(1).count(1001, |_| 0), 11);
        assert_eq!(Mode::RandomMaxPercent(60).count(3, |_| 10), 1);
        assert_eq!(Mode::RandomMaxPercent(60).count(3, |_| 0), 0);
    }

    #[test]
    fn counts_follow_chaos_mesh() {
        assert_eq!(Mode::One.count(5, |_| 0), 1);
        assert_eq!(Mode::One.count(0, |_| 0), 0);
        assert_eq!(Mode::All.count(5, |_| 0), 5);
        assert_eq!(Mode::Fixed(3).count(5, |_| 0), 3);
        assert_eq!(Mode::Fixed(9).count(5, |_| 0), 5);
        assert_eq!(Mode::FixedPercent(50).count(4, |_| 0), 2);
        assert_eq!(Mode::FixedPercent(100).count(5, |_| 0), 5);
        assert_eq!(Mode::RandomMaxPercent(60).count(10, |max| max), 6);
        assert_eq!(Mode::RandomMaxPercent(60).count(10, |_| 20), 2);
    }
}

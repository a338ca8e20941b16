//! Data corruption (`mistake` actions): overwrite a few short regions of a read or write
//! buffer, as toda's MistakeInjector does.

use std::num::NonZeroUsize;

use rand::Rng;
use serde::Serialize;

use super::rng::with_fast_rng;

/// What the corrupted regions are filled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Filling {
    Zero,
    Random,
}

impl Filling {
    pub fn parse(name: &str) -> Option<Filling> {
        if name.eq_ignore_ascii_case("zero") {
            Some(Filling::Zero)
        } else if name.eq_ignore_ascii_case("random") {
            Some(Filling::Random)
        } else {
            None
        }
    }
}

/// A validated mistake: between 1 and `max_occurrences` regions, each 1 to `max_length`
/// bytes long, at uniformly random offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mistake {
    pub filling: Filling,
    pub max_occurrences: NonZeroUsize,
    pub max_length: NonZeroUsize,
}

impl Mistake {
    /// Corrupts `buf` in place with this thread's fast generator. An empty buffer is left
    /// alone. Occurrences are capped at the buffer's length, so a huge `maxOccurrences`
    /// cannot turn one read into a long loop.
    pub fn apply(&self, buf: &mut [u8]) {
        with_fast_rng(|rng| self.apply_with(rng, buf));
    }

    /// [`Mistake::apply`] with a given generator (deterministic in tests).
    pub fn apply_with<R: Rng + ?Sized>(&self, rng: &mut R, buf: &mut [u8]) {
        let len = buf.len();
        if len == 0 {
            return;
        }
        let max_occurrences = self.max_occurrences.get().min(len);
        let occurrences = rng.random_range(1..=max_occurrences);
        for _ in 0..occurrences {
            let start = rng.random_range(0..len);
            let longest = self.max_length.get().min(len - start);
            let region = &mut buf[start..start + rng.random_range(1..=longest)];
            match self.filling {
                Filling::Zero => region.fill(0),
                Filling::Random => rng.fill_bytes(region),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    fn mistake(filling: Filling, max_occurrences: usize, max_length: usize) -> Mistake {
        Mistake {
            filling,
            max_occurrences: NonZeroUsize::new(max_occurrences).unwrap(),
            max_length: NonZeroUsize::new(max_length).unwrap(),
        }
    }

    /// Regions of consecutive changed bytes, as (start, length).
    fn changed_regions(before: &[u8], after: &[u8]) -> Vec<(usize, usize)> {
        let mut regions = Vec::new();
        let mut i = 0;
        while i < before.len() {
            if before[i] != after[i] {
                let start = i;
                while i < before.len() && before[i] != after[i] {
                    i += 1;
                }
                regions.push((start, i - start));
            } else {
                i += 1;
            }
        }
        regions
    }

    #[test]
    fn zero_filling_writes_bounded_regions() {
        let mut rng = SmallRng::seed_from_u64(7);
        let m = mistake(Filling::Zero, 3, 10);
        for _ in 0..200 {
            let original = vec![0xAAu8; 4096];
            let mut buf = original.clone();
            m.apply_with(&mut rng, &mut buf);
            let regions = changed_regions(&original, &buf);
            // Regions may touch and merge, so bound the total instead of each one.
            assert!(!regions.is_empty() && regions.len() <= 3, "{regions:?}");
            let changed: usize = regions.iter().map(|(_, len)| len).sum();
            assert!((1..=30).contains(&changed), "changed {changed} bytes");
            assert!(buf.iter().all(|&b| b == 0 || b == 0xAA));
        }
    }

    #[test]
    fn random_filling_changes_data() {
        let mut rng = SmallRng::seed_from_u64(11);
        let m = mistake(Filling::Random, 1, 64);
        let mut ever_changed = false;
        for _ in 0..50 {
            let original = vec![0u8; 512];
            let mut buf = original.clone();
            m.apply_with(&mut rng, &mut buf);
            let changed = original.iter().zip(&buf).filter(|(a, b)| a != b).count();
            assert!(changed <= 64);
            ever_changed |= changed > 0;
        }
        assert!(ever_changed);
    }

    #[test]
    fn tiny_and_empty_buffers_are_safe() {
        let m = mistake(Filling::Zero, 1_000_000, 1_000_000);
        let mut empty: [u8; 0] = [];
        m.apply(&mut empty);
        let mut one = [0xFFu8];
        m.apply(&mut one);
        assert_eq!(one, [0]);
    }

    #[test]
    fn filling_names() {
        assert_eq!(Filling::parse("ZERO"), Some(Filling::Zero));
        assert_eq!(Filling::parse("random"), Some(Filling::Random));
        assert_eq!(Filling::parse("ones"), None);
    }
}

//! netem's decisions, made in userspace: the same parameters and the same arithmetic as the
//! kernel's sch_netem (correlated random numbers, uniform jitter, the reorder gap counter), so a
//! rule behaves alike on either path. Pure and deterministic for a given seed.

use std::time::Duration;

use crate::network::spec::NetemSpec;

/// A small fast PRNG (xorshift64*), seeded per queue.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn seeded(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }
}

/// netem's `crndstate`: a random number correlated with the previous one by `rho`.
#[derive(Clone, Debug, Default)]
struct Correlated {
    rho: u32,
    last: u32,
}

impl Correlated {
    fn new(rho: u32) -> Self {
        Self { rho, last: 0 }
    }

    /// get_crandom.
    fn next(&mut self, rng: &mut Rng) -> u32 {
        let value = u64::from(rng.next_u32());
        if self.rho == 0 {
            return value as u32;
        }
        let rho = u64::from(self.rho) + 1;
        let answer = ((value * ((1u64 << 32) - rho) + u64::from(self.last) * rho) >> 32) as u32;
        self.last = answer;
        answer
    }
}

/// One netem rule's state.
#[derive(Clone, Debug)]
struct Stage {
    spec: NetemSpec,
    delay: Correlated,
    loss: Correlated,
    duplicate: Correlated,
    reorder: Correlated,
    corrupt: Correlated,
    counter: u32,
}

/// What to do with one packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub drop: bool,
    /// Extra copies to send (duplicates).
    pub duplicates: u32,
    pub corrupt: bool,
    pub delay: Duration,
}

/// The netem rules of one queue, applied in order (as chained qdiscs would be).
#[derive(Clone, Debug)]
pub struct Model {
    stages: Vec<Stage>,
    rng: Rng,
}

impl Model {
    pub fn new(specs: &[NetemSpec], seed: u64) -> Self {
        Self {
            stages: specs
                .iter()
                .map(|s| Stage {
                    spec: s.clone(),
                    delay: Correlated::new(s.delay_correlation),
                    loss: Correlated::new(s.loss_correlation),
                    duplicate: Correlated::new(s.duplicate_correlation),
                    reorder: Correlated::new(s.reorder_correlation),
                    corrupt: Correlated::new(s.corrupt_correlation),
                    counter: 0,
                })
                .collect(),
            rng: Rng::seeded(seed),
        }
    }

    /// Whether packets are changed or copied (corrupt, duplicate): those need whole, segmented
    /// packets with their checksums filled in; the others can take GSO packets as they are, as
    /// netem takes them.
    pub fn alters_packets(&self) -> bool {
        self.stages
            .iter()
            .any(|s| s.spec.corrupt > 0 || s.spec.duplicate > 0)
    }

    /// The most packets any stage may hold (netem's limit).
    pub fn limit(&self) -> u32 {
        self.stages
            .iter()
            .map(|s| s.spec.limit)
            .min()
            .unwrap_or(1000)
    }

    /// Decides one packet's fate, in netem_enqueue's order: duplicate, loss, corrupt, delay
    /// (with reordering).
    pub fn decide(&mut self) -> Decision {
        let mut d = Decision::default();
        for stage in &mut self.stages {
            let s = &stage.spec;
            if s.duplicate > 0 && s.duplicate >= stage.duplicate.next(&mut self.rng) {
                d.duplicates += 1;
            }
            if s.loss > 0 && s.loss >= stage.loss.next(&mut self.rng) {
                d.drop = true;
                return d;
            }
            if s.corrupt > 0 && s.corrupt >= stage.corrupt.next(&mut self.rng) {
                d.corrupt = true;
            }
            // Reordering: with a gap, every gap-th packet (with probability `reorder`) skips
            // the delay.
            let delayed = s.gap == 0
                || stage.counter < s.gap.saturating_sub(1)
                || s.reorder < stage.reorder.next(&mut self.rng);
            if delayed {
                let mut us = i64::from(s.latency_us);
                if s.jitter_us > 0 {
                    let rnd = stage.delay.next(&mut self.rng);
                    let sigma = i64::from(s.jitter_us);
                    us = (i64::from(rnd) % (2 * sigma)) + us - sigma;
                }
                d.delay += Duration::from_micros(us.max(0) as u64);
                stage.counter = stage.counter.saturating_add(1);
            } else {
                stage.counter = 0;
            }
        }
        d
    }
}

/// Flips one random bit past the IP header (the transport header or payload), as netem flips
/// one random bit of the packet; the transport checksum then no longer matches and the
/// receiver's stack drops the packet, as it would after a real corruption.
pub fn corrupt(packet: &mut [u8], rng: &mut Rng) {
    let header = packet
        .first()
        .map(|b| {
            if b >> 4 == 4 {
                usize::from(b & 0x0f) * 4
            } else {
                40
            }
        })
        .unwrap_or(0);
    if packet.len() <= header {
        return;
    }
    let at = header + rng.next_u32() as usize % (packet.len() - header);
    packet[at] ^= 1 << (rng.next_u32() % 8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink::units::Fraction;

    fn pct(p: f64) -> u32 {
        Fraction::from_percent(p).unwrap().0
    }

    fn run(spec: NetemSpec, n: usize) -> Vec<Decision> {
        let mut m = Model::new(&[spec], 42);
        (0..n).map(|_| m.decide()).collect()
    }

    #[test]
    fn loss_duplicate_and_corrupt_hit_their_rates() {
        let count = |d: &[Decision], f: fn(&Decision) -> bool| d.iter().filter(|x| f(x)).count();
        let d = run(
            NetemSpec {
                loss: pct(50.0),
                limit: 1000,
                ..Default::default()
            },
            10_000,
        );
        let lost = count(&d, |x| x.drop);
        assert!((4700..5300).contains(&lost), "{lost}");
        let d = run(
            NetemSpec {
                duplicate: pct(10.0),
                limit: 1000,
                ..Default::default()
            },
            10_000,
        );
        let dup = count(&d, |x| x.duplicates == 1);
        assert!((850..1150).contains(&dup), "{dup}");
        let d = run(
            NetemSpec {
                corrupt: pct(100.0),
                limit: 1000,
                ..Default::default()
            },
            100,
        );
        assert_eq!(count(&d, |x| x.corrupt), 100);
        let d = run(
            NetemSpec {
                limit: 1000,
                ..Default::default()
            },
            100,
        );
        assert!(d.iter().all(|x| *x == Decision::default()));
    }

    #[test]
    fn jitter_stays_within_the_delay_window() {
        let d = run(
            NetemSpec {
                latency_us: 100_000,
                jitter_us: 10_000,
                limit: 1000,
                ..Default::default()
            },
            5000,
        );
        let (min, max) = d.iter().fold((u128::MAX, 0), |(lo, hi), x| {
            let us = x.delay.as_micros();
            (lo.min(us), hi.max(us))
        });
        assert!(min >= 90_000 && max < 110_000, "{min}..{max}");
        assert!(max - min > 15_000, "spread {min}..{max}");
    }

    #[test]
    fn reordering_sends_some_packets_at_once() {
        let d = run(
            NetemSpec {
                latency_us: 10_000,
                reorder: pct(25.0),
                gap: 1,
                limit: 1000,
                ..Default::default()
            },
            10_000,
        );
        let at_once = d.iter().filter(|x| x.delay.is_zero()).count();
        assert!((2200..2800).contains(&at_once), "{at_once}");
        // gap 5: at most one packet in five skips the delay.
        let d = run(
            NetemSpec {
                latency_us: 10_000,
                reorder: pct(100.0),
                gap: 5,
                limit: 1000,
                ..Default::default()
            },
            100,
        );
        assert_eq!(d.iter().filter(|x| x.delay.is_zero()).count(), 20);
    }

    #[test]
    fn correlation_makes_losses_come_in_runs() {
        let runs = |corr: f64| {
            let d = run(
                NetemSpec {
                    loss: pct(50.0),
                    loss_correlation: pct(corr),
                    limit: 1000,
                    ..Default::default()
                },
                10_000,
            );
            d.windows(2).filter(|w| w[0].drop != w[1].drop).count()
        };
        assert!(
            runs(90.0) < runs(0.0) / 2,
            "{} vs {}",
            runs(90.0),
            runs(0.0)
        );
    }

    #[test]
    fn corruption_spares_the_ip_header() {
        let mut rng = Rng::seeded(7);
        for _ in 0..100 {
            let mut packet = vec![0x45u8; 60];
            packet[1..20].fill(0);
            let before = packet.clone();
            corrupt(&mut packet, &mut rng);
            assert_eq!(packet[..20], before[..20]);
            assert_eq!(
                packet.iter().zip(&before).filter(|(a, b)| a != b).count(),
                1
            );
        }
        corrupt(&mut [0x45; 10], &mut rng); // shorter than its header: untouched, no panic
    }
}

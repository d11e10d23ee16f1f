//! Reconnect delays: exponential, capped, with jitter so that every node
//! whose stream to a restarted peer broke does not knock at the same instant.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::raft::NodeId;

/// No reconnect waits longer than this, whatever the configuration says.
const MAX_DELAY: Duration = Duration::from_secs(3600);

/// The delay before each reconnect attempt to one peer.
#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    /// Failed attempts since the last established stream.
    attempts: u32,
    rng: SplitMix64,
}

impl Backoff {
    /// Seeded from both node ids and the clock: the nodes of a cluster (and
    /// one node's streams to its peers) draw different jitter.
    pub(crate) fn new(min: Duration, max: Duration, local: NodeId, peer: NodeId) -> Backoff {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let seed = local.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ peer.0.rotate_left(32) ^ nanos;
        Backoff::with_seed(min, max, seed)
    }

    pub(crate) fn with_seed(min: Duration, max: Duration, seed: u64) -> Backoff {
        let min = min.clamp(Duration::from_millis(1), MAX_DELAY);
        Backoff { min, max: max.clamp(min, MAX_DELAY), attempts: 0, rng: SplitMix64(seed) }
    }

    /// The next delay: `min * 2^attempts` capped at `max`, then scaled by a
    /// random factor in [0.5, 1.0] ("equal jitter").
    pub(crate) fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.attempts.min(30)).unwrap_or(u32::MAX);
        let ceiling = self.min.saturating_mul(factor).min(self.max);
        self.attempts = self.attempts.saturating_add(1);
        let half = ceiling / 2;
        let spread = half.as_nanos() as u64;
        let jitter = self.rng.next() % spread.saturating_add(1);
        half.saturating_add(Duration::from_nanos(jitter))
    }

    /// A stream was established: the next outage starts from `min` again.
    pub(crate) fn reset(&mut self) {
        self.attempts = 0;
    }
}

/// A tiny deterministic PRNG (Steele et al., SplitMix64); jitter needs no
/// more, and the crate takes no `rand` dependency.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_within_jitter_and_cap() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let mut backoff = Backoff::with_seed(min, max, 7);
        let mut ceiling = min;
        for _ in 0..12 {
            let delay = backoff.next_delay();
            assert!(delay >= ceiling / 2 && delay <= ceiling, "{delay:?} outside [{:?}, {ceiling:?}]", ceiling / 2);
            ceiling = (ceiling * 2).min(max);
        }
        backoff.reset();
        assert!(backoff.next_delay() <= min);
    }

    #[test]
    fn jitter_differs_between_seeds_and_repeats_for_one_seed() {
        let draw = |seed| {
            let mut b = Backoff::with_seed(Duration::from_secs(1), Duration::from_secs(1), seed);
            (0..8).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn absurd_settings_do_not_overflow() {
        let mut backoff = Backoff::with_seed(Duration::ZERO, Duration::ZERO, 0);
        for _ in 0..100 {
            assert!(backoff.next_delay() <= Duration::from_millis(1));
        }
        let mut huge = Backoff::with_seed(Duration::from_secs(u64::MAX / 4), Duration::MAX, 0);
        for _ in 0..40 {
            huge.next_delay();
        }
    }
}

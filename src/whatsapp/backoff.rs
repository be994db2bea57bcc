//! How long to wait before retrying a send or a callback: exponential backoff with equal jitter.
//!
//! Pure: the caller passes the attempt number and a random source, so tests and the outbox can
//! replay delays exactly. Owns no timers; the outbox stores the due time it computes from this.

use std::time::Duration;

use rand::Rng;

/// Doubling delays from `first` up to `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry (before jitter).
    pub first: Duration,
    /// Longest delay.
    pub cap: Duration,
}

impl Default for Backoff {
    /// First retry after about a second, doubling, at most ten minutes (see
    /// docs/callbacks-and-hooks.md and docs/whatsapp.md).
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            cap: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (0 for the first retry): `first · 2^attempt`
    /// capped at `cap`, of which a random half is dropped. Equal jitter keeps at least half the
    /// delay, so a throttled sender always slows down, while senders that failed together spread
    /// out instead of retrying in lockstep.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rng.gen_range(0..=spread))
    }

    /// The delay before jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        // 2^30 seconds is 34 years: beyond that every cap has long been reached.
        let factor = 1u32 << attempt.min(30);
        self.first
            .checked_mul(factor)
            .map_or(self.cap, |d| d.min(self.cap))
    }
}

/// [`Backoff::delay`] with the default policy.
pub fn backoff(attempt: u32, rng: &mut impl Rng) -> Duration {
    Backoff::default().delay(attempt, rng)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn doubles_from_one_second_up_to_ten_minutes() {
        let policy = Backoff::default();
        let ceilings: Vec<u64> = (0..12).map(|a| policy.ceiling(a).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
        assert_eq!(policy.ceiling(u32::MAX), Duration::from_secs(600));
    }

    #[test]
    fn first_retry_is_about_a_second() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..100 {
            let d = backoff(0, &mut rng);
            assert!(
                d >= Duration::from_millis(500) && d <= Duration::from_secs(1),
                "{d:?}"
            );
        }
    }

    #[test]
    fn jitter_spreads_retries() {
        let mut rng = StdRng::seed_from_u64(1);
        let delays: std::collections::HashSet<Duration> =
            (0..20).map(|_| backoff(5, &mut rng)).collect();
        assert!(delays.len() > 10);
    }

    proptest! {
        #[test]
        fn stays_between_half_and_whole_ceiling(attempt in 0u32..100, seed in any::<u64>(), first_ms in 1u64..5_000, cap_s in 1u64..3_600) {
            let policy = Backoff { first: Duration::from_millis(first_ms), cap: Duration::from_secs(cap_s) };
            let d = policy.delay(attempt, &mut StdRng::seed_from_u64(seed));
            let ceiling = policy.ceiling(attempt);
            prop_assert!(d <= ceiling && d >= ceiling / 2);
            prop_assert!(ceiling <= policy.cap);
            prop_assert!(policy.ceiling(attempt + 1) >= ceiling);
        }
    }
}

//! Exponential backoff, for the client's connect and the server's bind.

use std::time::Duration;

/// An exponential backoff schedule: `initial`, then each delay `factor` times
/// the last, capped at `max`, with optional random jitter.
///
/// The default is the original's schedule, 1 s, 2 s, 4 s, … up to one hour,
/// with each delay shortened by up to [`DEFAULT_JITTER`] (20 %) of itself, so
/// that the clients of a restarted server do not all reconnect at once.
/// [`Backoff::new`] makes a schedule without jitter.
///
/// ```
/// use std::time::Duration;
/// let b = nmsg::Backoff::default();
/// assert!(b.delay(0) <= Duration::from_secs(1) && b.delay(0) >= Duration::from_millis(800));
/// assert!(b.delay(40) <= Duration::from_secs(3600));
/// let plain = nmsg::Backoff::new(Duration::from_secs(1), Duration::from_secs(3600));
/// assert_eq!(plain.delay(3), Duration::from_secs(8));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first delay (default 1 s).
    pub initial: Duration,
    /// Each delay is the previous one times this (default 2).
    pub factor: f64,
    /// The longest delay (default 1 hour).
    pub max: Duration,
    /// Each delay is shortened by a random part of up to this fraction of
    /// itself (default [`DEFAULT_JITTER`], 0.2, which spreads delays over
    /// `[0.8 d, d]`; 0 for none), so that many clients do not retry in lockstep.
    pub jitter: f64,
    /// Where the jitter's random parts come from: `None` (default), the
    /// thread's generator; `Some(seed)`, a generator seeded with `seed` and
    /// the attempt's number, so that each delay is the same on every run
    /// ([`Backoff::seed`], for tests: schedules with one seed are in lockstep).
    pub seed: Option<u64>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            factor: 2.0,
            max: Duration::from_secs(3600),
            jitter: DEFAULT_JITTER,
            seed: None,
        }
    }
}

/// The default jitter of a [`Backoff`]: each delay is shortened by a random
/// part of up to 20 % of itself.
pub const DEFAULT_JITTER: f64 = 0.2;

impl Backoff {
    /// A schedule starting at `initial`, doubling, up to `max`, without jitter.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            jitter: 0.0,
            ..Backoff::default()
        }
    }

    /// Sets the factor.
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// Sets the jitter fraction, clamped to `0.0..=1.0`.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// Draws the jitter from a generator seeded with `seed` and the attempt:
    /// the same delays on every run, for tests (see the `seed` field).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The delay before retry number `attempt + 1` (attempt 0 is the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let max = self.max.as_secs_f64();
        let grown =
            self.initial.as_secs_f64() * self.factor.max(1.0).powi(attempt.min(1_000) as i32);
        let base = if grown.is_finite() {
            grown.min(max)
        } else {
            max
        };
        let jittered = if self.jitter > 0.0 {
            let draw = match self.seed {
                None => fastrand::f64(),
                Some(seed) => fastrand::Rng::with_seed(
                    seed ^ u64::from(attempt).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                )
                .f64(),
            };
            base * (1.0 - self.jitter.clamp(0.0, 1.0) * draw)
        } else {
            base
        };
        // A maximum near Duration::MAX does not survive the round trip through f64.
        Duration::try_from_secs_f64(jittered.max(0.0)).unwrap_or(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_spreads_the_clients_of_a_restarted_server() {
        let b = Backoff::default();
        let delays: Vec<Duration> = (0..200).map(|_| b.delay(2)).collect();
        assert!(delays
            .iter()
            .all(|d| *d >= Duration::from_millis(3_200) && *d <= Duration::from_secs(4)));
        // 200 clients do not all wait the same time: one in lockstep is the bug.
        assert!(delays.iter().any(|d| *d < Duration::from_millis(3_800)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(3_900)));
    }

    #[test]
    fn a_seeded_schedule_gives_the_same_delays_on_every_run_and_seeds_spread() {
        let a = Backoff::default().seed(7);
        let delays: Vec<Duration> = (0..10).map(|n| a.delay(n)).collect();
        // The same seed, another time: the same delays.
        assert_eq!(delays, (0..10).map(|n| a.delay(n)).collect::<Vec<_>>());
        assert_eq!(delays[0], Backoff::default().seed(7).delay(0));
        for (n, d) in delays.iter().enumerate() {
            let full =
                Backoff::new(Duration::from_secs(1), Duration::from_secs(3600)).delay(n as u32);
            assert!(*d <= full && *d >= full.mul_f64(0.8), "{n}: {d:?}");
        }
        // The attempts of one schedule are not all shortened alike, and
        // schedules of different seeds differ: 100 seeds, 100 first delays.
        let fractions: Vec<u64> = delays
            .iter()
            .enumerate()
            .map(|(n, d)| (d.as_secs_f64() / 2f64.powi(n as i32) * 1e6) as u64)
            .collect();
        let mut distinct = fractions.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), fractions.len(), "{fractions:?}");
        let mut firsts: Vec<Duration> = (0..100)
            .map(|s| Backoff::default().seed(s).delay(0))
            .collect();
        firsts.sort();
        firsts.dedup();
        assert_eq!(firsts.len(), 100);
        assert!(firsts[0] < Duration::from_millis(820) && firsts[99] > Duration::from_millis(980));
    }

    #[test]
    fn delays_grow_by_the_factor_up_to_the_maximum() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000)).factor(3.0);
        let ms: Vec<u128> = (0..5).map(|a| b.delay(a).as_millis()).collect();
        assert_eq!(ms, [100, 300, 900, 1000, 1000]);
    }

    #[test]
    fn an_unbounded_maximum_panics_nothing() {
        let b = Backoff::new(Duration::from_secs(1), Duration::MAX);
        assert_eq!(b.delay(0), Duration::from_secs(1));
        assert_eq!(b.delay(1_000), Duration::MAX);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        // The jitter draws from this thread's generator: seeded, the draws are
        // the same on every run.
        fastrand::seed(0x6e6d_7367);
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).jitter(0.5);
        let draws: Vec<Duration> = (0..1_000).map(|_| b.delay(0)).collect();
        for d in &draws {
            assert!(
                *d >= Duration::from_millis(500) && *d <= Duration::from_secs(1),
                "{d:?}"
            );
        }
        // The delays vary, and spread over the whole of [d/2, d]: each tenth
        // of that range gets some of the draws, the lowest and highest included.
        let mut distinct = draws.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() > 900, "{} distinct delays", distinct.len());
        let mut tenths = [0usize; 10];
        for d in &draws {
            let at = ((d.as_secs_f64() - 0.5) / 0.05).floor() as usize;
            tenths[at.min(9)] += 1;
        }
        assert!(tenths.iter().all(|&n| n >= 50), "{tenths:?}");
        let mean = draws.iter().map(Duration::as_secs_f64).sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.75).abs() < 0.02, "mean {mean}");

        // A later attempt is spread over its own [d/2, d], and without
        // jitter every delay is the schedule's.
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60)).jitter(0.5);
        let third: Vec<Duration> = (0..200).map(|_| b.delay(2)).collect();
        assert!(third
            .iter()
            .all(|d| *d >= Duration::from_secs(2) && *d <= Duration::from_secs(4)));
        assert!(third.iter().any(|d| *d < Duration::from_millis(2_500)));
        assert!(third.iter().any(|d| *d > Duration::from_millis(3_500)));
        let plain = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        assert!((0..100).all(|_| plain.delay(2) == Duration::from_secs(4)));
    }
}

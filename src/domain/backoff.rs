//! Retry delays.
//!
//! * [`backoff`]: the e-mail outbox and access removals (rules.md §6), stored as the next due
//!   time: `min(2^(attempts−1) minutes, 24 h) × uniform(0.8, 1.2)`.
//! * [`full_jitter`], [`doubling_within`]: in-process retry schedules, iterators of the pauses
//!   between attempts, for the `backon` retry of outbound calls and of the database connect.
//!   An iterator that ends stops the retries.

use std::time::{Duration as StdDuration, Instant};

use chrono::Duration;
use rand::Rng;

/// At most `max_attempts` attempts: the pause before retry n (n = attempts made so far) is
/// uniform in `[0, base · 2^n]` (integrations.md §1).
pub fn full_jitter(base: StdDuration, max_attempts: u32) -> impl Iterator<Item = StdDuration> {
    (1..max_attempts).map(move |n| {
        let cap = base.saturating_mul(1u32 << n.min(16));
        let cap_micros = u64::try_from(cap.as_micros()).unwrap_or(u64::MAX);
        StdDuration::from_micros(rand::rng().random_range(0..=cap_micros))
    })
}

/// Pauses of `first`, doubling up to `cap`, for as long as the next attempt would still start
/// within `give_up_after` of the first (operations.md §2: the database connect).
pub fn doubling_within(
    first: StdDuration,
    cap: StdDuration,
    give_up_after: StdDuration,
) -> impl Iterator<Item = StdDuration> {
    let started = Instant::now();
    std::iter::successors(Some(first), move |delay| Some((*delay * 2).min(cap)))
        .take_while(move |delay| started.elapsed() + *delay < give_up_after)
}

/// The cap of the un-jittered delay.
const MAX_BASE_MINUTES: i64 = 24 * 60;

/// The un-jittered delay after `attempts` failed attempts (values below 1 count as 1).
fn base_minutes(attempts: i32) -> i64 {
    let exponent = attempts.max(1) - 1;
    // 2^11 minutes already exceeds 24 h, so larger exponents need no arithmetic.
    if exponent >= 11 {
        return MAX_BASE_MINUTES;
    }
    (1i64 << exponent).min(MAX_BASE_MINUTES)
}

/// The lowest and highest delay [`backoff`] can return for `attempts`.
pub fn backoff_bounds(attempts: i32) -> (Duration, Duration) {
    let base_ms = base_minutes(attempts) * 60_000;
    (
        Duration::milliseconds(base_ms * 8 / 10),
        Duration::milliseconds(base_ms * 12 / 10),
    )
}

/// The delay before the next attempt after `attempts` failed attempts, with ±20 % jitter.
pub fn backoff(attempts: i32) -> Duration {
    let base_ms = base_minutes(attempts) * 60_000;
    let factor: f64 = rand::rng().random_range(0.8..=1.2);
    // Rounding to whole milliseconds can step just outside the bounds; clamp back in.
    let (low, high) = backoff_bounds(attempts);
    Duration::milliseconds((base_ms as f64 * factor).round() as i64).clamp(low, high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_doubles_from_one_minute_and_caps_at_a_day() {
        assert_eq!(base_minutes(1), 1);
        assert_eq!(base_minutes(2), 2);
        assert_eq!(base_minutes(3), 4);
        assert_eq!(base_minutes(11), 1024);
        assert_eq!(base_minutes(12), 24 * 60);
        assert_eq!(base_minutes(100), 24 * 60);
        assert_eq!(base_minutes(i32::MAX), 24 * 60);
    }

    #[test]
    fn zero_or_negative_attempts_count_as_the_first() {
        assert_eq!(base_minutes(0), 1);
        assert_eq!(base_minutes(-5), 1);
    }

    #[test]
    fn bounds_are_twenty_percent_either_side() {
        assert_eq!(
            backoff_bounds(1),
            (Duration::seconds(48), Duration::seconds(72))
        );
        assert_eq!(
            backoff_bounds(3),
            (Duration::seconds(192), Duration::seconds(288))
        );
        assert_eq!(
            backoff_bounds(20),
            (
                Duration::minutes(24 * 60 * 8 / 10),
                Duration::minutes(24 * 60 * 12 / 10)
            )
        );
    }

    #[test]
    fn full_jitter_gives_one_pause_fewer_than_attempts_within_base_times_two_to_the_n() {
        let base = StdDuration::from_millis(250);
        assert_eq!(full_jitter(base, 1).count(), 0);
        for _ in 0..200 {
            let pauses: Vec<StdDuration> = full_jitter(base, 3).collect();
            assert_eq!(pauses.len(), 2);
            assert!(pauses[0] <= StdDuration::from_millis(500));
            assert!(pauses[1] <= StdDuration::from_millis(1000));
        }
    }

    #[test]
    fn doubling_pauses_are_capped_and_stop_before_the_deadline() {
        let secs = StdDuration::from_secs;
        // The schedule looks at the time since it was made, not at the pauses it offered, so
        // with no time passing here it keeps offering the capped pause.
        let pauses: Vec<StdDuration> = doubling_within(secs(1), secs(16), secs(60))
            .take(7)
            .collect();
        assert_eq!(
            pauses,
            [
                secs(1),
                secs(2),
                secs(4),
                secs(8),
                secs(16),
                secs(16),
                secs(16)
            ]
        );
        // A pause that would end past the deadline is not offered.
        assert_eq!(doubling_within(secs(1), secs(16), secs(1)).count(), 0);
        assert_eq!(doubling_within(secs(2), secs(16), secs(3)).count(), 1);
    }

    #[test]
    fn jittered_delays_stay_within_the_bounds_and_vary() {
        for attempts in [1, 2, 5, 11, 12, 30] {
            let (low, high) = backoff_bounds(attempts);
            let delays: Vec<Duration> = (0..200).map(|_| backoff(attempts)).collect();
            assert!(delays.iter().all(|d| *d >= low && *d <= high), "{attempts}");
            assert!(
                delays.iter().any(|d| *d != delays[0]),
                "no jitter at {attempts}"
            );
        }
    }
}

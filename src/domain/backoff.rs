//! Retry backoff of the e-mail outbox and of access removals (rules.md §6):
//! `min(2^(attempts−1) minutes, 24 h) × uniform(0.8, 1.2)`.

use chrono::Duration;
use rand::Rng;

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

//! The rate limit on claim e-mails of one enrolment (round-2 addendum §2.3.3): a shortest gap
//! after the newest claim e-mail before a resend, and a cap on claim e-mails queued in any
//! rolling 24 h. Every claim row counts, whatever its status or what queued it.

use chrono::{DateTime, Duration, Utc};

/// The rolling window of the daily cap.
pub const WINDOW: Duration = Duration::hours(24);

/// The configured limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimLimit {
    /// `CLAIM_RESEND_INTERVAL_MINUTES`.
    pub interval: Duration,
    /// `CLAIM_EMAILS_MAX_PER_DAY` (at least 1).
    pub max_per_day: u32,
}

/// Whether a resend may be queued now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// `max_per_day` claim e-mails were queued in the last 24 h.
    DailyCapReached {
        next_allowed_at: DateTime<Utc>,
    },
    /// The newest claim e-mail is younger than the interval.
    IntervalApplies {
        next_allowed_at: DateTime<Utc>,
    },
}

impl ClaimLimit {
    pub fn new(interval_minutes: u32, max_per_day: u32) -> Self {
        Self {
            interval: Duration::minutes(i64::from(interval_minutes)),
            max_per_day: max_per_day.max(1),
        }
    }

    /// Rows created after this instant are the ones the limit counts.
    pub fn window_start(now: DateTime<Utc>) -> DateTime<Utc> {
        now - WINDOW
    }

    /// The earliest instant a resend would be accepted, or `None` for now. `recent` holds the
    /// `created_at` of the enrolment's claim rows created after [`Self::window_start`], newest
    /// first.
    pub fn next_allowed_at(
        &self,
        recent: &[DateTime<Utc>],
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let by_interval = recent.first().map(|&newest| newest + self.interval);
        let by_cap = recent
            .get(self.max_per_day as usize - 1)
            .map(|&oldest_counted| oldest_counted + WINDOW);
        [by_interval, by_cap]
            .into_iter()
            .flatten()
            .filter(|&t| t > now)
            .max()
    }

    /// When the daily cap stops applying, or `None` when it is not reached: the only limit on
    /// an e-mail correction or an unclaim's e-mail (`t_daily`).
    pub fn daily_cap(&self, recent: &[DateTime<Utc>], now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        recent
            .get(self.max_per_day as usize - 1)
            .map(|&oldest_counted| oldest_counted + WINDOW)
            .filter(|&t| t > now)
    }

    /// The daily cap is reported whenever it is reached, otherwise the interval.
    pub fn check(&self, recent: &[DateTime<Utc>], now: DateTime<Utc>) -> Verdict {
        match self.next_allowed_at(recent, now) {
            None => Verdict::Allowed,
            Some(next_allowed_at) if recent.len() >= self.max_per_day as usize => {
                Verdict::DailyCapReached { next_allowed_at }
            }
            Some(next_allowed_at) => Verdict::IntervalApplies { next_allowed_at },
        }
    }
}

/// The `Retry-After` seconds for `next_allowed_at`: rounded up, at least 1.
pub fn retry_after_seconds(next_allowed_at: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    let millis = (next_allowed_at - now).num_milliseconds().max(0) as u64;
    millis.div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes_ago: i64, now: DateTime<Utc>) -> DateTime<Utc> {
        now - Duration::minutes(minutes_ago)
    }

    #[test]
    fn no_recent_email_allows_a_resend() {
        let now = Utc::now();
        let limit = ClaimLimit::new(10, 5);
        assert_eq!(limit.next_allowed_at(&[], now), None);
        assert_eq!(limit.check(&[], now), Verdict::Allowed);
    }

    #[test]
    fn the_daily_cap_alone_ignores_the_interval() {
        let now = Utc::now();
        let limit = ClaimLimit::new(10, 3);
        assert_eq!(limit.daily_cap(&[at(1, now), at(2, now)], now), None);
        let recent = [at(1, now), at(2, now), at(3, now)];
        assert_eq!(
            limit.daily_cap(&recent, now),
            Some(at(3, now) + Duration::hours(24))
        );
    }

    #[test]
    fn the_interval_runs_from_the_newest_email() {
        let now = Utc::now();
        let limit = ClaimLimit::new(10, 5);
        let recent = [at(4, now), at(30, now)];
        assert_eq!(
            limit.check(&recent, now),
            Verdict::IntervalApplies {
                next_allowed_at: at(4, now) + Duration::minutes(10)
            }
        );
        assert_eq!(limit.check(&[at(10, now)], now), Verdict::Allowed);
    }

    #[test]
    fn the_daily_cap_counts_the_fifth_newest_and_wins_over_the_interval() {
        let now = Utc::now();
        let limit = ClaimLimit::new(10, 5);
        let recent = [
            at(1, now),
            at(60, now),
            at(120, now),
            at(180, now),
            at(600, now),
        ];
        let cap = at(600, now) + WINDOW;
        assert_eq!(
            limit.check(&recent, now),
            Verdict::DailyCapReached {
                next_allowed_at: cap
            }
        );
        // Reported as the cap even once the interval has passed.
        let older = [
            at(20, now),
            at(60, now),
            at(120, now),
            at(180, now),
            at(600, now),
        ];
        assert_eq!(
            limit.check(&older, now),
            Verdict::DailyCapReached {
                next_allowed_at: cap
            }
        );
    }

    #[test]
    fn the_later_of_interval_and_cap_is_next() {
        let now = Utc::now();
        let limit = ClaimLimit::new(1440, 2);
        let recent = [at(5, now), at(1430, now)];
        // The cap frees up in 10 minutes, the interval only in 1435.
        assert_eq!(
            limit.next_allowed_at(&recent, now),
            Some(at(5, now) + Duration::minutes(1440))
        );
    }

    #[test]
    fn retry_after_rounds_up_and_is_at_least_one() {
        let now = Utc::now();
        assert_eq!(
            retry_after_seconds(now + Duration::milliseconds(1500), now),
            2
        );
        assert_eq!(retry_after_seconds(now + Duration::seconds(600), now), 600);
        assert_eq!(retry_after_seconds(now, now), 1);
        assert_eq!(retry_after_seconds(now - Duration::seconds(3), now), 1);
    }
}

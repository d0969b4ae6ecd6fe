//! The date rules a draft course must meet to be activated (rules.md §2.1 (b)–(d), api.md
//! §4.5.5), with their exact public messages. Dates may lie in the past; only their presence,
//! their order and the drop window are checked.

use chrono::{DateTime, TimeDelta, Utc};

use super::datetime::format;

/// The three dates of a course, as stored (any may be unset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CourseDates {
    pub start_date: Option<DateTime<Utc>>,
    pub last_drop_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
}

/// Why the dates do not allow activation. `Display` is the public message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActivationDateError {
    /// Names of the unset fields, in the order `start_date, end_date, last_drop_date`.
    #[error("Cannot activate: the following fields are not set: {}", .0.join(", "))]
    MissingFields(Vec<&'static str>),
    /// `start_date < last_drop_date < end_date` does not hold strictly.
    #[error(
        "Cannot activate: dates must satisfy start_date < last_drop_date < end_date, got {} / {} / {}",
        format(start),
        format(last_drop),
        format(end)
    )]
    NotInOrder {
        start: DateTime<Utc>,
        last_drop: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    /// `last_drop_date > start_date + window_days`.
    #[error(
        "Cannot activate: last_drop_date must be within {} of start_date, got {} but max allowed is {}",
        drop_window_text(*window_days),
        format(last_drop),
        format(max)
    )]
    DropWindowExceeded {
        window_days: u32,
        last_drop: DateTime<Utc>,
        max: DateTime<Utc>,
    },
}

/// Checks (b) all dates set, (c) strict order, (d) `last_drop ≤ start + window_days` (the
/// edge itself is allowed), in that order.
pub fn check_activation(dates: &CourseDates, window_days: u32) -> Result<(), ActivationDateError> {
    let (Some(start), Some(last_drop), Some(end)) =
        (dates.start_date, dates.last_drop_date, dates.end_date)
    else {
        let missing = [
            ("start_date", dates.start_date),
            ("end_date", dates.end_date),
            ("last_drop_date", dates.last_drop_date),
        ]
        .into_iter()
        .filter(|(_, value)| value.is_none())
        .map(|(name, _)| name)
        .collect();
        return Err(ActivationDateError::MissingFields(missing));
    };
    if !(start < last_drop && last_drop < end) {
        return Err(ActivationDateError::NotInOrder {
            start,
            last_drop,
            end,
        });
    }
    // A window reaching past the representable range cannot be exceeded.
    if let Some(max) = start.checked_add_signed(TimeDelta::days(i64::from(window_days)))
        && last_drop > max
    {
        return Err(ActivationDateError::DropWindowExceeded {
            window_days,
            last_drop,
            max,
        });
    }
    Ok(())
}

/// `{window}` of the drop-window message: `1 week`, `{n} weeks` for multiples of 7, else
/// `{n} days` (literally, as api.md words it, so 1 gives `1 days`).
pub fn drop_window_text(days: u32) -> String {
    match days {
        7 => "1 week".to_owned(),
        d if d > 0 && d % 7 == 0 => format!("{} weeks", d / 7),
        d => format!("{d} days"),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 9, day, hour, 0, 0).unwrap()
    }

    fn dates(
        start: Option<DateTime<Utc>>,
        last_drop: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> CourseDates {
        CourseDates {
            start_date: start,
            last_drop_date: last_drop,
            end_date: end,
        }
    }

    #[test]
    fn window_wording_uses_weeks_for_multiples_of_seven() {
        assert_eq!(drop_window_text(14), "2 weeks");
        assert_eq!(drop_window_text(7), "1 week");
        assert_eq!(drop_window_text(21), "3 weeks");
        assert_eq!(drop_window_text(10), "10 days");
        assert_eq!(drop_window_text(1), "1 days");
    }

    #[test]
    fn missing_fields_are_listed_in_the_fixed_order() {
        let err = check_activation(&dates(None, None, None), 14).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Cannot activate: the following fields are not set: start_date, end_date, last_drop_date"
        );
        let err = check_activation(&dates(Some(at(1, 0)), None, Some(at(20, 0))), 14).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Cannot activate: the following fields are not set: last_drop_date"
        );
        let err = check_activation(&dates(None, Some(at(2, 0)), None), 14).unwrap_err();
        assert_eq!(
            err,
            ActivationDateError::MissingFields(vec!["start_date", "end_date"])
        );
    }

    #[test]
    fn the_order_must_be_strict() {
        for (start, last_drop, end) in [
            (at(1, 0), at(1, 0), at(20, 0)),
            (at(1, 0), at(20, 0), at(20, 0)),
            (at(5, 0), at(2, 0), at(20, 0)),
            (at(1, 0), at(10, 0), at(5, 0)),
        ] {
            let err =
                check_activation(&dates(Some(start), Some(last_drop), Some(end)), 14).unwrap_err();
            assert!(
                matches!(err, ActivationDateError::NotInOrder { .. }),
                "{err}"
            );
        }
        let err = check_activation(&dates(Some(at(5, 0)), Some(at(2, 12)), Some(at(20, 0))), 14)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Cannot activate: dates must satisfy start_date < last_drop_date < end_date, \
             got 2026-09-05T00:00:00Z / 2026-09-02T12:00:00Z / 2026-09-20T00:00:00Z"
        );
    }

    #[test]
    fn the_drop_window_edge_is_allowed_and_one_microsecond_more_is_not() {
        let start = at(1, 0);
        let edge = start + TimeDelta::days(14);
        let end = at(30, 0);
        assert_eq!(
            check_activation(&dates(Some(start), Some(edge), Some(end)), 14),
            Ok(())
        );
        let late = edge + TimeDelta::microseconds(1);
        let err = check_activation(&dates(Some(start), Some(late), Some(end)), 14).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Cannot activate: last_drop_date must be within 2 weeks of start_date, \
             got 2026-09-15T00:00:00.000001Z but max allowed is 2026-09-15T00:00:00Z"
        );
    }

    #[test]
    fn the_window_follows_the_configured_days() {
        let start = at(1, 0);
        let err =
            check_activation(&dates(Some(start), Some(at(9, 0)), Some(at(30, 0))), 7).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Cannot activate: last_drop_date must be within 1 week of start_date, \
             got 2026-09-09T00:00:00Z but max allowed is 2026-09-08T00:00:00Z"
        );
        let err = check_activation(&dates(Some(start), Some(at(12, 0)), Some(at(30, 0))), 10)
            .unwrap_err();
        assert!(
            err.to_string().contains("within 10 days of start_date"),
            "{err}"
        );
        assert_eq!(
            check_activation(&dates(Some(start), Some(at(11, 0)), Some(at(30, 0))), 10),
            Ok(())
        );
    }

    #[test]
    fn presence_is_checked_before_order_and_order_before_the_window() {
        let err = check_activation(&dates(Some(at(20, 0)), Some(at(1, 0)), None), 14).unwrap_err();
        assert!(matches!(err, ActivationDateError::MissingFields(_)));
        // Out of order and far outside the window: the order is reported.
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let err = check_activation(&dates(Some(start), Some(at(25, 0)), Some(at(20, 0))), 14)
            .unwrap_err();
        assert!(matches!(err, ActivationDateError::NotInOrder { .. }));
    }
}

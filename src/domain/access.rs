//! The access an enrolment's claimant holds in Keycloak (W.5.1): the level the service has
//! confirmed, and the target the access sync brings it to.

use chrono::{DateTime, Utc};

/// `course_enrolment.access_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLevel {
    None,
    /// Lab member and in the project's waitlisted group: the project is listed, not opened.
    Waitlisted,
    /// Lab member and project member, out of the waitlisted group.
    Member,
}

impl AccessLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLevel::None => "none",
            AccessLevel::Waitlisted => "waitlisted",
            AccessLevel::Member => "member",
        }
    }
}

/// What the target access is computed from.
#[derive(Debug, Clone, Copy)]
pub struct AccessInputs<'a> {
    pub claimed: bool,
    /// `is_dropped`, or a drop record exists.
    pub dropped: bool,
    pub course_status: &'a str,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
}

/// T(enrolment, course, now) of W.5.1. `None` means: grant nothing (removal is D4's job).
pub fn target(inputs: &AccessInputs<'_>, now: DateTime<Utc>) -> AccessLevel {
    let ended = inputs.end_date.is_some_and(|end| now >= end);
    if !inputs.claimed || inputs.dropped || inputs.course_status != "active" || ended {
        return AccessLevel::None;
    }
    if inputs.start_date.is_some_and(|start| now < start) {
        AccessLevel::Waitlisted
    } else {
        AccessLevel::Member
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn inputs(status: &str) -> AccessInputs<'_> {
        AccessInputs {
            claimed: true,
            dropped: false,
            course_status: status,
            start_date: None,
            end_date: None,
        }
    }

    #[test]
    fn before_the_start_a_claimant_is_waitlisted_and_from_it_a_member() {
        let now = Utc::now();
        let mut i = inputs("active");
        i.start_date = Some(now + TimeDelta::seconds(1));
        assert_eq!(target(&i, now), AccessLevel::Waitlisted);
        i.start_date = Some(now);
        assert_eq!(target(&i, now), AccessLevel::Member);
        i.start_date = None;
        assert_eq!(target(&i, now), AccessLevel::Member);
    }

    #[test]
    fn nothing_is_granted_unclaimed_dropped_inactive_or_ended() {
        let now = Utc::now();
        let mut unclaimed = inputs("active");
        unclaimed.claimed = false;
        let mut dropped = inputs("active");
        dropped.dropped = true;
        let mut ended = inputs("active");
        ended.end_date = Some(now);
        for i in [unclaimed, dropped, ended, inputs("draft"), inputs("voided")] {
            assert_eq!(target(&i, now), AccessLevel::None, "{i:?}");
        }
    }
}

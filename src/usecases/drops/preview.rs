//! Drop preview (`POST /seats/courses/{id}/drop-preview`, round2.md §4): what a faculty drop of
//! these seats would do, without doing it. One read of the seats, the drop's own pre-checks,
//! and at most one accounting read, made only when a prediction depends on a balance. The
//! prediction is D3's rule (`domain::recovery::recover`), so preview and drop cannot disagree
//! on the same inputs.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::domain::recovery::{self, RecoveryInputs};
use crate::repo::courses::Course;
use crate::repo::drop_preview::{self, PreviewSeat};
use crate::repo::drops::DEPLETING;
use crate::usecases::Services;
use crate::usecases::UseCaseError;
use crate::usecases::drops::TOP_UP_IN_PROGRESS;

/// What blocks the recovery of a seat (`recovery_blockers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocker {
    /// The drop comes after `last_drop_date`.
    PastLastDropDate,
    /// The seat was recovered once already.
    SeatRecoveredBefore,
    /// The student has spent more than the margin.
    SpentOverMargin,
}

impl Blocker {
    pub fn as_str(self) -> &'static str {
        match self {
            Blocker::PastLastDropDate => "past_last_drop_date",
            Blocker::SeatRecoveredBefore => "seat_recovered_before",
            Blocker::SpentOverMargin => "spent_over_margin",
        }
    }
}

/// The prediction for a seat whose drop would start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prediction {
    /// An earlier drop failed in D2 and this one would resume it.
    pub resumes: bool,
    /// `true` recovered, `false` consumed, `None` unknown (a balance that could not be read).
    pub seat_recovered: Option<bool>,
    pub blockers: Vec<Blocker>,
    pub credits_granted: i32,
    /// The project's balance, when the accounting read was made and knew the project.
    pub balance: Option<Decimal>,
}

impl Prediction {
    pub fn credits_spent(&self) -> Option<Decimal> {
        self.balance
            .map(|b| (Decimal::from(self.credits_granted) - b).max(Decimal::ZERO))
    }

    /// What the deplete would move back.
    pub fn credits_returned(&self) -> Option<Decimal> {
        self.balance.map(|b| b.max(Decimal::ZERO))
    }
}

/// One requested seat, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatPreview {
    pub seat_id: Uuid,
    pub enrolment_id: Option<Uuid>,
    pub student_id: Option<String>,
    /// `enrolment_drop.deplete_in_doubt` of an earlier attempt.
    pub deplete_in_doubt: bool,
    /// The prediction, or the sentence the drop would answer instead.
    pub verdict: Result<Prediction, &'static str>,
}

/// The counts of `summary`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PreviewSummary {
    pub can_drop: u64,
    pub seats_recovered: u64,
    pub seats_consumed: u64,
    pub seats_unknown: u64,
    /// The known `credits_returned` of the droppable seats.
    pub credits_returned: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropPreview {
    pub evaluated_at: DateTime<Utc>,
    pub last_drop_date: Option<DateTime<Utc>>,
    pub recovery_margin_credits: i32,
    /// False when the balance read was made and failed.
    pub balances_available: bool,
    pub results: Vec<SeatPreview>,
}

impl DropPreview {
    pub fn summary(&self) -> PreviewSummary {
        let mut summary = PreviewSummary::default();
        for prediction in self.results.iter().filter_map(|r| r.verdict.as_ref().ok()) {
            summary.can_drop += 1;
            match prediction.seat_recovered {
                Some(true) => summary.seats_recovered += 1,
                Some(false) => summary.seats_consumed += 1,
                None => summary.seats_unknown += 1,
            }
            summary.credits_returned += prediction.credits_returned().unwrap_or_default();
        }
        summary
    }
}

/// What D1 would find for a droppable seat, before any balance is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Droppable {
    project_id: Uuid,
    is_early: bool,
    previously_dropped: bool,
    prior_in_doubt: bool,
    resumes: bool,
    /// The enrolment's granted top-ups: part of the threshold and of the credits granted.
    extra_credits: i32,
}

impl Droppable {
    /// The prediction depends on the balance only for an early first drop that is not in
    /// doubt (§4.3 step 3).
    fn needs_balance(&self) -> bool {
        self.is_early && !self.previously_dropped && !self.prior_in_doubt
    }
}

/// The faculty drop's pre-checks and D1's lease check, without writing: the seat's
/// droppable state, or the sentence the drop would answer.
fn pre_check(
    seat: Option<&PreviewSeat>,
    last_drop_date: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Droppable, &'static str> {
    let seat = seat.ok_or("Seat not found in this course")?;
    let (Some(_), Some(project_id)) = (seat.enrolment_id, seat.project_id) else {
        return Err("Seat has no enrolment");
    };
    if seat.enrolment_is_dropped == Some(true) {
        return Err("Enrolment is already dropped");
    }
    if seat.top_up_in_progress {
        return Err(TOP_UP_IN_PROGRESS);
    }
    let resumes = match seat.drop_state.as_deref() {
        None => false,
        Some(DEPLETING) if seat.drop_lease_until.is_some_and(|until| until > now) => {
            return Err("A drop of this seat is already in progress");
        }
        Some(DEPLETING) => true,
        // A settled record next to an undropped enrolment: D1 answers "already dropped".
        Some(_) => return Err("Enrolment is already dropped"),
    };
    Ok(Droppable {
        project_id,
        is_early: seat
            .drop_is_early
            .unwrap_or_else(|| last_drop_date.is_some_and(|last| now < last)),
        previously_dropped: seat.previously_dropped,
        prior_in_doubt: seat.deplete_in_doubt.unwrap_or(false),
        resumes,
        extra_credits: seat.extra_credits,
    })
}

/// The inputs D3 would decide with, and the balance when known.
struct Rule {
    credits_per_seat: i32,
    margin_credits: i32,
}

impl Rule {
    fn predict(&self, seat: &Droppable, balance: Option<Decimal>) -> Prediction {
        let decide = |amount: Decimal| {
            recovery::recover(&RecoveryInputs {
                is_early: seat.is_early,
                seat_exists: true,
                previously_dropped: seat.previously_dropped,
                depleted_amount: amount.max(Decimal::ZERO),
                credits_per_seat: self.credits_per_seat,
                extra_credits: seat.extra_credits,
                margin_credits: self.margin_credits,
                prior_in_doubt: seat.prior_in_doubt,
            })
        };
        let (seat_recovered, blockers) = if seat.needs_balance() {
            match balance.map(decide) {
                Some(true) => (Some(true), Vec::new()),
                Some(false) => (Some(false), vec![Blocker::SpentOverMargin]),
                None => (None, Vec::new()),
            }
        } else {
            // Decided by the date, an earlier recovery or the in-doubt rule: any amount will do.
            let mut blockers = Vec::new();
            if !seat.is_early {
                blockers.push(Blocker::PastLastDropDate);
            }
            if seat.previously_dropped {
                blockers.push(Blocker::SeatRecoveredBefore);
            }
            (Some(decide(Decimal::ZERO)), blockers)
        };
        Prediction {
            resumes: seat.resumes,
            seat_recovered,
            blockers,
            credits_granted: self.credits_per_seat.saturating_add(seat.extra_credits),
            balance,
        }
    }
}

/// Previews a faculty drop of `seat_ids` (distinct) of `course`; one result per seat, in
/// request order. Writes nothing.
pub async fn preview_drop(
    services: &Services,
    course: &Course,
    seat_ids: &[Uuid],
) -> Result<DropPreview, UseCaseError> {
    let now = Utc::now();
    let found: HashMap<Uuid, PreviewSeat> =
        drop_preview::seats(&services.db, course.id, seat_ids, now)
            .await?
            .into_iter()
            .map(|s| (s.seat_id, s))
            .collect();
    let checks: Vec<Result<Droppable, &'static str>> = seat_ids
        .iter()
        .map(|id| pre_check(found.get(id), course.last_drop_date, now))
        .collect();

    let needs_balance = checks.iter().flatten().any(Droppable::needs_balance);
    let (balances, balances_available) = if needs_balance {
        match services
            .accounting
            .vlab_balance(course.virtual_lab_id)
            .await
        {
            Ok(lab) => (Some(lab.projects), true),
            Err(err) => {
                tracing::warn!(course_id = %course.id, error = %err, "drop preview: the balances could not be read");
                (None, false)
            }
        }
    } else {
        (None, true)
    };

    let rule = Rule {
        credits_per_seat: course.credits_per_seat,
        margin_credits: services.config.drop_recovery_margin_credits,
    };
    let results = seat_ids
        .iter()
        .zip(checks)
        .map(|(seat_id, check)| {
            let seat = found.get(seat_id);
            let verdict = check.map(|droppable| {
                let balance = balances
                    .as_ref()
                    .and_then(|b| b.get(&droppable.project_id))
                    .map(|p| p.balance);
                rule.predict(&droppable, balance)
            });
            SeatPreview {
                seat_id: *seat_id,
                enrolment_id: seat.and_then(|s| s.enrolment_id),
                student_id: seat.and_then(|s| s.student_id.clone()),
                deplete_in_doubt: seat.and_then(|s| s.deplete_in_doubt).unwrap_or(false),
                verdict,
            }
        })
        .collect();
    Ok(DropPreview {
        evaluated_at: now,
        last_drop_date: course.last_drop_date,
        recovery_margin_credits: rule.margin_credits,
        balances_available,
        results,
    })
}

/// How many of the course's undropped enrolments a faculty drop now would recover the seat
/// of, given the lab's project balances (read once by the caller): the drop preview's
/// prediction over every undropped seat. Seats whose outcome needs a missing balance are not
/// counted.
pub async fn recoverable_now(
    services: &Services,
    course: &Course,
    balances: &HashMap<Uuid, crate::clients::ProjectBalance>,
    now: DateTime<Utc>,
) -> Result<u64, UseCaseError> {
    let seats = drop_preview::undropped_seats(&services.db, course.id, now).await?;
    let rule = Rule {
        credits_per_seat: course.credits_per_seat,
        margin_credits: services.config.drop_recovery_margin_credits,
    };
    let recovered = seats
        .iter()
        .filter_map(|seat| pre_check(Some(seat), course.last_drop_date, now).ok())
        .map(|droppable| {
            let balance = balances.get(&droppable.project_id).map(|p| p.balance);
            rule.predict(&droppable, balance)
        })
        .filter(|prediction| prediction.seat_recovered == Some(true))
        .count();
    Ok(recovered as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seat() -> PreviewSeat {
        PreviewSeat {
            seat_id: Uuid::new_v4(),
            previously_dropped: false,
            enrolment_id: Some(Uuid::new_v4()),
            student_id: Some("s1".to_owned()),
            project_id: Some(Uuid::new_v4()),
            enrolment_is_dropped: Some(false),
            drop_state: None,
            drop_is_early: None,
            deplete_in_doubt: None,
            drop_lease_until: None,
            extra_credits: 0,
            top_up_in_progress: false,
        }
    }

    const RULE: Rule = Rule {
        credits_per_seat: 200,
        margin_credits: 50,
    };

    fn droppable(is_early: bool, previously_dropped: bool, prior_in_doubt: bool) -> Droppable {
        Droppable {
            project_id: Uuid::new_v4(),
            is_early,
            previously_dropped,
            prior_in_doubt,
            resumes: false,
            extra_credits: 0,
        }
    }

    #[test]
    fn pre_checks_answer_the_drops_sentences_in_its_order() {
        let now = Utc::now();
        let later = Some(now + chrono::TimeDelta::days(1));
        assert_eq!(
            pre_check(None, later, now),
            Err("Seat not found in this course")
        );
        let empty = PreviewSeat {
            enrolment_id: None,
            project_id: None,
            student_id: None,
            enrolment_is_dropped: None,
            ..seat()
        };
        assert_eq!(
            pre_check(Some(&empty), later, now),
            Err("Seat has no enrolment")
        );
        let dropped = PreviewSeat {
            enrolment_is_dropped: Some(true),
            ..seat()
        };
        assert_eq!(
            pre_check(Some(&dropped), later, now),
            Err("Enrolment is already dropped")
        );
        let busy = PreviewSeat {
            drop_state: Some("depleting".to_owned()),
            drop_is_early: Some(true),
            deplete_in_doubt: Some(false),
            drop_lease_until: Some(now + chrono::TimeDelta::minutes(1)),
            ..seat()
        };
        assert_eq!(
            pre_check(Some(&busy), later, now),
            Err("A drop of this seat is already in progress")
        );
    }

    #[test]
    fn a_top_up_in_flight_stops_the_drop_and_granted_top_ups_raise_the_threshold() {
        let now = Utc::now();
        let later = Some(now + chrono::TimeDelta::days(1));
        let busy = PreviewSeat {
            top_up_in_progress: true,
            ..seat()
        };
        assert_eq!(pre_check(Some(&busy), later, now), Err(TOP_UP_IN_PROGRESS));
        let topped_up = PreviewSeat {
            extra_credits: 100,
            ..seat()
        };
        let found = pre_check(Some(&topped_up), later, now).unwrap();
        // 300 granted: 240 left is 60 spent, over the margin; 260 left is within it.
        let spent_60 = RULE.predict(&found, Some(Decimal::from(240)));
        assert_eq!(spent_60.credits_granted, 300);
        assert_eq!(spent_60.seat_recovered, Some(false));
        assert_eq!(spent_60.credits_spent(), Some(Decimal::from(60)));
        let spent_40 = RULE.predict(&found, Some(Decimal::from(260)));
        assert_eq!(spent_40.seat_recovered, Some(true));
    }

    #[test]
    fn a_lapsed_drop_resumes_with_its_persisted_date_and_doubt() {
        let now = Utc::now();
        let lapsed = PreviewSeat {
            drop_state: Some("depleting".to_owned()),
            drop_is_early: Some(true),
            deplete_in_doubt: Some(true),
            drop_lease_until: Some(now - chrono::TimeDelta::minutes(1)),
            ..seat()
        };
        // The window has closed since, but the first request's is_early holds.
        let found = pre_check(Some(&lapsed), Some(now - chrono::TimeDelta::days(1)), now).unwrap();
        assert!(found.resumes && found.is_early && found.prior_in_doubt);
        assert!(!found.needs_balance());
        let prediction = RULE.predict(&found, None);
        assert_eq!(prediction.seat_recovered, Some(true));
        assert!(prediction.blockers.is_empty());
    }

    #[test]
    fn balances_decide_only_early_first_drops() {
        let spent_20 = RULE.predict(&droppable(true, false, false), Some(Decimal::from(180)));
        assert_eq!(spent_20.seat_recovered, Some(true));
        assert_eq!(spent_20.credits_spent(), Some(Decimal::from(20)));
        assert_eq!(spent_20.credits_returned(), Some(Decimal::from(180)));

        let spent_60 = RULE.predict(&droppable(true, false, false), Some(Decimal::from(140)));
        assert_eq!(
            (spent_60.seat_recovered, spent_60.blockers),
            (Some(false), vec![Blocker::SpentOverMargin])
        );

        let unknown = RULE.predict(&droppable(true, false, false), None);
        assert_eq!((unknown.seat_recovered, unknown.blockers), (None, vec![]));

        let late_again = RULE.predict(&droppable(false, true, false), Some(Decimal::from(200)));
        assert_eq!(
            (late_again.seat_recovered, late_again.blockers),
            (
                Some(false),
                vec![Blocker::PastLastDropDate, Blocker::SeatRecoveredBefore]
            )
        );
    }

    #[test]
    fn an_overdrawn_project_returns_nothing_and_has_spent_everything() {
        let overdrawn = RULE.predict(&droppable(true, false, false), Some(Decimal::from(-30)));
        assert_eq!(overdrawn.credits_returned(), Some(Decimal::ZERO));
        assert_eq!(overdrawn.credits_spent(), Some(Decimal::from(230)));
        assert_eq!(overdrawn.seat_recovered, Some(false));
    }
}

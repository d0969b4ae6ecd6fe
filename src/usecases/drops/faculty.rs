//! Faculty drop (`POST /seats/courses/{id}/drop`, rules.md §4.15): per-seat pre-checks in
//! request order, then the drop routine for the rest in one detached task.

use std::collections::HashMap;

use chrono::Utc;
use uuid::Uuid;

use super::{DropOutcome, DropReason, drop_enrolments};
use crate::domain::audit::Actor;
use crate::repo::drops::{self, RequestedSeat};
use crate::usecases::Services;
use crate::usecases::UseCaseError;

/// The result for one requested seat (api.md §3.13 SeatDropResult).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatDrop {
    pub seat_id: Uuid,
    pub outcome: SeatDropOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeatDropOutcome {
    /// A pre-check stopped it.
    Skipped(&'static str),
    /// The drop routine ran.
    Ran(DropOutcome),
}

impl SeatDrop {
    pub fn error(&self) -> Option<String> {
        match &self.outcome {
            SeatDropOutcome::Skipped(sentence) => Some((*sentence).to_owned()),
            SeatDropOutcome::Ran(outcome) => outcome.error_sentence(),
        }
    }

    /// `(seat_recovered, access_removed)` when dropped.
    pub fn settled(&self) -> Option<(bool, bool)> {
        match self.outcome {
            SeatDropOutcome::Ran(DropOutcome::Dropped {
                recovered,
                access_removed,
                ..
            }) => Some((recovered, access_removed)),
            _ => None,
        }
    }
}

/// The pre-checks of rules.md §4.15 step 2: the enrolment to drop, or why not.
fn pre_check(seat: Option<&RequestedSeat>) -> Result<Uuid, &'static str> {
    let seat = seat.ok_or("Seat not found in this course")?;
    let enrolment = seat.enrolment_id.ok_or("Seat has no enrolment")?;
    if seat.enrolment_is_dropped == Some(true) {
        return Err("Enrolment is already dropped");
    }
    Ok(enrolment)
}

/// Drops the enrolments on `seat_ids` (distinct) of `course_id`; one result per seat, in
/// request order.
pub async fn drop_seats(
    services: &Services,
    course_id: Uuid,
    requested_by: Actor,
    seat_ids: Vec<Uuid>,
) -> Result<Vec<SeatDrop>, UseCaseError> {
    let services = services.clone();
    services
        .tasks
        .clone()
        .run("drop_seats", async move {
            run(&services, course_id, &requested_by, &seat_ids).await
        })
        .await?
}

async fn run(
    services: &Services,
    course_id: Uuid,
    requested_by: &Actor,
    seat_ids: &[Uuid],
) -> Result<Vec<SeatDrop>, UseCaseError> {
    let now = Utc::now();
    let found: HashMap<Uuid, RequestedSeat> =
        drops::requested_seats(&services.db, course_id, seat_ids)
            .await?
            .into_iter()
            .map(|s| (s.seat_id, s))
            .collect();
    let checks: Vec<Result<Uuid, &'static str>> =
        seat_ids.iter().map(|id| pre_check(found.get(id))).collect();
    let to_drop: Vec<Uuid> = checks.iter().filter_map(|c| c.ok()).collect();
    let mut outcomes = drop_enrolments(services, &to_drop, DropReason::Faculty, requested_by, now)
        .await
        .into_iter();
    let mut results = Vec::with_capacity(seat_ids.len());
    for (seat_id, check) in seat_ids.iter().zip(checks) {
        let outcome = match check {
            Err(sentence) => SeatDropOutcome::Skipped(sentence),
            Ok(_) => SeatDropOutcome::Ran(outcomes.next().ok_or_else(|| {
                UseCaseError::Internal(anyhow::anyhow!("a drop outcome is missing"))
            })?),
        };
        results.push(SeatDrop {
            seat_id: *seat_id,
            outcome,
        });
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(enrolment: Option<Uuid>, dropped: Option<bool>) -> RequestedSeat {
        RequestedSeat {
            seat_id: Uuid::new_v4(),
            enrolment_id: enrolment,
            enrolment_is_dropped: dropped,
        }
    }

    #[test]
    fn pre_checks_come_in_the_order_of_the_spec() {
        let e = Uuid::new_v4();
        assert_eq!(pre_check(None), Err("Seat not found in this course"));
        assert_eq!(
            pre_check(Some(&seat(None, None))),
            Err("Seat has no enrolment")
        );
        assert_eq!(
            pre_check(Some(&seat(Some(e), Some(true)))),
            Err("Enrolment is already dropped")
        );
        assert_eq!(pre_check(Some(&seat(Some(e), Some(false)))), Ok(e));
    }
}

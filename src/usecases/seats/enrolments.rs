//! `GET /courses/{course_id}/enrolments` (api.md §4.5.10): every enrolment, dropped ones
//! included, with its seat and drop state. Read-only.

use std::collections::HashMap;

use uuid::Uuid;

use crate::repo::{self, enrolments::EnrolmentWithDrop, seats::Seat};
use crate::usecases::Services;
use crate::usecases::UseCaseError;

/// Enrolments by `created_at`, then id, each with the seat that points to it.
pub async fn list_course_enrolments(
    services: &Services,
    course_id: Uuid,
) -> Result<Vec<(EnrolmentWithDrop, Option<Seat>)>, UseCaseError> {
    let enrolments = repo::enrolments::list_by_course(&services.db, course_id).await?;
    let ids: Vec<Uuid> = enrolments.iter().map(|e| e.enrolment.id).collect();
    // `seat.enrolment_id` is unique, so each enrolment has at most one seat.
    let mut seats: HashMap<Uuid, Seat> = repo::seats::find_by_enrolments(&services.db, &ids)
        .await?
        .into_iter()
        .filter_map(|s| s.enrolment_id.map(|id| (id, s)))
        .collect();
    Ok(enrolments
        .into_iter()
        .map(|e| {
            let seat = seats.remove(&e.enrolment.id);
            (e, seat)
        })
        .collect())
}

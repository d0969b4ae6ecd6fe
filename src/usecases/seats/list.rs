//! `GET /seats/courses/{course_id}` (api.md §4.6.4): every seat of the course with its
//! enrolment. Read-only.

use std::collections::HashMap;

use uuid::Uuid;

use crate::repo::{self, enrolments::Enrolment, seats::Seat};
use crate::usecases::Services;
use crate::usecases::UseCaseError;

/// Seats by `created_at`, then id, each with the enrolment it points to.
pub async fn list_course_seats(
    services: &Services,
    course_id: Uuid,
) -> Result<Vec<(Seat, Option<Enrolment>)>, UseCaseError> {
    let seats = repo::seats::list_by_course(&services.db, course_id).await?;
    let ids: Vec<Uuid> = seats.iter().filter_map(|s| s.enrolment_id).collect();
    let mut enrolments: HashMap<Uuid, Enrolment> = repo::enrolments::find_many(&services.db, &ids)
        .await?
        .into_iter()
        .map(|e| (e.id, e))
        .collect();
    Ok(seats
        .into_iter()
        .map(|seat| {
            let enrolment = seat.enrolment_id.and_then(|id| enrolments.remove(&id));
            (seat, enrolment)
        })
        .collect())
}

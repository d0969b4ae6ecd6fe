//! `GET /seats/batches/{batch_id}` and `GET /seats/batches` (api.md §4.6.2–§4.6.3): seats
//! grouped by batch, described by the first seat's institution and current course.

use uuid::Uuid;

use crate::repo::{
    self, institutions::Institution, seats::BatchCourse, seats::Seat, seats::SeatSearch,
};
use crate::usecases::Services;
use crate::usecases::UseCaseError;
use crate::usecases::seats::SeatError;

/// Seats grouped by `batch_id`, with the header of api.md §3.12.
#[derive(Debug, Clone)]
pub struct BatchSearch {
    pub institution: Institution,
    pub course: BatchCourse,
    /// Batches by earliest seat `created_at`, then `batch_id`; seats by `created_at`, then id.
    pub batches: Vec<(Uuid, Vec<Seat>)>,
}

pub async fn get_batch(services: &Services, batch_id: Uuid) -> Result<BatchSearch, UseCaseError> {
    let seats = repo::seats::list_by_batch(&services.db, batch_id).await?;
    describe(services, seats)
        .await?
        .ok_or(SeatError::BatchNotFound(batch_id).into())
}

pub async fn search(
    services: &Services,
    filters: &SeatSearch,
) -> Result<BatchSearch, UseCaseError> {
    let seats = repo::seats::search(&services.db, filters).await?;
    describe(services, seats)
        .await?
        .ok_or(SeatError::NoBatchesFound.into())
}

/// Groups seats already in (`created_at`, id) order; `None` when there are none.
async fn describe(
    services: &Services,
    seats: Vec<Seat>,
) -> Result<Option<BatchSearch>, UseCaseError> {
    let batches = group_by_batch(seats);
    let Some(first) = batches.first().and_then(|(_, seats)| seats.first()) else {
        return Ok(None);
    };
    let (institution_id, course_id) = (first.institution_id, first.course_id);
    // Foreign keys guarantee both rows; a miss means a concurrent course delete.
    let institution = repo::institutions::find(&services.db, institution_id)
        .await?
        .ok_or_else(|| missing("institution", institution_id))?;
    let course = repo::seats::batch_course(&services.db, course_id)
        .await?
        .ok_or_else(|| missing("course", course_id))?;
    Ok(Some(BatchSearch {
        institution,
        course,
        batches,
    }))
}

fn missing(what: &str, id: Uuid) -> UseCaseError {
    UseCaseError::Internal(anyhow::anyhow!("the {what} {id} of a listed seat vanished"))
}

/// Keeps each batch's seats in their given order and sorts the batches by their first seat's
/// `created_at`, then `batch_id`.
fn group_by_batch(seats: Vec<Seat>) -> Vec<(Uuid, Vec<Seat>)> {
    let mut batches: Vec<(Uuid, Vec<Seat>)> = Vec::new();
    for seat in seats {
        match batches.iter_mut().find(|(id, _)| *id == seat.batch_id) {
            Some((_, group)) => group.push(seat),
            None => batches.push((seat.batch_id, vec![seat])),
        }
    }
    batches.sort_by_key(|(id, group)| (group.first().map(|s| s.created_at), *id));
    batches
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};

    use super::*;

    fn seat(batch: u128, id: u128, minutes: i64) -> Seat {
        let base = chrono::DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let created = base + Duration::minutes(minutes);
        Seat {
            id: Uuid::from_u128(id),
            course_id: Uuid::nil(),
            institution_id: Uuid::nil(),
            is_consumed: false,
            previously_dropped: false,
            batch_id: Uuid::from_u128(batch),
            enrolment_id: None,
            expiry_date: created,
            credit_value: 200,
            created_at: created,
            reservation_id: None,
            reserved_until: None,
            reserved_student_id: None,
            reserved_email: None,
        }
    }

    #[test]
    fn batches_are_ordered_by_their_first_seat_then_id() {
        let seats = vec![seat(9, 1, 0), seat(2, 2, 0), seat(9, 3, 1), seat(1, 4, 5)];
        let batches = group_by_batch(seats);
        let order: Vec<u128> = batches.iter().map(|(id, _)| id.as_u128()).collect();
        assert_eq!(order, [2, 9, 1]);
        let nine: Vec<u128> = batches[1].1.iter().map(|s| s.id.as_u128()).collect();
        assert_eq!(nine, [1, 3]);
    }
}

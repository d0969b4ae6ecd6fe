//! `POST /seats/transfer` (rules.md §4.11): one transaction with both course rows locked in id
//! order, no external calls.

use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use crate::domain::audit::{Actor, EventType};
use crate::repo::{self, courses::Course, courses::status, seats::Seat};
use crate::usecases::Services;
use crate::usecases::UseCaseError;
use crate::usecases::events::{self, EventExt};
use crate::usecases::seats::SeatError;

/// How many seats to move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    Exactly(i64),
    All,
}

pub async fn transfer(
    services: &Services,
    actor: &Actor,
    source_id: Uuid,
    target_id: Uuid,
    amount: Amount,
) -> Result<Vec<Seat>, UseCaseError> {
    let now = Utc::now();
    let mut tx = services.db.begin().await?;
    // Lock order: both course rows, by id.
    let mut ids = [source_id, target_id];
    ids.sort();
    let mut courses = Vec::with_capacity(2);
    for id in ids {
        if let Some(course) = repo::courses::find_for_update(&mut *tx, id).await? {
            courses.push(course);
        }
    }
    let find = |id: Uuid| courses.iter().find(|c| c.id == id);
    let (Some(source), Some(target)) = (find(source_id), find(target_id)) else {
        return Err(SeatError::TransferCoursesNotFound.into());
    };
    check_courses(source, target, now)?;

    let limit = match amount {
        Amount::Exactly(n) => Some(n),
        Amount::All => None,
    };
    let seat_ids =
        repo::seats::lock_transferable(&mut *tx, source.id, now, target.credits_per_seat, limit)
            .await?;
    match amount {
        Amount::Exactly(n) if (seat_ids.len() as i64) < n => {
            return Err(SeatError::TransferNotEnoughSeats {
                requested: n,
                available: seat_ids.len(),
            }
            .into());
        }
        Amount::All if seat_ids.is_empty() => return Err(SeatError::NoTransferableSeats.into()),
        _ => {}
    }
    let moved = repo::seats::move_to_course(&mut *tx, &seat_ids, target.id).await?;
    let moved_ids: Vec<Uuid> = moved.iter().map(|s| s.id).collect();
    let side = |kind, course_id, other_course_id| {
        events::event(course_id, kind, actor, now).data(json!({
            "count": moved_ids.len(),
            "seat_ids": moved_ids,
            "other_course_id": other_course_id,
        }))
    };
    let recorded = [
        side(EventType::SeatsTransferredOut, source.id, target.id),
        side(EventType::SeatsTransferredIn, target.id, source.id),
    ];
    events::record(&mut *tx, &recorded).await?;
    tx.commit().await?;
    metrics::counter!("vlab_seats_transferred_total").increment(moved.len() as u64);
    tracing::info!(source_course_id = %source_id, target_course_id = %target_id, seats = moved.len(), "seats transferred");
    Ok(moved)
}

/// Checks 2–5 of api.md §4.6.5, in order.
fn check_courses(
    source: &Course,
    target: &Course,
    now: chrono::DateTime<Utc>,
) -> Result<(), UseCaseError> {
    if source.institution_id != target.institution_id {
        return Err(SeatError::TransferInstitutionMismatch.into());
    }
    if source.status != status::ACTIVE || target.status != status::ACTIVE {
        return Err(SeatError::TransferCoursesNotActive.into());
    }
    // Null, or not yet past: the source is still in its drop window.
    if source.last_drop_date.is_none_or(|d| now <= d) {
        return Err(SeatError::TransferSourceInDropWindow.into());
    }
    if target.last_drop_date.is_none_or(|d| now > d) {
        return Err(SeatError::TransferTargetPastDropDate.into());
    }
    Ok(())
}

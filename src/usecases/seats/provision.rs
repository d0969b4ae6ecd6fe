//! `POST /seats/provision` (rules.md §4.9): one transaction, no external calls.

use chrono::{Duration, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::domain::audit::{Actor, EventType};
use crate::repo::{self, courses::status, seats::NewBatch, seats::Seat};
use crate::usecases::Services;
use crate::usecases::UseCaseError;
use crate::usecases::events::{self, EventExt};
use crate::usecases::seats::SeatError;

/// Inserts `n` seats of one new batch into the active course; returns them by id.
pub async fn provision(
    services: &Services,
    actor: &Actor,
    course_id: Uuid,
    n: usize,
) -> Result<Vec<Seat>, UseCaseError> {
    let now = Utc::now();
    let mut tx = services.db.begin().await?;
    let course = repo::courses::find_for_share(&mut *tx, course_id)
        .await?
        .ok_or(SeatError::ProvisionCourseNotFound(course_id))?;
    if course.status != status::ACTIVE {
        return Err(SeatError::ProvisionCourseNotActive {
            course_id,
            status: course.status,
        }
        .into());
    }
    let batch = NewBatch {
        ids: (0..n).map(|_| Uuid::new_v4()).collect(),
        course_id,
        institution_id: course.institution_id,
        batch_id: Uuid::new_v4(),
        expiry_date: now + Duration::days(i64::from(services.config.seat_expiry_days)),
        credit_value: course.credits_per_seat,
    };
    let seats = repo::seats::insert_batch(&mut *tx, &batch, now).await?;
    let event = events::event(course_id, EventType::SeatsProvisioned, actor, now).data(json!({
        "batch_id": batch.batch_id,
        "count": seats.len(),
        "credit_value": batch.credit_value,
    }));
    events::record(&mut *tx, &[event]).await?;
    tx.commit().await?;
    metrics::counter!("vlab_seats_provisioned_total").increment(seats.len() as u64);
    tracing::info!(course_id = %course_id, batch_id = %batch.batch_id, seats = seats.len(), "seats provisioned");
    Ok(seats)
}

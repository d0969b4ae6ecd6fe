//! D1 — claim the drop (rules.md §5.1): one short transaction that locks the seat, the
//! enrolment and the drop record, then creates the record or takes over a lapsed one. A
//! credit top-up whose grant may still be in flight stops it first: a drop and a top-up of
//! one enrolment never overlap (the top-up refuses a dropped enrolment under the same lock).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{DropOutcome, DropReason};
use crate::repo::drops::{self, DEPLETING, NewDrop};
use crate::repo::top_ups;
use crate::usecases::Services;

/// A drop this run now holds the lease of.
#[derive(Debug, Clone)]
pub struct LeasedDrop {
    pub enrolment_id: Uuid,
    pub course_id: Uuid,
    /// The seat the drop record names (the seat held when the drop began).
    pub seat_id: Option<Uuid>,
    pub project_id: Uuid,
    /// The first request's reason and requester, kept on every resume.
    pub reason: String,
    pub requested_by: Option<Uuid>,
    /// D2 is skipped (amount 0) when the project row is gone.
    pub project_exists: bool,
    /// An earlier attempt may have depleted without recording it (the in-doubt rule).
    pub prior_in_doubt: bool,
}

pub enum Claimed {
    Leased(LeasedDrop),
    /// The routine stops here with this outcome.
    Stop(DropOutcome),
}

pub async fn claim(
    services: &Services,
    enrolment_id: Uuid,
    reason: DropReason,
    requested_by: Option<Uuid>,
    now: DateTime<Utc>,
    lease: Uuid,
) -> Result<Claimed, sqlx::Error> {
    let mut tx = services.db.begin().await?;
    let seat = drops::lock_held_seat(&mut *tx, enrolment_id).await?;
    let Some(enrolment) = drops::lock_enrolment(&mut *tx, enrolment_id).await? else {
        return Ok(Claimed::Stop(DropOutcome::NotFound));
    };
    if enrolment.is_dropped {
        return Ok(Claimed::Stop(DropOutcome::AlreadyDropped));
    }
    let record = drops::lock_record(&mut *tx, enrolment_id).await?;
    // Its own statement after the enrolment lock, so it sees a top-up committed while this
    // transaction waited for that lock.
    if top_ups::in_flight(&mut *tx, enrolment_id, now).await? {
        return Ok(Claimed::Stop(DropOutcome::TopUpInProgress));
    }
    let (prior_in_doubt, first) = match record {
        None => {
            let is_early = enrolment.last_drop_date.is_some_and(|last| now < last);
            let new = NewDrop {
                enrolment_id,
                seat_id: seat.map(|s| s.id),
                course_id: enrolment.course_id,
                project_id: enrolment.project_id,
                reason: reason.as_str(),
                requested_by,
                is_early,
                lease_id: lease,
            };
            drops::insert_record(&mut *tx, &new, now).await?;
            (
                false,
                (new.seat_id, reason.as_str().to_owned(), requested_by),
            )
        }
        Some(record) if record.state == DEPLETING => {
            if record.lease_until.is_some_and(|until| until > now) {
                return Ok(Claimed::Stop(DropOutcome::InProgress));
            }
            drops::take_over_record(&mut *tx, enrolment_id, lease, now).await?;
            (
                record.deplete_in_doubt,
                (record.seat_id, record.reason, record.requested_by),
            )
        }
        Some(record) => {
            tracing::error!(
                %enrolment_id, state = %record.state,
                "drop record is settled but the enrolment is not dropped"
            );
            return Ok(Claimed::Stop(DropOutcome::AlreadyDropped));
        }
    };
    tx.commit().await?;
    let (seat_id, reason, requested_by) = first;
    Ok(Claimed::Leased(LeasedDrop {
        enrolment_id,
        course_id: enrolment.course_id,
        seat_id,
        project_id: enrolment.project_id,
        reason,
        requested_by,
        project_exists: enrolment.project_exists,
        prior_in_doubt,
    }))
}

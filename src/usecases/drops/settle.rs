//! D3 — settle (rules.md §5.3): one short transaction, retried on database errors, that marks
//! the enrolment dropped, recovers or consumes the seat, cancels pending claim e-mails and
//! moves the record to `revoking`. It only proceeds under this run's lease.

use std::time::Duration;

use backon::Retryable;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use serde_json::json;

use super::claim::LeasedDrop;
use super::deplete::release_with_event;
use super::{DropOutcome, drop_failed_event};
use crate::domain::audit::{Actor, EventType};
use crate::domain::datetime;
use crate::domain::recovery::{self, RecoveryInputs};
use crate::repo::drops;
use crate::usecases::Services;
use crate::usecases::events::{self, EventExt};

/// Pauses before the retries of a failed settlement (any database error is retried).
const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(400),
    Duration::from_millis(1600),
];

/// `Ok(recovered)` once settled; otherwise the outcome to report.
pub async fn settle(
    services: &Services,
    drop: &LeasedDrop,
    actor: &Actor,
    amount: Decimal,
    lease: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, DropOutcome> {
    let settled = (|| settle_once(services, drop, actor, amount, lease, now))
        .retry(RETRY_DELAYS.into_iter())
        .sleep(tokio::time::sleep)
        .notify(|err, _| {
            tracing::warn!(enrolment_id = %drop.enrolment_id, error = %err, "drop settlement failed");
        })
        .await;
    let err = match settled {
        Ok(result) => return result,
        Err(err) => err,
    };
    tracing::warn!(enrolment_id = %drop.enrolment_id, error = %err, "drop settlement failed");
    // The deplete may have applied: the record stays in doubt, so a retry still recovers.
    let event = drop_failed_event(drop, actor, &DropOutcome::RecordFailed, now);
    let released = release_with_event(
        services,
        drop,
        lease,
        true,
        "The drop could not be recorded",
        event,
        now,
    )
    .await;
    if let Err(err) = released {
        tracing::error!(enrolment_id = %drop.enrolment_id, error = %err, "could not release the drop lease");
    }
    Err(DropOutcome::RecordFailed)
}

async fn settle_once(
    services: &Services,
    drop: &LeasedDrop,
    actor: &Actor,
    amount: Decimal,
    lease: Uuid,
    now: DateTime<Utc>,
) -> Result<Result<bool, DropOutcome>, sqlx::Error> {
    let e = drop.enrolment_id;
    let mut tx = services.db.begin().await?;
    let seat = drops::lock_held_seat(&mut *tx, e).await?;
    let Some(enrolment) = drops::lock_enrolment(&mut *tx, e).await? else {
        return Ok(Err(DropOutcome::NotFound));
    };
    let Some(record) = drops::lock_record(&mut *tx, e).await? else {
        return Ok(Err(DropOutcome::NotFound));
    };
    if record.lease_id != Some(lease) {
        // Our lease lapsed and another run took the drop over.
        return Ok(Err(DropOutcome::InProgress));
    }
    if enrolment.is_dropped {
        return Ok(Err(DropOutcome::AlreadyDropped));
    }
    let recover = recovery::recover(&RecoveryInputs {
        is_early: record.is_early,
        seat_exists: seat.is_some(),
        previously_dropped: seat.is_some_and(|s| s.previously_dropped),
        depleted_amount: amount,
        credits_per_seat: enrolment.credits_per_seat,
        extra_credits: enrolment.extra_credits,
        margin_credits: services.config.drop_recovery_margin_credits,
        prior_in_doubt: drop.prior_in_doubt,
    });
    drops::mark_enrolment_dropped(&mut *tx, e).await?;
    if let Some(seat) = seat {
        if recover {
            drops::recover_seat(&mut *tx, seat.id).await?;
        } else {
            drops::consume_seat(&mut *tx, seat.id).await?;
        }
    }
    let cancelled = drops::cancel_pending_emails(&mut *tx, e, now).await?;
    drops::settle_record(&mut *tx, e, amount, recover, now).await?;
    let seat_before = seat.map(|s| {
        json!({"enrolment_id": e, "is_consumed": false, "previously_dropped": s.previously_dropped})
    });
    let seat_after = seat.map(|s| {
        if recover {
            json!({"enrolment_id": null, "is_consumed": false, "previously_dropped": true})
        } else {
            json!({"enrolment_id": e, "is_consumed": true, "previously_dropped": s.previously_dropped})
        }
    });
    let dropped = events::event(enrolment.course_id, EventType::EnrolmentDropped, actor, now)
        .enrolment(e)
        .seat(seat.map(|s| s.id).or(drop.seat_id))
        .project(enrolment.project_id)
        .student(&enrolment.student_id)
        .amount(Some(amount))
        .before(json!({"is_dropped": false, "seat": seat_before}))
        .after(json!({"is_dropped": true, "seat": seat_after}))
        .data(json!({
            "reason": record.reason,
            "requested_at": datetime::format(&record.requested_at),
            "is_early": record.is_early,
            "seat_recovered": recover,
            "prior_in_doubt": drop.prior_in_doubt,
        }));
    events::record(&mut *tx, &[dropped]).await?;
    tx.commit().await?;
    if cancelled > 0 {
        metrics::counter!("vlab_emails_total", "kind" => "enrolment_claim", "outcome" => "cancelled")
            .increment(cancelled);
    }
    Ok(Ok(recover))
}

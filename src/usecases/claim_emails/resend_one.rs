//! `POST /seats/courses/{course_id}/enrolments/{enrolment_id}/resend-claim-email` (addendum
//! §2.4.1): under the enrolment lock, the checks and the rate limit; the pending copies are
//! cancelled and a new leased row is queued; after the commit, its first attempt. The link is
//! the one the enrolment already had.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{ClaimEmailStatus, ResendError, limit, recent_claims, statuses};
use crate::domain::audit::Actor;
use crate::domain::caller::Caller;
use crate::domain::claim_limit::{Verdict, retry_after_seconds};
use crate::repo;
use crate::repo::email_outbox::{KIND_ENROLMENT_CLAIM, LeasedEmail, NewEmail, origin};
use crate::usecases::courses::CourseError;
use crate::usecases::email_outbox::{self, Delivery, LEASE, claim_payload, queued_event};
use crate::usecases::{Services, UseCaseError};
use crate::usecases::{enrolment_checks, events};

/// What the resend did.
#[derive(Debug, Clone)]
pub struct Resent {
    pub enrolment_id: Uuid,
    pub recipient: String,
    /// Whether SMTP accepted the first attempt.
    pub email_sent: bool,
    /// Read after the attempt.
    pub claim_email: Option<ClaimEmailStatus>,
}

pub async fn resend_one(
    services: &Services,
    caller: &Caller,
    course_id: Uuid,
    enrolment_id: Uuid,
) -> Result<Resent, UseCaseError> {
    let services = services.clone();
    let requested_by = caller.sub;
    // A service admin is recorded as one, whatever else they are.
    let actor = Actor::staff(caller);
    services
        .tasks
        .clone()
        .run("resend_claim_email", async move {
            let now = Utc::now();
            let lease = Uuid::new_v4();
            let queued = queue(&services, &actor, course_id, enrolment_id, lease, now)
                .await
                .inspect_err(count_refusal)?;
            metrics::counter!("vlab_claim_resends_total", "outcome" => "queued").increment(1);
            tracing::info!(%enrolment_id, %course_id, user_id = %requested_by, email_id = %queued.id, "claim e-mail resent");
            let delivery = email_outbox::deliver(&services, &queued, &actor, lease, now).await;
            let claim_email = statuses(&services, &[enrolment_id], Utc::now())
                .await?
                .remove(&enrolment_id);
            Ok(Resent {
                enrolment_id,
                recipient: queued.recipient,
                email_sent: delivery == Delivery::Sent,
                claim_email,
            })
        })
        .await?
}

fn count_refusal(err: &UseCaseError) {
    let outcome = match err {
        UseCaseError::Resend(
            ResendError::DailyCapReached { .. } | ResendError::IntervalApplies { .. },
        ) => "rate_limited",
        UseCaseError::Resend(_) | UseCaseError::Course(_) => "rejected",
        _ => return,
    };
    metrics::counter!("vlab_claim_resends_total", "outcome" => outcome).increment(1);
}

/// The transaction: checks 1–6, the cancellation of pending copies and the new leased row.
async fn queue(
    services: &Services,
    actor: &Actor,
    course_id: Uuid,
    enrolment_id: Uuid,
    lease: Uuid,
    now: DateTime<Utc>,
) -> Result<LeasedEmail, UseCaseError> {
    let mut tx = services.db.begin().await?;
    let (course, enrolment) =
        enrolment_checks::lock_live_enrolment::<ResendError>(&mut tx, course_id, enrolment_id)
            .await?;
    if enrolment.claimed_by.is_some() {
        return Err(ResendError::AlreadyClaimed.into());
    }
    enrolment_checks::course_open::<ResendError>(&course.status, course.end_date, now)?;
    let recent = recent_claims(&mut *tx, &[enrolment_id], now)
        .await?
        .remove(&enrolment_id)
        .unwrap_or_default();
    let limit = limit(services);
    match limit.check(&recent, now) {
        Verdict::Allowed => {}
        Verdict::DailyCapReached { next_allowed_at } => {
            return Err(ResendError::DailyCapReached {
                max: limit.max_per_day,
                enrolment_id,
                next_allowed_at,
                retry_after: retry_after_seconds(next_allowed_at, now),
            }
            .into());
        }
        Verdict::IntervalApplies { next_allowed_at } => {
            return Err(ResendError::IntervalApplies {
                minutes: limit.interval.num_minutes() as u32,
                enrolment_id,
                next_allowed_at,
                retry_after: retry_after_seconds(next_allowed_at, now),
            }
            .into());
        }
    }

    let cancelled =
        repo::email_outbox::cancel_pending_claims(&mut *tx, &[enrolment_id], now).await?;
    let lab_name = repo::enrolments::claim_course(&mut *tx, course_id)
        .await?
        .map(|c| c.virtual_lab_name)
        .ok_or(CourseError::NotFound(course_id))?;
    // The link the enrolment already has (addendum §3.1).
    let secret = repo::claim_tokens::current_secrets(&mut *tx, &[enrolment_id])
        .await?
        .first()
        .map_or(enrolment_id, |&(_, secret)| secret);
    let email = NewEmail {
        id: Uuid::new_v4(),
        kind: KIND_ENROLMENT_CLAIM,
        enrolment_id: Some(enrolment_id),
        course_id: Some(course_id),
        recipient: enrolment.contact_email.clone(),
        payload: claim_payload(services, &lab_name, secret),
        origin: origin::RESEND,
        requested_by: actor.id,
        lease: Some((lease, now + LEASE)),
    };
    repo::email_outbox::insert(&mut *tx, &email, now).await?;
    events::record(&mut *tx, &[queued_event(course_id, &email, actor, now)]).await?;
    tx.commit().await?;
    count_superseded(cancelled);
    Ok(LeasedEmail {
        id: email.id,
        kind: email.kind.to_owned(),
        enrolment_id: email.enrolment_id,
        course_id: email.course_id,
        recipient: email.recipient,
        payload: email.payload,
        attempts: 0,
        enrolment_dropped: Some(false),
    })
}

/// Superseded pending copies count as cancelled e-mails.
pub(crate) fn count_superseded(cancelled: u64) {
    if cancelled > 0 {
        metrics::counter!("vlab_emails_total", "kind" => KIND_ENROLMENT_CLAIM, "outcome" => "cancelled")
            .increment(cancelled);
    }
}

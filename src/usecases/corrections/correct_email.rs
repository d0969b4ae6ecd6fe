//! `POST /seats/courses/{course_id}/enrolments/{enrolment_id}/correct-email` (addendum §3.4.1):
//! one transaction checks, changes the address, rotates the claim link and queues the new
//! claim e-mail; after the commit, its first attempt. No Keycloak call: the enrolment is
//! unclaimed, so it has no access.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::{
    CorrectionError, cancel_pending, count_superseded, email_in_use, new_claim_email, rotate_link,
    set_contact_email,
};
use crate::domain::audit::{Actor, EventType};
use crate::domain::caller::Caller;
use crate::domain::claim_limit::retry_after_seconds;
use crate::repo::claim_tokens::reason;
use crate::repo::email_outbox::{LeasedEmail, origin};
use crate::usecases::email_outbox::{self, Delivery};
use crate::usecases::events::{self, EventExt};
use crate::usecases::seats::enrolments::{self as roster, RosterEntry};
use crate::usecases::{Services, UseCaseError};
use crate::usecases::{claim_emails, enrolment_checks};

/// What the correction did.
#[derive(Debug, Clone)]
pub struct Corrected {
    /// The enrolment as it is after the first attempt.
    pub enrolment: RosterEntry,
    pub previous_email: String,
    /// Whether SMTP accepted the first attempt of the new claim e-mail.
    pub email_sent: bool,
}

pub async fn correct_email(
    services: &Services,
    caller: &Caller,
    course_id: Uuid,
    enrolment_id: Uuid,
    email: String,
) -> Result<Corrected, UseCaseError> {
    let services = services.clone();
    let actor = Actor::staff(caller);
    services
        .tasks
        .clone()
        .run("correct_enrolment_email", async move {
            let now = Utc::now();
            let lease = Uuid::new_v4();
            let (queued, previous_email) =
                change(&services, &actor, course_id, enrolment_id, &email, lease, now).await?;
            metrics::counter!("vlab_enrolment_email_corrections_total").increment(1);
            tracing::info!(%enrolment_id, %course_id, user_id = ?actor.id, "enrolment e-mail corrected");
            let delivery = email_outbox::deliver(&services, &queued, &actor, lease, now).await;
            let enrolment = roster::roster_entry(&services, course_id, enrolment_id)
                .await?
                .ok_or(CorrectionError::EnrolmentNotFound {
                    enrolment_id,
                    course_id,
                })?;
            Ok(Corrected {
                enrolment,
                previous_email,
                email_sent: delivery == Delivery::Sent,
            })
        })
        .await?
}

/// The transaction: checks 1–6, the new address, the rotated link and the leased claim row.
async fn change(
    services: &Services,
    actor: &Actor,
    course_id: Uuid,
    enrolment_id: Uuid,
    email: &str,
    lease: Uuid,
    now: DateTime<Utc>,
) -> Result<(LeasedEmail, String), UseCaseError> {
    let mut tx = services.db.begin().await?;
    let (course, enrolment) =
        enrolment_checks::lock_live_enrolment::<CorrectionError>(&mut tx, course_id, enrolment_id)
            .await?;
    if enrolment.claimed_by.is_some() {
        return Err(CorrectionError::Claimed.into());
    }
    enrolment_checks::course_open::<CorrectionError>(&course.status, course.end_date, now)?;
    if email_in_use(&mut tx, course_id, enrolment_id, email, now).await? {
        return Err(CorrectionError::EmailInUse {
            email: email.to_owned(),
        }
        .into());
    }
    let limit = claim_emails::limit(services);
    let recent = claim_emails::recent_claims(&mut *tx, &[enrolment_id], now)
        .await?
        .remove(&enrolment_id)
        .unwrap_or_default();
    if let Some(next_allowed_at) = limit.daily_cap(&recent, now) {
        return Err(CorrectionError::DailyCapReached {
            max: limit.max_per_day,
            enrolment_id,
            next_allowed_at,
            retry_after: retry_after_seconds(next_allowed_at, now),
        }
        .into());
    }

    set_contact_email(&mut tx, enrolment_id, email).await?;
    let secret = rotate_link(
        &mut tx,
        enrolment_id,
        reason::EMAIL_CORRECTED,
        actor.id,
        now,
    )
    .await?;
    let cancelled = cancel_pending(&mut tx, enrolment_id, now).await?;
    let (queued, queued_event) = new_claim_email(
        services,
        &mut tx,
        actor,
        course_id,
        enrolment_id,
        email,
        secret,
        origin::EMAIL_CORRECTED,
        lease,
        now,
    )
    .await?;
    let corrected = events::event(course_id, EventType::EnrolmentEmailCorrected, actor, now)
        .enrolment(enrolment_id)
        .before(json!({ "contact_email": enrolment.contact_email }))
        .after(json!({ "contact_email": email }))
        .data(json!({ "link_rotated": true }));
    events::record(&mut *tx, &[corrected, queued_event]).await?;
    tx.commit().await?;
    count_superseded(cancelled);
    Ok((queued, enrolment.contact_email))
}

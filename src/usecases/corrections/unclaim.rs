//! `POST /seats/courses/{course_id}/enrolments/{enrolment_id}/unclaim` (addendum §3.4.2): one
//! transaction takes the claim away, rotates the link, records the removal of the previous
//! account's access and queues the new claim e-mail; after the commit, routine R removes that
//! access at once (the worker retries a failure) and the e-mail gets its first attempt.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::{
    CorrectionError, cancel_pending, count_superseded, email_in_use, new_claim_email, rotate_link,
    set_contact_email,
};
use crate::domain::audit::{Actor, EventType};
use crate::domain::caller::Caller;
use crate::domain::datetime;
use crate::repo::claim_tokens::reason;
use crate::repo::email_outbox::{LeasedEmail, origin};
use crate::repo::{self, courses::status};
use crate::usecases::email_outbox::{self, Delivery};
use crate::usecases::events::{self, EventExt};
use crate::usecases::revocations;
use crate::usecases::seats::enrolments::{self as roster, RosterEntry};
use crate::usecases::{Services, UseCaseError};
use crate::usecases::{claim_emails, enrolment_checks};

/// What the caller asks for.
#[derive(Debug, Clone, Default)]
pub struct UnclaimRequest {
    pub reason: Option<String>,
    /// Corrects `contact_email` in the same step.
    pub email: Option<String>,
    /// Queue a claim e-mail with the new link (default true).
    pub send_claim_email: bool,
}

/// What the unclaim did.
#[derive(Debug, Clone)]
pub struct Unclaimed {
    pub enrolment: RosterEntry,
    pub previous_claimed_by: Uuid,
    pub previous_claimed_by_email: Option<String>,
    /// The immediate attempt removed the previous account's access.
    pub access_removed: bool,
    pub email_queued: bool,
    pub email_sent: bool,
    /// Why no e-mail was queued although one was asked for.
    pub email_error: Option<String>,
}

pub async fn unclaim(
    services: &Services,
    caller: &Caller,
    course_id: Uuid,
    enrolment_id: Uuid,
    request: UnclaimRequest,
) -> Result<Unclaimed, UseCaseError> {
    let services = services.clone();
    let actor = Actor::staff(caller);
    services
        .tasks
        .clone()
        .run("unclaim_enrolment", async move {
            let now = Utc::now();
            let run = Uuid::new_v4();
            let done = change(&services, &actor, course_id, enrolment_id, &request, run, now)
                .await?;
            metrics::counter!("vlab_enrolments_unclaimed_total").increment(1);
            tracing::info!(%enrolment_id, %course_id, previous_claimed_by = %done.previous_claimed_by, "enrolment unclaimed");
            let access_removed =
                revocations::revoke_leased(&services, done.revocation_id, &actor, run, now).await;
            let email_sent = match &done.email {
                Some(queued) => {
                    email_outbox::deliver(&services, queued, &actor, run, now).await
                        == Delivery::Sent
                }
                None => false,
            };
            let enrolment = roster::roster_entry(&services, course_id, enrolment_id)
                .await?
                .ok_or(CorrectionError::EnrolmentNotFound {
                    enrolment_id,
                    course_id,
                })?;
            Ok(Unclaimed {
                enrolment,
                previous_claimed_by: done.previous_claimed_by,
                previous_claimed_by_email: done.previous_claimed_by_email,
                access_removed,
                email_queued: done.email.is_some(),
                email_sent,
                email_error: done.email_error,
            })
        })
        .await?
}

struct Committed {
    revocation_id: Uuid,
    previous_claimed_by: Uuid,
    previous_claimed_by_email: Option<String>,
    email: Option<LeasedEmail>,
    email_error: Option<String>,
}

/// The transaction of step 1; `run` leases both the revocation and the claim e-mail.
async fn change(
    services: &Services,
    actor: &Actor,
    course_id: Uuid,
    enrolment_id: Uuid,
    request: &UnclaimRequest,
    run: Uuid,
    now: DateTime<Utc>,
) -> Result<Committed, UseCaseError> {
    let mut tx = services.db.begin().await?;
    let (course, enrolment) =
        enrolment_checks::lock_live_enrolment::<CorrectionError>(&mut tx, course_id, enrolment_id)
            .await?;
    let Some(previous_user) = enrolment.claimed_by else {
        return Err(CorrectionError::NotClaimed.into());
    };
    if course.status != status::ACTIVE {
        return Err(CorrectionError::CannotUnclaim {
            status: course.status,
        }
        .into());
    }
    if let Some(email) = &request.email
        && email_in_use(&mut tx, course_id, enrolment_id, email, now).await?
    {
        return Err(CorrectionError::EmailInUse {
            email: email.clone(),
        }
        .into());
    }

    repo::enrolments::unclaim(&mut *tx, enrolment_id).await?;
    if let Some(email) = &request.email {
        set_contact_email(&mut tx, enrolment_id, email).await?;
    }
    let contact_email = request
        .email
        .clone()
        .unwrap_or_else(|| enrolment.contact_email.clone());
    let secret = rotate_link(&mut tx, enrolment_id, reason::UNCLAIMED, actor.id, now).await?;
    let revocation_id = repo::access_revocations::insert_leased(
        &mut *tx,
        enrolment_id,
        course_id,
        previous_user,
        actor.id,
        run,
        now,
    )
    .await?;
    let cancelled = cancel_pending(&mut tx, enrolment_id, now).await?;

    let limit = claim_emails::limit(services);
    let email_error = if !request.send_claim_email {
        None
    } else if enrolment_checks::access_ended(course.end_date, now) {
        Some("The student's access has ended".to_owned())
    } else {
        let recent = claim_emails::recent_claims(&mut *tx, &[enrolment_id], now)
            .await?
            .remove(&enrolment_id)
            .unwrap_or_default();
        limit.daily_cap(&recent, now).map(|_| {
            format!(
                "This student has been sent {} claim e-mails in the last 24 hours",
                limit.max_per_day
            )
        })
    };
    let mut recorded = Vec::new();
    let email_changed = request
        .email
        .as_ref()
        .is_some_and(|e| e.to_lowercase() != enrolment.contact_email.to_lowercase());
    recorded.push(
        events::event(course_id, EventType::EnrolmentUnclaimed, actor, now)
            .enrolment(enrolment_id)
            .before(json!({
                "claimed_by": previous_user,
                "claimed_by_email": enrolment.claimed_by_email,
                "claimed_at": enrolment.claimed_at.as_ref().map(datetime::format),
                "activated_at": enrolment.activated_at.as_ref().map(datetime::format),
                "access_level": enrolment.access_level,
            }))
            .after(json!({
                "claimed_by": null,
                "claimed_by_email": null,
                "claimed_at": null,
                "activated_at": null,
                "access_level": "none",
            }))
            .data(json!({
                "reason": request.reason,
                "link_rotated": true,
                "email_changed": email_changed,
            })),
    );
    let email = if request.send_claim_email && email_error.is_none() {
        let (queued, event) = new_claim_email(
            services,
            &mut tx,
            actor,
            course_id,
            enrolment_id,
            &contact_email,
            secret,
            origin::UNCLAIMED,
            run,
            now,
        )
        .await?;
        recorded.push(event);
        Some(queued)
    } else {
        None
    };
    events::record(&mut *tx, &recorded).await?;
    tx.commit().await?;
    count_superseded(cancelled);
    Ok(Committed {
        revocation_id,
        previous_claimed_by: previous_user,
        previous_claimed_by_email: enrolment.claimed_by_email,
        email,
        email_error,
    })
}

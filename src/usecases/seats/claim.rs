//! `POST /courses/claim` (W.5.4): a short transaction records the claim and takes the access
//! lease, then the access sync grants access with no row lock held — waitlisted before the
//! course starts, member from the start. The sync's outcome never changes the answer: a
//! Keycloak failure is retried by the worker. Runs detached, so a disconnect cannot cut the
//! sync short.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::domain::audit::{Actor, EventType};
use crate::domain::caller::Caller;
use crate::repo::{self, enrolments::ClaimCourse, enrolments::Enrolment};
use crate::usecases::Services;
use crate::usecases::UseCaseError;
use crate::usecases::access::{self, SyncRequest, Trigger};
use crate::usecases::enrolment_checks;
use crate::usecases::events::{self, EventExt};
use crate::usecases::seats::ClaimError;

/// The claimed enrolment and the course part of the response.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub enrolment: Enrolment,
    pub course: ClaimCourse,
}

/// `secret` is what the link carries: the enrolment's token, or its id while it has none
/// (addendum §3.1).
pub async fn claim(
    services: &Services,
    caller: &Caller,
    secret: Uuid,
) -> Result<Claimed, UseCaseError> {
    let services = services.clone();
    let actor = Actor::student(caller);
    let caller_email = caller.email.clone();
    let caller = caller.sub;
    services
        .tasks
        .clone()
        .run("claim_enrolment", async move {
            let now = Utc::now();
            let run = Uuid::new_v4();
            let claimer = Claimer {
                id: caller,
                email: &caller_email,
                actor: &actor,
            };
            let claimed = record_claim(&services, &claimer, secret, run, now).await?;
            let enrolment_id = claimed.id;
            access::sync(
                &services,
                SyncRequest {
                    enrolment_id,
                    lease: run,
                    now,
                    activate: false,
                    trigger: Trigger::Claim,
                    actor,
                    expected_claimant: None,
                },
            )
            .await;
            let course = repo::enrolments::claim_course(&services.db, claimed.course_id)
                .await?
                .ok_or(ClaimError::EnrolmentNotFound)?;
            Ok(Claimed {
                enrolment: claimed,
                course,
            })
        })
        .await?
}

/// Step 1: checks 1–6 (with 1a and 3a) under the enrolment lock; the claim and the access lease `run`.
/// Who claims: the token's `sub` and `email`, and the event actor.
struct Claimer<'a> {
    id: Uuid,
    email: &'a str,
    actor: &'a Actor,
}

async fn record_claim(
    services: &Services,
    claimer: &Claimer<'_>,
    secret: Uuid,
    run: Uuid,
    now: DateTime<Utc>,
) -> Result<Enrolment, UseCaseError> {
    let caller = claimer.id;
    let mut tx = services.db.begin().await?;
    let Some(enrolment) = repo::enrolments::find_by_secret_for_update(&mut *tx, secret).await?
    else {
        // Check 1a: an earlier link of an enrolment whose link was rotated.
        if repo::claim_tokens::is_revoked(&mut *tx, secret).await? {
            return Err(ClaimError::LinkReplaced.into());
        }
        return Err(ClaimError::EnrolmentNotFound.into());
    };
    let enrolment_id = enrolment.id;
    if enrolment_checks::is_dropped(&mut tx, &enrolment).await? {
        return Err(ClaimError::EnrolmentDropped.into());
    }
    if enrolment.claimed_by.is_some() {
        return Err(ClaimError::AlreadyClaimed.into());
    }
    // Check 3a: while routine R may still remove this user's access in the course, no claim
    // of the course may give it back (`FOR SHARE` serialises it with S3's re-open).
    if repo::access_revocations::pending_for_user(&mut *tx, enrolment.course_id, caller).await? {
        return Err(ClaimError::AccessBeingRemoved.into());
    }
    // Read without a lock: the course row comes before the enrolment in the lock order.
    let course = repo::courses::find(&mut *tx, enrolment.course_id)
        .await?
        .ok_or(ClaimError::EnrolmentNotFound)?;
    enrolment_checks::course_open::<ClaimError>(&course.status, course.end_date, now)?;
    if repo::enrolments::claimed_elsewhere(&mut *tx, course.id, caller, enrolment_id).await? {
        return Err(ClaimError::ClaimedAnotherEnrolment.into());
    }
    let claimed =
        repo::enrolments::set_claimed_by(&mut *tx, enrolment_id, caller, claimer.email, run, now)
            .await
            .map_err(|err| match repo::unique_violation(&err) {
                // A concurrent claim of another enrolment of this course by the same user won.
                Some(c) if c == repo::enrolments::UNIQUE_CLAIMED_BY_INDEX => {
                    UseCaseError::from(ClaimError::ClaimedAnotherEnrolment)
                }
                _ => err.into(),
            })?;
    let event = events::event(course.id, EventType::EnrolmentClaimed, claimer.actor, now)
        .enrolment(enrolment_id)
        .after(json!({ "claimed_by": caller, "claimed_by_email": claimer.email }));
    events::record(&mut *tx, &[event]).await?;
    tx.commit().await?;
    metrics::counter!("vlab_enrolments_claimed_total").increment(1);
    tracing::info!(enrolment_id = %enrolment_id, course_id = %course.id, user_id = %caller, "enrolment claimed");
    Ok(claimed)
}

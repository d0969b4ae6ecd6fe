//! Support actions on an enrolment's claim (round-2 addendum F2): correct the e-mail of an
//! unclaimed enrolment, and unclaim a wrong account. Both rotate the claim link (§3.1).
//!
//! Lock order: `course` (`FOR SHARE`) → `course_enrolment` (`FOR UPDATE`) → `email_outbox`.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::audit::Actor;
use crate::repo::email_outbox::{KIND_ENROLMENT_CLAIM, LeasedEmail, NewEmail};
use crate::repo::events::NewEvent;
use crate::repo::{self, claim_tokens};
use crate::usecases::claim_emails::resend_one::count_superseded;
use crate::usecases::courses::CourseError;
use crate::usecases::email_outbox::{LEASE, claim_payload, queued_event};
use crate::usecases::{Services, UseCaseError};

pub mod correct_email;
mod error;
pub mod unclaim;

pub use error::CorrectionError;

/// The index that keeps e-mails unique within a course.
const UNIQUE_EMAIL_INDEX: &str = "uq_enrolment_course_email";

/// Check 5: another enrolment of the course (dropped ones included) or a live reservation of
/// one of its seats has the address, case-insensitively.
async fn email_in_use(
    conn: &mut PgConnection,
    course_id: Uuid,
    enrolment_id: Uuid,
    email: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    repo::enrolments::email_in_use(conn, course_id, enrolment_id, email, now).await
}

/// Stores the new address; the unique index backs check 5 against a concurrent assign.
async fn set_contact_email(
    conn: &mut PgConnection,
    enrolment_id: Uuid,
    email: &str,
) -> Result<(), UseCaseError> {
    repo::enrolments::set_contact_email(conn, enrolment_id, email)
        .await
        .map_err(|err| match repo::unique_violation(&err) {
            Some(c) if c == UNIQUE_EMAIL_INDEX => CorrectionError::EmailInUse {
                email: email.to_owned(),
            }
            .into(),
            _ => err.into(),
        })
}

/// Rotation (§3.1): a fresh v4 token that is no enrolment id, token or revoked token; the old
/// secret is revoked. Returns the new secret.
async fn rotate_link(
    conn: &mut PgConnection,
    enrolment_id: Uuid,
    reason: &str,
    revoked_by: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<Uuid, sqlx::Error> {
    let mut token = Uuid::new_v4();
    while claim_tokens::is_taken(&mut *conn, token).await? {
        token = Uuid::new_v4();
    }
    claim_tokens::rotate(&mut *conn, enrolment_id, token, reason, revoked_by, now).await?;
    Ok(token)
}

/// Queues a claim e-mail with the link of `secret`, leased for the first attempt. Returns the
/// row and its `email_queued` event.
#[allow(clippy::too_many_arguments)]
async fn new_claim_email(
    services: &Services,
    conn: &mut PgConnection,
    actor: &Actor,
    course_id: Uuid,
    enrolment_id: Uuid,
    recipient: &str,
    secret: Uuid,
    origin: &'static str,
    lease: Uuid,
    now: DateTime<Utc>,
) -> Result<(LeasedEmail, NewEvent), UseCaseError> {
    let lab_name = repo::enrolments::claim_course(&mut *conn, course_id)
        .await?
        .map(|c| c.virtual_lab_name)
        .ok_or(CourseError::NotFound(course_id))?;
    let email = NewEmail {
        id: Uuid::new_v4(),
        kind: KIND_ENROLMENT_CLAIM,
        enrolment_id: Some(enrolment_id),
        course_id: Some(course_id),
        recipient: recipient.to_owned(),
        payload: claim_payload(services, &lab_name, secret),
        origin,
        requested_by: actor.id,
        lease: Some((lease, now + LEASE)),
    };
    repo::email_outbox::insert(&mut *conn, &email, now).await?;
    let event = queued_event(course_id, &email, actor, now);
    let leased = LeasedEmail {
        id: email.id,
        kind: email.kind.to_owned(),
        enrolment_id: email.enrolment_id,
        course_id: email.course_id,
        recipient: email.recipient,
        payload: email.payload,
        attempts: 0,
        enrolment_dropped: Some(false),
    };
    Ok((leased, event))
}

/// Cancels the enrolment's pending claim e-mails: they carry the revoked link. Count them with
/// [`count_superseded`] once committed.
async fn cancel_pending(
    conn: &mut PgConnection,
    enrolment_id: Uuid,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    repo::email_outbox::cancel_pending_claims(conn, &[enrolment_id], now).await
}

//! Claim e-mails of enrolments (round-2 addendum F1): the status the roster shows, and resending
//! them to one student or to many, under the rate limit of `domain::claim_limit`.
//!
//! Lock order: `course` (`FOR SHARE`) → `course_enrolment` (`FOR UPDATE`, several in id order)
//! → `email_outbox`. Every writer of claim rows for an existing enrolment holds its enrolment
//! lock, so the rows read under it are all the limit has to count.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::claim_limit::ClaimLimit;
use crate::repo;
use crate::usecases::Services;

mod error;
pub mod resend_many;
pub mod resend_one;

pub use error::ResendError;

/// The latest claim e-mail of an enrolment, as the roster shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimEmailStatus {
    /// `pending`, `sent`, `failed` or `cancelled`.
    pub status: String,
    pub recipient: String,
    pub origin: String,
    pub attempts: i32,
    pub queued_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Every claim e-mail the enrolment has had.
    pub emails_queued: i64,
    /// When the rate limit would accept a resend; `None` means now.
    pub next_resend_allowed_at: Option<DateTime<Utc>>,
}

/// The configured rate limit.
pub fn limit(services: &Services) -> ClaimLimit {
    ClaimLimit::new(
        services.config.claim_resend_interval_minutes,
        services.config.claim_emails_max_per_day,
    )
}

/// The latest claim e-mail of each of the enrolments that has one: one query for all.
pub async fn statuses(
    services: &Services,
    enrolment_ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<HashMap<Uuid, ClaimEmailStatus>, sqlx::Error> {
    let limit = limit(services);
    let rows = repo::email_outbox::latest_claims(
        &services.db,
        enrolment_ids,
        ClaimLimit::window_start(now),
    )
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let status = ClaimEmailStatus {
                next_resend_allowed_at: limit.next_allowed_at(&row.recent, now),
                status: row.status,
                recipient: row.recipient,
                origin: row.origin,
                attempts: row.attempts,
                queued_at: row.queued_at,
                sent_at: row.sent_at,
                last_error: row.last_error,
                emails_queued: row.emails_queued,
            };
            (row.enrolment_id, status)
        })
        .collect())
}

/// The `created_at` of each enrolment's claim e-mails inside the limit's window, newest first.
pub async fn recent_claims(
    db: impl sqlx::PgExecutor<'_>,
    enrolment_ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<HashMap<Uuid, Vec<DateTime<Utc>>>, sqlx::Error> {
    let rows =
        repo::email_outbox::recent_claims(db, enrolment_ids, ClaimLimit::window_start(now)).await?;
    let mut by_enrolment: HashMap<Uuid, Vec<DateTime<Utc>>> = HashMap::new();
    for (enrolment_id, created_at) in rows {
        by_enrolment
            .entry(enrolment_id)
            .or_default()
            .push(created_at);
    }
    Ok(by_enrolment)
}

//! `email_outbox` rows: the durable queue of claim e-mails (rules.md §6.2).
//!
//! Every final update is guarded by `lease_id`, so a worker whose lease lapsed and was taken
//! over records nothing.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, Postgres, QueryBuilder};

use super::events::{self, NewEvent};
use uuid::Uuid;

/// The claim e-mail of an enrolment (integrations.md §4.3).
pub const KIND_ENROLMENT_CLAIM: &str = "enrolment_claim";

/// A leased row, with the state of its enrolment read in the same statement.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct LeasedEmail {
    pub id: Uuid,
    pub kind: String,
    pub enrolment_id: Option<Uuid>,
    /// The enrolment's course (where the row's events go); `None` when the enrolment is gone.
    pub course_id: Option<Uuid>,
    pub recipient: String,
    pub payload: serde_json::Value,
    pub attempts: i32,
    /// `None` when the enrolment is gone.
    pub enrolment_dropped: Option<bool>,
}

/// What a new claim e-mail row holds. It is inserted already leased by `lease_id`, so the
/// request that queues it can make the first attempt.
#[derive(Debug, Clone)]
pub struct NewEmail {
    pub id: Uuid,
    pub enrolment_id: Uuid,
    pub recipient: String,
    pub payload: serde_json::Value,
    pub lease_id: Uuid,
    pub lease_until: DateTime<Utc>,
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    email: &NewEmail,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO email_outbox (id, kind, enrolment_id, recipient, payload, status, attempts,
             next_attempt_at, lease_id, lease_until, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $7, $8, $6, $6)",
    )
    .bind(email.id)
    .bind(KIND_ENROLMENT_CLAIM)
    .bind(email.enrolment_id)
    .bind(&email.recipient)
    .bind(&email.payload)
    .bind(now)
    .bind(email.lease_id)
    .bind(email.lease_until)
    .execute(db)
    .await
    .map(drop)
}

/// Leases up to `limit` due pending rows of the given kinds that nobody holds, by
/// `next_attempt_at`, then id. Rows of other kinds wait for a binary that can render them.
pub async fn lease_due(
    db: impl PgExecutor<'_>,
    kinds: &[&str],
    lease_id: Uuid,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<LeasedEmail>, sqlx::Error> {
    sqlx::query_as(
        "WITH due AS (
             SELECT id FROM email_outbox
             WHERE status = 'pending' AND next_attempt_at <= $2
               AND (lease_until IS NULL OR lease_until < $2)
               AND kind = ANY($5)
             ORDER BY next_attempt_at, id
             LIMIT $4
             FOR UPDATE SKIP LOCKED),
         leased AS (
             UPDATE email_outbox o SET lease_id = $1, lease_until = $3, updated_at = $2
             FROM due WHERE o.id = due.id
             RETURNING o.id, o.kind, o.enrolment_id, o.recipient, o.payload, o.attempts,
                 o.next_attempt_at)
         SELECT l.id, l.kind, l.enrolment_id, e.course_id, l.recipient, l.payload, l.attempts,
                e.is_dropped AS enrolment_dropped
         FROM leased l LEFT JOIN course_enrolment e ON e.id = l.enrolment_id
         ORDER BY l.next_attempt_at, l.id",
    )
    .bind(lease_id)
    .bind(now)
    .bind(lease_until)
    .bind(limit)
    .bind(kinds)
    .fetch_all(db)
    .await
}

/// SMTP accepted the message: the row is `sent`, and `event` (when given) is inserted by the
/// same statement, only if the guarded update happened. True when it did.
pub async fn mark_sent(
    db: impl PgExecutor<'_>,
    id: Uuid,
    lease_id: Uuid,
    now: DateTime<Utc>,
    event: Option<&NewEvent>,
) -> Result<bool, sqlx::Error> {
    let mut query: QueryBuilder<'_, Postgres> = QueryBuilder::new(
        "WITH sent AS (UPDATE email_outbox SET status = 'sent', attempts = attempts + 1,
             last_error = NULL, lease_id = NULL, lease_until = NULL, sent_at = ",
    );
    query
        .push_bind(now)
        .push(", updated_at = ")
        .push_bind(now)
        .push(" WHERE id = ")
        .push_bind(id)
        .push(" AND lease_id = ")
        .push_bind(lease_id)
        .push(" AND status = 'pending' RETURNING id) ");
    match event {
        Some(event) => events::push_insert_from(&mut query, event, "sent"),
        None => {
            query.push("SELECT count(*) FROM sent");
        }
    }
    let sent = match event {
        Some(_) => query.build().execute(db).await?.rows_affected() == 1,
        None => query.build_query_scalar::<i64>().fetch_one(db).await? == 1,
    };
    Ok(sent)
}

/// The outcome of a recorded failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureRecorded {
    /// Still `pending`, due again later.
    Retry,
    /// The last allowed attempt failed: now `failed`.
    GaveUp,
    /// The lease was lost (or the row changed); nothing was written.
    NotHeld,
}

/// A failed attempt: `attempts += 1`, and either due again at `next_attempt_at` or `failed`
/// once `attempts` reaches `max_attempts`.
pub async fn record_failure(
    db: impl PgExecutor<'_>,
    id: Uuid,
    lease_id: Uuid,
    now: DateTime<Utc>,
    next_attempt_at: DateTime<Utc>,
    last_error: &str,
    max_attempts: i32,
) -> Result<FailureRecorded, sqlx::Error> {
    let status: Option<String> = sqlx::query_scalar(
        "UPDATE email_outbox SET attempts = attempts + 1, last_error = $4,
             status = CASE WHEN attempts + 1 >= $5 THEN 'failed' ELSE 'pending' END,
             next_attempt_at = CASE WHEN attempts + 1 >= $5 THEN next_attempt_at ELSE $6 END,
             lease_id = NULL, lease_until = NULL, updated_at = $3
         WHERE id = $1 AND lease_id = $2 AND status = 'pending'
         RETURNING status",
    )
    .bind(id)
    .bind(lease_id)
    .bind(now)
    .bind(last_error)
    .bind(max_attempts)
    .bind(next_attempt_at)
    .fetch_optional(db)
    .await?;
    Ok(match status.as_deref() {
        None => FailureRecorded::NotHeld,
        Some("failed") => FailureRecorded::GaveUp,
        Some(_) => FailureRecorded::Retry,
    })
}

/// The enrolment is gone or dropped: the e-mail is no longer wanted.
pub async fn mark_cancelled(
    db: impl PgExecutor<'_>,
    id: Uuid,
    lease_id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE email_outbox SET status = 'cancelled', lease_id = NULL, lease_until = NULL,
             updated_at = $3
         WHERE id = $1 AND lease_id = $2 AND status = 'pending'",
    )
    .bind(id)
    .bind(lease_id)
    .bind(now)
    .execute(db)
    .await
    .map(|done| done.rows_affected() == 1)
}

/// Rows in `pending`, for the `vlab_email_outbox_pending` gauge.
pub async fn count_pending(db: impl PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM email_outbox WHERE status = 'pending'")
        .fetch_one(db)
        .await
}

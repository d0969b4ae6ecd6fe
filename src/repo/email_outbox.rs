//! `email_outbox` rows: the durable queue of e-mails (rules.md §6.2).
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

/// The pre-expiry notices (addendum §9), queued by the job.
pub const KIND_DROP_DEADLINE_NOTICE: &str = "drop_deadline_notice";
pub const KIND_COURSE_END_NOTICE: &str = "course_end_notice";
pub const KIND_ACCESS_END_NOTICE: &str = "access_end_notice";

/// What the cancellation rules of the notice kinds read at send time, with the lease.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SendTimeState {
    /// `None` when the course is gone.
    pub course_status: Option<String>,
    pub course_last_drop_date: Option<DateTime<Utc>>,
    pub course_end_date: Option<DateTime<Utc>>,
    /// Whether the row's enrolment has a drop record (a drop has started).
    pub enrolment_has_drop: bool,
}

/// A row leased by the e-mail pass, with the state its kind's cancellation rule needs.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct LeasedForPass {
    #[sqlx(flatten)]
    pub email: LeasedEmail,
    #[sqlx(flatten)]
    pub state: SendTimeState,
}

/// What queued a row (`email_outbox.origin`).
pub mod origin {
    pub const ASSIGN: &str = "assign";
    pub const RESEND: &str = "resend";
    pub const RESEND_ALL: &str = "resend_all";
    pub const EMAIL_CORRECTED: &str = "email_corrected";
    pub const UNCLAIMED: &str = "unclaimed";
    pub const JOB: &str = "job";
}

/// What a new outbox row holds. With a lease, the request that queues it makes the first
/// attempt; without one, the worker sends it.
#[derive(Debug, Clone)]
pub struct NewEmail {
    pub id: Uuid,
    pub kind: &'static str,
    pub enrolment_id: Option<Uuid>,
    pub course_id: Option<Uuid>,
    pub recipient: String,
    pub payload: serde_json::Value,
    pub origin: &'static str,
    /// `sub` of the caller who asked for it; `None` for assign and the job.
    pub requested_by: Option<Uuid>,
    /// `(lease_id, lease_until)`.
    pub lease: Option<(Uuid, DateTime<Utc>)>,
}

/// Inserts a `pending` row, due at `now`.
pub async fn insert(
    db: impl PgExecutor<'_>,
    email: &NewEmail,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO email_outbox (id, kind, enrolment_id, recipient, payload, status, attempts,
             next_attempt_at, lease_id, lease_until, created_at, updated_at, origin,
             requested_by, course_id)
         VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $7, $8, $6, $6, $9, $10, $11)",
    )
    .bind(email.id)
    .bind(email.kind)
    .bind(email.enrolment_id)
    .bind(&email.recipient)
    .bind(&email.payload)
    .bind(now)
    .bind(email.lease.map(|(id, _)| id))
    .bind(email.lease.map(|(_, until)| until))
    .bind(email.origin)
    .bind(email.requested_by)
    .bind(email.course_id)
    .execute(db)
    .await
    .map(drop)
}

/// Cancels the `pending` claim e-mails of the enrolments: a newer one supersedes them. A
/// sender holding one of them records nothing, as its final update needs `pending`.
pub async fn cancel_pending_claims(
    db: impl PgExecutor<'_>,
    enrolment_ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "UPDATE email_outbox SET status = 'cancelled', lease_id = NULL, lease_until = NULL,
             updated_at = $2
         WHERE enrolment_id = ANY($1) AND kind = 'enrolment_claim' AND status = 'pending'",
    )
    .bind(enrolment_ids)
    .bind(now)
    .execute(db)
    .await
    .map(|done| done.rows_affected())
}

/// `(enrolment_id, created_at)` of the enrolments' claim e-mails created after `since`, in
/// every status: by enrolment, newest first.
pub async fn recent_claims(
    db: impl PgExecutor<'_>,
    enrolment_ids: &[Uuid],
    since: DateTime<Utc>,
) -> Result<Vec<(Uuid, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT enrolment_id, created_at FROM email_outbox
         WHERE enrolment_id = ANY($1) AND kind = 'enrolment_claim' AND created_at > $2
         ORDER BY enrolment_id, created_at DESC, id DESC",
    )
    .bind(enrolment_ids)
    .bind(since)
    .fetch_all(db)
    .await
}

/// The latest claim e-mail of an enrolment, with what the roster shows about the others.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LatestClaimEmail {
    pub enrolment_id: Uuid,
    pub status: String,
    pub recipient: String,
    pub origin: String,
    pub attempts: i32,
    pub queued_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Every claim e-mail of the enrolment, in every status.
    pub emails_queued: i64,
    /// `created_at` of those created after `since`, newest first.
    pub recent: Vec<DateTime<Utc>>,
}

/// The latest claim e-mail (`created_at DESC, id DESC`) of each enrolment that has one.
pub async fn latest_claims(
    db: impl PgExecutor<'_>,
    enrolment_ids: &[Uuid],
    since: DateTime<Utc>,
) -> Result<Vec<LatestClaimEmail>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.id AS enrolment_id, l.status, l.recipient, l.origin, l.attempts,
                l.created_at AS queued_at, l.sent_at, l.last_error, a.emails_queued, a.recent
         FROM unnest($1::uuid[]) AS e(id)
         JOIN LATERAL (
             SELECT status, recipient, origin, attempts, created_at, sent_at, last_error
             FROM email_outbox
             WHERE enrolment_id = e.id AND kind = 'enrolment_claim'
             ORDER BY created_at DESC, id DESC LIMIT 1) l ON true
         CROSS JOIN LATERAL (
             SELECT count(*) AS emails_queued,
                    COALESCE(array_agg(created_at ORDER BY created_at DESC, id DESC)
                             FILTER (WHERE created_at > $2), '{}') AS recent
             FROM email_outbox
             WHERE enrolment_id = e.id AND kind = 'enrolment_claim') a",
    )
    .bind(enrolment_ids)
    .bind(since)
    .fetch_all(db)
    .await
}

/// Inserts notice rows (`pending`, due at `now`, no lease), each at most once: a row whose
/// `dedup_key` exists already is skipped. Returns the ids of the rows inserted.
pub async fn insert_notices(
    db: impl PgExecutor<'_>,
    notices: &[(NewEmail, String)],
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    if notices.is_empty() {
        return Ok(Vec::new());
    }
    let mut query: QueryBuilder<'_, Postgres> = QueryBuilder::new(
        "INSERT INTO email_outbox (id, kind, enrolment_id, recipient, payload, status, attempts,
             next_attempt_at, created_at, updated_at, origin, requested_by, course_id,
             dedup_key) ",
    );
    query.push_values(notices, |mut row, (email, dedup_key)| {
        row.push_bind(email.id)
            .push_bind(email.kind)
            .push_bind(email.enrolment_id)
            .push_bind(&email.recipient)
            .push_bind(&email.payload)
            .push("'pending'")
            .push("0")
            .push_bind(now)
            .push_bind(now)
            .push_bind(now)
            .push_bind(email.origin)
            .push_bind(email.requested_by)
            .push_bind(email.course_id)
            .push_bind(dedup_key);
    });
    query.push(" ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING RETURNING id");
    query.build_query_scalar().fetch_all(db).await
}

/// Leases up to `limit` due pending rows of the given kinds that nobody holds, by
/// `next_attempt_at`, then id, with the course and enrolment state their cancellation rules
/// read. Rows of other kinds wait for a binary that can render them.
pub async fn lease_due(
    db: impl PgExecutor<'_>,
    kinds: &[&str],
    lease_id: Uuid,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<LeasedForPass>, sqlx::Error> {
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
             RETURNING o.id, o.kind, o.enrolment_id, o.course_id, o.recipient, o.payload,
                 o.attempts, o.next_attempt_at)
         SELECT l.id, l.kind, l.enrolment_id, COALESCE(l.course_id, e.course_id) AS course_id,
                l.recipient, l.payload, l.attempts,
                e.is_dropped AS enrolment_dropped,
                c.status AS course_status, c.last_drop_date AS course_last_drop_date,
                c.end_date AS course_end_date,
                EXISTS (SELECT 1 FROM enrolment_drop d WHERE d.enrolment_id = l.enrolment_id)
                    AS enrolment_has_drop
         FROM leased l LEFT JOIN course_enrolment e ON e.id = l.enrolment_id
         LEFT JOIN course c ON c.id = COALESCE(l.course_id, e.course_id)
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

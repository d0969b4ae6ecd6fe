//! `credit_top_up` rows (round-2 addendum F5, §6.3) and the enrolment's `extra_credits`.
//! A top-up is `granting` while its grant is in flight (leased), then `granted`, `failed` or
//! `in_doubt`; a late success moves `in_doubt` to `granted`. Lock order: `course_enrolment`
//! before `credit_top_up`.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// How long a top-up holds its lease while its grant is in flight.
pub const LEASE: Duration = Duration::minutes(5);

/// `credit_top_up.state`.
pub mod state {
    pub const GRANTING: &str = "granting";
    pub const GRANTED: &str = "granted";
    pub const FAILED: &str = "failed";
    pub const IN_DOUBT: &str = "in_doubt";
}

/// The partial unique index that allows one `granting` top-up per enrolment.
pub const IN_FLIGHT_INDEX: &str = "uq_credit_top_up_in_flight";

/// `last_error` of a top-up whose lease lapsed while granting.
pub const OUTCOME_UNKNOWN: &str = "The outcome of the grant is unknown";

/// A top-up, with the enrolment's `extra_credits` as the row was read or changed.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TopUp {
    pub id: Uuid,
    pub enrolment_id: Uuid,
    pub course_id: Uuid,
    pub project_id: Uuid,
    pub amount: i32,
    pub note: Option<String>,
    pub requested_by: Uuid,
    pub requested_by_role: String,
    pub state: String,
    pub lease_until: Option<DateTime<Utc>>,
    pub extra_credits: i32,
}

const RETURNING: &str = "t.id, t.enrolment_id, t.course_id, t.project_id, t.amount, t.note, \
    t.requested_by, t.requested_by_role, t.state, t.lease_until, \
    (SELECT e.extra_credits FROM course_enrolment e WHERE e.id = t.enrolment_id) AS extra_credits";

/// What a new top-up records.
#[derive(Debug, Clone)]
pub struct NewTopUp<'a> {
    pub id: Uuid,
    pub enrolment_id: Uuid,
    pub course_id: Uuid,
    pub project_id: Uuid,
    pub amount: i32,
    pub note: Option<&'a str>,
    pub requested_by: Uuid,
    pub requested_by_role: &'a str,
    pub lease_id: Uuid,
}

/// Inserts the top-up in `granting`, leased for its grant. A second in-flight top-up of the
/// enrolment violates [`IN_FLIGHT_INDEX`].
pub async fn insert(
    db: impl PgExecutor<'_>,
    new: &NewTopUp<'_>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO credit_top_up (id, enrolment_id, course_id, project_id, amount, note,
             requested_by, requested_by_role, state, lease_id, lease_until, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'granting', $9, $10, $11, $11)",
    )
    .bind(new.id)
    .bind(new.enrolment_id)
    .bind(new.course_id)
    .bind(new.project_id)
    .bind(new.amount)
    .bind(new.note)
    .bind(new.requested_by)
    .bind(new.requested_by_role)
    .bind(new.lease_id)
    .bind(now + LEASE)
    .bind(now)
    .execute(db)
    .await
    .map(drop)
}

/// Whether the enrolment has a `granting` top-up whose lease is live at `now`: its grant may
/// still be in flight (top-up check 4, and the drop's TopUpInProgress).
pub async fn in_flight(
    db: impl PgExecutor<'_>,
    enrolment_id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM credit_top_up
                        WHERE enrolment_id = $1 AND state = 'granting' AND lease_until > $2)",
    )
    .bind(enrolment_id)
    .bind(now)
    .fetch_one(db)
    .await
}

/// What course admins have added to the enrolment so far: their top-ups that are granted, in
/// flight or in doubt (failed ones added nothing).
pub async fn course_admin_total(
    db: impl PgExecutor<'_>,
    enrolment_id: Uuid,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(amount), 0)::bigint FROM credit_top_up
         WHERE enrolment_id = $1 AND requested_by_role = 'course_admin'
           AND state IN ('granting', 'granted', 'in_doubt')",
    )
    .bind(enrolment_id)
    .fetch_one(db)
    .await
}

/// Marks `in_doubt` the `granting` top-ups whose lease lapsed before `now`, at most `limit`,
/// skipping rows another transaction holds; of one enrolment when `enrolment_id` is given.
pub async fn mark_stale(
    db: impl PgExecutor<'_>,
    enrolment_id: Option<Uuid>,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<TopUp>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE credit_top_up t
         SET state = 'in_doubt', last_error = $4, lease_id = NULL, lease_until = NULL,
             updated_at = $2
         WHERE t.id IN (SELECT id FROM credit_top_up
                        WHERE state = 'granting' AND lease_until < $2
                          AND ($1::uuid IS NULL OR enrolment_id = $1)
                        ORDER BY lease_until
                        LIMIT $3
                        FOR UPDATE SKIP LOCKED)
         RETURNING {RETURNING}"
    ))
    .bind(enrolment_id)
    .bind(now)
    .bind(limit)
    .bind(OUTCOME_UNKNOWN)
    .fetch_all(db)
    .await
}

/// The enrolment as a top-up's settlement sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct TopUpEnrolment {
    pub extra_credits: i32,
    pub is_dropped: bool,
}

/// The enrolment, locked `FOR UPDATE` (before its top-up rows). Whether a drop has started is
/// a separate read ([`crate::repo::enrolments::has_drop`]) after this lock: a subquery of the
/// locking statement would read from before a drop committed while it waited.
pub async fn lock_enrolment(
    db: impl PgExecutor<'_>,
    enrolment_id: Uuid,
) -> Result<Option<TopUpEnrolment>, sqlx::Error> {
    sqlx::query_as(
        "SELECT extra_credits, is_dropped FROM course_enrolment WHERE id = $1 FOR UPDATE",
    )
    .bind(enrolment_id)
    .fetch_optional(db)
    .await
}

/// Settles a top-up whose grant answered: `granted` or `failed`, from `granting` or
/// `in_doubt`. Returns whether the row changed (a settled row is left as it is).
pub async fn settle(
    db: impl PgExecutor<'_>,
    id: Uuid,
    new_state: &str,
    last_error: Option<&str>,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE credit_top_up
         SET state = $2, last_error = $3, settled_at = $4, lease_id = NULL, lease_until = NULL,
             updated_at = $4
         WHERE id = $1 AND state IN ('granting', 'in_doubt')",
    )
    .bind(id)
    .bind(new_state)
    .bind(last_error)
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks a `granting` top-up `in_doubt` after an uncertain grant. Returns whether the row
/// changed: the stale-top-up pass may have marked it already.
pub async fn mark_in_doubt(
    db: impl PgExecutor<'_>,
    id: Uuid,
    last_error: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE credit_top_up
         SET state = 'in_doubt', last_error = $2, lease_id = NULL, lease_until = NULL,
             updated_at = $3
         WHERE id = $1 AND state = 'granting'",
    )
    .bind(id)
    .bind(last_error)
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Adds a granted top-up to the enrolment's `extra_credits`; returns the new value.
pub async fn add_extra_credits(
    db: impl PgExecutor<'_>,
    enrolment_id: Uuid,
    amount: i32,
) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE course_enrolment SET extra_credits = extra_credits + $2 WHERE id = $1
         RETURNING extra_credits",
    )
    .bind(enrolment_id)
    .bind(amount)
    .fetch_one(db)
    .await
}

//! `access_revocation` rows (round-2 addendum F2, §3.3): the durable removal of a previous
//! claimer's access after an unclaim, worked like a `revoking` drop (leases, backoff, never
//! gives up). Every final update is guarded by `lease_id`.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// How long a lease on a revocation lasts.
pub const LEASE: Duration = Duration::minutes(5);

/// A new pending revocation, leased by the unclaim for its immediate attempt.
pub async fn insert_leased(
    db: impl PgExecutor<'_>,
    enrolment_id: Uuid,
    course_id: Uuid,
    user_id: Uuid,
    requested_by: Option<Uuid>,
    lease_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO access_revocation (enrolment_id, course_id, user_id, reason, requested_by,
             lease_id, lease_until, created_at, updated_at)
         VALUES ($1, $2, $3, 'unclaimed', $4, $5, $6, $7, $7)
         RETURNING id",
    )
    .bind(enrolment_id)
    .bind(course_id)
    .bind(user_id)
    .bind(requested_by)
    .bind(lease_id)
    .bind(now + LEASE)
    .bind(now)
    .fetch_one(db)
    .await
}

/// Claim check 3a: whether `user` has a pending revocation in the course. Locks the user's
/// rows of the course `FOR SHARE`, whatever their state, so that the check is serialised with
/// an access sync's re-open of a `done` row.
pub async fn pending_for_user(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
    user_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let states: Vec<String> = sqlx::query_scalar(
        "SELECT state FROM access_revocation WHERE course_id = $1 AND user_id = $2 FOR SHARE",
    )
    .bind(course_id)
    .bind(user_id)
    .fetch_all(db)
    .await?;
    Ok(states.iter().any(|s| s == "pending"))
}

/// What routine R needs for one revocation.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RevocationTarget {
    pub id: Uuid,
    pub enrolment_id: Uuid,
    pub course_id: Uuid,
    pub user_id: Uuid,
    pub attempts: i32,
    /// The user's undropped claimed enrolment of the course, if any.
    pub live_claim: Option<Uuid>,
    /// The student project's member group; `None` when the project row is gone.
    pub project_member_group_id: Option<String>,
    pub waitlisted_group_id: Option<String>,
    /// The course lab's member group.
    pub lab_member_group_id: Option<String>,
}

pub async fn target(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<RevocationTarget>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.id, r.enrolment_id, r.course_id, r.user_id, r.attempts,
                (SELECT o.id FROM course_enrolment o
                 WHERE o.course_id = r.course_id AND o.claimed_by = r.user_id
                   AND NOT o.is_dropped LIMIT 1) AS live_claim,
                p.member_group_id AS project_member_group_id, p.waitlisted_group_id,
                v.member_group_id AS lab_member_group_id
         FROM access_revocation r
         JOIN course_enrolment e ON e.id = r.enrolment_id
         JOIN course c ON c.id = r.course_id
         LEFT JOIN project p ON p.id = e.project_id
         LEFT JOIN virtual_lab v ON v.id = c.virtual_lab_id
         WHERE r.id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Records the outcome `done` or `skipped` under the lease. True when this lease held it.
pub async fn complete(
    db: impl PgExecutor<'_>,
    id: Uuid,
    lease_id: Uuid,
    state: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE access_revocation
         SET state = $3, done_at = $4, attempts = attempts + 1, lease_id = NULL,
             lease_until = NULL, last_error = NULL, updated_at = $4
         WHERE id = $1 AND lease_id = $2 AND state = 'pending'",
    )
    .bind(id)
    .bind(lease_id)
    .bind(state)
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records a failed attempt with its backoff under the lease. True when this lease held it.
pub async fn fail(
    db: impl PgExecutor<'_>,
    id: Uuid,
    lease_id: Uuid,
    next_attempt_at: DateTime<Utc>,
    last_error: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE access_revocation
         SET attempts = attempts + 1, next_attempt_at = $3, last_error = $4, lease_id = NULL,
             lease_until = NULL, updated_at = $5
         WHERE id = $1 AND lease_id = $2 AND state = 'pending'",
    )
    .bind(id)
    .bind(lease_id)
    .bind(next_attempt_at)
    .bind(last_error)
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Leases up to `limit` due pending revocations (`FOR UPDATE SKIP LOCKED`).
pub async fn lease_due(
    db: impl PgExecutor<'_>,
    lease_id: Uuid,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE access_revocation SET lease_id = $1, lease_until = $2, updated_at = $3
         WHERE id IN (
             SELECT id FROM access_revocation
             WHERE state = 'pending'
               AND (next_attempt_at IS NULL OR next_attempt_at <= $3)
               AND (lease_until IS NULL OR lease_until < $3)
             ORDER BY next_attempt_at NULLS FIRST, id
             LIMIT $4
             FOR UPDATE SKIP LOCKED)
         RETURNING id",
    )
    .bind(lease_id)
    .bind(now + LEASE)
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Leases the course's pending revocations that nobody holds, whatever their backoff.
pub async fn lease_course(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
    lease_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE access_revocation SET lease_id = $2, lease_until = $3, updated_at = $4
         WHERE id IN (
             SELECT id FROM access_revocation
             WHERE course_id = $1 AND state = 'pending'
               AND (lease_until IS NULL OR lease_until < $4)
             ORDER BY id
             FOR UPDATE SKIP LOCKED)
         RETURNING id",
    )
    .bind(course_id)
    .bind(lease_id)
    .bind(now + LEASE)
    .bind(now)
    .fetch_all(db)
    .await
}

/// Leases one pending, unleased revocation (an access sync's re-open).
pub async fn lease_one(
    db: impl PgExecutor<'_>,
    id: Uuid,
    lease_id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE access_revocation SET lease_id = $2, lease_until = $3, updated_at = $4
         WHERE id = $1 AND state = 'pending' AND (lease_until IS NULL OR lease_until < $4)",
    )
    .bind(id)
    .bind(lease_id)
    .bind(now + LEASE)
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Pending revocations: of one course, or of every course.
pub async fn count_pending(
    db: impl PgExecutor<'_>,
    course_id: Option<Uuid>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM access_revocation
         WHERE state = 'pending' AND ($1::uuid IS NULL OR course_id = $1)",
    )
    .bind(course_id)
    .fetch_one(db)
    .await
}

/// S3 step 1a: re-opens the removal of `user_id` on the enrolment and takes its lease away.
/// Returns the re-opened row's id, if one matched.
pub async fn reopen(
    db: impl PgExecutor<'_>,
    enrolment_id: Uuid,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE access_revocation
         SET state = 'pending', done_at = NULL, lease_id = NULL, lease_until = NULL,
             next_attempt_at = NULL, updated_at = $3
         WHERE enrolment_id = $1 AND user_id = $2 AND state IN ('pending', 'done')
         RETURNING id",
    )
    .bind(enrolment_id)
    .bind(user_id)
    .bind(now)
    .fetch_optional(db)
    .await
}

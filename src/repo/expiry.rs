//! The expiry job's selection (rules.md §8 step 4) and its advisory lock.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// A course the job has work for.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ExpiringCourse {
    pub id: Uuid,
    pub status: String,
    pub end_date: Option<DateTime<Utc>>,
    pub budget_depleted: bool,
}

/// Active courses past `end_date` and voided courses that still have work: an undropped
/// enrolment, an unfinished drop, or a lab budget not yet depleted. Drafts never.
pub async fn select(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
) -> Result<Vec<ExpiringCourse>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.id, c.status, c.end_date, c.budget_depleted FROM course c
         WHERE ((c.status = 'active' AND c.end_date IS NOT NULL AND c.end_date <= $1)
                OR c.status = 'voided')
           AND (NOT c.budget_depleted
                OR EXISTS (SELECT 1 FROM course_enrolment e
                           WHERE e.course_id = c.id AND NOT e.is_dropped)
                OR EXISTS (SELECT 1 FROM enrolment_drop d
                           WHERE d.course_id = c.id AND d.state IN ('depleting', 'revoking'))
                OR EXISTS (SELECT 1 FROM access_revocation r
                           WHERE r.course_id = c.id AND r.state = 'pending'))
         ORDER BY c.end_date NULLS LAST, c.id",
    )
    .bind(now)
    .fetch_all(db)
    .await
}

const LOCK_KEY: &str = "SELECT hashtextextended('vlab-courses:expire-courses', 0)";

/// `pg_try_advisory_lock` on the job's key; held until `unlock` or the connection closes.
pub async fn try_lock(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(&format!("SELECT pg_try_advisory_lock(({LOCK_KEY}))"))
        .fetch_one(conn)
        .await
}

pub async fn unlock(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(&format!("SELECT pg_advisory_unlock(({LOCK_KEY}))"))
        .fetch_one(conn)
        .await
}

/// Drops still `revoking` whose access removal was attempted since `since` (and failed).
pub async fn failed_access_removals_since(
    db: impl PgExecutor<'_>,
    since: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM enrolment_drop WHERE state = 'revoking' AND updated_at >= $1",
    )
    .bind(since)
    .fetch_one(db)
    .await
}

/// Drops of the course still `revoking`.
pub async fn revoking_for_course(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM enrolment_drop WHERE course_id = $1 AND state = 'revoking'",
    )
    .bind(course_id)
    .fetch_one(db)
    .await
}

/// The course's `budget_depleted` flag.
pub async fn budget_depleted(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT budget_depleted FROM course WHERE id = $1")
        .bind(course_id)
        .fetch_one(db)
        .await
}

/// Revocations still pending whose attempt was made since `since` (and failed).
pub async fn failed_revocations_since(
    db: impl PgExecutor<'_>,
    since: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM access_revocation
         WHERE state = 'pending' AND last_error IS NOT NULL AND updated_at >= $1",
    )
    .bind(since)
    .fetch_one(db)
    .await
}

//! The access sync's statements (W.5.3–W.5.6): the snapshot, the access lease on
//! `course_enrolment`, the recorded outcome, and the lazily created waitlisted group.
//! Every write of the sync is guarded by `access_lease_id`, except the drop re-open.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// How long an access lease lasts (W.5.9).
pub const LEASE: chrono::Duration = chrono::Duration::minutes(5);

/// S1: the enrolment, its course, its project's groups and its lab's member group.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Snapshot {
    pub claimed_by: Option<Uuid>,
    pub is_dropped: bool,
    pub activated_at: Option<DateTime<Utc>>,
    pub project_id: Uuid,
    pub status: String,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
    pub virtual_lab_id: Uuid,
    pub member_group_id: String,
    pub waitlisted_group_id: Option<String>,
    pub lab_member_group_id: String,
    pub drop_started: bool,
    pub access_attempts: i32,
}

pub async fn snapshot(
    db: impl PgExecutor<'_>,
    enrolment_id: Uuid,
) -> Result<Option<Snapshot>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.claimed_by, e.is_dropped, e.activated_at, e.project_id,
                c.status, c.start_date, c.end_date, c.virtual_lab_id,
                p.member_group_id, p.waitlisted_group_id,
                v.member_group_id AS lab_member_group_id,
                EXISTS (SELECT 1 FROM enrolment_drop d WHERE d.enrolment_id = e.id)
                  AS drop_started,
                e.access_attempts
         FROM course_enrolment e
         JOIN course c ON c.id = e.course_id
         JOIN project p ON p.id = e.project_id
         JOIN virtual_lab v ON v.id = c.virtual_lab_id
         WHERE e.id = $1",
    )
    .bind(enrolment_id)
    .fetch_optional(db)
    .await
}

/// Takes the access lease unless someone holds a live one (activation, W.5.5 step 3).
pub async fn take_lease(
    db: impl PgExecutor<'_>,
    enrolment_id: Uuid,
    lease: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE course_enrolment SET access_lease_id = $2, access_lease_until = $3
         WHERE id = $1 AND (access_lease_until IS NULL OR access_lease_until <= $4)",
    )
    .bind(enrolment_id)
    .bind(lease)
    .bind(now + LEASE)
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives the lease back, if this run still holds it.
pub async fn release_lease(
    db: impl PgExecutor<'_>,
    enrolment_id: Uuid,
    lease: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE course_enrolment SET access_lease_id = NULL, access_lease_until = NULL
         WHERE id = $1 AND access_lease_id = $2",
    )
    .bind(enrolment_id)
    .bind(lease)
    .execute(db)
    .await
    .map(drop)
}

/// Stores the lazily created waitlisted group unless one is stored already; returns the
/// stored id. A single statement that holds no other lock (`updated_at` is left alone, W.2.1).
pub async fn store_waitlisted_group(
    db: &sqlx::PgPool,
    project_id: Uuid,
    group_id: &str,
) -> Result<String, sqlx::Error> {
    let stored: Option<String> = sqlx::query_scalar(
        "UPDATE project SET waitlisted_group_id = $2
         WHERE id = $1 AND waitlisted_group_id IS NULL
         RETURNING waitlisted_group_id",
    )
    .bind(project_id)
    .bind(group_id)
    .fetch_optional(db)
    .await?;
    match stored {
        Some(id) => Ok(id),
        None => sqlx::query_scalar("SELECT waitlisted_group_id FROM project WHERE id = $1")
            .bind(project_id)
            .fetch_one(db)
            .await
            .map(|id: Option<String>| id.unwrap_or_else(|| group_id.to_owned())),
    }
}

/// S3's (and S4's) view of the enrolment, locked `FOR UPDATE`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Locked {
    pub course_id: Uuid,
    pub project_id: Uuid,
    pub is_dropped: bool,
    pub access_lease_id: Option<Uuid>,
    pub drop_started: bool,
    /// What was recorded before this sync.
    pub access_level: String,
    pub activated_at: Option<DateTime<Utc>>,
    /// Set while a failure streak lasts.
    pub access_last_error: Option<String>,
    /// The claimant now (an unclaim may have changed it since S1).
    pub claimed_by: Option<Uuid>,
}

pub async fn lock(
    db: impl PgExecutor<'_>,
    enrolment_id: Uuid,
) -> Result<Option<Locked>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.course_id, e.project_id, e.is_dropped, e.access_lease_id, e.access_level,
                e.activated_at, e.access_last_error, e.claimed_by,
                EXISTS (SELECT 1 FROM enrolment_drop d WHERE d.enrolment_id = e.id)
                  AS drop_started
         FROM course_enrolment e WHERE e.id = $1 FOR UPDATE OF e",
    )
    .bind(enrolment_id)
    .fetch_optional(db)
    .await
}

/// S3.2: a drop won; access removal starts again and an in-flight D4 loses its lease, so it
/// cannot record `done` for a removal that preceded this sync's additions. True when a
/// `revoking` or `done` record was re-opened.
pub async fn reopen_drop(
    db: impl PgExecutor<'_>,
    enrolment_id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE enrolment_drop
         SET state = 'revoking', lease_id = NULL, lease_until = NULL,
             next_access_attempt_at = NULL, access_removed_at = NULL, updated_at = $2
         WHERE enrolment_id = $1 AND state IN ('revoking', 'done')",
    )
    .bind(enrolment_id)
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// S3.4: the target access is in place. The caller holds the row lock and checked the lease.
pub async fn record_applied(
    db: impl PgExecutor<'_>,
    enrolment_id: Uuid,
    level: &str,
    activate: bool,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE course_enrolment
         SET access_level = $2, access_attempts = access_attempts + 1,
             access_next_attempt_at = NULL, access_last_error = NULL,
             access_lease_id = NULL, access_lease_until = NULL,
             activated_at = CASE WHEN $3 THEN COALESCE(activated_at, $4) ELSE activated_at END
         WHERE id = $1",
    )
    .bind(enrolment_id)
    .bind(level)
    .bind(activate)
    .bind(now)
    .execute(db)
    .await
    .map(drop)
}

/// S4: a Keycloak step failed; the sync is due again at `next_attempt_at`.
pub async fn record_failure(
    db: impl PgExecutor<'_>,
    enrolment_id: Uuid,
    lease: Uuid,
    next_attempt_at: DateTime<Utc>,
    last_error: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE course_enrolment
         SET access_attempts = access_attempts + 1, access_next_attempt_at = $3,
             access_last_error = $4, access_lease_id = NULL, access_lease_until = NULL
         WHERE id = $1 AND access_lease_id = $2",
    )
    .bind(enrolment_id)
    .bind(lease)
    .bind(next_attempt_at)
    .bind(last_error)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Claimed, live enrolments of active, running courses whose access is behind target.
const BEHIND_TARGET: &str = "e.claimed_by IS NOT NULL AND NOT e.is_dropped
       AND NOT EXISTS (SELECT 1 FROM enrolment_drop d WHERE d.enrolment_id = e.id)
       AND c.status = 'active' AND (c.end_date IS NULL OR c.end_date > $1)
       AND (e.access_level = 'none'
            OR (e.access_level = 'waitlisted' AND (c.start_date IS NULL OR c.start_date <= $1)))";

/// W.5.6 step 1: leases up to `limit` due enrolments, skipping rows other replicas lock.
pub async fn lease_due(
    db: impl PgExecutor<'_>,
    lease: Uuid,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "UPDATE course_enrolment SET access_lease_id = $2, access_lease_until = $3
         WHERE id IN (
             SELECT e.id FROM course_enrolment e JOIN course c ON c.id = e.course_id
             WHERE {BEHIND_TARGET}
               AND (e.access_next_attempt_at IS NULL OR e.access_next_attempt_at <= $1)
               AND (e.access_lease_until IS NULL OR e.access_lease_until <= $1)
             ORDER BY e.access_next_attempt_at NULLS FIRST, e.id
             LIMIT $4
             FOR UPDATE OF e SKIP LOCKED)
         RETURNING id"
    ))
    .bind(now)
    .bind(lease)
    .bind(now + LEASE)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// W.5.6 step 3: how many enrolments are behind target, whatever their backoff or lease.
pub async fn count_pending(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM course_enrolment e JOIN course c ON c.id = e.course_id
         WHERE {BEHIND_TARGET}"
    ))
    .bind(now)
    .fetch_one(db)
    .await
}

//! `enrolment_drop` rows, and the seat, enrolment, outbox and course statements of the drop
//! routine (rules.md §5), void and delete (§4.7, §4.8). Row locks are taken in the global
//! order: course → seat → course_enrolment → enrolment_drop → email_outbox.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgExecutor;
use uuid::Uuid;

/// How long a drop lease lasts (rules.md §5.1 and §6.1).
pub const LEASE: chrono::Duration = chrono::Duration::minutes(5);

/// `enrolment_drop.state`.
pub const DEPLETING: &str = "depleting";
pub const REVOKING: &str = "revoking";
pub const DONE: &str = "done";

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DropRecord {
    pub enrolment_id: Uuid,
    pub seat_id: Option<Uuid>,
    pub course_id: Uuid,
    pub project_id: Uuid,
    pub reason: String,
    pub requested_by: Option<Uuid>,
    pub requested_at: DateTime<Utc>,
    pub is_early: bool,
    pub state: String,
    pub deplete_in_doubt: bool,
    pub depleted_amount: Option<Decimal>,
    pub seat_recovered: Option<bool>,
    pub dropped_at: Option<DateTime<Utc>>,
    pub access_attempts: i32,
    pub next_access_attempt_at: Option<DateTime<Utc>>,
    pub access_removed_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub lease_id: Option<Uuid>,
    pub lease_until: Option<DateTime<Utc>>,
}

const DROP_COLUMNS: &str = "enrolment_id, seat_id, course_id, project_id, reason, requested_by, \
    requested_at, is_early, state, deplete_in_doubt, depleted_amount, seat_recovered, dropped_at, \
    access_attempts, next_access_attempt_at, access_removed_at, last_error, lease_id, lease_until";

/// The seat an enrolment holds, as the drop needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct HeldSeat {
    pub id: Uuid,
    pub previously_dropped: bool,
}

/// The enrolment being dropped, with what the later steps need.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DroppingEnrolment {
    pub id: Uuid,
    pub course_id: Uuid,
    pub project_id: Uuid,
    pub student_id: String,
    pub is_dropped: bool,
    /// The project row exists (D2 is skipped when it does not).
    pub project_exists: bool,
    pub last_drop_date: Option<DateTime<Utc>>,
    pub credits_per_seat: i32,
    /// The granted top-ups, part of the recovery threshold.
    pub extra_credits: i32,
}

/// Who and which groups access removal (D4) deals with.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AccessTarget {
    pub course_id: Uuid,
    pub claimed_by: Option<Uuid>,
    /// The student project's member group; `None` when the project row is gone.
    pub project_member_group_id: Option<String>,
    /// The student project's waitlisted group, when it has one (W.5.7).
    pub waitlisted_group_id: Option<String>,
    /// The course lab's member group.
    pub lab_member_group_id: Option<String>,
    /// Access-removal attempts so far (the backoff grows with them).
    pub access_attempts: i32,
}

/// A seat requested by a faculty drop, with its enrolment if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct RequestedSeat {
    pub seat_id: Uuid,
    pub enrolment_id: Option<Uuid>,
    pub enrolment_is_dropped: Option<bool>,
}

// ---- D1: claim the drop ----------------------------------------------------------------------

/// The seat linked to the enrolment, locked `FOR UPDATE`.
pub async fn lock_held_seat(
    db: impl PgExecutor<'_>,
    enrolment_id: Uuid,
) -> Result<Option<HeldSeat>, sqlx::Error> {
    sqlx::query_as("SELECT id, previously_dropped FROM seat WHERE enrolment_id = $1 FOR UPDATE")
        .bind(enrolment_id)
        .fetch_optional(db)
        .await
}

/// The enrolment locked `FOR UPDATE` (only its own row), with its course's drop inputs.
pub async fn lock_enrolment(
    db: impl PgExecutor<'_>,
    enrolment_id: Uuid,
) -> Result<Option<DroppingEnrolment>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.id, e.course_id, e.project_id, e.student_id, e.is_dropped,
                EXISTS (SELECT 1 FROM project p WHERE p.id = e.project_id) AS project_exists,
                c.last_drop_date, c.credits_per_seat, e.extra_credits
         FROM course_enrolment e JOIN course c ON c.id = e.course_id
         WHERE e.id = $1
         FOR UPDATE OF e",
    )
    .bind(enrolment_id)
    .fetch_optional(db)
    .await
}

pub async fn lock_record(
    db: impl PgExecutor<'_>,
    enrolment_id: Uuid,
) -> Result<Option<DropRecord>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {DROP_COLUMNS} FROM enrolment_drop WHERE enrolment_id = $1 FOR UPDATE"
    ))
    .bind(enrolment_id)
    .fetch_optional(db)
    .await
}

/// What a first request fixes for good.
pub struct NewDrop<'a> {
    pub enrolment_id: Uuid,
    pub seat_id: Option<Uuid>,
    pub course_id: Uuid,
    pub project_id: Uuid,
    pub reason: &'a str,
    pub requested_by: Option<Uuid>,
    pub is_early: bool,
    pub lease_id: Uuid,
}

/// Inserts the record in `depleting`, in doubt (the deplete is about to run) and leased.
pub async fn insert_record(
    db: impl PgExecutor<'_>,
    new: &NewDrop<'_>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO enrolment_drop (enrolment_id, seat_id, course_id, project_id, reason,
             requested_by, requested_at, is_early, state, deplete_in_doubt, lease_id, lease_until,
             created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'depleting', true, $9, $10, $7, $7)",
    )
    .bind(new.enrolment_id)
    .bind(new.seat_id)
    .bind(new.course_id)
    .bind(new.project_id)
    .bind(new.reason)
    .bind(new.requested_by)
    .bind(now)
    .bind(new.is_early)
    .bind(new.lease_id)
    .bind(now + LEASE)
    .execute(db)
    .await
    .map(drop)
}

/// Takes over a `depleting` record whose lease is absent or lapsed; the first request's
/// `requested_at`, `is_early`, `reason` and `requested_by` are kept.
pub async fn take_over_record(
    db: impl PgExecutor<'_>,
    enrolment_id: Uuid,
    lease_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE enrolment_drop
         SET deplete_in_doubt = true, lease_id = $2, lease_until = $3, updated_at = $4
         WHERE enrolment_id = $1",
    )
    .bind(enrolment_id)
    .bind(lease_id)
    .bind(now + LEASE)
    .bind(now)
    .execute(db)
    .await
    .map(drop)
}

// ---- D2 failure, D3 failure -----------------------------------------------------------------

/// Releases the lease after a failed step, recording the error and the in-doubt flag.
/// Guarded by the lease: a record someone else took over is left alone.
pub async fn release_lease(
    db: impl PgExecutor<'_>,
    enrolment_id: Uuid,
    lease_id: Uuid,
    deplete_in_doubt: bool,
    last_error: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE enrolment_drop
         SET deplete_in_doubt = $3, last_error = $4, lease_id = NULL, lease_until = NULL,
             updated_at = $5
         WHERE enrolment_id = $1 AND lease_id = $2",
    )
    .bind(enrolment_id)
    .bind(lease_id)
    .bind(deplete_in_doubt)
    .bind(last_error)
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

// ---- D3: settle ------------------------------------------------------------------------------

pub async fn mark_enrolment_dropped(
    db: impl PgExecutor<'_>,
    enrolment_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE course_enrolment SET is_dropped = true WHERE id = $1")
        .bind(enrolment_id)
        .execute(db)
        .await
        .map(drop)
}

/// The seat goes back to the pool, marked so that its next drop consumes it.
pub async fn recover_seat(db: impl PgExecutor<'_>, seat_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE seat SET previously_dropped = true, enrolment_id = NULL, is_consumed = false
         WHERE id = $1",
    )
    .bind(seat_id)
    .execute(db)
    .await
    .map(drop)
}

/// The seat is used up; it keeps pointing at the dropped enrolment.
pub async fn consume_seat(db: impl PgExecutor<'_>, seat_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE seat SET is_consumed = true WHERE id = $1")
        .bind(seat_id)
        .execute(db)
        .await
        .map(drop)
}

/// Cancels the enrolment's claim e-mails that are still pending.
pub async fn cancel_pending_emails(
    db: impl PgExecutor<'_>,
    enrolment_id: Uuid,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE email_outbox SET status = 'cancelled', updated_at = $2
         WHERE enrolment_id = $1 AND status = 'pending'",
    )
    .bind(enrolment_id)
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Moves the record to `revoking` with the decision; the lease is kept for D4.
pub async fn settle_record(
    db: impl PgExecutor<'_>,
    enrolment_id: Uuid,
    depleted_amount: Decimal,
    seat_recovered: bool,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE enrolment_drop
         SET state = 'revoking', depleted_amount = $2, seat_recovered = $3, dropped_at = $4,
             deplete_in_doubt = false, next_access_attempt_at = NULL, last_error = NULL,
             updated_at = $4
         WHERE enrolment_id = $1",
    )
    .bind(enrolment_id)
    .bind(depleted_amount)
    .bind(seat_recovered)
    .bind(now)
    .execute(db)
    .await
    .map(drop)
}

// ---- D4: remove access -----------------------------------------------------------------------

pub async fn access_target(
    db: impl PgExecutor<'_>,
    enrolment_id: Uuid,
) -> Result<Option<AccessTarget>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.course_id, e.claimed_by, p.member_group_id AS project_member_group_id,
                p.waitlisted_group_id, v.member_group_id AS lab_member_group_id,
                d.access_attempts
         FROM course_enrolment e
         JOIN enrolment_drop d ON d.enrolment_id = e.id
         JOIN course c ON c.id = e.course_id
         LEFT JOIN project p ON p.id = e.project_id
         LEFT JOIN virtual_lab v ON v.id = c.virtual_lab_id
         WHERE e.id = $1",
    )
    .bind(enrolment_id)
    .fetch_optional(db)
    .await
}

/// What a completed access removal changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessCompleted {
    /// `access_level` before it was reset to `none`.
    pub previous_level: String,
    /// Access-removal attempts, this one included.
    pub attempts: i32,
}

/// Access removed: `access_level = 'none'`, then the record `done` with its lease cleared, on
/// the caller's transaction (lock order: enrolment, then drop). Guarded by the drop lease:
/// `None` when it was lost, and the caller must roll back. The access lease is never touched
/// (W.5.7).
pub async fn complete_access(
    tx: &mut sqlx::PgConnection,
    enrolment_id: Uuid,
    lease_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<AccessCompleted>, sqlx::Error> {
    let previous_level: Option<String> =
        sqlx::query_scalar("SELECT access_level FROM course_enrolment WHERE id = $1 FOR UPDATE")
            .bind(enrolment_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(previous_level) = previous_level else {
        return Ok(None);
    };
    sqlx::query("UPDATE course_enrolment SET access_level = 'none' WHERE id = $1")
        .bind(enrolment_id)
        .execute(&mut *tx)
        .await?;
    let attempts: Option<i32> = sqlx::query_scalar(
        "UPDATE enrolment_drop
         SET state = 'done', access_removed_at = $3, access_attempts = access_attempts + 1,
             next_access_attempt_at = NULL, last_error = NULL, lease_id = NULL,
             lease_until = NULL, updated_at = $3
         WHERE enrolment_id = $1 AND lease_id = $2 AND state = 'revoking'
         RETURNING access_attempts",
    )
    .bind(enrolment_id)
    .bind(lease_id)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(attempts.map(|attempts| AccessCompleted {
        previous_level,
        attempts,
    }))
}

/// Leases one `revoking` record nobody holds, whatever its backoff (an access sync that lost
/// to a drop runs D4 at once, W.5.3 S3.2).
pub async fn lease_revoking(
    db: impl PgExecutor<'_>,
    enrolment_id: Uuid,
    lease_id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE enrolment_drop SET lease_id = $2, lease_until = $3, updated_at = $4
         WHERE enrolment_id = $1 AND state = 'revoking'
           AND (lease_until IS NULL OR lease_until < $4)",
    )
    .bind(enrolment_id)
    .bind(lease_id)
    .bind(now + LEASE)
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Access removal failed: count the attempt, schedule the next one, clear the lease.
/// Guarded by the lease.
pub async fn fail_access(
    db: impl PgExecutor<'_>,
    enrolment_id: Uuid,
    lease_id: Uuid,
    next_attempt_at: DateTime<Utc>,
    last_error: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE enrolment_drop
         SET access_attempts = access_attempts + 1, next_access_attempt_at = $3,
             last_error = $4, lease_id = NULL, lease_until = NULL, updated_at = $5
         WHERE enrolment_id = $1 AND lease_id = $2 AND state = 'revoking'",
    )
    .bind(enrolment_id)
    .bind(lease_id)
    .bind(next_attempt_at)
    .bind(last_error)
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Leases the `revoking` records of a course that nobody holds, whatever their backoff.
pub async fn lease_course_revoking(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
    lease_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE enrolment_drop SET lease_id = $2, lease_until = $3, updated_at = $4
         WHERE enrolment_id IN (
             SELECT enrolment_id FROM enrolment_drop
             WHERE course_id = $1 AND state = 'revoking'
               AND (lease_until IS NULL OR lease_until < $4)
             ORDER BY enrolment_id
             FOR UPDATE SKIP LOCKED)
         RETURNING enrolment_id",
    )
    .bind(course_id)
    .bind(lease_id)
    .bind(now + LEASE)
    .bind(now)
    .fetch_all(db)
    .await
}

/// Leases up to `limit` due `revoking` records (rules.md §6.1).
pub async fn lease_due_revoking(
    db: impl PgExecutor<'_>,
    lease_id: Uuid,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE enrolment_drop SET lease_id = $1, lease_until = $2, updated_at = $3
         WHERE enrolment_id IN (
             SELECT enrolment_id FROM enrolment_drop
             WHERE state = 'revoking'
               AND (next_access_attempt_at IS NULL OR next_access_attempt_at <= $3)
               AND (lease_until IS NULL OR lease_until < $3)
             ORDER BY next_access_attempt_at NULLS FIRST, enrolment_id
             LIMIT $4
             FOR UPDATE SKIP LOCKED)
         RETURNING enrolment_id",
    )
    .bind(lease_id)
    .bind(now + LEASE)
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Drops in `revoking`: of one course, or of every course.
pub async fn count_revoking(
    db: impl PgExecutor<'_>,
    course_id: Option<Uuid>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM enrolment_drop
         WHERE state = 'revoking' AND ($1::uuid IS NULL OR course_id = $1)",
    )
    .bind(course_id)
    .fetch_one(db)
    .await
}

// ---- reading what to drop ------------------------------------------------------------------

/// Undropped enrolments of a course (those in *dropping* included), by `created_at`, `id`.
pub async fn undropped_enrolment_ids(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM course_enrolment WHERE course_id = $1 AND NOT is_dropped
         ORDER BY created_at, id",
    )
    .bind(course_id)
    .fetch_all(db)
    .await
}

/// The requested seats that are in this course, with their enrolments (one query).
pub async fn requested_seats(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
    seat_ids: &[Uuid],
) -> Result<Vec<RequestedSeat>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.id AS seat_id, s.enrolment_id, e.is_dropped AS enrolment_is_dropped
         FROM seat s LEFT JOIN course_enrolment e ON e.id = s.enrolment_id
         WHERE s.course_id = $1 AND s.id = ANY($2)",
    )
    .bind(course_id)
    .bind(seat_ids)
    .fetch_all(db)
    .await
}

// ---- void and delete -------------------------------------------------------------------------

/// Sets the course `voided` (its row already locked by the caller); a no-op when it is.
/// True when the status changed.
pub async fn set_voided(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE course SET status = 'voided', updated_at = $2
         WHERE id = $1 AND status <> 'voided'",
    )
    .bind(course_id)
    .bind(now)
    .execute(db)
    .await
    .map(|done| done.rows_affected() == 1)
}

/// True when the flag changed (it was false).
pub async fn set_budget_depleted(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE course SET budget_depleted = true, updated_at = $2
         WHERE id = $1 AND NOT budget_depleted",
    )
    .bind(course_id)
    .bind(now)
    .execute(db)
    .await
    .map(|done| done.rows_affected() == 1)
}

/// What still blocks the purge of a course.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct PurgeBlockers {
    /// Enrolments with `is_dropped = false`.
    pub undropped: i64,
    /// Drops in `depleting` (their enrolments are undropped too, normally).
    pub depleting: i64,
    /// Enrolments with a `revoking` drop or a live access lease (an access sync in flight
    /// would add memberships to groups whose enrolment is gone, W.5.7), each counted once.
    pub access_pending: i64,
    /// Pending removals of unclaimed accounts (addendum §3.5).
    pub revocations_pending: i64,
}

pub async fn purge_blockers(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
    now: DateTime<Utc>,
) -> Result<PurgeBlockers, sqlx::Error> {
    sqlx::query_as(
        "SELECT
           (SELECT count(*) FROM course_enrolment WHERE course_id = $1 AND NOT is_dropped)
             AS undropped,
           (SELECT count(*) FROM enrolment_drop WHERE course_id = $1 AND state = 'depleting')
             AS depleting,
           (SELECT count(*) FROM course_enrolment e
            WHERE e.course_id = $1
              AND (e.access_lease_until > $2
                   OR EXISTS (SELECT 1 FROM enrolment_drop d
                              WHERE d.enrolment_id = e.id AND d.state = 'revoking')))
             AS access_pending,
           (SELECT count(*) FROM access_revocation WHERE course_id = $1 AND state = 'pending')
             AS revocations_pending",
    )
    .bind(course_id)
    .bind(now)
    .fetch_one(db)
    .await
}

/// What a course purge deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub seats: u64,
    pub enrolments: u64,
}

/// Seats, then enrolments (cascading to drops and outbox rows), then the course.
/// Run inside the purge transaction, with the course row locked.
pub async fn purge_course(
    tx: &mut sqlx::PgConnection,
    course_id: Uuid,
) -> Result<Purged, sqlx::Error> {
    let seats = sqlx::query("DELETE FROM seat WHERE course_id = $1")
        .bind(course_id)
        .execute(&mut *tx)
        .await?;
    let enrolments = sqlx::query("DELETE FROM course_enrolment WHERE course_id = $1")
        .bind(course_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM course WHERE id = $1")
        .bind(course_id)
        .execute(&mut *tx)
        .await?;
    Ok(Purged {
        seats: seats.rows_affected(),
        enrolments: enrolments.rows_affected(),
    })
}

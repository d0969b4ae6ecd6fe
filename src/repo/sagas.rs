//! `saga` rows (round-2 addendum F7, §8.3): the journal of a unit of work in flight. The forward
//! path inserts the row, fences it before each credit call and deletes it in its commit
//! transaction; compensation (in process or by the recovery pass) records each undo's outcome.
//! Every update after the insert is guarded by `lease_id`, so a process that lost its lease
//! changes nothing.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

/// A journal row as the recovery reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SagaRow {
    pub id: Uuid,
    pub kind: String,
    pub plan: Value,
    pub context: Value,
    pub progress: Value,
    pub attempts: i32,
}

/// A journal row to insert, leased by its owner.
#[derive(Debug, Clone)]
pub struct NewSaga<'a> {
    pub id: Uuid,
    pub kind: &'a str,
    pub plan: &'a Value,
    pub context: &'a Value,
    pub owner: Uuid,
}

/// Opens a saga: one autocommit statement before the first external call.
pub async fn insert(
    db: impl PgExecutor<'_>,
    saga: &NewSaga<'_>,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO saga (id, kind, state, plan, context, lease_id, lease_until, created_at,
             updated_at)
         VALUES ($1, $2, 'running', $3, $4, $5, $6, $7, $7)",
    )
    .bind(saga.id)
    .bind(saga.kind)
    .bind(saga.plan)
    .bind(saga.context)
    .bind(saga.owner)
    .bind(now + lease)
    .bind(now)
    .execute(db)
    .await
    .map(drop)
}

/// Fence, mark and renew before a credit-creating call: true when the owner still holds the
/// running saga (the step is then marked `attempted` and the lease renewed).
pub async fn fence(
    db: impl PgExecutor<'_>,
    id: Uuid,
    owner: Uuid,
    seq: u32,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE saga SET lease_until = $4, updated_at = $5,
             progress = progress || jsonb_build_object($3::text, 'attempted')
         WHERE id = $1 AND state = 'running' AND lease_id = $2",
    )
    .bind(id)
    .bind(owner)
    .bind(i64::from(seq))
    .bind(now + lease)
    .bind(now)
    .execute(db)
    .await
    .map(|done| done.rows_affected() == 1)
}

/// The commit point, inside the use case's final transaction: true when the row was still the
/// owner's and is gone; false means the recovery took over and the transaction must roll back.
pub async fn delete_committed(
    db: impl PgExecutor<'_>,
    id: Uuid,
    owner: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM saga WHERE id = $1 AND state = 'running' AND lease_id = $2")
        .bind(id)
        .bind(owner)
        .execute(db)
        .await
        .map(|done| done.rows_affected() == 1)
}

/// The owner starts its in-process compensation: true when it still held the running saga.
pub async fn start_compensating(
    db: impl PgExecutor<'_>,
    id: Uuid,
    owner: Uuid,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE saga SET state = 'compensating', lease_until = $3, updated_at = $4
         WHERE id = $1 AND state = 'running' AND lease_id = $2",
    )
    .bind(id)
    .bind(owner)
    .bind(now + lease)
    .bind(now)
    .execute(db)
    .await
    .map(|done| done.rows_affected() == 1)
}

/// Merges step outcomes (`{"<seq>": "undone" | …}`) into `progress`, under the lease.
pub async fn record_progress(
    db: impl PgExecutor<'_>,
    id: Uuid,
    lease_id: Uuid,
    outcomes: &Value,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE saga SET progress = progress || $3, updated_at = $4
         WHERE id = $1 AND lease_id = $2",
    )
    .bind(id)
    .bind(lease_id)
    .bind(outcomes)
    .bind(now)
    .execute(db)
    .await
    .map(|done| done.rows_affected() == 1)
}

/// Every step is done: `compensated` with the last outcomes merged, lease cleared. True when
/// the lease still held.
pub async fn finish_compensated(
    db: impl PgExecutor<'_>,
    id: Uuid,
    lease_id: Uuid,
    outcomes: &Value,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE saga SET state = 'compensated', finished_at = $3, updated_at = $3,
             progress = progress || $4,
             lease_id = NULL, lease_until = NULL, next_attempt_at = NULL
         WHERE id = $1 AND lease_id = $2",
    )
    .bind(id)
    .bind(lease_id)
    .bind(now)
    .bind(outcomes)
    .execute(db)
    .await
    .map(|done| done.rows_affected() == 1)
}

/// A step failed: the recovery tries again at `next_attempt_at`. `attempts` is set only by
/// the in-process compensation (the recovery counts its attempt when it leases the row).
#[allow(clippy::too_many_arguments)]
pub async fn retry_later(
    db: impl PgExecutor<'_>,
    id: Uuid,
    lease_id: Uuid,
    attempts: Option<i32>,
    next_attempt_at: DateTime<Utc>,
    last_error: &str,
    outcomes: &Value,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE saga SET attempts = COALESCE($3, attempts), next_attempt_at = $4,
             last_error = $5, updated_at = $6, progress = progress || $7,
             lease_id = NULL, lease_until = NULL
         WHERE id = $1 AND lease_id = $2",
    )
    .bind(id)
    .bind(lease_id)
    .bind(attempts)
    .bind(next_attempt_at)
    .bind(last_error)
    .bind(now)
    .bind(outcomes)
    .execute(db)
    .await
    .map(|done| done.rows_affected() == 1)
}

/// The last attempt failed: `failed`, kept until an operator resolves it.
pub async fn mark_failed(
    db: impl PgExecutor<'_>,
    id: Uuid,
    lease_id: Uuid,
    last_error: &str,
    outcomes: &Value,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE saga SET state = 'failed', last_error = $3, updated_at = $4, finished_at = $4,
             progress = progress || $5,
             lease_id = NULL, lease_until = NULL, next_attempt_at = NULL
         WHERE id = $1 AND lease_id = $2",
    )
    .bind(id)
    .bind(lease_id)
    .bind(last_error)
    .bind(now)
    .bind(outcomes)
    .execute(db)
    .await
    .map(|done| done.rows_affected() == 1)
}

/// The recovery's lease: running sagas whose owner's lease lapsed, and compensations that are
/// due, oldest first, taken over by `worker` (each attempt counted).
pub async fn lease_due(
    db: impl PgExecutor<'_>,
    worker: Uuid,
    lease: Duration,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<SagaRow>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE saga SET state = 'compensating', lease_id = $1, lease_until = $2,
             attempts = attempts + 1, updated_at = $3
         WHERE id IN (SELECT id FROM saga
                      WHERE (state = 'running' AND lease_until < $3)
                         OR (state = 'compensating' AND (lease_until IS NULL OR lease_until < $3)
                             AND (next_attempt_at IS NULL OR next_attempt_at <= $3))
                      ORDER BY created_at, id LIMIT $4 FOR UPDATE SKIP LOCKED)
         RETURNING id, kind, plan, context, progress, attempts",
    )
    .bind(worker)
    .bind(now + lease)
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Releases the seats still reserved by the assign run `run` that hold no enrolment, unless
/// a saga of that run still runs under a live lease (its process is alive). Returns how many.
pub async fn release_run_seats(
    db: impl PgExecutor<'_>,
    run: Uuid,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "UPDATE seat SET reservation_id = NULL, reserved_until = NULL,
             reserved_student_id = NULL, reserved_email = NULL
         WHERE reservation_id = $1 AND enrolment_id IS NULL
           AND NOT EXISTS (
               SELECT 1 FROM saga
               WHERE state = 'running' AND lease_until >= $2
                 AND plan @> jsonb_build_array(jsonb_build_object(
                         'step', 'seat_reservation',
                         'target', jsonb_build_object('reservation_id', $1::text))))",
    )
    .bind(run)
    .bind(now)
    .execute(db)
    .await
    .map(|done| done.rows_affected())
}

/// Sagas per open state, for the `vlab_sagas_open` gauge.
pub async fn count_open(db: impl PgExecutor<'_>) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT state, count(*) FROM saga
         WHERE state IN ('running', 'compensating', 'failed') GROUP BY state",
    )
    .fetch_all(db)
    .await
}

/// Deletes compensated sagas finished before `before`; returns how many.
pub async fn purge_compensated(
    db: impl PgExecutor<'_>,
    before: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM saga WHERE state = 'compensated' AND finished_at < $1")
        .bind(before)
        .execute(db)
        .await
        .map(|done| done.rows_affected())
}

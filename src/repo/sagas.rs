//! `saga` rows (round-2 addendum F7, §8.3): the journal of a unit of work in flight. The forward
//! path inserts the row, fences it before each credit call and deletes it in its commit
//! transaction; compensation (in process or by the recovery pass) records each undo's outcome.
//! Every update after the insert is guarded by `lease_id`, so a process that lost its lease
//! changes nothing.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, Postgres, QueryBuilder};
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
    Fenced::update(now)
        .set("lease_until = ", now + lease, "")
        .set(
            "progress = progress || jsonb_build_object(",
            i64::from(seq),
            "::text, 'attempted')",
        )
        .run(db, id, owner, Guard::Running)
        .await
}

/// The commit point, inside the use case's final transaction: true when the row was still the
/// owner's and is gone; false means the recovery took over and the transaction must roll back.
pub async fn delete_committed(
    db: impl PgExecutor<'_>,
    id: Uuid,
    owner: Uuid,
) -> Result<bool, sqlx::Error> {
    Fenced::delete().run(db, id, owner, Guard::Running).await
}

/// The owner starts its in-process compensation: true when it still held the running saga.
pub async fn start_compensating(
    db: impl PgExecutor<'_>,
    id: Uuid,
    owner: Uuid,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    Fenced::update(now)
        .set("state = ", "compensating", "")
        .set("lease_until = ", now + lease, "")
        .run(db, id, owner, Guard::Running)
        .await
}

/// Where a compensation got to, recorded under the lease with the step outcomes.
#[derive(Debug, Clone, Copy)]
pub enum Compensation<'a> {
    /// Some steps are settled; the lease stays.
    Progress,
    /// Every step is done: `compensated`, lease cleared.
    Compensated,
    /// A step failed: the recovery tries again at `next_attempt_at`. `attempts` is set only by
    /// the in-process compensation (the recovery counts its attempt when it leases the row).
    RetryLater {
        attempts: Option<i32>,
        next_attempt_at: DateTime<Utc>,
        last_error: &'a str,
    },
    /// The last attempt failed: `failed`, kept until an operator resolves it.
    Failed { last_error: &'a str },
}

/// Records `compensation` and merges step outcomes (`{"<seq>": "undone" | …}`) into
/// `progress`: true when the lease still held.
pub async fn record_compensation(
    db: impl PgExecutor<'_>,
    id: Uuid,
    lease_id: Uuid,
    compensation: Compensation<'_>,
    outcomes: &Value,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let update = Fenced::update(now).progress(outcomes);
    let update = match compensation {
        Compensation::Progress => update,
        Compensation::Compensated => update.finished("compensated", now),
        Compensation::RetryLater {
            attempts,
            next_attempt_at,
            last_error,
        } => update
            .set("attempts = COALESCE(", attempts, ", attempts)")
            .set("next_attempt_at = ", next_attempt_at, "")
            .set("last_error = ", last_error, "")
            .release(),
        Compensation::Failed { last_error } => {
            update
                .finished("failed", now)
                .set("last_error = ", last_error, "")
        }
    };
    update.run(db, id, lease_id, Guard::Lease).await
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

/// Which rows the lease fence lets a statement touch (§8.4).
#[derive(Debug, Clone, Copy)]
enum Guard {
    /// The forward path: the caller's lease, and the saga still `running` (a saga the recovery
    /// moved to `compensating` is no longer the owner's to go on with).
    Running,
    /// Compensation and recovery: the caller's lease, whatever the state.
    Lease,
}

/// One statement on one saga row that changes nothing unless the caller still holds its lease:
/// every update and the commit's delete after the insert go through it.
struct Fenced<'a> {
    query: QueryBuilder<'a, Postgres>,
}

impl<'a> Fenced<'a> {
    /// `UPDATE saga SET updated_at = now, …`: every update stamps the row.
    fn update(now: DateTime<Utc>) -> Self {
        let mut query = QueryBuilder::new("UPDATE saga SET updated_at = ");
        query.push_bind(now);
        Self { query }
    }

    fn delete() -> Self {
        Self {
            query: QueryBuilder::new("DELETE FROM saga"),
        }
    }

    /// Adds the assignment `{before}<value>{after}`, the value bound as a parameter.
    fn set<T>(mut self, before: &str, value: T, after: &str) -> Self
    where
        T: 'a + sqlx::Encode<'a, Postgres> + sqlx::Type<Postgres>,
    {
        self.query
            .push(", ")
            .push(before)
            .push_bind(value)
            .push(after);
        self
    }

    /// Merges step outcomes into `progress`.
    fn progress(self, outcomes: &'a Value) -> Self {
        self.set("progress = progress || ", outcomes, "")
    }

    /// Gives the lease up: the row waits for the recovery (or for nobody, once finished).
    fn release(mut self) -> Self {
        self.query.push(", lease_id = NULL, lease_until = NULL");
        self
    }

    /// The saga ends in `state` (`compensated` or `failed`): nothing is left to retry.
    fn finished(self, state: &'static str, now: DateTime<Utc>) -> Self {
        let mut done = self
            .set("state = ", state, "")
            .set("finished_at = ", now, "")
            .release();
        done.query.push(", next_attempt_at = NULL");
        done
    }

    /// Runs the statement behind the fence: true when the caller still held the lease and the
    /// row was changed.
    async fn run(
        mut self,
        db: impl PgExecutor<'_>,
        id: Uuid,
        lease_id: Uuid,
        guard: Guard,
    ) -> Result<bool, sqlx::Error> {
        self.query.push(" WHERE id = ").push_bind(id);
        self.query.push(" AND lease_id = ").push_bind(lease_id);
        if matches!(guard, Guard::Running) {
            self.query.push(" AND state = 'running'");
        }
        let done = self.query.build().execute(db).await?;
        Ok(done.rows_affected() == 1)
    }
}

//! `idempotent_request`: the replay record of an assign or roster import sent with an
//! `Idempotency-Key`. A row is `running` while a process holds its lease (`lease_id` is that
//! run's seat `reservation_id`), then `done` with the answer to replay; it lives until
//! `expires_at`.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{FromRow, PgExecutor, Postgres};
use uuid::Uuid;

/// The primary key: keys belong to their caller, operation and course.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    pub caller: Uuid,
    /// `assign` or `roster_import`.
    pub operation: &'static str,
    pub course_id: Uuid,
    pub key: String,
}

const WHERE_KEY: &str =
    "caller = $1 AND operation = $2 AND course_id = $3 AND idempotency_key = $4";
/// The lease guard of the holder's own writes: the run bound at `$5` still holds the row.
const HELD_BY_RUN: &str = "AND state = 'running' AND lease_id = $5";

/// `sql` with the key bound to `$1..$4`, in the order of [`WHERE_KEY`] (and of the insert's
/// first columns).
fn keyed<'q>(sql: &'q str, key: &'q RequestKey) -> Query<'q, Postgres, PgArguments> {
    sqlx::query(sql)
        .bind(key.caller)
        .bind(key.operation)
        .bind(key.course_id)
        .bind(&key.key)
}

/// Runs a statement meant for the key's one row: true when it changed that row.
async fn one_row(
    query: Query<'_, Postgres, PgArguments>,
    db: impl PgExecutor<'_>,
) -> Result<bool, sqlx::Error> {
    Ok(query.execute(db).await?.rows_affected() == 1)
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct IdempotentRequest {
    pub request_hash: Vec<u8>,
    pub state: String,
    pub lease_id: Option<Uuid>,
    pub lease_until: Option<DateTime<Utc>>,
    pub response_status: Option<i32>,
    pub response: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A new `running` row leased to `run`, unless the key has a row already. True when inserted.
pub async fn insert(
    db: impl PgExecutor<'_>,
    key: &RequestKey,
    hash: &[u8],
    run: Uuid,
    lease_until: DateTime<Utc>,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let sql = "INSERT INTO idempotent_request (caller, operation, course_id, idempotency_key,
                   request_hash, lease_id, lease_until, created_at, updated_at, expires_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)
               ON CONFLICT DO NOTHING";
    one_row(
        keyed(sql, key)
            .bind(hash)
            .bind(run)
            .bind(lease_until)
            .bind(now)
            .bind(expires_at),
        db,
    )
    .await
}

pub async fn find_for_update(
    db: impl PgExecutor<'_>,
    key: &RequestKey,
) -> Result<Option<IdempotentRequest>, sqlx::Error> {
    let sql = format!(
        "SELECT request_hash, state, lease_id, lease_until, response_status, response,
                created_at, expires_at
         FROM idempotent_request WHERE {WHERE_KEY} FOR UPDATE"
    );
    keyed(&sql, key)
        .try_map(|row: PgRow| IdempotentRequest::from_row(&row))
        .fetch_optional(db)
        .await
}

/// Makes an expired row a new `running` request leased to `run`.
pub async fn restart(
    db: impl PgExecutor<'_>,
    key: &RequestKey,
    hash: &[u8],
    run: Uuid,
    lease_until: DateTime<Utc>,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "UPDATE idempotent_request SET request_hash = $5, state = 'running', lease_id = $6,
             lease_until = $7, response_status = NULL, response = NULL, created_at = $8,
             updated_at = $8, expires_at = $9
         WHERE {WHERE_KEY}"
    );
    keyed(&sql, key)
        .bind(hash)
        .bind(run)
        .bind(lease_until)
        .bind(now)
        .bind(expires_at)
        .execute(db)
        .await
        .map(drop)
}

/// Leases a `running` row to `run` (a new attempt, or the renewal by its holder): guarded by
/// `lease_id = holder`. True when the row was updated.
pub async fn lease(
    db: impl PgExecutor<'_>,
    key: &RequestKey,
    holder: Option<Uuid>,
    run: Uuid,
    lease_until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "UPDATE idempotent_request SET lease_id = $6, lease_until = $7, updated_at = $8
         WHERE {WHERE_KEY} AND state = 'running' AND lease_id IS NOT DISTINCT FROM $5"
    );
    let query = keyed(&sql, key)
        .bind(holder)
        .bind(run)
        .bind(lease_until)
        .bind(now);
    one_row(query, db).await
}

/// Records the answer of the run holding the lease; the row becomes `done`.
pub async fn finish(
    db: impl PgExecutor<'_>,
    key: &RequestKey,
    run: Uuid,
    status: i32,
    response: &Value,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "UPDATE idempotent_request SET state = 'done', response_status = $6, response = $7,
             lease_id = NULL, lease_until = NULL, updated_at = $8
         WHERE {WHERE_KEY} {HELD_BY_RUN}"
    );
    let query = keyed(&sql, key)
        .bind(run)
        .bind(status)
        .bind(response)
        .bind(now);
    one_row(query, db).await
}

/// Deletes the row of the run holding the lease: the key is unused again.
pub async fn forget(
    db: impl PgExecutor<'_>,
    key: &RequestKey,
    run: Uuid,
) -> Result<(), sqlx::Error> {
    let sql = format!("DELETE FROM idempotent_request WHERE {WHERE_KEY} {HELD_BY_RUN}");
    keyed(&sql, key).bind(run).execute(db).await.map(drop)
}

/// Deletes the rows past `expires_at`, except a `running` one whose lease still holds (its
/// process still writes it). Returns the number deleted.
pub async fn purge_expired(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM idempotent_request
         WHERE expires_at <= $1
           AND NOT (state = 'running' AND lease_until IS NOT NULL AND lease_until > $1)",
    )
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

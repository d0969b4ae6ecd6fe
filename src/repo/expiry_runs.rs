//! `expiry_run`: the record of every `expire-courses` run (addendum §10.3) and its two reads.
//! The job's writes lock nothing but the run's own row; requests only read.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// A run's row as the endpoints show it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ExpiryRun {
    pub id: Uuid,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i32>,
    pub host: Option<String>,
    pub course_count: i32,
    pub summary: Option<Value>,
}

/// A finished run: what its last update (or its only insert) writes.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedRun<'a> {
    pub id: Uuid,
    pub status: &'a str,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub exit_code: i32,
    pub host: Option<&'a str>,
    pub course_ids: &'a [Uuid],
    pub summary: &'a Value,
}

/// Runs still `running` when a new run holds the lock were killed: they become `abandoned`.
pub async fn mark_abandoned(db: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("UPDATE expiry_run SET status = 'abandoned' WHERE status = 'running'")
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

/// This run's row, `running` until [`finish`].
pub async fn insert_running(
    db: impl PgExecutor<'_>,
    id: Uuid,
    started_at: DateTime<Utc>,
    host: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO expiry_run (id, status, started_at, host) VALUES ($1, 'running', $2, $3)",
    )
    .bind(id)
    .bind(started_at)
    .bind(host)
    .execute(db)
    .await?;
    Ok(())
}

/// Writes the outcome of a run: inserts the row, or completes this run's `running` row.
pub async fn finish(db: impl PgExecutor<'_>, run: &FinishedRun<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO expiry_run
           (id, status, started_at, finished_at, exit_code, host, course_ids, summary)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status,
           finished_at = EXCLUDED.finished_at, exit_code = EXCLUDED.exit_code,
           course_ids = EXCLUDED.course_ids, summary = EXCLUDED.summary",
    )
    .bind(run.id)
    .bind(run.status)
    .bind(run.started_at)
    .bind(run.finished_at)
    .bind(run.exit_code)
    .bind(run.host)
    .bind(run.course_ids)
    .bind(run.summary)
    .execute(db)
    .await?;
    Ok(())
}

/// Deletes the runs that started before `cutoff`; returns how many.
pub async fn purge(db: impl PgExecutor<'_>, cutoff: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM expiry_run WHERE started_at < $1")
        .bind(cutoff)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

/// The filters and page of `GET /courses/expiry-runs`.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    /// Empty: every status.
    pub statuses: Vec<String>,
    pub course_id: Option<Uuid>,
    pub started_after: Option<DateTime<Utc>>,
    pub started_before: Option<DateTime<Utc>>,
    pub page: i64,
    pub page_size: i64,
}

const FILTER: &str = "(cardinality($1::text[]) = 0 OR status = ANY($1))
    AND ($2::uuid IS NULL OR course_ids @> ARRAY[$2::uuid])
    AND ($3::timestamptz IS NULL OR started_at >= $3)
    AND ($4::timestamptz IS NULL OR started_at <= $4)";

/// One page of runs, newest first, each summary without its `courses`, and the number matching.
pub async fn list(db: &PgPool, q: &RunQuery) -> Result<(Vec<ExpiryRun>, i64), sqlx::Error> {
    let rows = sqlx::query_as(&format!(
        "SELECT id, status, started_at, finished_at, exit_code, host,
                cardinality(course_ids) AS course_count, summary - 'courses' AS summary
         FROM expiry_run WHERE {FILTER}
         ORDER BY started_at DESC, id LIMIT $5 OFFSET $6"
    ))
    .bind(&q.statuses)
    .bind(q.course_id)
    .bind(q.started_after)
    .bind(q.started_before)
    .bind(q.page_size)
    .bind((q.page - 1).saturating_mul(q.page_size))
    .fetch_all(db)
    .await?;
    let total = sqlx::query_scalar(&format!("SELECT count(*) FROM expiry_run WHERE {FILTER}"))
        .bind(&q.statuses)
        .bind(q.course_id)
        .bind(q.started_after)
        .bind(q.started_before)
        .fetch_one(db)
        .await?;
    Ok((rows, total))
}

/// One run with its complete summary.
pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<ExpiryRun>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, status, started_at, finished_at, exit_code, host,
                cardinality(course_ids) AS course_count, summary
         FROM expiry_run WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await
}

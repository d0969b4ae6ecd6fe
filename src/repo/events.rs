//! `course_event`: the append-only audit log. Events are inserted in the transaction of the
//! change they record (one multi-row statement per transaction), read by course or enrolment,
//! and deleted only by the retention purge, which the table's trigger lets through when the
//! transaction sets `vlab.course_event_purge`.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::{PgExecutor, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

/// Rows deleted per purge transaction.
pub const PURGE_BATCH: i64 = 10_000;

/// One event to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub course_id: Uuid,
    pub event_type: &'static str,
    pub actor_role: &'static str,
    pub actor_id: Option<Uuid>,
    pub actor_email: Option<String>,
    pub request_id: Option<String>,
    pub enrolment_id: Option<Uuid>,
    pub seat_id: Option<Uuid>,
    pub project_id: Option<Uuid>,
    pub student_id: Option<String>,
    pub amount: Option<Decimal>,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub data: Value,
    pub occurred_at: DateTime<Utc>,
}

const INSERT: &str = "INSERT INTO course_event (course_id, event_type, actor_role, actor_id,
    actor_email, request_id, enrolment_id, seat_id, project_id, student_id, amount,
    before_values, after_values, data, occurred_at) ";

/// Inserts `events` with one statement (nothing when empty).
pub async fn insert(db: impl PgExecutor<'_>, events: &[NewEvent]) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let mut query: QueryBuilder<'_, Postgres> = QueryBuilder::new(INSERT);
    query.push_values(events, |mut row, e| {
        row.push_bind(e.course_id)
            .push_bind(e.event_type)
            .push_bind(e.actor_role)
            .push_bind(e.actor_id)
            .push_bind(e.actor_email.as_deref())
            .push_bind(e.request_id.as_deref())
            .push_bind(e.enrolment_id)
            .push_bind(e.seat_id)
            .push_bind(e.project_id)
            .push_bind(e.student_id.as_deref())
            .push_bind(e.amount)
            .push_bind(e.before.as_ref())
            .push_bind(e.after.as_ref())
            .push_bind(&e.data)
            .push_bind(e.occurred_at);
    });
    query.build().execute(db).await.map(drop)
}

/// Appends `INSERT INTO course_event … SELECT <event> FROM <source>` to `query`: the event is
/// written once per row of `source`, a data-modifying CTE of the same statement, so a change
/// that is one statement stays one statement (and one round trip) with its event.
pub fn push_insert_from<'q>(query: &mut QueryBuilder<'q, Postgres>, e: &'q NewEvent, source: &str) {
    query.push(INSERT).push("SELECT ");
    let mut values = query.separated(", ");
    values
        .push_bind(e.course_id)
        .push_bind(e.event_type)
        .push_bind(e.actor_role)
        .push_bind(e.actor_id)
        .push_bind(e.actor_email.as_deref())
        .push_bind(e.request_id.as_deref())
        .push_bind(e.enrolment_id)
        .push_bind(e.seat_id)
        .push_bind(e.project_id)
        .push_bind(e.student_id.as_deref())
        .push_bind(e.amount)
        .push_bind(e.before.as_ref())
        .push_bind(e.after.as_ref())
        .push_bind(&e.data)
        .push_bind(e.occurred_at);
    query.push(" FROM ").push(source);
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct CourseEvent {
    pub id: i64,
    pub course_id: Uuid,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub actor_role: String,
    pub actor_id: Option<Uuid>,
    pub actor_email: Option<String>,
    pub enrolment_id: Option<Uuid>,
    pub seat_id: Option<Uuid>,
    pub project_id: Option<Uuid>,
    pub student_id: Option<String>,
    pub amount: Option<Decimal>,
    pub before_values: Option<Value>,
    pub after_values: Option<Value>,
    pub data: Value,
    pub request_id: Option<String>,
}

const COLUMNS: &str = "id, course_id, event_type, occurred_at, actor_role, actor_id, \
    actor_email, enrolment_id, seat_id, project_id, student_id, amount, before_values, \
    after_values, data, request_id";

/// The filters and page of a course's event listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventQuery {
    pub course_id: Uuid,
    pub enrolment_id: Option<Uuid>,
    pub seat_id: Option<Uuid>,
    /// Empty: every type.
    pub event_types: Vec<String>,
    pub occurred_after: Option<DateTime<Utc>>,
    pub occurred_before: Option<DateTime<Utc>>,
    pub descending: bool,
    pub page: i64,
    pub page_size: i64,
}

const FILTER: &str = "course_id = $1
    AND ($2::uuid IS NULL OR enrolment_id = $2)
    AND ($3::uuid IS NULL OR seat_id = $3)
    AND (cardinality($4::text[]) = 0 OR event_type = ANY($4))
    AND ($5::timestamptz IS NULL OR occurred_at >= $5)
    AND ($6::timestamptz IS NULL OR occurred_at <= $6)";

/// One page of a course's events, ordered by `occurred_at` then `id`, both in the requested
/// direction (events of one transaction share `occurred_at` and keep their insertion order).
pub async fn list(db: &PgPool, q: &EventQuery) -> Result<(Vec<CourseEvent>, i64), sqlx::Error> {
    let dir = if q.descending { "DESC" } else { "ASC" };
    let rows = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM course_event WHERE {FILTER}
         ORDER BY occurred_at {dir}, id {dir} LIMIT $7 OFFSET $8"
    ))
    .bind(q.course_id)
    .bind(q.enrolment_id)
    .bind(q.seat_id)
    .bind(&q.event_types)
    .bind(q.occurred_after)
    .bind(q.occurred_before)
    .bind(q.page_size)
    .bind((q.page - 1).saturating_mul(q.page_size))
    .fetch_all(db)
    .await?;
    let total = sqlx::query_scalar(&format!("SELECT count(*) FROM course_event WHERE {FILTER}"))
        .bind(q.course_id)
        .bind(q.enrolment_id)
        .bind(q.seat_id)
        .bind(&q.event_types)
        .bind(q.occurred_after)
        .bind(q.occurred_before)
        .fetch_one(db)
        .await?;
    Ok((rows, total))
}

/// Every event of one enrolment, oldest first.
pub async fn for_enrolment(
    db: impl PgExecutor<'_>,
    enrolment_id: Uuid,
) -> Result<Vec<CourseEvent>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM course_event WHERE enrolment_id = $1 ORDER BY occurred_at, id"
    ))
    .bind(enrolment_id)
    .fetch_all(db)
    .await
}

/// Whether any event of this course id is stored (a deleted course's events outlive it).
pub async fn course_has_events(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM course_event WHERE course_id = $1)")
        .bind(course_id)
        .fetch_one(db)
        .await
}

/// Deletes up to [`PURGE_BATCH`] events older than `cutoff`, oldest ids first, in one
/// transaction that sets the purge switch the append-only trigger checks. Returns how many.
pub async fn purge_batch(db: &PgPool, cutoff: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query("SET LOCAL vlab.course_event_purge = 'on'")
        .execute(&mut *tx)
        .await?;
    let done = sqlx::query(
        "DELETE FROM course_event
         WHERE id IN (SELECT id FROM course_event WHERE occurred_at < $1 ORDER BY id LIMIT $2)",
    )
    .bind(cutoff)
    .bind(PURGE_BATCH)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}

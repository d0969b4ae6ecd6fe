//! `seat` rows: provisioning, listings, reservations for assign, linking and transfer.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::like_pattern;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Seat {
    pub id: Uuid,
    pub course_id: Uuid,
    pub institution_id: Uuid,
    pub is_consumed: bool,
    pub previously_dropped: bool,
    pub batch_id: Uuid,
    pub enrolment_id: Option<Uuid>,
    pub expiry_date: DateTime<Utc>,
    pub credit_value: i32,
    pub created_at: DateTime<Utc>,
    pub reservation_id: Option<Uuid>,
    pub reserved_until: Option<DateTime<Utc>>,
    pub reserved_student_id: Option<String>,
    pub reserved_email: Option<String>,
}

pub const COLUMNS: &str = "id, course_id, institution_id, is_consumed, previously_dropped, \
    batch_id, enrolment_id, expiry_date, credit_value, created_at, reservation_id, \
    reserved_until, reserved_student_id, reserved_email";

/// The predicate of an *available* seat (data-model.md §2.7); `$now` is parameter `now_param`.
fn available(now_param: &str) -> String {
    format!(
        "NOT is_consumed AND enrolment_id IS NULL AND expiry_date > {now_param}
         AND (reserved_until IS NULL OR reserved_until <= {now_param})"
    )
}

/// What one provision call inserts.
#[derive(Debug, Clone)]
pub struct NewBatch {
    pub ids: Vec<Uuid>,
    pub course_id: Uuid,
    pub institution_id: Uuid,
    pub batch_id: Uuid,
    pub expiry_date: DateTime<Utc>,
    pub credit_value: i32,
}

/// Inserts the seats of one batch; returns them ordered by id.
pub async fn insert_batch(
    db: impl PgExecutor<'_>,
    batch: &NewBatch,
    now: DateTime<Utc>,
) -> Result<Vec<Seat>, sqlx::Error> {
    sqlx::query_as(&format!(
        "WITH inserted AS (
             INSERT INTO seat (id, course_id, institution_id, batch_id, expiry_date, credit_value,
                 created_at)
             SELECT id, $2, $3, $4, $5, $6, $7 FROM UNNEST($1::uuid[]) AS ids(id)
             RETURNING {COLUMNS})
         SELECT {COLUMNS} FROM inserted ORDER BY id"
    ))
    .bind(&batch.ids)
    .bind(batch.course_id)
    .bind(batch.institution_id)
    .bind(batch.batch_id)
    .bind(batch.expiry_date)
    .bind(batch.credit_value)
    .bind(now)
    .fetch_all(db)
    .await
}

/// Every seat now in the course, by `created_at`, then id.
pub async fn list_by_course(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
) -> Result<Vec<Seat>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM seat WHERE course_id = $1 ORDER BY created_at, id"
    ))
    .bind(course_id)
    .fetch_all(db)
    .await
}

/// The seats that hold these enrolments (`seat.enrolment_id`).
pub async fn find_by_enrolments(
    db: impl PgExecutor<'_>,
    enrolment_ids: &[Uuid],
) -> Result<Vec<Seat>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM seat WHERE enrolment_id = ANY($1)"
    ))
    .bind(enrolment_ids)
    .fetch_all(db)
    .await
}

/// Every seat of one batch, wherever it is now, by `created_at`, then id.
pub async fn list_by_batch(
    db: impl PgExecutor<'_>,
    batch_id: Uuid,
) -> Result<Vec<Seat>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM seat WHERE batch_id = $1 ORDER BY created_at, id"
    ))
    .bind(batch_id)
    .fetch_all(db)
    .await
}

/// The filters of `GET /seats/batches` (api.md §4.6.3), combined with AND.
#[derive(Debug, Clone, Default)]
pub struct SeatSearch {
    pub course_id: Option<Uuid>,
    pub institution_id: Option<Uuid>,
    /// Substring of the name of the lab of the seat's current course.
    pub vlab_name: Option<String>,
    /// Substring of the name of the seat's institution.
    pub institution_name: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
}

/// The matching seats, by `created_at`, then id.
pub async fn search(
    db: impl PgExecutor<'_>,
    filters: &SeatSearch,
) -> Result<Vec<Seat>, sqlx::Error> {
    let columns = prefixed("s");
    sqlx::query_as(&format!(
        "SELECT {columns} FROM seat s
         JOIN course c ON c.id = s.course_id
         JOIN virtual_lab v ON v.id = c.virtual_lab_id
         JOIN institution i ON i.id = s.institution_id
         WHERE ($1::uuid IS NULL OR s.course_id = $1)
           AND ($2::uuid IS NULL OR s.institution_id = $2)
           AND ($3::text IS NULL OR v.name ILIKE $3 ESCAPE '\\')
           AND ($4::text IS NULL OR i.name ILIKE $4 ESCAPE '\\')
           AND ($5::timestamptz IS NULL OR s.created_at >= $5)
           AND ($6::timestamptz IS NULL OR s.created_at <= $6)
         ORDER BY s.created_at, s.id"
    ))
    .bind(filters.course_id)
    .bind(filters.institution_id)
    .bind(filters.vlab_name.as_deref().map(like_pattern))
    .bind(filters.institution_name.as_deref().map(like_pattern))
    .bind(filters.created_after)
    .bind(filters.created_before)
    .fetch_all(db)
    .await
}

/// The columns qualified with a table alias.
fn prefixed(alias: &str) -> String {
    COLUMNS
        .split(", ")
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The course a batch response describes, with its lab's name (api.md §3.12).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BatchCourse {
    pub id: Uuid,
    pub virtual_lab_id: Uuid,
    pub virtual_lab_name: String,
    pub institution_id: Uuid,
    pub template_project_id: Uuid,
    pub status: String,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
    pub last_drop_date: Option<DateTime<Utc>>,
}

pub async fn batch_course(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
) -> Result<Option<BatchCourse>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.id, c.virtual_lab_id, v.name AS virtual_lab_name, c.institution_id,
                c.template_project_id, c.status, c.start_date, c.end_date, c.last_drop_date
         FROM course c JOIN virtual_lab v ON v.id = c.virtual_lab_id
         WHERE c.id = $1",
    )
    .bind(course_id)
    .fetch_optional(db)
    .await
}

// ---- assign: reservation, link, release --------------------------------------------------

/// Locks up to `limit` available seats of the course, in (`expiry_date`, id) order.
pub async fn lock_available(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT id FROM seat WHERE course_id = $1 AND {}
         ORDER BY expiry_date, id LIMIT $3 FOR UPDATE",
        available("$2")
    ))
    .bind(course_id)
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// How many seats of the course are available at `now` (data-model.md §2.7).
pub async fn count_available(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM seat WHERE course_id = $1 AND {}",
        available("$2")
    ))
    .bind(course_id)
    .bind(now)
    .fetch_one(db)
    .await
}

/// One seat reserved for one student.
#[derive(Debug, Clone)]
pub struct SeatReservation {
    pub seat_id: Uuid,
    pub student_id: String,
    pub email: String,
}

/// Marks every pair as reserved by `run` until `until`.
pub async fn reserve(
    db: impl PgExecutor<'_>,
    run: Uuid,
    until: DateTime<Utc>,
    pairs: &[SeatReservation],
) -> Result<u64, sqlx::Error> {
    let seat_ids: Vec<Uuid> = pairs.iter().map(|p| p.seat_id).collect();
    let student_ids: Vec<&str> = pairs.iter().map(|p| p.student_id.as_str()).collect();
    let emails: Vec<&str> = pairs.iter().map(|p| p.email.as_str()).collect();
    sqlx::query(
        "UPDATE seat SET reservation_id = $1, reserved_until = $2,
             reserved_student_id = r.student_id, reserved_email = r.email
         FROM UNNEST($3::uuid[], $4::text[], $5::text[]) AS r(seat_id, student_id, email)
         WHERE seat.id = r.seat_id",
    )
    .bind(run)
    .bind(until)
    .bind(&seat_ids)
    .bind(&student_ids)
    .bind(&emails)
    .execute(db)
    .await
    .map(|done| done.rows_affected())
}

/// Live reservations of the course whose student id is one of `student_ids` or whose e-mail,
/// lower-cased, is one of `lower_emails`: `(reserved_student_id, reserved_email)`.
pub async fn reserved_duplicates(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
    now: DateTime<Utc>,
    student_ids: &[String],
    lower_emails: &[String],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT COALESCE(reserved_student_id, ''), COALESCE(reserved_email, '') FROM seat
         WHERE course_id = $1 AND reserved_until > $2
           AND (reserved_student_id = ANY($3) OR lower(reserved_email) = ANY($4))",
    )
    .bind(course_id)
    .bind(now)
    .bind(student_ids)
    .bind(lower_emails)
    .fetch_all(db)
    .await
}

pub async fn find_for_update(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<Seat>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM seat WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Gives the seat to the enrolment and clears its reservation.
pub async fn link_enrolment(
    db: impl PgExecutor<'_>,
    id: Uuid,
    enrolment_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE seat SET enrolment_id = $2, reservation_id = NULL, reserved_until = NULL,
             reserved_student_id = NULL, reserved_email = NULL
         WHERE id = $1",
    )
    .bind(id)
    .bind(enrolment_id)
    .execute(db)
    .await
    .map(drop)
}

/// Releases the seat if `run` still holds it (rules.md §3, seat reservation undo).
pub async fn release(db: impl PgExecutor<'_>, id: Uuid, run: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE seat SET reservation_id = NULL, reserved_until = NULL,
             reserved_student_id = NULL, reserved_email = NULL
         WHERE id = $1 AND reservation_id = $2",
    )
    .bind(id)
    .bind(run)
    .execute(db)
    .await
    .map(|done| done.rows_affected() == 1)
}

/// Releases every seat `run` still holds in the course (a resumed request takes over the
/// reservations of its dead attempt). Locks them in id order. Returns the number released.
pub async fn release_run(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
    run: Uuid,
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "UPDATE seat SET reservation_id = NULL, reserved_until = NULL,
             reserved_student_id = NULL, reserved_email = NULL
         WHERE id IN (SELECT id FROM seat WHERE course_id = $1 AND reservation_id = $2
                      ORDER BY id FOR UPDATE)",
    )
    .bind(course_id)
    .bind(run)
    .execute(db)
    .await
    .map(|done| done.rows_affected())
}

// ---- transfer ------------------------------------------------------------------------------

/// Locks the transferable seats of `source` (available, `credit_value <= max_credit`) in
/// (`expiry_date`, id) order, at most `limit` when given.
pub async fn lock_transferable(
    db: impl PgExecutor<'_>,
    source: Uuid,
    now: DateTime<Utc>,
    max_credit: i32,
    limit: Option<i64>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT id FROM seat WHERE course_id = $1 AND {} AND credit_value <= $3
         ORDER BY expiry_date, id LIMIT $4 FOR UPDATE",
        available("$2")
    ))
    .bind(source)
    .bind(now)
    .bind(max_credit)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Moves the seats to `target`, clearing stale reservation fields; returns them in the order
/// of `ids`.
pub async fn move_to_course(
    db: impl PgExecutor<'_>,
    ids: &[Uuid],
    target: Uuid,
) -> Result<Vec<Seat>, sqlx::Error> {
    sqlx::query_as(&format!(
        "WITH moved AS (
             UPDATE seat SET course_id = $2, reservation_id = NULL, reserved_until = NULL,
                 reserved_student_id = NULL, reserved_email = NULL
             WHERE id = ANY($1)
             RETURNING {COLUMNS})
         SELECT {} FROM moved m JOIN UNNEST($1::uuid[]) WITH ORDINALITY AS o(id, n) ON o.id = m.id
         ORDER BY o.n",
        prefixed("m")
    ))
    .bind(ids)
    .bind(target)
    .fetch_all(db)
    .await
}

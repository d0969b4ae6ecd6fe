//! `course` rows.

use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgExecutor, PgPool, Postgres};
use uuid::Uuid;

/// The unique index that gives a lab at most one course.
pub const UNIQUE_LAB_INDEX: &str = "ix_course_virtual_lab_id";
/// The unique index that gives a template project at most one course.
pub const UNIQUE_TEMPLATE_INDEX: &str = "ix_course_template_project_id";

/// The values of `course.status`.
pub mod status {
    pub const DRAFT: &str = "draft";
    pub const ACTIVE: &str = "active";
    pub const VOIDED: &str = "voided";
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Course {
    pub id: Uuid,
    pub virtual_lab_id: Uuid,
    pub institution_id: Uuid,
    pub template_project_id: Uuid,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
    pub last_drop_date: Option<DateTime<Utc>>,
    /// `draft`, `active` or `voided`.
    pub status: String,
    pub credits_per_seat: i32,
    pub budget_depleted: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub const COLUMNS: &str = "id, virtual_lab_id, institution_id, template_project_id, start_date, \
    end_date, last_drop_date, status, credits_per_seat, budget_depleted, created_at, updated_at";

pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Course>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM course WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// The course row locked `FOR UPDATE` (inside a transaction).
pub async fn find_for_update(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<Course>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM course WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// The course row locked `FOR SHARE` (inside a transaction).
pub async fn find_for_share(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<Course>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM course WHERE id = $1 FOR SHARE"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// The courses of these labs (at most one per lab).
pub async fn find_by_labs(
    db: impl PgExecutor<'_>,
    vlab_ids: &[Uuid],
) -> Result<Vec<Course>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM course WHERE virtual_lab_id = ANY($1)"
    ))
    .bind(vlab_ids)
    .fetch_all(db)
    .await
}

pub async fn find_by_lab(
    db: impl PgExecutor<'_>,
    vlab_id: Uuid,
) -> Result<Option<Course>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM course WHERE virtual_lab_id = $1"
    ))
    .bind(vlab_id)
    .fetch_optional(db)
    .await
}

/// What a new course row holds; it is inserted as `draft` with `budget_depleted = false`.
#[derive(Debug, Clone)]
pub struct NewCourse {
    pub id: Uuid,
    pub virtual_lab_id: Uuid,
    pub institution_id: Uuid,
    pub template_project_id: Uuid,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
    pub last_drop_date: Option<DateTime<Utc>>,
    pub credits_per_seat: i32,
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    course: &NewCourse,
    now: DateTime<Utc>,
) -> Result<Course, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO course (id, virtual_lab_id, institution_id, template_project_id, start_date,
             end_date, last_drop_date, status, credits_per_seat, budget_depleted, created_at,
             updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'draft', $8, false, $9, $9)
         RETURNING {COLUMNS}"
    ))
    .bind(course.id)
    .bind(course.virtual_lab_id)
    .bind(course.institution_id)
    .bind(course.template_project_id)
    .bind(course.start_date)
    .bind(course.end_date)
    .bind(course.last_drop_date)
    .bind(course.credits_per_seat)
    .bind(now)
    .fetch_one(db)
    .await
}

/// Whether the lab already has a course or the project is already some course's template.
pub async fn lab_or_template_taken(
    db: impl PgExecutor<'_>,
    vlab_id: Uuid,
    template_project_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM course
         WHERE virtual_lab_id = $1 OR template_project_id = $2)",
    )
    .bind(vlab_id)
    .bind(template_project_id)
    .fetch_one(db)
    .await
}

/// The course-creation lock of one lab: a Postgres session advisory lock held on its own
/// pooled connection. It serialises concurrent creations for one lab so that only one of them
/// ever funds the template project; no transaction stays open while it is held.
pub struct CreationLock {
    conn: Option<PoolConnection<Postgres>>,
    vlab_id: Uuid,
}

const CREATION_LOCK_KEY: &str = "hashtextextended('vlab-courses:create-course:' || $1::text, 0)";

impl CreationLock {
    /// Waits until no other creation for this lab holds the lock, then takes it.
    pub async fn acquire(db: &PgPool, vlab_id: Uuid) -> Result<Self, sqlx::Error> {
        let mut conn = db.acquire().await?;
        sqlx::query(&format!("SELECT pg_advisory_lock({CREATION_LOCK_KEY})"))
            .bind(vlab_id)
            .execute(&mut *conn)
            .await?;
        Ok(Self {
            conn: Some(conn),
            vlab_id,
        })
    }

    /// The connection holding the lock, for the queries made under it.
    pub fn conn(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        self.conn.as_deref_mut().ok_or(sqlx::Error::PoolClosed)
    }

    /// Releases the lock and returns the connection to the pool (or closes it if the unlock
    /// failed, which also ends the lock).
    pub async fn release(mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let unlocked = sqlx::query(&format!("SELECT pg_advisory_unlock({CREATION_LOCK_KEY})"))
            .bind(self.vlab_id)
            .execute(&mut *conn)
            .await;
        if let Err(err) = unlocked {
            tracing::warn!(
                vlab_id = %self.vlab_id,
                error = %err,
                "could not release the course-creation lock; closing its connection"
            );
            conn.close_on_drop();
        }
    }
}

impl Drop for CreationLock {
    /// Not released (a panic): the connection must not go back to the pool still holding the
    /// lock, so it is closed, which ends the lock.
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.close_on_drop();
        }
    }
}

/// The editable fields of a draft course. For each date, `None` leaves it as is and
/// `Some(None)` clears it; `institution_id: None` leaves it as is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DraftChanges {
    pub start_date: Option<Option<DateTime<Utc>>>,
    pub end_date: Option<Option<DateTime<Utc>>>,
    pub last_drop_date: Option<Option<DateTime<Utc>>>,
    pub institution_id: Option<Uuid>,
}

impl DraftChanges {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// Applies the present keys of `changes` and stamps `updated_at`.
pub async fn update_draft(
    db: impl PgExecutor<'_>,
    id: Uuid,
    changes: &DraftChanges,
    now: DateTime<Utc>,
) -> Result<Course, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE course SET
             start_date = CASE WHEN $2 THEN $3 ELSE start_date END,
             end_date = CASE WHEN $4 THEN $5 ELSE end_date END,
             last_drop_date = CASE WHEN $6 THEN $7 ELSE last_drop_date END,
             institution_id = COALESCE($8, institution_id),
             updated_at = $9
         WHERE id = $1
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(changes.start_date.is_some())
    .bind(changes.start_date.flatten())
    .bind(changes.end_date.is_some())
    .bind(changes.end_date.flatten())
    .bind(changes.last_drop_date.is_some())
    .bind(changes.last_drop_date.flatten())
    .bind(changes.institution_id)
    .bind(now)
    .fetch_one(db)
    .await
}

/// Sets the status (`draft`, `active` or `voided`) and stamps `updated_at`.
pub async fn set_status(
    db: impl PgExecutor<'_>,
    id: Uuid,
    status: &str,
    now: DateTime<Utc>,
) -> Result<Course, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE course SET status = $2, updated_at = $3 WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(status)
    .bind(now)
    .fetch_one(db)
    .await
}

/// A course with its lab's and institution's names (CourseDetailOut).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CourseDetail {
    #[sqlx(flatten)]
    pub course: Course,
    pub virtual_lab_name: String,
    pub institution_name: String,
}

const DETAIL_SELECT: &str = "SELECT c.id, c.virtual_lab_id, c.institution_id,
        c.template_project_id, c.start_date, c.end_date, c.last_drop_date, c.status,
        c.credits_per_seat, c.budget_depleted, c.created_at, c.updated_at,
        v.name AS virtual_lab_name, i.name AS institution_name
    FROM course c
    JOIN virtual_lab v ON v.id = c.virtual_lab_id
    JOIN institution i ON i.id = c.institution_id";

pub async fn find_detail(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<CourseDetail>, sqlx::Error> {
    sqlx::query_as(&format!("{DETAIL_SELECT} WHERE c.id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Courses whose lab name (soft-deleted labs included) contains `vlab_name` literally and
/// case-insensitively; by lab name in byte order, then course id.
pub async fn search_details(
    db: impl PgExecutor<'_>,
    vlab_name: &str,
) -> Result<Vec<CourseDetail>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{DETAIL_SELECT} WHERE v.name ILIKE $1 ESCAPE '\\'
         ORDER BY v.name COLLATE \"C\", c.id"
    ))
    .bind(super::like_pattern(vlab_name))
    .fetch_all(db)
    .await
}

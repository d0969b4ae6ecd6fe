//! What step 5b of the expiry job reads to queue the pre-expiry notices (addendum §9.2): the
//! active courses of undeleted labs inside a notice window, and their due students.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::courses::Course;

/// The lead times of the three notices, in days; `0` leaves that notice out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub drop_deadline_days: i32,
    pub course_end_days: i32,
    pub access_end_days: i32,
}

/// A course with at least one notice due, and what the notices say about it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NoticeCourse {
    #[sqlx(flatten)]
    pub course: Course,
    pub lab_name: String,
    pub lab_owner_id: Uuid,
    pub lab_admin_group_id: String,
    pub drop_deadline_due: bool,
    pub course_end_due: bool,
    /// Claimed, undropped enrolments without a drop record, when the student window is open.
    pub due_students: i64,
    /// Undropped enrolments.
    pub enrolled: i64,
    /// Undropped enrolments nobody has claimed.
    pub unclaimed: i64,
}

/// The enrolments the student notice is for (claimed, whatever their access level).
const DUE_STUDENT: &str = "e.course_id = c.id AND NOT e.is_dropped AND e.claimed_by IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM enrolment_drop d WHERE d.enrolment_id = e.id)";

/// The courses inside a notice window at `now`, in id order. "Within N days": the date is
/// still ahead and at most N days away.
pub async fn due_courses(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    windows: Windows,
) -> Result<Vec<NoticeCourse>, sqlx::Error> {
    let columns = super::courses::COLUMNS
        .split(", ")
        .map(|column| format!("c.{}", column.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    sqlx::query_as(&format!(
        "WITH w AS (
             SELECT {columns}, v.name AS lab_name, v.owner_id AS lab_owner_id,
                    v.admin_group_id AS lab_admin_group_id,
                    ($2 > 0 AND c.last_drop_date > $1
                     AND c.last_drop_date <= $1 + make_interval(days => $2)) AS drop_deadline_due,
                    ($3 > 0 AND c.end_date > $1
                     AND c.end_date <= $1 + make_interval(days => $3)) AS course_end_due,
                    ($4 > 0 AND c.end_date > $1
                     AND c.end_date <= $1 + make_interval(days => $4)) AS access_end_window
             FROM course c JOIN virtual_lab v ON v.id = c.virtual_lab_id
             WHERE c.status = 'active' AND NOT v.deleted),
         counted AS (
             SELECT c.*,
                    CASE WHEN c.access_end_window
                         THEN (SELECT count(*) FROM course_enrolment e WHERE {DUE_STUDENT})
                         ELSE 0 END AS due_students
             FROM w c
             WHERE c.drop_deadline_due OR c.course_end_due OR c.access_end_window)
         SELECT c.*,
                (SELECT count(*) FROM course_enrolment e
                 WHERE e.course_id = c.id AND NOT e.is_dropped) AS enrolled,
                (SELECT count(*) FROM course_enrolment e
                 WHERE e.course_id = c.id AND NOT e.is_dropped AND e.claimed_by IS NULL)
                    AS unclaimed
         FROM counted c
         WHERE c.drop_deadline_due OR c.course_end_due OR c.due_students > 0
         ORDER BY c.id"
    ))
    .bind(now)
    .bind(windows.drop_deadline_days)
    .bind(windows.course_end_days)
    .bind(windows.access_end_days)
    .fetch_all(db)
    .await
}

/// A student the access-end notice goes to.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DueStudent {
    pub enrolment_id: Uuid,
    pub contact_email: String,
    pub project_id: Uuid,
}

/// The course's claimed, undropped enrolments without a drop record, in id order.
pub async fn due_students(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
) -> Result<Vec<DueStudent>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT e.id AS enrolment_id, e.contact_email, e.project_id
         FROM course_enrolment e JOIN course c ON c.id = e.course_id
         WHERE c.id = $1 AND {DUE_STUDENT}
         ORDER BY e.id"
    ))
    .bind(course_id)
    .fetch_all(db)
    .await
}

//! The read of the drop preview (round2.md §4.3 step 1): the requested seats with their
//! enrolment, drop record and any top-up in flight, in one query and without locks.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// One requested seat of the course, with what the drop's pre-checks and D1/D3 would read.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PreviewSeat {
    pub seat_id: Uuid,
    pub previously_dropped: bool,
    pub enrolment_id: Option<Uuid>,
    pub student_id: Option<String>,
    pub project_id: Option<Uuid>,
    pub enrolment_is_dropped: Option<bool>,
    /// `enrolment_drop.state`, when a drop was started.
    pub drop_state: Option<String>,
    pub drop_is_early: Option<bool>,
    pub deplete_in_doubt: Option<bool>,
    pub drop_lease_until: Option<DateTime<Utc>>,
    /// The enrolment's granted top-ups (0 without an enrolment).
    pub extra_credits: i32,
    /// A `granting` top-up of the enrolment has a live lease (the drop would stop).
    pub top_up_in_progress: bool,
}

/// What the preview reads of a seat; `now` is the bind parameter holding the instant.
fn columns(now: &str) -> String {
    format!(
        "s.id AS seat_id, s.previously_dropped, e.id AS enrolment_id, e.student_id,
         e.project_id, e.is_dropped AS enrolment_is_dropped, d.state AS drop_state,
         d.is_early AS drop_is_early, d.deplete_in_doubt, d.lease_until AS drop_lease_until,
         COALESCE(e.extra_credits, 0) AS extra_credits,
         EXISTS (SELECT 1 FROM credit_top_up t
                 WHERE t.enrolment_id = e.id AND t.state = 'granting'
                   AND t.lease_until > {now}) AS top_up_in_progress"
    )
}

/// The seats among `seat_ids` that belong to `course_id`, as they are at `now`.
pub async fn seats(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
    seat_ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<Vec<PreviewSeat>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {}
             FROM seat s
             LEFT JOIN course_enrolment e ON e.id = s.enrolment_id
             LEFT JOIN enrolment_drop d ON d.enrolment_id = e.id
             WHERE s.course_id = $1 AND s.id = ANY($2)",
        columns("$3")
    ))
    .bind(course_id)
    .bind(seat_ids)
    .bind(now)
    .fetch_all(db)
    .await
}

/// Every seat of the course that holds an undropped enrolment, as it is at `now` (the
/// pre-expiry notice counts what a drop would recover over all of them).
pub async fn undropped_seats(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Vec<PreviewSeat>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {}
         FROM course_enrolment e
         JOIN seat s ON s.enrolment_id = e.id
         LEFT JOIN enrolment_drop d ON d.enrolment_id = e.id
         WHERE e.course_id = $1 AND NOT e.is_dropped",
        columns("$2")
    ))
    .bind(course_id)
    .bind(now)
    .fetch_all(db)
    .await
}

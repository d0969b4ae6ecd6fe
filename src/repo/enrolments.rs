//! `course_enrolment` rows (and the student-project reads that belong to assigning one).

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Enrolment {
    pub id: Uuid,
    pub course_id: Uuid,
    pub project_id: Uuid,
    pub contact_email: String,
    pub student_id: String,
    pub claimed_by: Option<Uuid>,
    pub is_dropped: bool,
    pub activated_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// `none`, `waitlisted` or `member`: what Keycloak is confirmed to hold for `claimed_by`.
    pub access_level: String,
    /// When the current claim was made; null for claims made before this was recorded.
    pub claimed_at: Option<DateTime<Utc>>,
    /// The claimer's token e-mail at claim time.
    pub claimed_by_email: Option<String>,
    /// The granted credit top-ups (0 for enrolments from before them).
    pub extra_credits: i32,
}

pub const COLUMNS: &str = "id, course_id, project_id, contact_email, student_id, claimed_by, \
    is_dropped, activated_at, created_at, access_level, claimed_at, claimed_by_email, \
    extra_credits";

/// The index that allows one claimed, non-dropped enrolment per user and course.
pub const UNIQUE_CLAIMED_BY_INDEX: &str = "uq_enrolment_course_claimed_by";

/// Enrolments of the course (dropped ones included) whose student id is one of
/// `student_ids` or whose e-mail, lower-cased, is one of `lower_emails`:
/// `(student_id, contact_email)`.
pub async fn duplicates(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
    student_ids: &[String],
    lower_emails: &[String],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT student_id, contact_email FROM course_enrolment
         WHERE course_id = $1 AND (student_id = ANY($2) OR lower(contact_email) = ANY($3))",
    )
    .bind(course_id)
    .bind(student_ids)
    .bind(lower_emails)
    .fetch_all(db)
    .await
}

/// An enrolment of the course that shares a student id or an e-mail with an imported row,
/// with whether its drop has started and the seat it holds.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MatchingEnrolment {
    pub id: Uuid,
    pub student_id: String,
    pub contact_email: String,
    pub project_id: Uuid,
    /// `is_dropped`, or an `enrolment_drop` row exists.
    pub dropped: bool,
    pub seat_id: Option<Uuid>,
}

/// The enrolments of the course (dropped ones included) whose student id is one of
/// `student_ids` or whose e-mail, lower-cased, is one of `lower_emails`.
pub async fn matching(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
    student_ids: &[String],
    lower_emails: &[String],
) -> Result<Vec<MatchingEnrolment>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.id, e.student_id, e.contact_email, e.project_id,
                e.is_dropped OR d.enrolment_id IS NOT NULL AS dropped,
                (SELECT s.id FROM seat s WHERE s.enrolment_id = e.id LIMIT 1) AS seat_id
         FROM course_enrolment e
         LEFT JOIN enrolment_drop d ON d.enrolment_id = e.id
         WHERE e.course_id = $1 AND (e.student_id = ANY($2) OR lower(e.contact_email) = ANY($3))",
    )
    .bind(course_id)
    .bind(student_ids)
    .bind(lower_emails)
    .fetch_all(db)
    .await
}

/// An undropped enrolment holding its seat, as a resumed request reports it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HeldEnrolment {
    pub id: Uuid,
    pub student_id: String,
    pub contact_email: String,
    pub project_id: Uuid,
    pub seat_id: Uuid,
    pub created_at: DateTime<Utc>,
    /// Whether a claim e-mail of the enrolment has been sent.
    pub email_sent: bool,
}

/// The course's enrolments that are not dropped (and have no drop row) whose student id is
/// `student_ids[i]` and whose e-mail, lower-cased, is `lower_emails[i]`, for some `i`.
pub async fn held_by(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
    student_ids: &[String],
    lower_emails: &[String],
) -> Result<Vec<HeldEnrolment>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.id, e.student_id, e.contact_email, e.project_id, s.id AS seat_id, e.created_at,
                EXISTS (SELECT 1 FROM email_outbox o
                        WHERE o.enrolment_id = e.id AND o.status = 'sent') AS email_sent
         FROM course_enrolment e
         JOIN seat s ON s.enrolment_id = e.id
         WHERE e.course_id = $1 AND NOT e.is_dropped
           AND NOT EXISTS (SELECT 1 FROM enrolment_drop d WHERE d.enrolment_id = e.id)
           AND (e.student_id, lower(e.contact_email))
               IN (SELECT * FROM UNNEST($2::text[], $3::text[]))",
    )
    .bind(course_id)
    .bind(student_ids)
    .bind(lower_emails)
    .fetch_all(db)
    .await
}

/// What a new enrolment row holds.
#[derive(Debug, Clone)]
pub struct NewEnrolment {
    pub id: Uuid,
    pub course_id: Uuid,
    pub project_id: Uuid,
    pub contact_email: String,
    pub student_id: String,
    /// The claim secret when it is not the id (`CLAIM_TOKEN_FOR_NEW_ENROLMENTS=random`).
    pub claim_token: Option<Uuid>,
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    enrolment: &NewEnrolment,
    now: DateTime<Utc>,
) -> Result<Enrolment, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO course_enrolment (id, course_id, project_id, contact_email, student_id,
             created_at, claim_token)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING {COLUMNS}"
    ))
    .bind(enrolment.id)
    .bind(enrolment.course_id)
    .bind(enrolment.project_id)
    .bind(&enrolment.contact_email)
    .bind(&enrolment.student_id)
    .bind(now)
    .bind(enrolment.claim_token)
    .fetch_one(db)
    .await
}

pub async fn find_many(
    db: impl PgExecutor<'_>,
    ids: &[Uuid],
) -> Result<Vec<Enrolment>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM course_enrolment WHERE id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(db)
    .await
}

/// Whether a drop of the enrolment has started (an `enrolment_drop` row exists).
pub async fn has_drop(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM enrolment_drop WHERE enrolment_id = $1)")
        .bind(id)
        .fetch_one(db)
        .await
}

/// Whether another non-dropped enrolment of the course is claimed by `user`.
pub async fn claimed_elsewhere(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
    user: Uuid,
    except: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM course_enrolment
         WHERE course_id = $1 AND claimed_by = $2 AND NOT is_dropped AND id <> $3)",
    )
    .bind(course_id)
    .bind(user)
    .bind(except)
    .fetch_one(db)
    .await
}

/// Records the claim (who, with which token e-mail, when) and takes the access lease `lease`
/// for the claim's access sync (W.5.4), with a fresh attempt count.
pub async fn set_claimed_by(
    db: impl PgExecutor<'_>,
    id: Uuid,
    user: Uuid,
    user_email: &str,
    lease: Uuid,
    now: DateTime<Utc>,
) -> Result<Enrolment, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE course_enrolment
         SET claimed_by = $2, claimed_by_email = $5, claimed_at = $6,
             access_lease_id = $3, access_lease_until = $4, access_attempts = 0,
             access_next_attempt_at = NULL, access_last_error = NULL
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(user)
    .bind(lease)
    .bind(now + super::access::LEASE)
    .bind(user_email)
    .bind(now)
    .fetch_one(db)
    .await
}

/// The course part of the claim response (api.md §4.5.8).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimCourse {
    pub id: Uuid,
    pub virtual_lab_id: Uuid,
    pub virtual_lab_name: String,
    pub institution_name: String,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
}

pub async fn claim_course(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
) -> Result<Option<ClaimCourse>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.id, c.virtual_lab_id, v.name AS virtual_lab_name, i.name AS institution_name,
                c.start_date, c.end_date
         FROM course c
         JOIN virtual_lab v ON v.id = c.virtual_lab_id
         JOIN institution i ON i.id = c.institution_id
         WHERE c.id = $1",
    )
    .bind(course_id)
    .fetch_optional(db)
    .await
}

/// An enrolment the caller could activate, with what activation checks (rules.md §4.13).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ActivationCandidate {
    pub id: Uuid,
    pub project_id: Uuid,
    pub course_status: String,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
    /// `is_dropped`, or a drop has started (only the single activation selects such rows).
    pub dropped: bool,
    pub activated_at: Option<DateTime<Utc>>,
}

/// The caller's claimed, not yet activated, undropped enrolments with no drop started, by
/// `created_at`, then id. No locks.
pub async fn activation_candidates(
    db: impl PgExecutor<'_>,
    user: Uuid,
) -> Result<Vec<ActivationCandidate>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.id, e.project_id, c.status AS course_status, c.start_date, c.end_date,
                false AS dropped, e.activated_at
         FROM course_enrolment e
         JOIN course c ON c.id = e.course_id
         WHERE e.claimed_by = $1 AND e.activated_at IS NULL AND NOT e.is_dropped
           AND NOT EXISTS (SELECT 1 FROM enrolment_drop d WHERE d.enrolment_id = e.id)
         ORDER BY e.created_at, e.id",
    )
    .bind(user)
    .fetch_all(db)
    .await
}

/// The caller's enrolment of the course for the single activation (W.3.1): the live one, or
/// else the most recently created. No locks.
pub async fn activation_target(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
    user: Uuid,
) -> Result<Option<ActivationCandidate>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.id, e.project_id, c.status AS course_status, c.start_date, c.end_date,
                (e.is_dropped OR EXISTS (SELECT 1 FROM enrolment_drop d
                                         WHERE d.enrolment_id = e.id)) AS dropped,
                e.activated_at
         FROM course_enrolment e
         JOIN course c ON c.id = e.course_id
         WHERE e.course_id = $1 AND e.claimed_by = $2
         ORDER BY dropped ASC, e.created_at DESC, e.id DESC
         LIMIT 1",
    )
    .bind(course_id)
    .bind(user)
    .fetch_optional(db)
    .await
}

/// An enrolment with the state of its drop, if one has started.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EnrolmentWithDrop {
    #[sqlx(flatten)]
    pub enrolment: Enrolment,
    /// `depleting`, `revoking`, `done`, or `None` when no drop has started.
    pub drop_state: Option<String>,
}

/// Every enrolment of the course, dropped ones included, by `created_at`, then id.
pub async fn list_by_course(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
) -> Result<Vec<EnrolmentWithDrop>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.id, e.course_id, e.project_id, e.contact_email, e.student_id, e.claimed_by,
                e.is_dropped, e.activated_at, e.created_at, e.access_level, e.claimed_at,
                e.claimed_by_email, e.extra_credits, d.state AS drop_state
         FROM course_enrolment e
         LEFT JOIN enrolment_drop d ON d.enrolment_id = e.id
         WHERE e.course_id = $1
         ORDER BY e.created_at, e.id",
    )
    .bind(course_id)
    .fetch_all(db)
    .await
}

/// An enrolment of a course with what its credit summary needs (the audit timeline).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct EnrolmentCredits {
    #[sqlx(flatten)]
    pub enrolment: Enrolment,
    /// `depleting`, `revoking`, `done`, or `None` when no drop has started.
    pub drop_state: Option<String>,
    /// What the drop's deplete moved, once settled.
    pub depleted_amount: Option<rust_decimal::Decimal>,
    pub credits_per_seat: i32,
    /// The sum of the enrolment's top-ups whose grant outcome is unknown.
    pub top_ups_in_doubt: i64,
}

/// The enrolment `enrolment_id` if it belongs to `course_id`.
pub async fn find_with_credits(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
    enrolment_id: Uuid,
) -> Result<Option<EnrolmentCredits>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.id, e.course_id, e.project_id, e.contact_email, e.student_id, e.claimed_by,
                e.is_dropped, e.activated_at, e.created_at, e.access_level, e.claimed_at,
                e.claimed_by_email, e.extra_credits, d.state AS drop_state,
                CASE WHEN d.state <> 'depleting' THEN d.depleted_amount END AS depleted_amount,
                c.credits_per_seat,
                (SELECT COALESCE(sum(t.amount), 0)::bigint FROM credit_top_up t
                 WHERE t.enrolment_id = e.id AND t.state = 'in_doubt') AS top_ups_in_doubt
         FROM course_enrolment e
         JOIN course c ON c.id = e.course_id
         LEFT JOIN enrolment_drop d ON d.enrolment_id = e.id
         WHERE e.id = $1 AND e.course_id = $2",
    )
    .bind(enrolment_id)
    .bind(course_id)
    .fetch_optional(db)
    .await
}

/// The enrolment `id` of the course, locked `FOR UPDATE`.
pub async fn find_in_course_for_update(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
    id: Uuid,
) -> Result<Option<Enrolment>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM course_enrolment WHERE id = $1 AND course_id = $2 FOR UPDATE"
    ))
    .bind(id)
    .bind(course_id)
    .fetch_optional(db)
    .await
}

/// The listed enrolments of the course that exist, locked `FOR UPDATE` in id order.
pub async fn lock_in_course(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<Enrolment>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM course_enrolment WHERE course_id = $1 AND id = ANY($2)
         ORDER BY id FOR UPDATE"
    ))
    .bind(course_id)
    .bind(ids)
    .fetch_all(db)
    .await
}

/// The first `limit` unclaimed enrolments of the course that are not dropped and have no drop
/// row, by `created_at`, then id; locked `FOR UPDATE` in id order, returned in id order.
pub async fn lock_unclaimed(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
    limit: i64,
) -> Result<Vec<Enrolment>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM course_enrolment
         WHERE id IN (
             SELECT e.id FROM course_enrolment e
             WHERE e.course_id = $1 AND e.claimed_by IS NULL AND NOT e.is_dropped
               AND NOT EXISTS (SELECT 1 FROM enrolment_drop d WHERE d.enrolment_id = e.id)
             ORDER BY e.created_at, e.id
             LIMIT $2)
         ORDER BY id FOR UPDATE"
    ))
    .bind(course_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Those of `ids` that have an `enrolment_drop` row.
pub async fn with_drop(db: impl PgExecutor<'_>, ids: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT enrolment_id FROM enrolment_drop WHERE enrolment_id = ANY($1)")
        .bind(ids)
        .fetch_all(db)
        .await
}

/// The enrolment whose current claim secret is `secret` (its token, or its id while it has
/// none), locked `FOR UPDATE`.
pub async fn find_by_secret_for_update(
    db: impl PgExecutor<'_>,
    secret: Uuid,
) -> Result<Option<Enrolment>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM course_enrolment
         WHERE claim_token = $1 OR (claim_token IS NULL AND id = $1) FOR UPDATE"
    ))
    .bind(secret)
    .fetch_optional(db)
    .await
}

/// Whether another enrolment of the course (dropped ones included) or a live reservation of
/// one of its seats has `email`, case-insensitively.
pub async fn email_in_use(
    db: impl PgExecutor<'_>,
    course_id: Uuid,
    except: Uuid,
    email: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM course_enrolment
                        WHERE course_id = $1 AND id <> $2 AND lower(contact_email) = lower($3))
             OR EXISTS (SELECT 1 FROM seat
                        WHERE course_id = $1 AND reserved_until > $4
                          AND lower(reserved_email) = lower($3))",
    )
    .bind(course_id)
    .bind(except)
    .bind(email)
    .bind(now)
    .fetch_one(db)
    .await
}

pub async fn set_contact_email(
    db: impl PgExecutor<'_>,
    id: Uuid,
    email: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE course_enrolment SET contact_email = $2 WHERE id = $1")
        .bind(id)
        .bind(email)
        .execute(db)
        .await
        .map(drop)
}

/// Takes the claim away (addendum §3.4.2): the claimer, the claim's times and the confirmed
/// access are cleared. The access lease is left alone, so that an in-flight sync of the
/// previous claimer sees the unclaim in its S3.
pub async fn unclaim(db: impl PgExecutor<'_>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE course_enrolment
         SET claimed_by = NULL, claimed_at = NULL, claimed_by_email = NULL, activated_at = NULL,
             access_level = 'none', access_attempts = 0, access_next_attempt_at = NULL,
             access_last_error = NULL
         WHERE id = $1",
    )
    .bind(id)
    .execute(db)
    .await
    .map(drop)
}

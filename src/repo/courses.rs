//! `course` rows.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

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

//! `institution` rows.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::like_pattern;

/// The name of the unique index on `institution.name`.
pub const UNIQUE_NAME_INDEX: &str = "ix_institution_name";

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Institution {
    pub id: Uuid,
    pub name: String,
    pub contact_email: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, name, contact_email, created_at, updated_at";

/// Inserts the institution unless one with exactly this name exists; returns the new row, or
/// `None` when the name was taken.
pub async fn insert_if_absent(
    db: impl PgExecutor<'_>,
    id: Uuid,
    name: &str,
    contact_email: &str,
    now: DateTime<Utc>,
) -> Result<Option<Institution>, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO institution (id, name, contact_email, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $4)
         ON CONFLICT (name) DO NOTHING
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(name)
    .bind(contact_email)
    .bind(now)
    .fetch_optional(db)
    .await
}

pub async fn find_by_name(
    db: impl PgExecutor<'_>,
    name: &str,
) -> Result<Option<Institution>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM institution WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(db)
    .await
}

pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Institution>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM institution WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn find_for_update(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<Institution>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM institution WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

pub async fn exists(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM institution WHERE id = $1)")
        .bind(id)
        .fetch_one(db)
        .await
}

pub async fn update(
    db: impl PgExecutor<'_>,
    id: Uuid,
    name: Option<&str>,
    contact_email: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Institution, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE institution
         SET name = COALESCE($2, name), contact_email = COALESCE($3, contact_email), updated_at = $4
         WHERE id = $1
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(name)
    .bind(contact_email)
    .bind(now)
    .fetch_one(db)
    .await
}

/// Institutions whose name contains `query` (case-insensitive, literal), or all of them; by
/// name in byte order, then id.
pub async fn search(
    db: impl PgExecutor<'_>,
    query: Option<&str>,
) -> Result<Vec<Institution>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM institution
         WHERE $1::text IS NULL OR name ILIKE $1 ESCAPE '\\'
         ORDER BY name COLLATE \"C\", id"
    ))
    .bind(query.map(like_pattern))
    .fetch_all(db)
    .await
}

//! `project` rows.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::like_pattern;

/// The name of the unique index on `(virtual_lab_id, name)` among non-deleted projects.
pub const UNIQUE_NAME_INDEX: &str = "unique_project_name_for_non_deleted";

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Project {
    pub id: Uuid,
    pub virtual_lab_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub owner_id: Uuid,
    pub admin_group_id: String,
    pub member_group_id: String,
    pub deleted: bool,
    pub deleted_at: Option<DateTime<Utc>>,
    pub deleted_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub const COLUMNS: &str = "id, virtual_lab_id, name, description, owner_id, admin_group_id, \
    member_group_id, deleted, deleted_at, deleted_by, created_at, updated_at";

/// What a new project row holds besides its timestamps.
#[derive(Debug, Clone)]
pub struct NewProject {
    pub id: Uuid,
    pub virtual_lab_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub owner_id: Uuid,
    pub admin_group_id: String,
    pub member_group_id: String,
    /// Only on student projects of a course that has not started (W.5.2).
    pub waitlisted_group_id: Option<String>,
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    project: &NewProject,
    now: DateTime<Utc>,
) -> Result<Project, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO project (id, virtual_lab_id, name, description, owner_id, admin_group_id,
             member_group_id, waitlisted_group_id, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $9, $8, $8)
         RETURNING {COLUMNS}"
    ))
    .bind(project.id)
    .bind(project.virtual_lab_id)
    .bind(&project.name)
    .bind(&project.description)
    .bind(project.owner_id)
    .bind(&project.admin_group_id)
    .bind(&project.member_group_id)
    .bind(now)
    .bind(&project.waitlisted_group_id)
    .fetch_one(db)
    .await
}

/// The project of this lab unless it is missing or soft-deleted.
pub async fn find_active_in_lab(
    db: impl PgExecutor<'_>,
    vlab_id: Uuid,
    id: Uuid,
) -> Result<Option<Project>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM project WHERE id = $1 AND virtual_lab_id = $2 AND NOT deleted"
    ))
    .bind(id)
    .bind(vlab_id)
    .fetch_optional(db)
    .await
}

/// Whether any project of the lab, deleted ones included, has this name case-insensitively.
pub async fn name_used_in_lab(
    db: impl PgExecutor<'_>,
    vlab_id: Uuid,
    name: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM project WHERE virtual_lab_id = $1 AND lower(name) = lower($2))",
    )
    .bind(vlab_id)
    .bind(name)
    .fetch_one(db)
    .await
}

/// How many non-deleted projects `owner` owns across all labs.
pub async fn count_owned(db: impl PgExecutor<'_>, owner: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM project WHERE owner_id = $1 AND NOT deleted")
        .bind(owner)
        .fetch_one(db)
        .await
}

/// The admin group ids of every non-deleted project of the lab, by project id.
pub async fn active_admin_groups(
    db: impl PgExecutor<'_>,
    vlab_id: Uuid,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT admin_group_id FROM project WHERE virtual_lab_id = $1 AND NOT deleted ORDER BY id",
    )
    .bind(vlab_id)
    .fetch_all(db)
    .await
}

/// Which projects `GET /virtual-labs/{id}/projects` returns (api.md §4.2.2).
#[derive(Debug, Clone)]
pub struct ProjectListing {
    pub vlab_id: Uuid,
    /// `None`: every project of the lab (a lab admin); otherwise only these.
    pub only: Option<Vec<Uuid>>,
    /// Case-insensitive literal substring of the name or description.
    pub query: Option<String>,
    pub order: super::ListOrder,
    pub descending: bool,
    pub page: i64,
    pub page_size: i64,
}

const LISTING_WHERE: &str = "virtual_lab_id = $1 AND NOT deleted
    AND ($2::uuid[] IS NULL OR id = ANY($2))
    AND ($3::text IS NULL OR name ILIKE $3 ESCAPE '\\' OR description ILIKE $3 ESCAPE '\\')";

/// One page of the listing and the total number of matching projects.
pub async fn list(
    db: &sqlx::PgPool,
    listing: &ProjectListing,
) -> Result<(Vec<Project>, i64), sqlx::Error> {
    let pattern = listing.query.as_deref().map(like_pattern);
    let direction = if listing.descending { "DESC" } else { "ASC" };
    let rows: Vec<Project> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM project
         WHERE {LISTING_WHERE}
         ORDER BY {} {direction}, id ASC
         LIMIT $4 OFFSET $5",
        listing.order.column()
    ))
    .bind(listing.vlab_id)
    .bind(&listing.only)
    .bind(&pattern)
    .bind(listing.page_size)
    .bind((listing.page - 1).saturating_mul(listing.page_size))
    .fetch_all(db)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM project WHERE {LISTING_WHERE}"
    ))
    .bind(listing.vlab_id)
    .bind(&listing.only)
    .bind(&pattern)
    .fetch_one(db)
    .await?;
    Ok((rows, total))
}

/// Which of `names` are already taken by a non-deleted project of the lab (exact,
/// case-sensitive, like `unique_project_name_for_non_deleted`).
pub async fn taken_names(
    db: impl PgExecutor<'_>,
    vlab_id: Uuid,
    names: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT name FROM project WHERE virtual_lab_id = $1 AND name = ANY($2) AND NOT deleted",
    )
    .bind(vlab_id)
    .bind(names)
    .fetch_all(db)
    .await
}

//! `virtual_lab` rows.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::like_pattern;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct VirtualLab {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub name: String,
    pub description: String,
    pub reference_email: Option<String>,
    pub email_verified: bool,
    pub entity: String,
    /// `cell_a` or `cell_b`.
    pub compute_cell: String,
    pub admin_group_id: String,
    pub member_group_id: String,
    pub is_course: bool,
    pub deleted: bool,
    pub deleted_at: Option<DateTime<Utc>>,
    pub deleted_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A lab with the number of its non-deleted projects, as listings show it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CountedLab {
    #[sqlx(flatten)]
    pub lab: VirtualLab,
    pub projects_count: i64,
}

pub const COLUMNS: &str = "id, owner_id, name, description, reference_email, email_verified, \
    entity, compute_cell, admin_group_id, member_group_id, is_course, deleted, deleted_at, \
    deleted_by, created_at, updated_at";

/// The name of the unique index on `lower(name)` among non-deleted labs.
pub const UNIQUE_NAME_INDEX: &str = "unique_lab_name_for_non_deleted";

/// What a new lab row holds besides its timestamps.
#[derive(Debug, Clone)]
pub struct NewLab {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub name: String,
    pub description: String,
    pub reference_email: Option<String>,
    pub entity: String,
    pub compute_cell: String,
    pub admin_group_id: String,
    pub member_group_id: String,
    pub is_course: bool,
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    lab: &NewLab,
    now: DateTime<Utc>,
) -> Result<VirtualLab, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO virtual_lab (id, owner_id, name, description, reference_email, entity,
             compute_cell, admin_group_id, member_group_id, is_course, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)
         RETURNING {COLUMNS}"
    ))
    .bind(lab.id)
    .bind(lab.owner_id)
    .bind(&lab.name)
    .bind(&lab.description)
    .bind(&lab.reference_email)
    .bind(&lab.entity)
    .bind(&lab.compute_cell)
    .bind(&lab.admin_group_id)
    .bind(&lab.member_group_id)
    .bind(lab.is_course)
    .bind(now)
    .fetch_one(db)
    .await
}

/// The lab unless it is missing or soft-deleted.
pub async fn find_active(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<VirtualLab>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM virtual_lab WHERE id = $1 AND NOT deleted"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// The non-deleted lab locked `FOR UPDATE` (inside a transaction).
pub async fn find_active_for_update(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<VirtualLab>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM virtual_lab WHERE id = $1 AND NOT deleted FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Whether another non-deleted lab has this name, case-insensitively.
pub async fn active_name_taken(
    db: impl PgExecutor<'_>,
    name: &str,
    except: Option<Uuid>,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM virtual_lab
         WHERE lower(name) = lower($1) AND NOT deleted AND ($2::uuid IS NULL OR id <> $2))",
    )
    .bind(name)
    .bind(except)
    .fetch_one(db)
    .await
}

/// Whether `owner` already owns a non-deleted regular (`is_course = false`) lab.
pub async fn owns_regular_lab(db: impl PgExecutor<'_>, owner: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM virtual_lab
         WHERE owner_id = $1 AND NOT deleted AND NOT is_course)",
    )
    .bind(owner)
    .fetch_one(db)
    .await
}

/// The number of non-deleted projects of the lab.
pub async fn projects_count(db: impl PgExecutor<'_>, id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM project WHERE virtual_lab_id = $1 AND NOT deleted")
        .bind(id)
        .fetch_one(db)
        .await
}

/// Which labs `GET /virtual-labs` returns (api.md §4.1.2).
#[derive(Debug, Clone)]
pub struct LabListing {
    pub caller: Uuid,
    /// Labs named in the caller's groups (admin only, or admin and member).
    pub group_lab_ids: Vec<Uuid>,
    pub scope: Scope,
    /// Case-insensitive literal substring of the name.
    pub query: Option<String>,
    pub order: super::ListOrder,
    pub descending: bool,
    pub page: i64,
    pub page_size: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    All,
    /// Owned by the caller.
    Own,
    /// Not owned by the caller.
    External,
}

const LISTING_WHERE: &str = "NOT deleted
    AND (id = ANY($1) OR owner_id = $2)
    AND ($3 = 'all' OR ($3 = 'self' AND owner_id = $2) OR ($3 = 'external' AND owner_id <> $2))
    AND ($4::text IS NULL OR name ILIKE $4 ESCAPE '\\')";

fn scope_text(scope: Scope) -> &'static str {
    match scope {
        Scope::All => "all",
        Scope::Own => "self",
        Scope::External => "external",
    }
}

/// One page of the listing and the total number of matching labs.
pub async fn list(
    db: &sqlx::PgPool,
    listing: &LabListing,
) -> Result<(Vec<CountedLab>, i64), sqlx::Error> {
    let pattern = listing.query.as_deref().map(like_pattern);
    let direction = if listing.descending { "DESC" } else { "ASC" };
    let rows: Vec<CountedLab> = sqlx::query_as(&format!(
        "SELECT {COLUMNS},
             (SELECT count(*) FROM project p WHERE p.virtual_lab_id = virtual_lab.id AND NOT p.deleted)
                 AS projects_count
         FROM virtual_lab
         WHERE {LISTING_WHERE}
         ORDER BY {} {direction}, id ASC
         LIMIT $5 OFFSET $6",
        listing.order.column()
    ))
    .bind(&listing.group_lab_ids)
    .bind(listing.caller)
    .bind(scope_text(listing.scope))
    .bind(&pattern)
    .bind(listing.page_size)
    .bind((listing.page - 1).saturating_mul(listing.page_size))
    .fetch_all(db)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM virtual_lab WHERE {LISTING_WHERE}"
    ))
    .bind(&listing.group_lab_ids)
    .bind(listing.caller)
    .bind(scope_text(listing.scope))
    .bind(&pattern)
    .fetch_one(db)
    .await?;
    Ok((rows, total))
}

/// The keys of a lab PATCH; `None` leaves a column as it is.
#[derive(Debug, Clone, Default)]
pub struct LabChanges {
    pub name: Option<String>,
    pub description: Option<String>,
    /// `Some(None)` clears the reference e-mail.
    pub reference_email: Option<Option<String>>,
    pub entity: Option<String>,
}

pub async fn update(
    db: impl PgExecutor<'_>,
    id: Uuid,
    changes: &LabChanges,
    now: DateTime<Utc>,
) -> Result<VirtualLab, sqlx::Error> {
    let (set_email, email) = match &changes.reference_email {
        Some(value) => (true, value.clone()),
        None => (false, None),
    };
    sqlx::query_as(&format!(
        "UPDATE virtual_lab
         SET name = COALESCE($2, name),
             description = COALESCE($3, description),
             reference_email = CASE WHEN $4 THEN $5 ELSE reference_email END,
             entity = COALESCE($6, entity),
             updated_at = $7
         WHERE id = $1
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(&changes.name)
    .bind(&changes.description)
    .bind(set_email)
    .bind(email)
    .bind(&changes.entity)
    .bind(now)
    .fetch_one(db)
    .await
}

/// Soft-deletes the lab and every non-deleted project of it (call inside a transaction).
pub async fn soft_delete(
    db: &mut sqlx::PgConnection,
    id: Uuid,
    by: Uuid,
    now: DateTime<Utc>,
) -> Result<VirtualLab, sqlx::Error> {
    sqlx::query(
        "UPDATE project SET deleted = true, deleted_at = $2, deleted_by = $3, updated_at = $2
         WHERE virtual_lab_id = $1 AND NOT deleted",
    )
    .bind(id)
    .bind(now)
    .bind(by)
    .execute(&mut *db)
    .await?;
    sqlx::query_as(&format!(
        "UPDATE virtual_lab SET deleted = true, deleted_at = $2, deleted_by = $3, updated_at = $2
         WHERE id = $1
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(now)
    .bind(by)
    .fetch_one(&mut *db)
    .await
}

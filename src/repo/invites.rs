//! `virtual_lab_invite` rows.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Invite {
    pub id: Uuid,
    pub virtual_lab_id: Uuid,
    pub inviter_id: Uuid,
    pub inviter_name: Option<String>,
    pub user_email: String,
    /// `admin` or `member`.
    pub role: String,
    pub user_id: Option<Uuid>,
    pub accepted: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub const COLUMNS: &str = "id, virtual_lab_id, inviter_id, inviter_name, user_email, role, \
    user_id, accepted, created_at, updated_at";

/// Who sends an invite, as stored on the row.
#[derive(Debug, Clone)]
pub struct Inviter {
    pub id: Uuid,
    pub name: String,
}

pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Invite>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM virtual_lab_invite WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// The invite of this lab, e-mail (case-insensitive) and role, locked `FOR UPDATE`.
pub async fn find_by_key_for_update(
    db: impl PgExecutor<'_>,
    vlab_id: Uuid,
    email: &str,
    role: &str,
) -> Result<Option<Invite>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM virtual_lab_invite
         WHERE virtual_lab_id = $1 AND lower(user_email) = lower($2) AND role = $3
         FOR UPDATE"
    ))
    .bind(vlab_id)
    .bind(email)
    .bind(role)
    .fetch_optional(db)
    .await
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    id: Uuid,
    vlab_id: Uuid,
    email: &str,
    role: &str,
    inviter: &Inviter,
    now: DateTime<Utc>,
) -> Result<Invite, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO virtual_lab_invite (id, virtual_lab_id, inviter_id, inviter_name, user_email,
             role, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(vlab_id)
    .bind(inviter.id)
    .bind(&inviter.name)
    .bind(email)
    .bind(role)
    .bind(now)
    .fetch_one(db)
    .await
}

/// Re-invite: the row is reopened for the new inviter (an accepted invite too).
pub async fn reopen(
    db: impl PgExecutor<'_>,
    id: Uuid,
    inviter: &Inviter,
    now: DateTime<Utc>,
) -> Result<Invite, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE virtual_lab_invite
         SET user_id = NULL, accepted = false, inviter_id = $2, inviter_name = $3, updated_at = $4
         WHERE id = $1
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(inviter.id)
    .bind(&inviter.name)
    .bind(now)
    .fetch_one(db)
    .await
}

/// Puts back the values a reopen replaced (after the e-mail could not be sent).
pub async fn restore(db: impl PgExecutor<'_>, old: &Invite) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE virtual_lab_invite
         SET user_id = $2, accepted = $3, inviter_id = $4, inviter_name = $5, updated_at = $6
         WHERE id = $1",
    )
    .bind(old.id)
    .bind(old.user_id)
    .bind(old.accepted)
    .bind(old.inviter_id)
    .bind(&old.inviter_name)
    .bind(old.updated_at)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn delete(db: impl PgExecutor<'_>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM virtual_lab_invite WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Marks the invite accepted by `user` unless it already is; `false` when no row changed.
pub async fn mark_accepted(
    db: impl PgExecutor<'_>,
    id: Uuid,
    user: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE virtual_lab_invite SET accepted = true, user_id = $2, updated_at = $3
         WHERE id = $1 AND NOT accepted",
    )
    .bind(id)
    .bind(user)
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

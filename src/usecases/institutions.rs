//! Institutions (api.md §4.4, rules.md §4.14). No external calls.

use chrono::Utc;
use uuid::Uuid;

use super::UseCaseError;
use super::error::{Answer, ErrorCode, StatusCode};
use crate::repo::{self, institutions::Institution};
use crate::usecases::Services;

#[derive(Debug, thiserror::Error)]
pub enum InstitutionError {
    #[error("Institution not found")]
    NotFound,
    #[error("No fields to update")]
    NoFieldsToUpdate,
    #[error("Another institution with the same name already exists")]
    NameTaken,
}

impl InstitutionError {
    pub fn answer(&self) -> Answer {
        use ErrorCode as C;
        use StatusCode as S;
        match self {
            Self::NotFound => Answer::new(S::NOT_FOUND, C::EntityNotFound),
            Self::NoFieldsToUpdate => Answer::new(S::BAD_REQUEST, C::InvalidRequest),
            Self::NameTaken => Answer::new(S::CONFLICT, C::EntityAlreadyExists),
        }
    }
}

/// Get-or-create by exact name: an existing institution is returned unchanged.
pub async fn create(
    services: &Services,
    name: &str,
    contact_email: &str,
) -> Result<Institution, UseCaseError> {
    let now = Utc::now();
    let db = &services.db;
    if let Some(created) =
        repo::institutions::insert_if_absent(db, Uuid::new_v4(), name, contact_email, now).await?
    {
        tracing::info!(institution_id = %created.id, "institution created");
        return Ok(created);
    }
    repo::institutions::find_by_name(db, name)
        .await?
        .ok_or_else(|| UseCaseError::Internal(anyhow::anyhow!("institution {name:?} vanished")))
}

pub async fn get(services: &Services, id: Uuid) -> Result<Institution, UseCaseError> {
    repo::institutions::find(&services.db, id)
        .await?
        .ok_or(InstitutionError::NotFound.into())
}

pub async fn update(
    services: &Services,
    id: Uuid,
    name: Option<&str>,
    contact_email: Option<&str>,
) -> Result<Institution, UseCaseError> {
    let now = Utc::now();
    let mut tx = services.db.begin().await?;
    if repo::institutions::find_for_update(&mut *tx, id)
        .await?
        .is_none()
    {
        return Err(InstitutionError::NotFound.into());
    }
    if name.is_none() && contact_email.is_none() {
        return Err(InstitutionError::NoFieldsToUpdate.into());
    }
    let updated = repo::institutions::update(&mut *tx, id, name, contact_email, now)
        .await
        .map_err(|err| match repo::unique_violation(&err).as_deref() {
            Some(repo::institutions::UNIQUE_NAME_INDEX) => {
                UseCaseError::from(InstitutionError::NameTaken)
            }
            _ => err.into(),
        })?;
    tx.commit().await?;
    Ok(updated)
}

pub async fn search(
    services: &Services,
    query: Option<&str>,
) -> Result<Vec<Institution>, UseCaseError> {
    Ok(repo::institutions::search(&services.db, query).await?)
}

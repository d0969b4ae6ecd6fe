//! Update a draft course (rules.md §4.14): only the keys present change; no date rules.

use chrono::Utc;
use uuid::Uuid;

use crate::repo::courses::{Course, DraftChanges, status};
use crate::repo::{self};
use crate::usecases::Services;
use crate::usecases::UseCaseError;
use crate::usecases::courses::CourseError;

pub async fn update(
    services: &Services,
    course_id: Uuid,
    changes: &DraftChanges,
) -> Result<Course, UseCaseError> {
    let now = Utc::now();
    let mut tx = services.db.begin().await?;
    let course = repo::courses::find_for_update(&mut *tx, course_id)
        .await?
        .ok_or(CourseError::NotFound(course_id))?;
    if course.status != status::DRAFT {
        return Err(CourseError::NotDraft.into());
    }
    if let Some(institution_id) = changes.institution_id
        && !repo::institutions::exists(&mut *tx, institution_id).await?
    {
        return Err(CourseError::InstitutionNotFound(institution_id).into());
    }
    if changes.is_empty() {
        return Ok(course);
    }
    let updated = repo::courses::update_draft(&mut *tx, course_id, changes, now).await?;
    tx.commit().await?;
    Ok(updated)
}

//! Read-only course queries (api.md §4.5.1, §4.5.2).

use uuid::Uuid;

use crate::repo::{self, courses::CourseDetail};
use crate::usecases::Services;
use crate::usecases::UseCaseError;
use crate::usecases::courses::CourseError;

pub async fn get(services: &Services, course_id: Uuid) -> Result<CourseDetail, UseCaseError> {
    repo::courses::find_detail(&services.db, course_id)
        .await?
        .ok_or(CourseError::NotFound(course_id).into())
}

/// Courses whose lab name contains `vlab_name` (literal, case-insensitive), deleted labs
/// included, by lab name in byte order, then id.
pub async fn search(
    services: &Services,
    vlab_name: &str,
) -> Result<Vec<CourseDetail>, UseCaseError> {
    Ok(repo::courses::search_details(&services.db, vlab_name).await?)
}

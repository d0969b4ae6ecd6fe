//! Path-dependent access tiers of api.md §1: VA, VM, PW and CA. They run after the token
//! check and before any 422, and a malformed path id fails the tier (403), never 422.

use uuid::Uuid;

use super::error::ApiError;
use super::fields::parse_uuid;
use crate::domain::caller::Caller;
use crate::http::state::AppState;
use crate::repo::{self, courses::Course};

/// Tier VA: `/vlab/{id}/admin`.
pub fn vlab_admin(caller: &Caller, raw_vlab_id: &str) -> Result<Uuid, ApiError> {
    parse_uuid(raw_vlab_id)
        .filter(|id| caller.groups.is_vlab_admin(*id))
        .ok_or_else(|| ApiError::not_allowed(Some(format!("vlab:admin on {raw_vlab_id}"))))
}

/// Tier VM: `/vlab/{id}/admin` or `/vlab/{id}/member`.
pub fn vlab_any(caller: &Caller, raw_vlab_id: &str) -> Result<Uuid, ApiError> {
    parse_uuid(raw_vlab_id)
        .filter(|id| caller.groups.has_vlab_access(*id))
        .ok_or_else(|| ApiError::not_allowed(Some(format!("vlab:any on {raw_vlab_id}"))))
}

/// Tier PW: the project's admin or member group, or the lab's admin group.
pub fn project_access(
    caller: &Caller,
    raw_vlab_id: &str,
    raw_project_id: &str,
) -> Result<(Uuid, Uuid), ApiError> {
    let denied =
        || ApiError::not_allowed(Some(format!("project:any:+vlab_admin on {raw_project_id}")));
    let (Some(vlab), Some(project)) = (parse_uuid(raw_vlab_id), parse_uuid(raw_project_id)) else {
        return Err(denied());
    };
    if caller.groups.has_project_access(vlab, project) {
        Ok((vlab, project))
    } else {
        Err(denied())
    }
}

/// Tier CA: the course exists and the caller is in its lab's admin group. A missing course or
/// a malformed id is treated like a non-admin. Service admins get no implicit pass.
pub async fn course_admin(
    state: &AppState,
    caller: &Caller,
    raw_course_id: &str,
) -> Result<Course, ApiError> {
    let Some(id) = parse_uuid(raw_course_id) else {
        return Err(ApiError::not_allowed(None));
    };
    let course = repo::courses::find(&state.services.db, id)
        .await
        .map_err(|err| {
            tracing::error!(error = %err, "database error in the course-admin gate");
            ApiError::database()
        })?;
    match course {
        Some(course) if caller.groups.is_vlab_admin(course.virtual_lab_id) => Ok(course),
        _ => Err(ApiError::not_allowed(None)),
    }
}

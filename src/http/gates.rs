//! Path-dependent access tiers of api.md §1: VA, VM, PW and CA, and the support tier SC, as
//! extractors. They run after the token check and before any 422; a malformed path id fails
//! the tier (403), except for a service admin on SC, who passes and gets the 422.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::error::ApiError;
use super::extract::path_params;
use super::fields::parse_uuid;
use crate::domain::audit::ActorRole;
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

/// The caller and the route's raw path parameter `name` (empty when the route has none).
async fn caller_and_param<S>(
    parts: &mut Parts,
    state: &S,
    names: &[&str],
) -> Result<(Caller, Vec<String>), Response>
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    let caller = Caller::from_request_parts(parts, state)
        .await
        .map_err(IntoResponse::into_response)?;
    let params = path_params(parts, state).await?;
    let raw = names
        .iter()
        .map(|name| params.get(*name).cloned().unwrap_or_default())
        .collect();
    Ok((caller, raw))
}

/// The caller, the lab id that passed `check` and the raw `{virtual_lab_id}` as sent.
async fn lab_gate<S>(
    parts: &mut Parts,
    state: &S,
    check: fn(&Caller, &str) -> Result<Uuid, ApiError>,
) -> Result<(Caller, Uuid, String), Response>
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    let (caller, mut raw) = caller_and_param(parts, state, &["virtual_lab_id"]).await?;
    let raw_id = raw.remove(0);
    let vlab_id = check(&caller, &raw_id).map_err(IntoResponse::into_response)?;
    Ok((caller, vlab_id, raw_id))
}

/// Tier VA on `{virtual_lab_id}`.
#[derive(Debug, Clone)]
pub struct VlabAdmin {
    pub caller: Caller,
    pub vlab_id: Uuid,
    /// The path id as sent (some 403 details quote it).
    pub raw_id: String,
}

impl<S> FromRequestParts<S> for VlabAdmin
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let (caller, vlab_id, raw_id) = lab_gate(parts, state, vlab_admin).await?;
        Ok(Self {
            caller,
            vlab_id,
            raw_id,
        })
    }
}

/// Tier VM on `{virtual_lab_id}`.
#[derive(Debug, Clone)]
pub struct VlabMember {
    pub caller: Caller,
    pub vlab_id: Uuid,
    /// The path id as sent (some 403 details quote it).
    pub raw_id: String,
}

impl<S> FromRequestParts<S> for VlabMember
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let (caller, vlab_id, raw_id) = lab_gate(parts, state, vlab_any).await?;
        Ok(Self {
            caller,
            vlab_id,
            raw_id,
        })
    }
}

/// Tier PW on `{virtual_lab_id}` and `{project_id}`.
#[derive(Debug, Clone)]
pub struct ProjectMember {
    pub caller: Caller,
    pub vlab_id: Uuid,
    pub project_id: Uuid,
}

impl<S> FromRequestParts<S> for ProjectMember
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let (caller, raw) =
            caller_and_param(parts, state, &["virtual_lab_id", "project_id"]).await?;
        let (vlab_id, project_id) =
            project_access(&caller, &raw[0], &raw[1]).map_err(IntoResponse::into_response)?;
        Ok(Self {
            caller,
            vlab_id,
            project_id,
        })
    }
}

/// Tier CA on `{course_id}`.
#[derive(Debug, Clone)]
pub struct CourseAdmin {
    pub caller: Caller,
    pub course: Course,
}

impl<S> FromRequestParts<S> for CourseAdmin
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let (caller, raw) = caller_and_param(parts, state, &["course_id"]).await?;
        let app = AppState::from_ref(state);
        let course = course_admin(&app, &caller, &raw[0])
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Self { caller, course })
    }
}

/// Tier SC on `{course_id}`: a service admin, or a caller who passes the CA rule. A service
/// admin always passes; a malformed id is then a 422, and the course may be missing (`None`:
/// each endpoint decides its 404). For anyone else the CA rule applies, 403 included.
#[derive(Debug, Clone)]
pub struct CourseSupport {
    pub caller: Caller,
    pub course_id: Uuid,
    pub course: Option<Course>,
    /// `service_admin` or `course_admin`, as actions through this tier are recorded.
    pub role: ActorRole,
}

impl<S> FromRequestParts<S> for CourseSupport
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let (caller, raw) = caller_and_param(parts, state, &["course_id"]).await?;
        let app = AppState::from_ref(state);
        if !caller.groups.is_service_admin() {
            let course = course_admin(&app, &caller, &raw[0])
                .await
                .map_err(IntoResponse::into_response)?;
            return Ok(Self {
                caller,
                course_id: course.id,
                course: Some(course),
                role: ActorRole::CourseAdmin,
            });
        }
        let Some(course_id) = parse_uuid(&raw[0]) else {
            return Err(ApiError::invalid_field("course_id", "Must be a UUID").into_response());
        };
        let course = repo::courses::find(&app.services.db, course_id)
            .await
            .map_err(|err| {
                tracing::error!(error = %err, "database error in the course-support gate");
                ApiError::database().into_response()
            })?;
        Ok(Self {
            caller,
            course_id,
            course,
            role: ActorRole::ServiceAdmin,
        })
    }
}

//! `POST /courses/{course_id}/void` and `DELETE /courses/{course_id}` (api.md §4.5.6–§4.5.7).
//! Both are tier SA.

use axum::extract::{Path, State};
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::error::ApiError;
use crate::http::extract::ServiceAdmin;
use crate::http::fields::parse_uuid;
use crate::http::payloads::{CourseOut, Envelope};
use crate::http::state::AppState;
use crate::usecases::courses::void::{VoidSummary, Voided};
use crate::usecases::courses::{delete as delete_course, void as void_course};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/courses/{course_id}/void", post(void))
        .route("/courses/{course_id}", delete(remove))
}

/// `void_summary` (new).
#[derive(Debug, Serialize, ToSchema)]
pub struct VoidSummaryOut {
    enrolments_dropped: u64,
    enrolments_failed: u64,
    access_removals_pending: u64,
    budget_depleted: bool,
}

impl From<VoidSummary> for VoidSummaryOut {
    fn from(s: VoidSummary) -> Self {
        Self {
            enrolments_dropped: s.enrolments_dropped,
            enrolments_failed: s.enrolments_failed,
            access_removals_pending: s.access_removals_pending,
            budget_depleted: s.budget_depleted,
        }
    }
}

/// CourseOut plus `void_summary`.
#[derive(Debug, Serialize, ToSchema)]
pub struct VoidedCourseOut {
    #[serde(flatten)]
    course: CourseOut,
    void_summary: VoidSummaryOut,
}

impl From<Voided> for VoidedCourseOut {
    fn from(v: Voided) -> Self {
        Self {
            course: CourseOut::from(&v.course),
            void_summary: v.summary.into(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct VoidedCourseEnvelope {
    message: String,
    data: VoidedCourseOut,
}

#[derive(Serialize, ToSchema)]
pub struct CourseDeletedEnvelope {
    message: String,
    /// Always null.
    #[schema(value_type = Option<Object>)]
    data: Option<()>,
}

/// Void a course from any status: drop every enrolment, remove access, deplete the lab.
#[utoipa::path(post, path = "/courses/{course_id}/void", tag = "courses", security(("bearer" = [])),
    params(("course_id" = String, Path, description = "Course id (UUID)")),
    responses((status = 200, body = VoidedCourseEnvelope), (status = 401), (status = 403), (status = 404), (status = 422)))]
async fn void(
    State(state): State<AppState>,
    ServiceAdmin(caller): ServiceAdmin,
    Path(raw_id): Path<String>,
) -> Result<Json<Envelope<VoidedCourseOut>>, ApiError> {
    let course_id = course_id(&raw_id)?;
    let voided = void_course::void(&state.services, caller.sub, course_id).await?;
    Ok(Envelope::new("Course voided successfully", voided.into()))
}

/// Delete a draft or voided course, strictly: all done, or a 502 and the course left voided.
#[utoipa::path(delete, path = "/courses/{course_id}", tag = "courses", security(("bearer" = [])),
    params(("course_id" = String, Path, description = "Course id (UUID)")),
    responses((status = 200, body = CourseDeletedEnvelope), (status = 401), (status = 403), (status = 404), (status = 409), (status = 422), (status = 502)))]
async fn remove(
    State(state): State<AppState>,
    ServiceAdmin(caller): ServiceAdmin,
    Path(raw_id): Path<String>,
) -> Result<Json<Envelope<Option<()>>>, ApiError> {
    let course_id = course_id(&raw_id)?;
    delete_course::delete(&state.services, caller.sub, course_id).await?;
    Ok(Envelope::new("Course deleted successfully", None))
}

/// The path id; not a UUID → 422 under `course_id` (after the SA gate).
fn course_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    parse_uuid(raw).ok_or_else(|| ApiError::invalid_field("course_id", "Must be a UUID"))
}

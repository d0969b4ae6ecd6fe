//! `/courses` (api.md §4.5.1–§4.5.5): search, get, create, update and activate. Every
//! endpoint here is tier SA. Void and delete live in `course_void.rs`; claim and
//! activate-enrolments in the seats routes.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::institutions::path_uuid;
use crate::http::error::ApiError;
use crate::http::extract::{RawBody, RawQuery, ServiceAdmin};
use crate::http::fields::{self, Fields, Patch};
use crate::http::payloads::{CourseDetailOut, CourseOut, Envelope};
use crate::http::state::AppState;
use crate::repo::courses::DraftChanges;
use crate::usecases::courses::{self, CourseRequest};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/courses", get(search).post(create))
        .route("/courses/{course_id}", get(get_one).patch(update))
        .route("/courses/{course_id}/activate", post(activate))
}

#[derive(Serialize, ToSchema)]
pub struct CourseEnvelope {
    message: String,
    data: CourseOut,
}

#[derive(Serialize, ToSchema)]
pub struct CourseDetailEnvelope {
    message: String,
    data: CourseDetailOut,
}

#[derive(Serialize, ToSchema)]
pub struct CourseDetailListEnvelope {
    message: String,
    data: Vec<CourseDetailOut>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CourseCreate {
    virtual_lab_id: uuid::Uuid,
    template_project_id: uuid::Uuid,
    institution_id: uuid::Uuid,
    /// Not checked here; the date rules are checked at activation.
    start_date: Option<DateTime<Utc>>,
    end_date: Option<DateTime<Utc>>,
    last_drop_date: Option<DateTime<Utc>>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CourseUpdate {
    /// An explicit `null` clears the date.
    start_date: Option<DateTime<Utc>>,
    end_date: Option<DateTime<Utc>>,
    last_drop_date: Option<DateTime<Utc>>,
    /// An explicit `null` is rejected (422).
    institution_id: Option<uuid::Uuid>,
}

/// Search courses by a case-insensitive literal substring of their lab's name.
#[utoipa::path(get, path = "/courses", tag = "courses", security(("bearer" = [])),
    params(("vlab_name" = String, Query, description = "Substring of the lab name (trimmed, not empty); deleted labs included")),
    responses((status = 200, body = CourseDetailListEnvelope), (status = 401), (status = 403), (status = 422)))]
async fn search(
    State(state): State<AppState>,
    ServiceAdmin(_caller): ServiceAdmin,
    query: RawQuery,
) -> Result<Json<Envelope<Vec<CourseDetailOut>>>, ApiError> {
    let query = query.object();
    let mut f = Fields::new(&query);
    let vlab_name = f.required("vlab_name", &fields::text(1, usize::MAX));
    f.finish()?;
    let Some(vlab_name) = vlab_name else {
        return Err(ApiError::internal());
    };
    let found = courses::search(&state.services, &vlab_name).await?;
    Ok(Envelope::new(
        format!("Found {} course(s)", found.len()),
        found.into_iter().map(CourseDetailOut::from).collect(),
    ))
}

/// Get one course with its lab's and institution's names.
#[utoipa::path(get, path = "/courses/{course_id}", tag = "courses", security(("bearer" = [])),
    params(("course_id" = String, Path, description = "Course id (UUID)")),
    responses((status = 200, body = CourseDetailEnvelope), (status = 401), (status = 403), (status = 404), (status = 422)))]
async fn get_one(
    State(state): State<AppState>,
    ServiceAdmin(_caller): ServiceAdmin,
    Path(raw_id): Path<String>,
) -> Result<Json<Envelope<CourseDetailOut>>, ApiError> {
    let id = path_uuid("course_id", &raw_id)?;
    let course = courses::get(&state.services, id).await?;
    Ok(Envelope::new(
        "Course retrieved successfully",
        course.into(),
    ))
}

/// Create a draft course on a course lab and fund its template project.
#[utoipa::path(post, path = "/courses", tag = "courses", security(("bearer" = [])),
    request_body = CourseCreate,
    responses((status = 200, body = CourseEnvelope), (status = 401), (status = 403), (status = 404),
        (status = 409), (status = 422), (status = 500), (status = 502)))]
async fn create(
    State(state): State<AppState>,
    ServiceAdmin(_caller): ServiceAdmin,
    body: RawBody,
) -> Result<Json<Envelope<CourseOut>>, ApiError> {
    let body = body.object()?;
    let mut f = Fields::new(&body);
    let vlab_id = f.required("virtual_lab_id", &fields::uuid);
    let template_id = f.required("template_project_id", &fields::uuid);
    let institution_id = f.required("institution_id", &fields::uuid);
    let start_date = f.optional("start_date", &fields::datetime_value);
    let end_date = f.optional("end_date", &fields::datetime_value);
    let last_drop_date = f.optional("last_drop_date", &fields::datetime_value);
    f.finish()?;
    let (Some(virtual_lab_id), Some(template_project_id), Some(institution_id)) =
        (vlab_id, template_id, institution_id)
    else {
        return Err(ApiError::internal());
    };
    let request = CourseRequest {
        virtual_lab_id,
        template_project_id,
        institution_id,
        start_date,
        end_date,
        last_drop_date,
    };
    let course = courses::create(&state.services, request).await?;
    Ok(Envelope::new(
        "Course created successfully",
        CourseOut::from(&course),
    ))
}

/// Update a draft course: only the keys present are applied.
#[utoipa::path(patch, path = "/courses/{course_id}", tag = "courses", security(("bearer" = [])),
    params(("course_id" = String, Path, description = "Course id (UUID)")),
    request_body = CourseUpdate,
    responses((status = 200, body = CourseEnvelope), (status = 401), (status = 403), (status = 404),
        (status = 409), (status = 422)))]
async fn update(
    State(state): State<AppState>,
    ServiceAdmin(_caller): ServiceAdmin,
    Path(raw_id): Path<String>,
    body: RawBody,
) -> Result<Json<Envelope<CourseOut>>, ApiError> {
    let id = path_uuid("course_id", &raw_id);
    let body = body.object();
    let (id, body) = match (id, body) {
        (Ok(id), Ok(body)) => (id, body),
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    let mut f = Fields::new(&body);
    let changes = DraftChanges {
        start_date: patch_value(f.patch("start_date", &fields::datetime_value)),
        end_date: patch_value(f.patch("end_date", &fields::datetime_value)),
        last_drop_date: patch_value(f.patch("last_drop_date", &fields::datetime_value)),
        institution_id: f.patch_not_null("institution_id", &fields::uuid),
    };
    f.finish()?;
    let course = courses::update(&state.services, id, &changes).await?;
    Ok(Envelope::new(
        "Course updated successfully",
        CourseOut::from(&course),
    ))
}

/// Activate a draft course whose dates satisfy the activation rules.
#[utoipa::path(post, path = "/courses/{course_id}/activate", tag = "courses", security(("bearer" = [])),
    params(("course_id" = String, Path, description = "Course id (UUID)")),
    responses((status = 200, body = CourseEnvelope), (status = 401), (status = 403), (status = 404),
        (status = 409), (status = 422)))]
async fn activate(
    State(state): State<AppState>,
    ServiceAdmin(_caller): ServiceAdmin,
    Path(raw_id): Path<String>,
) -> Result<Json<Envelope<CourseOut>>, ApiError> {
    let id = path_uuid("course_id", &raw_id)?;
    let course = courses::activate(&state.services, id).await?;
    Ok(Envelope::new(
        "Course activated successfully",
        CourseOut::from(&course),
    ))
}

/// A nullable PATCH date: absent → unchanged, `null` → cleared.
fn patch_value<T>(patch: Patch<T>) -> Option<Option<T>> {
    match patch {
        Patch::Absent => None,
        Patch::Null => Some(None),
        Patch::Value(v) => Some(Some(v)),
    }
}

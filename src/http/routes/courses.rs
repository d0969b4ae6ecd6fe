//! `/courses` and `/courses/{course_id}` (api.md §4.5.1–§4.5.7): search, get, create, update,
//! activate, void and delete. Every endpoint here is tier SA. Claim, activate-enrolments and a
//! course's enrolments live in `enrolments`.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::audit::Actor;
use crate::http::error::ApiError;
use crate::http::extract::{Body, PathUuid, Query, ServiceAdmin};
use crate::http::fields::{self, Fields, FromFields};
use crate::http::payloads::{CourseDetailOut, CourseOut, Envelope};
use crate::http::state::AppState;
use crate::repo::courses::DraftChanges;
use crate::usecases::courses::void::{VoidSummary, Voided};
use crate::usecases::courses::{self, CourseRequest};
use crate::usecases::courses::{delete as delete_course, void as void_course};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(search, create))
        .routes(routes!(get_one, update, remove))
        .routes(routes!(activate))
        .routes(routes!(void))
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

/// The body of `POST /courses`.
#[derive(Debug, ToSchema)]
#[schema(example = json!({
    "virtual_lab_id": "0b5f3c1e-7d2a-4c39-9a61-2f4e8b7d1c05",
    "template_project_id": "5d9e2a47-1b3c-4f68-8e0d-7a6c5b4f3e21",
    "institution_id": "c2a1f0e9-8b7d-4c6e-a5f4-3e2d1c0b9a87",
    "start_date": "2026-02-01T00:00:00Z",
    "end_date": "2026-06-30T00:00:00Z",
    "last_drop_date": "2026-02-15T00:00:00Z"
}))]
pub struct CourseCreate {
    virtual_lab_id: Uuid,
    template_project_id: Uuid,
    institution_id: Uuid,
    /// Not checked here; the date rules are checked at activation.
    start_date: Option<DateTime<Utc>>,
    end_date: Option<DateTime<Utc>>,
    last_drop_date: Option<DateTime<Utc>>,
}

impl FromFields for CourseCreate {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let virtual_lab_id = f.required("virtual_lab_id", &fields::uuid);
        let template_project_id = f.required("template_project_id", &fields::uuid);
        let institution_id = f.required("institution_id", &fields::uuid);
        let start_date = f.optional("start_date", &fields::datetime_value);
        let end_date = f.optional("end_date", &fields::datetime_value);
        let last_drop_date = f.optional("last_drop_date", &fields::datetime_value);
        Some(Self {
            virtual_lab_id: virtual_lab_id?,
            template_project_id: template_project_id?,
            institution_id: institution_id?,
            start_date,
            end_date,
            last_drop_date,
        })
    }
}

/// The body of `PATCH /courses/{course_id}`: only the keys present are applied.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"end_date": "2026-07-31T00:00:00Z", "last_drop_date": null}))]
pub struct CourseUpdate {
    /// An explicit `null` clears the date.
    #[schema(value_type = Option<DateTime<Utc>>, required = false)]
    start_date: Option<Option<DateTime<Utc>>>,
    /// An explicit `null` clears the date.
    #[schema(value_type = Option<DateTime<Utc>>, required = false)]
    end_date: Option<Option<DateTime<Utc>>>,
    /// An explicit `null` clears the date.
    #[schema(value_type = Option<DateTime<Utc>>, required = false)]
    last_drop_date: Option<Option<DateTime<Utc>>>,
    /// An explicit `null` is rejected.
    #[schema(value_type = Uuid, required = false)]
    institution_id: Option<Uuid>,
}

impl FromFields for CourseUpdate {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(Self {
            start_date: f.nullable("start_date", &fields::datetime_value),
            end_date: f.nullable("end_date", &fields::datetime_value),
            last_drop_date: f.nullable("last_drop_date", &fields::datetime_value),
            institution_id: f.patch_not_null("institution_id", &fields::uuid),
        })
    }
}

/// The query of `GET /courses`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CourseSearch {
    /// Substring of the lab name (trimmed, not empty); deleted labs included.
    #[param(min_length = 1, pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$")]
    vlab_name: String,
}

impl FromFields for CourseSearch {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let vlab_name = f.required("vlab_name", &fields::text(1, usize::MAX));
        Some(Self {
            vlab_name: vlab_name?,
        })
    }
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

/// Search courses by a case-insensitive literal substring of their lab's name.
#[utoipa::path(get, path = "/courses", tag = "courses", security(("bearer" = [])),
    params(CourseSearch),
    responses((status = 200, body = CourseDetailListEnvelope), (status = 401), (status = 403), (status = 422)))]
async fn search(
    State(state): State<AppState>,
    ServiceAdmin(_caller): ServiceAdmin,
    Query(query): Query<CourseSearch>,
) -> Result<Json<Envelope<Vec<CourseDetailOut>>>, ApiError> {
    let found = courses::search(&state.services, &query.vlab_name).await?;
    Ok(Envelope::new(
        format!("Found {} course(s)", found.len()),
        found.into_iter().map(CourseDetailOut::from).collect(),
    ))
}

/// Get one course with its lab's and institution's names.
#[utoipa::path(get, path = "/courses/{course_id}", tag = "courses", security(("bearer" = [])),
    params(("course_id" = Uuid, Path, description = "Course id")),
    responses((status = 200, body = CourseDetailEnvelope), (status = 401), (status = 403), (status = 404), (status = 422)))]
async fn get_one(
    State(state): State<AppState>,
    ServiceAdmin(_caller): ServiceAdmin,
    PathUuid(id): PathUuid,
) -> Result<Json<Envelope<CourseDetailOut>>, ApiError> {
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
    ServiceAdmin(caller): ServiceAdmin,
    Body(body): Body<CourseCreate>,
) -> Result<Json<Envelope<CourseOut>>, ApiError> {
    let request = CourseRequest {
        virtual_lab_id: body.virtual_lab_id,
        template_project_id: body.template_project_id,
        institution_id: body.institution_id,
        start_date: body.start_date,
        end_date: body.end_date,
        last_drop_date: body.last_drop_date,
    };
    let course = courses::create(&state.services, Actor::service_admin(&caller), request).await?;
    Ok(Envelope::new(
        "Course created successfully",
        CourseOut::from(&course),
    ))
}

/// Update a draft course: only the keys present are applied.
#[utoipa::path(patch, path = "/courses/{course_id}", tag = "courses", security(("bearer" = [])),
    params(("course_id" = Uuid, Path, description = "Course id")),
    request_body = CourseUpdate,
    responses((status = 200, body = CourseEnvelope), (status = 401), (status = 403), (status = 404),
        (status = 409), (status = 422)))]
async fn update(
    State(state): State<AppState>,
    ServiceAdmin(caller): ServiceAdmin,
    PathUuid(id): PathUuid,
    Body(body): Body<CourseUpdate>,
) -> Result<Json<Envelope<CourseOut>>, ApiError> {
    let changes = DraftChanges {
        start_date: body.start_date,
        end_date: body.end_date,
        last_drop_date: body.last_drop_date,
        institution_id: body.institution_id,
    };
    let actor = Actor::service_admin(&caller);
    let course = courses::update(&state.services, &actor, id, &changes).await?;
    Ok(Envelope::new(
        "Course updated successfully",
        CourseOut::from(&course),
    ))
}

/// Activate a draft course whose dates satisfy the activation rules.
#[utoipa::path(post, path = "/courses/{course_id}/activate", tag = "courses", security(("bearer" = [])),
    params(("course_id" = Uuid, Path, description = "Course id")),
    responses((status = 200, body = CourseEnvelope), (status = 401), (status = 403), (status = 404),
        (status = 409), (status = 422)))]
async fn activate(
    State(state): State<AppState>,
    ServiceAdmin(caller): ServiceAdmin,
    PathUuid(id): PathUuid,
) -> Result<Json<Envelope<CourseOut>>, ApiError> {
    let course = courses::activate(&state.services, &Actor::service_admin(&caller), id).await?;
    Ok(Envelope::new(
        "Course activated successfully",
        CourseOut::from(&course),
    ))
}

/// Void a course from any status: drop every enrolment, remove access, deplete the lab.
#[utoipa::path(post, path = "/courses/{course_id}/void", tag = "courses", security(("bearer" = [])),
    params(("course_id" = Uuid, Path, description = "Course id")),
    responses((status = 200, body = VoidedCourseEnvelope), (status = 401), (status = 403), (status = 404), (status = 422)))]
async fn void(
    State(state): State<AppState>,
    ServiceAdmin(caller): ServiceAdmin,
    PathUuid(course_id): PathUuid,
) -> Result<Json<Envelope<VoidedCourseOut>>, ApiError> {
    let voided =
        void_course::void(&state.services, Actor::service_admin(&caller), course_id).await?;
    Ok(Envelope::new("Course voided successfully", voided.into()))
}

/// Delete a draft or voided course, strictly: all done, or a 502 and the course left voided.
#[utoipa::path(delete, path = "/courses/{course_id}", tag = "courses", security(("bearer" = [])),
    params(("course_id" = Uuid, Path, description = "Course id")),
    responses((status = 200, body = CourseDeletedEnvelope), (status = 401), (status = 403), (status = 404), (status = 409), (status = 422), (status = 502)))]
async fn remove(
    State(state): State<AppState>,
    ServiceAdmin(caller): ServiceAdmin,
    PathUuid(course_id): PathUuid,
) -> Result<Json<Envelope<Option<()>>>, ApiError> {
    delete_course::delete(&state.services, Actor::service_admin(&caller), course_id).await?;
    Ok(Envelope::new("Course deleted successfully", None))
}

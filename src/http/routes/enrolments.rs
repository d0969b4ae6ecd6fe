//! Enrolment endpoints under `/courses` (api.md §4.5.8–§4.5.10, W.3): claim and activate (AU),
//! and a course's enrolments (CA). The static `/courses/claim` and `/courses/activate-enrolments`
//! win over `/courses/{course_id}` in the router.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::caller::Caller;
use crate::domain::datetime::serde_utc;
use crate::http::error::ApiError;
use crate::http::extract::{Body, PathUuid};
use crate::http::fields::{self, Fields, FromFields};
use crate::http::gates::CourseAdmin;
use crate::http::payloads::{EnrolmentOut, Envelope};
use crate::http::state::AppState;
use crate::usecases::seats::activate::{self, Activated, Activation};
use crate::usecases::seats::claim::{self, Claimed};
use crate::usecases::seats::enrolments;

// The plural activation is deprecated in the OpenAPI document, which utoipa reads from the
// handler's `#[deprecated]`; registering it is not a use to warn about.
#[allow(deprecated)]
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(claim_enrolment))
        .routes(routes!(activate_enrolment))
        .routes(routes!(activate_enrolments))
        .routes(routes!(list_enrolments))
}

// ---- claim ----------------------------------------------------------------------------------

/// The body of `POST /courses/claim`.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"enrolment_id": "6b5a4c3d-2e1f-4a0b-9c8d-7e6f5a4b3c2d"}))]
pub struct ClaimRequest {
    /// From the e-mailed link.
    pub enrolment_id: Uuid,
}

impl FromFields for ClaimRequest {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let enrolment_id = f.required("enrolment_id", &fields::uuid);
        Some(Self {
            enrolment_id: enrolment_id?,
        })
    }
}

/// The `course` of ClaimEnrolmentOut.
#[derive(Serialize, ToSchema)]
pub struct ClaimedCourseOut {
    id: Uuid,
    virtual_lab_id: Uuid,
    virtual_lab_name: String,
    institution_name: String,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    start_date: Option<DateTime<Utc>>,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    end_date: Option<DateTime<Utc>>,
}

/// ClaimEnrolmentOut (api.md §4.5.8).
#[derive(Serialize, ToSchema)]
pub struct ClaimEnrolmentOut {
    id: Uuid,
    course_id: Uuid,
    project_id: Uuid,
    contact_email: String,
    student_id: String,
    claimed_by: Option<Uuid>,
    course: ClaimedCourseOut,
}

impl From<Claimed> for ClaimEnrolmentOut {
    fn from(c: Claimed) -> Self {
        let (e, course) = (c.enrolment, c.course);
        Self {
            id: e.id,
            course_id: e.course_id,
            project_id: e.project_id,
            contact_email: e.contact_email,
            student_id: e.student_id,
            claimed_by: e.claimed_by,
            course: ClaimedCourseOut {
                id: course.id,
                virtual_lab_id: course.virtual_lab_id,
                virtual_lab_name: course.virtual_lab_name,
                institution_name: course.institution_name,
                start_date: course.start_date,
                end_date: course.end_date,
            },
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ClaimEnvelope {
    message: String,
    data: ClaimEnrolmentOut,
}

/// Claim an enrolment from its e-mailed link (the enrolment id is the bearer secret).
#[utoipa::path(post, path = "/courses/claim", tag = "enrolments", security(("bearer" = [])),
    request_body = ClaimRequest,
    responses((status = 200, body = ClaimEnvelope), (status = 401), (status = 404), (status = 409),
        (status = 422)))]
async fn claim_enrolment(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<ClaimRequest>,
) -> Result<Json<Envelope<ClaimEnrolmentOut>>, ApiError> {
    let claimed = claim::claim(&state.services, &caller, body.enrolment_id).await;
    // The claim's access sync changed the caller's groups (or will, through the worker).
    state.auth.forget_groups(&caller);
    let claimed = claimed?;
    Ok(Envelope::new(
        "Enrolment claimed successfully",
        claimed.into(),
    ))
}

// ---- activate -------------------------------------------------------------------------------

/// ActivateEnrolmentResult (api.md §3.13).
#[derive(Serialize, ToSchema)]
pub struct ActivateEnrolmentResult {
    enrolment_id: Uuid,
    activated: bool,
    project_id: Option<Uuid>,
    error: Option<String>,
}

impl From<Activation> for ActivateEnrolmentResult {
    fn from(a: Activation) -> Self {
        let (project_id, error) = match a.outcome {
            Ok(project_id) => (Some(project_id), None),
            Err(reason) => (None, Some(reason)),
        };
        Self {
            enrolment_id: a.enrolment_id,
            activated: project_id.is_some(),
            project_id,
            error,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ActivateResponse {
    results: Vec<ActivateEnrolmentResult>,
}

impl From<Activated> for ActivateEnrolmentResult {
    fn from(a: Activated) -> Self {
        Self {
            enrolment_id: a.enrolment_id,
            activated: true,
            project_id: Some(a.project_id),
            error: None,
        }
    }
}

/// Activate the caller's enrolment in this course: project and lab member access, out of the
/// waitlist. Any body is ignored.
#[utoipa::path(post, path = "/courses/{course_id}/enrolment/activate", tag = "enrolments",
    security(("bearer" = [])),
    params(("course_id" = Uuid, Path, description = "Course id")),
    responses((status = 200, body = ActivateEnrolmentResult), (status = 401), (status = 404),
        (status = 409), (status = 422), (status = 502)))]
async fn activate_enrolment(
    State(state): State<AppState>,
    caller: Caller,
    PathUuid(course_id): PathUuid,
) -> Result<Json<ActivateEnrolmentResult>, ApiError> {
    let activated = activate::activate_enrolment(&state.services, &caller, course_id).await;
    state.auth.forget_groups(&caller);
    Ok(Json(activated?.into()))
}

/// Deprecated: use `POST /courses/{course_id}/enrolment/activate`. Gives the caller access to
/// each of their claimed enrolments whose course has started.
#[utoipa::path(post, path = "/courses/activate-enrolments", tag = "enrolments", security(("bearer" = [])),
    responses((status = 200, body = ActivateResponse), (status = 401)))]
#[deprecated = "use POST /courses/{course_id}/enrolment/activate"]
async fn activate_enrolments(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ActivateResponse>, ApiError> {
    let results = activate::activate_enrolments(&state.services, &caller).await;
    // The memberships may have changed even when the use case failed part-way.
    state.auth.forget_groups(&caller);
    Ok(Json(ActivateResponse {
        results: results?
            .into_iter()
            .map(ActivateEnrolmentResult::from)
            .collect(),
    }))
}

// ---- a course's enrolments ------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct EnrolmentList {
    enrolments: Vec<EnrolmentOut>,
}

/// Every enrolment of the course, dropped ones included.
#[utoipa::path(get, path = "/courses/{course_id}/enrolments", tag = "enrolments", security(("bearer" = [])),
    params(("course_id" = Uuid, Path, description = "Course id")),
    responses((status = 200, body = EnrolmentList), (status = 401), (status = 403)))]
async fn list_enrolments(
    State(state): State<AppState>,
    gate: CourseAdmin,
) -> Result<Json<EnrolmentList>, ApiError> {
    let listed = enrolments::list_course_enrolments(&state.services, gate.course.id).await?;
    Ok(Json(EnrolmentList {
        enrolments: listed
            .into_iter()
            .map(|entry| {
                EnrolmentOut::new(
                    &entry.enrolment.enrolment,
                    entry.seat.as_ref(),
                    entry.enrolment.drop_state,
                    entry.claim_email.as_ref(),
                )
            })
            .collect(),
    }))
}

//! Enrolment endpoints under `/courses` (api.md §4.5.8–§4.5.10): claim and activate (AU), and
//! a course's enrolments (CA). The static `/courses/claim` and `/courses/activate-enrolments`
//! win over `/courses/{course_id}` in the router.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::caller::Caller;
use crate::domain::datetime::serde_utc;
use crate::http::error::ApiError;
use crate::http::extract::RawBody;
use crate::http::fields::{self, Fields};
use crate::http::gates;
use crate::http::payloads::{EnrolmentOut, Envelope};
use crate::http::state::AppState;
use crate::usecases::seats::activate::{self, Activation};
use crate::usecases::seats::claim::{self, Claimed};
use crate::usecases::seats::enrolments;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/courses/claim", post(claim_enrolment))
        .route("/courses/activate-enrolments", post(activate_enrolments))
        .route("/courses/{course_id}/enrolments", get(list_enrolments))
}

// ---- claim ----------------------------------------------------------------------------------

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ClaimRequest {
    enrolment_id: Uuid,
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
    body: RawBody,
) -> Result<Json<Envelope<ClaimEnrolmentOut>>, ApiError> {
    let body = body.object()?;
    let mut f = Fields::new(&body);
    let enrolment_id = f.required("enrolment_id", &fields::uuid);
    f.finish()?;
    let Some(enrolment_id) = enrolment_id else {
        return Err(ApiError::internal());
    };
    let claimed = claim::claim(&state.services, caller.sub, enrolment_id).await?;
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
            Err(reason) => (None, Some(reason.to_string())),
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

/// Give the caller access to each of their claimed enrolments whose course has started.
#[utoipa::path(post, path = "/courses/activate-enrolments", tag = "enrolments", security(("bearer" = [])),
    responses((status = 200, body = ActivateResponse), (status = 401)))]
async fn activate_enrolments(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ActivateResponse>, ApiError> {
    let results = activate::activate_enrolments(&state.services, caller.sub).await;
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
    params(("course_id" = String, Path, description = "Course id (UUID)")),
    responses((status = 200, body = EnrolmentList), (status = 401), (status = 403)))]
async fn list_enrolments(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_id): Path<String>,
) -> Result<Json<EnrolmentList>, ApiError> {
    let course = gates::course_admin(&state, &caller, &raw_id).await?;
    let listed = enrolments::list_course_enrolments(&state.services, course.id).await?;
    Ok(Json(EnrolmentList {
        enrolments: listed
            .into_iter()
            .map(|(e, seat)| EnrolmentOut::new(&e.enrolment, seat.as_ref(), e.drop_state))
            .collect(),
    }))
}

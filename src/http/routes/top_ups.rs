//! A support action on one student (tier SC): extra credits for a student who ran out
//! mid-course.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::http::extract::{Body, EnrolmentId, EnrolmentPath};
use crate::http::fields::{self, Fields, FromFields};
use crate::http::gates::CourseSupport;
use crate::http::payloads::Envelope;
use crate::http::state::AppState;
use crate::usecases::top_ups::{self, TopUpRequest, ToppedUp};

/// Most credits one top-up may add.
const MAX_AMOUNT: i64 = 10_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(top_up_enrolment))
}

/// The body of `POST …/enrolments/{enrolment_id}/top-up`.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"amount": 100, "note": "Ran out during the project week"}))]
pub struct TopUpBody {
    /// Whole credits to add to the student's project.
    #[schema(minimum = 1, maximum = 10000)]
    amount: i32,
    /// Why (trimmed; empty means none); recorded in the audit event.
    #[schema(max_length = 500)]
    note: Option<String>,
}

impl FromFields for TopUpBody {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let in_range = fields::integer_between(1, MAX_AMOUNT);
        // In range, so it fits.
        let amount = f.required("amount", &|v| in_range(v).map(|a| a as i32));
        let note = f.optional("note", &fields::text(0, 500));
        Some(Self {
            amount: amount?,
            note,
        })
    }
}

/// The `data` of a top-up.
#[derive(Serialize, ToSchema)]
pub struct ToppedUpOut {
    top_up_id: Uuid,
    enrolment_id: Uuid,
    project_id: Uuid,
    /// The credits added, as a credit amount.
    amount: f64,
    /// All granted top-ups of the enrolment so far.
    extra_credits: i32,
    /// `credits_per_seat + extra_credits`.
    credits_granted_total: i64,
}

impl From<ToppedUp> for ToppedUpOut {
    fn from(t: ToppedUp) -> Self {
        Self {
            top_up_id: t.top_up_id,
            enrolment_id: t.enrolment_id,
            project_id: t.project_id,
            amount: f64::from(t.amount),
            extra_credits: t.extra_credits,
            credits_granted_total: t.credits_granted_total,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ToppedUpEnvelope {
    message: String,
    data: ToppedUpOut,
}

/// Add credits to a student's project. A service admin may add up to 10 000 per request; a
/// course admin only up to `FACULTY_TOP_UP_MAX_CREDITS` per student in total (0, the default,
/// disables it: 409 `LIMIT_EXCEEDED`). A 502 whose message says the grant could not be
/// confirmed means the credits may have arrived: check the balance before trying again.
#[utoipa::path(post, path = "/seats/courses/{course_id}/enrolments/{enrolment_id}/top-up",
    tag = "seats", security(("bearer" = [])),
    params(EnrolmentPath),
    request_body = TopUpBody,
    responses((status = 200, body = ToppedUpEnvelope), (status = 401), (status = 403),
        (status = 404), (status = 409), (status = 422), (status = 502)))]
async fn top_up_enrolment(
    State(state): State<AppState>,
    gate: CourseSupport,
    EnrolmentId(enrolment_id): EnrolmentId,
    Body(body): Body<TopUpBody>,
) -> Result<Json<Envelope<ToppedUpOut>>, ApiError> {
    let request = TopUpRequest {
        amount: body.amount,
        note: body.note.filter(|n| !n.is_empty()),
    };
    let topped_up = top_ups::top_up(
        &state.services,
        &gate.caller,
        gate.course_id,
        enrolment_id,
        request,
    )
    .await?;
    Ok(Envelope::new(
        "Credits added successfully",
        topped_up.into(),
    ))
}

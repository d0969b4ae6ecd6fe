//! Support actions on an enrolment's claim (tier SC): correct the e-mail of an unclaimed
//! enrolment, sending a new link and revoking the old one.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::error::ApiError;
use crate::http::extract::{Body, EnrolmentId};
use crate::http::fields::{self, Fields, FromFields};
use crate::http::gates::CourseSupport;
use crate::http::payloads::{EnrolmentOut, Envelope};
use crate::http::state::AppState;
use crate::usecases::corrections::correct_email::{self, Corrected};
use crate::usecases::seats::enrolments::RosterEntry;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(correct_enrolment_email))
}

fn enrolment_out(entry: &RosterEntry) -> EnrolmentOut {
    EnrolmentOut::new(
        &entry.enrolment.enrolment,
        entry.seat.as_ref(),
        entry.enrolment.drop_state.clone(),
        entry.claim_email.as_ref(),
    )
}

/// The body of `POST …/enrolments/{enrolment_id}/correct-email`.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"email": "ada@uni.org"}))]
pub struct EmailCorrection {
    /// The right address (trimmed, stored as given). The current address again reissues the
    /// link.
    #[schema(format = "email", max_length = 255)]
    email: String,
}

impl FromFields for EmailCorrection {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let email = f.required("email", &|v| fields::email(v).map(|e| e.into_string()));
        Some(Self { email: email? })
    }
}

/// The `data` of a correction.
#[derive(Serialize, ToSchema)]
pub struct CorrectedOut {
    enrolment: EnrolmentOut,
    previous_email: String,
    /// Whether SMTP accepted the first attempt of the new claim e-mail.
    email_sent: bool,
}

impl From<Corrected> for CorrectedOut {
    fn from(c: Corrected) -> Self {
        Self {
            enrolment: enrolment_out(&c.enrolment),
            previous_email: c.previous_email,
            email_sent: c.email_sent,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct CorrectedEnvelope {
    message: String,
    data: CorrectedOut,
}

/// Correct the e-mail of an unclaimed enrolment: the claim link is replaced (the old one stops
/// working) and a claim e-mail with the new link goes to the new address. Limited by the daily
/// cap of claim e-mails (429 `LIMIT_EXCEEDED` with `Retry-After`).
#[utoipa::path(post, path = "/seats/courses/{course_id}/enrolments/{enrolment_id}/correct-email",
    tag = "seats", security(("bearer" = [])),
    params(("course_id" = Uuid, Path, description = "Course id"),
        ("enrolment_id" = Uuid, Path, description = "Enrolment id")),
    request_body = EmailCorrection,
    responses((status = 200, body = CorrectedEnvelope), (status = 401), (status = 403),
        (status = 404), (status = 409), (status = 422),
        (status = 429, headers(("Retry-After" = u64, description = "Seconds until a claim e-mail is allowed")))))]
async fn correct_enrolment_email(
    State(state): State<AppState>,
    gate: CourseSupport,
    EnrolmentId(enrolment_id): EnrolmentId,
    Body(body): Body<EmailCorrection>,
) -> Result<Json<Envelope<CorrectedOut>>, ApiError> {
    let corrected = correct_email::correct_email(
        &state.services,
        &gate.caller,
        gate.course_id,
        enrolment_id,
        body.email,
    )
    .await?;
    Ok(Envelope::new(
        "Enrolment e-mail corrected",
        corrected.into(),
    ))
}

//! Support actions on an enrolment's claim (tier SC): correct the e-mail of an unclaimed
//! enrolment, sending a new link and revoking the old one; unclaim an enrolment claimed by the
//! wrong account, whose access is then removed.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::error::ApiError;
use crate::http::extract::{Body, EnrolmentId, EnrolmentPath, RawBody};
use crate::http::fields::{self, Fields, FromFields};
use crate::http::gates::CourseSupport;
use crate::http::payloads::{EnrolmentOut, Envelope};
use crate::http::state::AppState;
use crate::usecases::corrections::correct_email::{self, Corrected};
use crate::usecases::corrections::unclaim::{self, UnclaimRequest, Unclaimed};
use crate::usecases::seats::enrolments::RosterEntry;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(correct_enrolment_email))
        .routes(routes!(unclaim_enrolment))
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
    params(EnrolmentPath),
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

/// The optional body of `POST …/enrolments/{enrolment_id}/unclaim`.
#[derive(Debug, Default, ToSchema)]
#[schema(example = json!({"reason": "Claimed with a shared account", "send_claim_email": true}))]
pub struct UnclaimBody {
    /// Why (trimmed); recorded in the audit event.
    #[schema(max_length = 500)]
    reason: Option<String>,
    /// Corrects the enrolment's e-mail in the same step.
    #[schema(format = "email", max_length = 255)]
    email: Option<String>,
    /// Queue a claim e-mail with the new link (default true).
    send_claim_email: Option<bool>,
}

impl FromFields for UnclaimBody {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let reason = f.optional("reason", &fields::text(0, 500));
        let email = f.optional("email", &|v| fields::email(v).map(|e| e.into_string()));
        let send_claim_email = f.optional("send_claim_email", &fields::boolean);
        Some(Self {
            reason,
            email,
            send_claim_email,
        })
    }
}

/// The `data` of an unclaim.
#[derive(Serialize, ToSchema)]
pub struct UnclaimedOut {
    enrolment: EnrolmentOut,
    previous_claimed_by: uuid::Uuid,
    previous_claimed_by_email: Option<String>,
    /// The immediate attempt removed the previous account's access; when false, the worker
    /// retries until it succeeds.
    access_removed: bool,
    email_queued: bool,
    /// Whether SMTP accepted the first attempt.
    email_sent: bool,
    /// Why no claim e-mail was queued although one was asked for.
    email_error: Option<String>,
}

impl From<Unclaimed> for UnclaimedOut {
    fn from(u: Unclaimed) -> Self {
        Self {
            enrolment: enrolment_out(&u.enrolment),
            previous_claimed_by: u.previous_claimed_by,
            previous_claimed_by_email: u.previous_claimed_by_email,
            access_removed: u.access_removed,
            email_queued: u.email_queued,
            email_sent: u.email_sent,
            email_error: u.email_error,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct UnclaimedEnvelope {
    message: String,
    data: UnclaimedOut,
}

/// Unclaim an enrolment claimed by the wrong account: that account loses every access the
/// claim gave (project, waitlisted and lab groups), the claim link is replaced, and the new
/// link is e-mailed unless `send_claim_email` is false. Never refused for e-mail limits.
#[utoipa::path(post, path = "/seats/courses/{course_id}/enrolments/{enrolment_id}/unclaim",
    tag = "seats", security(("bearer" = [])),
    params(EnrolmentPath),
    request_body(content = Option<UnclaimBody>,
        description = "Optional: a missing body, `{}` or `null` mean the defaults"),
    responses((status = 200, body = UnclaimedEnvelope), (status = 401), (status = 403),
        (status = 404), (status = 409), (status = 422)))]
async fn unclaim_enrolment(
    State(state): State<AppState>,
    gate: CourseSupport,
    EnrolmentId(enrolment_id): EnrolmentId,
    body: RawBody,
) -> Result<Json<Envelope<UnclaimedOut>>, ApiError> {
    let body: UnclaimBody = body.parse_optional()?;
    let request = UnclaimRequest {
        reason: body.reason.filter(|r| !r.is_empty()),
        email: body.email,
        send_claim_email: body.send_claim_email.unwrap_or(true),
    };
    let unclaimed = unclaim::unclaim(
        &state.services,
        &gate.caller,
        gate.course_id,
        enrolment_id,
        request,
    )
    .await?;
    Ok(Envelope::new("Enrolment unclaimed", unclaimed.into()))
}

//! Resending claim e-mails (tier SC): to one enrolment, with a first attempt in the request, or
//! queued for every unclaimed enrolment of a course or a selection, for the worker to send.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::schema::{Array, SchemaType, Type};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::datetime::serde_utc;
use crate::http::error::ApiError;
use crate::http::extract::{EnrolmentId, EnrolmentPath, RawBody};
use crate::http::fields::{self, Fields, FromFields};
use crate::http::gates::CourseSupport;
use crate::http::payloads::{ClaimEmailOut, Envelope};
use crate::http::state::AppState;
use crate::usecases::claim_emails::resend_many::{self, ItemResult, MAX_CANDIDATES};
use crate::usecases::claim_emails::resend_one::{self, Resent};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(resend_claim_email))
        .routes(routes!(resend_claim_emails))
}

// ---- one enrolment ---------------------------------------------------------------------------

/// The `data` of a single resend.
#[derive(Serialize, ToSchema)]
pub struct ResentOut {
    enrolment_id: Uuid,
    /// The enrolment's current `contact_email`.
    recipient: String,
    /// Whether the first attempt was accepted by SMTP; a failed one is retried by the worker.
    email_sent: bool,
    /// The claim e-mail just queued, read after the attempt.
    claim_email: Option<ClaimEmailOut>,
}

impl From<Resent> for ResentOut {
    fn from(r: Resent) -> Self {
        Self {
            enrolment_id: r.enrolment_id,
            recipient: r.recipient,
            email_sent: r.email_sent,
            claim_email: r.claim_email.as_ref().map(ClaimEmailOut::from),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ResentEnvelope {
    message: String,
    data: ResentOut,
}

/// Send an unclaimed enrolment's claim e-mail again, with the link it already had. Limited
/// per enrolment: 429 `LIMIT_EXCEEDED` with `Retry-After` within the resend interval or past
/// the daily cap. Any body is ignored.
#[utoipa::path(post, path = "/seats/courses/{course_id}/enrolments/{enrolment_id}/resend-claim-email",
    tag = "seats", security(("bearer" = [])),
    params(EnrolmentPath),
    responses((status = 200, body = ResentEnvelope), (status = 401), (status = 403), (status = 404),
        (status = 409), (status = 422),
        (status = 429, headers(("Retry-After" = u64, description = "Seconds until a resend is allowed")))))]
async fn resend_claim_email(
    State(state): State<AppState>,
    gate: CourseSupport,
    EnrolmentId(enrolment_id): EnrolmentId,
) -> Result<Json<Envelope<ResentOut>>, ApiError> {
    let resent =
        resend_one::resend_one(&state.services, &gate.caller, gate.course_id, enrolment_id).await?;
    Ok(Envelope::new("Claim e-mail queued", resent.into()))
}

// ---- all unclaimed, or a selection ------------------------------------------------------------

/// The optional body of `POST /seats/courses/{course_id}/resend-claim-emails`: without
/// `enrolment_ids` (or without a body), every unclaimed, undropped enrolment.
#[derive(Debug, Default, ToSchema)]
#[schema(example = json!({"enrolment_ids": ["e1e1e1e1-0000-4000-8000-000000000001"]}))]
pub struct ResendSelection {
    /// 1..1000 distinct enrolment ids, answered in this order; `null` or left out: every
    /// unclaimed enrolment.
    #[schema(schema_with = enrolment_ids_schema)]
    enrolment_ids: Option<Vec<Uuid>>,
}

/// A `null` list reads like a missing one.
fn enrolment_ids_schema() -> Array {
    let mut list = fields::uuid_list_schema(MAX_CANDIDATES);
    list.schema_type = SchemaType::from_iter([Type::Array, Type::Null]);
    list
}

impl FromFields for ResendSelection {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let enrolment_ids = f.optional(
            "enrolment_ids",
            &fields::uuid_list("enrolment_ids", "enrolment_id", MAX_CANDIDATES),
        );
        Some(Self { enrolment_ids })
    }
}

/// One candidate's outcome.
#[derive(Serialize, ToSchema)]
pub struct ResendResult {
    enrolment_id: Uuid,
    student_id: Option<String>,
    recipient: Option<String>,
    /// Queued for the worker (not yet sent).
    queued: bool,
    error: Option<String>,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    next_resend_allowed_at: Option<DateTime<Utc>>,
}

impl From<ItemResult> for ResendResult {
    fn from(r: ItemResult) -> Self {
        Self {
            enrolment_id: r.enrolment_id,
            student_id: r.student_id,
            recipient: r.recipient,
            queued: r.skipped.is_none(),
            error: r.skipped.map(|s| s.message()),
            next_resend_allowed_at: r.next_resend_allowed_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ResendResults {
    results: Vec<ResendResult>,
    queued_count: u64,
    skipped_count: u64,
    /// Without a list: more than 1000 unclaimed enrolments remained; repeat the request.
    more: bool,
}

/// Queue the claim e-mail again for every unclaimed enrolment of the course (at most 1000 per
/// request), or for the listed ones. One result per candidate; the worker sends them.
#[utoipa::path(post, path = "/seats/courses/{course_id}/resend-claim-emails", tag = "seats",
    security(("bearer" = [])),
    params(("course_id" = Uuid, Path, description = "Course id")),
    request_body(content = Option<ResendSelection>,
        description = "Optional: a missing body, `{}` or `null` select every unclaimed enrolment"),
    responses((status = 200, body = ResendResults), (status = 401), (status = 403), (status = 404),
        (status = 409), (status = 422)))]
async fn resend_claim_emails(
    State(state): State<AppState>,
    gate: CourseSupport,
    body: RawBody,
) -> Result<Json<ResendResults>, ApiError> {
    let selection: ResendSelection = body.parse_optional()?;
    let resent = resend_many::resend_many(
        &state.services,
        &gate.caller,
        gate.course_id,
        selection.enrolment_ids,
    )
    .await?;
    let results: Vec<ResendResult> = resent.results.into_iter().map(Into::into).collect();
    let queued_count = results.iter().filter(|r| r.queued).count() as u64;
    Ok(Json(ResendResults {
        skipped_count: results.len() as u64 - queued_count,
        queued_count,
        results,
        more: resent.more,
    }))
}

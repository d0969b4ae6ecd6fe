//! `POST /seats/courses/{course_id}/drop-preview` (round2.md §4, CA): what a drop of these
//! seats would do. A path of its own rather than `?dry_run` on the drop, so a stripped query
//! can never turn a preview into a real drop.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::datetime::serde_utc;
use crate::http::error::ApiError;
use crate::http::extract::Body;
use crate::http::gates::CourseAdmin;
use crate::http::routes::seats::SeatDropRequest;
use crate::http::state::AppState;
use crate::usecases::drops::preview::{self, DropPreview, PreviewSummary, SeatPreview};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(drop_preview))
}

/// Credit amounts are JSON floats (api.md §0.2).
fn float(amount: Decimal) -> f64 {
    amount.to_f64().unwrap_or(f64::NAN)
}

/// One requested seat: would the drop start, would the seat come back, and the credits.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeatDropPreviewOut {
    pub seat_id: Uuid,
    pub enrolment_id: Option<Uuid>,
    pub student_id: Option<String>,
    pub can_drop: bool,
    /// The sentence the drop would answer when `can_drop` is false.
    pub error: Option<String>,
    /// `"depleting"` when this drop would resume an earlier, failed one.
    pub drop_state: Option<String>,
    /// `true` recovered, `false` consumed, null unknown (or `can_drop` false).
    pub seat_recovered: Option<bool>,
    /// `past_last_drop_date`, `seat_recovered_before`, `spent_over_margin`.
    pub recovery_blockers: Vec<String>,
    pub credits_granted: Option<f64>,
    pub current_balance: Option<f64>,
    pub credits_spent: Option<f64>,
    pub credits_returned: Option<f64>,
    pub deplete_in_doubt: bool,
}

impl From<&SeatPreview> for SeatDropPreviewOut {
    fn from(s: &SeatPreview) -> Self {
        let prediction = s.verdict.as_ref().ok();
        Self {
            seat_id: s.seat_id,
            enrolment_id: s.enrolment_id,
            student_id: s.student_id.clone(),
            can_drop: prediction.is_some(),
            error: s.verdict.as_ref().err().map(|e| (*e).to_owned()),
            drop_state: prediction
                .filter(|p| p.resumes)
                .map(|_| "depleting".to_owned()),
            seat_recovered: prediction.and_then(|p| p.seat_recovered),
            recovery_blockers: prediction
                .map(|p| p.blockers.iter().map(|b| b.as_str().to_owned()).collect())
                .unwrap_or_default(),
            credits_granted: prediction.map(|p| f64::from(p.credits_granted)),
            current_balance: prediction.and_then(|p| p.balance).map(float),
            credits_spent: prediction.and_then(|p| p.credits_spent()).map(float),
            credits_returned: prediction.and_then(|p| p.credits_returned()).map(float),
            deplete_in_doubt: s.deplete_in_doubt,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DropPreviewSummaryOut {
    pub can_drop: u64,
    pub seats_recovered: u64,
    pub seats_consumed: u64,
    pub seats_unknown: u64,
    pub credits_returned: f64,
}

impl From<PreviewSummary> for DropPreviewSummaryOut {
    fn from(s: PreviewSummary) -> Self {
        Self {
            can_drop: s.can_drop,
            seats_recovered: s.seats_recovered,
            seats_consumed: s.seats_consumed,
            seats_unknown: s.seats_unknown,
            credits_returned: float(s.credits_returned),
        }
    }
}

/// The preview: a snapshot at `evaluated_at`; the drop decides again when it runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct DropPreviewOut {
    #[serde(serialize_with = "serde_utc::serialize")]
    pub evaluated_at: DateTime<Utc>,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    pub last_drop_date: Option<DateTime<Utc>>,
    pub recovery_margin_credits: i32,
    /// False when the balances were needed and could not be read.
    pub balances_available: bool,
    pub results: Vec<SeatDropPreviewOut>,
    pub summary: DropPreviewSummaryOut,
}

impl From<&DropPreview> for DropPreviewOut {
    fn from(p: &DropPreview) -> Self {
        Self {
            evaluated_at: p.evaluated_at,
            last_drop_date: p.last_drop_date,
            recovery_margin_credits: p.recovery_margin_credits,
            balances_available: p.balances_available,
            results: p.results.iter().map(SeatDropPreviewOut::from).collect(),
            summary: p.summary().into(),
        }
    }
}

/// What a drop of these seats would do, in request order; changes nothing.
#[utoipa::path(post, path = "/seats/courses/{course_id}/drop-preview", tag = "seats", security(("bearer" = [])),
    params(("course_id" = Uuid, Path, description = "Course id")),
    request_body = SeatDropRequest,
    responses((status = 200, body = DropPreviewOut), (status = 401), (status = 403), (status = 422)))]
async fn drop_preview(
    State(state): State<AppState>,
    gate: CourseAdmin,
    Body(body): Body<SeatDropRequest>,
) -> Result<Json<DropPreviewOut>, ApiError> {
    let preview = preview::preview_drop(&state.services, &gate.course, &body.seat_ids).await?;
    Ok(Json(DropPreviewOut::from(&preview)))
}

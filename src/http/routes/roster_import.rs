//! `POST /seats/courses/{course_id}/roster-import?dry_run=` (round2.md §5, CA): enrol the rows
//! of a CSV roster, or say what that would do. `dry_run` is required, so a lost or misspelled
//! parameter can never turn a preview into a real run.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::datetime::serde_utc;
use crate::http::error::ApiError;
use crate::http::extract::{RawBody, RawQuery, query_and_body};
use crate::http::fields::{self, Fields, FromFields};
use crate::http::gates::CourseAdmin;
use crate::http::idempotency::{self, IdempotencyKeyHeader};
use crate::http::roster_csv::{self, RosterCsv};
use crate::http::state::AppState;
use crate::usecases::idempotency::{Keyed, Operation};
use crate::usecases::seats::roster_import::{
    self, ImportOutcome, RosterFile, RowResult, Summary, Verdict,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(roster_import))
}

/// The query of the import.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RosterImportQuery {
    /// `true`: classify the rows and change nothing; `false`: enrol them.
    #[param(required = true)]
    pub dry_run: bool,
}

impl FromFields for RosterImportQuery {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let dry_run = f.required("dry_run", &fields::query_boolean);
        Some(Self { dry_run: dry_run? })
    }
}

/// The body of the import: the file's text, as a browser reads it.
#[derive(Debug, ToSchema)]
#[schema(example = json!({
    "csv": "student_id,email\ns-1001,ada@students.unige.ch\ns-1002,alan@students.unige.ch\n",
    "filename": "roster.csv"
}))]
pub struct RosterImportRequest {
    /// UTF-8 CSV with a header row holding `student_id` and `email` (other columns are
    /// ignored); `,`, `;` or tab separated; 1..1000 data rows.
    #[schema(value_type = String, min_length = 1)]
    pub csv: RosterCsv,
    /// Recorded in the audit event only.
    #[schema(max_length = 255, pattern = r"^[^\u0000]*$")]
    pub filename: Option<String>,
}

impl FromFields for RosterImportRequest {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let csv = f.required("csv", &roster_csv::read);
        let filename = f.optional("filename", &fields::text(0, 255));
        Some(Self {
            csv: csv?,
            filename: filename.filter(|name| !name.is_empty()),
        })
    }
}

/// One data row's verdict, in file order.
#[derive(Debug, Serialize, ToSchema)]
pub struct RosterImportRowOut {
    /// The spreadsheet row (the header is row 1).
    pub row: usize,
    pub student_id: Option<String>,
    pub email: Option<String>,
    /// `invalid_row`, `duplicate_in_file`, `unchanged`, `already_enrolled`, `in_progress`,
    /// `project_name_taken`, `not_enough_seats`, `would_assign`, `assigned`, `failed`.
    pub verdict: &'static str,
    pub message: Option<String>,
    /// Whether posting the row again, unedited, may enrol it.
    pub retryable: bool,
    pub enrolment_id: Option<Uuid>,
    pub seat_id: Option<Uuid>,
    pub project_id: Option<Uuid>,
    /// Whether SMTP accepted the first claim e-mail (`assigned` rows only).
    pub email_sent: Option<bool>,
}

impl From<&RowResult> for RosterImportRowOut {
    fn from(r: &RowResult) -> Self {
        let (enrolment_id, seat_id, project_id, email_sent) = match &r.verdict {
            Verdict::Unchanged {
                enrolment_id,
                seat_id,
                project_id,
            } => (Some(*enrolment_id), *seat_id, Some(*project_id), None),
            Verdict::Assigned { seat_id, enrolled } => (
                Some(enrolled.enrolment_id),
                Some(*seat_id),
                Some(enrolled.project_id),
                Some(enrolled.email_sent),
            ),
            Verdict::Failed { seat_id, .. } => (None, Some(*seat_id), None, None),
            _ => (None, None, None, None),
        };
        Self {
            row: r.row,
            student_id: r.student_id.clone(),
            email: r.email.clone(),
            verdict: r.verdict.name(),
            message: r.verdict.message(),
            retryable: r.verdict.retryable(),
            enrolment_id,
            seat_id,
            project_id,
            email_sent,
        }
    }
}

/// The counts: `rows` = `would_assign + assigned + unchanged + rejected + in_progress +
/// not_enough_seats + failed`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RosterImportSummaryOut {
    pub rows: usize,
    pub would_assign: usize,
    pub assigned: usize,
    pub unchanged: usize,
    /// `invalid_row`, `duplicate_in_file`, `already_enrolled` and `project_name_taken` rows.
    pub rejected: usize,
    pub in_progress: usize,
    pub not_enough_seats: usize,
    pub failed: usize,
    /// The available seats counted when the rows were paired with seats.
    pub available_seats: usize,
}

impl From<Summary> for RosterImportSummaryOut {
    fn from(s: Summary) -> Self {
        Self {
            rows: s.rows,
            would_assign: s.would_assign,
            assigned: s.assigned,
            unchanged: s.unchanged,
            rejected: s.rejected,
            in_progress: s.in_progress,
            not_enough_seats: s.not_enough_seats,
            failed: s.failed,
            available_seats: s.available_seats,
        }
    }
}

/// The answer of an import or its dry run.
#[derive(Debug, Serialize, ToSchema)]
pub struct RosterImportOut {
    /// New per call; recorded in the audit events.
    pub import_id: Uuid,
    pub dry_run: bool,
    #[serde(serialize_with = "serde_utc::serialize")]
    pub evaluated_at: DateTime<Utc>,
    pub summary: RosterImportSummaryOut,
    pub results: Vec<RosterImportRowOut>,
}

impl From<&ImportOutcome> for RosterImportOut {
    fn from(o: &ImportOutcome) -> Self {
        Self {
            import_id: o.import_id,
            dry_run: o.dry_run,
            evaluated_at: o.evaluated_at,
            summary: o.summary().into(),
            results: o.results.iter().map(RosterImportRowOut::from).collect(),
        }
    }
}

/// Enrol the rows of a CSV roster through assign, one verdict per row; with `dry_run=true`,
/// say what that would do and change nothing. Posting the same file again retries only the
/// rows that are not enrolled.
///
/// An `Idempotency-Key` applies to real runs; a dry run checks the key's syntax, then ignores
/// it (it changes nothing, so it is always evaluated afresh).
#[utoipa::path(post, path = "/seats/courses/{course_id}/roster-import", tag = "seats",
    security(("bearer" = [])),
    params(("course_id" = Uuid, Path, description = "Course id"), RosterImportQuery,
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = r"^[!#-\[\]-~]+$", min_length = 1, max_length = 255, description = idempotency::DESCRIPTION)),
    request_body = RosterImportRequest,
    responses((status = 200, body = RosterImportOut), (status = 401), (status = 403), (status = 409),
        (status = 422)))]
async fn roster_import(
    State(state): State<AppState>,
    gate: CourseAdmin,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    query: RawQuery,
    body: RawBody,
) -> Result<Response, ApiError> {
    // The query's and the body's problems are reported together.
    let (query, body) = query_and_body::<RosterImportQuery, RosterImportRequest>(&query, &body)?;
    let file = RosterFile {
        rows: body.csv.rows,
        filename: body.filename,
        sha256: body.csv.sha256,
    };
    if query.dry_run {
        let outcome = roster_import::dry_run(&state.services, gate.course.id, &file).await?;
        return Ok(Json(RosterImportOut::from(&outcome)).into_response());
    }
    let keyed = key.map(|key| Keyed {
        caller: gate.caller.sub,
        operation: Operation::RosterImport,
        course_id: gate.course.id,
        key,
        request_hash: roster_import::request_hash(&file),
    });
    let services = state.services.clone();
    idempotency::answer(&state, keyed, move |attempt| async move {
        let outcome =
            roster_import::import(&services, &gate.caller, gate.course.id, file, attempt).await?;
        Ok(RosterImportOut::from(&outcome))
    })
    .await
}

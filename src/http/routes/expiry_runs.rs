//! The expiry report (tier SA): `GET /courses/expiry-runs`, the `expire-courses` runs newest
//! first, and `GET /courses/expiry-runs/{run_id}`, one run with its complete summary. Both are
//! static paths, so they win over `/courses/{course_id}`.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::schema::{Array, Object};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::datetime::serde_utc;
use crate::http::error::ApiError;
use crate::http::extract::{PathUuid, Query, ServiceAdmin};
use crate::http::fields::{self, Fields, FromFields};
use crate::http::payloads::Envelope;
use crate::http::routes::virtual_labs::Page;
use crate::http::state::AppState;
use crate::usecases::expiry_runs::{self, Run, RunFilter, STATUSES};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_runs))
        .routes(routes!(get_run))
}

fn status_schema() -> Object {
    fields::string_enum(STATUSES)
}

fn statuses_schema() -> Array {
    fields::string_enum_list(STATUSES)
}

/// ExpiryRunOut: one run of the expiry job.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExpiryRunOut {
    /// The run id (the `run_id` of its summary).
    id: Uuid,
    /// `running` while the run holds the lock; `abandoned` when it was killed.
    #[schema(schema_with = status_schema)]
    status: String,
    #[serde(serialize_with = "serde_utc::serialize")]
    started_at: DateTime<Utc>,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    finished_at: Option<DateTime<Utc>>,
    /// The process's exit code: 0, 1 or 2.
    exit_code: Option<i32>,
    /// `$HOSTNAME` of the run (the pod name).
    host: Option<String>,
    /// The courses step 5 processed.
    course_count: i32,
    /// The printed summary line; in the list without `courses`. Null while running or when
    /// abandoned.
    #[schema(value_type = Option<Object>)]
    summary: Option<Value>,
}

impl From<Run> for ExpiryRunOut {
    fn from(r: Run) -> Self {
        Self {
            id: r.id,
            status: r.status,
            started_at: r.started_at,
            finished_at: r.finished_at,
            exit_code: r.exit_code,
            host: r.host,
            course_count: r.course_count,
            summary: r.summary,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ExpiryRunEnvelope {
    message: String,
    data: ExpiryRunOut,
}

/// The query of `GET /courses/expiry-runs`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExpiryRunListQuery {
    /// ≥ 1, default 1.
    #[param(minimum = 1)]
    page: Option<i64>,
    /// 1..100, default 20.
    #[param(minimum = 1, maximum = 100)]
    page_size: Option<i64>,
    /// Only runs with these statuses; repeatable or comma-separated.
    #[param(schema_with = statuses_schema, required = false)]
    status: Vec<String>,
    /// Only the runs that processed this course.
    course_id: Option<Uuid>,
    /// `started_at` ≥ this datetime.
    started_after: Option<DateTime<Utc>>,
    /// `started_at` ≤ this datetime.
    started_before: Option<DateTime<Utc>>,
}

impl FromFields for ExpiryRunListQuery {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(Self {
            page: f.optional("page", &fields::integer_at_least(1)),
            page_size: f.optional("page_size", &fields::integer_between(1, 100)),
            status: f.list("status", STATUSES),
            course_id: f.optional("course_id", &fields::uuid),
            started_after: f.optional("started_after", &fields::datetime_value),
            started_before: f.optional("started_before", &fields::datetime_value),
        })
    }
}

/// The expiry job's runs, newest first; each summary without its `courses`.
#[utoipa::path(get, path = "/courses/expiry-runs", tag = "courses", security(("bearer" = [])),
    params(ExpiryRunListQuery),
    responses((status = 200, body = Page<ExpiryRunOut>), (status = 401), (status = 403),
        (status = 422)))]
async fn list_runs(
    State(state): State<AppState>,
    ServiceAdmin(_caller): ServiceAdmin,
    Query(query): Query<ExpiryRunListQuery>,
) -> Result<Json<Page<ExpiryRunOut>>, ApiError> {
    let page = query.page.unwrap_or(1);
    let filter = RunFilter {
        statuses: query.status,
        course_id: query.course_id,
        started_after: query.started_after,
        started_before: query.started_before,
        page,
        page_size: query.page_size.unwrap_or(20),
    };
    let (runs, total) = expiry_runs::list(&state.services, &filter).await?;
    let data = runs.into_iter().map(ExpiryRunOut::from).collect();
    Ok(Json(Page::new(data, page, total)))
}

/// One run of the expiry job with its complete summary.
#[utoipa::path(get, path = "/courses/expiry-runs/{run_id}", tag = "courses",
    security(("bearer" = [])), params(("run_id" = Uuid, Path, description = "Run id")),
    responses((status = 200, body = ExpiryRunEnvelope), (status = 401), (status = 403),
        (status = 404), (status = 422)))]
async fn get_run(
    State(state): State<AppState>,
    ServiceAdmin(_caller): ServiceAdmin,
    PathUuid(run_id): PathUuid,
) -> Result<Json<Envelope<ExpiryRunOut>>, ApiError> {
    let run = expiry_runs::get(&state.services, run_id).await?;
    Ok(Envelope::new("Expiry run found", run.into()))
}

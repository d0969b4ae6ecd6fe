//! The expiry report (addendum §10): the service admin's reads of the `expire-courses` run
//! records. The job writes them (`jobs::expiry`); nothing here changes state.

mod error;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

pub use error::ExpiryRunError;

use crate::repo::expiry_runs::{self, ExpiryRun, RunQuery};
use crate::usecases::{Services, UseCaseError};

/// The statuses a run record can have.
pub const STATUSES: &[&str] = &["running", "ok", "partial", "error", "skipped", "abandoned"];

/// The filters and page of the run list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Empty: every status.
    pub statuses: Vec<String>,
    /// Only the runs that processed this course.
    pub course_id: Option<Uuid>,
    pub started_after: Option<DateTime<Utc>>,
    pub started_before: Option<DateTime<Utc>>,
    pub page: i64,
    pub page_size: i64,
}

/// One run of the expiry job as the report shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub id: Uuid,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i32>,
    pub host: Option<String>,
    pub course_count: i32,
    /// Null while running or when abandoned; in the list without `courses`.
    pub summary: Option<Value>,
}

impl From<ExpiryRun> for Run {
    fn from(r: ExpiryRun) -> Self {
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

/// A page of runs (summaries without `courses`) and the number matching the filters.
pub async fn list(services: &Services, filter: RunFilter) -> Result<(Vec<Run>, i64), UseCaseError> {
    let query = RunQuery {
        statuses: filter.statuses,
        course_id: filter.course_id,
        started_after: filter.started_after,
        started_before: filter.started_before,
        page: filter.page,
        page_size: filter.page_size,
    };
    let (runs, total) = expiry_runs::list(&services.db, &query).await?;
    Ok((runs.into_iter().map(Run::from).collect(), total))
}

/// One run with its complete summary.
pub async fn get(services: &Services, run_id: Uuid) -> Result<Run, UseCaseError> {
    expiry_runs::find(&services.db, run_id)
        .await?
        .map(Run::from)
        .ok_or_else(|| ExpiryRunError::NotFound(run_id).into())
}

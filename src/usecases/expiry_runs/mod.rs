//! The expiry report (addendum §10): the service admin's reads of the `expire-courses` run
//! records. The job writes them (`jobs::expiry`); nothing here changes state.

mod error;

use uuid::Uuid;

pub use error::ExpiryRunError;
// The report shows the run rows as they are stored; the route reads them through this module.
pub use crate::repo::expiry_runs::{ExpiryRun as Run, RunQuery as RunFilter};

use crate::repo::expiry_runs;
use crate::usecases::{Services, UseCaseError};

/// The statuses a run record can have.
pub const STATUSES: &[&str] = &["running", "ok", "partial", "error", "skipped", "abandoned"];

/// A page of runs (summaries without `courses`) and the number matching the filters.
pub async fn list(
    services: &Services,
    filter: &RunFilter,
) -> Result<(Vec<Run>, i64), UseCaseError> {
    Ok(expiry_runs::list(&services.db, filter).await?)
}

/// One run with its complete summary.
pub async fn get(services: &Services, run_id: Uuid) -> Result<Run, UseCaseError> {
    expiry_runs::find(&services.db, run_id)
        .await?
        .ok_or_else(|| ExpiryRunError::NotFound(run_id).into())
}

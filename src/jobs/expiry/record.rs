//! The `expiry_run` record of each run (addendum §10.5). Recording never changes a run's outcome:
//! a failed write is logged at `error`, and the printed summary and exit code stay as they are.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::summary::{JobStatus, RunSummary};
use crate::repo::expiry_runs::{self, FinishedRun};
use crate::usecases::Services;
use crate::usecases::error::Chain;

/// Who this run is: the uuid of its request id `expire-courses-{uuid}`, when it started, and
/// the pod it runs in (`$HOSTNAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    pub id: Uuid,
    pub started_at: DateTime<Utc>,
    pub host: Option<String>,
}

impl From<DateTime<Utc>> for RunInfo {
    fn from(started_at: DateTime<Utc>) -> Self {
        Self {
            id: Uuid::new_v4(),
            started_at,
            host: None,
        }
    }
}

impl RunInfo {
    /// The request id of the job's outbound calls and events.
    pub fn request_id(&self) -> String {
        format!("{}-{}", super::summary::JOB, self.id)
    }
}

fn log_failure(step: &str, err: &sqlx::Error) {
    tracing::error!(step, error = %Chain(err), "could not record the expiry run");
}

/// Right after the lock is taken: holding it proves no other run is alive, so `running` rows
/// were killed; then this run's own `running` row.
pub async fn start(services: &Services, run: &RunInfo) {
    match expiry_runs::mark_abandoned(&services.db).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            runs = n,
            "earlier expiry runs never finished; marked abandoned"
        ),
        Err(err) => log_failure("marking abandoned runs", &err),
    }
    if let Err(err) =
        expiry_runs::insert_running(&services.db, run.id, run.started_at, run.host.as_deref()).await
    {
        log_failure("inserting the running row", &err);
    }
}

/// At the end of a locked run: the summary as printed, then the retention purge.
pub async fn finish(services: &Services, run: &RunInfo, summary: &RunSummary) {
    let course_ids: Vec<Uuid> = summary.courses.iter().map(|c| c.course_id).collect();
    write(
        services,
        run,
        summary.status,
        summary.finished_at,
        &course_ids,
        summary,
    )
    .await;
    let days = i64::from(services.config.expiry_run_retention_days);
    match expiry_runs::purge(&services.db, Utc::now() - TimeDelta::days(days)).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(purged = n, "expiry runs older than the retention purged"),
        Err(err) => log_failure("purging old runs", &err),
    }
}

/// A `skipped` or `error` line, recorded through the pool without the lock: inserted, or
/// completing this run's `running` row when it has one.
pub async fn finish_other(
    services: &Services,
    run: &RunInfo,
    status: JobStatus,
    finished_at: DateTime<Utc>,
    line: &impl Serialize,
) {
    write(services, run, status, finished_at, &[], line).await;
}

async fn write(
    services: &Services,
    run: &RunInfo,
    status: JobStatus,
    finished_at: DateTime<Utc>,
    course_ids: &[Uuid],
    line: &impl Serialize,
) {
    let summary = match serde_json::to_value(line) {
        Ok(value) => value,
        Err(err) => {
            tracing::error!(error = %err, "could not render the summary for the run record");
            Value::Null
        }
    };
    let row = FinishedRun {
        id: run.id,
        status: status.as_str(),
        started_at: run.started_at,
        finished_at,
        exit_code: i32::from(status.exit_code()),
        host: run.host.as_deref(),
        course_ids,
        summary: &summary,
    };
    if let Err(err) = expiry_runs::finish(&services.db, &row).await {
        log_failure("writing the finished run", &err);
    }
}

//! The daily expiry job (operations.md §1.2). stdout carries exactly one line: the JSON
//! summary; logs go to stderr. Exit 0 ok / nothing to do / skipped, 2 some items failed (retried
//! next run), 1 could not run.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use clap::Parser;
use serde::Serialize;
use sqlx::Connection;
use vlab_courses::app::telemetry::{self, LogTarget};
use vlab_courses::clients::http::Outbound;
use vlab_courses::clients::request_context;
use vlab_courses::config::{Binary, Config};
use vlab_courses::jobs::expiry::summary::{ErrorSummary, JOB, JobStatus, SkippedSummary};
use vlab_courses::jobs::expiry::{self, Run, RunInfo};
use vlab_courses::repo::db;
use vlab_courses::usecases::Services;

#[derive(Parser)]
#[command(
    name = "expire-courses",
    version,
    about = "Drops the students of ended and voided courses, depletes their labs and retries outstanding e-mails and access removals",
    long_about = "Drops the students of ended active courses and voided courses through the shared drop routine, depletes each lab budget once, and retries due claim e-mails and access removals. Holds a Postgres advisory lock: a second instance prints a `skipped` summary and exits 0.\n\nExit codes: 0 ok (or nothing to do, or skipped), 2 some items failed and will be retried on the next run, 1 could not run."
)]
struct Cli {
    /// List what would be processed without taking the lock, writing, or calling anything.
    #[arg(long)]
    dry_run: bool,
}

fn print(summary: &impl Serialize) {
    match serde_json::to_string(summary) {
        Ok(line) => println!("{line}"),
        Err(err) => println!(
            r#"{{"job":"{JOB}","status":"error","error":"could not render the summary: {err}"}}"#
        ),
    }
}

fn fail(message: impl Into<String>) -> ExitCode {
    let summary = ErrorSummary::new(message);
    tracing::error!(error = %summary.error, "expire-courses could not run");
    print(&summary);
    ExitCode::from(JobStatus::Error.exit_code())
}

/// [`fail`] once the schema is known to be there: the error line is recorded too.
async fn fail_recorded(services: &Services, run: &RunInfo, message: String) -> ExitCode {
    let summary = ErrorSummary::new(message);
    tracing::error!(error = %summary.error, "expire-courses could not run");
    expiry::record::finish_other(services, run, JobStatus::Error, Utc::now(), &summary).await;
    print(&summary);
    ExitCode::from(JobStatus::Error.exit_code())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env(Binary::ExpiryJob) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return fail(err.to_string());
        }
    };
    telemetry::init(config.log_format, &config.rust_log, LogTarget::Stderr);
    let run = RunInfo {
        id: uuid::Uuid::new_v4(),
        started_at: Utc::now(),
        host: std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()),
    };
    request_context::scope(run.request_id(), execute(config, cli.dry_run, run)).await
}

async fn execute(config: Config, dry_run: bool, run: RunInfo) -> ExitCode {
    let started_at = run.started_at;
    let pool = match db::connect(
        &config.database_url,
        db::JOB_POOL_SIZE,
        Duration::from_secs(30),
    )
    .await
    {
        Ok(pool) => pool,
        Err(err) => {
            return fail(format!(
                "could not connect to the database {}: {err}",
                config.database_label()
            ));
        }
    };
    match db::migration_status(&pool).await {
        Ok(status) if status.is_ok() => {}
        Ok(status) => return fail(format!("the database schema is not migrated: {status:?}")),
        Err(err) => return fail(format!("could not read the migration status: {err}")),
    }
    let outbound = match Outbound::new(config.external.http_timeout) {
        Ok(outbound) => outbound,
        Err(err) => return fail(format!("could not build the HTTP client: {err}")),
    };
    let services = match Services::new(Arc::new(config.clone()), pool, &outbound) {
        Ok(services) => services,
        Err(err) => return fail(format!("could not build the clients: {err}")),
    };

    if dry_run {
        return match expiry::dry_run(&services, &run).await {
            Ok(summary) => {
                print(&summary);
                ExitCode::SUCCESS
            }
            Err(err) => fail(format!("database error: {err}")),
        };
    }

    // The lock lives on its own connection, outside the pool of 4.
    let mut lock_conn = match sqlx::PgConnection::connect(&config.database_url).await {
        Ok(conn) => conn,
        Err(err) => {
            let message = format!(
                "could not connect to the database {}: {err}",
                config.database_label()
            );
            return fail_recorded(&services, &run, message).await;
        }
    };
    let outcome = expiry::run(&services, &mut lock_conn, run.clone()).await;
    let _ = lock_conn.close().await;
    let code = match outcome {
        Ok(Run::Done(summary)) => {
            print(&summary);
            ExitCode::from(summary.status.exit_code())
        }
        Ok(Run::Skipped) => {
            let summary = SkippedSummary {
                job: JOB,
                status: JobStatus::Skipped,
                started_at,
                finished_at: Utc::now(),
            };
            let finished_at = summary.finished_at;
            expiry::record::finish_other(
                &services,
                &run,
                JobStatus::Skipped,
                finished_at,
                &summary,
            )
            .await;
            print(&summary);
            ExitCode::SUCCESS
        }
        Err(err) => fail_recorded(&services, &run, format!("database error: {err}")).await,
    };
    services.db.close().await;
    code
}

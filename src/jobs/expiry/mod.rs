//! The daily expiry job (rules.md §8): drop every student of ended and voided courses through
//! the shared drop routine, deplete each lab budget once, and retry the outboxes.
//!
//! Safe to run twice at once (an advisory lock; the second instance says `skipped`) and to
//! re-run (finished courses are not selected again).

pub mod record;
pub mod summary;

use chrono::{DateTime, TimeDelta, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::domain::audit::Actor;
use crate::repo::{self, expiry::ExpiringCourse};
use crate::usecases::Services;
use crate::usecases::drops::{self, DropReason};
use crate::usecases::email_outbox;
use crate::usecases::error::Chain;
use crate::usecases::idempotency;
use crate::usecases::notices;
use crate::usecases::top_ups::stale::stale_top_up_pass;
use crate::usecases::{revocations, saga};
pub use record::RunInfo;
use summary::{CourseSummary, RunSummary};

/// Rows of each outbox retried per run at most (rules.md §8 step 6).
pub const GLOBAL_RETRY_LIMIT: u64 = 10_000;
const PASS_BATCH: i64 = 50;

/// What `--dry-run` reports: the selection only, every count 0, no writes, no external calls.
pub async fn dry_run(services: &Services, run: &RunInfo) -> Result<RunSummary, sqlx::Error> {
    let courses = repo::expiry::select(&services.db, run.started_at).await?;
    let mut summary = RunSummary::new(run.id, run.started_at, true);
    summary.expired_courses_found = courses.len() as u64;
    summary.courses = courses
        .into_iter()
        .map(|c| CourseSummary {
            course_id: c.id,
            status: c.status,
            end_date: c.end_date,
            enrolments_dropped: 0,
            enrolments_failed: 0,
            access_removals_pending: 0,
            vlab_depleted: c.budget_depleted,
            credits_returned: Decimal::ZERO,
            error: None,
        })
        .collect();
    summary.notices_due = Some(notices::due(services, run.started_at).await?);
    summary.finished_at = Utc::now();
    Ok(summary)
}

/// The outcome of trying the lock.
pub enum Run {
    Done(Box<RunSummary>),
    /// Another instance holds the lock.
    Skipped,
}

/// Takes the lock on `lock_conn` (a connection outside the pool), runs, records the run and
/// releases the lock. The `skipped` and `error` outcomes are recorded by the caller, which
/// prints them ([`record::finish_other`]). A bare start instant stands for a run with a fresh
/// id and no host (tests drive the job that way).
pub async fn run(
    services: &Services,
    lock_conn: &mut PgConnection,
    run: impl Into<RunInfo>,
) -> Result<Run, sqlx::Error> {
    let run = &run.into();
    if !repo::expiry::try_lock(lock_conn).await? {
        tracing::info!("another expire-courses run holds the lock; skipping");
        return Ok(Run::Skipped);
    }
    record::start(services, run).await;
    let result = run_locked(services, run).await;
    if let Ok(summary) = &result {
        record::finish(services, run, summary).await;
    }
    if let Err(err) = repo::expiry::unlock(lock_conn).await {
        // Closing the connection releases it anyway.
        tracing::warn!(error = %Chain(&err), "could not release the advisory lock");
    }
    result.map(|summary| Run::Done(Box::new(summary)))
}

async fn run_locked(services: &Services, run: &RunInfo) -> Result<RunSummary, sqlx::Error> {
    let started_at = run.started_at;
    let now = Utc::now();
    let mut summary = RunSummary::new(run.id, started_at, false);
    let courses = repo::expiry::select(&services.db, now).await?;
    summary.expired_courses_found = courses.len() as u64;
    tracing::info!(courses = courses.len(), "expire-courses started");

    // The selection uses one `now`; each course then reads the clock when it starts, because
    // the drop routine derives its 5-minute leases from the instant it is given, and a long
    // run must not hand out leases that have already lapsed.
    for course in courses {
        let outcome = process_course(services, &course, Utc::now(), &mut summary).await;
        summary.credits_returned += outcome.credits_returned;
        summary.courses.push(outcome);
    }

    queue_notices(services, Utc::now(), &mut summary).await;
    retry_outboxes(services, Utc::now(), &mut summary).await;
    purge_sagas(services, Utc::now()).await;
    purge_idempotent_requests(services, Utc::now(), &mut summary).await;
    purge_events(services, Utc::now(), &mut summary).await;
    summary.access_removals_failed =
        repo::expiry::failed_access_removals_since(&services.db, started_at).await? as u64;
    summary.access_revocations_failed =
        repo::expiry::failed_revocations_since(&services.db, started_at).await? as u64;
    summary.settle_status();
    summary.finished_at = Utc::now();
    tracing::info!(status = ?summary.status, "expire-courses finished");
    Ok(summary)
}

/// Step 5 for one course. An unexpected error is recorded on the course and the job moves on.
async fn process_course(
    services: &Services,
    course: &ExpiringCourse,
    now: DateTime<Utc>,
    totals: &mut RunSummary,
) -> CourseSummary {
    let mut out = CourseSummary {
        course_id: course.id,
        status: course.status.clone(),
        end_date: course.end_date,
        enrolments_dropped: 0,
        enrolments_failed: 0,
        access_removals_pending: 0,
        vlab_depleted: course.budget_depleted,
        credits_returned: Decimal::ZERO,
        error: None,
    };
    let fail = |out: &mut CourseSummary, step: &str, err: &(dyn std::error::Error + 'static)| {
        tracing::error!(course_id = %course.id, step, error = %Chain(err), "expiry step failed");
        out.error.get_or_insert_with(|| {
            format!(
                "The course could not be processed ({step}); it will be retried on the next run"
            )
        });
    };

    let system = Actor::system();
    // 5.1 drop every undropped enrolment.
    match drops::undropped_enrolments(services, course.id).await {
        Ok(ids) => {
            let outcomes =
                drops::drop_enrolments(services, &ids, DropReason::Expiry, &system, now).await;
            for outcome in outcomes {
                if let drops::DropOutcome::Dropped {
                    access_removed,
                    depleted,
                    ..
                } = outcome
                {
                    out.enrolments_dropped += 1;
                    out.credits_returned += depleted;
                    if access_removed {
                        totals.access_removals_completed += 1;
                    }
                } else if outcome.counts_as_failed() {
                    out.enrolments_failed += 1;
                }
            }
        }
        Err(err) => fail(&mut out, "listing enrolments", &err),
    }
    totals.enrolments_dropped += out.enrolments_dropped;
    totals.enrolments_failed += out.enrolments_failed;

    // 5.2 access removal for every revoking drop of the course, ignoring backoff.
    match drops::remove_pending_access(services, course.id, &system, now).await {
        Ok(sweep) => totals.access_removals_completed += sweep.completed,
        Err(err) => fail(&mut out, "removing access", &err),
    }
    // ... and R for its pending revocations (addendum §3.5).
    match revocations::revoke_course(services, course.id, &system, now).await {
        Ok(sweep) => totals.access_revocations_completed += sweep.completed,
        Err(err) => fail(&mut out, "revoking access", &err),
    }
    match repo::expiry::revoking_for_course(&services.db, course.id).await {
        Ok(n) => out.access_removals_pending = n as u64,
        Err(err) => fail(&mut out, "counting access removals", &err),
    }

    // 5.3 the lab budget, even if some drops failed: the credits must go.
    if !course.budget_depleted {
        match drops::deplete_lab_budget_returning(services, course.id, &system, "expiry").await {
            Ok(Some(returned)) => {
                totals.vlabs_depleted += 1;
                out.credits_returned += returned;
            }
            Ok(None) => totals.vlab_depletions_failed += 1,
            Err(err) => {
                totals.vlab_depletions_failed += 1;
                fail(&mut out, "depleting the lab budget", &err);
            }
        }
    }
    match repo::expiry::budget_depleted(&services.db, course.id).await {
        Ok(flag) => out.vlab_depleted = flag,
        Err(err) => fail(&mut out, "reading the course", &err),
    }
    out
}

/// Step 5b, with the clock read again: the pre-expiry notices. The selection failing counts as
/// one failure (the next run retries everything).
async fn queue_notices(services: &Services, now: DateTime<Utc>, summary: &mut RunSummary) {
    match notices::queue_due(services, now).await {
        Ok(run) => {
            summary.notices_queued = run.queued;
            summary.notices_failed = run.failed;
            summary.notice_errors = run.errors;
        }
        Err(err) => {
            tracing::error!(error = %Chain(&err), "the courses due for notices could not be read");
            summary.notices_failed += 1;
        }
    }
}

/// The sentence of a failed event purge.
pub const PURGE_FAILED: &str = "The event purge failed; the next run continues";

/// Step 6, last: audit events older than the retention period, in batches of 10 000, each in
/// its own transaction, until a batch deletes fewer. A failed batch stops the purge for this
/// run (the run is `partial`); the next run continues.
async fn purge_events(services: &Services, now: DateTime<Utc>, summary: &mut RunSummary) {
    let days = i64::from(services.config.course_event_retention_days);
    let cutoff = now - TimeDelta::days(days);
    loop {
        match repo::events::purge_batch(&services.db, cutoff).await {
            Ok(deleted) => {
                summary.course_events_purged += deleted;
                if deleted < repo::events::PURGE_BATCH as u64 {
                    break;
                }
            }
            Err(err) => {
                tracing::error!(error = %Chain(&err), "course event purge batch failed");
                summary.course_events_purge_error = Some(PURGE_FAILED.to_owned());
                break;
            }
        }
    }
    tracing::info!(
        purged = summary.course_events_purged,
        "course events older than the retention purged"
    );
}

/// Step 6, a purge: the replay records of `Idempotency-Key` requests past their 24 hours. A
/// failure is logged; the next run purges them (an expired record is never replayed anyway).
async fn purge_idempotent_requests(
    services: &Services,
    now: DateTime<Utc>,
    summary: &mut RunSummary,
) {
    match idempotency::purge_expired(services, now).await {
        Ok(purged) => {
            summary.idempotent_requests_purged = purged;
            tracing::info!(purged, "expired idempotency records purged");
        }
        Err(err) => tracing::error!(error = %Chain(&err), "idempotency record purge failed"),
    }
}

/// Step 6, the saga recovery: every due saga until none is left (bounded). A saga whose undo
/// failed is due again only after its backoff, so it is not retried within the run.
async fn recover_sagas(services: &Services, now: DateTime<Utc>, summary: &mut RunSummary) {
    let mut seen = 0;
    while seen < GLOBAL_RETRY_LIMIT {
        match saga::recovery::recovery_pass(services, now, PASS_BATCH).await {
            Ok(sweep) if sweep.leased > 0 => {
                summary.sagas_compensated += sweep.compensated;
                summary.sagas_failed += sweep.failed;
                seen += sweep.leased;
            }
            Ok(_) => break,
            Err(err) => {
                tracing::error!(error = %Chain(&err), "saga recovery pass failed");
                break;
            }
        }
    }
}

/// How long a compensated saga is kept.
const SAGA_RETENTION: chrono::Duration = chrono::Duration::days(7);

/// Step 6, the saga purge: compensated sagas finished over 7 days ago, in one statement that
/// locks nothing else. A failure is logged; the next run purges them.
async fn purge_sagas(services: &Services, now: DateTime<Utc>) {
    match repo::sagas::purge_compensated(&services.db, now - SAGA_RETENTION).await {
        Ok(purged) => tracing::info!(purged, "compensated sagas older than 7 days purged"),
        Err(err) => tracing::error!(error = %Chain(&err), "saga purge failed"),
    }
}

/// Step 6: the worker passes over every due row until none is left (bounded), the stale
/// top-ups last.
async fn retry_outboxes(services: &Services, now: DateTime<Utc>, summary: &mut RunSummary) {
    let mut seen = 0;
    while seen < GLOBAL_RETRY_LIMIT {
        match drops::access_removal_pass(services, now, PASS_BATCH).await {
            Ok(sweep) if sweep.completed + sweep.failed > 0 => {
                summary.access_removals_completed += sweep.completed;
                seen += sweep.completed + sweep.failed;
            }
            Ok(_) => break,
            Err(err) => {
                tracing::error!(error = %Chain(&err), "access-removal pass failed");
                break;
            }
        }
    }
    let mut seen = 0;
    while seen < GLOBAL_RETRY_LIMIT {
        match revocations::revocation_pass(services, now, PASS_BATCH).await {
            Ok(sweep) if sweep.completed + sweep.failed > 0 => {
                summary.access_revocations_completed += sweep.completed;
                seen += sweep.completed + sweep.failed;
            }
            Ok(_) => break,
            Err(err) => {
                tracing::error!(error = %Chain(&err), "access-revocation pass failed");
                break;
            }
        }
    }
    let mut seen = 0;
    while seen < GLOBAL_RETRY_LIMIT {
        match email_outbox::run_pass(services, now, PASS_BATCH).await {
            Ok(pass) if pass.sent + pass.failed + pass.cancelled > 0 => {
                summary.emails_sent += pass.sent;
                summary.emails_failed += pass.failed;
                seen += pass.sent + pass.failed + pass.cancelled;
            }
            Ok(_) => break,
            Err(err) => {
                tracing::error!(error = %Chain(&err), "e-mail outbox pass failed");
                break;
            }
        }
    }
    recover_sagas(services, now, summary).await;
    let mut seen = 0;
    while seen < GLOBAL_RETRY_LIMIT {
        match stale_top_up_pass(services, now, PASS_BATCH).await {
            Ok(marked) if marked > 0 => {
                summary.top_ups_marked_in_doubt += marked;
                seen += marked;
            }
            Ok(_) => break,
            Err(err) => {
                tracing::error!(error = %Chain(&err), "stale top-up pass failed");
                break;
            }
        }
    }
}

//! The background worker of every server replica (rules.md §6): once at start-up, then every
//! 30 s ±20 %, it retries due access removals, brings enrolments to their target access
//! (retries, convergence, promotion at the start date), sends due e-mails and marks stale
//! credit top-ups in doubt. Leases taken with
//! `FOR UPDATE SKIP LOCKED` split the work between replicas, so any number may run.
//!
//! A pass in which any lease query came back full is followed at once by another, and a use
//! case that queues work without a first attempt wakes the worker (`Services::worker_wake`), so
//! a large batch drains in seconds instead of 50 rows per pause.

use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clients::request_context;
use crate::usecases::Services;
use crate::usecases::error::Chain;
use crate::usecases::top_ups::stale::stale_top_up_pass;
use crate::usecases::{access, drops, email_outbox, revocations, saga};

/// Rows of each kind leased per pass.
pub const BATCH: i64 = 50;
/// Time between passes, before jitter.
pub const INTERVAL: Duration = Duration::from_secs(30);

/// Starts the worker; it stops after the pass in hand once `stop` is cancelled.
pub fn spawn(services: Services, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let more = run_pass(&services).await;
            if more == Continuation::Full && !stop.is_cancelled() {
                continue;
            }
            let pause = jittered(INTERVAL);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
                _ = services.worker_wake.notified() => {}
            }
        }
        tracing::info!("background worker stopped");
    })
}

/// Whether a pass may have left due rows behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuation {
    /// A lease query returned its full batch: run the next pass at once.
    Full,
    /// Every lease query returned less than a batch: pause.
    Drained,
}

/// One pass: access removals, access revocations (addendum §3.5), then access syncs, then
/// e-mails (W.5.6, addendum §1.10), then the saga recovery (addendum §8.4), then stale top-ups
/// (addendum §6.4.1.1). Failures are
/// logged; the next pass retries.
pub async fn run_pass(services: &Services) -> Continuation {
    let run_id = format!("worker-{}", Uuid::new_v4());
    request_context::scope(run_id, async {
        let now = Utc::now();
        let mut leased = Vec::with_capacity(5);
        match drops::access_removal_pass(services, now, BATCH).await {
            Ok(sweep) => {
                leased.push(sweep.completed + sweep.failed);
                if sweep.completed + sweep.failed > 0 {
                    tracing::info!(
                        completed = sweep.completed,
                        failed = sweep.failed,
                        "access removals retried"
                    );
                }
            }
            Err(err) => tracing::error!(error = %Chain(&err), "access-removal pass failed"),
        }
        match revocations::revocation_pass(services, now, BATCH).await {
            Ok(sweep) => {
                leased.push(sweep.completed + sweep.failed);
                if sweep.completed + sweep.failed > 0 {
                    tracing::info!(
                        completed = sweep.completed,
                        failed = sweep.failed,
                        "access revocations retried"
                    );
                }
            }
            Err(err) => tracing::error!(error = %Chain(&err), "access-revocation pass failed"),
        }
        match access::access_pass(services, now, BATCH).await {
            Ok(pass) => {
                leased.push(pass.leased);
                if pass.leased > 0 {
                    tracing::info!(
                        applied = pass.applied,
                        failed = pass.failed,
                        pending = pass.pending,
                        "enrolment access synced"
                    );
                }
            }
            Err(err) => tracing::error!(error = %Chain(&err), "access pass failed"),
        }
        match email_outbox::run_pass(services, now, BATCH).await {
            Ok(summary) => {
                leased.push(summary.leased());
                if summary.leased() > 0 {
                    tracing::info!(
                        sent = summary.sent,
                        failed = summary.failed,
                        gave_up = summary.gave_up,
                        cancelled = summary.cancelled,
                        "e-mails sent or retried"
                    );
                }
            }
            Err(err) => tracing::error!(error = %Chain(&err), "e-mail outbox pass failed"),
        }
        match saga::recovery::recovery_pass(services, now, BATCH).await {
            Ok(sweep) => {
                leased.push(sweep.leased);
                if sweep.leased > 0 {
                    tracing::info!(
                        compensated = sweep.compensated,
                        retried = sweep.retried,
                        failed = sweep.failed,
                        "sagas recovered"
                    );
                }
            }
            Err(err) => tracing::error!(error = %Chain(&err), "saga recovery pass failed"),
        }
        if let Err(err) = saga::recovery::refresh_open_gauge(services).await {
            tracing::error!(error = %Chain(&err), "could not count the open sagas");
        }
        match stale_top_up_pass(services, now, BATCH).await {
            Ok(marked) => leased.push(marked),
            Err(err) => tracing::error!(error = %Chain(&err), "stale top-up pass failed"),
        }
        continuation(&leased)
    })
    .await
}

/// [`Continuation::Full`] when any lease query of the pass returned its whole batch.
fn continuation(leased: &[u64]) -> Continuation {
    if leased.iter().any(|&n| n >= BATCH as u64) {
        Continuation::Full
    } else {
        Continuation::Drained
    }
}

fn jittered(base: Duration) -> Duration {
    base.mul_f64(rand::rng().random_range(0.8..1.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_lease_query_continues_at_once() {
        assert_eq!(continuation(&[0, 50, 3]), Continuation::Full);
        assert_eq!(continuation(&[49, 49, 49]), Continuation::Drained);
        assert_eq!(continuation(&[]), Continuation::Drained);
    }

    #[test]
    fn the_pause_stays_within_twenty_percent() {
        for _ in 0..100 {
            let d = jittered(INTERVAL);
            assert!(d >= Duration::from_secs(24) && d <= Duration::from_secs(36));
        }
    }
}

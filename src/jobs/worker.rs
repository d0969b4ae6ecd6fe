//! The background worker of every server replica (rules.md §6): once at start-up, then every
//! 30 s ±20 %, it retries due access removals, brings enrolments to their target access
//! (retries, convergence, promotion at the start date) and retries claim e-mails. Leases taken with
//! `FOR UPDATE SKIP LOCKED` split the work between replicas, so any number may run.

use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clients::request_context;
use crate::usecases::Services;
use crate::usecases::error::Chain;
use crate::usecases::{access, drops, email_outbox};

/// Rows of each kind leased per pass.
pub const BATCH: i64 = 50;
/// Time between passes, before jitter.
pub const INTERVAL: Duration = Duration::from_secs(30);

/// Starts the worker; it stops after the pass in hand once `stop` is cancelled.
pub fn spawn(services: Services, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            run_pass(&services).await;
            let pause = jittered(INTERVAL);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        tracing::info!("background worker stopped");
    })
}

/// One pass: access removals, then access syncs, then e-mails (W.5.6). Failures are logged; the next pass retries.
pub async fn run_pass(services: &Services) {
    let run_id = format!("worker-{}", Uuid::new_v4());
    request_context::scope(run_id, async {
        let now = Utc::now();
        match drops::access_removal_pass(services, now, BATCH).await {
            Ok(sweep) if sweep.completed + sweep.failed > 0 => tracing::info!(
                completed = sweep.completed,
                failed = sweep.failed,
                "access removals retried"
            ),
            Ok(_) => {}
            Err(err) => tracing::error!(error = %Chain(&err), "access-removal pass failed"),
        }
        match access::access_pass(services, now, BATCH).await {
            Ok(pass) if pass.leased > 0 => tracing::info!(
                applied = pass.applied,
                failed = pass.failed,
                pending = pass.pending,
                "enrolment access synced"
            ),
            Ok(_) => {}
            Err(err) => tracing::error!(error = %Chain(&err), "access pass failed"),
        }
        match email_outbox::run_pass(services, now, BATCH).await {
            Ok(summary) if summary.sent + summary.failed + summary.cancelled > 0 => tracing::info!(
                sent = summary.sent,
                failed = summary.failed,
                gave_up = summary.gave_up,
                cancelled = summary.cancelled,
                "claim e-mails retried"
            ),
            Ok(_) => {}
            Err(err) => tracing::error!(error = %Chain(&err), "e-mail outbox pass failed"),
        }
    })
    .await;
}

fn jittered(base: Duration) -> Duration {
    base.mul_f64(rand::rng().random_range(0.8..1.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_stays_within_twenty_percent() {
        for _ in 0..100 {
            let d = jittered(INTERVAL);
            assert!(d >= Duration::from_secs(24) && d <= Duration::from_secs(36));
        }
    }
}

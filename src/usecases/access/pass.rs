//! The worker's access pass (W.5.6): retries failed claim access steps, converges enrolments
//! from before the waitlist, and promotes waitlisted students once their course has started.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use uuid::Uuid;

use super::{SyncRequest, Synced, Trigger, sync};
use crate::domain::audit::Actor;
use crate::repo::access as repo;
use crate::usecases::{Services, UseCaseError};

/// What one access pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccessPass {
    /// Syncs leased by this pass.
    pub leased: u64,
    pub applied: u64,
    pub failed: u64,
    /// Enrolments behind target afterwards (the gauge).
    pub pending: u64,
}

/// Leases up to `limit` due enrolments (`FOR UPDATE SKIP LOCKED`, so replicas split the work),
/// syncs each, at most `external_concurrency` at once, and refreshes
/// `vlab_enrolment_access_pending`.
pub async fn access_pass(
    services: &Services,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<AccessPass, UseCaseError> {
    let lease = Uuid::new_v4();
    let leased = repo::lease_due(&services.db, lease, now, limit).await?;
    let concurrency = services.config.external_concurrency.max(1);
    let outcomes: Vec<Synced> = futures::stream::iter(leased.iter().copied())
        .map(|enrolment_id| {
            sync(
                services,
                SyncRequest {
                    enrolment_id,
                    lease,
                    now,
                    activate: false,
                    trigger: Trigger::Worker,
                    actor: Actor::system(),
                    expected_claimant: None,
                },
            )
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let pending = repo::count_pending(&services.db, now).await?;
    metrics::gauge!("vlab_enrolment_access_pending").set(pending as f64);
    Ok(AccessPass {
        leased: leased.len() as u64,
        applied: outcomes
            .iter()
            .filter(|o| matches!(o, Synced::Applied(_)))
            .count() as u64,
        failed: outcomes
            .iter()
            .filter(|o| matches!(o, Synced::Failed | Synced::RecordFailed(_)))
            .count() as u64,
        pending: u64::try_from(pending).unwrap_or(0),
    })
}

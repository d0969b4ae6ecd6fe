//! Routine R (round-2 addendum §3.5): remove a previous claimer's access after an unclaim. Its
//! Keycloak step is D4's removal in single-user mode; its leases, backoff and pass follow the
//! D4 outbox, on `access_revocation` rows. It never gives up.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::json;
use uuid::Uuid;

use super::UseCaseError;
use crate::domain::audit::{Actor, EventType};
use crate::domain::backoff::backoff;
use crate::repo::access_revocations::{self as repo, RevocationTarget};
use crate::usecases::Services;
use crate::usecases::drops::{Groups, Removal, revoke};
use crate::usecases::events::{self, EventExt};

/// What a batch of revocations did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RevocationSweep {
    /// Rows moved to `done` (or `skipped`).
    pub completed: u64,
    /// Attempts that failed (the rows stay `pending`, with backoff).
    pub failed: u64,
    /// Rows still pending afterwards: of the course, or of every course for the pass.
    pub still_pending: u64,
}

const FAILED: &str = "Could not remove the previous account's access in the identity provider";

/// R for one row this run holds the lease of, on behalf of `actor` (the unclaim's caller for
/// its immediate attempt, else the system). `true` when the access is removed.
pub async fn revoke_leased(
    services: &Services,
    id: Uuid,
    actor: &Actor,
    lease: Uuid,
    now: DateTime<Utc>,
) -> bool {
    let target = match repo::target(&services.db, id).await {
        Ok(Some(target)) => target,
        Ok(None) => return false,
        Err(err) => {
            tracing::error!(revocation_id = %id, error = %err, "could not read the access to revoke");
            return false;
        }
    };
    // A guard: check 3a keeps the previous claimer from claiming this enrolment again while R
    // may still run.
    if target.live_claim == Some(target.enrolment_id) {
        return record(services, &target, actor, lease, now, Outcome::Skipped).await;
    }
    let lab = target.live_claim.is_none();
    let groups = Groups {
        project_member: target.project_member_group_id.as_deref(),
        waitlisted: target.waitlisted_group_id.as_deref(),
        lab_member: target.lab_member_group_id.as_deref(),
    };
    let removal = Removal::OnlyUser {
        user: target.user_id,
        lab,
    };
    match revoke(services, &groups, removal).await {
        Ok(()) => {
            metrics::counter!("vlab_access_revocations_total", "outcome" => "success").increment(1);
            record(services, &target, actor, lease, now, Outcome::Done { lab }).await
        }
        Err(err) => {
            metrics::counter!("vlab_access_revocations_total", "outcome" => "failure").increment(1);
            tracing::warn!(revocation_id = %id, enrolment_id = %target.enrolment_id, user_id = %target.user_id, error = %err, "access revocation failed");
            let next = now + backoff(target.attempts.saturating_add(1));
            if let Err(err) = repo::fail(&services.db, id, lease, next, FAILED, now).await {
                tracing::error!(revocation_id = %id, error = %err, "could not record the failed revocation");
            }
            false
        }
    }
}

enum Outcome {
    Done { lab: bool },
    Skipped,
}

/// The final update under the lease, with `access_revoked` for a removal, in one transaction.
async fn record(
    services: &Services,
    target: &RevocationTarget,
    actor: &Actor,
    lease: Uuid,
    now: DateTime<Utc>,
    outcome: Outcome,
) -> bool {
    let recorded = async {
        let mut tx = services.db.begin().await?;
        let state = match outcome {
            Outcome::Done { .. } => "done",
            Outcome::Skipped => "skipped",
        };
        if !repo::complete(&mut *tx, target.id, lease, state, now).await? {
            tx.rollback().await?;
            return Ok::<bool, sqlx::Error>(false);
        }
        if let Outcome::Done { lab } = outcome {
            let event = events::event(target.course_id, EventType::AccessRevoked, actor, now)
                .enrolment(target.enrolment_id)
                .data(json!({ "user_id": target.user_id, "lab_membership_removed": lab }));
            events::record(&mut *tx, &[event]).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
    .await;
    match recorded {
        Ok(true) => {
            tracing::info!(revocation_id = %target.id, enrolment_id = %target.enrolment_id, user_id = %target.user_id, "previous claimer's access revoked");
            true
        }
        Ok(false) => {
            tracing::warn!(revocation_id = %target.id, "the revocation lease was lost");
            false
        }
        Err(err) => {
            tracing::error!(revocation_id = %target.id, error = %err, "could not record the revocation");
            false
        }
    }
}

/// R at once for a row an access sync re-opened, if nobody holds it; else the worker does it.
pub async fn revoke_now(services: &Services, id: Uuid, now: DateTime<Utc>) -> bool {
    let lease = Uuid::new_v4();
    match repo::lease_one(&services.db, id, lease, now).await {
        Ok(true) => revoke_leased(services, id, &Actor::system(), lease, now).await,
        Ok(false) => false,
        Err(err) => {
            tracing::warn!(revocation_id = %id, error = %err, "could not lease the re-opened revocation; the worker retries");
            false
        }
    }
}

async fn revoke_all(
    services: &Services,
    ids: &[Uuid],
    actor: &Actor,
    lease: Uuid,
    now: DateTime<Utc>,
) -> (u64, u64) {
    let limit = services.config.external_concurrency.max(1);
    let results: Vec<bool> = futures::stream::iter(ids.iter().copied())
        .map(|id| revoke_leased(services, id, actor, lease, now))
        .buffer_unordered(limit)
        .collect()
        .await;
    let completed = results.iter().filter(|r| **r).count() as u64;
    (completed, results.len() as u64 - completed)
}

/// R for every pending revocation of the course that nobody holds, ignoring backoff (void,
/// delete, the job's step 5.2).
pub async fn revoke_course(
    services: &Services,
    course_id: Uuid,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<RevocationSweep, UseCaseError> {
    let lease = Uuid::new_v4();
    let leased = repo::lease_course(&services.db, course_id, lease, now).await?;
    let (completed, failed) = revoke_all(services, &leased, actor, lease, now).await;
    let still = repo::count_pending(&services.db, Some(course_id)).await?;
    Ok(RevocationSweep {
        completed,
        failed,
        still_pending: u64::try_from(still).unwrap_or(0),
    })
}

/// The worker pass (rules.md §6.4): lease up to `limit` due rows, R each (bounded), and
/// refresh `vlab_access_revocations_pending`.
pub async fn revocation_pass(
    services: &Services,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<RevocationSweep, UseCaseError> {
    let lease = Uuid::new_v4();
    let leased = repo::lease_due(&services.db, lease, now, limit).await?;
    let (completed, failed) = revoke_all(services, &leased, &Actor::system(), lease, now).await;
    let still = repo::count_pending(&services.db, None).await?;
    metrics::gauge!("vlab_access_revocations_pending").set(still as f64);
    Ok(RevocationSweep {
        completed,
        failed,
        still_pending: u64::try_from(still).unwrap_or(0),
    })
}

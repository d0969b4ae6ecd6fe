//! D4 — remove access (rules.md §5.4) and the access-removal outbox (§6.1).
//!
//! Every member of the student project's member group and of its waitlisted group is removed,
//! and the student who claimed the enrolment leaves the lab member group. Only a holder of the record's lease runs D4, and
//! its final update is guarded by that lease, so one worker at a time owns each record.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::json;
use uuid::Uuid;

use super::UseCaseError;
use crate::clients::ClientError;
use crate::domain::audit::{Actor, EventType};
use crate::domain::backoff::backoff;
use crate::repo::drops::{self, AccessTarget};
use crate::usecases::Services;
use crate::usecases::events::{self, EventExt};

/// What a batch of access removals did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccessSweep {
    /// Records moved to `done`.
    pub completed: u64,
    /// Attempts that failed (the records stay `revoking`, with backoff).
    pub failed: u64,
    /// Records still `revoking` afterwards: of the course, or of every course for the pass.
    pub still_revoking: u64,
}

const FAILED: &str = "Could not remove the student's access in the identity provider";

/// D4 for one record this run holds the lease of, on behalf of `actor` (the drop's caller for
/// its immediate attempt, else the system). `true` when access is removed.
pub(super) async fn remove_access(
    services: &Services,
    enrolment_id: Uuid,
    actor: &Actor,
    lease: Uuid,
    now: DateTime<Utc>,
) -> bool {
    let target = match drops::access_target(&services.db, enrolment_id).await {
        Ok(Some(target)) => target,
        Ok(None) => {
            // The enrolment is gone (course deleted): so is its record.
            return false;
        }
        Err(err) => {
            tracing::error!(%enrolment_id, error = %err, "could not read the access to remove");
            return false;
        }
    };
    let groups = Groups {
        project_member: target.project_member_group_id.as_deref(),
        waitlisted: target.waitlisted_group_id.as_deref(),
        lab_member: target.lab_member_group_id.as_deref(),
    };
    let removal = Removal::Everyone {
        claimant: target.claimed_by,
    };
    let removed = match revoke(services, &groups, removal).await {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(%enrolment_id, error = %err, "access removal failed");
            false
        }
    };
    let outcome = if removed { "success" } else { "failure" };
    metrics::counter!("vlab_access_removals_total", "outcome" => outcome).increment(1);
    let recorded = if removed {
        complete(services, &target, enrolment_id, actor, lease, now).await
    } else {
        let next = now + backoff(target.access_attempts.saturating_add(1));
        drops::fail_access(&services.db, enrolment_id, lease, next, FAILED, now).await
    };
    match recorded {
        Ok(true) => {
            if removed {
                tracing::info!(%enrolment_id, "access removed");
            }
        }
        Ok(false) => tracing::warn!(%enrolment_id, "the access-removal lease was lost"),
        Err(err) => {
            tracing::error!(%enrolment_id, error = %err, "could not record the access removal")
        }
    }
    removed
}

/// Records the removal and its `access_removed` event in one transaction, under the lease.
async fn complete(
    services: &Services,
    target: &AccessTarget,
    enrolment_id: Uuid,
    actor: &Actor,
    lease: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let mut tx = services.db.begin().await?;
    let Some(done) = drops::complete_access(&mut tx, enrolment_id, lease, now).await? else {
        tx.rollback().await?;
        return Ok(false);
    };
    let event = events::event(target.course_id, EventType::AccessRemoved, actor, now)
        .enrolment(enrolment_id)
        .before(json!({ "access_level": done.previous_level }))
        .after(json!({ "access_level": "none" }))
        .data(json!({ "attempts": done.attempts }));
    events::record(&mut *tx, &[event]).await?;
    tx.commit().await?;
    Ok(true)
}

/// D4 at once for a record an access sync re-opened (W.5.3 S3.2), if nobody holds it; the
/// worker retries otherwise. `true` when access is removed.
pub async fn remove_access_now(
    services: &Services,
    enrolment_id: Uuid,
    now: DateTime<Utc>,
) -> bool {
    let lease = Uuid::new_v4();
    match drops::lease_revoking(&services.db, enrolment_id, lease, now).await {
        Ok(true) => remove_access(services, enrolment_id, &Actor::system(), lease, now).await,
        Ok(false) => false,
        Err(err) => {
            tracing::warn!(%enrolment_id, error = %err, "could not lease the re-opened access removal; the worker retries");
            false
        }
    }
}

/// The groups D4's removal works on (a project's and its course lab's).
#[derive(Debug, Clone, Copy)]
pub struct Groups<'a> {
    pub project_member: Option<&'a str>,
    pub waitlisted: Option<&'a str>,
    pub lab_member: Option<&'a str>,
}

/// Whom D4's removal takes out.
#[derive(Debug, Clone, Copy)]
pub enum Removal {
    /// A drop: every member of the project groups, and the claimant from the lab group.
    Everyone { claimant: Option<Uuid> },
    /// Routine R (addendum §3.5): only `user`, from the lab group only when `lab`; the project
    /// groups are not emptied, because a new claimant may already be in them.
    OnlyUser { user: Uuid, lab: bool },
}

/// The Keycloak calls: the project member group, then the waitlisted group, then the lab
/// member group. Non-members and missing users or groups count as done.
pub async fn revoke(
    services: &Services,
    groups: &Groups<'_>,
    removal: Removal,
) -> Result<(), ClientError> {
    let kc = &services.keycloak;
    let project_groups = [groups.project_member, groups.waitlisted];
    for group in project_groups.into_iter().flatten() {
        let members = match removal {
            Removal::OnlyUser { user, .. } => vec![user],
            Removal::Everyone { .. } => match kc.list_members(group).await {
                Ok(members) => members.into_iter().map(|m| m.id).collect(),
                Err(ClientError::NotFound { .. }) => Vec::new(),
                Err(err) => return Err(err),
            },
        };
        for member in members {
            kc.remove_member(member, group).await?;
        }
    }
    let from_lab = match removal {
        Removal::Everyone { claimant } => claimant,
        Removal::OnlyUser { user, lab } => lab.then_some(user),
    };
    if let (Some(user), Some(group)) = (from_lab, groups.lab_member) {
        kc.remove_member(user, group).await?;
    }
    Ok(())
}

/// D4 for leased records, at most `external_concurrency` at once.
async fn remove_leased(
    services: &Services,
    enrolment_ids: &[Uuid],
    actor: &Actor,
    lease: Uuid,
    now: DateTime<Utc>,
) -> (u64, u64) {
    let limit = services.config.external_concurrency.max(1);
    let results: Vec<bool> = futures::stream::iter(enrolment_ids.iter().copied())
        .map(|id| remove_access(services, id, actor, lease, now))
        .buffer_unordered(limit)
        .collect()
        .await;
    let completed = results.iter().filter(|r| **r).count() as u64;
    (completed, results.len() as u64 - completed)
}

/// D4 for every `revoking` drop of the course that is not leased, ignoring backoff (void,
/// delete, the job's step 5.2), on behalf of `actor`.
pub async fn remove_pending_access(
    services: &Services,
    course_id: Uuid,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<AccessSweep, UseCaseError> {
    let lease = Uuid::new_v4();
    let leased = drops::lease_course_revoking(&services.db, course_id, lease, now).await?;
    let (completed, failed) = remove_leased(services, &leased, actor, lease, now).await;
    let still = drops::count_revoking(&services.db, Some(course_id)).await?;
    Ok(AccessSweep {
        completed,
        failed,
        still_revoking: u64::try_from(still).unwrap_or(0),
    })
}

/// The worker pass of rules.md §6.1: lease up to `limit` due revoking rows (SKIP LOCKED, 5
/// min), D4 each (bounded), final updates guarded by the lease. Refreshes
/// `vlab_access_removals_pending`.
pub async fn access_removal_pass(
    services: &Services,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<AccessSweep, UseCaseError> {
    let lease = Uuid::new_v4();
    let leased = drops::lease_due_revoking(&services.db, lease, now, limit).await?;
    let (completed, failed) = remove_leased(services, &leased, &Actor::system(), lease, now).await;
    let still = drops::count_revoking(&services.db, None).await?;
    metrics::gauge!("vlab_access_removals_pending").set(still as f64);
    Ok(AccessSweep {
        completed,
        failed,
        still_revoking: u64::try_from(still).unwrap_or(0),
    })
}

//! The access sync S (W.5.3): brings Keycloak to the target access of one enrolment and
//! records it. Claim, both activations and the worker's access pass use it, each holding the
//! enrolment's access lease. No row lock is held during the Keycloak calls: S1 is a plain read,
//! S3 a separate short transaction, and a drop that won meanwhile re-opens D4 (S3.2).

mod pass;

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

pub use pass::{AccessPass, access_pass};

use crate::clients::ClientError;
use crate::domain::access::{AccessInputs, AccessLevel, target};
use crate::domain::audit::{Actor, EventType};
use crate::domain::backoff::backoff;
use crate::domain::datetime;
use crate::domain::groups;
use crate::repo::access::{self as repo, Snapshot};
use crate::usecases::Services;
use crate::usecases::drops;
use crate::usecases::events::{self, EventExt};
use crate::usecases::revocations;

/// Who runs the sync (logs and metrics, W.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Claim,
    Activation,
    Worker,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Claim => "claim",
            Trigger::Activation => "activation",
            Trigger::Worker => "worker",
        }
    }
}

/// How a sync ended.
#[derive(Debug)]
pub enum Synced {
    /// The target access is in place and recorded.
    Applied(AccessLevel),
    /// A Keycloak step failed; recorded with backoff, the worker retries.
    Failed,
    /// The row could not be read or the outcome recorded; the lease lapses by itself.
    RecordFailed(sqlx::Error),
    /// A drop (or a course delete) won; access removal is re-opened.
    Dropped,
    /// Nothing to grant (S1): the snapshot says why, `None` when the row is gone.
    Skipped(Option<Box<Snapshot>>),
    /// The lease lapsed and another sync took over.
    LeaseLost,
    /// The enrolment is no longer claimed by the user the sync acts for (an unclaim won,
    /// addendum §3.4.3); their access removal is re-opened.
    Unclaimed,
}

impl Synced {
    fn label(&self) -> &'static str {
        match self {
            Synced::Applied(_) => "applied",
            Synced::Failed | Synced::RecordFailed(_) => "failed",
            Synced::Dropped => "dropped",
            Synced::Skipped(_) => "skipped",
            Synced::LeaseLost => "lease_lost",
            Synced::Unclaimed => "unclaimed",
        }
    }
}

/// What one sync is asked to do.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub enrolment_id: Uuid,
    /// The access lease the caller already holds on the enrolment.
    pub lease: Uuid,
    pub now: DateTime<Utc>,
    /// An activation call: only `member` is granted, and `activated_at` is set.
    pub activate: bool,
    pub trigger: Trigger,
    /// Whom the events name: the student for a claim or an activation, the system for the
    /// worker.
    pub actor: Actor,
    /// The activations' caller: when the enrolment is no longer claimed by them, nothing is
    /// granted (addendum §3.4.3). `None` for the claim and the worker.
    pub expected_claimant: Option<Uuid>,
}

const KC_FAILED: &str = "Could not update the student's access in the identity provider";

/// S1–S4 for one enrolment.
pub async fn sync(services: &Services, req: SyncRequest) -> Synced {
    let (synced, level) = run(services, &req).await;
    // `none`: the sync stopped before it had a target (row unreadable or gone, nothing due).
    let target = level.map_or("none", AccessLevel::as_str);
    metrics::counter!("vlab_enrolment_access_total", "target" => target, "outcome" => synced.label())
        .increment(1);
    synced
}

/// S1–S4, with the target the sync worked towards.
async fn run(services: &Services, req: &SyncRequest) -> (Synced, Option<AccessLevel>) {
    let id = req.enrolment_id;
    // S1
    let snapshot = match repo::snapshot(&services.db, id).await {
        Ok(snapshot) => snapshot,
        Err(err) => {
            tracing::error!(enrolment_id = %id, error = %err, "access sync: could not read the enrolment");
            return (Synced::RecordFailed(err), None);
        }
    };
    let Some(snapshot) = snapshot else {
        return (Synced::Skipped(None), None);
    };
    if let Some(expected) = req.expected_claimant
        && snapshot.claimed_by != Some(expected)
    {
        if let Err(err) = repo::release_lease(&services.db, id, req.lease).await {
            tracing::warn!(enrolment_id = %id, error = %err, "access sync: could not release the lease; it lapses by itself");
        }
        return (Synced::Unclaimed, None);
    }
    let level = target(&inputs(&snapshot), req.now);
    let (Some(user), true) = (
        snapshot.claimed_by,
        level != AccessLevel::None && (!req.activate || level == AccessLevel::Member),
    ) else {
        if let Err(err) = repo::release_lease(&services.db, id, req.lease).await {
            tracing::warn!(enrolment_id = %id, error = %err, "access sync: could not release the lease; it lapses by itself");
        }
        let level = (level != AccessLevel::None).then_some(level);
        return (Synced::Skipped(Some(Box::new(snapshot))), level);
    };

    // S2
    let added = match grant(services, &snapshot, user, level).await {
        Ok(added) => added,
        Err(err) => {
            let failed = record_failure(services, req, &snapshot, user, level, &err).await;
            return (failed, Some(level));
        }
    };

    // S3
    let synced = match record(services, req, user, level).await {
        Ok(Recorded::Applied) => {
            let message = match (level, req.trigger) {
                (AccessLevel::Waitlisted, _) => "enrolment waitlisted",
                (_, Trigger::Worker) => "enrolment promoted",
                _ => "enrolment access granted",
            };
            tracing::info!(enrolment_id = %id, project_id = %snapshot.project_id, user_id = %user, trigger = req.trigger.as_str(), "{message}");
            Synced::Applied(level)
        }
        Ok(Recorded::LeaseLost) => Synced::LeaseLost,
        Ok(Recorded::Dropped { has_record }) => {
            if has_record {
                drops::remove_access_now(services, id, req.now).await;
            } else {
                remove_orphans(services, id, user, &added).await;
            }
            tracing::info!(enrolment_id = %id, user_id = %user, trigger = req.trigger.as_str(), "access sync lost to a drop");
            Synced::Dropped
        }
        Ok(Recorded::Gone) => {
            remove_orphans(services, id, user, &added).await;
            Synced::Dropped
        }
        Ok(Recorded::Unclaimed { revocation }) => {
            match revocation {
                Some(revocation) => {
                    revocations::revoke_now(services, revocation, req.now).await;
                }
                None => remove_orphans(services, id, user, &added).await,
            }
            tracing::info!(enrolment_id = %id, user_id = %user, trigger = req.trigger.as_str(), "access sync lost to an unclaim");
            Synced::Unclaimed
        }
        Err(err) => {
            tracing::error!(enrolment_id = %id, error = %err, "access sync: could not record the access");
            Synced::RecordFailed(err)
        }
    };
    (synced, Some(level))
}

fn inputs(s: &Snapshot) -> AccessInputs<'_> {
    AccessInputs {
        claimed: s.claimed_by.is_some(),
        dropped: s.is_dropped || s.drop_started,
        course_status: &s.status,
        start_date: s.start_date,
        end_date: s.end_date,
    }
}

/// Why S2 stopped.
#[derive(Debug, thiserror::Error)]
enum GrantFailure {
    #[error(transparent)]
    Keycloak(#[from] ClientError),
    #[error("the waitlisted group could not be stored: {0}")]
    Database(#[from] sqlx::Error),
}

/// S2. Returns the groups `user` was added to. No undo: what was added is part of the target
/// state, and a retry re-applies it idempotently.
async fn grant(
    services: &Services,
    s: &Snapshot,
    user: Uuid,
    level: AccessLevel,
) -> Result<Vec<String>, GrantFailure> {
    let kc = &services.keycloak;
    let project_group = match level {
        AccessLevel::Waitlisted => match &s.waitlisted_group_id {
            Some(group) => group.clone(),
            None => waitlisted_group(services, s).await?,
        },
        _ => s.member_group_id.clone(),
    };
    let added = [project_group, s.lab_member_group_id.clone()];
    let (project, lab) = tokio::join!(
        kc.add_member(user, &added[0]),
        kc.add_member(user, &added[1])
    );
    project?;
    lab?;
    if level == AccessLevel::Member
        && let Some(waitlisted) = &s.waitlisted_group_id
    {
        // A failure keeps member access; the retry removes the waitlist membership.
        kc.remove_member(user, waitlisted).await?;
    }
    Ok(added.into())
}

/// S2.1 for a project without a waitlisted group: create it (a 409 is resolved by name) and
/// store it, unless a concurrent sync stored one first.
async fn waitlisted_group(services: &Services, s: &Snapshot) -> Result<String, GrantFailure> {
    let name = groups::project_waitlisted(s.virtual_lab_id, s.project_id);
    let created = services.keycloak.create_group(&name).await?;
    let stored = repo::store_waitlisted_group(&services.db, s.project_id, &created).await?;
    if stored != created {
        tracing::warn!(project_id = %s.project_id, created = %created, stored = %stored, "another waitlisted group was stored first; using it");
    }
    Ok(stored)
}

enum Recorded {
    Applied,
    LeaseLost,
    /// The enrolment is dropped; `has_record` when a drop record exists (and was re-opened
    /// unless still `depleting`).
    Dropped {
        has_record: bool,
    },
    /// The enrolment is gone (course deleted).
    Gone,
    /// The enrolment is no longer claimed by the user S2 acted for; `revocation` is their
    /// re-opened removal, if one exists.
    Unclaimed {
        revocation: Option<Uuid>,
    },
}

/// S3: one short transaction under the enrolment lock.
async fn record(
    services: &Services,
    req: &SyncRequest,
    user: Uuid,
    level: AccessLevel,
) -> Result<Recorded, sqlx::Error> {
    let id = req.enrolment_id;
    let mut tx = services.db.begin().await?;
    let Some(locked) = repo::lock(&mut *tx, id).await? else {
        return Ok(Recorded::Gone);
    };
    // Step 1a (addendum §3.4.3), before the lease check: the memberships S2 added must go even
    // when a new claim has taken the lease over. Re-opening takes the lease from an in-flight
    // R, so that it cannot record `done` for a removal that preceded S2.
    if locked.claimed_by != Some(user) {
        let revocation =
            crate::repo::access_revocations::reopen(&mut *tx, id, user, req.now).await?;
        repo::release_lease(&mut *tx, id, req.lease).await?;
        tx.commit().await?;
        return Ok(Recorded::Unclaimed { revocation });
    }
    if locked.is_dropped || locked.drop_started {
        // The drop wins whoever holds the access lease now.
        if locked.drop_started {
            // A record still `depleting` needs nothing: its D4 runs after this commit.
            repo::reopen_drop(&mut *tx, id, req.now).await?;
        }
        repo::release_lease(&mut *tx, id, req.lease).await?;
        tx.commit().await?;
        return Ok(Recorded::Dropped {
            has_record: locked.drop_started,
        });
    }
    if locked.access_lease_id != Some(req.lease) {
        return Ok(Recorded::LeaseLost);
    }
    repo::record_applied(&mut *tx, id, level.as_str(), req.activate, req.now).await?;
    let mut recorded = Vec::new();
    if locked.access_level != level.as_str() {
        recorded.push(
            events::event(
                locked.course_id,
                EventType::AccessGranted,
                &req.actor,
                req.now,
            )
            .enrolment(id)
            .project(locked.project_id)
            .before(json!({ "access_level": locked.access_level }))
            .after(json!({ "access_level": level.as_str() }))
            .data(json!({ "trigger": req.trigger.as_str() })),
        );
    }
    if req.activate && locked.activated_at.is_none() {
        recorded.push(
            events::event(
                locked.course_id,
                EventType::EnrolmentActivated,
                &req.actor,
                req.now,
            )
            .enrolment(id)
            .project(locked.project_id)
            .after(json!({ "activated_at": datetime::format(&req.now) })),
        );
    }
    events::record(&mut *tx, &recorded).await?;
    tx.commit().await?;
    Ok(Recorded::Applied)
}

/// S4: record the failure with backoff, guarded by the lease.
async fn record_failure(
    services: &Services,
    req: &SyncRequest,
    s: &Snapshot,
    user: Uuid,
    level: AccessLevel,
    err: &GrantFailure,
) -> Synced {
    let id = req.enrolment_id;
    tracing::warn!(enrolment_id = %id, project_id = %s.project_id, user_id = %user, target = level.as_str(), trigger = req.trigger.as_str(), error = %err, "access sync failed");
    let attempts = s.access_attempts.saturating_add(1);
    let next = req.now + backoff(attempts);
    match record_failure_with_event(services, req, level, attempts, next).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(enrolment_id = %id, "access sync: the lease was lost before the failure was recorded")
        }
        Err(err) => {
            tracing::error!(enrolment_id = %id, error = %err, "access sync: could not record the failure")
        }
    }
    Synced::Failed
}

/// S4's update, guarded by the lease, with `access_update_failed` when it starts a failure
/// streak (no failure was pending), in one transaction. True when this lease recorded it.
async fn record_failure_with_event(
    services: &Services,
    req: &SyncRequest,
    level: AccessLevel,
    attempts: i32,
    next: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let id = req.enrolment_id;
    let mut tx = services.db.begin().await?;
    let Some(locked) = repo::lock(&mut *tx, id).await? else {
        return Ok(false);
    };
    if !repo::record_failure(&mut *tx, id, req.lease, next, KC_FAILED).await? {
        return Ok(false);
    }
    if locked.access_last_error.is_none() {
        let event = events::event(
            locked.course_id,
            EventType::AccessUpdateFailed,
            &req.actor,
            req.now,
        )
        .enrolment(id)
        .data(json!({
            "target": level.as_str(),
            "attempts": attempts,
            "next_attempt_at": datetime::format(&next),
        }));
        events::record(&mut *tx, &[event]).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// The enrolment is gone, or dropped without a drop record: take `user` out of the groups
/// this sync added, best effort.
async fn remove_orphans(services: &Services, enrolment_id: Uuid, user: Uuid, added: &[String]) {
    for group in added {
        if let Err(err) = services.keycloak.remove_member(user, group).await {
            tracing::error!(use_case = "access_sync", step = "orphan_membership", %enrolment_id, user_id = %user, group_id = %group, error = %err, "could not remove an orphan membership");
        }
    }
}

//! The one drop routine (rules.md §5), shared by faculty drop, void, delete and the expiry job:
//! D1 claims the drop record under row locks, D2 depletes the project with no lock held, D3
//! settles the seat and the enrolment in one short transaction, D4 removes Keycloak access.
//! The access-removal outbox (§6.1) and the lab deplete live here too.

mod access;
mod budget;
mod claim;
mod deplete;
pub mod faculty;
pub mod preview;
mod settle;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use rust_decimal::Decimal;
use serde_json::json;
use uuid::Uuid;

pub use access::{
    AccessSweep, Groups, Removal, access_removal_pass, remove_access_now, remove_pending_access,
    revoke,
};
pub use budget::{deplete_lab_budget, deplete_lab_budget_returning};

use super::UseCaseError;
use crate::domain::audit::{Actor, ActorRole, EventType};
use crate::repo::events::NewEvent;
use crate::usecases::Services;
use crate::usecases::events::{self, EventExt};
use claim::Claimed;
use deplete::Depleted;

/// The per-seat error of a drop stopped by a top-up in flight (also the drop preview's).
pub const TOP_UP_IN_PROGRESS: &str =
    "A credit top-up for this student is in progress; retry the drop in a minute";

/// Who started a drop first (`enrolment_drop.reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    Faculty,
    Void,
    Delete,
    Expiry,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Faculty => "faculty",
            DropReason::Void => "void",
            DropReason::Delete => "delete",
            DropReason::Expiry => "expiry",
        }
    }
}

/// The outcomes of rules.md §5.5.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DropOutcome {
    /// Settled: the enrolment is dropped and its seat recovered or consumed.
    Dropped {
        recovered: bool,
        access_removed: bool,
        /// What D2 moved back from the project (the drop's `depleted_amount`).
        depleted: Decimal,
    },
    NotFound,
    AlreadyDropped,
    InProgress,
    /// A credit top-up of the enrolment is being granted; nothing was written.
    TopUpInProgress,
    DepleteFailed {
        project_id: Uuid,
    },
    DepleteUncertain {
        project_id: Uuid,
    },
    RecordFailed,
}

impl DropOutcome {
    pub fn is_dropped(&self) -> bool {
        matches!(self, DropOutcome::Dropped { .. })
    }

    /// Counted as "failed" by void, delete and expiry (the last column of rules.md §5.5).
    pub fn counts_as_failed(&self) -> bool {
        matches!(
            self,
            DropOutcome::InProgress
                | DropOutcome::TopUpInProgress
                | DropOutcome::DepleteFailed { .. }
                | DropOutcome::DepleteUncertain { .. }
                | DropOutcome::RecordFailed
        )
    }

    /// The per-seat `error` of a faculty drop; `None` when dropped.
    pub fn error_sentence(&self) -> Option<String> {
        Some(match self {
            DropOutcome::Dropped { .. } => return None,
            DropOutcome::NotFound => "Seat not found in this course".to_owned(),
            DropOutcome::AlreadyDropped => "Enrolment is already dropped".to_owned(),
            DropOutcome::InProgress => "A drop of this seat is already in progress".to_owned(),
            DropOutcome::TopUpInProgress => TOP_UP_IN_PROGRESS.to_owned(),
            DropOutcome::DepleteFailed { project_id } => format!(
                "Failed to deplete credits for project {project_id}; the student was not dropped"
            ),
            DropOutcome::DepleteUncertain { project_id } => format!(
                "Could not confirm the credit depletion for project {project_id}; retry the drop"
            ),
            DropOutcome::RecordFailed => {
                "The drop could not be recorded; retry the drop".to_owned()
            }
        })
    }

    /// The `outcome` label of `vlab_drops_failed_total` (and of the `drop_failed` event), for
    /// the failed outcomes.
    fn failure_label(&self) -> Option<&'static str> {
        match self {
            DropOutcome::InProgress => Some("in_progress"),
            DropOutcome::TopUpInProgress => Some("top_up_in_progress"),
            DropOutcome::DepleteFailed { .. } => Some("deplete_failed"),
            DropOutcome::DepleteUncertain { .. } => Some("deplete_uncertain"),
            DropOutcome::RecordFailed => Some("record_failed"),
            _ => None,
        }
    }
}

/// D1–D4 for one enrolment, requested by `actor` (whose id the drop record keeps). No row
/// lock is held during the accounting or Keycloak calls.
pub async fn drop_enrolment(
    services: &Services,
    enrolment_id: Uuid,
    reason: DropReason,
    actor: &Actor,
    now: DateTime<Utc>,
) -> DropOutcome {
    let outcome = run(services, enrolment_id, reason, actor, now).await;
    record_metrics(reason, &outcome);
    match &outcome {
        DropOutcome::Dropped {
            recovered,
            access_removed,
            ..
        } => tracing::info!(
            %enrolment_id, reason = reason.as_str(), seat_recovered = recovered,
            access_removed, "enrolment dropped"
        ),
        other if other.counts_as_failed() => tracing::warn!(
            %enrolment_id, reason = reason.as_str(), outcome = ?other, "drop did not settle"
        ),
        _ => {}
    }
    outcome
}

async fn run(
    services: &Services,
    enrolment_id: Uuid,
    reason: DropReason,
    actor: &Actor,
    now: DateTime<Utc>,
) -> DropOutcome {
    let lease = Uuid::new_v4();
    let claimed = match claim::claim(services, enrolment_id, reason, actor.id, now, lease).await {
        Ok(Claimed::Leased(claimed)) => claimed,
        Ok(Claimed::Stop(outcome)) => return outcome,
        Err(err) => {
            tracing::error!(%enrolment_id, error = %err, "could not claim the drop");
            return DropOutcome::RecordFailed;
        }
    };
    let drop_actor = drop_actor(&claimed.reason, claimed.requested_by, actor);
    let amount = match deplete::deplete(services, &claimed, &drop_actor, lease, now).await {
        Depleted::Amount(amount) => amount,
        Depleted::Failed(outcome) => return outcome,
    };
    let recovered = match settle::settle(services, &claimed, &drop_actor, amount, lease, now).await
    {
        Ok(recovered) => recovered,
        Err(outcome) => return outcome,
    };
    let access_removed = access::remove_access(services, enrolment_id, actor, lease, now).await;
    DropOutcome::Dropped {
        recovered,
        access_removed,
        depleted: amount,
    }
}

/// Whom a drop's events name: its first requester, in the role its reason implies (a faculty
/// drop by a course admin, void and delete by a service admin, expiry by the system). The
/// current caller's record (role and e-mail) is used when they are that requester.
fn drop_actor(reason: &str, requested_by: Option<Uuid>, current: &Actor) -> Actor {
    if requested_by.is_some() && requested_by == current.id {
        return current.clone();
    }
    let role = match reason {
        "faculty" => ActorRole::CourseAdmin,
        "void" | "delete" => ActorRole::ServiceAdmin,
        _ => ActorRole::System,
    };
    Actor {
        role,
        id: requested_by.filter(|_| role != ActorRole::System),
        email: None,
    }
}

/// The `drop_failed` event of a drop that did not settle (`outcome` as the metric labels it).
fn drop_failed_event(
    drop: &claim::LeasedDrop,
    actor: &Actor,
    outcome: &DropOutcome,
    now: DateTime<Utc>,
) -> NewEvent {
    events::event(drop.course_id, EventType::DropFailed, actor, now)
        .enrolment(drop.enrolment_id)
        .seat(drop.seat_id)
        .data(json!({
            "outcome": outcome.failure_label().unwrap_or("failed"),
            "reason": drop.reason,
        }))
}

fn record_metrics(reason: DropReason, outcome: &DropOutcome) {
    if let DropOutcome::Dropped { recovered, .. } = outcome {
        let result = if *recovered { "recovered" } else { "consumed" };
        metrics::counter!("vlab_drops_total", "reason" => reason.as_str(), "result" => result)
            .increment(1);
    } else if let Some(label) = outcome.failure_label() {
        metrics::counter!("vlab_drops_failed_total", "reason" => reason.as_str(), "outcome" => label)
            .increment(1);
    }
}

/// Many, at most `config.external_concurrency` at once, outcomes in input order.
pub async fn drop_enrolments(
    services: &Services,
    enrolment_ids: &[Uuid],
    reason: DropReason,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Vec<DropOutcome> {
    let limit = services.config.external_concurrency.max(1);
    futures::stream::iter(enrolment_ids.iter().copied())
        .map(|id| drop_enrolment(services, id, reason, actor, now))
        .buffered(limit)
        .collect()
        .await
}

/// Undropped enrolment ids of a course in `created_at`, `id` order (void, delete, the job).
pub async fn undropped_enrolments(
    services: &Services,
    course_id: Uuid,
) -> Result<Vec<Uuid>, UseCaseError> {
    Ok(crate::repo::drops::undropped_enrolment_ids(&services.db, course_id).await?)
}

/// How many of `outcomes` settled and how many count as failed.
pub fn tally(outcomes: &[DropOutcome]) -> (u64, u64) {
    let dropped = outcomes.iter().filter(|o| o.is_dropped()).count() as u64;
    let failed = outcomes.iter().filter(|o| o.counts_as_failed()).count() as u64;
    (dropped, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_stored_in_lower_case() {
        let all = [
            DropReason::Faculty,
            DropReason::Void,
            DropReason::Delete,
            DropReason::Expiry,
        ];
        let names: Vec<_> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(names, ["faculty", "void", "delete", "expiry"]);
    }

    #[test]
    fn outcomes_map_to_the_sentences_and_counts_of_the_table() {
        let p = Uuid::nil();
        let cases = [
            (
                DropOutcome::Dropped {
                    recovered: true,
                    access_removed: false,
                    depleted: Decimal::ZERO,
                },
                None,
                false,
            ),
            (
                DropOutcome::NotFound,
                Some("Seat not found in this course".to_owned()),
                false,
            ),
            (
                DropOutcome::AlreadyDropped,
                Some("Enrolment is already dropped".to_owned()),
                false,
            ),
            (
                DropOutcome::InProgress,
                Some("A drop of this seat is already in progress".to_owned()),
                true,
            ),
            (
                DropOutcome::TopUpInProgress,
                Some(
                    "A credit top-up for this student is in progress; retry the drop in a minute"
                        .to_owned(),
                ),
                true,
            ),
            (
                DropOutcome::DepleteFailed { project_id: p },
                Some(format!(
                    "Failed to deplete credits for project {p}; the student was not dropped"
                )),
                true,
            ),
            (
                DropOutcome::DepleteUncertain { project_id: p },
                Some(format!(
                    "Could not confirm the credit depletion for project {p}; retry the drop"
                )),
                true,
            ),
            (
                DropOutcome::RecordFailed,
                Some("The drop could not be recorded; retry the drop".to_owned()),
                true,
            ),
        ];
        for (outcome, sentence, failed) in cases {
            assert_eq!(outcome.error_sentence(), sentence, "{outcome:?}");
            assert_eq!(outcome.counts_as_failed(), failed, "{outcome:?}");
            assert_eq!(outcome.is_dropped(), sentence.is_none(), "{outcome:?}");
        }
    }

    #[test]
    fn tally_counts_settled_and_failed_but_skips_the_rest() {
        let outcomes = [
            DropOutcome::Dropped {
                recovered: false,
                access_removed: true,
                depleted: Decimal::ONE,
            },
            DropOutcome::AlreadyDropped,
            DropOutcome::NotFound,
            DropOutcome::InProgress,
            DropOutcome::RecordFailed,
        ];
        assert_eq!(tally(&outcomes), (1, 2));
    }
}

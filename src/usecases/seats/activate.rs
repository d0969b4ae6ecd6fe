//! `POST /courses/activate-enrolments` (rules.md §4.13): give the caller access to each of
//! their claimed enrolments that may start, then re-check under the enrolment lock and take
//! the access back if a drop got there first.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use uuid::Uuid;

use crate::repo::{self, courses::status, enrolments::ActivationCandidate};
use crate::usecases::Services;
use crate::usecases::UseCaseError;

/// Why one enrolment was not activated (api.md §4.5.9 per-item errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotActivated {
    #[error("Course is in '{0}' status")]
    CourseStatus(String),
    #[error("Course has ended")]
    CourseEnded,
    #[error("Course has not started yet")]
    NotStarted,
    #[error("Failed to grant access \u{2014} please try again later")]
    GrantFailed,
    #[error("This enrolment has been dropped")]
    Dropped,
}

/// The outcome for one enrolment: the project id when activated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    pub enrolment_id: Uuid,
    pub outcome: Result<Uuid, NotActivated>,
}

/// Activates the caller's pending enrolments, in enrolment `created_at` order. Runs detached
/// so that a disconnect cannot interrupt the compensation of a lost race.
pub async fn activate_enrolments(
    services: &Services,
    caller: Uuid,
) -> Result<Vec<Activation>, UseCaseError> {
    let services = services.clone();
    services
        .tasks
        .clone()
        .run("activate_enrolments", async move {
            let now = Utc::now();
            let candidates = repo::enrolments::activation_candidates(&services.db, caller).await?;
            let concurrency = services.config.external_concurrency.max(1);
            let results = futures::stream::iter(candidates)
                .map(|candidate| {
                    let services = &services;
                    async move {
                        Activation {
                            enrolment_id: candidate.id,
                            outcome: activate_one(services, caller, &candidate, now).await,
                        }
                    }
                })
                .buffered(concurrency)
                .collect::<Vec<_>>()
                .await;
            Ok(results)
        })
        .await?
}

async fn activate_one(
    services: &Services,
    caller: Uuid,
    candidate: &ActivationCandidate,
    now: DateTime<Utc>,
) -> Result<Uuid, NotActivated> {
    if candidate.course_status != status::ACTIVE {
        return Err(NotActivated::CourseStatus(candidate.course_status.clone()));
    }
    if candidate.end_date.is_some_and(|end| now >= end) {
        return Err(NotActivated::CourseEnded);
    }
    if candidate.start_date.is_some_and(|start| now < start) {
        return Err(NotActivated::NotStarted);
    }
    let groups = [
        candidate.project_member_group_id.as_str(),
        candidate.lab_member_group_id.as_str(),
    ];
    // No undo on failure: adding twice is harmless, and the next call retries.
    let added = futures::future::join_all(
        groups
            .iter()
            .map(|group| services.keycloak.add_member(caller, group)),
    )
    .await;
    if let Some(err) = added.into_iter().find_map(Result::err) {
        tracing::warn!(enrolment_id = %candidate.id, error = %err, "activation: could not add the student to the member groups");
        return Err(NotActivated::GrantFailed);
    }
    match record_activation(services, candidate.id, now).await {
        Ok(Recorded::Activated) => {
            metrics::counter!("vlab_enrolments_activated_total").increment(1);
            tracing::info!(enrolment_id = %candidate.id, project_id = %candidate.project_id, user_id = %caller, "enrolment activated");
            Ok(candidate.project_id)
        }
        Ok(Recorded::AlreadyActive) => Ok(candidate.project_id),
        Ok(Recorded::Dropped) => {
            take_access_back(services, caller, candidate.id, &groups).await;
            Err(NotActivated::Dropped)
        }
        Err(err) => {
            // The memberships stay; the enrolment is still pending and the next call retries.
            tracing::error!(enrolment_id = %candidate.id, error = %err, "activation could not be recorded");
            Err(NotActivated::GrantFailed)
        }
    }
}

enum Recorded {
    Activated,
    AlreadyActive,
    Dropped,
}

/// The re-check under the enrolment lock (rules.md §9, invariant 9).
async fn record_activation(
    services: &Services,
    enrolment_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Recorded, sqlx::Error> {
    let mut tx = services.db.begin().await?;
    let Some(enrolment) = repo::enrolments::find_for_update(&mut *tx, enrolment_id).await? else {
        // Gone with its course: treat like a drop.
        return Ok(Recorded::Dropped);
    };
    if enrolment.is_dropped || repo::enrolments::has_drop(&mut *tx, enrolment_id).await? {
        return Ok(Recorded::Dropped);
    }
    if enrolment.activated_at.is_some() {
        return Ok(Recorded::AlreadyActive);
    }
    repo::enrolments::set_activated(&mut *tx, enrolment_id, now).await?;
    tx.commit().await?;
    Ok(Recorded::Activated)
}

/// A drop won the race: remove the memberships just added (failures are logged).
async fn take_access_back(services: &Services, caller: Uuid, enrolment_id: Uuid, groups: &[&str]) {
    let removed = futures::future::join_all(
        groups
            .iter()
            .map(|group| services.keycloak.remove_member(caller, group)),
    )
    .await;
    for (group, result) in groups.iter().zip(removed) {
        let outcome = match &result {
            Ok(()) => "ok",
            Err(err) => {
                tracing::error!(use_case = "activate_enrolments", step = "kc_add_member", enrolment_id = %enrolment_id, group_id = %group, error = %err, "compensation step failed");
                "failed"
            }
        };
        metrics::counter!("vlab_compensations_total", "step" => "kc_add_member", "outcome" => outcome)
            .increment(1);
    }
    tracing::info!(enrolment_id = %enrolment_id, user_id = %caller, "activation lost to a drop; access removed again");
}

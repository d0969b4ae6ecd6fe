//! Activation (W.5.5): the single `POST /courses/{course_id}/enrolment/activate` and the
//! deprecated plural `POST /courses/activate-enrolments`. Both check the course, take the
//! enrolment's access lease (waiting up to 5 s for another sync to finish) and run the access
//! sync with `activate`, which grants member access, leaves the waitlist and sets
//! `activated_at`. A drop that wins meanwhile re-opens its access removal (S3.2), so there is
//! no undo here. Both run detached, so a disconnect cannot cut a sync short.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use uuid::Uuid;

use crate::domain::audit::Actor;
use crate::domain::caller::Caller;
use crate::repo::{self, access::Snapshot, enrolments::ActivationCandidate};
use crate::usecases::Services;
use crate::usecases::UseCaseError;
use crate::usecases::access::{self, SyncRequest, Synced, Trigger};
use crate::usecases::enrolment_checks::{self, Refusal};

/// How long an activation waits for another sync's access lease, and how often it looks.
const LEASE_WAIT: Duration = Duration::from_secs(5);
const LEASE_POLL: Duration = Duration::from_millis(250);

/// Why one enrolment was not activated (the plural's per-item errors, api.md §4.5.9, and the
/// single activation's refusals, W.3.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotActivated {
    #[error("No enrolment found for this user in the course")]
    NoEnrolment,
    #[error("Cannot activate a dropped enrolment")]
    Dropped,
    #[error("Course is in '{0}' status")]
    CourseStatus(String),
    #[error("Course has ended")]
    CourseEnded,
    #[error("Course has not started yet")]
    NotStarted,
    #[error("Access for this enrolment is being updated; please try again shortly")]
    Busy,
    #[error("Failed to grant access \u{2014} please try again later")]
    GrantFailed,
    /// An unclaim won while the activation ran (addendum §3.4.3).
    #[error("This enrolment is no longer claimed by you")]
    NoLongerClaimed,
}

/// The activation's own words for the shared checks.
impl From<Refusal> for NotActivated {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::EnrolmentNotFound { .. } => Self::NoEnrolment,
            Refusal::Dropped => Self::Dropped,
            Refusal::CourseNotActive { status } => Self::CourseStatus(status),
            Refusal::AccessEnded => Self::CourseEnded,
        }
    }
}

impl NotActivated {
    /// The plural's per-item sentence: its dropped wording predates the single activation,
    /// and a busy lease reads as a failed grant (W.3.3).
    fn item_error(self) -> String {
        match self {
            NotActivated::Dropped | NotActivated::NoEnrolment => {
                "This enrolment has been dropped".to_owned()
            }
            NotActivated::Busy => NotActivated::GrantFailed.to_string(),
            other => other.to_string(),
        }
    }
}

/// The outcome for one enrolment: the project id when activated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    pub enrolment_id: Uuid,
    pub outcome: Result<Uuid, String>,
}

/// The single activation's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activated {
    pub enrolment_id: Uuid,
    pub project_id: Uuid,
}

/// Why the single activation failed.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error(transparent)]
    Refused(#[from] NotActivated),
}

impl ActivationError {
    pub fn answer(&self) -> crate::usecases::error::Answer {
        use crate::usecases::error::{Answer, ErrorCode as C, StatusCode as S};
        let Self::Refused(reason) = self;
        match reason {
            NotActivated::NoEnrolment | NotActivated::NoLongerClaimed => {
                Answer::new(S::NOT_FOUND, C::EntityNotFound)
            }
            NotActivated::GrantFailed => Answer::new(S::BAD_GATEWAY, C::ExternalServiceError),
            _ => Answer::new(S::CONFLICT, C::InvalidRequest),
        }
    }
}

/// `POST /courses/{course_id}/enrolment/activate`.
pub async fn activate_enrolment(
    services: &Services,
    caller: &Caller,
    course_id: Uuid,
) -> Result<Activated, UseCaseError> {
    let services = services.clone();
    let actor = Actor::student(caller);
    let caller = caller.sub;
    services
        .tasks
        .clone()
        .run("activate_enrolment", async move {
            let now = Utc::now();
            let target = repo::enrolments::activation_target(&services.db, course_id, caller)
                .await?
                .ok_or(ActivationError::Refused(NotActivated::NoEnrolment))?;
            let activated = Activated {
                enrolment_id: target.id,
                project_id: target.project_id,
            };
            if target.dropped {
                return Err(ActivationError::from(NotActivated::Dropped).into());
            }
            if target.activated_at.is_some() {
                return Ok(activated);
            }
            course_checks(&target, now).map_err(ActivationError::from)?;
            match activate_one(&services, target.id, &actor, now).await {
                Ok(Done::Activated) => Ok(activated),
                // The single activation answers an unclaim that won like no enrolment (W.3.1).
                Ok(Done::Refused(NotActivated::NoLongerClaimed)) => {
                    Err(ActivationError::from(NotActivated::NoEnrolment).into())
                }
                Ok(Done::Refused(reason)) => Err(ActivationError::from(reason).into()),
                Err(err) => Err(err.into()),
            }
        })
        .await?
}

/// The deprecated `POST /courses/activate-enrolments`: each of the caller's claimed, not yet
/// activated, live enrolments, in `created_at` order.
pub async fn activate_enrolments(
    services: &Services,
    caller: &Caller,
) -> Result<Vec<Activation>, UseCaseError> {
    let services = services.clone();
    let actor = Actor::student(caller);
    let caller = caller.sub;
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
                    let actor = &actor;
                    async move {
                        let outcome = match course_checks(&candidate, now) {
                            Err(reason) => Err(reason.item_error()),
                            Ok(()) => {
                                match activate_one(services, candidate.id, actor, now).await {
                                    Ok(Done::Activated) => Ok(candidate.project_id),
                                    Ok(Done::Refused(reason)) => Err(reason.item_error()),
                                    Err(_) => Err(NotActivated::GrantFailed.item_error()),
                                }
                            }
                        };
                        Activation {
                            enrolment_id: candidate.id,
                            outcome,
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

/// Checks 3–5 of W.3.1: the course is active, has not ended and has started.
fn course_checks(c: &ActivationCandidate, now: DateTime<Utc>) -> Result<(), NotActivated> {
    check_course(&c.course_status, c.start_date, c.end_date, now)
}

fn check_course(
    course_status: &str,
    start_date: Option<DateTime<Utc>>,
    end_date: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), NotActivated> {
    enrolment_checks::course_open::<NotActivated>(course_status, end_date, now)?;
    if start_date.is_some_and(|start| now < start) {
        return Err(NotActivated::NotStarted);
    }
    Ok(())
}

enum Done {
    Activated,
    Refused(NotActivated),
}

/// Steps 3–5 of W.5.5 for one enrolment that passed the checks.
async fn activate_one(
    services: &Services,
    enrolment_id: Uuid,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Done, sqlx::Error> {
    let run = Uuid::new_v4();
    if let Some(done) = take_lease(services, enrolment_id, run).await? {
        return Ok(done);
    }
    let synced = access::sync(
        services,
        SyncRequest {
            enrolment_id,
            lease: run,
            now,
            activate: true,
            trigger: Trigger::Activation,
            actor: actor.clone(),
            expected_claimant: actor.id,
        },
    )
    .await;
    Ok(match synced {
        Synced::Applied(_) => {
            metrics::counter!("vlab_enrolments_activated_total").increment(1);
            Done::Activated
        }
        Synced::Dropped => Done::Refused(NotActivated::Dropped),
        Synced::Unclaimed => Done::Refused(NotActivated::NoLongerClaimed),
        Synced::Failed | Synced::LeaseLost => Done::Refused(NotActivated::GrantFailed),
        Synced::RecordFailed(err) => return Err(err),
        Synced::Skipped(snapshot) => Done::Refused(skipped_reason(snapshot.as_deref(), now)),
    })
}

/// Step 3: the access lease, polled every 250 ms for up to 5 s. `Some` when the answer is
/// already known: another call activated the enrolment, a drop started, or the wait ran out.
async fn take_lease(
    services: &Services,
    enrolment_id: Uuid,
    run: Uuid,
) -> Result<Option<Done>, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + LEASE_WAIT;
    loop {
        if repo::access::take_lease(&services.db, enrolment_id, run, Utc::now()).await? {
            return Ok(None);
        }
        match repo::access::snapshot(&services.db, enrolment_id).await? {
            None => return Ok(Some(Done::Refused(NotActivated::NoEnrolment))),
            Some(s) if s.activated_at.is_some() => return Ok(Some(Done::Activated)),
            Some(s) if s.is_dropped || s.drop_started => {
                return Ok(Some(Done::Refused(NotActivated::Dropped)));
            }
            Some(_) => {}
        }
        if tokio::time::Instant::now() + LEASE_POLL > deadline {
            return Ok(Some(Done::Refused(NotActivated::Busy)));
        }
        tokio::time::sleep(LEASE_POLL).await;
    }
}

/// A skipped sync re-evaluates checks 1–5 on its snapshot and answers the first that fails.
fn skipped_reason(snapshot: Option<&Snapshot>, now: DateTime<Utc>) -> NotActivated {
    let Some(s) = snapshot else {
        return NotActivated::NoEnrolment;
    };
    if s.claimed_by.is_none() {
        return NotActivated::NoEnrolment;
    }
    if s.is_dropped || s.drop_started {
        return NotActivated::Dropped;
    }
    match check_course(&s.status, s.start_date, s.end_date, now) {
        Err(reason) => reason,
        Ok(()) => NotActivated::GrantFailed,
    }
}

//! Per-student credit top-up (`POST /seats/courses/{course_id}/enrolments/{enrolment_id}/top-up`,
//! round-2 addendum F5): a support action that grants extra credits to one student's project.
//!
//! One transaction checks the request and records the top-up as `granting` under a 5-minute
//! lease; the grant runs with no lock held; a second transaction settles the row. A grant cannot
//! be taken back safely (a deplete would take the student's own credits too), so nothing is
//! compensated: an uncertain grant stays `in_doubt` for an operator to check. [`stale`] marks
//! `in_doubt` the top-ups whose process stopped while granting.
//!
//! Lock order: `course` (`FOR SHARE`) → `course_enrolment` (`FOR UPDATE`) → `credit_top_up`.

mod error;
mod settle;
pub mod stale;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use error::TopUpError;

use crate::clients::IdempotencyKey;
use crate::domain::audit::{Actor, ActorRole};
use crate::domain::caller::Caller;
use crate::repo;
use crate::repo::top_ups::{self, IN_FLIGHT_INDEX, NewTopUp};
use crate::usecases::{Services, UseCaseError};
use crate::usecases::{enrolment_checks, events};

/// What the caller asks for.
#[derive(Debug, Clone)]
pub struct TopUpRequest {
    /// Whole credits, 1..10 000.
    pub amount: i32,
    /// Trimmed; `None` when empty.
    pub note: Option<String>,
}

/// A granted top-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToppedUp {
    pub top_up_id: Uuid,
    pub enrolment_id: Uuid,
    pub project_id: Uuid,
    pub amount: i32,
    /// The enrolment's `extra_credits` after the grant.
    pub extra_credits: i32,
    /// `credits_per_seat + extra_credits`.
    pub credits_granted_total: i64,
}

/// A top-up recorded as `granting`, whose grant is about to be sent.
#[derive(Debug, Clone)]
struct Started {
    id: Uuid,
    enrolment_id: Uuid,
    course_id: Uuid,
    project_id: Uuid,
    amount: i32,
    note: Option<String>,
    credits_per_seat: i32,
}

/// Adds `request.amount` credits to the student project of `enrolment_id`, as `caller` (a
/// service admin, or a course admin within `FACULTY_TOP_UP_MAX_CREDITS`).
pub async fn top_up(
    services: &Services,
    caller: &Caller,
    course_id: Uuid,
    enrolment_id: Uuid,
    request: TopUpRequest,
) -> Result<ToppedUp, UseCaseError> {
    let services = services.clone();
    let actor = Actor::staff(caller);
    let requested_by = caller.sub;
    services
        .tasks
        .clone()
        .run("top_up_credits", async move {
            let now = Utc::now();
            let started = start(
                &services,
                &actor,
                requested_by,
                course_id,
                enrolment_id,
                request,
                now,
            )
            .await?;
            // The top-up's id identifies the grant to the accounting service (which ignores it
            // today; nothing here relies on it).
            let key = IdempotencyKey::top_up(started.id);
            let grant = services
                .accounting
                .grant(started.project_id, i64::from(started.amount), Some(&key))
                .await;
            settle::settle(&services, &actor, &started, grant).await
        })
        .await?
}

/// Step 1, one transaction: the checks of §6.2 and the `granting` row.
async fn start(
    services: &Services,
    actor: &Actor,
    requested_by: Uuid,
    course_id: Uuid,
    enrolment_id: Uuid,
    request: TopUpRequest,
    now: DateTime<Utc>,
) -> Result<Started, UseCaseError> {
    let mut tx = services.db.begin().await?;
    let (course, enrolment) =
        enrolment_checks::lock_live_enrolment::<TopUpError>(&mut tx, course_id, enrolment_id)
            .await?;
    // A top-up whose process stopped while granting: its outcome is unknown from now on, and
    // it no longer blocks this one.
    let lapsed = top_ups::mark_stale(&mut *tx, Some(enrolment_id), now, 1).await?;

    enrolment_checks::course_open::<TopUpError>(&course.status, course.end_date, now)?;
    if top_ups::in_flight(&mut *tx, enrolment_id, now).await? {
        return Err(TopUpError::InProgress.into());
    }
    if actor.role == ActorRole::CourseAdmin {
        let limit = services.config.faculty_top_up_max_credits;
        if limit == 0 {
            return Err(TopUpError::FacultyDisabled.into());
        }
        let used = top_ups::course_admin_total(&mut *tx, enrolment_id).await?;
        if used + i64::from(request.amount) > i64::from(limit) {
            return Err(TopUpError::FacultyLimit { limit, used }.into());
        }
    }

    let started = Started {
        id: Uuid::new_v4(),
        enrolment_id,
        course_id,
        project_id: enrolment.project_id,
        amount: request.amount,
        note: request.note,
        credits_per_seat: course.credits_per_seat,
    };
    let new = NewTopUp {
        id: started.id,
        enrolment_id,
        course_id,
        project_id: started.project_id,
        amount: started.amount,
        note: started.note.as_deref(),
        requested_by,
        requested_by_role: actor.role.as_str(),
        lease_id: Uuid::new_v4(),
    };
    top_ups::insert(&mut *tx, &new, now).await.map_err(|err| {
        match repo::unique_violation(&err) {
            Some(c) if c == IN_FLIGHT_INDEX => TopUpError::InProgress.into(),
            _ => UseCaseError::from(err),
        }
    })?;
    let lapsed_events: Vec<_> = lapsed
        .iter()
        .map(|t| stale::in_doubt_event(t, &Actor::system(), now))
        .collect();
    events::record(&mut *tx, &lapsed_events).await?;
    tx.commit().await?;
    stale::count(lapsed.len() as u64);
    Ok(started)
}

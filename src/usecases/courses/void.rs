//! Void a course (`POST /courses/{id}/void`, rules.md §4.7) — best effort: the course is set
//! `voided` first, then every enrolment is dropped, pending access removals are attempted and
//! the lab is depleted. Failures are counted in the summary; the daily job retries them.

use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use crate::domain::audit::{Actor, EventType};
use crate::repo::{self, courses::Course};
use crate::usecases::Services;
use crate::usecases::UseCaseError;
use crate::usecases::courses::CourseError;
use crate::usecases::drops::{self, DropReason};
use crate::usecases::events::{self, EventExt};
use crate::usecases::revocations;

/// `void_summary` of api.md §4.5.6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoidSummary {
    /// Drops settled by this call.
    pub enrolments_dropped: u64,
    /// Drops that did not settle.
    pub enrolments_failed: u64,
    /// Drops of this course still `revoking` after this call.
    pub access_removals_pending: u64,
    /// The course flag after this call.
    pub budget_depleted: bool,
}

#[derive(Debug, Clone)]
pub struct Voided {
    pub course: Course,
    pub summary: VoidSummary,
}

pub async fn void(
    services: &Services,
    actor: Actor,
    course_id: Uuid,
) -> Result<Voided, UseCaseError> {
    let services = services.clone();
    services
        .tasks
        .clone()
        .run("void_course", async move {
            run(&services, &actor, course_id).await
        })
        .await?
}

/// Sets the course `voided` under its lock (already voided: no change), with the
/// `course_voided` event when the status changed.
pub(crate) async fn set_voided(
    services: &Services,
    course_id: Uuid,
    actor: &Actor,
    now: chrono::DateTime<Utc>,
    refuse_active: bool,
) -> Result<(), UseCaseError> {
    let mut tx = services.db.begin().await?;
    let course = repo::courses::find_for_update(&mut *tx, course_id)
        .await?
        .ok_or(CourseError::NotFound(course_id))?;
    if refuse_active && course.status == "active" {
        return Err(CourseError::ActiveNotDeletable.into());
    }
    if repo::drops::set_voided(&mut *tx, course_id, now).await? {
        let event = events::event(course_id, EventType::CourseVoided, actor, now)
            .before(json!({ "status": course.status }))
            .after(json!({ "status": "voided" }));
        events::record(&mut *tx, &[event]).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn run(services: &Services, actor: &Actor, course_id: Uuid) -> Result<Voided, UseCaseError> {
    let now = Utc::now();
    // From this commit on, assign, provision, transfer, claim and activation are refused.
    set_voided(services, course_id, actor, now, false).await?;
    tracing::info!(%course_id, "course voided");

    let enrolments = drops::undropped_enrolments(services, course_id).await?;
    let outcomes =
        drops::drop_enrolments(services, &enrolments, DropReason::Void, actor, now).await;
    let (enrolments_dropped, enrolments_failed) = drops::tally(&outcomes);
    let sweep = drops::remove_pending_access(services, course_id, actor, now).await?;
    // Pending removals of unclaimed accounts, like revoking drops (addendum §3.5).
    revocations::revoke_course(services, course_id, actor, now).await?;
    let budget_depleted = drops::deplete_lab_budget(services, course_id, actor, "void").await?;

    let course = repo::courses::find(&services.db, course_id)
        .await?
        .ok_or(CourseError::NotFound(course_id))?;
    Ok(Voided {
        course,
        summary: VoidSummary {
            enrolments_dropped,
            enrolments_failed,
            access_removals_pending: sweep.still_revoking,
            budget_depleted,
        },
    })
}

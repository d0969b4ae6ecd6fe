//! Delete a course (`DELETE /courses/{id}`, rules.md §4.8) — strict and resumable: either every
//! step is done and the rows are gone, or the course is left `voided` with a 502 and a retry
//! resumes where this one stopped. The purge re-checks everything under the course lock.

use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use crate::domain::audit::{Actor, EventType};
use crate::repo::{self, drops::PurgeBlockers};
use crate::usecases::Services;
use crate::usecases::UseCaseError;
use crate::usecases::courses::CourseError;
use crate::usecases::drops::{self, DropReason};
use crate::usecases::events::{self, EventExt};
use crate::usecases::revocations;

pub async fn delete(
    services: &Services,
    actor: Actor,
    course_id: Uuid,
) -> Result<(), UseCaseError> {
    let services = services.clone();
    services
        .tasks
        .clone()
        .run("delete_course", async move {
            run(&services, &actor, course_id).await
        })
        .await?
}

async fn run(services: &Services, actor: &Actor, course_id: Uuid) -> Result<(), UseCaseError> {
    let now = Utc::now();
    let course = repo::courses::find(&services.db, course_id)
        .await?
        .ok_or(CourseError::NotFound(course_id))?;
    if course.status == "active" {
        return Err(CourseError::ActiveNotDeletable.into());
    }
    // Step 2: a failure later leaves a voided course that a retry resumes.
    super::void::set_voided(services, course_id, actor, now, true).await?;

    let enrolments = drops::undropped_enrolments(services, course_id).await?;
    let outcomes =
        drops::drop_enrolments(services, &enrolments, DropReason::Delete, actor, now).await;
    let (_, failed) = drops::tally(&outcomes);
    if failed > 0 {
        return Err(CourseError::DeleteDropsFailed { failed, course_id }.into());
    }
    let sweep = drops::remove_pending_access(services, course_id, actor, now).await?;
    if sweep.still_revoking > 0 {
        return Err(CourseError::DeleteAccessPending {
            pending: sweep.still_revoking,
            course_id,
        }
        .into());
    }
    // Pending removals of unclaimed accounts, like revoking drops (addendum §3.5).
    let revoked = revocations::revoke_course(services, course_id, actor, now).await?;
    if revoked.still_pending > 0 {
        return Err(CourseError::DeleteRevocationsPending {
            pending: revoked.still_pending,
            course_id,
        }
        .into());
    }
    if !drops::deplete_lab_budget(services, course_id, actor, "delete").await? {
        return Err(CourseError::DeleteBudgetNotDepleted(course_id).into());
    }
    purge(services, course_id, actor, Utc::now()).await?;
    tracing::info!(%course_id, "course deleted");
    Ok(())
}

/// Step 6: one transaction, with the course locked, re-checking that nothing is left to drop
/// or revoke (a concurrent assign, drop or void may have raced) and that no access sync is in
/// flight, then the hard delete.
async fn purge(
    services: &Services,
    course_id: Uuid,
    actor: &Actor,
    now: chrono::DateTime<Utc>,
) -> Result<(), UseCaseError> {
    let mut tx = services.db.begin().await?;
    let course = repo::courses::find_for_update(&mut *tx, course_id)
        .await?
        .ok_or(CourseError::NotFound(course_id))?;
    if course.status == "active" {
        return Err(CourseError::ActiveNotDeletable.into());
    }
    let PurgeBlockers {
        undropped,
        depleting,
        access_pending,
        revocations_pending,
    } = repo::drops::purge_blockers(&mut *tx, course_id, now).await?;
    if undropped > 0 || depleting > 0 {
        let failed = u64::try_from(undropped.max(depleting)).unwrap_or(0);
        return Err(CourseError::DeleteDropsFailed { failed, course_id }.into());
    }
    if access_pending > 0 {
        let pending = u64::try_from(access_pending).unwrap_or(0);
        return Err(CourseError::DeleteAccessPending { pending, course_id }.into());
    }
    if revocations_pending > 0 {
        let pending = u64::try_from(revocations_pending).unwrap_or(0);
        return Err(CourseError::DeleteRevocationsPending { pending, course_id }.into());
    }
    let purged = repo::drops::purge_course(&mut tx, course_id).await?;
    // The event outlives the rows it describes (no foreign key).
    let event = events::event(course_id, EventType::CourseDeleted, actor, now).data(json!({
        "seats_purged": purged.seats,
        "enrolments_purged": purged.enrolments,
    }));
    events::record(&mut *tx, &[event]).await?;
    tx.commit().await?;
    Ok(())
}

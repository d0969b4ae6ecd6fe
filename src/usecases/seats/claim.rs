//! `POST /courses/claim` (rules.md §4.12): one transaction, no external calls, no e-mail.

use chrono::Utc;
use uuid::Uuid;

use crate::repo::{self, courses::status, enrolments::ClaimCourse, enrolments::Enrolment};
use crate::usecases::Services;
use crate::usecases::UseCaseError;
use crate::usecases::seats::ClaimError;

/// The claimed enrolment and the course part of the response.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub enrolment: Enrolment,
    pub course: ClaimCourse,
}

pub async fn claim(
    services: &Services,
    caller: Uuid,
    enrolment_id: Uuid,
) -> Result<Claimed, UseCaseError> {
    let now = Utc::now();
    let mut tx = services.db.begin().await?;
    let enrolment = repo::enrolments::find_for_update(&mut *tx, enrolment_id)
        .await?
        .ok_or(ClaimError::EnrolmentNotFound)?;
    if enrolment.is_dropped || repo::enrolments::has_drop(&mut *tx, enrolment_id).await? {
        return Err(ClaimError::EnrolmentDropped.into());
    }
    if enrolment.claimed_by.is_some() {
        return Err(ClaimError::AlreadyClaimed.into());
    }
    // Read without a lock: the course row comes before the enrolment in the lock order.
    let course = repo::courses::find(&mut *tx, enrolment.course_id)
        .await?
        .ok_or(ClaimError::EnrolmentNotFound)?;
    if course.status != status::ACTIVE {
        return Err(ClaimError::CourseNotActive {
            status: course.status,
        }
        .into());
    }
    if course.end_date.is_some_and(|end| now >= end) {
        return Err(ClaimError::CourseEnded.into());
    }
    if repo::enrolments::claimed_elsewhere(&mut *tx, course.id, caller, enrolment_id).await? {
        return Err(ClaimError::ClaimedAnotherEnrolment.into());
    }
    let claimed = repo::enrolments::set_claimed_by(&mut *tx, enrolment_id, caller)
        .await
        .map_err(|err| match repo::unique_violation(&err) {
            // A concurrent claim of another enrolment of this course by the same user won.
            Some(c) if c == repo::enrolments::UNIQUE_CLAIMED_BY_INDEX => {
                UseCaseError::from(ClaimError::ClaimedAnotherEnrolment)
            }
            _ => err.into(),
        })?;
    tx.commit().await?;
    metrics::counter!("vlab_enrolments_claimed_total").increment(1);
    tracing::info!(enrolment_id = %enrolment_id, course_id = %course.id, user_id = %caller, "enrolment claimed");

    let course = repo::enrolments::claim_course(&services.db, claimed.course_id)
        .await?
        .ok_or(ClaimError::EnrolmentNotFound)?;
    Ok(Claimed {
        enrolment: claimed,
        course,
    })
}

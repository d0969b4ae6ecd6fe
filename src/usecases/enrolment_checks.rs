//! The shared checks of the enrolment routes (round-2 addendum §1.2), in their order: the
//! course exists, the enrolment exists in that course, it is not dropped; then, where the use
//! case asks for it, the course is `active` and the student's access has not ended.
//!
//! Each use case words the refusals as its own error (`From<Refusal>`), so the statuses, codes
//! and messages stay those of its endpoint; an error enum with the variants of the same names
//! gets that `From` from [`refusals_as_variants`].

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::repo::courses::{Course, status};
use crate::repo::enrolments::Enrolment;
use crate::repo::{self};
use crate::usecases::UseCaseError;
use crate::usecases::courses::CourseError;

/// Why a shared check refused the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No enrolment has that id in that course (another course's enrolment included).
    EnrolmentNotFound { enrolment_id: Uuid, course_id: Uuid },
    /// `is_dropped`, or its drop has started.
    Dropped,
    /// The course is in another status than `active`.
    CourseNotActive { status: String },
    /// The course has ended.
    AccessEnded,
}

/// `impl From<Refusal> for $error`, for an error enum whose variants `EnrolmentNotFound {
/// enrolment_id, course_id }`, `Dropped`, `CourseNotActive { status }` and `AccessEnded` word
/// the refusals of the same names.
macro_rules! refusals_as_variants {
    ($error:ty) => {
        impl From<$crate::usecases::enrolment_checks::Refusal> for $error {
            fn from(refusal: $crate::usecases::enrolment_checks::Refusal) -> Self {
                use $crate::usecases::enrolment_checks::Refusal;
                match refusal {
                    Refusal::EnrolmentNotFound {
                        enrolment_id,
                        course_id,
                    } => Self::EnrolmentNotFound {
                        enrolment_id,
                        course_id,
                    },
                    Refusal::Dropped => Self::Dropped,
                    Refusal::CourseNotActive { status } => Self::CourseNotActive { status },
                    Refusal::AccessEnded => Self::AccessEnded,
                }
            }
        }
    };
}
pub(crate) use refusals_as_variants;

/// Checks 1–3 inside `tx`: the course (`FOR SHARE`, a 404 of its own), then the enrolment of
/// that course (`FOR UPDATE`), then that it is not dropped. Returns both rows, the enrolment
/// locked for the rest of the transaction.
pub async fn lock_live_enrolment<E>(
    tx: &mut PgConnection,
    course_id: Uuid,
    enrolment_id: Uuid,
) -> Result<(Course, Enrolment), UseCaseError>
where
    E: From<Refusal>,
    UseCaseError: From<E>,
{
    let course = repo::courses::find_for_share(&mut *tx, course_id)
        .await?
        .ok_or(CourseError::NotFound(course_id))?;
    let enrolment = repo::enrolments::find_in_course_for_update(&mut *tx, course_id, enrolment_id)
        .await?
        .ok_or_else(|| {
            E::from(Refusal::EnrolmentNotFound {
                enrolment_id,
                course_id,
            })
        })?;
    if is_dropped(tx, &enrolment).await? {
        return Err(E::from(Refusal::Dropped).into());
    }
    Ok((course, enrolment))
}

/// "Dropped" in the sense of §1.2: the flag, or an `enrolment_drop` row (the drop has started).
pub async fn is_dropped(tx: &mut PgConnection, enrolment: &Enrolment) -> Result<bool, sqlx::Error> {
    Ok(enrolment.is_dropped || repo::enrolments::has_drop(tx, enrolment.id).await?)
}

/// The course is `active` and the student's access has not ended.
pub fn course_open<E: From<Refusal>>(
    course_status: &str,
    end_date: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), E> {
    if course_status != status::ACTIVE {
        return Err(E::from(Refusal::CourseNotActive {
            status: course_status.to_owned(),
        }));
    }
    if access_ended(end_date, now) {
        return Err(E::from(Refusal::AccessEnded));
    }
    Ok(())
}

/// The student's access has ended (rules.md §1): the course's `end_date` is set and past.
pub fn access_ended(end_date: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    end_date.is_some_and(|end| now >= end)
}

//! What an e-mail correction or an unclaim can refuse (round-2 addendum §3.2).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::datetime;
use crate::usecases::enrolment_checks::refusals_as_variants;
use crate::usecases::error::{Answer, ErrorCode, StatusCode};

#[derive(Debug, thiserror::Error)]
pub enum CorrectionError {
    #[error("Enrolment {enrolment_id} not found in course {course_id}")]
    EnrolmentNotFound { enrolment_id: Uuid, course_id: Uuid },
    #[error("This enrolment has been dropped")]
    Dropped,
    #[error("Cannot correct the e-mail of a claimed enrolment. Unclaim it first.")]
    Claimed,
    #[error("Cannot correct the e-mail: course is in '{status}' status")]
    CourseNotActive { status: String },
    #[error("Cannot correct the e-mail: the student's access has ended")]
    AccessEnded,
    #[error("This enrolment has not been claimed")]
    NotClaimed,
    #[error("Cannot unclaim: course is in '{status}' status")]
    CannotUnclaim { status: String },
    #[error("Another enrolment of this course already uses {email}")]
    EmailInUse { email: String },
    #[error(
        "This student has been sent {max} claim e-mails in the last 24 hours. Try again after {}.",
        datetime::format(next_allowed_at)
    )]
    DailyCapReached {
        max: u32,
        enrolment_id: Uuid,
        next_allowed_at: DateTime<Utc>,
        retry_after: u64,
    },
}

refusals_as_variants!(CorrectionError);

impl CorrectionError {
    pub fn answer(&self) -> Answer {
        use ErrorCode as C;
        use StatusCode as S;
        match self {
            Self::EnrolmentNotFound { .. } => Answer::new(S::NOT_FOUND, C::EntityNotFound),
            Self::Dropped
            | Self::Claimed
            | Self::CourseNotActive { .. }
            | Self::AccessEnded
            | Self::NotClaimed
            | Self::CannotUnclaim { .. } => Answer::new(S::CONFLICT, C::InvalidRequest),
            Self::EmailInUse { email } => {
                Answer::new(S::CONFLICT, C::EntityAlreadyExists).context("email", email)
            }
            Self::DailyCapReached {
                enrolment_id,
                next_allowed_at,
                retry_after,
                ..
            } => Answer::new(S::TOO_MANY_REQUESTS, C::LimitExceeded)
                .context("enrolment_id", enrolment_id)
                .context("next_allowed_at", datetime::format(next_allowed_at))
                .retry_after(*retry_after),
        }
    }
}

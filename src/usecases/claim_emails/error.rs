//! What a resend of claim e-mails can refuse.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::datetime;
use crate::usecases::enrolment_checks::refusals_as_variants;
use crate::usecases::error::{Answer, ErrorCode, StatusCode};

#[derive(Debug, thiserror::Error)]
pub enum ResendError {
    #[error("Enrolment {enrolment_id} not found in course {course_id}")]
    EnrolmentNotFound { enrolment_id: Uuid, course_id: Uuid },
    #[error("This enrolment has been dropped")]
    Dropped,
    #[error("This enrolment has already been claimed")]
    AlreadyClaimed,
    #[error("Cannot resend the claim e-mail: course is in '{status}' status")]
    CourseNotActive { status: String },
    #[error("Cannot resend claim e-mails: course is in '{status}' status")]
    CourseNotActiveForMany { status: String },
    #[error("Cannot resend the claim e-mail: the student's access has ended")]
    AccessEnded,
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
    #[error(
        "A claim e-mail to this student was queued less than {minutes} minutes ago. Try again after {}.",
        datetime::format(next_allowed_at)
    )]
    IntervalApplies {
        minutes: u32,
        enrolment_id: Uuid,
        next_allowed_at: DateTime<Utc>,
        retry_after: u64,
    },
}

refusals_as_variants!(ResendError);

impl ResendError {
    pub fn answer(&self) -> Answer {
        use ErrorCode as C;
        use StatusCode as S;
        match self {
            Self::EnrolmentNotFound { .. } => Answer::new(S::NOT_FOUND, C::EntityNotFound),
            Self::Dropped
            | Self::AlreadyClaimed
            | Self::CourseNotActive { .. }
            | Self::CourseNotActiveForMany { .. }
            | Self::AccessEnded => Answer::new(S::CONFLICT, C::InvalidRequest),
            Self::DailyCapReached {
                enrolment_id,
                next_allowed_at,
                retry_after,
                ..
            }
            | Self::IntervalApplies {
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

//! What a credit top-up can refuse or fail with (round-2 addendum §6.2).

use uuid::Uuid;

use crate::usecases::enrolment_checks::refusals_as_variants;
use crate::usecases::error::{Answer, ErrorCode, StatusCode};

#[derive(Debug, thiserror::Error)]
pub enum TopUpError {
    #[error("Enrolment {enrolment_id} not found in course {course_id}")]
    EnrolmentNotFound { enrolment_id: Uuid, course_id: Uuid },
    #[error("This enrolment has been dropped")]
    Dropped,
    #[error("Cannot top up: course is in '{status}' status")]
    CourseNotActive { status: String },
    #[error("Cannot top up: the student's access has ended")]
    AccessEnded,
    #[error("Another top-up for this student is still being processed")]
    InProgress,
    #[error("Top-ups by course administrators are disabled; ask an OBI administrator")]
    FacultyDisabled,
    #[error(
        "Course administrators may add at most {limit} extra credits per student; {used} already added"
    )]
    FacultyLimit { limit: u32, used: i64 },
    #[error("Failed to add {amount} credits to project {project_id}")]
    GrantFailed { amount: i32, project_id: Uuid },
    #[error(
        "Could not confirm that {amount} credits were added to project {project_id}; check the student's balance before trying again"
    )]
    GrantUncertain { amount: i32, project_id: Uuid },
}

refusals_as_variants!(TopUpError);

impl TopUpError {
    pub fn answer(&self) -> Answer {
        use ErrorCode as C;
        use StatusCode as S;
        match self {
            Self::EnrolmentNotFound { .. } => Answer::new(S::NOT_FOUND, C::EntityNotFound),
            Self::Dropped | Self::CourseNotActive { .. } | Self::AccessEnded | Self::InProgress => {
                Answer::new(S::CONFLICT, C::InvalidRequest)
            }
            Self::FacultyDisabled => Answer::new(S::CONFLICT, C::LimitExceeded),
            Self::FacultyLimit { limit, used } => Answer::new(S::CONFLICT, C::LimitExceeded)
                .context("limit", limit)
                .context("used", used),
            Self::GrantFailed { .. } | Self::GrantUncertain { .. } => {
                Answer::new(S::BAD_GATEWAY, C::ExternalServiceError)
            }
        }
    }
}

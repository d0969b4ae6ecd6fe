//! What creating, updating, activating, voiding and deleting a course can refuse.

use uuid::Uuid;

use crate::domain::course_dates::ActivationDateError;
use crate::usecases::error::{Answer, ErrorCode, StatusCode};

#[derive(Debug, thiserror::Error)]
pub enum CourseError {
    #[error("Course {0} not found")]
    NotFound(Uuid),
    #[error("Only draft courses can be modified")]
    NotDraft,
    /// One of the activation date rules (its `Display` is the public message).
    #[error(transparent)]
    DatesInvalid(ActivationDateError),
    #[error("Virtual lab {0} not found")]
    LabNotFound(Uuid),
    #[error("Virtual lab is not a course lab")]
    NotACourseLab,
    #[error("Project {project_id} not found in virtual lab {vlab_id}")]
    TemplateProjectNotFound { project_id: Uuid, vlab_id: Uuid },
    #[error("Institution {0} not found")]
    InstitutionNotFound(Uuid),
    #[error("Course creation failed due to a conflict (virtual lab may already have a course)")]
    Conflict,
    #[error("Failed to fund the template project {0}")]
    TemplateFundingFailed(Uuid),
    #[error("Course creation failed")]
    NotSaved,
    #[error("Active courses cannot be deleted. Void the course first.")]
    ActiveNotDeletable,
    #[error(
        "Failed to drop {failed} enrolment(s) of course {course_id}; the course was voided but not deleted. Retry the delete."
    )]
    DeleteDropsFailed { failed: u64, course_id: Uuid },
    #[error(
        "Failed to remove access for {pending} dropped enrolment(s) of course {course_id}; the course was voided but not deleted. Retry the delete."
    )]
    DeleteAccessPending { pending: u64, course_id: Uuid },
    #[error(
        "Failed to remove access for {pending} unclaimed enrolment(s) of course {course_id}; the course was voided but not deleted. Retry the delete."
    )]
    DeleteRevocationsPending { pending: u64, course_id: Uuid },
    #[error("Failed to deplete vlab budget for course {0}")]
    DeleteBudgetNotDepleted(Uuid),
}

impl CourseError {
    pub fn answer(&self) -> Answer {
        use ErrorCode as C;
        use StatusCode as S;
        match self {
            Self::NotFound(_)
            | Self::LabNotFound(_)
            | Self::TemplateProjectNotFound { .. }
            | Self::InstitutionNotFound(_) => Answer::new(S::NOT_FOUND, C::EntityNotFound),
            Self::NotDraft | Self::DatesInvalid(_) => Answer::new(S::CONFLICT, C::NotAllowedOp),
            Self::NotACourseLab => Answer::new(S::FORBIDDEN, C::NotAllowedOp),
            Self::Conflict => Answer::new(S::CONFLICT, C::EntityAlreadyExists),
            Self::TemplateFundingFailed(_) => Answer::new(S::BAD_GATEWAY, C::ExternalServiceError),
            Self::NotSaved => Answer::new(S::INTERNAL_SERVER_ERROR, C::DatabaseError),
            Self::ActiveNotDeletable => Answer::new(S::CONFLICT, C::ForbiddenOperation),
            Self::DeleteDropsFailed { .. }
            | Self::DeleteAccessPending { .. }
            | Self::DeleteRevocationsPending { .. }
            | Self::DeleteBudgetNotDepleted(_) => {
                Answer::new(S::BAD_GATEWAY, C::ExternalServiceError)
            }
        }
    }
}

//! What the audit reads can refuse.

use uuid::Uuid;

use crate::usecases::error::{Answer, ErrorCode, StatusCode};

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("Enrolment {enrolment_id} not found in course {course_id}")]
    EnrolmentNotFound { enrolment_id: Uuid, course_id: Uuid },
}

impl EventError {
    pub fn answer(&self) -> Answer {
        match self {
            Self::EnrolmentNotFound { .. } => {
                Answer::new(StatusCode::NOT_FOUND, ErrorCode::EntityNotFound)
            }
        }
    }
}

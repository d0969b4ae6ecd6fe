//! What the expiry report's reads can refuse.

use uuid::Uuid;

use crate::usecases::error::{Answer, ErrorCode, StatusCode};

#[derive(Debug, thiserror::Error)]
pub enum ExpiryRunError {
    #[error("Expiry run {0} not found")]
    NotFound(Uuid),
}

impl ExpiryRunError {
    pub fn answer(&self) -> Answer {
        match self {
            Self::NotFound(_) => Answer::new(StatusCode::NOT_FOUND, ErrorCode::EntityNotFound),
        }
    }
}

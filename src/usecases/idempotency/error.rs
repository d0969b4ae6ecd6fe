//! What the replay record of an `Idempotency-Key` can refuse.

use crate::domain::idempotency_key::HEADER;
use crate::usecases::error::{Answer, ErrorCode, StatusCode};

#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    /// The first request with this key still holds its lease.
    #[error(
        "A request with this Idempotency-Key is still in progress; send it again once it has finished to get its answer"
    )]
    InProgress,
    /// The key's first request had another body (or query): the message is the 422's
    /// problem under the header's name.
    #[error("Already used for a different request; send a new key with a new request")]
    KeyReused,
}

impl IdempotencyError {
    pub fn answer(&self) -> Answer {
        match self {
            Self::InProgress => Answer::new(StatusCode::CONFLICT, ErrorCode::DataConflict),
            Self::KeyReused => {
                Answer::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidRequest)
                    .field(HEADER)
            }
        }
    }
}

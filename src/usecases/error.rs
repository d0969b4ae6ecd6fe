//! The one error type of the use-case layer, and how each error is answered.
//!
//! Each feature has its own error enum next to its use cases (`LabError`, `CourseError`, …);
//! every variant has a fixed public message (its `Display`, as api.md words it) and, right below
//! the enum, its status, error code and the context api.md lets clients see (an [`Answer`]).
//! Causes from Keycloak, accounting, SMTP or the database are logged, never shown. The HTTP layer
//! renders an [`Answer`] as the error body in one place.

use std::error::Error as StdError;
use std::fmt;

pub use http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::claim_emails::ResendError;
use super::corrections::CorrectionError;
use super::courses::CourseError;
use super::events::EventError;
use super::expiry_runs::ExpiryRunError;
use super::idempotency::IdempotencyError;
use super::institutions::InstitutionError;
use super::invites::InviteError;
use super::labs::LabError;
use super::projects::ProjectError;
use super::seats::activate::ActivationError;
use super::seats::{AssignError, ClaimError, SeatError};
use super::tasks::TaskFailed;
use super::top_ups::TopUpError;

/// The error codes of api.md §2.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    AuthorizationError,
    NotAllowedOp,
    ForbiddenOperation,
    EntityNotFound,
    EntityAlreadyExists,
    EntityAlreadyUpdated,
    InvalidRequest,
    InvalidParameter,
    TokenExpired,
    DataConflict,
    LimitExceeded,
    ExternalServiceError,
    DatabaseError,
    ServerError,
}

/// How an error is answered: status, code and the context clients may see (api.md §2 and the
/// error translation of rules.md §3). The message is the error's `Display`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    pub code: ErrorCode,
    /// A fixed `details` text given by api.md.
    pub details: Option<&'static str>,
    /// Whitelisted context, shown as `details = "k=v, …"` and `data = {k: v}`.
    pub context: Vec<(&'static str, String)>,
    /// Seconds the client should wait before trying again (`Retry-After` of a 429).
    pub retry_after: Option<u64>,
    /// A 422 about one input (a header): rendered as a validation error whose `details`
    /// name it, with the error's message as its problem.
    pub field: Option<&'static str>,
}

impl Answer {
    pub fn new(status: StatusCode, code: ErrorCode) -> Self {
        Self {
            status,
            code,
            details: None,
            context: Vec::new(),
            retry_after: None,
            field: None,
        }
    }

    /// Answers as a validation problem of `field` (api.md §2.2).
    pub fn field(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn details(mut self, details: &'static str) -> Self {
        self.details = Some(details);
        self
    }

    pub fn context(mut self, key: &'static str, value: impl ToString) -> Self {
        self.context.push((key, value.to_string()));
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UseCaseError {
    #[error(transparent)]
    Institution(#[from] InstitutionError),
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error(transparent)]
    Project(#[from] ProjectError),
    #[error(transparent)]
    Invite(#[from] InviteError),
    #[error(transparent)]
    Course(#[from] CourseError),
    #[error(transparent)]
    Seat(#[from] SeatError),
    #[error(transparent)]
    Assign(#[from] AssignError),
    #[error(transparent)]
    Claim(#[from] ClaimError),
    #[error(transparent)]
    Activation(#[from] ActivationError),
    #[error(transparent)]
    Event(#[from] EventError),
    #[error(transparent)]
    Resend(#[from] ResendError),
    #[error(transparent)]
    Correction(#[from] CorrectionError),
    #[error(transparent)]
    ExpiryRun(#[from] ExpiryRunError),
    #[error(transparent)]
    Idempotency(#[from] IdempotencyError),
    #[error(transparent)]
    TopUp(#[from] TopUpError),
    /// An unexpected database failure (connection lost, pool timeout…).
    #[error("A database error occurred")]
    Database(#[from] sqlx::Error),
    /// Anything else unexpected, including a use-case task that panicked.
    #[error("An unexpected error occurred")]
    Internal(#[source] anyhow::Error),
}

impl UseCaseError {
    pub fn answer(&self) -> Answer {
        match self {
            Self::Institution(e) => e.answer(),
            Self::Lab(e) => e.answer(),
            Self::Project(e) => e.answer(),
            Self::Invite(e) => e.answer(),
            Self::Course(e) => e.answer(),
            Self::Seat(e) => e.answer(),
            Self::Assign(e) => e.answer(),
            Self::Claim(e) => e.answer(),
            Self::Activation(e) => e.answer(),
            Self::Event(e) => e.answer(),
            Self::Resend(e) => e.answer(),
            Self::Correction(e) => e.answer(),
            Self::ExpiryRun(e) => e.answer(),
            Self::Idempotency(e) => e.answer(),
            Self::TopUp(e) => e.answer(),
            Self::Database(_) => {
                Answer::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::DatabaseError)
            }
            Self::Internal(_) => {
                Answer::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::ServerError)
            }
        }
    }

    /// Whether the cause is ours to investigate (logged at error level with its chain).
    pub fn is_unexpected(&self) -> bool {
        matches!(self, Self::Database(_) | Self::Internal(_))
    }
}

impl From<TaskFailed> for UseCaseError {
    fn from(err: TaskFailed) -> Self {
        UseCaseError::Internal(err.into())
    }
}

/// Shows an error with every cause below it (`outer: cause: root cause`), for logs: the public
/// message of a use-case error alone would hide the database's or peer's reason.
pub struct Chain<'a>(pub &'a (dyn StdError + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_shows_every_cause() {
        let err = UseCaseError::Database(sqlx::Error::PoolTimedOut);
        assert_eq!(
            Chain(&err).to_string(),
            "A database error occurred: pool timed out while waiting for an open connection"
        );
    }

    #[test]
    fn unexpected_errors_answer_500() {
        let answer = UseCaseError::Internal(anyhow::anyhow!("boom")).answer();
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(answer.code, ErrorCode::ServerError);
        assert!(answer.context.is_empty());
    }
}

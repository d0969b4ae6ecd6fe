//! The one error type of the use-case layer.
//!
//! Each variant has a fixed public message (its `Display`, as api.md words it) and carries only
//! the context api.md allows to be shown; causes from Keycloak, accounting, SMTP or the
//! database are logged by the use case and never reach clients. `crate::http::error` maps each
//! variant to a status and error code.

use crate::tasks::TaskFailed;

#[derive(Debug, thiserror::Error)]
pub enum UseCaseError {
    // ---- institutions
    #[error("Institution not found")]
    InstitutionNotFound,
    #[error("No fields to update")]
    NoFieldsToUpdate,
    #[error("Another institution with the same name already exists")]
    InstitutionNameTaken,

    // ---- virtual labs, projects, invites (issue 3)

    // ---- courses (issue 4)

    // ---- seats, enrolments, drops (issue 5)

    // ---- any use case
    /// An unexpected database failure (connection lost, pool timeout…).
    #[error("A database error occurred")]
    Database(#[from] sqlx::Error),
    /// Anything else unexpected, including a use-case task that panicked.
    #[error("An unexpected error occurred")]
    Internal(#[source] anyhow::Error),
}

impl From<TaskFailed> for UseCaseError {
    fn from(err: TaskFailed) -> Self {
        UseCaseError::Internal(err.into())
    }
}

//! What lab creation, reading, renaming and deletion can refuse.

use uuid::Uuid;

use crate::usecases::error::{Answer, ErrorCode, StatusCode};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("Only service administrators can create course virtual labs.")]
    CourseLabNotAllowed,
    #[error("The user already owns a virtual lab and cannot create another.")]
    AlreadyOwnsLab { owner_id: Uuid },
    #[error("A virtual lab with this name already exists.")]
    NameTaken { name: String },
    #[error("A virtual lab with this name was created concurrently.")]
    NameRace { name: String },
    #[error("Failed to create the admin/member groups in the auth provider.")]
    GroupsFailed,
    #[error("Failed to attach the owner to the admin group.")]
    OwnerAttachFailed,
    #[error("Failed to create the accounting account for the virtual lab.")]
    AccountFailed,
    #[error("The virtual lab could not be saved to the database.")]
    NotSaved,
    #[error("No virtual lab with this id found")]
    NotFound,
    #[error("Another virtual lab with same name already exists")]
    RenameTaken,
    #[error("A virtual lab with an active course cannot be deleted. Void the course first.")]
    HasActiveCourse,
    #[error("Could not load user details from the identity provider.")]
    UserDetailsUnavailable,
}

impl LabError {
    pub fn answer(&self) -> Answer {
        use ErrorCode as C;
        use StatusCode as S;
        match self {
            Self::CourseLabNotAllowed => Answer::new(S::FORBIDDEN, C::NotAllowedOp),
            Self::AlreadyOwnsLab { owner_id } => {
                Answer::new(S::FORBIDDEN, C::ForbiddenOperation).context("owner_id", owner_id)
            }
            Self::NameTaken { name } | Self::NameRace { name } => {
                Answer::new(S::CONFLICT, C::EntityAlreadyExists).context("name", name)
            }
            Self::GroupsFailed
            | Self::OwnerAttachFailed
            | Self::AccountFailed
            | Self::UserDetailsUnavailable => Answer::new(S::BAD_GATEWAY, C::ExternalServiceError),
            // Upstream answers a failed insert with 400 and DATABASE_ERROR; kept for the frontend.
            Self::NotSaved => Answer::new(S::BAD_REQUEST, C::DatabaseError),
            // Upstream's quirk, kept on purpose: a missing lab is a 404 with DATABASE_ERROR.
            Self::NotFound => Answer::new(S::NOT_FOUND, C::DatabaseError),
            Self::RenameTaken => Answer::new(S::CONFLICT, C::EntityAlreadyExists),
            Self::HasActiveCourse => Answer::new(S::CONFLICT, C::ForbiddenOperation),
        }
    }
}

//! What sending and accepting an invite can refuse.

use crate::usecases::error::{Answer, ErrorCode, StatusCode};

#[derive(Debug, thiserror::Error)]
pub enum InviteError {
    #[error(
        "There was an error while emailing virtual lab invite to {email}. Please try sending the invite again."
    )]
    EmailFailed { email: String },
    #[error("Invite to user could not be sent due to an error in database.")]
    NotSaved,
    #[error("Invite Token is not valid")]
    TokenInvalid,
    #[error("Invite Token has expired")]
    TokenExpired,
    #[error("No invite was found for this link")]
    LinkNotFound,
    #[error("Inviter user is the same as invitee user")]
    InviteeOwnsLab,
    #[error("Could not attach user to group")]
    AttachFailed,
    #[error("Invite not found")]
    NotFound,
    #[error("Invite has already been accepted")]
    AlreadyAccepted,
}

impl InviteError {
    pub fn answer(&self) -> Answer {
        use ErrorCode as C;
        use StatusCode as S;
        match self {
            Self::EmailFailed { .. } => {
                Answer::new(S::INTERNAL_SERVER_ERROR, C::ExternalServiceError)
            }
            Self::NotSaved => Answer::new(S::INTERNAL_SERVER_ERROR, C::DatabaseError),
            Self::TokenInvalid => Answer::new(S::BAD_REQUEST, C::InvalidParameter)
                .details("Invitation token is malformed"),
            Self::TokenExpired => {
                Answer::new(S::BAD_REQUEST, C::TokenExpired).details("Ask for a new invitation")
            }
            // Upstream's quirk, kept on purpose: a 404 with INVALID_REQUEST.
            Self::LinkNotFound => Answer::new(S::NOT_FOUND, C::InvalidRequest)
                .details("The invite link is either malformed or the invite is deleted"),
            Self::InviteeOwnsLab => {
                Answer::new(S::BAD_REQUEST, C::DataConflict).details("Invitation is forbidden")
            }
            Self::AttachFailed => Answer::new(S::BAD_GATEWAY, C::ExternalServiceError),
            Self::NotFound => Answer::new(S::NOT_FOUND, C::EntityNotFound),
            Self::AlreadyAccepted => Answer::new(S::UNPROCESSABLE_ENTITY, C::EntityAlreadyUpdated),
        }
    }
}

//! Lab invites (api.md §4.3, rules.md §4.4 and §4.5).

pub mod accept;
mod error;
pub mod send;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use accept::{Accepted, accept};
pub use error::InviteError;
pub use send::send;

use super::UseCaseError;
use crate::domain::invite_token::{self, InviteTokenError};
use crate::repo::invites::Invite;
use crate::repo::labs::VirtualLab;
use crate::repo::{self};
use crate::usecases::Services;

/// The two lab roles an invite can grant.
pub const ROLES: &[&str] = &["admin", "member"];

/// Verifies an invite token (integrations.md §5) and returns the invite id.
fn invite_id_of(
    services: &Services,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Uuid, UseCaseError> {
    let id =
        invite_token::verify(&services.config.invite_jwt_secret, token, now).map_err(|err| {
            match err {
                InviteTokenError::Malformed => InviteError::TokenInvalid,
                InviteTokenError::Expired => InviteError::TokenExpired,
                InviteTokenError::NotLab => InviteError::LinkNotFound,
            }
        })?;
    Ok(id)
}

/// An invite and its lab, as `GET /invites` shows them.
#[derive(Debug, Clone)]
pub struct InviteView {
    pub invite: Invite,
    pub lab: VirtualLab,
}

/// `GET /invites?token=`: the token, then the invite, then its non-deleted lab.
pub async fn show(services: &Services, token: &str) -> Result<InviteView, UseCaseError> {
    let invite_id = invite_id_of(services, token, Utc::now())?;
    let invite = repo::invites::find(&services.db, invite_id)
        .await?
        .ok_or(InviteError::LinkNotFound)?;
    let lab = repo::labs::find_active(&services.db, invite.virtual_lab_id)
        .await?
        .ok_or(InviteError::LinkNotFound)?;
    Ok(InviteView { invite, lab })
}

/// `POST /virtual-labs/{id}/invites/cancel`: deletes a pending invite.
pub async fn cancel(
    services: &Services,
    vlab_id: Uuid,
    email: &str,
    role: &str,
) -> Result<(), UseCaseError> {
    let mut tx = services.db.begin().await?;
    let invite = repo::invites::find_by_key_for_update(&mut *tx, vlab_id, email, role)
        .await?
        .ok_or(InviteError::NotFound)?;
    if invite.accepted {
        return Err(InviteError::AlreadyAccepted.into());
    }
    repo::invites::delete(&mut *tx, invite.id).await?;
    tx.commit().await?;
    tracing::info!(invite_id = %invite.id, virtual_lab_id = %vlab_id, "invite cancelled");
    Ok(())
}

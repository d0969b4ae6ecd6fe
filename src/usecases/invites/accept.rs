//! Accept a lab invite (rules.md §4.5). Every Keycloak step is idempotent and nothing is
//! compensated: a failure leaves the invite unaccepted, and accepting again completes it.

use chrono::Utc;
use futures::StreamExt;
use uuid::Uuid;

use super::invite_id_of;
use crate::clients::ClientError;
use crate::domain::caller::Caller;
use crate::repo::invites::Invite;
use crate::repo::labs::VirtualLab;
use crate::repo::{self};
use crate::usecases::Services;
use crate::usecases::UseCaseError;
use crate::usecases::invites::InviteError;

/// The outcome of an acceptance.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub invite_id: Uuid,
    pub virtual_lab_id: Uuid,
    /// The invite had been accepted before (possibly concurrently).
    pub already: bool,
}

pub async fn accept(
    services: &Services,
    caller: &Caller,
    token: &str,
) -> Result<Accepted, UseCaseError> {
    let invite_id = invite_id_of(services, token, Utc::now())?;
    let invite = repo::invites::find(&services.db, invite_id)
        .await?
        .ok_or(InviteError::LinkNotFound)?;
    if invite.accepted {
        return Ok(already(&invite));
    }
    let lab = repo::labs::find_active(&services.db, invite.virtual_lab_id)
        .await?
        .ok_or(InviteError::LinkNotFound)?;
    if lab.owner_id == caller.sub {
        return Err(InviteError::InviteeOwnsLab.into());
    }
    let task_services = services.clone();
    let user = caller.sub;
    services
        .tasks
        .run("accept_invite", async move {
            join_lab(&task_services, user, &invite, &lab).await
        })
        .await?
}

fn already(invite: &Invite) -> Accepted {
    Accepted {
        invite_id: invite.id,
        virtual_lab_id: invite.virtual_lab_id,
        already: true,
    }
}

async fn join_lab(
    services: &Services,
    user: Uuid,
    invite: &Invite,
    lab: &VirtualLab,
) -> Result<Accepted, UseCaseError> {
    let is_admin = invite.role == "admin";
    let project_groups = if is_admin {
        repo::projects::active_admin_groups(&services.db, lab.id).await?
    } else {
        Vec::new()
    };
    if let Err(err) = attach(services, user, is_admin, lab, project_groups).await {
        tracing::warn!(invite_id = %invite.id, user_id = %user, error = %err, "could not attach the invitee");
        return Err(InviteError::AttachFailed.into());
    }
    let now = Utc::now();
    if !repo::invites::mark_accepted(&services.db, invite.id, user, now).await? {
        return Ok(already(invite));
    }
    tracing::info!(invite_id = %invite.id, virtual_lab_id = %lab.id, user_id = %user, role = %invite.role, "invite accepted");
    Ok(Accepted {
        invite_id: invite.id,
        virtual_lab_id: lab.id,
        already: false,
    })
}

/// Step 2: the role group in, the other lab group out (concurrently); then, for admins, the
/// admin group of every non-deleted project, at most `EXTERNAL_CONCURRENCY` at a time.
async fn attach(
    services: &Services,
    user: Uuid,
    is_admin: bool,
    lab: &VirtualLab,
    project_admin_groups: Vec<String>,
) -> Result<(), ClientError> {
    let kc = &services.keycloak;
    let (join, leave) = if is_admin {
        (&lab.admin_group_id, &lab.member_group_id)
    } else {
        (&lab.member_group_id, &lab.admin_group_id)
    };
    let (joined, left) = futures::join!(kc.add_member(user, join), kc.remove_member(user, leave));
    joined?;
    left?;
    let concurrency = services.config.external_concurrency.max(1);
    let failures: Vec<ClientError> = futures::stream::iter(project_admin_groups)
        .map(|group| async move { kc.add_member(user, &group).await })
        .buffer_unordered(concurrency)
        .filter_map(|result| async move { result.err() })
        .collect()
        .await;
    match failures.into_iter().next() {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

//! Send a lab invite (rules.md §4.4): save the row, then e-mail the link synchronously; a
//! failed send deletes the new row or restores the reopened one.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::clients::Email;
use crate::domain::caller::Caller;
use crate::domain::invite_token;
use crate::repo::invites::{Invite, Inviter};
use crate::repo::labs::VirtualLab;
use crate::repo::{self};
use crate::usecases::Services;
use crate::usecases::UseCaseError;
use crate::usecases::invites::InviteError;
use crate::usecases::labs::LabError;

/// The saved row, and what it held before when it was reopened.
struct Saved {
    invite: Invite,
    previous: Option<Invite>,
}

/// Invites `email` (domain already lower-cased) to the lab with `role`; returns the invite id.
pub async fn send(
    services: &Services,
    caller: &Caller,
    vlab_id: Uuid,
    email: String,
    role: String,
) -> Result<Uuid, UseCaseError> {
    let lab = repo::labs::find_active(&services.db, vlab_id)
        .await?
        .ok_or(LabError::NotFound)?;
    let inviter = Inviter {
        id: caller.sub,
        name: caller.display_name().to_owned(),
    };
    let task_services = services.clone();
    services
        .tasks
        .run("send_invite", async move {
            deliver(&task_services, &lab, &inviter, &email, &role).await
        })
        .await?
}

async fn deliver(
    services: &Services,
    lab: &VirtualLab,
    inviter: &Inviter,
    email: &str,
    role: &str,
) -> Result<Uuid, UseCaseError> {
    let now = Utc::now();
    let saved = match save(services, lab.id, email, role, inviter, now).await {
        Ok(saved) => saved,
        Err(err) => {
            tracing::error!(virtual_lab_id = %lab.id, error = %err, "could not save the invite");
            return Err(InviteError::NotSaved.into());
        }
    };
    let invite_id = saved.invite.id;
    match email_invite(services, lab, &saved.invite, now).await {
        Ok(()) => {
            metrics::counter!("vlab_emails_total", "kind" => "invite", "outcome" => "sent")
                .increment(1);
            tracing::info!(invite_id = %invite_id, virtual_lab_id = %lab.id, role, "invite sent");
            Ok(invite_id)
        }
        Err(err) => {
            metrics::counter!("vlab_emails_total", "kind" => "invite", "outcome" => "failed")
                .increment(1);
            tracing::warn!(invite_id = %invite_id, error = %err, "the invite e-mail could not be sent");
            tracing::debug!(invite_id = %invite_id, email, "invite e-mail recipient");
            undo_save(services, &saved).await;
            Err(InviteError::EmailFailed {
                email: email.to_owned(),
            }
            .into())
        }
    }
}

/// Step 2: reopen the row of this lab, e-mail and role, or insert one. A unique-index race on
/// insert means the row appeared concurrently, so the step runs once more.
async fn save(
    services: &Services,
    vlab_id: Uuid,
    email: &str,
    role: &str,
    inviter: &Inviter,
    now: DateTime<Utc>,
) -> Result<Saved, sqlx::Error> {
    match save_once(services, vlab_id, email, role, inviter, now).await {
        Err(err) if repo::unique_violation(&err).is_some() => {
            save_once(services, vlab_id, email, role, inviter, now).await
        }
        result => result,
    }
}

async fn save_once(
    services: &Services,
    vlab_id: Uuid,
    email: &str,
    role: &str,
    inviter: &Inviter,
    now: DateTime<Utc>,
) -> Result<Saved, sqlx::Error> {
    let mut tx = services.db.begin().await?;
    let existing = repo::invites::find_by_key_for_update(&mut *tx, vlab_id, email, role).await?;
    let saved = match existing {
        Some(previous) => Saved {
            invite: repo::invites::reopen(&mut *tx, previous.id, inviter, now).await?,
            previous: Some(previous),
        },
        None => Saved {
            invite: repo::invites::insert(
                &mut *tx,
                Uuid::new_v4(),
                vlab_id,
                email,
                role,
                inviter,
                now,
            )
            .await?,
            previous: None,
        },
    };
    tx.commit().await?;
    Ok(saved)
}

/// Step 3: the token and the e-mail with the link `{INVITE_LINK_BASE}/invite?token=<jwt>`.
async fn email_invite(
    services: &Services,
    lab: &VirtualLab,
    invite: &Invite,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let config = &services.config;
    let token = invite_token::issue(
        &config.invite_jwt_secret,
        invite.id,
        now,
        config.invite_expires_in_days,
    )?;
    let email = Email::Invitation {
        to: invite.user_email.clone(),
        inviter_name: invite.inviter_name.clone().unwrap_or_default(),
        invite_link: format!(
            "{}/invite?token={token}",
            config.invite_link_base.trim_end_matches('/')
        ),
        discover_link: config.landing_namespace.clone(),
        invited_to: lab.name.clone(),
    };
    services.mailer.send(&email).await?;
    Ok(())
}

/// Step 4: delete the new row, or restore the reopened one. A failure is only logged.
async fn undo_save(services: &Services, saved: &Saved) {
    let result = match &saved.previous {
        None => repo::invites::delete(&services.db, saved.invite.id).await,
        Some(previous) => repo::invites::restore(&services.db, previous).await,
    };
    if let Err(err) = result {
        tracing::error!(
            use_case = "send_invite",
            step = "undo_save",
            invite_id = %saved.invite.id,
            error = %err,
            "could not undo the invite after the e-mail failed"
        );
    }
}

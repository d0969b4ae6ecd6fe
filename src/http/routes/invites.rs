//! Lab invites (api.md §4.3): send and cancel under `/virtual-labs/{id}/invites`, show and
//! accept under `/invites?token=`.

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::caller::Caller;
use crate::http::error::ApiError;
use crate::http::extract::{RawBody, RawQuery};
use crate::http::fields::{self, Fields};
use crate::http::gates;
use crate::http::payloads::Envelope;
use crate::http::state::AppState;
use crate::usecases::invites;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/virtual-labs/{virtual_lab_id}/invites", post(send))
        .route(
            "/virtual-labs/{virtual_lab_id}/invites/cancel",
            post(cancel),
        )
        .route("/invites", post(accept).get(show))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InviteIdOut {
    id: Uuid,
}

#[derive(Serialize, ToSchema)]
pub struct InviteSentEnvelope {
    message: String,
    data: InviteIdOut,
}

/// The invite as `GET /invites` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct InviteDetailsOut {
    origin: &'static str,
    accepted: bool,
    invite_id: Uuid,
    inviter_full_name: String,
    virtual_lab_id: Uuid,
    virtual_lab_name: String,
    project_id: Option<Uuid>,
    project_name: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct InviteDetailsEnvelope {
    message: String,
    data: InviteDetailsOut,
}

/// The outcome of `POST /invites`.
#[derive(Debug, Serialize, ToSchema)]
pub struct InviteAcceptedOut {
    origin: &'static str,
    invite_id: Uuid,
    virtual_lab_id: Uuid,
    project_id: Option<Uuid>,
    /// `accepted` or `already_accepted`.
    status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct InviteAcceptedEnvelope {
    message: String,
    data: InviteAcceptedOut,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct InviteRequest {
    email: String,
    /// `admin` or `member`.
    role: String,
}

/// The validated `{"email", "role"}` body; the e-mail with its domain lower-cased.
fn email_and_role(body: &RawBody) -> Result<(String, String), ApiError> {
    let body = body.object()?;
    let mut f = Fields::new(&body);
    let email = f.required("email", &fields::email);
    let role = f.required("role", &fields::one_of(invites::ROLES));
    f.finish()?;
    match (email, role) {
        (Some(email), Some(role)) => Ok((email.with_lowercase_domain(), role)),
        _ => Err(ApiError::internal()),
    }
}

/// The required, non-empty `token` query parameter.
fn token_param(query: &RawQuery) -> Result<String, ApiError> {
    let query = query.object();
    let mut f = Fields::new(&query);
    let token = f.required("token", &|value: &Value| match value.as_str() {
        Some("") => Err("Must not be empty".to_owned()),
        Some(s) => Ok(s.to_owned()),
        None => Err("Must be a string".to_owned()),
    });
    f.finish()?;
    token.ok_or_else(ApiError::internal)
}

/// Invite someone to the lab by e-mail; the link is e-mailed at once.
#[utoipa::path(post, path = "/virtual-labs/{virtual_lab_id}/invites", tag = "invites", security(("bearer" = [])),
    params(("virtual_lab_id" = String, Path, description = "Lab id (UUID)")),
    request_body = InviteRequest,
    responses((status = 200, body = InviteSentEnvelope), (status = 401), (status = 403), (status = 404),
        (status = 422), (status = 500)))]
async fn send(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_id): Path<String>,
    body: RawBody,
) -> Result<Json<Envelope<InviteIdOut>>, ApiError> {
    // Tier VI: any lab role passes the gate; a member only may invite members.
    let vlab_id = gates::vlab_any(&caller, &raw_id)?;
    let (email, role) = email_and_role(&body)?;
    if !caller.groups.is_vlab_admin(vlab_id) && role != "member" {
        return Err(ApiError::not_allowed(Some(format!(
            "vlab:admin on {raw_id}"
        ))));
    }
    let id = invites::send(&state.services, &caller, vlab_id, email, role).await?;
    Ok(Envelope::new("Invite sent to user", InviteIdOut { id }))
}

/// Delete a pending invite.
#[utoipa::path(post, path = "/virtual-labs/{virtual_lab_id}/invites/cancel", tag = "invites", security(("bearer" = [])),
    params(("virtual_lab_id" = String, Path, description = "Lab id (UUID)")),
    request_body = InviteRequest,
    responses((status = 200), (status = 401), (status = 403), (status = 404), (status = 422)))]
async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw_id): Path<String>,
    body: RawBody,
) -> Result<Json<Envelope<Option<()>>>, ApiError> {
    let vlab_id = gates::vlab_admin(&caller, &raw_id)?;
    let (email, role) = email_and_role(&body)?;
    invites::cancel(&state.services, vlab_id, &email, &role).await?;
    Ok(Envelope::new(
        format!("Invite for email {email} successfully deleted."),
        None,
    ))
}

/// Show the invite a link carries.
#[utoipa::path(get, path = "/invites", tag = "invites", security(("bearer" = [])),
    params(("token" = String, Query, description = "The invite token from the e-mailed link")),
    responses((status = 200, body = InviteDetailsEnvelope), (status = 400), (status = 401), (status = 404),
        (status = 422)))]
async fn show(
    State(state): State<AppState>,
    _caller: Caller,
    query: RawQuery,
) -> Result<Json<Envelope<InviteDetailsOut>>, ApiError> {
    let token = token_param(&query)?;
    let view = invites::show(&state.services, &token).await?;
    Ok(Envelope::new(
        "Invite for Lab received successfully",
        InviteDetailsOut {
            origin: "Lab",
            accepted: view.invite.accepted,
            invite_id: view.invite.id,
            inviter_full_name: view
                .invite
                .inviter_name
                .unwrap_or_else(|| "Unknown".to_owned()),
            virtual_lab_id: view.lab.id,
            virtual_lab_name: view.lab.name,
            project_id: None,
            project_name: None,
        },
    ))
}

/// Accept the invite a link carries: join the lab (and, for admins, every project).
#[utoipa::path(post, path = "/invites", tag = "invites", security(("bearer" = [])),
    params(("token" = String, Query, description = "The invite token from the e-mailed link")),
    responses((status = 200, body = InviteAcceptedEnvelope), (status = 400), (status = 401), (status = 404),
        (status = 422), (status = 502)))]
async fn accept(
    State(state): State<AppState>,
    caller: Caller,
    query: RawQuery,
) -> Result<Json<Envelope<InviteAcceptedOut>>, ApiError> {
    let token = token_param(&query)?;
    let accepted = invites::accept(&state.services, &caller, &token).await?;
    // Also after a concurrent acceptance: this request may have changed memberships too.
    state.auth.forget_groups(&caller);
    let message = if accepted.already {
        format!(
            "Invite for vlab: {} already accepted",
            accepted.virtual_lab_id
        )
    } else {
        "Invite for Lab accepted successfully".to_owned()
    };
    Ok(Envelope::new(
        message,
        InviteAcceptedOut {
            origin: "Lab",
            invite_id: accepted.invite_id,
            virtual_lab_id: accepted.virtual_lab_id,
            project_id: None,
            status: if accepted.already {
                "already_accepted"
            } else {
                "accepted"
            },
        },
    ))
}

//! Lab invites (api.md §4.3): send and cancel under `/virtual-labs/{id}/invites`, show and
//! accept under `/invites?token=`.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::schema::Object;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::caller::Caller;
use crate::http::error::ApiError;
use crate::http::extract::{Body, Query};
use crate::http::fields::{self, Fields, FromFields};
use crate::http::gates::{VlabAdmin, VlabMember};
use crate::http::payloads::Envelope;
use crate::http::state::AppState;
use crate::usecases::invites;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(send))
        .routes(routes!(cancel))
        .routes(routes!(accept, show))
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
pub struct InviteCancelledEnvelope {
    message: String,
    /// Always null.
    #[schema(value_type = Option<Object>)]
    data: Option<()>,
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

fn role_schema() -> Object {
    fields::string_enum(invites::ROLES)
}

/// The body of the send and cancel endpoints.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"email": "faculty@unige.ch", "role": "admin"}))]
pub struct InviteRequest {
    /// Trimmed; the domain part is lower-cased.
    #[schema(value_type = String, format = Email)]
    pub email: String,
    /// `admin` or `member`.
    #[schema(schema_with = role_schema)]
    pub role: String,
}

impl FromFields for InviteRequest {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let email = f.required("email", &fields::email);
        let role = f.required("role", &fields::one_of(invites::ROLES));
        Some(Self {
            email: email?.with_lowercase_domain(),
            role: role?,
        })
    }
}

/// The query of `GET` and `POST /invites`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InviteToken {
    /// The invite token from the e-mailed link.
    #[param(min_length = 1)]
    pub token: String,
}

impl FromFields for InviteToken {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let token = f.required("token", &|value: &Value| match value.as_str() {
            Some("") => Err("Must not be empty".to_owned()),
            Some(s) => Ok(s.to_owned()),
            None => Err("Must be a string".to_owned()),
        });
        Some(Self { token: token? })
    }
}

/// Invite someone to the lab by e-mail; the link is e-mailed at once.
#[utoipa::path(post, path = "/virtual-labs/{virtual_lab_id}/invites", tag = "invites", security(("bearer" = [])),
    params(("virtual_lab_id" = Uuid, Path, description = "Lab id")),
    request_body = InviteRequest,
    responses((status = 200, body = InviteSentEnvelope), (status = 401), (status = 403), (status = 404),
        (status = 422), (status = 500)))]
async fn send(
    State(state): State<AppState>,
    // Tier VI: any lab role passes the gate; a member only may invite members.
    gate: VlabMember,
    Body(body): Body<InviteRequest>,
) -> Result<Json<Envelope<InviteIdOut>>, ApiError> {
    let (caller, vlab_id) = (gate.caller, gate.vlab_id);
    if !caller.groups.is_vlab_admin(vlab_id) && body.role != "member" {
        return Err(ApiError::not_allowed(Some(format!(
            "vlab:admin on {}",
            gate.raw_id
        ))));
    }
    let id = invites::send(&state.services, &caller, vlab_id, body.email, body.role).await?;
    Ok(Envelope::new("Invite sent to user", InviteIdOut { id }))
}

/// Delete a pending invite.
#[utoipa::path(post, path = "/virtual-labs/{virtual_lab_id}/invites/cancel", tag = "invites", security(("bearer" = [])),
    params(("virtual_lab_id" = Uuid, Path, description = "Lab id")),
    request_body = InviteRequest,
    responses((status = 200, body = InviteCancelledEnvelope), (status = 401), (status = 403), (status = 404), (status = 422)))]
async fn cancel(
    State(state): State<AppState>,
    gate: VlabAdmin,
    Body(body): Body<InviteRequest>,
) -> Result<Json<Envelope<Option<()>>>, ApiError> {
    invites::cancel(&state.services, gate.vlab_id, &body.email, &body.role).await?;
    Ok(Envelope::new(
        format!("Invite for email {} successfully deleted.", body.email),
        None,
    ))
}

/// Show the invite a link carries.
#[utoipa::path(get, path = "/invites", tag = "invites", security(("bearer" = [])),
    params(InviteToken),
    responses((status = 200, body = InviteDetailsEnvelope), (status = 400), (status = 401), (status = 404),
        (status = 422)))]
async fn show(
    State(state): State<AppState>,
    _caller: Caller,
    Query(query): Query<InviteToken>,
) -> Result<Json<Envelope<InviteDetailsOut>>, ApiError> {
    let view = invites::show(&state.services, &query.token).await?;
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
    params(InviteToken),
    responses((status = 200, body = InviteAcceptedEnvelope), (status = 400), (status = 401), (status = 404),
        (status = 422), (status = 502)))]
async fn accept(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<InviteToken>,
) -> Result<Json<Envelope<InviteAcceptedOut>>, ApiError> {
    let accepted = invites::accept(&state.services, &caller, &query.token).await?;
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

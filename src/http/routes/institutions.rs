//! `/institutions` (api.md §4.4). Every endpoint is tier SA.

use axum::extract::{Path, State};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::error::ApiError;
use crate::http::extract::{RawBody, RawQuery, ServiceAdmin};
use crate::http::fields::{self, Fields};
use crate::http::payloads::{Envelope, InstitutionOut};
use crate::http::state::AppState;
use crate::usecases::institutions;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/institutions", post(create))
        .route("/institutions/_search", get(search))
        .route("/institutions/{institution_id}", get(get_one))
        .route("/institutions/{institution_id}", patch(update))
}

#[derive(Serialize, ToSchema)]
pub struct InstitutionEnvelope {
    message: String,
    data: InstitutionOut,
}

#[derive(Serialize, ToSchema)]
pub struct InstitutionListEnvelope {
    message: String,
    data: Vec<InstitutionOut>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct InstitutionCreate {
    /// Trimmed, 1..250 characters; unique (case-sensitive).
    name: String,
    /// Trimmed; the domain part is lower-cased.
    contact_email: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct InstitutionUpdate {
    name: Option<String>,
    contact_email: Option<String>,
}

/// Create an institution, or return the existing one with exactly this name unchanged.
#[utoipa::path(post, path = "/institutions", tag = "institutions", security(("bearer" = [])),
    request_body = InstitutionCreate,
    responses((status = 200, body = InstitutionEnvelope), (status = 401), (status = 403), (status = 422)))]
async fn create(
    State(state): State<AppState>,
    ServiceAdmin(_caller): ServiceAdmin,
    body: RawBody,
) -> Result<Json<Envelope<InstitutionOut>>, ApiError> {
    let body = body.object()?;
    let mut f = Fields::new(&body);
    let name = f.required("name", &fields::text(1, 250));
    let email = f.required("contact_email", &fields::email);
    f.finish()?;
    let (Some(name), Some(email)) = (name, email) else {
        return Err(ApiError::internal());
    };
    let institution =
        institutions::create(&state.services, &name, &email.with_lowercase_domain()).await?;
    Ok(Envelope::new(
        "Newly created institution",
        institution.into(),
    ))
}

/// Update an institution's name and/or contact e-mail.
#[utoipa::path(patch, path = "/institutions/{institution_id}", tag = "institutions", security(("bearer" = [])),
    params(("institution_id" = String, Path, description = "Institution id (UUID)")),
    request_body = InstitutionUpdate,
    responses((status = 200, body = InstitutionEnvelope), (status = 400), (status = 404), (status = 409), (status = 422)))]
async fn update(
    State(state): State<AppState>,
    ServiceAdmin(_caller): ServiceAdmin,
    Path(raw_id): Path<String>,
    body: RawBody,
) -> Result<Json<Envelope<InstitutionOut>>, ApiError> {
    let id = path_uuid("institution_id", &raw_id);
    let body = body.object();
    let (id, body) = match (id, body) {
        (Ok(id), Ok(body)) => (id, body),
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    let mut f = Fields::new(&body);
    let name = f.patch_not_null("name", &fields::text(1, 250));
    let email = f.patch_not_null("contact_email", &fields::email);
    f.finish()?;
    let email = email.map(|e| e.with_lowercase_domain());
    let updated =
        institutions::update(&state.services, id, name.as_deref(), email.as_deref()).await?;
    Ok(Envelope::new("Updated institution", updated.into()))
}

/// Search institutions by a case-insensitive literal substring of their name.
#[utoipa::path(get, path = "/institutions/_search", tag = "institutions", security(("bearer" = [])),
    params(("q" = Option<String>, Query, description = "Substring of the name; empty returns every institution")),
    responses((status = 200, body = InstitutionListEnvelope), (status = 401), (status = 403)))]
async fn search(
    State(state): State<AppState>,
    ServiceAdmin(_caller): ServiceAdmin,
    query: RawQuery,
) -> Result<Json<Envelope<Vec<InstitutionOut>>>, ApiError> {
    let q = query
        .object()
        .get("q")
        .and_then(|v| v.as_str())
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .map(str::to_owned);
    let found = institutions::search(&state.services, q.as_deref()).await?;
    let message = if q.is_some() {
        "Institutions matching query"
    } else {
        "All institutions"
    };
    Ok(Envelope::new(
        message,
        found.into_iter().map(InstitutionOut::from).collect(),
    ))
}

/// Get one institution.
#[utoipa::path(get, path = "/institutions/{institution_id}", tag = "institutions", security(("bearer" = [])),
    params(("institution_id" = String, Path, description = "Institution id (UUID)")),
    responses((status = 200, body = InstitutionEnvelope), (status = 404), (status = 422)))]
async fn get_one(
    State(state): State<AppState>,
    ServiceAdmin(_caller): ServiceAdmin,
    Path(raw_id): Path<String>,
) -> Result<Json<Envelope<InstitutionOut>>, ApiError> {
    let id = path_uuid("institution_id", &raw_id)?;
    let institution = institutions::get(&state.services, id).await?;
    Ok(Envelope::new("Institution found", institution.into()))
}

/// A path id that must be a UUID (422 under the parameter's name otherwise).
pub fn path_uuid(name: &str, raw: &str) -> Result<uuid::Uuid, ApiError> {
    fields::parse_uuid(raw).ok_or_else(|| ApiError::invalid_field(name, "Must be a UUID"))
}

//! `/institutions` (api.md §4.4). Every endpoint is tier SA.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::email::EmailAddress;
use crate::http::error::ApiError;
use crate::http::extract::{Body, PathUuid, Query, ServiceAdmin};
use crate::http::fields::{self, Fields, FromFields};
use crate::http::payloads::{Envelope, InstitutionOut};
use crate::http::state::AppState;
use crate::usecases::institutions;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(search))
        .routes(routes!(get_one, update))
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

/// The body of `POST /institutions`.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"name": "University of Geneva", "contact_email": "courses@unige.ch"}))]
pub struct InstitutionCreate {
    /// Trimmed, 1..250 characters; unique (case-sensitive).
    #[schema(
        min_length = 1,
        max_length = 250,
        pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
    )]
    name: String,
    /// Trimmed; the domain part is lower-cased.
    #[schema(value_type = String, format = Email)]
    contact_email: EmailAddress,
}

impl FromFields for InstitutionCreate {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let name = f.required("name", &fields::text(1, 250));
        let contact_email = f.required("contact_email", &fields::email);
        Some(Self {
            name: name?,
            contact_email: contact_email?,
        })
    }
}

/// The body of `PATCH /institutions/{institution_id}`: at least one key.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"contact_email": "education@unige.ch"}))]
pub struct InstitutionUpdate {
    /// Trimmed, 1..250 characters; `null` is rejected.
    #[schema(value_type = String, required = false, min_length = 1, max_length = 250, pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$")]
    name: Option<String>,
    /// `null` is rejected.
    #[schema(value_type = String, required = false, format = Email)]
    contact_email: Option<EmailAddress>,
}

impl FromFields for InstitutionUpdate {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(Self {
            name: f.patch_not_null("name", &fields::text(1, 250)),
            contact_email: f.patch_not_null("contact_email", &fields::email),
        })
    }
}

/// The query of `GET /institutions/_search`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InstitutionSearch {
    /// Substring of the name (trimmed); empty or absent returns every institution.
    #[param(pattern = r"^[^\u0000]*$")]
    q: Option<String>,
}

impl FromFields for InstitutionSearch {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let q = f.optional("q", &fields::any_string);
        Some(Self {
            q: q.map(|q| q.trim().to_owned()).filter(|q| !q.is_empty()),
        })
    }
}

/// Create an institution, or return the existing one with exactly this name unchanged.
#[utoipa::path(post, path = "/institutions", tag = "institutions", security(("bearer" = [])),
    request_body = InstitutionCreate,
    responses((status = 200, body = InstitutionEnvelope), (status = 401), (status = 403), (status = 422)))]
async fn create(
    State(state): State<AppState>,
    ServiceAdmin(_caller): ServiceAdmin,
    Body(body): Body<InstitutionCreate>,
) -> Result<Json<Envelope<InstitutionOut>>, ApiError> {
    let email = body.contact_email.with_lowercase_domain();
    let institution = institutions::create(&state.services, &body.name, &email).await?;
    Ok(Envelope::new(
        "Newly created institution",
        institution.into(),
    ))
}

/// Update an institution's name and/or contact e-mail.
#[utoipa::path(patch, path = "/institutions/{institution_id}", tag = "institutions", security(("bearer" = [])),
    params(("institution_id" = uuid::Uuid, Path, description = "Institution id")),
    request_body = InstitutionUpdate,
    responses((status = 200, body = InstitutionEnvelope), (status = 400, description = "No field to update"),
        (status = 401), (status = 403), (status = 404), (status = 409), (status = 422)))]
async fn update(
    State(state): State<AppState>,
    ServiceAdmin(_caller): ServiceAdmin,
    PathUuid(id): PathUuid,
    Body(body): Body<InstitutionUpdate>,
) -> Result<Json<Envelope<InstitutionOut>>, ApiError> {
    let email = body.contact_email.map(|e| e.with_lowercase_domain());
    let updated =
        institutions::update(&state.services, id, body.name.as_deref(), email.as_deref()).await?;
    Ok(Envelope::new("Updated institution", updated.into()))
}

/// Search institutions by a case-insensitive literal substring of their name.
#[utoipa::path(get, path = "/institutions/_search", tag = "institutions", security(("bearer" = [])),
    params(InstitutionSearch),
    responses((status = 200, body = InstitutionListEnvelope), (status = 401), (status = 403), (status = 422)))]
async fn search(
    State(state): State<AppState>,
    ServiceAdmin(_caller): ServiceAdmin,
    Query(query): Query<InstitutionSearch>,
) -> Result<Json<Envelope<Vec<InstitutionOut>>>, ApiError> {
    let found = institutions::search(&state.services, query.q.as_deref()).await?;
    let message = if query.q.is_some() {
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
    params(("institution_id" = uuid::Uuid, Path, description = "Institution id")),
    responses((status = 200, body = InstitutionEnvelope), (status = 401), (status = 403), (status = 404), (status = 422)))]
async fn get_one(
    State(state): State<AppState>,
    ServiceAdmin(_caller): ServiceAdmin,
    PathUuid(id): PathUuid,
) -> Result<Json<Envelope<InstitutionOut>>, ApiError> {
    let institution = institutions::get(&state.services, id).await?;
    Ok(Envelope::new("Institution found", institution.into()))
}

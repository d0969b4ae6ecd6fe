//! Extractors and auth gates. Checks run in the binding order of api.md §1: the token (401),
//! then the tier (403), then syntax (422) — so body and query parsing happen in the handler,
//! after the gate, through [`RawBody`] / [`RawQuery`] and `http::fields`.

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde_json::{Map, Value};

use super::error::ApiError;
use super::fields;
use crate::domain::caller::Caller;
use crate::http::state::AppState;

/// Tier AU: any valid token. Records the caller on the request span for the access log.
impl<S> FromRequestParts<S> for Caller
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or(""));
        let caller = state.auth.authenticate(header).await?;
        tracing::Span::current().record("user_id", tracing::field::display(caller.sub));
        Ok(caller)
    }
}

/// Tier SA: the caller's live groups contain exactly `VLAB_SERVICE_ADMIN_GROUP`.
#[derive(Debug, Clone)]
pub struct ServiceAdmin(pub Caller);

impl<S> FromRequestParts<S> for ServiceAdmin
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if caller.groups.is_service_admin() {
            Ok(ServiceAdmin(caller))
        } else {
            Err(ApiError::service_admin_required())
        }
    }
}

/// The request body, unparsed (at most `BODY_LIMIT` bytes; larger → JSON 413). Endpoints read
/// it after their gate with [`RawBody::object`].
#[derive(Debug, Clone, Default)]
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(RawBody(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::body_too_large())
            }
            Err(rejection) => {
                tracing::debug!(error = %rejection, "could not read the request body");
                Err(ApiError::invalid_field(
                    "body",
                    "Request body is not valid JSON",
                ))
            }
        }
    }
}

impl RawBody {
    /// The body as a JSON object, whatever the `Content-Type` (api.md §0.1).
    pub fn object(&self) -> Result<Map<String, Value>, ApiError> {
        fields::json_object(&self.0)
    }
}

/// The raw query string; parsed after the gate with `fields::query_object`.
#[derive(Debug, Clone, Default)]
pub struct RawQuery(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RawQuery {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(RawQuery(parts.uri.query().map(str::to_owned)))
    }
}

impl RawQuery {
    pub fn object(&self) -> Map<String, Value> {
        fields::query_object(self.0.as_deref())
    }

    pub fn all(&self, key: &str) -> Vec<String> {
        fields::query_all(self.0.as_deref(), key)
    }
}

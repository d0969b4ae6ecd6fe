//! Extractors: the caller (tier AU), the service-admin gate (SA), path ids, and request bodies
//! and query strings parsed into their [`FromFields`] types. Checks run in the binding order of
//! api.md §1 — the token (401), then the tier (403), then syntax (422) — so a handler lists its
//! gate extractor (here or in `gates`) before [`PathUuid`], [`Query`] and [`Body`]: axum runs
//! extractors in argument order and the first rejection answers.

use axum::body::Bytes;
use std::collections::HashMap;

use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::error::ApiError;
use super::fields::{self, FromFields};
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

    /// The body parsed as `T` (api.md §2.2).
    pub fn parse<T: FromFields>(&self) -> Result<T, ApiError> {
        fields::parse(&self.object()?, None)
    }

    /// The body parsed as `T`, where a missing body or `null` reads as `{}`.
    pub fn parse_optional<T: FromFields>(&self) -> Result<T, ApiError> {
        fields::parse(&fields::optional_json_object(&self.0)?, None)
    }
}

/// A request body parsed as `T`; a body that is not a JSON object or a field problem → 422.
#[derive(Debug, Clone)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: FromFields> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        RawBody::from_request(req, state).await?.parse().map(Body)
    }
}

/// A query string parsed as `T`.
#[derive(Debug, Clone)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: FromFields> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Ok(raw) = RawQuery::from_request_parts(parts, state).await;
        raw.parse().map(Query)
    }
}

/// The one path parameter of the route, which must be a UUID: otherwise 422 under the
/// parameter's name (`Must be a UUID`).
#[derive(Debug, Clone, Copy)]
pub struct PathUuid(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathUuid {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = path_params(parts, state).await?;
        let Some((name, raw)) = params.iter().next() else {
            return Err(ApiError::internal().into_response());
        };
        fields::parse_uuid(raw)
            .map(PathUuid)
            .ok_or_else(|| ApiError::invalid_field(name, "Must be a UUID").into_response())
    }
}

/// The `{enrolment_id}` path parameter of a route that has others too: a UUID, or 422
/// `enrolment_id` "Must be a UUID".
#[derive(Debug, Clone, Copy)]
pub struct EnrolmentId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for EnrolmentId {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = path_params(parts, state).await?;
        params
            .get("enrolment_id")
            .and_then(|raw| fields::parse_uuid(raw))
            .map(EnrolmentId)
            .ok_or_else(|| {
                ApiError::invalid_field("enrolment_id", "Must be a UUID").into_response()
            })
    }
}

/// The `{course_id}` and `{enrolment_id}` path parameters of an enrolment's routes, as the
/// OpenAPI document shows them (`params(EnrolmentPath)`); the course gate and [`EnrolmentId`]
/// read them.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct EnrolmentPath {
    /// Course id
    pub course_id: Uuid,
    /// Enrolment id
    pub enrolment_id: Uuid,
}

/// The route's path parameters by name, as sent (percent-decoded).
///
/// A parameter that is not UTF-8 once decoded (`/courses/%FF`) is kept as an empty value, so it
/// fails like any other malformed id — 403 in a tier gate, 422 for a plain id — instead of
/// axum's text/plain 400. The other parameters of such a request are left out: one malformed id
/// already decides the answer.
pub async fn path_params<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<HashMap<String, String>, Response> {
    match Path::<HashMap<String, String>>::from_request_parts(parts, state).await {
        Ok(Path(params)) => Ok(params),
        Err(PathRejection::FailedToDeserializePathParams(err)) => match err.into_kind() {
            ErrorKind::InvalidUtf8InPathParam { key } => Ok(HashMap::from([(key, String::new())])),
            kind => {
                tracing::error!(error = %kind, "unreadable path parameters");
                Err(ApiError::internal().into_response())
            }
        },
        Err(rejection) => {
            tracing::error!(error = %rejection, "no path parameters on this route");
            Err(ApiError::internal().into_response())
        }
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

    /// The query string parsed as `T`.
    pub fn parse<T: FromFields>(&self) -> Result<T, ApiError> {
        fields::parse(&self.object(), self.0.as_deref())
    }
}

/// The query string parsed as `Q` and the body as `B`; when both have problems, one 422 with
/// the query's first, then the body's (a key already reported keeps its first problem).
pub fn query_and_body<Q: FromFields, B: FromFields>(
    query: &RawQuery,
    body: &RawBody,
) -> Result<(Q, B), ApiError> {
    match (query.parse::<Q>(), body.parse::<B>()) {
        (Ok(q), Ok(b)) => Ok((q, b)),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
        (Err(mut a), Err(b)) => {
            if let (Value::Object(into), Value::Object(from)) = (a.details.as_mut(), *b.details) {
                for (k, v) in from {
                    into.entry(k).or_insert(v);
                }
            }
            Err(a)
        }
    }
}

//! The one error type of the HTTP layer and its JSON body (api.md §2).
//!
//! Every failure the service answers — use-case errors, authentication, validation, unknown
//! routes, wrong methods, oversized bodies, panics — is rendered here as
//! `{"error_code", "message", "details", "data"}`, in that key order.

use axum::Json;
use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::http::auth::AuthError;
use crate::usecases::UseCaseError;
use crate::usecases::error::Chain;
pub use crate::usecases::error::ErrorCode;

/// The 422 problems of one request: field → first message, in the order found (api.md §2.2).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldErrors(Vec<(String, String)>);

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `message` for `field` unless the field already has one.
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        if !self.0.iter().any(|(k, _)| k == field) {
            self.0.push((field.to_owned(), message.into()));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, field: &str) -> bool {
        self.0.iter().any(|(k, _)| k == field)
    }
}

impl IntoIterator for FieldErrors {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// An error response.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    // Boxed so `Result<_, ApiError>` stays small.
    pub details: Box<Value>,
    pub data: Box<Value>,
    /// Response headers that belong to the answer: the RFC 6750 `WWW-Authenticate` challenge
    /// of a 401, the `Retry-After` of a 429.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// The error body of api.md §2: every error answer but `/ready`'s 503.
#[derive(Serialize, ToSchema)]
#[schema(as = ErrorBody)]
struct Body<'a> {
    #[schema(inline)]
    error_code: ErrorCode,
    message: &'a str,
    /// `null`, a text, or for a 422 an object of field → its first problem.
    #[schema(schema_with = details_schema)]
    details: &'a Value,
    /// `null`, or the whitelisted context of `details` as an object.
    #[schema(schema_with = data_schema)]
    data: &'a Value,
}

fn details_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([
            Type::String,
            Type::Object,
            Type::Null,
        ]))
        .additional_properties(Some(ObjectBuilder::new().schema_type(Type::String)))
}

fn data_schema() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
}

/// The OpenAPI component of the error body: its name and schema.
pub fn error_body_schema() -> (String, RefOr<Schema>) {
    (Body::name().into_owned(), Body::schema())
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Box::new(Value::Null),
            data: Box::new(Value::Null),
            headers: Vec::new(),
        }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// A fixed `details` text given by api.md (`data` stays null).
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = Box::new(Value::String(details.into()));
        self
    }

    /// Whitelisted context: `details` = `"k1=v1, k2=v2"` and `data` = the same as an object
    /// (rules.md §3, error translation).
    pub fn with_context<K: Into<String>, V: Into<String>>(
        mut self,
        context: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let pairs: Vec<(String, String)> = context
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        if pairs.is_empty() {
            return self;
        }
        self.details = Box::new(Value::String(
            pairs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
        ));
        self.data = Box::new(Value::Object(
            pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect::<Map<_, _>>(),
        ));
        self
    }

    /// 422 in the format of api.md §2.2.
    pub fn validation(errors: FieldErrors) -> Self {
        let mut err = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidRequest,
            "Validation error",
        );
        err.details = Box::new(Value::Object(
            errors
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        ));
        err
    }

    /// One validation problem.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        let mut errors = FieldErrors::new();
        errors.add(field, message);
        Self::validation(errors)
    }

    pub fn route_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::EntityNotFound,
            "Route not found",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::InvalidRequest,
            "Method not allowed",
        )
    }

    pub fn body_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::InvalidRequest,
            "Request body too large",
        )
    }

    pub fn database() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::DatabaseError,
            "A database error occurred",
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::ServerError,
            "An unexpected error occurred",
        )
    }

    pub fn request_timeout() -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::ServerError,
            "The request took too long; any work it started still completes",
        )
    }

    /// 403 for the CA, VA, VM, VI and PW tiers (api.md §1).
    pub fn not_allowed(details: Option<String>) -> Self {
        let err = Self::new(
            StatusCode::FORBIDDEN,
            ErrorCode::NotAllowedOp,
            "Not authorized to perform this action",
        );
        match details {
            Some(d) => err.with_details(d),
            None => err,
        }
    }

    /// 403 for the SA tier.
    pub fn service_admin_required() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            ErrorCode::AuthorizationError,
            "Access denied",
        )
        .with_details("You do not have the required privileges to access this resource")
    }
}

impl ApiError {
    fn body(&self) -> Body<'_> {
        Body {
            error_code: self.code,
            message: &self.message,
            details: &self.details,
            data: &self.data,
        }
    }

    /// The error body's text, exactly as the answer sends it.
    pub fn body_text(&self) -> String {
        // Serialising strings and JSON values cannot fail.
        serde_json::to_string(&self.body()).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        response.headers_mut().extend(self.headers);
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        // RFC 6750 §3: a refused token gets `invalid_token`; a request that sent none gets the
        // bare challenge (§3.1: no error code when no authentication was attempted).
        let challenged = |challenge: &'static str, message: &str| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::AuthorizationError,
                message,
            )
            .with_header(WWW_AUTHENTICATE, HeaderValue::from_static(challenge))
        };
        let unauthorized = |message: &str| challenged(r#"Bearer error="invalid_token""#, message);
        match err {
            AuthError::MissingCredentials => challenged("Bearer", "No Authentication was provided")
                .with_details("The supplied authentication is not authorized to access"),
            AuthError::InvalidToken => unauthorized("Invalid authentication credentials"),
            AuthError::MissingClaim(claim) => unauthorized("Invalid authentication credentials")
                .with_details(format!("The token lacks a required claim: {claim}")),
            AuthError::SessionNotActive => {
                unauthorized("Invalid authentication session").with_details("Session not active")
            }
            AuthError::IdentityProviderUnavailable => ApiError::new(
                StatusCode::BAD_GATEWAY,
                ErrorCode::ExternalServiceError,
                "Could not verify the session with the identity provider",
            ),
        }
    }
}

/// The one place where use-case errors become HTTP answers: the error's own [`Answer`]
/// (status, code, shown context) with its public message. Unexpected causes are logged with
/// their whole chain and never shown.
///
/// [`Answer`]: crate::usecases::error::Answer
impl From<UseCaseError> for ApiError {
    fn from(err: UseCaseError) -> Self {
        if err.is_unexpected() {
            tracing::error!(error = %Chain(&err), "request failed");
        }
        ApiError::answering(&err)
    }
}

impl ApiError {
    /// The answer to a use-case error, without logging it (the replay record of an
    /// idempotent request stores it as well).
    pub fn answering(err: &UseCaseError) -> Self {
        let answer = err.answer();
        if let Some(field) = answer.field {
            return ApiError::invalid_field(field, err.to_string());
        }
        let mut api = ApiError::new(answer.status, answer.code, err.to_string());
        if let Some(details) = answer.details {
            api = api.with_details(details);
        }
        if let Some(seconds) = answer.retry_after {
            api = api.with_header(RETRY_AFTER, HeaderValue::from(seconds));
        }
        api.with_context(answer.context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(err: ApiError) -> (StatusCode, String) {
        let response = err.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn the_body_has_exactly_the_four_keys_in_order() {
        let (status, body) = body_of(
            ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::EntityAlreadyExists,
                "A virtual lab with this name already exists.",
            )
            .with_context([("name", "Lab 1")]),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(
            body,
            r#"{"error_code":"ENTITY_ALREADY_EXISTS","message":"A virtual lab with this name already exists.","details":"name=Lab 1","data":{"name":"Lab 1"}}"#
        );
    }

    #[tokio::test]
    async fn validation_errors_use_field_keys() {
        let mut errors = FieldErrors::new();
        errors.add("number_of_seats", "Must be between 1 and 100");
        errors.add("course_id", "Must be a UUID");
        errors.add("course_id", "ignored: only the first problem is kept");
        let (status, body) = body_of(ApiError::validation(errors)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error_code"], "INVALID_REQUEST");
        assert_eq!(v["message"], "Validation error");
        assert_eq!(v["details"]["number_of_seats"], "Must be between 1 and 100");
        assert_eq!(v["details"]["course_id"], "Must be a UUID");
        assert_eq!(v["data"], Value::Null);
    }

    #[tokio::test]
    async fn headers_of_the_error_are_sent() {
        let err = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::LimitExceeded,
            "Try again later",
        )
        .with_header(RETRY_AFTER, HeaderValue::from(61u64));
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[RETRY_AFTER], "61");
        let challenged = ApiError::from(AuthError::MissingCredentials).into_response();
        assert_eq!(challenged.headers()[WWW_AUTHENTICATE], "Bearer");
    }

    #[tokio::test]
    async fn auth_errors_render_the_spec_texts() {
        let (status, body) = body_of(AuthError::MissingClaim("sub").into()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["details"], "The token lacks a required claim: sub");
        let (status, _) = body_of(AuthError::IdentityProviderUnavailable.into()).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
    }
}

//! The `Idempotency-Key` request header of assign and roster import: the extractor (a bad key
//! is a 422 under the header's name) and the answer of a keyed request — run and recorded, or
//! replayed as it was first sent.

use axum::extract::FromRequestParts;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::idempotency_key::{HEADER, IdempotencyKey};
use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::usecases::UseCaseError;
use crate::usecases::idempotency::{self, Attempt, Keyed, Start, Stored};

/// Set on a replayed answer, so a client can tell it from a new run.
pub const REPLAYED_HEADER: HeaderName = HeaderName::from_static("idempotent-replayed");
/// The header parameter's description in the OpenAPI document.
pub const DESCRIPTION: &str = "Optional; 1 to 255 visible ASCII characters (a UUID is a good \
    choice). A repeat by the same caller with the same key and the same request within 24 hours \
    gets the first request's answer again (status and body, with `Idempotent-Replayed: true`) \
    instead of a second run; while the first is still running, 409 `DATA_CONFLICT`; the same key \
    with another request, 422. If the first request's process died, a repeat after 5 minutes \
    resumes it: students already enrolled by it are reported as enrolled, the others assigned.";

/// The optional key; a malformed one, or the header sent twice, is a 422.
#[derive(Debug, Clone)]
pub struct IdempotencyKeyHeader(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all(HEADER).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return match parts.headers.contains_key(HEADER) {
                true => Err(ApiError::invalid_field(HEADER, "Must be sent once")),
                false => Ok(Self(None)),
            };
        };
        let raw = value.to_str().unwrap_or_default();
        IdempotencyKey::parse(raw)
            .map(|key| Self(Some(key)))
            .map_err(|problem| ApiError::invalid_field(HEADER, problem))
    }
}

/// Answers a request that may carry a key. Without one, `work` runs as a first attempt. With
/// one, the key decides: replay the recorded answer, or run `work` (first or resumed attempt)
/// and record its answer — the body sent is the text recorded, byte for byte.
pub async fn answer<T, W, F>(
    state: &AppState,
    key: Option<Keyed>,
    work: W,
) -> Result<Response, ApiError>
where
    T: Serialize + Send + 'static,
    W: FnOnce(Attempt) -> F,
    F: Future<Output = Result<T, UseCaseError>> + Send + 'static,
{
    let Some(keyed) = key else {
        return Ok(axum::Json(work(Attempt::first()).await?).into_response());
    };
    let claim = match idempotency::start(&state.services, keyed).await? {
        Start::Replay(stored) => return Ok(replay(stored)),
        Start::Run(claim) => claim,
    };
    let run = work(claim.attempt);
    let text = claim.run(&state.services, text_of(run), render).await?;
    Ok(json_text(text))
}

async fn text_of<T: Serialize>(
    run: impl Future<Output = Result<T, UseCaseError>>,
) -> Result<String, UseCaseError> {
    let out = run.await?;
    serde_json::to_string(&out).map_err(|err| UseCaseError::Internal(err.into()))
}

/// The body to record: the answer's text, or the error body a refusal is answered with.
fn render(result: &Result<String, UseCaseError>) -> String {
    match result {
        Ok(text) => text.clone(),
        Err(err) => ApiError::answering(err).body_text(),
    }
}

fn json_text(text: String) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        text,
    )
        .into_response()
}

fn replay(stored: Stored) -> Response {
    let mut response = json_text(stored.body);
    *response.status_mut() = stored.status;
    response
        .headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}

//! Middleware of the stack in `http::app`, and the JSON fallbacks. The request id, trailing
//! slash, timeout, panic catcher, body limit, CORS and compression come from tower-http / tower;
//! what is left here is ours: the request span with the access log and metrics, and the bits
//! that adapt the crates to the contract.

use std::any::Any;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower::BoxError;
use tower_http::request_id::RequestId;
use tracing::Instrument;

use super::error::ApiError;
use crate::clients::request_context;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// An incoming `x-request-id` is reused only when it is 1..128 visible ASCII characters
/// (operations.md §4); any other is dropped here so that `SetRequestId` generates a UUID v4.
pub fn forget_invalid_request_id(mut req: Request) -> Request {
    let valid = req.headers().get(REQUEST_ID_HEADER).is_none_or(|v| {
        let v = v.as_bytes();
        !v.is_empty() && v.len() <= 128 && v.iter().all(u8::is_ascii_graphic)
    });
    if !valid {
        req.headers_mut().remove(REQUEST_ID_HEADER);
    }
    req
}

/// The matched route template, left by the router for [`observe`], which runs outside routing
/// (trailing-slash normalisation has to come before the router). A shared slot rather than a
/// response extension, so that a request cut off by the timeout still gets its route label.
#[derive(Clone, Default)]
struct MatchedRoute(Arc<OnceLock<String>>);

/// Inside the router: records the matched route on the request span and for [`observe`].
pub async fn record_route(req: Request, next: Next) -> Response {
    if let (Some(matched), Some(slot)) = (
        req.extensions().get::<MatchedPath>(),
        req.extensions().get::<MatchedRoute>(),
    ) {
        tracing::Span::current().record("route", matched.as_str());
        let _ = slot.0.set(matched.as_str().to_owned());
    }
    next.run(req).await
}

/// Request span, access log line and HTTP metrics. The request id (set by `SetRequestId`) is on
/// the span and is the task-local id of outbound calls.
pub async fn observe(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let route_slot = MatchedRoute::default();
    req.extensions_mut().insert(route_slot.clone());
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %method,
        route = tracing::field::Empty,
        user_id = tracing::field::Empty,
    );

    metrics::gauge!("vlab_http_requests_in_flight").increment(1.0);
    let response = request_context::scope(request_id, next.run(req))
        .instrument(span.clone())
        .await;
    metrics::gauge!("vlab_http_requests_in_flight").decrement(1.0);

    let route = match route_slot.0.get() {
        Some(route) => route.clone(),
        None => {
            span.record("route", "unmatched");
            "unmatched".to_owned()
        }
    };
    let status = response.status().as_u16();
    let latency = started.elapsed();
    let method_label = method.to_string();
    metrics::counter!(
        "vlab_http_requests_total",
        "method" => method_label.clone(),
        "route" => route.clone(),
        "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!(
        "vlab_http_request_duration_seconds",
        "method" => method_label,
        "route" => route
    )
    .record(latency.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            path = %path,
            status,
            latency_ms = latency.as_millis() as u64,
            "request completed"
        )
    });
    response
}

/// Swagger UI's own paths keep their trailing slash: its index loads its assets relative to
/// `/docs/`, and `/docs` redirects there. Marked before `NormalizePath`, restored after it.
#[derive(Clone)]
struct UnnormalisedUri(Uri);

/// Before `NormalizePath`: remembers the URI of a request under `{docs_prefix}`.
pub fn keep_docs_uri(docs_prefix: &str, mut req: Request) -> Request {
    if req.uri().path().starts_with(docs_prefix) {
        let uri = req.uri().clone();
        req.extensions_mut().insert(UnnormalisedUri(uri));
    }
    req
}

/// After `NormalizePath`: puts back the URI remembered by [`keep_docs_uri`].
pub fn restore_docs_uri(mut req: Request) -> Request {
    if let Some(UnnormalisedUri(uri)) = req.extensions_mut().remove::<UnnormalisedUri>() {
        *req.uri_mut() = uri;
    }
    req
}

/// The JSON 504 for requests that run past `REQUEST_TIMEOUT` (the only error of the stack).
pub async fn timeout_response(_: BoxError) -> ApiError {
    ApiError::request_timeout()
}

/// A caught panic becomes the JSON 500 of api.md §2.4.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = detail, "handler panicked");
    ApiError::internal().into_response()
}

pub async fn route_not_found() -> ApiError {
    ApiError::route_not_found()
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use tower::ServiceExt;
    use tower_http::catch_panic::CatchPanicLayer;

    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_becomes_the_json_500() {
        async fn boom() -> &'static str {
            panic!("bug in a handler")
        }
        let app = Router::new()
            .route("/boom", get(boom))
            .layer(CatchPanicLayer::custom(panic_response));
        let response = app
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"error_code":"SERVER_ERROR","message":"An unexpected error occurred","details":null,"data":null}"#
        );
    }
}

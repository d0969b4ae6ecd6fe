//! Middleware of the stack in `http::app`, and the JSON fallbacks.

use std::any::Any;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;
use uuid::Uuid;

use super::error::ApiError;
use crate::clients::request_context;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The request id of this request (also in the `x-request-id` headers).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Reuses an incoming `x-request-id` of 1..128 visible ASCII characters, otherwise generates a
/// UUID v4; echoes it on the response and makes it the task-local id for outbound calls.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let incoming = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned);
    let id = incoming.unwrap_or_else(|| Uuid::new_v4().to_string());
    if let Ok(value) = HeaderValue::from_str(&id) {
        req.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut response = request_context::scope(id.clone(), next.run(req)).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// A single trailing slash is ignored (api.md §0.1). Swagger UI's own `/docs/` paths are left
/// alone because its bundle relies on them.
pub async fn trim_trailing_slash(base_path: String, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let docs = format!("{base_path}/docs");
    if path.len() > 1 && path.ends_with('/') && !path.starts_with(&docs) {
        let trimmed = &path[..path.len() - 1];
        let rebuilt = match req.uri().query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_owned(),
        };
        if let Ok(uri) = rebuilt.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    next.run(req).await
}

/// Request span, access log line and HTTP metrics.
pub async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %method,
        route = %route,
        user_id = tracing::field::Empty,
    );

    metrics::gauge!("vlab_http_requests_in_flight").increment(1.0);
    let response = next.run(req).instrument(span.clone()).await;
    metrics::gauge!("vlab_http_requests_in_flight").decrement(1.0);

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
        "route" => route.clone()
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

/// A JSON 504 for requests that run past `REQUEST_TIMEOUT`.
pub async fn request_timeout(req: Request, next: Next) -> Response {
    match tokio::time::timeout(super::REQUEST_TIMEOUT, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::request_timeout().into_response(),
    }
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

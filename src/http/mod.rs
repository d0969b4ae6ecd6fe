//! The HTTP layer: routes (no SQL, no Keycloak calls), extractors and auth gates, the error
//! body, the middleware stack and the OpenAPI document.

pub mod auth;
pub mod error;
pub mod extract;
pub mod fields;
pub mod gates;
pub mod idempotency;
mod middleware;
pub mod openapi;
pub mod payloads;
pub mod roster_csv;
pub mod routes;
pub mod state;

use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderValue;
use axum::middleware::from_fn;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::SizeAbove;
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};
use tower_http::normalize_path::NormalizePathLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::http::state::AppState;
pub use error::{ApiError, ErrorCode};

/// Request bodies above this get 413 (README §5.1).
pub const BODY_LIMIT: usize = 1024 * 1024;
/// A request still running after this gets a JSON 504; its use-case task still completes.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// The whole application: every route under `BASE_PATH` plus the root probes, behind one
/// `ServiceBuilder` in the order of operations.md §2 (outermost first): request id (reused when
/// valid, else a UUID v4; echoed on the response), request span + access log + metrics, panic
/// catcher, body limit, CORS, compression, trailing-slash normalisation (not under `/docs`), the
/// timeout, and the router.
pub fn app(state: AppState) -> Router {
    let base_path = state.config().base_path.clone();
    let (api, _document) = routes::api_router().split_for_parts();
    let api = api.merge(routes::service::swagger_ui(&base_path));

    let routed = if base_path.is_empty() {
        api
    } else {
        // Probes are also served at the root so Kubernetes needs no BASE_PATH.
        let (probes, _document) = routes::service::probe_router().split_for_parts();
        Router::new().nest(&base_path, api).merge(probes)
    }
    .fallback(middleware::route_not_found)
    .method_not_allowed_fallback(middleware::method_not_allowed)
    .layer(from_fn(middleware::record_route))
    .with_state(state.clone());

    let docs_prefix = format!("{base_path}/docs");
    let stack = ServiceBuilder::new()
        .map_request(middleware::forget_invalid_request_id)
        .layer(SetRequestIdLayer::new(
            middleware::REQUEST_ID_HEADER,
            MakeRequestUuid,
        ))
        .layer(PropagateRequestIdLayer::new(middleware::REQUEST_ID_HEADER))
        .layer(from_fn(middleware::observe))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .option_layer(cors_layer(&state.config().cors_origins))
        .layer(CompressionLayer::new().compress_when(SizeAbove::new(1000)))
        .map_request(move |req| middleware::keep_docs_uri(&docs_prefix, req))
        .layer(NormalizePathLayer::trim_trailing_slash())
        .map_request(middleware::restore_docs_uri)
        .layer(HandleErrorLayer::new(middleware::timeout_response))
        .timeout(REQUEST_TIMEOUT)
        .service(routed);

    // A router around the stack, because normalisation must run before routing.
    Router::new().fallback_service(stack)
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_credentials(true)
            // "Any" is not allowed together with credentials, so mirror the request.
            .allow_methods(AllowMethods::mirror_request())
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers([
                axum::http::HeaderName::from_static("x-request-id"),
                idempotency::REPLAYED_HEADER,
            ])
            .max_age(Duration::from_secs(600))
            .vary([
                axum::http::header::ORIGIN,
                axum::http::header::ACCESS_CONTROL_REQUEST_METHOD,
                axum::http::header::ACCESS_CONTROL_REQUEST_HEADERS,
            ]),
    )
}

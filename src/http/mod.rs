//! The HTTP layer: routes (no SQL, no Keycloak calls), extractors and auth gates, the error
//! body, the middleware stack and the OpenAPI document.

pub mod auth;
pub mod error;
pub mod extract;
pub mod fields;
pub mod gates;
mod middleware;
pub mod openapi;
pub mod payloads;
pub mod routes;
pub mod state;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderValue;
use axum::middleware::from_fn;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::SizeAbove;
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};

use crate::http::state::AppState;
pub use error::{ApiError, ErrorCode};

/// Request bodies above this get 413 (README §5.1).
pub const BODY_LIMIT: usize = 1024 * 1024;
/// A request still running after this gets a JSON 504; its use-case task still completes.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// The whole application: every route under `BASE_PATH` plus the root probes, wrapped in the
/// middleware stack of operations.md §2 (outermost first: request id, trace + access log +
/// metrics, panic catcher, body limit, CORS, compression, trailing-slash normalisation).
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
    .method_not_allowed_fallback(middleware::method_not_allowed);

    let mut stack = routed
        .layer(from_fn(middleware::request_timeout))
        .layer(CompressionLayer::new().compress_when(SizeAbove::new(1000)));
    if let Some(cors) = cors_layer(&state.config().cors_origins) {
        stack = stack.layer(cors);
    }
    let inner = stack
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(from_fn(middleware::observe))
        .with_state(state);

    // Normalisation must run before routing, so it wraps the routed app as a service.
    Router::new()
        .fallback_service(inner)
        .layer(from_fn(move |req, next| {
            middleware::trim_trailing_slash(base_path.clone(), req, next)
        }))
        .layer(from_fn(middleware::request_id))
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
            .expose_headers([axum::http::HeaderName::from_static("x-request-id")])
            .max_age(Duration::from_secs(600))
            .vary([
                axum::http::header::ORIGIN,
                axum::http::header::ACCESS_CONTROL_REQUEST_METHOD,
                axum::http::header::ACCESS_CONTROL_REQUEST_HEADERS,
            ]),
    )
}

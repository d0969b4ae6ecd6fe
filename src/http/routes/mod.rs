//! One router function per resource, merged into the API router.

pub mod institutions;
pub mod service;

use axum::Router;

use crate::app::AppState;

/// Every route of api.md, relative to `BASE_PATH`.
pub fn api_router(base_path: &str) -> Router<AppState> {
    Router::new()
        .merge(service::router(base_path))
        .merge(institutions::router())
}

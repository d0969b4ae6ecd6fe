//! One router function per resource, merged into the API router.

pub mod course_void;
pub mod courses;
pub mod enrolments;
pub mod institutions;
pub mod invites;
pub mod projects;
pub mod seat_drops;
pub mod seats;
pub mod service;
pub mod virtual_labs;

use axum::Router;

use crate::http::state::AppState;

/// Every route of api.md, relative to `BASE_PATH`.
pub fn api_router(base_path: &str) -> Router<AppState> {
    Router::new()
        .merge(service::router(base_path))
        .merge(institutions::router())
        .merge(virtual_labs::router())
        .merge(projects::router())
        .merge(invites::router())
        .merge(courses::router())
        .merge(course_void::router())
        .merge(seat_drops::router())
        .merge(seats::router())
        .merge(enrolments::router())
}

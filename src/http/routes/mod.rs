//! One module per resource's routes; each registers its handlers once, with `routes!`, so the
//! router and the OpenAPI document come from the same line.

pub mod claim_emails;
pub mod corrections;
pub mod courses;
pub mod drop_preview;
pub mod enrolments;
pub mod events;
pub mod expiry_runs;
pub mod institutions;
pub mod invites;
pub mod projects;
pub mod roster_import;
pub mod seats;
pub mod service;
pub mod top_ups;
pub mod virtual_labs;

use utoipa_axum::router::OpenApiRouter;

use crate::http::state::AppState;

/// Every route of api.md, relative to `BASE_PATH`, with its part of the OpenAPI document.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(service::router())
        .merge(institutions::router())
        .merge(virtual_labs::router())
        .merge(projects::router())
        .merge(invites::router())
        .merge(courses::router())
        .merge(expiry_runs::router())
        .merge(seats::router())
        .merge(drop_preview::router())
        .merge(roster_import::router())
        .merge(enrolments::router())
        .merge(events::router())
        .merge(claim_emails::router())
        .merge(corrections::router())
        .merge(top_ups::router())
}

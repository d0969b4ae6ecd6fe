//! The OpenAPI document, generated from the handler annotations. Each routes module lists its
//! handlers here; `vlab-courses openapi` prints the same document.

use std::sync::OnceLock;

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::routes::{course_void, courses, institutions, seat_drops, service};
use super::routes::{enrolments, seats};
use super::routes::{invites, projects, virtual_labs};

#[derive(OpenApi)]
#[openapi(
    info(title = "vlab-courses", description = "Courses, seats and enrolments on virtual labs."),
    paths(
        service::banner, service::health, service::ready,
        service::metrics, service::openapi_json,
        institutions::create, institutions::update, institutions::search, institutions::get_one,
        virtual_labs::create, virtual_labs::list, virtual_labs::get_one, virtual_labs::update,
        virtual_labs::delete,
        projects::create, projects::list, projects::get_one,
        invites::send, invites::cancel, invites::show, invites::accept,
        courses::search, courses::get_one, courses::create, courses::update, courses::activate,
        course_void::void, course_void::remove,
        seat_drops::drop_seats,
        seats::provision_seats, seats::get_batch, seats::search_batches, seats::transfer_seats,
        seats::list_seats, seats::assign_seats,
        enrolments::claim_enrolment, enrolments::activate_enrolments, enrolments::list_enrolments,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "service", description = "Probes, metrics and documentation"),
        (name = "institutions", description = "Institutions that own courses and seats"),
        (name = "virtual-labs", description = "Virtual labs: create, list, read, update, soft-delete"),
        (name = "projects", description = "Projects of a virtual lab"),
        (name = "invites", description = "Lab invites: send, cancel, show and accept"),
        (name = "courses", description = "Courses on course labs: create, update, activate, search"),
        (name = "seats", description = "Seats of courses: provision, transfer, assign, drop"),
        (name = "enrolments", description = "Enrolments: claim, activate, list a course's"),
    ),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".to_owned());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The document as a value.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.openapi = utoipa::openapi::OpenApiVersion::Version31;
    doc
}

/// The document as JSON, rendered once.
pub fn document_json() -> String {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        document()
            .to_pretty_json()
            .unwrap_or_else(|_| "{}".to_owned())
    })
    .clone()
}

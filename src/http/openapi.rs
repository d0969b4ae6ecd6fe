//! The OpenAPI document. Paths come from the routers themselves (`routes!` registers each
//! handler and its annotation together); this module adds the info, tags, the bearer scheme and
//! the error answers every operation shares. `vlab-courses openapi` prints the same document.

use std::sync::OnceLock;

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use super::error::error_body_schema;
use super::routes;

#[derive(OpenApi)]
#[openapi(
    info(title = "vlab-courses", description = "Courses, seats and enrolments on virtual labs."),
    modifiers(&BearerAuth),
    tags(
        (name = "service", description = "Probes, metrics and documentation"),
        (name = "institutions", description = "Institutions that own courses and seats"),
        (name = "virtual-labs", description = "Virtual labs: create, list, read, update, soft-delete"),
        (name = "projects", description = "Projects of a virtual lab"),
        (name = "invites", description = "Lab invites: send, cancel, show and accept"),
        (name = "courses", description = "Courses on course labs: create, update, activate, void, delete, search"),
        (name = "seats", description = "Seats of courses: provision, transfer, assign, drop"),
        (name = "enrolments", description = "Enrolments: claim, activate, list a course's"),
        (name = "events", description = "The audit log of a course and an enrolment's timeline"),
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
    let router = OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(routes::api_router());
    let mut doc = router.into_openapi();
    doc.openapi = utoipa::openapi::OpenApiVersion::Version31;
    add_error_answers(&mut doc);
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

/// Every error answer of every operation gets the error body of api.md §2 (`/ready`'s 503
/// keeps its own body); operations behind a token also declare 401 (no or a bad token), 502
/// (the identity provider could not confirm the session) and 500; operations with a body 413.
fn add_error_answers(doc: &mut utoipa::openapi::OpenApi) {
    let (name, schema) = error_body_schema();
    doc.components
        .get_or_insert_with(Default::default)
        .schemas
        .insert(name.clone(), schema);
    for (path, item) in doc.paths.paths.iter_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            add_to_operation(path, operation, &name);
        }
    }
}

fn add_to_operation(path: &str, operation: &mut Operation, error_body: &str) {
    let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let mut statuses = Vec::new();
    if secured {
        statuses.extend(["401", "500", "502"]);
    }
    if operation.request_body.is_some() {
        statuses.push("413");
    }
    let responses = &mut operation.responses.responses;
    for status in statuses {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(Response::new("")));
    }
    for (status, response) in responses.iter_mut() {
        let is_error = status.starts_with('4') || status.starts_with('5');
        let own_body = path == "/ready" && status == "503";
        if !is_error || own_body {
            continue;
        }
        let RefOr::T(response) = response else {
            continue;
        };
        let description = if response.description.is_empty() {
            default_description(status).to_owned()
        } else {
            response.description.clone()
        };
        *response = ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(error_body)))
                    .build(),
            )
            .build();
    }
}

fn default_description(status: &str) -> &'static str {
    match status {
        "400" => "The request cannot be carried out as sent",
        "401" => "No token, or an invalid, expired or inactive one",
        "403" => "The caller's groups do not allow this operation",
        "404" => "Not found",
        "409" => "The current state does not allow this operation",
        "413" => "The request body is larger than 1 MiB",
        "422" => "Validation error: `details` maps each field to its first problem",
        "500" => "Unexpected or database error",
        "502" => "An upstream service (identity provider, accounting, mail) failed",
        _ => "Error",
    }
}

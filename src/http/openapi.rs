//! The OpenAPI document, generated from the handler annotations. Each routes module lists its
//! handlers here; `vlab-courses openapi` prints the same document.

use std::sync::OnceLock;

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::routes::{institutions, service};

#[derive(OpenApi)]
#[openapi(
    info(title = "vlab-courses", description = "Courses, seats and enrolments on virtual labs."),
    paths(
        service::banner, service::health, service::ready,
        service::metrics, service::openapi_json,
        institutions::create, institutions::update, institutions::search, institutions::get_one,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "service", description = "Probes, metrics and documentation"),
        (name = "institutions", description = "Institutions that own courses and seats"),
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

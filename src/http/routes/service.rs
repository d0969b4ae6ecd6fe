//! Service endpoints (api.md §4.0): banner, probes, metrics, OpenAPI and Swagger UI.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::openapi;
use crate::http::state::AppState;
use crate::repo::db;

/// The banner and the OpenAPI document, plus the probes. Swagger UI (`/docs`) is added by
/// [`swagger_ui`]: it is not part of the document.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(banner))
        .routes(routes!(openapi_json))
        .merge(probe_router())
}

/// `/health`, `/ready` and `/metrics`, also mounted at the root under a `BASE_PATH`.
pub fn probe_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
}

/// Swagger UI at `/docs`, reading the document at `{base_path}/openapi.json`.
pub fn swagger_ui(base_path: &str) -> utoipa_swagger_ui::SwaggerUi {
    utoipa_swagger_ui::SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::from(format!(
        "{base_path}/openapi.json"
    )))
}

/// A JSON string.
#[utoipa::path(get, path = "/", tag = "service", responses((status = 200, body = String,
    content_type = "application/json", example = json!("Server is running."))))]
async fn banner() -> Json<&'static str> {
    Json("Server is running.")
}

/// Liveness: the process is up. Checks no dependency. A JSON string.
#[utoipa::path(get, path = "/health", tag = "service", responses((status = 200, body = String,
    content_type = "application/json", example = json!("OK"))))]
async fn health() -> Json<&'static str> {
    Json("OK")
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyChecks {
    /// `ok`, `error` or `unknown`.
    pub database: &'static str,
    /// `ok`, `error` or `unknown`.
    pub migrations: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyOut {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    pub checks: ReadyChecks,
}

/// Readiness: the database answers `SELECT 1` within 2 s and every embedded migration is
/// applied. 503 from the moment shutdown starts.
#[utoipa::path(get, path = "/ready", tag = "service", responses(
    (status = 200, body = ReadyOut),
    (status = 503, body = ReadyOut, description = "Not ready (the one exception to the error body)")))]
async fn ready(State(state): State<AppState>) -> Response {
    let pool = &state.services.db;
    let database_ok = matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(pool)
        )
        .await,
        Ok(Ok(1))
    );
    let migrations = if !database_ok {
        "unknown"
    } else {
        match tokio::time::timeout(Duration::from_secs(2), db::migration_status(pool)).await {
            Ok(Ok(status)) if status.is_ok() => "ok",
            Ok(Ok(_)) => "error",
            _ => "unknown",
        }
    };
    let ready = database_ok && migrations == "ok" && !state.readiness.is_shutting_down();
    let body = ReadyOut {
        status: if ready { "ready" } else { "not_ready" },
        checks: ReadyChecks {
            database: if database_ok { "ok" } else { "error" },
            migrations,
        },
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus text exposition (operations.md §5).
#[utoipa::path(get, path = "/metrics", tag = "service", responses((status = 200, content_type = "text/plain; version=0.0.4", body = String)))]
async fn metrics(State(state): State<AppState>) -> Response {
    let pool = &state.services.db;
    let idle = pool.num_idle() as f64;
    metrics::gauge!("vlab_db_pool_connections", "state" => "idle").set(idle);
    metrics::gauge!("vlab_db_pool_connections", "state" => "in_use").set(pool.size() as f64 - idle);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// The OpenAPI 3.1 document of every endpoint.
#[utoipa::path(get, path = "/openapi.json", tag = "service", responses((status = 200, content_type = "application/json", body = Object)))]
async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        openapi::document_json(),
    )
        .into_response()
}

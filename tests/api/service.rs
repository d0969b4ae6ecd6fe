//! Service endpoints, middleware and framework-level errors.

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{ReplyExt, TestApp, json};

#[sqlx::test]
async fn health_and_banner_answer_json_strings(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (status, body) = app.anonymous().get("/health").await;
    assert_eq!((status, body), (StatusCode::OK, json!("OK")));
    let (status, body) = app.anonymous().get("/").await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!("Server is running."))
    );
}

#[sqlx::test]
async fn ready_checks_database_and_migrations(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (status, body) = app.anonymous().get("/ready").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"status": "ready", "checks": {"database": "ok", "migrations": "ok"}})
    );

    // A migration the binary knows but the database lacks makes the service not ready.
    sqlx::query("DELETE FROM _sqlx_migrations")
        .execute(&db)
        .await
        .unwrap();
    let (status, body) = app.anonymous().get("/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"]["migrations"], "error");
}

#[sqlx::test]
async fn unknown_routes_and_wrong_methods_get_json_errors(db: PgPool) {
    let app = TestApp::spawn(db).await;
    app.anonymous().get("/no/such/route").await.error_with(
        StatusCode::NOT_FOUND,
        "ENTITY_NOT_FOUND",
        "Route not found",
    );

    app.anonymous().delete("/health").await.error_with(
        StatusCode::METHOD_NOT_ALLOWED,
        "INVALID_REQUEST",
        "Method not allowed",
    );
}

#[sqlx::test]
async fn bodies_over_one_mebibyte_get_a_json_413(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let big = "x".repeat(1024 * 1024 + 10);
    let response = app
        .client
        .post(app.url("/institutions"))
        .bearer_auth(app.admin_token())
        .body(format!("{{\"name\": \"{big}\"}}"))
        .send()
        .await
        .unwrap();
    json(response).await.error_with(
        StatusCode::PAYLOAD_TOO_LARGE,
        "INVALID_REQUEST",
        "Request body too large",
    );
}

#[sqlx::test]
async fn request_ids_are_reused_when_valid_and_generated_otherwise(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let response = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");

    let response = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "has spaces")
        .send()
        .await
        .unwrap();
    let generated = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(generated, "has spaces");
    assert!(uuid::Uuid::parse_str(&generated).is_ok());
}

#[sqlx::test]
async fn a_single_trailing_slash_is_ignored(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (status, body) = app.anonymous().get("/health/").await;
    assert_eq!((status, body), (StatusCode::OK, json!("OK")));
}

#[sqlx::test]
async fn metrics_are_prometheus_text(db: PgPool) {
    let app = TestApp::spawn(db).await;
    app.get("/health", None).await;
    let response = app.get("/metrics", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    assert!(text.contains("vlab_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/health\""), "{text}");
    assert!(text.contains("vlab_build_info"), "{text}");
}

#[sqlx::test]
async fn the_openapi_document_lists_every_route_with_bearer_security(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (status, doc) = app.anonymous().get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for path in [
        "/health",
        "/ready",
        "/institutions",
        "/institutions/{institution_id}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    let docs = app.get("/docs/", None).await;
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.text().await.unwrap().contains("swagger"));
}

#[sqlx::test]
async fn routes_live_under_the_base_path_and_probes_also_at_the_root(db: PgPool) {
    let app = TestApp::spawn_with(db, |vars| {
        vars.insert("BASE_PATH".into(), "/api/virtual-lab-manager".into());
    })
    .await;
    // app.url() includes the base path.
    let (status, _) = app.anonymous().get("/health").await;
    assert_eq!(status, StatusCode::OK);
    let root = format!("http://127.0.0.1:{}", app.port);
    for probe in ["/health", "/ready"] {
        let response = app
            .client
            .get(format!("{root}{probe}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{probe}");
    }
    let response = app
        .client
        .get(format!("{root}/institutions/_search"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let (status, doc) = app.anonymous().get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["paths"].get("/institutions").is_some());
}

#[sqlx::test]
async fn large_responses_are_gzipped_when_accepted(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
}

#[sqlx::test]
async fn a_second_server_process_serves_the_same_database(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let second = app.spawn_process().await;
    let response = app
        .client
        .get(format!("{}/institutions/_search", second.base_url))
        .bearer_auth(app.admin_token())
        .send()
        .await
        .unwrap();
    let body = json(response).await.ok_body();
    assert_eq!(body["data"][0]["name"], "Open Brain Institute");
}

//! `/institutions` (api.md §4.4).

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{ReplyExt, TestApp, fetch_scalar, json, names};

#[sqlx::test]
async fn create_trims_the_name_and_lower_cases_the_email_domain(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let body = app
        .as_admin()
        .post_institution(&json!({"name": "  EPFL ", "contact_email": " Contact@INSTITUTION.org "}))
        .await
        .ok_body();
    assert_eq!(body["message"], "Newly created institution");
    assert_eq!(body["data"]["name"], "EPFL");
    assert_eq!(body["data"]["contact_email"], "Contact@institution.org");
    let stored: String =
        sqlx::query_scalar("SELECT contact_email FROM institution WHERE name = 'EPFL'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(stored, "Contact@institution.org");
}

#[sqlx::test]
async fn create_with_an_existing_name_returns_it_unchanged(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, first) = app
        .as_admin()
        .post_institution(&json!({"name": "EPFL", "contact_email": "a@epfl.ch"}))
        .await;
    let (status, second) = app
        .as_admin()
        .post_institution(&json!({"name": "EPFL", "contact_email": "b@epfl.ch"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second["message"], "Newly created institution");
    assert_eq!(second["data"], first["data"]);
    assert_eq!(second["data"]["contact_email"], "a@epfl.ch");
    // Names are case-sensitive: another spelling is another institution.
    let (_, third) = app
        .as_admin()
        .post_institution(&json!({"name": "epfl", "contact_email": "c@epfl.ch"}))
        .await;
    assert_ne!(third["data"]["id"], first["data"]["id"]);
}

#[sqlx::test]
async fn invalid_create_bodies_are_422_with_field_messages(db: PgPool) {
    let app = TestApp::spawn(db).await;
    for (body, field, message) in [
        (
            json!({"contact_email": "a@b.org"}),
            "name",
            "Field required",
        ),
        (
            json!({"name": null, "contact_email": "a@b.org"}),
            "name",
            "Must not be null",
        ),
        (
            json!({"name": "   ", "contact_email": "a@b.org"}),
            "name",
            "Must not be empty",
        ),
        (
            json!({"name": 5, "contact_email": "a@b.org"}),
            "name",
            "Must be a string",
        ),
        (
            json!({"name": "x".repeat(251), "contact_email": "a@b.org"}),
            "name",
            "Must be at most 250 characters",
        ),
        (
            json!({"name": "X", "contact_email": "nope"}),
            "contact_email",
            "Must be a valid e-mail address",
        ),
    ] {
        let response = app
            .as_admin()
            .post_institution(&body.clone())
            .await
            .error_with(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_REQUEST",
                "Validation error",
            );
        assert_eq!(response["details"][field], message, "{body}");
    }
    let response = app
        .client
        .post(app.url("/institutions"))
        .bearer_auth(app.admin_token())
        .body("not json")
        .send()
        .await
        .unwrap();
    let (status, body) = json(response).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["details"]["body"], "Request body is not valid JSON");
}

#[sqlx::test]
async fn non_admins_get_403_before_any_validation(db: PgPool) {
    let app = TestApp::spawn(db).await;
    app.as_faculty()
        .post_institution(&json!({"name": null}))
        .await
        .denied();
    let (status, _) = app.as_faculty().get("/institutions/not-a-uuid").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[sqlx::test]
async fn get_finds_by_id_and_reports_missing_or_malformed_ids(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, created) = app
        .as_admin()
        .post_institution(&json!({"name": "EPFL", "contact_email": "a@epfl.ch"}))
        .await;
    let id = created["data"]["id"].as_str().unwrap().to_uppercase();
    let (status, body) = app.as_admin().get_institution(id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["message"], "Institution found");
    assert_eq!(body["data"]["id"], created["data"]["id"]);

    let missing = uuid::Uuid::new_v4();
    app.as_admin().get_institution(missing).await.error_with(
        StatusCode::NOT_FOUND,
        "ENTITY_NOT_FOUND",
        "Institution not found",
    );

    let body = app.as_admin().get("/institutions/42").await.invalid();
    assert_eq!(body["details"]["institution_id"], "Must be a UUID");
}

#[sqlx::test]
async fn patch_updates_present_keys_and_refuses_nulls_empties_and_clashes(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let token = app.admin_token();
    let (_, a) = app
        .as_admin()
        .post_institution(&json!({"name": "A", "contact_email": "a@a.org"}))
        .await;
    app.as_admin()
        .post_institution(&json!({"name": "B", "contact_email": "b@b.org"}))
        .await;
    let path = format!("/institutions/{}", a["data"]["id"].as_str().unwrap());

    let patch = |body: Value| {
        let app = &app;
        let path = path.clone();
        let token = token.clone();
        async move { app.with_token(&token).patch(&path, &body).await }
    };

    let body = patch(json!({"contact_email": "New@A.ORG"})).await.ok_body();
    assert_eq!(body["message"], "Updated institution");
    assert_eq!(body["data"]["name"], "A");
    assert_eq!(body["data"]["contact_email"], "New@a.org");

    patch(json!({})).await.error_with(
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
        "No fields to update",
    );

    let body = patch(json!({"name": null})).await.invalid();
    assert_eq!(body["details"]["name"], "Must not be null");

    patch(json!({"name": " B "})).await.error_with(
        StatusCode::CONFLICT,
        "ENTITY_ALREADY_EXISTS",
        "Another institution with the same name already exists",
    );

    let missing = format!("/institutions/{}", uuid::Uuid::new_v4());
    app.with_token(&token)
        .patch(&missing, &json!({"name": "Z"}))
        .await
        .error_body(StatusCode::NOT_FOUND, "ENTITY_NOT_FOUND");
}

#[sqlx::test]
async fn search_matches_literally_case_insensitively_in_a_stable_order(db: PgPool) {
    let app = TestApp::spawn(db).await;
    for name in ["b_lab", "bXlab", "100% Uni", "100 Uni", "Alpha"] {
        app.as_admin()
            .post_institution(&json!({"name": name, "contact_email": "x@y.org"}))
            .await;
    }
    let token = app.admin_token();

    let (status, body) = app.with_token(&token).search_institutions("?q=_").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["message"], "Institutions matching query");
    assert_eq!(names(&body), ["b_lab"]);

    let (_, body) = app.with_token(&token).search_institutions("?q=%25").await;
    assert_eq!(names(&body), ["100% Uni"]);

    let (_, body) = app.with_token(&token).search_institutions("?q=ALPHA").await;
    assert_eq!(names(&body), ["Alpha"]);

    let (_, body) = app.with_token(&token).search_institutions("?q=zzz").await;
    assert_eq!(body["data"], json!([]));

    let (_, body) = app.with_token(&token).search_institutions("?q=%20").await;
    assert_eq!(body["message"], "All institutions");
    assert_eq!(
        names(&body),
        [
            "100 Uni",
            "100% Uni",
            "Alpha",
            "Open Brain Institute",
            "bXlab",
            "b_lab"
        ]
    );
}

#[sqlx::test]
async fn patch_renames_with_trimming_and_may_keep_its_own_name(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (_, a) = app
        .as_admin()
        .post_institution(&json!({"name": "A", "contact_email": "a@a.org"}))
        .await;
    let id = a["data"]["id"].as_str().unwrap().to_owned();
    let path = format!("/institutions/{id}");
    let token = app.admin_token();

    let body = app
        .with_token(&token)
        .patch(&path, &json!({"name": "  Renamed "}))
        .await
        .ok_body();
    assert_eq!(
        body["data"],
        json!({"id": id, "name": "Renamed", "contact_email": "a@a.org"})
    );
    let stored: String =
        fetch_scalar(&db, "SELECT name FROM institution WHERE id = $1::uuid", &id).await;
    assert_eq!(stored, "Renamed");

    // Its own name is not "another institution's".
    let body = app
        .with_token(&token)
        .patch(
            &path,
            &json!({"name": "Renamed", "contact_email": "b@b.org"}),
        )
        .await
        .ok_body();
    assert_eq!(body["data"]["contact_email"], "b@b.org");

    for (patch, field, message) in [
        (json!({"name": "  "}), "name", "Must not be empty"),
        (
            json!({"contact_email": null}),
            "contact_email",
            "Must not be null",
        ),
        (
            json!({"contact_email": "x"}),
            "contact_email",
            "Must be a valid e-mail address",
        ),
    ] {
        let body = app.with_token(&token).patch(&path, &patch).await.invalid();
        assert_eq!(body["details"], json!({ field: message }), "{patch}");
    }
}

#[sqlx::test]
async fn patch_checks_existence_before_the_empty_body_and_ids_before_both(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let token = app.admin_token();
    let missing = format!("/institutions/{}", uuid::Uuid::new_v4());
    app.with_token(&token)
        .patch(&missing, &json!({}))
        .await
        .error_with(
            StatusCode::NOT_FOUND,
            "ENTITY_NOT_FOUND",
            "Institution not found",
        );

    let body = app
        .with_token(&token)
        .patch("/institutions/nope", &json!({}))
        .await
        .invalid();
    assert_eq!(body["details"]["institution_id"], "Must be a UUID");

    // Non-admins get 403 before any of that; no token is 401.
    app.as_faculty()
        .patch("/institutions/nope", &json!({"name": null}))
        .await
        .denied();
    app.as_faculty().search_institutions("").await.denied();
    app.anonymous()
        .post_institution(&json!({}))
        .await
        .unauthenticated();
}

#[sqlx::test]
async fn search_without_q_lists_every_institution(db: PgPool) {
    let app = TestApp::spawn(db).await;
    app.as_admin()
        .post_institution(&json!({"name": "Zurich", "contact_email": "z@z.org"}))
        .await;
    let body = app.as_admin().search_institutions("").await.ok_body();
    assert_eq!(body["message"], "All institutions");
    let names: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Open Brain Institute", "Zurich"]);
    assert_eq!(
        body["data"][0]["contact_email"],
        "obi-virtual-lab@openbraininstitute.org"
    );
}

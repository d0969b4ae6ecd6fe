//! `/courses` search, get, create, update and activate (api.md §4.5.1–§4.5.5, rules.md §2.1,
//! §4.6, §4.14). Void and delete are tested in their own module.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, SubsecRound, TimeDelta, Utc};
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;
use vlab_emulators::{Fault, FaultAction};

use crate::fixtures::{
    COURSE_KEYS, CourseLab, create_course_lab, create_draft_course, obi_institution_id,
};
use crate::helpers::{
    ReplyExt, TestApp, assert_error_body, assert_keys, data_strings, fetch_row, fetch_scalar, json,
    uuid_of,
};

// ---- helpers -------------------------------------------------------------------------------

/// A new course lab and the body that creates its course on the seeded institution.
async fn lab_and_course_body(app: &TestApp, name: &str) -> (CourseLab, Value) {
    let lab = create_course_lab(app, name).await;
    let body = create_body(&lab, obi_institution_id(app).await);
    (lab, body)
}

fn create_body(lab: &CourseLab, institution_id: Uuid) -> Value {
    json!({
        "virtual_lab_id": lab.vlab_id,
        "template_project_id": lab.template_project_id,
        "institution_id": institution_id,
    })
}

async fn course_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM course")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

async fn course_status(app: &TestApp, course_id: Uuid) -> String {
    fetch_scalar(
        &app.db,
        "SELECT status FROM course WHERE id = $1",
        course_id,
    )
    .await
}

fn balance(app: &TestApp, account: Uuid) -> Decimal {
    app.accounting
        .balance(account)
        .unwrap_or_else(|| panic!("no accounting account {account}"))
}

/// Whole seconds, so the expected text needs no fraction.
fn now_secs() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

/// The output format of api.md §0.2 for a whole-second instant.
fn out(dt: DateTime<Utc>) -> String {
    dt.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A regular (non-course) lab of `token`'s user with one project, as `(vlab_id, project_id)`.
async fn regular_lab(app: &TestApp, token: &str, name: &str) -> (Uuid, Uuid) {
    let lab = app
        .with_token(token)
        .post_virtual_lab(&json!({"name": name, "description": "", "entity": "EPFL"}))
        .await
        .ok_body();
    let vlab_id = uuid_of(&lab["id"]);
    let project = app
        .with_token(token)
        .post_project(vlab_id, "", &json!({"name": "Template"}))
        .await
        .ok_body();
    (vlab_id, uuid_of(&project["id"]))
}

// ---- create ----------------------------------------------------------------------------------

#[sqlx::test]
async fn create_inserts_a_draft_course_and_funds_its_template_once(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let lab = create_course_lab(&app, "Neuro 101").await;
    let institution = obi_institution_id(&app).await;
    let start = now_secs() + TimeDelta::days(30);
    let mut body = create_body(&lab, institution);
    body["start_date"] = json!(out(start));
    body["end_date"] = Value::Null;

    let (status, created) = app.as_admin().post_course(&body).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["message"], "Course created successfully");
    let data = &created["data"];
    assert_keys(data, &COURSE_KEYS);
    assert_eq!(data["virtual_lab_id"], lab.vlab_id.to_string());
    assert_eq!(data["institution_id"], institution.to_string());
    assert_eq!(
        data["template_project_id"],
        lab.template_project_id.to_string()
    );
    assert_eq!(data["status"], "draft");
    assert_eq!(data["credits_per_seat"], 200);
    assert_eq!(data["start_date"], out(start));
    assert_eq!(data["end_date"], Value::Null);
    assert_eq!(data["last_drop_date"], Value::Null);
    assert_eq!(data["budget_depleted"], false);

    let id = uuid_of(&data["id"]);
    let row: (Uuid, String, i32, bool, Option<DateTime<Utc>>) = fetch_row(
        &app.db,
        "SELECT virtual_lab_id, status, credits_per_seat, budget_depleted, start_date
         FROM course WHERE id = $1",
        id,
    )
    .await;
    assert_eq!(
        row,
        (lab.vlab_id, "draft".to_owned(), 200, false, Some(start))
    );
    assert_eq!(balance(&app, lab.template_project_id), Decimal::from(200));
    assert_eq!(app.accounting.call_count("acc_grant"), 1);
    assert_eq!(app.accounting.call_count("acc_deplete_project"), 0);
}

#[sqlx::test]
async fn create_uses_the_configured_credits_per_seat(db: PgPool) {
    let app = TestApp::spawn_with(db, |vars| {
        vars.insert("CREDITS_PER_SEAT".to_owned(), "150".to_owned());
    })
    .await;
    let lab = create_course_lab(&app, "Neuro 150").await;
    let created = app
        .as_admin()
        .post_course(&create_body(&lab, obi_institution_id(&app).await))
        .await
        .ok_body();
    assert_eq!(created["data"]["credits_per_seat"], 150);
    assert_eq!(balance(&app, lab.template_project_id), Decimal::from(150));
}

#[sqlx::test]
async fn create_refuses_missing_deleted_and_regular_labs_in_order(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let institution = obi_institution_id(&app).await;
    let lab = create_course_lab(&app, "Course Lab").await;
    let missing = Uuid::new_v4();

    // A missing lab wins over a missing project and institution.
    let body = app.as_admin().post_course(&json!({"virtual_lab_id": missing, "template_project_id": Uuid::new_v4(), "institution_id": Uuid::new_v4()}))
    .await.error_with(StatusCode::NOT_FOUND, "ENTITY_NOT_FOUND", &format!("Virtual lab {missing} not found"));
    assert_eq!(body["details"], Value::Null);
    assert_eq!(body["data"], Value::Null);

    // A regular lab of another user is not a course lab (403), before its project is looked up.
    let (regular, regular_project) = regular_lab(&app, &app.faculty_token(), "Faculty Lab").await;
    let body = app.as_admin().post_course(&json!({"virtual_lab_id": regular, "template_project_id": Uuid::new_v4(), "institution_id": institution}))
    .await.error_with(StatusCode::FORBIDDEN, "NOT_ALLOWED_OP", "Virtual lab is not a course lab");
    assert_eq!(body["details"], Value::Null);
    let (status, _) = app.as_admin().post_course(&json!({"virtual_lab_id": regular, "template_project_id": regular_project, "institution_id": institution}))
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A soft-deleted course lab counts as missing.
    app.as_admin()
        .delete_virtual_lab(lab.vlab_id)
        .await
        .ok_body();
    app.as_admin()
        .post_course(&create_body(&lab, institution))
        .await
        .error_with(
            StatusCode::NOT_FOUND,
            "ENTITY_NOT_FOUND",
            &format!("Virtual lab {} not found", lab.vlab_id),
        );

    assert_eq!(course_rows(&app).await, 0);
    assert_eq!(app.accounting.call_count("acc_grant"), 0);
}

#[sqlx::test]
async fn a_regular_lab_of_the_obi_owner_user_qualifies(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let owner_token = app.token(&app.users.owner);
    let (vlab_id, project_id) = regular_lab(&app, &owner_token, "OBI Regular").await;
    let body = app.as_admin().post_course(&json!({"virtual_lab_id": vlab_id, "template_project_id": project_id, "institution_id": obi_institution_id(&app).await}))
    .await.ok_body();
    assert_eq!(body["data"]["virtual_lab_id"], vlab_id.to_string());
}

#[sqlx::test]
async fn create_refuses_projects_outside_the_lab_then_unknown_institutions(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let institution = obi_institution_id(&app).await;
    let lab = create_course_lab(&app, "Lab A").await;
    let other = create_course_lab(&app, "Lab B").await;

    for project in [Uuid::new_v4(), other.template_project_id] {
        app.as_admin().post_course(&json!({"virtual_lab_id": lab.vlab_id, "template_project_id": project, "institution_id": Uuid::new_v4()}))
        .await.error_with(StatusCode::NOT_FOUND, "ENTITY_NOT_FOUND", &format!("Project {project} not found in virtual lab {}", lab.vlab_id));
    }

    let unknown = Uuid::new_v4();
    let body = app
        .as_admin()
        .post_course(&create_body(&lab, unknown))
        .await
        .error_with(
            StatusCode::NOT_FOUND,
            "ENTITY_NOT_FOUND",
            &format!("Institution {unknown} not found"),
        );
    assert_eq!(body["data"], Value::Null);

    // Ids are echoed lower-case whatever case they were sent in.
    let upper = Uuid::new_v4();
    let mut body = create_body(&lab, institution);
    body["institution_id"] = json!(upper.to_string().to_uppercase());
    let (_, response) = app.as_admin().post_course(&body).await;
    assert_eq!(
        response["message"],
        format!("Institution {upper} not found")
    );

    assert_eq!(course_rows(&app).await, 0);
    assert_eq!(app.accounting.call_count("acc_grant"), 0);
}

#[sqlx::test]
async fn a_second_course_on_a_lab_is_a_conflict_without_a_second_grant(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let lab = create_course_lab(&app, "Lab Twice").await;
    let institution = obi_institution_id(&app).await;
    let (status, _) = app
        .as_admin()
        .post_course(&create_body(&lab, institution))
        .await;
    assert_eq!(status, StatusCode::OK);

    let body = app
        .as_admin()
        .post_course(&create_body(&lab, institution))
        .await
        .error_with(
            StatusCode::CONFLICT,
            "ENTITY_ALREADY_EXISTS",
            "Course creation failed due to a conflict (virtual lab may already have a course)",
        );
    assert_eq!(body["details"], Value::Null);
    assert_eq!(course_rows(&app).await, 1);
    assert_eq!(app.accounting.call_count("acc_grant"), 1);
    assert_eq!(balance(&app, lab.template_project_id), Decimal::from(200));
}

#[sqlx::test]
async fn concurrent_creations_on_one_lab_fund_the_template_exactly_once(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (lab, body) = lab_and_course_body(&app, "Race Lab").await;
    // A slow grant keeps both requests in flight together.
    app.accounting
        .set_operation_latency("acc_grant", Duration::from_millis(300));

    let admin = app.as_admin();
    let (first, second) = tokio::join!(admin.post_course(&body), admin.post_course(&body));
    let mut outcomes = [first, second];
    outcomes.sort_by_key(|(status, _)| status.as_u16());
    let [(won, created), (lost, refused)] = outcomes;
    assert_eq!(won, StatusCode::OK, "{created}");
    assert_error_body(
        &refused,
        lost,
        StatusCode::CONFLICT,
        "ENTITY_ALREADY_EXISTS",
    );
    assert_eq!(
        refused["message"],
        "Course creation failed due to a conflict (virtual lab may already have a course)"
    );

    assert_eq!(course_rows(&app).await, 1);
    assert_eq!(balance(&app, lab.template_project_id), Decimal::from(200));
    assert_eq!(app.accounting.call_count("acc_grant"), 1);
    assert_eq!(app.accounting.call_count("acc_deplete_project"), 0);
}

#[sqlx::test]
async fn a_refused_grant_is_502_and_leaves_nothing_behind(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (lab, body) = lab_and_course_body(&app, "Refused Grant").await;
    app.accounting
        .inject(Fault::new("acc_grant", FaultAction::Status(500)));

    let response = app.as_admin().post_course(&body).await.error_with(
        StatusCode::BAD_GATEWAY,
        "EXTERNAL_SERVICE_ERROR",
        &format!(
            "Failed to fund the template project {}",
            lab.template_project_id
        ),
    );
    assert_eq!(response["details"], Value::Null);
    assert_eq!(course_rows(&app).await, 0);
    assert_eq!(balance(&app, lab.template_project_id), Decimal::ZERO);
    // A definite failure: the pre-registered deplete was discarded, not run.
    assert_eq!(app.accounting.call_count("acc_deplete_project"), 0);

    // Nothing was taken: the same lab can have its course now.
    app.as_admin().post_course(&body).await.ok_body();
    assert_eq!(balance(&app, lab.template_project_id), Decimal::from(200));
}

#[sqlx::test]
async fn an_uncertain_grant_is_compensated_and_502(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (lab, body) = lab_and_course_body(&app, "Uncertain Grant").await;
    // The grant is performed, then the answer never comes (HTTP_TIMEOUT_SECONDS=2).
    app.accounting.inject(Fault::new(
        "acc_grant",
        FaultAction::TimeoutAfter(Duration::from_secs(3)),
    ));

    app.as_admin().post_course(&body).await.error_with(
        StatusCode::BAD_GATEWAY,
        "EXTERNAL_SERVICE_ERROR",
        &format!(
            "Failed to fund the template project {}",
            lab.template_project_id
        ),
    );
    assert_eq!(course_rows(&app).await, 0);
    assert_eq!(app.accounting.call_count("acc_grant"), 1);
    assert_eq!(app.accounting.call_count("acc_deplete_project"), 1);
    assert_eq!(balance(&app, lab.template_project_id), Decimal::ZERO);
}

#[sqlx::test]
async fn invalid_create_bodies_are_422_and_non_admins_get_403_first(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let id = Uuid::new_v4();
    let body = app.as_admin().post_course(&json!({})).await.error_with(
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_REQUEST",
        "Validation error",
    );
    assert_eq!(
        body["details"],
        json!({"virtual_lab_id": "Field required", "template_project_id": "Field required",
               "institution_id": "Field required"})
    );

    let body = app.as_admin().post_course(&json!({"virtual_lab_id": null, "template_project_id": "nope", "institution_id": 5, "start_date": "tomorrow", "end_date": null, "last_drop_date": true}))
    .await.invalid();
    assert_eq!(
        body["details"],
        json!({"virtual_lab_id": "Must not be null", "template_project_id": "Must be a UUID",
               "institution_id": "Must be a UUID", "start_date": "Must be a valid date-time",
               "last_drop_date": "Must be a valid date-time"})
    );

    let response = app
        .client
        .post(app.url("/courses"))
        .bearer_auth(app.admin_token())
        .body("[1]")
        .send()
        .await
        .unwrap();
    let (status, body) = json(response).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["details"]["body"],
        "Request body must be a JSON object"
    );

    // Tier before syntax: a non-admin never learns the body was invalid.
    for path in ["/courses".to_owned(), format!("/courses/{id}/activate")] {
        app.as_faculty().post(&path, &json!({})).await.error_with(
            StatusCode::FORBIDDEN,
            "AUTHORIZATION_ERROR",
            "Access denied",
        );
    }
    app.anonymous()
        .post_course(&json!({}))
        .await
        .unauthenticated();
}

// ---- datetimes -------------------------------------------------------------------------------

#[sqlx::test]
async fn datetimes_are_read_in_every_input_form_and_written_in_utc_with_z(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let lab = create_course_lab(&app, "Dates Lab").await;
    let base = now_secs() + TimeDelta::days(10);
    let naive = base.format("%Y-%m-%dT%H:%M:%S").to_string();
    let date_only = base.format("%Y-%m-%d").to_string();
    let midnight = base.date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
    // The same instant written with a +02:00 offset.
    let offset = base
        .with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap())
        .to_rfc3339();

    let mut body = create_body(&lab, obi_institution_id(&app).await);
    body["start_date"] = json!(naive);
    body["last_drop_date"] = json!(date_only);
    body["end_date"] = json!(base.timestamp());
    let created = app.as_admin().post_course(&body).await.ok_body();
    assert_eq!(created["data"]["start_date"], out(base), "naive is UTC");
    assert_eq!(
        created["data"]["last_drop_date"],
        out(midnight),
        "date-only is 00:00 UTC"
    );
    assert_eq!(created["data"]["end_date"], out(base), "Unix seconds");
    let id = uuid_of(&created["data"]["id"]);

    let patched = app.as_admin().patch_course(id, &json!({"start_date": offset, "end_date": format!("{naive}.5"), "last_drop_date": format!("{naive}.123456789Z")}))
    .await.ok_body();
    assert_eq!(
        patched["data"]["start_date"],
        out(base),
        "an offset is converted to UTC"
    );
    assert_eq!(patched["data"]["end_date"], format!("{naive}.500000Z"));
    assert_eq!(
        patched["data"]["last_drop_date"],
        format!("{naive}.123456Z"),
        "sub-microsecond digits are truncated"
    );
    let stored: DateTime<Utc> = fetch_scalar(
        &app.db,
        "SELECT last_drop_date FROM course WHERE id = $1",
        id,
    )
    .await;
    assert_eq!(stored, base + TimeDelta::microseconds(123_456));
}

// ---- get and search --------------------------------------------------------------------------

#[sqlx::test]
async fn get_returns_the_course_detail_or_404(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let start = now_secs() - TimeDelta::days(1);
    let course = create_draft_course(&app, "Neuro 101 — Fall", Some(start), None, None).await;

    let (status, body) = app
        .as_admin()
        .get_course(course.course_id.to_string().to_uppercase())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["message"], "Course retrieved successfully");
    assert_eq!(
        body["data"],
        json!({
            "id": course.course_id, "virtual_lab_id": course.vlab_id,
            "virtual_lab_name": "Neuro 101 — Fall", "institution_id": course.institution_id,
            "institution_name": "Open Brain Institute",
            "template_project_id": course.template_project_id, "status": "draft",
            "start_date": out(start), "end_date": null, "last_drop_date": null,
            "credits_per_seat": 200, "budget_depleted": false
        })
    );
    assert_keys(
        &body["data"],
        &[
            "id",
            "virtual_lab_id",
            "virtual_lab_name",
            "institution_id",
            "institution_name",
            "template_project_id",
            "status",
            "start_date",
            "end_date",
            "last_drop_date",
            "credits_per_seat",
            "budget_depleted",
        ],
    );

    let missing = Uuid::new_v4();
    let body = app.as_admin().get_course(missing).await.error_with(
        StatusCode::NOT_FOUND,
        "ENTITY_NOT_FOUND",
        &format!("Course {missing} not found"),
    );
    assert_eq!(body["details"], Value::Null);
    assert_eq!(body["data"], Value::Null);

    let body = app.as_admin().get_course("not-a-uuid").await.invalid();
    assert_eq!(body["details"]["course_id"], "Must be a UUID");

    app.as_faculty().get("/courses/not-a-uuid").await.denied();

    // An id that is not UTF-8 once percent-decoded is malformed like any other: the JSON 422
    // of a plain id, the 403 of a tier gate — not axum's text/plain 400.
    let body = app.as_admin().get("/courses/%FF").await.invalid();
    assert_eq!(body["details"]["course_id"], "Must be a UUID");
    app.as_faculty()
        .get("/seats/courses/%FF")
        .await
        .not_allowed();
}

#[sqlx::test]
async fn search_matches_lab_names_literally_in_byte_order_with_deleted_labs(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let mut ids = std::collections::HashMap::new();
    for name in ["neuro_a", "NEUROXa", "Neuro 100%", "Neuro 100 B", "Other"] {
        let course = create_draft_course(&app, name, None, None, None).await;
        ids.insert(name, course);
    }
    let names = |body: &Value| data_strings(body, "virtual_lab_name");

    let body = app
        .as_admin()
        .search_courses("vlab_name=neuro")
        .await
        .ok_body();
    assert_eq!(body["message"], "Found 4 course(s)");
    assert_eq!(
        names(&body),
        ["NEUROXa", "Neuro 100 B", "Neuro 100%", "neuro_a"]
    );
    assert_eq!(body["data"][0]["id"], ids["NEUROXa"].course_id.to_string());
    assert_eq!(body["data"][0]["institution_name"], "Open Brain Institute");

    let (_, body) = app.as_admin().search_courses("vlab_name=_").await;
    assert_eq!(names(&body), ["neuro_a"]);
    let (_, body) = app.as_admin().search_courses("vlab_name=%25").await;
    assert_eq!(names(&body), ["Neuro 100%"]);
    let (_, body) = app
        .as_admin()
        .search_courses("vlab_name=%20%20100%20")
        .await;
    assert_eq!(body["message"], "Found 2 course(s)");
    let (_, body) = app.as_admin().search_courses("vlab_name=zzz").await;
    assert_eq!(body["message"], "Found 0 course(s)");
    assert_eq!(body["data"], json!([]));

    // A soft-deleted lab's course is still found.
    let other = &ids["Other"];
    let (status, _) = app.as_admin().delete_virtual_lab(other.vlab_id).await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = app.as_admin().search_courses("vlab_name=OTHER").await;
    assert_eq!(names(&body), ["Other"]);
    assert_eq!(body["data"][0]["id"], other.course_id.to_string());
}

#[sqlx::test]
async fn search_requires_a_non_empty_vlab_name(db: PgPool) {
    let app = TestApp::spawn(db).await;
    for (query, message) in [
        ("", "Field required"),
        ("vlab_name=", "Must not be empty"),
        ("vlab_name=%20%20", "Must not be empty"),
    ] {
        let body = app.as_admin().search_courses(query).await.invalid();
        assert_eq!(body["details"], json!({"vlab_name": message}), "{query}");
    }
    app.as_faculty().get("/courses").await.denied();
}

// ---- update ----------------------------------------------------------------------------------

#[sqlx::test]
async fn update_applies_present_keys_clears_nulls_and_checks_no_date_rules(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let start = now_secs() + TimeDelta::days(5);
    let end = start + TimeDelta::days(60);
    let course = create_draft_course(&app, "Patch Lab", Some(start), None, Some(end)).await;
    let (_, other) = app
        .as_admin()
        .post_institution(&json!({"name": "EPFL", "contact_email": "a@epfl.ch"}))
        .await;
    let epfl = uuid_of(&other["data"]["id"]);

    // End before start is accepted: dates are only checked at activation.
    let early_end = start - TimeDelta::days(3);
    let (status, body) = app
        .as_admin()
        .patch_course(
            course.course_id,
            &json!({"end_date": out(early_end), "start_date": null, "institution_id": epfl}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["message"], "Course updated successfully");
    assert_eq!(
        body["data"],
        json!({
            "id": course.course_id, "virtual_lab_id": course.vlab_id, "institution_id": epfl,
            "template_project_id": course.template_project_id, "status": "draft",
            "credits_per_seat": 200, "start_date": null, "end_date": out(early_end),
            "last_drop_date": null, "budget_depleted": false
        })
    );
    let row: (Option<DateTime<Utc>>, Option<DateTime<Utc>>, Uuid) = fetch_row(
        &app.db,
        "SELECT start_date, end_date, institution_id FROM course WHERE id = $1",
        course.course_id,
    )
    .await;
    assert_eq!(row, (None, Some(early_end), epfl));

    // `{}` returns the course unchanged, without touching the row.
    let before: DateTime<Utc> = fetch_scalar(
        &app.db,
        "SELECT updated_at FROM course WHERE id = $1",
        course.course_id,
    )
    .await;
    let unchanged = app
        .as_admin()
        .patch_course(course.course_id, &json!({}))
        .await
        .ok_body();
    assert_eq!(unchanged["data"], body["data"]);
    let after: DateTime<Utc> = fetch_scalar(
        &app.db,
        "SELECT updated_at FROM course WHERE id = $1",
        course.course_id,
    )
    .await;
    assert_eq!(before, after);
}

#[sqlx::test]
async fn update_refusals_follow_the_contract_order(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let course = create_draft_course(&app, "Refusals Lab", None, None, None).await;
    let unknown = Uuid::new_v4();

    let body = app
        .as_admin()
        .patch_course(
            course.course_id,
            &json!({"institution_id": null, "end_date": "x"}),
        )
        .await
        .invalid();
    assert_eq!(
        body["details"],
        json!({"end_date": "Must be a valid date-time", "institution_id": "Must not be null"})
    );

    let body = app
        .as_admin()
        .patch_course("nope", &json!({}))
        .await
        .invalid();
    assert_eq!(body["details"]["course_id"], "Must be a UUID");

    // A missing course wins over a missing institution.
    let missing = Uuid::new_v4();
    app.as_admin()
        .patch_course(missing, &json!({"institution_id": unknown}))
        .await
        .error_with(
            StatusCode::NOT_FOUND,
            "ENTITY_NOT_FOUND",
            &format!("Course {missing} not found"),
        );

    let body = app
        .as_admin()
        .patch_course(course.course_id, &json!({"institution_id": unknown}))
        .await
        .error_with(
            StatusCode::NOT_FOUND,
            "ENTITY_NOT_FOUND",
            &format!("Institution {unknown} not found"),
        );
    assert_eq!(body["data"], Value::Null);

    app.as_faculty()
        .patch_course(course.course_id, &json!({"institution_id": null}))
        .await
        .denied();
}

// ---- activate and the state machine ----------------------------------------------------------

#[sqlx::test]
async fn activation_moves_a_valid_draft_to_active_and_freezes_it(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let now = now_secs();
    // Dates in the past are allowed, and last_drop may sit exactly at start + 14 days.
    let start = now - TimeDelta::days(30);
    let last_drop = start + TimeDelta::days(14);
    let end = now - TimeDelta::days(1);
    let course =
        create_draft_course(&app, "Past Lab", Some(start), Some(last_drop), Some(end)).await;

    let (status, body) = app.as_admin().activate_course(course.course_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["message"], "Course activated successfully");
    assert_eq!(
        body["data"],
        json!({
            "id": course.course_id, "virtual_lab_id": course.vlab_id,
            "institution_id": course.institution_id,
            "template_project_id": course.template_project_id, "status": "active",
            "credits_per_seat": 200, "start_date": out(start), "end_date": out(end),
            "last_drop_date": out(last_drop), "budget_depleted": false
        })
    );
    assert_eq!(course_status(&app, course.course_id).await, "active");

    // active → activate and active → update are refused.
    app.as_admin()
        .activate_course(course.course_id)
        .await
        .error_with(
            StatusCode::CONFLICT,
            "NOT_ALLOWED_OP",
            "Only draft courses can be modified",
        );
    for patch in [
        json!({}),
        json!({"start_date": null}),
        json!({"institution_id": Uuid::new_v4()}),
    ] {
        let (status, body) = app.as_admin().patch_course(course.course_id, &patch).await;
        assert_error_body(&body, status, StatusCode::CONFLICT, "NOT_ALLOWED_OP");
        assert_eq!(
            body["message"], "Only draft courses can be modified",
            "{patch}"
        );
    }
    let (_, detail) = app.as_admin().get_course(course.course_id).await;
    assert_eq!(detail["data"]["status"], "active");
    assert_eq!(detail["data"]["start_date"], out(start));

    let missing = Uuid::new_v4();
    app.as_admin().activate_course(missing).await.error_with(
        StatusCode::NOT_FOUND,
        "ENTITY_NOT_FOUND",
        &format!("Course {missing} not found"),
    );
    let body = app.as_admin().activate_course("42").await.invalid();
    assert_eq!(body["details"]["course_id"], "Must be a UUID");
}

#[sqlx::test]
async fn activation_date_rules_are_checked_in_order_with_exact_messages(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let course = create_draft_course(&app, "Rules Lab", None, None, None).await;
    let id = course.course_id;
    let refused = |body: &Value, status: StatusCode| {
        assert_error_body(body, status, StatusCode::CONFLICT, "NOT_ALLOWED_OP");
        assert_eq!(body["details"], Value::Null);
        body["message"].as_str().unwrap().to_owned()
    };

    let (status, body) = app.as_admin().activate_course(id).await;
    assert_eq!(
        refused(&body, status),
        "Cannot activate: the following fields are not set: start_date, end_date, last_drop_date"
    );

    let start = now_secs() + TimeDelta::days(1);
    app.as_admin()
        .patch_course(
            id,
            &json!({"last_drop_date": out(start - TimeDelta::days(2))}),
        )
        .await;
    let (status, body) = app.as_admin().activate_course(id).await;
    assert_eq!(
        refused(&body, status),
        "Cannot activate: the following fields are not set: start_date, end_date"
    );

    let end = start + TimeDelta::days(60);
    let early = start - TimeDelta::days(2);
    app.as_admin()
        .patch_course(id, &json!({"start_date": out(start), "end_date": out(end)}))
        .await;
    let (status, body) = app.as_admin().activate_course(id).await;
    assert_eq!(
        refused(&body, status),
        format!(
            "Cannot activate: dates must satisfy start_date < last_drop_date < end_date, got {} / {} / {}",
            out(start),
            out(early),
            out(end)
        )
    );

    // Equal dates are not a strict order; fractional seconds print with 6 digits.
    let fractional = start + TimeDelta::milliseconds(250);
    app.as_admin()
        .patch_course(
            id,
            &json!({"last_drop_date": out(start), "end_date": fractional.to_rfc3339()}),
        )
        .await;
    let (status, body) = app.as_admin().activate_course(id).await;
    let end_text = format!("{}.250000Z", start.format("%Y-%m-%dT%H:%M:%S"));
    assert_eq!(
        refused(&body, status),
        format!(
            "Cannot activate: dates must satisfy start_date < last_drop_date < end_date, got {} / {} / {end_text}",
            out(start),
            out(start)
        )
    );

    let late = start + TimeDelta::days(14) + TimeDelta::seconds(1);
    app.as_admin()
        .patch_course(
            id,
            &json!({"last_drop_date": out(late), "end_date": out(end)}),
        )
        .await;
    let (status, body) = app.as_admin().activate_course(id).await;
    assert_eq!(
        refused(&body, status),
        format!(
            "Cannot activate: last_drop_date must be within 2 weeks of start_date, got {} but max allowed is {}",
            out(late),
            out(start + TimeDelta::days(14))
        )
    );
    assert_eq!(course_status(&app, id).await, "draft");

    app.as_admin()
        .patch_course(
            id,
            &json!({"last_drop_date": out(start + TimeDelta::days(14))}),
        )
        .await;
    app.as_admin().activate_course(id).await.ok_body();
}

/// With `DROP_WINDOW_MAX_DAYS` set to `days`, a last drop date one day past the window blocks
/// activation (the message names the window as `window`); exactly `days` after the start passes.
async fn the_drop_window_follows(db: PgPool, days: i64, window: &str, lab: &str) {
    let app = TestApp::spawn_with(db, |vars| {
        vars.insert("DROP_WINDOW_MAX_DAYS".to_owned(), days.to_string());
    })
    .await;
    let start = now_secs();
    let end = start + TimeDelta::days(30);
    let late = start + TimeDelta::days(days + 1);
    let course = create_draft_course(&app, lab, Some(start), Some(late), Some(end)).await;
    app.as_admin()
        .activate_course(course.course_id)
        .await
        .error_with(
            StatusCode::CONFLICT,
            "NOT_ALLOWED_OP",
            &format!(
                "Cannot activate: last_drop_date must be within {window} of start_date, got {} but max allowed is {}",
                out(late),
                out(start + TimeDelta::days(days))
            ),
        );
    app.as_admin()
        .patch_course(
            course.course_id,
            &json!({"last_drop_date": out(start + TimeDelta::days(days))}),
        )
        .await;
    app.as_admin()
        .activate_course(course.course_id)
        .await
        .ok_body();
}

#[sqlx::test]
async fn the_drop_window_follows_drop_window_max_days_7(db: PgPool) {
    the_drop_window_follows(db, 7, "1 week", "Week Lab").await;
}

#[sqlx::test]
async fn the_drop_window_follows_drop_window_max_days_10(db: PgPool) {
    // 14 days would pass the default window but not this one; 10 days exactly passes.
    the_drop_window_follows(db, 10, "10 days", "Ten Lab").await;
}

#[sqlx::test]
async fn the_active_course_fixture_yields_an_active_course(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let course = crate::fixtures::create_active_course(&app, "Fixture Lab").await;
    let (status, body) = app.as_admin().get_course(course.course_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["status"], "active");
    assert_eq!(body["data"]["virtual_lab_id"], course.vlab_id.to_string());
    assert_eq!(body["data"]["institution_name"], "Open Brain Institute");
}

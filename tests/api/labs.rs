//! `/virtual-labs` (api.md §4.1, rules.md §4.1 and §4.3).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;
use vlab_emulators::{Fault, FaultAction};

use crate::fixtures::{create_course_lab, make_lab_admin};
use crate::helpers::{
    ReplyExt, TestApp, TestUser, assert_error_body, assert_keys, exec, fetch_row, fetch_scalar,
    json, names, one_wins, refuse_inserts, uuid_of,
};

fn lab_body(name: &str) -> Value {
    json!({"name": name, "description": "A lab", "entity": "EPFL"})
}

/// Creates a regular lab owned by `user` and returns its id.
async fn lab_of(app: &TestApp, user: &TestUser, name: &str) -> Uuid {
    let body = app
        .as_user(user)
        .post_virtual_lab(&lab_body(name))
        .await
        .ok_body();
    uuid_of(&body["id"])
}

/// Groups whose name starts with `vlab/` (every lab group the service made).
fn lab_groups(app: &TestApp) -> Vec<String> {
    app.keycloak
        .groups()
        .into_iter()
        .filter(|g| g.name.starts_with("vlab/"))
        .map(|g| g.name)
        .collect()
}

async fn lab_rows(db: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM virtual_lab")
        .fetch_one(db)
        .await
        .unwrap()
}

/// Makes `user` a member of the lab directly in Keycloak.
fn make_lab_member(app: &TestApp, vlab_id: Uuid, user: &TestUser) {
    let group = app
        .keycloak
        .group_by_name(&format!("vlab/{vlab_id}/member"))
        .expect("member group");
    app.keycloak.add_user_to_group(user.id, &group.id);
}

/// A draft course on the lab, through the API (as the service admin).
async fn create_course(app: &TestApp, vlab_id: Uuid, template_project_id: Uuid) -> Uuid {
    let institution: Uuid =
        sqlx::query_scalar("SELECT id FROM institution WHERE name = 'Open Brain Institute'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    let (status, body) = app.as_admin().post_course(&json!({"virtual_lab_id": vlab_id, "template_project_id": template_project_id, "institution_id": institution})).await;
    assert_eq!(status, StatusCode::OK, "create course: {body}");
    uuid_of(&body["data"]["id"])
}

// ---- POST /virtual-labs ------------------------------------------------------------------

#[sqlx::test]
async fn a_regular_lab_gets_groups_an_owner_membership_an_account_and_a_row(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let student = app.users.students[0].clone();
    let body = app
        .as_user(&student)
        .post_virtual_lab(&json!({"name": "  My Lab ", "description": "", "entity": " EPFL "}))
        .await
        .ok_body();
    assert_keys(
        &body,
        &[
            "id",
            "name",
            "description",
            "reference_email",
            "email_verified",
            "entity",
            "compute_cell",
            "is_course",
            "created_at",
            "updated_at",
            "projects_count",
            "course",
        ],
    );
    assert_eq!(body["name"], "My Lab");
    assert_eq!(body["description"], "");
    assert_eq!(body["entity"], "EPFL");
    assert_eq!(body["reference_email"], student.email.as_str());
    assert_eq!(body["email_verified"], false);
    assert_eq!(body["compute_cell"], "cell_a");
    assert_eq!(body["is_course"], false);
    assert_eq!(body["projects_count"], Value::Null);
    assert_eq!(body["course"], Value::Null);
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'));
    let id = uuid_of(&body["id"]);

    let (owner, admin_group, member_group): (Uuid, String, String) = fetch_row(
        &db,
        "SELECT owner_id, admin_group_id, member_group_id FROM virtual_lab WHERE id = $1",
        id,
    )
    .await;
    assert_eq!(owner, student.id);
    let admin = app
        .keycloak
        .group_by_name(&format!("vlab/{id}/admin"))
        .unwrap();
    let member = app
        .keycloak
        .group_by_name(&format!("vlab/{id}/member"))
        .unwrap();
    assert_eq!(admin.id, admin_group);
    assert_eq!(member.id, member_group);
    assert_eq!(admin.path, format!("/vlab/{id}/admin"));
    assert_eq!(admin.members, vec![student.id]);
    assert!(member.members.is_empty());
    assert!(app.accounting.account_exists(id));
    assert_eq!(app.accounting.balance(id), Some(Decimal::ZERO));
}

#[sqlx::test]
async fn optional_fields_are_applied_and_email_verified_is_ignored(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let body = app.as_faculty().post_virtual_lab(&json!({"name": "Lab", "description": "d", "entity": "e", "compute_cell": "cell_b", "reference_email": " Contact@EXAMPLE.ORG ", "email_verified": true, "is_course": false}))
    .await.ok_body();
    assert_eq!(body["compute_cell"], "cell_b");
    assert_eq!(body["reference_email"], "Contact@example.org");
    assert_eq!(body["email_verified"], false);
    let stored: (String, bool) =
        sqlx::query_as("SELECT reference_email, email_verified FROM virtual_lab")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(stored, ("Contact@example.org".to_owned(), false));
}

#[sqlx::test]
async fn invalid_create_bodies_are_422(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let token = app.faculty_token();
    for (body, field, message) in [
        (
            json!({"description": "", "entity": "e"}),
            "name",
            "Field required",
        ),
        (
            json!({"name": null, "description": "", "entity": "e"}),
            "name",
            "Must not be null",
        ),
        (
            json!({"name": "  ", "description": "", "entity": "e"}),
            "name",
            "Must not be empty",
        ),
        (
            json!({"name": "x".repeat(251), "description": "", "entity": "e"}),
            "name",
            "Must be at most 250 characters",
        ),
        (
            json!({"name": "n", "entity": "e"}),
            "description",
            "Field required",
        ),
        (
            json!({"name": "n", "description": 3, "entity": "e"}),
            "description",
            "Must be a string",
        ),
        (
            json!({"name": "n", "description": ""}),
            "entity",
            "Field required",
        ),
        (
            json!({"name": "n", "description": "", "entity": "e", "reference_email": "nope"}),
            "reference_email",
            "Must be a valid e-mail address",
        ),
        (
            json!({"name": "n", "description": "", "entity": "e", "compute_cell": "cell_c"}),
            "compute_cell",
            "Must be one of: cell_a, cell_b",
        ),
        (
            json!({"name": "n", "description": "", "entity": "e", "is_course": "yes"}),
            "is_course",
            "Must be a boolean",
        ),
        (
            json!({"name": "n", "description": "", "entity": "e", "email_verified": 1}),
            "email_verified",
            "Must be a boolean",
        ),
    ] {
        let err = app
            .with_token(&token)
            .post_virtual_lab(&body)
            .await
            .error_with(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_REQUEST",
                "Validation error",
            );
        assert_eq!(err["details"][field], message, "{body}");
        assert_eq!(err["data"], Value::Null);
    }
    let response = app
        .client
        .post(app.url("/virtual-labs"))
        .bearer_auth(&token)
        .body("{nope")
        .send()
        .await
        .unwrap();
    let err = json(response).await.invalid();
    assert_eq!(err["details"]["body"], "Request body is not valid JSON");
    assert_eq!(lab_rows(&db).await, 0);
    assert_eq!(app.keycloak.call_count("kc_create_group"), 0);
}

#[sqlx::test]
async fn creating_a_lab_needs_a_token(db: PgPool) {
    let app = TestApp::spawn(db).await;
    app.anonymous()
        .post_virtual_lab(&lab_body("Lab"))
        .await
        .unauthenticated();
}

#[sqlx::test]
async fn only_service_admins_and_the_owner_user_create_course_labs(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let mut body = lab_body("Course Lab");
    body["is_course"] = json!(true);
    let err = app.as_faculty().post_virtual_lab(&body).await.error_with(
        StatusCode::FORBIDDEN,
        "NOT_ALLOWED_OP",
        "Only service administrators can create course virtual labs.",
    );
    assert_eq!(err["details"], Value::Null);
    assert_eq!(err["data"], Value::Null);
    assert_eq!(app.keycloak.call_count("kc_create_group"), 0);

    let admin_lab = app.as_admin().post_virtual_lab(&body).await.ok_body();
    assert_eq!(admin_lab["is_course"], true);
    body["name"] = json!("Owner Course Lab");
    let owner_lab = app
        .as_user(&app.users.owner)
        .post_virtual_lab(&body)
        .await
        .ok_body();
    assert_eq!(owner_lab["is_course"], true);
    assert_eq!(lab_rows(&db).await, 2);
}

#[sqlx::test]
async fn a_regular_owner_may_hold_only_one_regular_lab(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let faculty = app.users.faculty.clone();
    let first = lab_of(&app, &faculty, "First").await;
    let (status, err) = app.as_faculty().post_virtual_lab(&lab_body("Second")).await;
    assert_error_body(&err, status, StatusCode::FORBIDDEN, "FORBIDDEN_OPERATION");
    assert_eq!(
        err["message"],
        "The user already owns a virtual lab and cannot create another."
    );
    assert_eq!(err["details"], format!("owner_id={}", faculty.id));
    assert_eq!(err["data"], json!({"owner_id": faculty.id.to_string()}));

    // A deleted lab no longer counts.
    let response = app
        .request(
            Method::DELETE,
            &format!("/virtual-labs/{first}"),
            Some(&app.faculty_token()),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    app.as_faculty()
        .post_virtual_lab(&lab_body("Second"))
        .await
        .ok_body();
}

#[sqlx::test]
async fn the_owner_user_and_course_labs_are_exempt_from_the_one_lab_rule(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let owner = app.users.owner.clone();
    lab_of(&app, &owner, "Owner 1").await;
    lab_of(&app, &owner, "Owner 2").await;
    // The service admin owns a course lab; it does not count towards the limit.
    create_course_lab(&app, "Admin course").await;
    let admin = app.users.admin.clone();
    lab_of(&app, &admin, "Admin regular").await;
    assert_eq!(lab_rows(&db).await, 4);
}

#[sqlx::test]
async fn a_lab_name_is_unique_case_insensitively_among_non_deleted_labs(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    lab_of(&app, &app.users.students[0].clone(), "Neuro Lab").await;
    let err = app
        .as_faculty()
        .post_virtual_lab(&lab_body("  neuro LAB "))
        .await
        .error_with(
            StatusCode::CONFLICT,
            "ENTITY_ALREADY_EXISTS",
            "A virtual lab with this name already exists.",
        );
    assert_eq!(err["details"], "name=neuro LAB");
    assert_eq!(err["data"], json!({"name": "neuro LAB"}));
    assert_eq!(lab_groups(&app).len(), 2);
    assert_eq!(lab_rows(&db).await, 1);
}

// ---- provisioning failures: nothing may be left behind -------------------------------------

/// Asserts that a failed creation left no lab group, membership, row (and, unless the account
/// step was uncertain, no lab account).
async fn assert_nothing_left(app: &TestApp, user: &TestUser) {
    assert_eq!(lab_groups(app), Vec::<String>::new(), "leftover groups");
    assert!(
        app.keycloak
            .user_group_paths(user.id)
            .iter()
            .all(|p| !p.starts_with("/vlab/")),
        "leftover membership"
    );
    assert_eq!(lab_rows(&app.db).await, 0, "leftover row");
}

/// Creating "Lab" as faculty answers 502 with this message and leaves nothing behind (see
/// [`assert_nothing_left`]); returns the error body.
async fn creation_fails_cleanly(app: &TestApp, message: &str) -> Value {
    let err = app
        .as_faculty()
        .post_virtual_lab(&lab_body("Lab"))
        .await
        .error_with(StatusCode::BAD_GATEWAY, "EXTERNAL_SERVICE_ERROR", message);
    assert_nothing_left(app, &app.users.faculty).await;
    err
}

fn lab_accounts(app: &TestApp) -> usize {
    app.accounting.accounts().len()
}

#[sqlx::test]
async fn a_failed_group_creation_is_502_and_leaves_nothing(db: PgPool) {
    let app = TestApp::spawn(db).await;
    // The first and then the second of the two concurrent creations fails.
    for skip in [0, 1] {
        app.keycloak
            .inject(Fault::new("kc_create_group", FaultAction::Status(500)).skip(skip));
        let err = creation_fails_cleanly(
            &app,
            "Failed to create the admin/member groups in the auth provider.",
        )
        .await;
        assert_eq!(err["details"], Value::Null);
        assert_eq!(lab_accounts(&app), 0);
        app.keycloak.clear_faults();
    }
    assert_eq!(app.keycloak.call_count("kc_add_member"), 0);
}

#[sqlx::test]
async fn a_group_created_but_unanswered_is_found_by_name_and_deleted(db: PgPool) {
    let app = TestApp::spawn(db).await;
    // Performed, then the connection closes without an answer: an uncertain outcome.
    app.keycloak.inject(Fault::new(
        "kc_create_group",
        FaultAction::TimeoutAfter(Duration::from_millis(50)),
    ));
    creation_fails_cleanly(
        &app,
        "Failed to create the admin/member groups in the auth provider.",
    )
    .await;
    assert!(app.keycloak.call_count("kc_find_group") >= 1);
    assert_eq!(lab_accounts(&app), 0);
}

#[sqlx::test]
async fn a_group_creation_retried_after_a_timeout_resolves_the_existing_group(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    // Each creation is performed, then stalls past HTTP_TIMEOUT_SECONDS; the retry gets 409
    // and resolves the group by name (integrations.md §2.6).
    app.keycloak.inject(
        Fault::new(
            "kc_create_group",
            FaultAction::TimeoutAfter(Duration::from_secs(3)),
        )
        .times(2),
    );
    let body = app
        .as_faculty()
        .post_virtual_lab(&lab_body("Lab"))
        .await
        .ok_body();
    let id = uuid_of(&body["id"]);
    assert_eq!(lab_groups(&app).len(), 2);
    let (admin_group,): (String,) = fetch_row(
        &db,
        "SELECT admin_group_id FROM virtual_lab WHERE id = $1",
        id,
    )
    .await;
    let admin = app
        .keycloak
        .group_by_name(&format!("vlab/{id}/admin"))
        .unwrap();
    assert_eq!(admin.id, admin_group);
    assert_eq!(admin.members, vec![app.users.faculty.id]);
}

#[sqlx::test]
async fn a_failed_owner_membership_is_502_and_leaves_nothing(db: PgPool) {
    let app = TestApp::spawn(db).await;
    app.keycloak
        .inject(Fault::new("kc_add_member", FaultAction::Status(500)));
    let err = creation_fails_cleanly(&app, "Failed to attach the owner to the admin group.").await;
    assert_eq!(err["details"], Value::Null);
    assert_eq!(app.keycloak.call_count("kc_create_group"), 2);
    assert_eq!(lab_accounts(&app), 0);
}

#[sqlx::test]
async fn a_failed_lab_account_is_502_and_leaves_nothing(db: PgPool) {
    let app = TestApp::spawn(db).await;
    app.accounting.inject(Fault::new(
        "acc_create_vlab_account",
        FaultAction::Status(500),
    ));
    creation_fails_cleanly(
        &app,
        "Failed to create the accounting account for the virtual lab.",
    )
    .await;
    assert_eq!(lab_accounts(&app), 0);
}

#[sqlx::test]
async fn an_unanswered_lab_account_is_502_and_leaves_only_the_logged_orphan(db: PgPool) {
    let app = TestApp::spawn(db).await;
    app.accounting.inject(Fault::new(
        "acc_create_vlab_account",
        FaultAction::TimeoutAfter(Duration::from_millis(50)),
    ));
    creation_fails_cleanly(
        &app,
        "Failed to create the accounting account for the virtual lab.",
    )
    .await;
    // The accounting service cannot delete accounts: the orphan stays (and is logged).
    assert_eq!(lab_accounts(&app), 1);
    assert_eq!(app.accounting.call_count("acc_create_vlab_account"), 1);
}

#[sqlx::test]
async fn a_failed_insert_is_400_and_compensates_every_external_step(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let faculty = app.users.faculty.clone();
    // A database failure at insert that is not a name clash.
    refuse_inserts(&db, "virtual_lab").await;
    let err = app
        .as_faculty()
        .post_virtual_lab(&lab_body("Lab"))
        .await
        .error_with(
            StatusCode::BAD_REQUEST,
            "DATABASE_ERROR",
            "The virtual lab could not be saved to the database.",
        );
    assert_eq!(err["details"], Value::Null);
    assert_nothing_left(&app, &faculty).await;
}

#[sqlx::test]
async fn two_concurrent_creations_of_one_name_give_one_lab_and_one_409(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    // Slow group creation, so both requests pass the name pre-check before either inserts.
    app.keycloak
        .set_operation_latency("kc_create_group", Duration::from_millis(300));
    let (a, b) = (app.users.students[0].clone(), app.users.students[1].clone());
    let (ta, tb) = (app.as_user(&a), app.as_user(&b));
    let (body_a, body_b) = (lab_body("Same Name"), lab_body("same name"));
    let (first, second) = tokio::join!(ta.post_virtual_lab(&body_a), tb.post_virtual_lab(&body_b),);
    let ((_, winner), (_, loser)) = one_wins(&first, &second, StatusCode::CONFLICT);
    assert_error_body(
        loser,
        StatusCode::CONFLICT,
        StatusCode::CONFLICT,
        "ENTITY_ALREADY_EXISTS",
    );
    assert_eq!(
        loser["message"],
        "A virtual lab with this name was created concurrently."
    );
    assert_eq!(lab_rows(&db).await, 1);
    let id = uuid_of(&winner["id"]);
    let mut groups = lab_groups(&app);
    groups.sort();
    let mut expected = vec![format!("vlab/{id}/admin"), format!("vlab/{id}/member")];
    expected.sort();
    assert_eq!(groups, expected, "the loser's groups are deleted");
}

// ---- GET /virtual-labs ---------------------------------------------------------------------

#[sqlx::test]
async fn the_listing_shows_owned_labs_and_labs_of_the_callers_groups(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let faculty = app.users.faculty.clone();
    let own = lab_of(&app, &faculty, "Own").await;
    let admin_of = create_course_lab(&app, "Admin of").await;
    make_lab_admin(&app, admin_of.vlab_id, &faculty);
    let member_of = lab_of(&app, &app.users.students[0].clone(), "Member of").await;
    make_lab_member(&app, member_of, &faculty);
    lab_of(&app, &app.users.students[1].clone(), "Unrelated").await;
    let deleted = lab_of(&app, &app.users.students[2].clone(), "Deleted").await;
    make_lab_member(&app, deleted, &faculty);
    exec(
        &db,
        "UPDATE virtual_lab SET deleted = true WHERE id = $1",
        deleted,
    )
    .await;
    let token = app.faculty_token();

    let page = app
        .with_token(&token)
        .get_virtual_labs("?order_by=name&order_direction=asc")
        .await
        .ok_body();
    assert_eq!(names(&page), ["Admin of", "Member of", "Own"]);
    assert_eq!(
        page["pagination"],
        json!({"page": 1, "page_size": 3, "total_items": 3})
    );
    let admin_lab = &page["data"][0];
    assert_eq!(admin_lab["projects_count"], 1);
    assert_eq!(admin_lab["course"], Value::Null);
    assert_eq!(admin_lab["is_course"], true);
    assert_eq!(page["data"][2]["id"], own.to_string());

    let (_, page) = app.with_token(&token).get_virtual_labs("?scope=self").await;
    assert_eq!(names(&page), ["Own"]);
    let (_, page) = app
        .with_token(&token)
        .get_virtual_labs("?scope=external&order_by=name")
        .await;
    assert_eq!(names(&page), ["Member of", "Admin of"]);
    let (_, page) = app
        .with_token(&token)
        .get_virtual_labs("?admin_access_only=TRUE&order_by=name")
        .await;
    assert_eq!(names(&page), ["Own", "Admin of"]);
    let (_, page) = app
        .with_token(&token)
        .get_virtual_labs("?admin_access_only=1&scope=external")
        .await;
    assert_eq!(names(&page), ["Admin of"]);
    let (_, page) = app
        .with_token(&token)
        .get_virtual_labs("?query=%20MEMBER%20")
        .await;
    assert_eq!(names(&page), ["Member of"]);
}

#[sqlx::test]
async fn the_listing_pages_orders_and_breaks_ties_by_id(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let owner = app.users.owner.clone();
    let mut ids = Vec::new();
    for name in ["b 50%", "a", "c", "d"] {
        ids.push(lab_of(&app, &owner, name).await);
    }
    // The same timestamps for every lab: only the id breaks the tie, ascending either way.
    sqlx::query("UPDATE virtual_lab SET created_at = now() - interval '1 day', updated_at = now() - interval '1 day'")
        .execute(&db)
        .await
        .unwrap();
    ids.sort();
    let token = app.token(&owner);
    for direction in ["asc", "desc"] {
        let (_, page) = app
            .with_token(&token)
            .get_virtual_labs(&format!("?order_by=created_at&order_direction={direction}"))
            .await;
        let got: Vec<Uuid> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| uuid_of(&l["id"]))
            .collect();
        assert_eq!(got, ids, "{direction}");
    }
    let (_, page) = app
        .with_token(&token)
        .get_virtual_labs("?order_by=name&order_direction=desc&page=2&page_size=3")
        .await;
    assert_eq!(names(&page), ["a"]);
    assert_eq!(
        page["pagination"],
        json!({"page": 2, "page_size": 1, "total_items": 4})
    );
    let (_, page) = app
        .with_token(&token)
        .get_virtual_labs("?page=3&page_size=3")
        .await;
    assert_eq!(names(&page), Vec::<String>::new());
    assert_eq!(page["pagination"]["total_items"], 4);
    // The search is literal: `%` matches only itself.
    let (_, page) = app.with_token(&token).get_virtual_labs("?query=0%25").await;
    assert_eq!(names(&page), ["b 50%"]);
    let (_, page) = app.with_token(&token).get_virtual_labs("?query=_").await;
    assert_eq!(names(&page), Vec::<String>::new());
    // Default order: updated_at descending.
    sqlx::query("UPDATE virtual_lab SET updated_at = now() WHERE name = 'c'")
        .execute(&db)
        .await
        .unwrap();
    let (_, page) = app.with_token(&token).get_virtual_labs("").await;
    assert_eq!(names(&page)[0], "c");
}

#[sqlx::test]
async fn invalid_listing_queries_are_422(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let token = app.faculty_token();
    for (query, field, message) in [
        ("?page=0", "page", "Must be at least 1"),
        ("?page=x", "page", "Must be an integer"),
        ("?page_size=0", "page_size", "Must be between 1 and 100"),
        ("?page_size=101", "page_size", "Must be between 1 and 100"),
        (
            "?scope=mine",
            "scope",
            "Must be one of: all, self, external",
        ),
        (
            "?admin_access_only=maybe",
            "admin_access_only",
            "Must be a boolean",
        ),
        (
            "?order_by=id",
            "order_by",
            "Must be one of: created_at, updated_at, name, owner",
        ),
        (
            "?order_direction=up",
            "order_direction",
            "Must be one of: asc, desc",
        ),
        ("?query=%20", "query", "Must not be empty"),
    ] {
        let err = app
            .with_token(&token)
            .get_virtual_labs(query)
            .await
            .invalid();
        assert_eq!(err["details"][field], message, "{query}");
    }
    let (status, _) = app.anonymous().get("/virtual-labs").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

// ---- GET /virtual-labs/{id} ----------------------------------------------------------------

#[sqlx::test]
async fn a_lab_member_reads_the_lab_with_its_admins_and_owner(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let lab = create_course_lab(&app, "Course").await;
    let faculty = app.users.faculty.clone();
    let student = app.users.students[0].clone();
    make_lab_admin(&app, lab.vlab_id, &faculty);
    make_lab_member(&app, lab.vlab_id, &student);
    let token = app.token(&student);
    let path = format!("/virtual-labs/{}", lab.vlab_id);

    let body = app.with_token(&token).get(&path).await.ok_body();
    assert_eq!(body["projects_count"], 1);
    assert_eq!(body["created_by"], app.users.admin.id.to_string());
    assert!(body.get("admins").is_none());
    assert!(body.get("owner").is_none());

    let mut admins = vec![app.users.admin.id.to_string(), faculty.id.to_string()];
    admins.sort();
    for query in ["?expand=admins,owner", "?expand=admins&expand=owner"] {
        let body = app
            .with_token(&token)
            .get(&format!("{path}{query}"))
            .await
            .ok_body();
        assert_eq!(body["admins"], json!(admins));
        let owner = &body["owner"];
        assert_eq!(owner["id"], app.users.admin.id.to_string());
        assert_eq!(owner["username"], "obi-admin");
        assert_eq!(owner["email"], "obi-admin@example.org");
        assert_eq!(owner["first_name"], "obi-admin");
        assert_eq!(owner["last_name"], "Test");
        assert_eq!(owner["name"], "obi-admin Test");
        assert!(owner["created_at"].as_str().unwrap().ends_with('Z'));
        assert_keys(
            owner,
            &[
                "id",
                "username",
                "email",
                "created_at",
                "first_name",
                "last_name",
                "name",
            ],
        );
    }
    let (_, body) = app
        .with_token(&token)
        .get(&format!("{path}?expand=owner"))
        .await;
    assert!(body.get("admins").is_none());
    assert!(body.get("owner").is_some());
}

#[sqlx::test]
async fn the_course_summary_is_shown_on_the_lab(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let lab = create_course_lab(&app, "Course").await;
    let course_id = create_course(&app, lab.vlab_id, lab.template_project_id).await;
    let (status, body) = app.as_admin().get_virtual_lab(lab.vlab_id, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let course = &body["course"];
    assert_eq!(course["id"], course_id.to_string());
    assert_eq!(course["virtual_lab_id"], lab.vlab_id.to_string());
    assert_eq!(
        course["template_project_id"],
        lab.template_project_id.to_string()
    );
    assert_eq!(course["status"], "draft");
    assert_eq!(course["credits_per_seat"], 200);
    assert_eq!(course["start_date"], Value::Null);
    let (_, page) = app.as_admin().get_virtual_labs("").await;
    assert_eq!(page["data"][0]["course"]["id"], course_id.to_string());
}

#[sqlx::test]
async fn reading_a_lab_checks_the_tier_the_expand_values_and_existence(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let lab = lab_of(&app, &app.users.faculty.clone(), "Lab").await;
    let path = format!("/virtual-labs/{lab}");

    let err = app
        .as_user(&app.users.students[0])
        .get(&path)
        .await
        .error_with(
            StatusCode::FORBIDDEN,
            "NOT_ALLOWED_OP",
            "Not authorized to perform this action",
        );
    assert_eq!(err["details"], format!("vlab:any on {lab}"));
    app.as_faculty()
        .get("/virtual-labs/not-a-uuid")
        .await
        .not_allowed();

    let token = app.faculty_token();
    let err = app
        .with_token(&token)
        .get(&format!("{path}?expand=admins,projects"))
        .await
        .invalid();
    assert_eq!(err["details"]["expand"], "Must be one of: admins, owner");

    app.keycloak
        .inject(Fault::new("kc_list_members", FaultAction::Status(500)));
    app.with_token(&token)
        .get(&format!("{path}?expand=admins"))
        .await
        .error_with(
            StatusCode::BAD_GATEWAY,
            "EXTERNAL_SERVICE_ERROR",
            "Could not load user details from the identity provider.",
        );
    app.keycloak
        .inject(Fault::new("kc_get_user", FaultAction::Status(500)));
    app.with_token(&token)
        .get(&format!("{path}?expand=owner"))
        .await
        .error_body(StatusCode::BAD_GATEWAY, "EXTERNAL_SERVICE_ERROR");

    sqlx::query("UPDATE virtual_lab SET deleted = true")
        .execute(&db)
        .await
        .unwrap();
    app.with_token(&token).get(&path).await.lab_not_found();
}

#[sqlx::test]
async fn an_owner_unknown_to_keycloak_has_null_details(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let lab = lab_of(&app, &app.users.faculty.clone(), "Lab").await;
    let ghost = Uuid::new_v4();
    exec(&db, "UPDATE virtual_lab SET owner_id = $1", ghost).await;
    let body = app
        .as_faculty()
        .get(&format!("/virtual-labs/{lab}?expand=owner"))
        .await
        .ok_body();
    assert_eq!(
        body["owner"],
        json!({"id": ghost.to_string(), "username": null, "email": null, "created_at": null,
               "first_name": null, "last_name": null, "name": null})
    );
}

// ---- PATCH /virtual-labs/{id} --------------------------------------------------------------

/// Keycloak calls other than the caller's authentication.
fn admin_calls(app: &TestApp) -> usize {
    app.keycloak
        .calls()
        .iter()
        .filter(|c| {
            !matches!(
                c.operation.as_str(),
                "kc_userinfo" | "kc_jwks" | "kc_token" | "kc_discovery"
            )
        })
        .count()
}

#[sqlx::test]
async fn a_lab_admin_updates_only_the_keys_sent(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let faculty = app.users.faculty.clone();
    let id = lab_of(&app, &faculty, "Lab").await;
    let token = app.faculty_token();
    let kc_calls = admin_calls(&app);
    let acc_calls = app.accounting.calls().len();

    let body = app
        .with_token(&token)
        .patch_virtual_lab(
            id,
            &json!({"name": " Renamed ", "reference_email": "X@EXAMPLE.org"}),
        )
        .await
        .ok_body();
    assert_eq!(body["message"], "Updated virtual lab");
    let lab = &body["data"]["virtual_lab"];
    assert_eq!(lab["name"], "Renamed");
    assert_eq!(lab["reference_email"], "X@example.org");
    assert_eq!(lab["description"], "A lab");
    assert_eq!(lab["entity"], "EPFL");
    assert_eq!(lab["projects_count"], Value::Null);

    let body = app
        .with_token(&token)
        .patch_virtual_lab(
            id,
            &json!({"reference_email": null, "description": "new", "entity": " OBI "}),
        )
        .await
        .ok_body();
    let lab = &body["data"]["virtual_lab"];
    assert_eq!(lab["reference_email"], Value::Null);
    assert_eq!(lab["description"], "new");
    assert_eq!(lab["entity"], "OBI");
    assert_eq!(lab["name"], "Renamed");

    let body = app
        .with_token(&token)
        .patch_virtual_lab(id, &json!({}))
        .await
        .ok_body();
    assert_eq!(body["data"]["virtual_lab"]["name"], "Renamed");

    // Renaming to the same name in another case is not a clash with itself.
    app.with_token(&token)
        .patch_virtual_lab(id, &json!({"name": "RENAMED"}))
        .await
        .ok_body();

    let row: (String, Option<String>, String, String) = fetch_row(
        &db,
        "SELECT name, reference_email, description, entity FROM virtual_lab WHERE id = $1",
        id,
    )
    .await;
    assert_eq!(row, ("RENAMED".into(), None, "new".into(), "OBI".into()));
    assert_eq!(admin_calls(&app), kc_calls, "no Keycloak admin calls");
    assert_eq!(app.accounting.calls().len(), acc_calls);
}

#[sqlx::test]
async fn patch_errors(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let faculty = app.users.faculty.clone();
    let id = lab_of(&app, &faculty, "Lab").await;
    lab_of(&app, &app.users.students[0].clone(), "Taken").await;
    let token = app.faculty_token();

    let err = app
        .with_token(&token)
        .patch_virtual_lab(id, &json!({"name": "TAKEN"}))
        .await
        .error_with(
            StatusCode::CONFLICT,
            "ENTITY_ALREADY_EXISTS",
            "Another virtual lab with same name already exists",
        );
    assert_eq!(err["details"], Value::Null);

    for (body, field, message) in [
        (json!({"name": null}), "name", "Must not be null"),
        (json!({"name": ""}), "name", "Must not be empty"),
        (
            json!({"description": null}),
            "description",
            "Must not be null",
        ),
        (json!({"entity": null}), "entity", "Must not be null"),
        (
            json!({"reference_email": "x"}),
            "reference_email",
            "Must be a valid e-mail address",
        ),
    ] {
        let err = app
            .with_token(&token)
            .patch_virtual_lab(id, &body)
            .await
            .invalid();
        assert_eq!(err["details"][field], message, "{body}");
    }

    // A member is not an admin: 403 before any validation.
    let student = app.users.students[1].clone();
    make_lab_member(&app, id, &student);
    let err = app
        .as_user(&student)
        .patch_virtual_lab(id, &json!({"name": null}))
        .await
        .not_allowed();
    assert_eq!(err["details"], format!("vlab:admin on {id}"));

    exec(
        &db,
        "UPDATE virtual_lab SET deleted = true WHERE id = $1",
        id,
    )
    .await;
    app.with_token(&token)
        .patch_virtual_lab(id, &json!({"name": "x"}))
        .await
        .lab_not_found();
}

// ---- DELETE /virtual-labs/{id} -------------------------------------------------------------

#[sqlx::test]
async fn deleting_a_lab_soft_deletes_it_and_its_projects_only(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let lab = create_course_lab(&app, "Course").await;
    let course_id = create_course(&app, lab.vlab_id, lab.template_project_id).await;
    let token = app.admin_token();

    let (status, body) = app.with_token(&token).delete_virtual_lab(lab.vlab_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["message"], "Deleted virtual lab");
    assert_eq!(body["data"]["virtual_lab"]["id"], lab.vlab_id.to_string());
    assert_eq!(body["data"]["virtual_lab"]["projects_count"], Value::Null);
    assert_eq!(
        body["data"]["virtual_lab"]["course"]["id"],
        course_id.to_string()
    );

    let (deleted, at, by): (bool, Option<chrono::DateTime<chrono::Utc>>, Option<Uuid>) = fetch_row(
        &db,
        "SELECT deleted, deleted_at, deleted_by FROM virtual_lab WHERE id = $1",
        lab.vlab_id,
    )
    .await;
    assert!(deleted && at.is_some());
    assert_eq!(by, Some(app.users.admin.id));
    let project: (bool, Option<Uuid>) = fetch_row(
        &db,
        "SELECT deleted, deleted_by FROM project WHERE id = $1",
        lab.template_project_id,
    )
    .await;
    assert_eq!(project, (true, Some(app.users.admin.id)));
    // Keycloak groups, the account and the draft course stay.
    assert!(
        app.keycloak
            .group_by_name(&format!("vlab/{}/admin", lab.vlab_id))
            .is_some()
    );
    assert!(app.accounting.account_exists(lab.vlab_id));
    let status: String =
        fetch_scalar(&db, "SELECT status FROM course WHERE id = $1", course_id).await;
    assert_eq!(status, "draft");

    app.with_token(&token)
        .delete_virtual_lab(lab.vlab_id)
        .await
        .lab_not_found();
}

#[sqlx::test]
async fn a_lab_with_an_active_course_cannot_be_deleted(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let lab = create_course_lab(&app, "Course").await;
    let course_id = create_course(&app, lab.vlab_id, lab.template_project_id).await;
    exec(
        &db,
        "UPDATE course SET status = 'active' WHERE id = $1",
        course_id,
    )
    .await;
    let (status, err) = app.as_admin().delete_virtual_lab(lab.vlab_id).await;
    assert_error_body(&err, status, StatusCode::CONFLICT, "FORBIDDEN_OPERATION");
    assert_eq!(
        err["message"],
        "A virtual lab with an active course cannot be deleted. Void the course first."
    );
    let deleted: bool = fetch_scalar(
        &db,
        "SELECT deleted FROM virtual_lab WHERE id = $1",
        lab.vlab_id,
    )
    .await;
    assert!(!deleted);
    // A voided course no longer blocks it.
    exec(
        &db,
        "UPDATE course SET status = 'voided' WHERE id = $1",
        course_id,
    )
    .await;
    app.as_admin()
        .delete_virtual_lab(lab.vlab_id)
        .await
        .ok_body();
}

#[sqlx::test]
async fn only_lab_admins_delete(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let id = lab_of(&app, &app.users.faculty.clone(), "Lab").await;
    let student = app.users.students[0].clone();
    make_lab_member(&app, id, &student);
    let err = app
        .as_user(&student)
        .delete_virtual_lab(id)
        .await
        .not_allowed();
    assert_eq!(err["details"], format!("vlab:admin on {id}"));
    let (status, _) = app.as_faculty().delete("/virtual-labs/xyz").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[sqlx::test]
async fn the_openapi_document_lists_the_lab_project_and_invite_routes(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (status, doc) = app.anonymous().get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    for (path, methods) in [
        ("/virtual-labs", &["get", "post"][..]),
        (
            "/virtual-labs/{virtual_lab_id}",
            &["get", "patch", "delete"][..],
        ),
        (
            "/virtual-labs/{virtual_lab_id}/projects",
            &["get", "post"][..],
        ),
        (
            "/virtual-labs/{virtual_lab_id}/projects/{project_id}",
            &["get"][..],
        ),
        ("/virtual-labs/{virtual_lab_id}/invites", &["post"][..]),
        (
            "/virtual-labs/{virtual_lab_id}/invites/cancel",
            &["post"][..],
        ),
        ("/invites", &["get", "post"][..]),
    ] {
        for method in methods {
            let op = &doc["paths"][path][method];
            assert!(op.is_object(), "{method} {path} missing");
            assert!(op["security"].is_array(), "{method} {path} has no security");
        }
    }
}

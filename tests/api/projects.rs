//! `/virtual-labs/{id}/projects` (api.md §4.2, rules.md §4.2).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;
use vlab_emulators::{Fault, FaultAction};

use crate::fixtures::{create_course_lab, make_lab_admin};
use crate::helpers::{
    ReplyExt, TestApp, TestUser, assert_error_body, assert_keys, exec, fetch_row, fetch_scalar,
    names, refuse_inserts, uuid_of,
};

/// A regular lab owned by `user`.
async fn regular_lab(app: &TestApp, user: &TestUser, name: &str) -> Uuid {
    let body = app
        .as_user(user)
        .post_virtual_lab(&json!({"name": name, "description": "", "entity": "EPFL"}))
        .await
        .ok_body();
    uuid_of(&body["id"])
}

fn project_groups(app: &TestApp, vlab_id: Uuid) -> Vec<String> {
    let prefix = format!("proj/{vlab_id}/");
    app.keycloak
        .groups()
        .into_iter()
        .filter(|g| g.name.starts_with(&prefix))
        .map(|g| g.name)
        .collect()
}

async fn project_rows(db: &PgPool, vlab_id: Uuid) -> i64 {
    fetch_scalar(
        db,
        "SELECT count(*) FROM project WHERE virtual_lab_id = $1",
        vlab_id,
    )
    .await
}

fn make_member(app: &TestApp, group_name: &str, user: &TestUser) {
    let group = app.keycloak.group_by_name(group_name).expect("group");
    app.keycloak.add_user_to_group(user.id, &group.id);
}

// ---- POST ------------------------------------------------------------------------------------

#[derive(Debug, sqlx::FromRow)]
struct ProjectRow {
    name: String,
    description: Option<String>,
    owner_id: Uuid,
    admin_group_id: String,
    member_group_id: String,
}

#[sqlx::test]
async fn a_project_gets_groups_every_lab_admin_an_account_and_a_row(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let faculty = app.users.faculty.clone();
    let vlab = regular_lab(&app, &faculty, "Lab").await;
    let co_admin = app.users.students[0].clone();
    make_lab_admin(&app, vlab, &co_admin);

    let body = app
        .as_user(&faculty)
        .post_project(vlab, "", &json!({"name": " Project A "}))
        .await
        .ok_body();
    // `description` is null, so it is omitted; `virtual_lab` is not expanded.
    assert_keys(
        &body,
        &[
            "id",
            "name",
            "created_at",
            "updated_at",
            "virtual_lab_id",
            "user_count",
            "admins",
        ],
    );
    assert_eq!(body["name"], "Project A");
    assert_eq!(body["virtual_lab_id"], vlab.to_string());
    let mut admins = vec![faculty.id.to_string(), co_admin.id.to_string()];
    admins.sort();
    assert_eq!(body["admins"], json!(admins));
    assert_eq!(body["user_count"], 2);
    let id = uuid_of(&body["id"]);

    let row: ProjectRow = fetch_row(&db, "SELECT name, description, owner_id, admin_group_id, member_group_id FROM project WHERE id = $1", id).await;
    assert_eq!(row.name, "Project A");
    assert_eq!(row.description, None);
    assert_eq!(row.owner_id, faculty.id);
    let admin = app
        .keycloak
        .group_by_name(&format!("proj/{vlab}/{id}/admin"))
        .unwrap();
    let member = app
        .keycloak
        .group_by_name(&format!("proj/{vlab}/{id}/member"))
        .unwrap();
    assert_eq!(
        (admin.id.clone(), member.id.clone()),
        (row.admin_group_id, row.member_group_id)
    );
    let mut members = admin.members.clone();
    members.sort();
    let mut expected = vec![faculty.id, co_admin.id];
    expected.sort();
    assert_eq!(members, expected);
    assert!(member.members.is_empty());
    assert!(app.accounting.account_exists(id));
    let account = app
        .accounting
        .accounts()
        .into_iter()
        .find(|a| a.id == id)
        .unwrap();
    assert_eq!(account.kind, "project");
    assert_eq!(account.name, "Project A");
    assert_eq!(account.vlab_id, Some(vlab));
}

#[sqlx::test]
async fn the_description_and_the_expanded_lab_are_returned(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let lab = create_course_lab(&app, "Course").await;
    let body = app
        .as_admin()
        .post_project(
            lab.vlab_id,
            "?expand=virtual_lab,balance&seed_budget=false",
            &json!({"name": "P", "description": "about"}),
        )
        .await
        .ok_body();
    assert_eq!(body["description"], "about");
    assert_eq!(body["virtual_lab"]["id"], lab.vlab_id.to_string());
    assert_eq!(body["virtual_lab"]["name"], "Course");
    assert_eq!(body["virtual_lab"]["projects_count"], 2);
    assert_eq!(body["admins"], json!([app.users.admin.id.to_string()]));
    assert_eq!(body["user_count"], 1);
}

#[sqlx::test]
async fn invalid_project_requests_are_422_after_the_admin_check(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let vlab = regular_lab(&app, &app.users.faculty.clone(), "Lab").await;
    let token = app.faculty_token();
    for (query, body, field, message) in [
        ("", json!({}), "name", "Field required"),
        ("", json!({"name": " "}), "name", "Must not be empty"),
        (
            "",
            json!({"name": "x".repeat(251)}),
            "name",
            "Must be at most 250 characters",
        ),
        (
            "",
            json!({"name": "p", "description": 1}),
            "description",
            "Must be a string",
        ),
        (
            "?expand=admins",
            json!({"name": "p"}),
            "expand",
            "Must be one of: virtual_lab, balance",
        ),
        (
            "?seed_budget=maybe",
            json!({"name": "p"}),
            "seed_budget",
            "Must be a boolean",
        ),
    ] {
        let err = app
            .with_token(&token)
            .post_project(vlab, query, &body)
            .await
            .invalid();
        assert_eq!(err["details"][field], message, "{query} {body}");
    }
    // Query and body problems are reported together.
    let err = app
        .with_token(&token)
        .post_project(vlab, "?expand=x", &json!({}))
        .await
        .invalid();
    assert_eq!(
        err["details"]["expand"],
        "Must be one of: virtual_lab, balance"
    );
    assert_eq!(err["details"]["name"], "Field required");

    // A member gets 403 whatever the body.
    let student = app.users.students[0].clone();
    make_member(&app, &format!("vlab/{vlab}/member"), &student);
    let err = app
        .as_user(&student)
        .post_project(vlab, "", &json!({}))
        .await
        .not_allowed();
    assert_eq!(err["details"], format!("vlab:admin on {vlab}"));
    let err = app
        .with_token(&token)
        .post("/virtual-labs/nope/projects", &json!({"name": "p"}))
        .await
        .not_allowed();
    assert_eq!(err["details"], "vlab:admin on nope");
    assert_eq!(project_rows(&db, vlab).await, 0);
}

#[sqlx::test]
async fn a_deleted_lab_is_400_virtual_lab_not_found(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let vlab = regular_lab(&app, &app.users.faculty.clone(), "Lab").await;
    sqlx::query("UPDATE virtual_lab SET deleted = true")
        .execute(&db)
        .await
        .unwrap();
    app.as_faculty()
        .post_project(vlab, "", &json!({"name": "p"}))
        .await
        .error_with(
            StatusCode::BAD_REQUEST,
            "ENTITY_NOT_FOUND",
            "Virtual lab not found",
        );
    assert_eq!(app.keycloak.call_count("kc_create_group"), 2);
}

#[sqlx::test]
async fn regular_labs_refuse_a_name_used_before_even_by_a_deleted_project(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let vlab = regular_lab(&app, &app.users.faculty.clone(), "Lab").await;
    let token = app.faculty_token();
    let (status, _) = app
        .with_token(&token)
        .post_project(vlab, "", &json!({"name": "Alpha"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    sqlx::query("UPDATE project SET deleted = true")
        .execute(&db)
        .await
        .unwrap();
    app.with_token(&token)
        .post_project(vlab, "", &json!({"name": "ALPHA"}))
        .await
        .error_with(
            StatusCode::BAD_REQUEST,
            "ENTITY_ALREADY_EXISTS",
            "Another project with the same name already exists",
        );
    assert_eq!(project_groups(&app, vlab).len(), 2);
}

#[sqlx::test]
async fn course_labs_skip_the_name_pre_check_but_the_unique_index_still_holds(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let lab = create_course_lab(&app, "Course").await;
    let token = app.admin_token();
    app.with_token(&token)
        .post_project(lab.vlab_id, "", &json!({"name": "template"}))
        .await
        .ok_body();
    // Exactly "Template" again: the index answers, after compensation.
    app.with_token(&token)
        .post_project(lab.vlab_id, "", &json!({"name": "Template"}))
        .await
        .error_with(
            StatusCode::BAD_REQUEST,
            "ENTITY_ALREADY_EXISTS",
            "Project already exists",
        );
    assert_eq!(project_rows(&db, lab.vlab_id).await, 2);
    assert_eq!(
        project_groups(&app, lab.vlab_id).len(),
        4,
        "the loser's groups are deleted"
    );
    let paths = app.keycloak.user_group_paths(app.users.admin.id);
    assert_eq!(paths.iter().filter(|p| p.starts_with("/proj/")).count(), 2);
}

#[sqlx::test]
async fn a_regular_lab_owner_is_limited_to_20_projects(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let faculty = app.users.faculty.clone();
    let vlab = regular_lab(&app, &faculty, "Lab").await;
    let token = app.faculty_token();
    for i in 0..20 {
        app.with_token(&token)
            .post_project(vlab, "", &json!({"name": format!("p{i}")}))
            .await
            .ok_body();
    }
    app.with_token(&token)
        .post_project(vlab, "", &json!({"name": "p20"}))
        .await
        .error_with(
            StatusCode::BAD_REQUEST,
            "LIMIT_EXCEEDED",
            "You have reached the maximum limit of 20 projects",
        );
    // Course labs do not apply the limit.
    let course = create_course_lab(&app, "Course").await;
    make_lab_admin(&app, course.vlab_id, &faculty);
    app.as_faculty()
        .post_project(course.vlab_id, "", &json!({"name": "p20"}))
        .await
        .ok_body();
}

// ---- provisioning failures ------------------------------------------------------------------

/// Fails one step of a project creation and checks the error and that nothing was left.
async fn assert_failure_leaves_nothing(
    app: &TestApp,
    vlab: Uuid,
    status: StatusCode,
    code: &str,
    message: &str,
) {
    let (got, err) = app
        .as_faculty()
        .post_project(vlab, "", &json!({"name": "Doomed"}))
        .await;
    assert_error_body(&err, got, status, code);
    assert_eq!(err["message"], message);
    assert_eq!(err["details"], Value::Null);
    assert_eq!(
        project_groups(app, vlab),
        Vec::<String>::new(),
        "leftover groups"
    );
    for user in [&app.users.faculty, &app.users.students[0]] {
        assert!(
            app.keycloak
                .user_group_paths(user.id)
                .iter()
                .all(|p| !p.starts_with("/proj/")),
            "leftover membership"
        );
    }
    assert_eq!(project_rows(&app.db, vlab).await, 0, "leftover row");
    app.keycloak.clear_faults();
    app.accounting.clear_faults();
}

/// A regular lab of the faculty with a second lab admin.
async fn lab_with_two_admins(app: &TestApp) -> Uuid {
    let vlab = regular_lab(app, &app.users.faculty.clone(), "Lab").await;
    make_lab_admin(app, vlab, &app.users.students[0].clone());
    vlab
}

const KC_FAILED: &str = "KC Group creation/attaching failed";

/// A failed Keycloak step is a 400 with [`KC_FAILED`] that leaves nothing behind.
async fn keycloak_failure_leaves_nothing(app: &TestApp, vlab: Uuid) {
    assert_failure_leaves_nothing(
        app,
        vlab,
        StatusCode::BAD_REQUEST,
        "EXTERNAL_SERVICE_ERROR",
        KC_FAILED,
    )
    .await;
}

#[sqlx::test]
async fn failed_group_creations_are_400_and_leave_nothing(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let vlab = lab_with_two_admins(&app).await;
    for skip in [0, 1] {
        // The first, or the second, of the two concurrent project group creations fails.
        app.keycloak
            .inject(Fault::new("kc_create_group", FaultAction::Status(500)).skip(skip));
        keycloak_failure_leaves_nothing(&app, vlab).await;
    }
    // Performed but unanswered: the undo finds the group by name.
    app.keycloak.inject(
        Fault::new(
            "kc_create_group",
            FaultAction::TimeoutAfter(Duration::from_millis(50)),
        )
        .skip(1),
    );
    keycloak_failure_leaves_nothing(&app, vlab).await;
    assert_eq!(app.accounting.call_count("acc_create_project_account"), 0);
}

#[sqlx::test]
async fn a_failed_admin_listing_or_membership_is_400_and_leaves_nothing(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let vlab = lab_with_two_admins(&app).await;
    app.keycloak
        .inject(Fault::new("kc_list_members", FaultAction::Status(500)));
    keycloak_failure_leaves_nothing(&app, vlab).await;
    // One of the two project admin memberships fails (the other one succeeds).
    app.keycloak
        .inject(Fault::new("kc_add_member", FaultAction::Status(500)).skip(1));
    keycloak_failure_leaves_nothing(&app, vlab).await;
    assert_eq!(app.accounting.call_count("acc_create_project_account"), 0);
}

#[sqlx::test]
async fn a_failed_project_account_is_502_and_leaves_nothing(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let vlab = lab_with_two_admins(&app).await;
    app.accounting.inject(Fault::new(
        "acc_create_project_account",
        FaultAction::Status(500),
    ));
    assert_failure_leaves_nothing(
        &app,
        vlab,
        StatusCode::BAD_GATEWAY,
        "EXTERNAL_SERVICE_ERROR",
        "Project account creation failed",
    )
    .await;
    assert_eq!(app.accounting.accounts().len(), 1, "only the lab account");
    // Performed but unanswered: the same answer; the orphan account is only logged.
    app.accounting.inject(Fault::new(
        "acc_create_project_account",
        FaultAction::TimeoutAfter(Duration::from_millis(50)),
    ));
    assert_failure_leaves_nothing(
        &app,
        vlab,
        StatusCode::BAD_GATEWAY,
        "EXTERNAL_SERVICE_ERROR",
        "Project account creation failed",
    )
    .await;
    assert_eq!(app.accounting.accounts().len(), 2, "the orphan stays");
}

#[sqlx::test]
async fn a_failed_project_insert_is_400_and_leaves_nothing(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let vlab = lab_with_two_admins(&app).await;
    refuse_inserts(&db, "project").await;
    assert_failure_leaves_nothing(
        &app,
        vlab,
        StatusCode::BAD_REQUEST,
        "DATABASE_ERROR",
        "Project creation failed",
    )
    .await;
}

// ---- GET list --------------------------------------------------------------------------------

#[sqlx::test]
async fn admins_list_every_project_and_others_only_their_own(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let faculty = app.users.faculty.clone();
    let vlab = regular_lab(&app, &faculty, "Lab").await;
    let token = app.faculty_token();
    let mut ids = Vec::new();
    for (name, description) in [
        ("Beta", json!("about neurons")),
        ("alpha", json!(null)),
        ("Gamma", json!("x")),
    ] {
        let body = app
            .with_token(&token)
            .post_project(vlab, "", &json!({"name": name, "description": description}))
            .await
            .ok_body();
        ids.push(uuid_of(&body["id"]));
    }
    sqlx::query("UPDATE project SET deleted = true WHERE name = 'Gamma'")
        .execute(&db)
        .await
        .unwrap();

    let page = app
        .with_token(&token)
        .get_projects(vlab, "?order_by=name&order_direction=asc")
        .await
        .ok_body();
    assert_eq!(names(&page), ["Beta", "alpha"]);
    assert_eq!(
        page["pagination"],
        json!({"page": 1, "page_size": 2, "total_items": 2})
    );
    let item = &page["data"][1];
    assert_keys(
        item,
        &["id", "name", "description", "created_at", "updated_at"],
    );
    assert_eq!(item["description"], Value::Null);

    let (_, page) = app
        .with_token(&token)
        .get_projects(vlab, "?query=NEURON")
        .await;
    assert_eq!(names(&page), ["Beta"]);
    let (_, page) = app
        .with_token(&token)
        .get_projects(vlab, "?query=ALP")
        .await;
    assert_eq!(names(&page), ["alpha"]);
    let (_, page) = app
        .with_token(&token)
        .get_projects(
            vlab,
            "?page=2&page_size=1&order_by=created_at&order_direction=asc",
        )
        .await;
    assert_eq!(names(&page), ["alpha"]);
    assert_eq!(
        page["pagination"],
        json!({"page": 2, "page_size": 1, "total_items": 2})
    );

    // A lab member sees only the projects of their own project groups.
    let student = app.users.students[0].clone();
    make_member(&app, &format!("vlab/{vlab}/member"), &student);
    make_member(&app, &format!("proj/{vlab}/{}/member", ids[1]), &student);
    let page = app.as_user(&student).get_projects(vlab, "").await.ok_body();
    assert_eq!(names(&page), ["alpha"]);
    assert_eq!(page["pagination"]["total_items"], 1);
}

#[sqlx::test]
async fn listing_projects_checks_the_tier_and_the_query(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let vlab = regular_lab(&app, &app.users.faculty.clone(), "Lab").await;
    let err = app
        .with_token(&app.student_token(0))
        .get_projects(vlab, "")
        .await
        .not_allowed();
    assert_eq!(err["details"], format!("vlab:any on {vlab}"));
    let token = app.faculty_token();
    for (query, field, message) in [
        ("?page=0", "page", "Must be at least 1"),
        ("?page_size=500", "page_size", "Must be between 1 and 100"),
        (
            "?order_by=size",
            "order_by",
            "Must be one of: created_at, updated_at, name, owner",
        ),
        (
            "?order_direction=sideways",
            "order_direction",
            "Must be one of: asc, desc",
        ),
        ("?query=", "query", "Must not be empty"),
    ] {
        let err = app
            .with_token(&token)
            .get_projects(vlab, query)
            .await
            .invalid();
        assert_eq!(err["details"][field], message, "{query}");
    }
}

// ---- GET one ---------------------------------------------------------------------------------

#[sqlx::test]
async fn a_project_is_read_by_its_members_and_the_lab_admins(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let lab = create_course_lab(&app, "Course").await;
    let path = format!(
        "/virtual-labs/{}/projects/{}",
        lab.vlab_id, lab.template_project_id
    );
    let body = app.as_admin().get(&path).await.ok_body();
    assert_keys(
        &body,
        &["id", "name", "created_at", "updated_at", "virtual_lab_id"],
    );
    assert_eq!(body["name"], "Template");

    let student = app.users.students[0].clone();
    make_member(
        &app,
        &format!("proj/{}/{}/member", lab.vlab_id, lab.template_project_id),
        &student,
    );
    make_lab_admin(&app, lab.vlab_id, &app.users.faculty.clone());
    let body = app
        .as_user(&student)
        .get(&format!("{path}?expand=admins,virtual_lab"))
        .await
        .ok_body();
    // The project admin group: only the creator (faculty joined the lab afterwards).
    assert_eq!(body["admins"], json!([app.users.admin.id.to_string()]));
    assert_eq!(body["virtual_lab"]["id"], lab.vlab_id.to_string());
    assert_eq!(body["virtual_lab"]["projects_count"], 1);
    let (status, _) = app.as_faculty().get(&path).await;
    assert_eq!(status, StatusCode::OK);
}

#[sqlx::test]
async fn reading_a_project_checks_access_existence_and_expand(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let lab = create_course_lab(&app, "Course").await;
    let other = create_course_lab(&app, "Other").await;
    let token = app.admin_token();
    let path = format!(
        "/virtual-labs/{}/projects/{}",
        lab.vlab_id, lab.template_project_id
    );

    let err = app
        .as_user(&app.users.students[0])
        .get(&path)
        .await
        .not_allowed();
    assert_eq!(
        err["details"],
        format!("project:any:+vlab_admin on {}", lab.template_project_id)
    );
    let (status, _) = app
        .with_token(&token)
        .get(&format!("/virtual-labs/{}/projects/xyz", lab.vlab_id))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A project of another lab.
    app.with_token(&token)
        .get(&format!(
            "/virtual-labs/{}/projects/{}",
            lab.vlab_id, other.template_project_id
        ))
        .await
        .error_with(
            StatusCode::NOT_FOUND,
            "ENTITY_NOT_FOUND",
            "Project not found",
        );

    let err = app
        .with_token(&token)
        .get(&format!("{path}?expand=owner"))
        .await
        .invalid();
    assert_eq!(
        err["details"]["expand"],
        "Must be one of: admins, virtual_lab"
    );

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

    exec(
        &db,
        "UPDATE project SET deleted = true WHERE id = $1",
        lab.template_project_id,
    )
    .await;
    app.with_token(&token)
        .get(&path)
        .await
        .error_body(StatusCode::NOT_FOUND, "ENTITY_NOT_FOUND");
}

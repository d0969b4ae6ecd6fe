//! `POST /courses/{course_id}/void` and `DELETE /courses/{course_id}` (api.md §4.5.6–§4.5.7,
//! rules.md §4.7–§4.8).

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;
use vlab_emulators::{Fault, FaultAction};

use crate::fixtures::{
    ActiveCourse, COURSE_KEYS, assign, claim_and_activate, course_with_students,
    create_active_course, create_draft_course, make_lab_admin, provision,
};
use crate::helpers::{ReplyExt, TestApp, assert_keys, fetch_row, fetch_scalar};

fn summary(dropped: u64, failed: u64, pending: u64, depleted: bool) -> Value {
    json!({"enrolments_dropped": dropped, "enrolments_failed": failed,
           "access_removals_pending": pending, "budget_depleted": depleted})
}

/// `(successful, total)` calls of an accounting operation.
fn accounting_calls(app: &TestApp, operation: &str) -> (usize, usize) {
    let calls: Vec<_> = app
        .accounting
        .calls()
        .into_iter()
        .filter(|c| c.operation == operation)
        .collect();
    let ok = calls.iter().filter(|c| c.status == 200).count();
    (ok, calls.len())
}

async fn course_status(db: &PgPool, course_id: Uuid) -> Option<(String, bool)> {
    sqlx::query_as("SELECT status, budget_depleted FROM course WHERE id = $1")
        .bind(course_id)
        .fetch_optional(db)
        .await
        .unwrap()
}

async fn count(db: &PgPool, sql: &str, course_id: Uuid) -> i64 {
    sqlx::query_scalar(sql)
        .bind(course_id)
        .fetch_one(db)
        .await
        .unwrap()
}

async fn outbox_statuses(db: &PgPool, course_id: Uuid) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT o.status FROM email_outbox o JOIN course_enrolment e ON e.id = o.enrolment_id
         WHERE e.course_id = $1 ORDER BY o.status",
    )
    .bind(course_id)
    .fetch_all(db)
    .await
    .unwrap()
}

// ---- void -----------------------------------------------------------------------------------

#[sqlx::test]
async fn void_drops_every_student_cancels_their_e_mails_and_depletes_the_lab_once(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = create_active_course(&app, "Void students").await;
    make_lab_admin(&app, course.vlab_id, &app.users.faculty);
    provision(&app, course.course_id, 3).await;
    // The claim e-mails fail at assign, so they wait in the outbox.
    app.smtp
        .inject(Fault::new("smtp_send", FaultAction::Status(451)).times(3));
    let students = assign(&app, course.course_id, 3).await;
    assert_eq!(outbox_statuses(&db, course.course_id).await, ["pending"; 3]);
    claim_and_activate(&app, students[0].enrolment_id, &app.users.students[0]).await;
    // One of the three drops cannot deplete.
    app.accounting
        .inject(Fault::new("acc_deplete_project", FaultAction::Status(500)));

    let (status, body) = app.as_admin().void_course(course.course_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["message"], "Course voided successfully");
    let data = &body["data"];
    assert_keys(data, &[COURSE_KEYS.as_slice(), &["void_summary"]].concat());
    assert_eq!(data["id"], course.course_id.to_string());
    assert_eq!(data["status"], "voided");
    assert_eq!(data["budget_depleted"], true);
    assert_eq!(data["void_summary"], summary(2, 1, 0, true));
    assert_eq!(
        course_status(&db, course.course_id).await,
        Some(("voided".into(), true))
    );
    assert_eq!(accounting_calls(&app, "acc_deplete_vlab"), (1, 1));

    // Two settled (early, nothing spent: recovered), one left in `depleting`.
    let undropped = "SELECT count(*) FROM course_enrolment WHERE course_id = $1 AND NOT is_dropped";
    assert_eq!(count(&db, undropped, course.course_id).await, 1);
    let recovered = "SELECT count(*) FROM seat WHERE course_id = $1 AND previously_dropped
                     AND enrolment_id IS NULL AND NOT is_consumed";
    assert_eq!(count(&db, recovered, course.course_id).await, 2);
    let reasons = "SELECT count(*) FROM enrolment_drop WHERE course_id = $1 AND reason = 'void'
                   AND requested_by IS NOT NULL";
    assert_eq!(count(&db, reasons, course.course_id).await, 3);
    assert_eq!(
        outbox_statuses(&db, course.course_id).await,
        ["cancelled", "cancelled", "pending"]
    );
    // The lab deplete emptied every project, the failed student's included.
    for s in &students {
        assert_eq!(
            app.accounting.balance(s.project_id),
            Some(rust_decimal::Decimal::ZERO)
        );
    }
    let activated = &app.users.students[0];
    let member = format!("/vlab/{}/member", course.vlab_id);
    let dropped_first: bool = fetch_scalar(
        &db,
        "SELECT is_dropped FROM course_enrolment WHERE id = $1",
        students[0].enrolment_id,
    )
    .await;
    assert_eq!(
        app.keycloak
            .user_group_paths(activated.id)
            .contains(&member),
        !dropped_first
    );

    // Voiding again resumes the failed drop; the lab is not depleted again.
    let again = app.as_admin().void_course(course.course_id).await.ok_body();
    assert_eq!(again["data"]["void_summary"], summary(1, 0, 0, true));
    assert_eq!(count(&db, undropped, course.course_id).await, 0);
    assert_eq!(
        outbox_statuses(&db, course.course_id).await,
        ["cancelled"; 3]
    );
    assert!(
        !app.keycloak
            .user_group_paths(activated.id)
            .contains(&member)
    );
    let third = app.as_admin().void_course(course.course_id).await.ok_body();
    assert_eq!(third["data"]["void_summary"], summary(0, 0, 0, true));
    assert_eq!(accounting_calls(&app, "acc_deplete_vlab"), (1, 1));
}

#[sqlx::test]
async fn void_of_a_draft_course_just_voids_it_and_depletes_the_lab(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = create_draft_course(&app, "Void draft", None, None, None).await;
    let (status, body) = app.as_admin().void_course(course.course_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["status"], "voided");
    assert_eq!(body["data"]["start_date"], Value::Null);
    assert_eq!(body["data"]["void_summary"], summary(0, 0, 0, true));
    assert_eq!(accounting_calls(&app, "acc_deplete_vlab"), (1, 1));

    // Idempotent: the second void changes nothing and depletes nothing.
    let again = app.as_admin().void_course(course.course_id).await.ok_body();
    assert_eq!(again["data"], body["data"]);
    assert_eq!(accounting_calls(&app, "acc_deplete_vlab"), (1, 1));
}

#[sqlx::test]
async fn a_failed_lab_deplete_is_reported_and_retried_by_the_next_void(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = create_draft_course(&app, "Void deplete fails", None, None, None).await;
    app.accounting
        .inject(Fault::new("acc_deplete_vlab", FaultAction::Status(500)));
    let (status, body) = app.as_admin().void_course(course.course_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["status"], "voided");
    assert_eq!(body["data"]["budget_depleted"], false);
    assert_eq!(body["data"]["void_summary"], summary(0, 0, 0, false));
    assert_eq!(
        course_status(&db, course.course_id).await,
        Some(("voided".into(), false))
    );

    let again = app.as_admin().void_course(course.course_id).await.ok_body();
    assert_eq!(again["data"]["budget_depleted"], true);
    assert_eq!(again["data"]["void_summary"], summary(0, 0, 0, true));
    assert_eq!(accounting_calls(&app, "acc_deplete_vlab"), (1, 2));
}

#[sqlx::test]
async fn void_retries_a_failed_access_removal_at_once(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, students) = course_with_students(&app, "Void access", 1).await;
    let student = &app.users.students[0];
    claim_and_activate(&app, students[0].enrolment_id, student).await;
    // The drop's own attempt fails; void's sweep (ignoring the backoff) succeeds.
    app.keycloak
        .inject(Fault::new("kc_remove_member", FaultAction::Status(500)));
    let body = app.as_admin().void_course(course.course_id).await.ok_body();
    assert_eq!(body["data"]["void_summary"], summary(1, 0, 0, true));
    let (state, attempts): (String, i32) = fetch_row(
        &db,
        "SELECT state, access_attempts FROM enrolment_drop WHERE enrolment_id = $1",
        students[0].enrolment_id,
    )
    .await;
    assert_eq!((state.as_str(), attempts), ("done", 2));
    assert!(
        !app.keycloak
            .user_group_paths(student.id)
            .contains(&format!("/vlab/{}/member", course.vlab_id))
    );
}

#[sqlx::test]
async fn void_answers_401_403_422_and_404(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let unknown = Uuid::new_v4();
    let path = format!("/courses/{unknown}/void");
    app.anonymous()
        .post(&path, &json!({}))
        .await
        .unauthenticated();
    app.as_faculty().post(&path, &json!({})).await.error_with(
        StatusCode::FORBIDDEN,
        "AUTHORIZATION_ERROR",
        "Access denied",
    );
    let body = app
        .as_admin()
        .post("/courses/nope/void", &json!({}))
        .await
        .invalid();
    assert_eq!(body["details"], json!({"course_id": "Must be a UUID"}));
    let body = app.as_admin().void_course(unknown).await.error_with(
        StatusCode::NOT_FOUND,
        "ENTITY_NOT_FOUND",
        &format!("Course {unknown} not found"),
    );
    assert_eq!(
        (&body["details"], &body["data"]),
        (&Value::Null, &Value::Null)
    );
}

// ---- delete ---------------------------------------------------------------------------------

async fn assert_course_gone(app: &TestApp, db: &PgPool, course: &ActiveCourse) {
    assert_eq!(course_status(db, course.course_id).await, None);
    for table in ["seat", "course_enrolment", "enrolment_drop"] {
        let sql = format!("SELECT count(*) FROM {table} WHERE course_id = $1");
        assert_eq!(count(db, &sql, course.course_id).await, 0, "{table}");
    }
    // The lab and the template project are kept (and may get a new course).
    let kept: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM project WHERE id = $1 AND virtual_lab_id = $2 AND NOT deleted",
    )
    .bind(course.template_project_id)
    .bind(course.vlab_id)
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(kept, 1);
    app.as_admin()
        .get_course(course.course_id)
        .await
        .error_body(StatusCode::NOT_FOUND, "ENTITY_NOT_FOUND");
}

#[sqlx::test]
async fn deleting_a_draft_voids_it_depletes_the_lab_and_removes_it(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = create_draft_course(&app, "Delete draft", None, None, None).await;
    let body = app
        .as_admin()
        .delete_course(course.course_id)
        .await
        .ok_body();
    assert_eq!(
        body,
        json!({"message": "Course deleted successfully", "data": null})
    );
    assert_course_gone(&app, &db, &course).await;
    assert_eq!(accounting_calls(&app, "acc_deplete_vlab"), (1, 1));
    app.as_admin()
        .delete_course(course.course_id)
        .await
        .error_with(
            StatusCode::NOT_FOUND,
            "ENTITY_NOT_FOUND",
            &format!("Course {} not found", course.course_id),
        );
}

#[sqlx::test]
async fn deleting_a_voided_course_removes_its_seats_enrolments_and_outbox(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, students) = course_with_students(&app, "Delete voided", 2).await;
    provision(&app, course.course_id, 1).await;
    app.as_admin().void_course(course.course_id).await.ok_body();
    app.as_admin()
        .delete_course(course.course_id)
        .await
        .ok_body();
    assert_course_gone(&app, &db, &course).await;
    let outbox: i64 =
        sqlx::query_scalar("SELECT count(*) FROM email_outbox WHERE enrolment_id = ANY($1)")
            .bind(students.iter().map(|s| s.enrolment_id).collect::<Vec<_>>())
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(outbox, 0);
    // Student projects are kept; only the link to the student is gone.
    for s in &students {
        let exists: bool = fetch_scalar(
            &db,
            "SELECT EXISTS (SELECT 1 FROM project WHERE id = $1)",
            s.project_id,
        )
        .await;
        assert!(exists);
        assert!(app.accounting.account_exists(s.project_id));
    }
    // The void depleted the lab; the delete did not do it again.
    assert_eq!(accounting_calls(&app, "acc_deplete_vlab"), (1, 1));
}

#[sqlx::test]
async fn an_active_course_cannot_be_deleted(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = create_active_course(&app, "Delete active").await;
    let body = app
        .as_admin()
        .delete_course(course.course_id)
        .await
        .error_with(
            StatusCode::CONFLICT,
            "FORBIDDEN_OPERATION",
            "Active courses cannot be deleted. Void the course first.",
        );
    assert_eq!(
        (&body["details"], &body["data"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(
        course_status(&db, course.course_id).await,
        Some(("active".into(), false))
    );
    assert_eq!(app.accounting.call_count("acc_deplete_vlab"), 0);
}

#[sqlx::test]
async fn delete_answers_401_403_and_422_before_looking(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let path = format!("/courses/{}", Uuid::new_v4());
    app.anonymous().delete(&path).await.unauthenticated();
    app.as_faculty().delete(&path).await.denied();
    let body = app.as_admin().delete("/courses/nope").await.invalid();
    assert_eq!(body["details"], json!({"course_id": "Must be a UUID"}));
}

#[sqlx::test]
async fn a_delete_whose_lab_deplete_fails_leaves_the_course_voided_and_resumes(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = create_draft_course(&app, "Delete deplete fails", None, None, None).await;
    app.accounting
        .inject(Fault::new("acc_deplete_vlab", FaultAction::Status(500)));
    let body = app
        .as_admin()
        .delete_course(course.course_id)
        .await
        .error_with(
            StatusCode::BAD_GATEWAY,
            "EXTERNAL_SERVICE_ERROR",
            &format!(
                "Failed to deplete vlab budget for course {}",
                course.course_id
            ),
        );
    assert_eq!(
        (&body["details"], &body["data"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(
        course_status(&db, course.course_id).await,
        Some(("voided".into(), false))
    );

    app.as_admin()
        .delete_course(course.course_id)
        .await
        .ok_body();
    assert_course_gone(&app, &db, &course).await;
    assert_eq!(accounting_calls(&app, "acc_deplete_vlab"), (1, 2));
}

#[sqlx::test]
async fn a_delete_whose_drop_fails_answers_502_and_resumes(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, students) = course_with_students(&app, "Delete drop fails", 2).await;
    app.accounting
        .inject(Fault::new("acc_deplete_project", FaultAction::Status(500)).times(2));
    let body = app.as_admin().void_course(course.course_id).await.ok_body();
    assert_eq!(body["data"]["void_summary"], summary(0, 2, 0, true));

    app.accounting
        .inject(Fault::new("acc_deplete_project", FaultAction::Status(500)));
    app
        .as_admin()
        .delete_course(course.course_id)
        .await
        .error_with(StatusCode::BAD_GATEWAY, "EXTERNAL_SERVICE_ERROR", &format!(
            "Failed to drop 1 enrolment(s) of course {}; the course was voided but not deleted. Retry the delete.",
            course.course_id
        ));
    assert_eq!(
        course_status(&db, course.course_id).await,
        Some(("voided".into(), true))
    );
    let reasons: Vec<String> = sqlx::query_scalar(
        "SELECT reason FROM enrolment_drop WHERE course_id = $1 ORDER BY reason",
    )
    .bind(course.course_id)
    .fetch_all(&db)
    .await
    .unwrap();
    // The first request's reason is kept on resume.
    assert_eq!(reasons, ["void", "void"]);
    assert_eq!(students.len(), 2);

    app.as_admin()
        .delete_course(course.course_id)
        .await
        .ok_body();
    assert_course_gone(&app, &db, &course).await;
}

#[sqlx::test]
async fn a_delete_whose_access_removal_fails_answers_502_and_resumes(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, students) = course_with_students(&app, "Delete access fails", 1).await;
    let student = &app.users.students[0];
    claim_and_activate(&app, students[0].enrolment_id, student).await;
    // Keycloak fails during the void (the drop's attempt and the sweep's).
    app.keycloak
        .inject(Fault::new("kc_remove_member", FaultAction::Status(500)).times(2));
    let body = app.as_admin().void_course(course.course_id).await.ok_body();
    assert_eq!(body["data"]["void_summary"], summary(1, 0, 1, true));
    // And still during the delete.
    app.keycloak
        .inject(Fault::new("kc_list_members", FaultAction::Status(500)));
    app
        .as_admin()
        .delete_course(course.course_id)
        .await
        .error_with(StatusCode::BAD_GATEWAY, "EXTERNAL_SERVICE_ERROR", &format!(
            "Failed to remove access for 1 dropped enrolment(s) of course {}; the course was voided but not deleted. Retry the delete.",
            course.course_id
        ));
    assert!(course_status(&db, course.course_id).await.is_some());

    app.as_admin()
        .delete_course(course.course_id)
        .await
        .ok_body();
    assert_course_gone(&app, &db, &course).await;
}

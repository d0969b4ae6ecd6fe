//! The claim's access sync (W.5.4, W.7 4–12): waitlisted before the start, member from it,
//! retried by the worker after a Keycloak failure, no row lock during the calls, and a drop
//! that races it always wins.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use vlab_emulators::{Fault, FaultAction};

use super::{
    StalledAdds, access, assert_the_drop_won, claim, drop_state, future_course, make_due,
    member_paths, pass, paths, post_in_background, started_course, waitlisted_paths,
};
use crate::helpers::{ReplyExt, TestApp, assert_keys, data_strings, exec};

#[sqlx::test]
async fn a_claim_before_the_start_waitlists_the_student(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = future_course(&app, "Waitlist 101", 1).await;
    let student = app.users.students[0].clone();
    let body = app
        .as_user(&student)
        .claim(assigned[0].enrolment_id)
        .await
        .ok_body();
    assert_keys(&body, &["message", "data"]);
    assert_keys(
        &body["data"],
        &[
            "id",
            "course_id",
            "project_id",
            "contact_email",
            "student_id",
            "claimed_by",
            "course",
        ],
    );
    assert_eq!(
        paths(&app, &student),
        waitlisted_paths(&course, &assigned[0])
    );
    let row = access(&app, assigned[0].enrolment_id).await;
    assert_eq!(row.access_level, "waitlisted");
    assert_eq!(row.activated_at, None);
    assert_eq!(row.access_lease_id, None);
}

#[sqlx::test]
async fn a_claim_after_the_start_grants_member_access_and_the_first_activation_reports_it(
    db: PgPool,
) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = started_course(&app, "Started 101", 1).await;
    let student = app.users.students[0].clone();
    claim(&app, &student, assigned[0].enrolment_id).await;
    assert_eq!(paths(&app, &student), member_paths(&course, &assigned[0]));
    let row = access(&app, assigned[0].enrolment_id).await;
    assert_eq!(
        (row.access_level.as_str(), row.activated_at),
        ("member", None)
    );

    let body = app.as_user(&student).activate_enrolments().await.ok_body();
    assert_eq!(
        body,
        json!({"results": [{"enrolment_id": assigned[0].enrolment_id, "activated": true,
                            "project_id": assigned[0].project_id, "error": null}]})
    );
    let body = app.as_user(&student).activate_enrolments().await.ok_body();
    assert_eq!(body, json!({"results": []}));
}

#[sqlx::test]
async fn a_claim_on_a_project_without_a_waitlisted_group_creates_and_stores_it(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = future_course(&app, "Legacy 101", 1).await;
    let project = assigned[0].project_id;
    // A project assigned before the waitlist existed.
    let name = format!("proj/{}/{project}/waitlisted", course.vlab_id);
    let old = app.keycloak.group_by_name(&name).unwrap();
    app.services().keycloak.delete_group(&old.id).await.unwrap();
    exec(
        &app.db,
        "UPDATE project SET waitlisted_group_id = NULL WHERE id = $1",
        project,
    )
    .await;

    let student = app.users.students[0].clone();
    claim(&app, &student, assigned[0].enrolment_id).await;
    let created = app.keycloak.group_by_name(&name).expect("created again");
    let stored: Option<String> = crate::helpers::fetch_scalar(
        &app.db,
        "SELECT waitlisted_group_id FROM project WHERE id = $1",
        project,
    )
    .await;
    assert_eq!(stored, Some(created.id));
    assert_eq!(
        paths(&app, &student),
        waitlisted_paths(&course, &assigned[0])
    );
    assert_eq!(
        access(&app, assigned[0].enrolment_id).await.access_level,
        "waitlisted"
    );
}

#[sqlx::test]
async fn a_keycloak_failure_keeps_the_claim_and_the_worker_grants_the_access(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = future_course(&app, "Flaky 101", 1).await;
    let student = app.users.students[0].clone();
    app.keycloak
        .inject(Fault::new("kc_add_member", FaultAction::Status(500)).times(100));
    claim(&app, &student, assigned[0].enrolment_id).await;
    app.keycloak.clear_faults();

    let claimed_by: Option<uuid::Uuid> = crate::helpers::fetch_scalar(
        &app.db,
        "SELECT claimed_by FROM course_enrolment WHERE id = $1",
        assigned[0].enrolment_id,
    )
    .await;
    assert_eq!(claimed_by, Some(student.id));
    let row = access(&app, assigned[0].enrolment_id).await;
    assert_eq!(
        (row.access_level.as_str(), row.access_attempts),
        ("none", 1)
    );
    assert!(
        row.access_next_attempt_at
            .is_some_and(|t| t > chrono::Utc::now())
    );
    assert_eq!(row.access_lease_id, None);
    // Not due yet: the pass leaves it alone.
    assert_eq!(pass(&app).await.leased, 0);

    make_due(&app, assigned[0].enrolment_id).await;
    let done = pass(&app).await;
    assert_eq!((done.leased, done.applied, done.pending), (1, 1, 0));
    assert_eq!(
        paths(&app, &student),
        waitlisted_paths(&course, &assigned[0])
    );
    let row = access(&app, assigned[0].enrolment_id).await;
    assert_eq!(
        (row.access_level.as_str(), row.access_attempts),
        ("waitlisted", 2)
    );
    assert_eq!(row.access_next_attempt_at, None);
}

#[sqlx::test]
async fn no_row_lock_is_held_while_the_claim_calls_keycloak(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, assigned) = future_course(&app, "Lockless 101", 1).await;
    let enrolment = assigned[0].enrolment_id;
    let stall = StalledAdds::start(&app, Duration::from_millis(800));
    let body = json!({"enrolment_id": enrolment});
    let pending = post_in_background(&app, "/courses/claim", app.student_token(0), Some(body));
    stall.in_flight().await;
    let mut tx = app.db.begin().await.unwrap();
    sqlx::query("SELECT id FROM course_enrolment WHERE id = $1 FOR UPDATE NOWAIT")
        .bind(enrolment)
        .fetch_one(&mut *tx)
        .await
        .expect("the enrolment row is not locked");
    tx.rollback().await.unwrap();
    let (status, body) = pending.await.unwrap();
    drop(stall);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(access(&app, enrolment).await.access_level, "waitlisted");
}

#[sqlx::test]
async fn a_waitlisted_student_sees_the_lab_and_lists_the_project_but_cannot_open_it(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = future_course(&app, "Visible 101", 2).await;
    let token = app.student_token(0);
    let lab = format!("/virtual-labs/{}", course.vlab_id);
    // Cached as a stranger first; the claim drops the cache.
    assert_eq!(
        app.get(&lab, Some(&token)).await.status(),
        StatusCode::FORBIDDEN
    );
    app.with_token(&token)
        .claim(assigned[0].enrolment_id)
        .await
        .ok_body();

    app.with_token(&token).get(&lab).await.ok_body();
    let labs = app.with_token(&token).get_virtual_labs("").await.ok_body();
    assert_eq!(data_strings(&labs, "id"), [course.vlab_id.to_string()]);
    let projects = app
        .with_token(&token)
        .get_projects(course.vlab_id, "")
        .await
        .ok_body();
    assert_eq!(
        data_strings(&projects, "id"),
        [assigned[0].project_id.to_string()]
    );
    let body = app
        .with_token(&token)
        .get_project(course.vlab_id, assigned[0].project_id, "")
        .await
        .error_with(
            StatusCode::FORBIDDEN,
            "NOT_ALLOWED_OP",
            "Not authorized to perform this action",
        );
    assert_eq!(
        body["details"],
        format!("project:any:+vlab_admin on {}", assigned[0].project_id)
    );
}

#[sqlx::test]
async fn a_claim_racing_a_faculty_drop_loses_and_the_access_is_removed_again(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = started_course(&app, "Race 101", 1).await;
    let student = app.users.students[0].clone();
    let enrolment = assigned[0].enrolment_id;
    let stall = StalledAdds::start(&app, Duration::from_millis(1500));
    let body = json!({"enrolment_id": enrolment});
    let pending = post_in_background(&app, "/courses/claim", app.student_token(0), Some(body));
    stall.in_flight().await;
    // The drop's D4 completes while the claim's additions are still in flight.
    let dropped = app
        .as_faculty()
        .post_drop(course.course_id, &[assigned[0].seat_id])
        .await
        .ok_body();
    assert_eq!(
        drop_state(&app, enrolment).await.as_deref(),
        Some("done"),
        "{dropped}"
    );
    let (status, body) = pending.await.unwrap();
    drop(stall);
    assert_eq!(status, StatusCode::OK, "{body}");

    assert_the_drop_won(&app, &student, enrolment).await;
}

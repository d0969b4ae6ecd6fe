//! Who may top up how much: service admins up to the per-request amount, course admins up to
//! `FACULTY_TOP_UP_MAX_CREDITS` per student in total (none by default).

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use vlab_emulators::{Fault, FaultAction};

use super::{amount, extra_credits, spawn_with_faculty_limit, top_up_events, top_ups};
use crate::fixtures::{self, course_with_students};
use crate::helpers::{ReplyExt, TestApp};

const DISABLED: &str = "Top-ups by course administrators are disabled; ask an OBI administrator";

#[sqlx::test]
async fn faculty_top_up_with_limit_zero_is_409_disabled(db: PgPool) {
    // The default configuration.
    let app = TestApp::spawn(db).await;
    let (course, students) = course_with_students(&app, "Caps 101", 1).await;
    let grants = app.accounting.call_count("acc_grant");
    app.as_faculty()
        .top_up(course.course_id, students[0].enrolment_id, &amount(1))
        .await
        .error_with(StatusCode::CONFLICT, "LIMIT_EXCEEDED", DISABLED);
    assert!(top_ups(&app.db, students[0].enrolment_id).await.is_empty());
    assert_eq!(app.accounting.call_count("acc_grant"), grants);
    // A service admin still may.
    app.as_admin()
        .top_up(course.course_id, students[0].enrolment_id, &amount(10_000))
        .await
        .ok_body();
}

#[sqlx::test]
async fn faculty_top_up_within_the_limit_succeeds(db: PgPool) {
    let app = spawn_with_faculty_limit(db, 150).await;
    let (course, students) = course_with_students(&app, "Caps 102", 1).await;
    let e = students[0].enrolment_id;
    let body = app
        .as_faculty()
        .top_up(course.course_id, e, &amount(100))
        .await
        .ok_body();
    assert_eq!(body["data"]["extra_credits"], json!(100));
    let body = app
        .as_faculty()
        .top_up(course.course_id, e, &amount(50))
        .await
        .ok_body();
    assert_eq!(body["data"]["extra_credits"], json!(150));
    let rows = top_ups(&app.db, e).await;
    assert!(
        rows.iter().all(
            |r| r.requested_by_role == "course_admin" && r.requested_by == app.users.faculty.id
        )
    );
    let events = top_up_events(&app.db, e).await;
    assert!(events.iter().all(|ev| ev.actor_role == "course_admin"));
}

#[sqlx::test]
async fn faculty_top_up_over_the_limit_is_409_with_limit_and_used(db: PgPool) {
    let app = spawn_with_faculty_limit(db, 150).await;
    let (course, students) = course_with_students(&app, "Caps 103", 2).await;
    let e = students[0].enrolment_id;
    app.as_faculty()
        .top_up(course.course_id, e, &amount(100))
        .await
        .ok_body();
    // A refused grant added nothing, so it does not count.
    app.accounting
        .inject(Fault::new("acc_grant", FaultAction::Status(500)));
    app.as_faculty()
        .top_up(course.course_id, e, &amount(50))
        .await
        .error_body(StatusCode::BAD_GATEWAY, "EXTERNAL_SERVICE_ERROR");

    let body = app
        .as_faculty()
        .top_up(course.course_id, e, &amount(51))
        .await
        .error_with(
            StatusCode::CONFLICT,
            "LIMIT_EXCEEDED",
            "Course administrators may add at most 150 extra credits per student; 100 already added",
        );
    assert_eq!(body["data"], json!({"limit": "150", "used": "100"}));
    assert_eq!(body["details"], "limit=150, used=100");
    assert_eq!(extra_credits(&app.db, e).await, 100);

    // Service-admin top-ups do not use up the course admins' allowance, and the limit is
    // per student.
    app.as_admin()
        .top_up(course.course_id, e, &amount(500))
        .await
        .ok_body();
    app.as_faculty()
        .top_up(course.course_id, e, &amount(50))
        .await
        .ok_body();
    app.as_faculty()
        .top_up(course.course_id, students[1].enrolment_id, &amount(150))
        .await
        .ok_body();
    assert_eq!(extra_credits(&app.db, e).await, 650);
}

#[sqlx::test]
async fn caller_who_is_both_is_limited_as_service_admin(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = course_with_students(&app, "Caps 104", 1).await;
    // The service admin is also a lab admin of the course (a course admin).
    fixtures::make_lab_admin(&app, course.vlab_id, &app.users.admin);
    let body = app
        .as_admin()
        .top_up(course.course_id, students[0].enrolment_id, &amount(10_000))
        .await
        .ok_body();
    assert_eq!(body["data"]["extra_credits"], json!(10_000));
    let rows = top_ups(&app.db, students[0].enrolment_id).await;
    assert_eq!(rows[0].requested_by_role, "service_admin");
    let events = top_up_events(&app.db, students[0].enrolment_id).await;
    assert_eq!(events[0].actor_role, "service_admin");
}

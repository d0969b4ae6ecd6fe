//! `GET /courses/{course_id}/enrolments/{enrolment_id}/timeline`: the enrolment's events and
//! its credit summary, read from the tables (and the balance, when asked for).

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;
use vlab_emulators::{Fault, FaultAction};

use super::EventsApi;
use crate::fixtures;
use crate::helpers::{ReplyExt, TestApp, assert_keys};

fn types(timeline: &Value) -> Vec<&str> {
    timeline["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect()
}

#[sqlx::test]
async fn timeline_shows_ordered_events_and_the_credit_summary(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, students) = fixtures::course_with_students(&app, "Timeline", 2).await;
    let stu = &students[0];
    let body = app
        .as_faculty()
        .get_timeline(course.course_id, stu.enrolment_id, "")
        .await
        .ok_body();
    assert_eq!(body["message"], "Enrolment timeline");
    assert_keys(&body["data"], &["enrolment", "credits", "events"]);
    assert_eq!(
        body["data"]["enrolment"]["id"],
        stu.enrolment_id.to_string()
    );
    assert_eq!(
        body["data"]["enrolment"]["seat"]["id"],
        stu.seat_id.to_string()
    );
    assert_eq!(
        types(&body),
        ["enrolment_created", "email_queued", "email_sent"]
    );
    assert_eq!(
        body["data"]["credits"],
        json!({"granted": 200.0, "topped_up": 0.0, "top_ups_in_doubt": 0.0, "depleted": null,
               "current_balance": null, "spent": null, "balance_error": null})
    );
    assert_eq!(app.accounting.call_count("acc_project_balance"), 0);

    // With the balance, after the student spent some credits.
    app.accounting
        .spend(stu.project_id, Decimal::new(545, 1))
        .unwrap();
    let body = app
        .as_admin()
        .get_timeline(course.course_id, stu.enrolment_id, "?include_balance=true")
        .await
        .ok_body();
    let credits = &body["data"]["credits"];
    assert_eq!(credits["current_balance"], 145.5);
    assert_eq!(credits["spent"], 54.5);
    assert_eq!(credits["balance_error"], Value::Null);

    // Once dropped, the deplete's amount stands in for the balance, which is not read.
    app.as_faculty()
        .post_drop(course.course_id, &[stu.seat_id])
        .await
        .ok_body();
    let calls = app.accounting.call_count("acc_project_balance");
    let body = app
        .as_admin()
        .get_timeline(course.course_id, stu.enrolment_id, "?include_balance=true")
        .await
        .ok_body();
    assert_eq!(app.accounting.call_count("acc_project_balance"), calls);
    let credits = &body["data"]["credits"];
    assert_eq!(credits["depleted"], 145.5);
    assert_eq!(credits["spent"], 54.5);
    assert_eq!(credits["current_balance"], Value::Null);
    assert_eq!(
        types(&body),
        [
            "enrolment_created",
            "email_queued",
            "email_sent",
            "enrolment_dropped",
            "access_removed"
        ]
    );
    assert_eq!(body["data"]["enrolment"]["drop_state"], "done");
}

#[sqlx::test]
async fn timeline_balance_read_failure_is_200_with_balance_error(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, students) = fixtures::course_with_students(&app, "No balance", 1).await;
    app.accounting
        .inject(Fault::new("acc_project_balance", FaultAction::Status(500)));
    let body = app
        .as_admin()
        .get_timeline(
            course.course_id,
            students[0].enrolment_id,
            "?include_balance=1",
        )
        .await
        .ok_body();
    let credits = &body["data"]["credits"];
    assert_eq!(
        credits["balance_error"],
        "Could not read the balance from the accounting service"
    );
    assert_eq!(credits["current_balance"], Value::Null);
    assert_eq!(credits["spent"], Value::Null);
}

#[sqlx::test]
async fn timeline_of_an_enrolment_created_before_events_existed_has_credits(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, students) = fixtures::course_with_students(&app, "Before", 1).await;
    sqlx::raw_sql("TRUNCATE course_event")
        .execute(&db)
        .await
        .unwrap();
    let body = app
        .as_admin()
        .get_timeline(course.course_id, students[0].enrolment_id, "")
        .await
        .ok_body();
    assert_eq!(body["data"]["events"], json!([]));
    assert_eq!(body["data"]["credits"]["granted"], 200.0);
}

#[sqlx::test]
async fn timeline_checks_the_tier_the_ids_and_the_course(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, students) = fixtures::course_with_students(&app, "Checks", 1).await;
    let other = fixtures::create_active_course(&app, "Elsewhere").await;
    let id = course.course_id;
    let e = students[0].enrolment_id;

    app.as_user(&app.users.students[0])
        .get_timeline(id, e, "")
        .await
        .not_allowed();
    app.as_faculty()
        .get_timeline(other.course_id, e, "")
        .await
        .not_allowed();
    let bad = app
        .as_faculty()
        .get_timeline(id, "nope", "")
        .await
        .invalid();
    assert_eq!(bad["details"]["enrolment_id"], "Must be a UUID");
    let bad = app
        .as_faculty()
        .get_timeline(id, e, "?include_balance=maybe")
        .await
        .invalid();
    assert_eq!(bad["details"]["include_balance"], "Must be a boolean");
    // An enrolment of another course is a 404, never a 403.
    app.as_admin()
        .get_timeline(other.course_id, e, "")
        .await
        .error_with(
            StatusCode::NOT_FOUND,
            "ENTITY_NOT_FOUND",
            &format!("Enrolment {e} not found in course {}", other.course_id),
        );
    let unknown = Uuid::new_v4();
    app.as_admin()
        .get_timeline(unknown, e, "")
        .await
        .error_with(
            StatusCode::NOT_FOUND,
            "ENTITY_NOT_FOUND",
            &format!("Course {unknown} not found"),
        );
}

//! A top-up's grant and what it records: granted, refused, unconfirmed; and a waitlisted
//! student.

use std::str::FromStr;
use std::time::Duration;

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::PgPool;
use vlab_emulators::{Fault, FaultAction};

use super::{
    TopUpRow, admin_top_up, amount, extra_credits, metric_lines, top_up_event_types, top_up_events,
    top_ups,
};
use crate::fixtures::{self, course_with_students};
use crate::helpers::{ReplyExt, TestApp, assert_keys};

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

#[sqlx::test]
async fn service_admin_top_up_grants_credits_and_records_them(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = course_with_students(&app, "Top-up 101", 1).await;
    let s = &students[0];
    let grants_before = app.accounting.call_count("acc_grant");

    let body = app
        .as_admin()
        .top_up(
            course.course_id,
            s.enrolment_id,
            &json!({"amount": 100, "note": "  Ran out in week 3  "}),
        )
        .await
        .ok_body();
    assert_keys(&body, &["message", "data"]);
    assert_eq!(body["message"], "Credits added successfully");
    let data = &body["data"];
    assert_keys(
        data,
        &[
            "top_up_id",
            "enrolment_id",
            "project_id",
            "amount",
            "extra_credits",
            "credits_granted_total",
        ],
    );
    assert_eq!(data["enrolment_id"], s.enrolment_id.to_string());
    assert_eq!(data["project_id"], s.project_id.to_string());
    assert_eq!(data["amount"], json!(100.0));
    assert_eq!(data["extra_credits"], json!(100));
    assert_eq!(data["credits_granted_total"], json!(300));

    // The accounting service holds the grant; the enrolment and the row record it.
    assert_eq!(app.accounting.call_count("acc_grant"), grants_before + 1);
    assert_eq!(app.accounting.balance(s.project_id), Some(dec("300")));
    assert_eq!(extra_credits(&app.db, s.enrolment_id).await, 100);
    let rows: Vec<TopUpRow> = top_ups(&app.db, s.enrolment_id).await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(data["top_up_id"], row.id.to_string());
    assert_eq!(
        (row.state.as_str(), row.amount, row.note.as_deref()),
        ("granted", 100, Some("Ran out in week 3"))
    );
    assert_eq!(row.requested_by, app.users.admin.id);
    assert_eq!(row.requested_by_role, "service_admin");
    assert!(row.lease_id.is_none() && row.lease_until.is_none());
    assert!(row.settled_at.is_some() && row.last_error.is_none());

    let events = top_up_events(&app.db, s.enrolment_id).await;
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event.event_type, "credits_topped_up");
    assert_eq!(event.actor_role, "service_admin");
    assert_eq!(event.actor_id, Some(app.users.admin.id));
    assert_eq!(event.project_id, Some(s.project_id));
    assert_eq!(event.amount, Some(dec("100")));
    assert_eq!(event.before_values, Some(json!({"extra_credits": 0})));
    assert_eq!(event.after_values, Some(json!({"extra_credits": 100})));
    assert_eq!(
        event.data,
        json!({"top_up_id": row.id, "note": "Ran out in week 3"})
    );

    // The timeline and the roster show it; `extra_credits` is EnrolmentOut's last key.
    let timeline = app
        .as_faculty()
        .get(&format!(
            "/courses/{}/enrolments/{}/timeline",
            course.course_id, s.enrolment_id
        ))
        .await
        .ok_body();
    assert_eq!(timeline["data"]["credits"]["topped_up"], json!(100.0));
    assert_eq!(timeline["data"]["credits"]["top_ups_in_doubt"], json!(0.0));
    assert_eq!(timeline["data"]["enrolment"]["extra_credits"], json!(100));
    let roster = app
        .as_faculty()
        .get_enrolments(course.course_id)
        .await
        .ok_body();
    let enrolment = &roster["enrolments"][0];
    let keys: Vec<&String> = enrolment.as_object().unwrap().keys().collect();
    assert_eq!(keys.last().map(|k| k.as_str()), Some("extra_credits"));
    assert_eq!(enrolment["extra_credits"], json!(100));

    // A second top-up adds up; metrics count both.
    let second = admin_top_up(&app, course.course_id, s.enrolment_id, 50).await;
    assert_eq!(second["extra_credits"], json!(150));
    assert_eq!(second["credits_granted_total"], json!(350));
    assert_eq!(app.accounting.balance(s.project_id), Some(dec("350")));
    let granted = metric_lines(&app, "vlab_top_ups_total{outcome=\"granted\"}").await;
    assert!(!granted.is_empty(), "no granted top-ups in /metrics");
    assert!(
        !metric_lines(&app, "vlab_top_up_credits_total")
            .await
            .is_empty()
    );
}

#[sqlx::test]
async fn top_up_with_accounting_error_is_502_failed_and_extra_credits_unchanged(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = course_with_students(&app, "Top-up 102", 1).await;
    let s = &students[0];
    app.accounting
        .inject(Fault::new("acc_grant", FaultAction::Status(500)));

    app.as_admin()
        .top_up(course.course_id, s.enrolment_id, &amount(100))
        .await
        .error_with(
            StatusCode::BAD_GATEWAY,
            "EXTERNAL_SERVICE_ERROR",
            &format!("Failed to add 100 credits to project {}", s.project_id),
        );
    let rows = top_ups(&app.db, s.enrolment_id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, "failed");
    assert!(rows[0].last_error.is_some() && rows[0].settled_at.is_some());
    assert!(rows[0].lease_id.is_none());
    assert_eq!(extra_credits(&app.db, s.enrolment_id).await, 0);
    assert_eq!(app.accounting.balance(s.project_id), Some(dec("200")));
    assert_eq!(
        top_up_event_types(&app.db, s.enrolment_id).await,
        ["top_up_failed"]
    );
    // Nothing is left in flight: the next top-up goes through.
    let data = admin_top_up(&app, course.course_id, s.enrolment_id, 100).await;
    assert_eq!(data["extra_credits"], json!(100));
}

#[sqlx::test]
async fn top_up_with_accounting_timeout_is_502_in_doubt_and_not_counted_in_the_threshold(
    db: PgPool,
) {
    let app = TestApp::spawn(db).await;
    let (course, students) = course_with_students(&app, "Top-up 103", 1).await;
    let s = &students[0];
    let grants_before = app.accounting.call_count("acc_grant");
    // The grant is applied, but the answer never comes (HTTP_TIMEOUT_SECONDS is 2).
    app.accounting.inject(Fault::new(
        "acc_grant",
        FaultAction::TimeoutAfter(Duration::from_secs(4)),
    ));

    app.as_admin()
        .top_up(course.course_id, s.enrolment_id, &amount(100))
        .await
        .error_with(
            StatusCode::BAD_GATEWAY,
            "EXTERNAL_SERVICE_ERROR",
            &format!(
                "Could not confirm that 100 credits were added to project {}; check the student's balance before trying again",
                s.project_id
            ),
        );
    // Not retried: one grant, which did land.
    assert_eq!(app.accounting.call_count("acc_grant"), grants_before + 1);
    assert_eq!(app.accounting.balance(s.project_id), Some(dec("300")));
    let rows = top_ups(&app.db, s.enrolment_id).await;
    assert_eq!(rows[0].state, "in_doubt");
    assert!(rows[0].lease_id.is_none() && rows[0].settled_at.is_none());
    assert_eq!(extra_credits(&app.db, s.enrolment_id).await, 0);
    let timeline = app
        .as_admin()
        .get(&format!(
            "/courses/{}/enrolments/{}/timeline",
            course.course_id, s.enrolment_id
        ))
        .await
        .ok_body();
    assert_eq!(timeline["data"]["credits"]["topped_up"], json!(0.0));
    assert_eq!(
        timeline["data"]["credits"]["top_ups_in_doubt"],
        json!(100.0)
    );

    // Settled exactly once: worker passes change nothing more.
    let services = app.services();
    vlab_courses::jobs::worker::run_pass(&services).await;
    vlab_courses::jobs::worker::run_pass(&services).await;
    assert_eq!(
        top_up_event_types(&app.db, s.enrolment_id).await,
        ["top_up_in_doubt"]
    );
    assert_eq!(top_ups(&app.db, s.enrolment_id).await[0].state, "in_doubt");

    // The threshold leaves the in-doubt credits out: 60 spent of 300 leaves 240 ≥ 150, so
    // the early drop recovers the seat (counting the 100 would consume it).
    app.accounting.spend(s.project_id, dec("60")).unwrap();
    let preview = app
        .as_faculty()
        .post(
            &format!("/seats/courses/{}/drop-preview", course.course_id),
            &json!({"seat_ids": [s.seat_id]}),
        )
        .await
        .ok_body();
    assert_eq!(preview["results"][0]["seat_recovered"], true, "{preview}");
    assert_eq!(preview["results"][0]["credits_granted"], json!(200.0));
    let drop = app
        .as_faculty()
        .post_drop(course.course_id, &[s.seat_id])
        .await
        .ok_body();
    assert_eq!(drop["results"][0]["seat_recovered"], true, "{drop}");
}

#[sqlx::test]
async fn top_up_of_a_waitlisted_student_succeeds(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let now = chrono::Utc::now();
    let course = fixtures::create_draft_course(
        &app,
        "Top-up 104",
        Some(now + chrono::TimeDelta::days(3)),
        Some(now + chrono::TimeDelta::days(10)),
        Some(now + chrono::TimeDelta::days(90)),
    )
    .await;
    fixtures::activate_course(&app, course.course_id).await;
    fixtures::make_lab_admin(&app, course.vlab_id, &app.users.faculty);
    fixtures::provision(&app, course.course_id, 1).await;
    let s = fixtures::assign(&app, course.course_id, 1).await.remove(0);
    app.as_user(&app.users.students[0])
        .claim(s.enrolment_id)
        .await
        .ok_body();
    let roster = app
        .as_faculty()
        .get_enrolments(course.course_id)
        .await
        .ok_body();
    assert_eq!(roster["enrolments"][0]["access_level"], "waitlisted");

    let data = admin_top_up(&app, course.course_id, s.enrolment_id, 100).await;
    assert_eq!(data["extra_credits"], json!(100));
    assert_eq!(app.accounting.balance(s.project_id), Some(dec("300")));
    let roster: Value = app
        .as_faculty()
        .get_enrolments(course.course_id)
        .await
        .ok_body();
    assert_eq!(roster["enrolments"][0]["extra_credits"], json!(100));
    assert_eq!(roster["enrolments"][0]["access_level"], "waitlisted");
}

#[sqlx::test]
async fn top_up_carries_an_idempotency_key(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = course_with_students(&app, "Top-up 105", 1).await;
    let s = &students[0];
    let first = admin_top_up(&app, course.course_id, s.enrolment_id, 10).await;
    let second = admin_top_up(&app, course.course_id, s.enrolment_id, 20).await;
    let keys: Vec<Option<String>> = app
        .accounting
        .calls()
        .into_iter()
        .filter(|c| c.operation == "acc_grant" && c.path.ends_with("/budget/grant"))
        .map(|c| c.idempotency_key)
        .collect();
    // The top-ups' grants are the last two, each keyed by its top-up id.
    let ids: Vec<Option<String>> = [&first, &second]
        .iter()
        .map(|d| d["top_up_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(keys[keys.len() - 2..], ids[..], "{keys:?}");
    assert_ne!(ids[0], ids[1]);
}

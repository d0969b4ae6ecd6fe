//! The claim keys of `GET /courses/{course_id}/enrolments`.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use reqwest::StatusCode;
use sqlx::PgPool;
use vlab_courses::usecases::email_outbox::run_pass;
use vlab_emulators::{Fault, FaultAction};

use super::instant;
use crate::fixtures;
use crate::helpers::{ReplyExt, TestApp, assert_keys, exec};

const ENROLMENT_KEYS: [&str; 16] = [
    "id",
    "course_id",
    "project_id",
    "contact_email",
    "student_id",
    "claimed_by",
    "activated_at",
    "is_dropped",
    "created_at",
    "seat",
    "drop_state",
    "access_level",
    "claimed_at",
    "claimed_by_email",
    "claim_email",
    "extra_credits",
];

const CLAIM_EMAIL_KEYS: [&str; 9] = [
    "status",
    "recipient",
    "origin",
    "attempts",
    "queued_at",
    "sent_at",
    "last_error",
    "emails_queued",
    "next_resend_allowed_at",
];

#[sqlx::test]
async fn enrolment_list_shows_claim_email_sent_after_assign(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, _) = fixtures::course_with_students(&app, "Neuro 101", 1).await;
    let body = app
        .as_faculty()
        .get_enrolments(course.course_id)
        .await
        .ok_body();
    let enrolment = &body["enrolments"][0];
    assert_keys(enrolment, &ENROLMENT_KEYS);
    assert_eq!(enrolment["claimed_at"], serde_json::Value::Null);
    assert_eq!(enrolment["claimed_by_email"], serde_json::Value::Null);
    let email = &enrolment["claim_email"];
    assert_keys(email, &CLAIM_EMAIL_KEYS);
    assert_eq!(email["status"], "sent", "{email}");
    assert_eq!(email["recipient"], "stu-1@uni.org");
    assert_eq!(email["origin"], "assign");
    assert_eq!(email["attempts"], 1);
    assert!(email["sent_at"].is_string());
    assert_eq!(email["last_error"], serde_json::Value::Null);
    assert_eq!(email["emails_queued"], 1);
    assert_eq!(
        instant(&email["next_resend_allowed_at"]),
        instant(&email["queued_at"]) + TimeDelta::minutes(10)
    );
}

#[sqlx::test]
async fn claim_records_claimed_at_and_the_claimers_token_email(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = fixtures::course_with_students(&app, "Neuro 101", 1).await;
    let before = Utc::now();
    let claimer = app.users.students[0].clone();
    app.as_user(&claimer)
        .claim(students[0].enrolment_id)
        .await
        .ok_body();
    let body = app
        .as_faculty()
        .get_enrolments(course.course_id)
        .await
        .ok_body();
    let enrolment = &body["enrolments"][0];
    assert_eq!(enrolment["contact_email"], "stu-1@uni.org");
    assert_eq!(enrolment["claimed_by_email"], claimer.email.as_str());
    assert_ne!(claimer.email, "stu-1@uni.org");
    let claimed_at = instant(&enrolment["claimed_at"]);
    assert!(claimed_at >= before - TimeDelta::milliseconds(1) && claimed_at <= Utc::now());
    // The claim does not cancel or change the claim e-mail.
    assert_eq!(enrolment["claim_email"]["status"], "sent");
}

#[sqlx::test]
async fn smtp_down_shows_pending_with_attempts_and_last_error_then_failed_after_12_attempts(
    db: PgPool,
) {
    let app = TestApp::spawn(db).await;
    let course = fixtures::course_with_faculty(&app, "Neuro 101").await;
    fixtures::provision(&app, course.course_id, 1).await;
    app.smtp
        .inject(Fault::new("smtp_send", FaultAction::Status(451)).times(12));
    let students = fixtures::assign(&app, course.course_id, 1).await;
    let enrolment_id = students[0].enrolment_id;

    let pending = roster(&app).await;
    assert_eq!(pending["status"], "pending");
    assert_eq!(pending["attempts"], 1);
    assert!(pending["last_error"].is_string(), "{pending}");
    assert_eq!(pending["sent_at"], serde_json::Value::Null);

    let services = app.services();
    for attempt in 2..=12 {
        exec(
            &app.db,
            "UPDATE email_outbox SET next_attempt_at = now() - interval '1 second'
             WHERE enrolment_id = $1",
            enrolment_id,
        )
        .await;
        run_pass(&services, Utc::now(), 50).await.unwrap();
        let seen = roster(&app).await;
        assert_eq!(seen["attempts"], attempt, "{seen}");
    }
    let failed = roster(&app).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["attempts"], 12);
    assert!(failed["last_error"].is_string());
    assert!(
        app.smtp
            .wait_for_messages(1, Duration::from_millis(200))
            .await
            .is_empty()
    );
}

/// The first enrolment's `claim_email` on the roster.
async fn roster(app: &TestApp) -> serde_json::Value {
    let course_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM course LIMIT 1")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let (status, body) = app.as_faculty().get_enrolments(course_id).await;
    assert_eq!(status, StatusCode::OK);
    body["enrolments"][0]["claim_email"].clone()
}

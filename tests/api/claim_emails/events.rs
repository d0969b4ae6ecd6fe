//! The audit events of resends: `email_queued` with its origin and the caller, in the
//! transaction that queues the row; `email_sent` of the first attempt; visible on the timeline.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;

use super::age_claims;
use crate::events::{EventRow, EventsApi, refuse_event, stored};
use crate::fixtures;
use crate::helpers::{ReplyExt, TestApp};

fn queued_since(events: &[EventRow], after: usize) -> Vec<&EventRow> {
    events[after..]
        .iter()
        .filter(|e| e.event_type == "email_queued")
        .collect()
}

#[sqlx::test]
async fn resend_writes_email_queued_event_with_origin_and_actor(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = fixtures::course_with_students(&app, "Neuro 101", 2).await;
    let stu = &students[0];
    age_claims(&app, stu.enrolment_id, 60).await;
    let before = stored(&app.db, course.course_id).await.len();
    app.as_faculty()
        .resend_claim_email(course.course_id, stu.enrolment_id)
        .await
        .ok_body();
    let events = stored(&app.db, course.course_id).await;
    let queued = queued_since(&events, before);
    assert_eq!(queued.len(), 1);
    let queued = queued[0];
    assert_eq!(queued.actor_role, "course_admin");
    assert_eq!(queued.actor_id, Some(app.users.faculty.id));
    assert_eq!(queued.enrolment_id, Some(stu.enrolment_id));
    assert_eq!(queued.data["origin"], "resend");
    assert_eq!(queued.data["kind"], "enrolment_claim");
    assert_eq!(queued.data["recipient"], "stu-1@uni.org");
    let sent: Vec<&EventRow> = events[before..]
        .iter()
        .filter(|e| e.event_type == "email_sent")
        .collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].data["outbox_id"], queued.data["outbox_id"]);
    assert_eq!(sent[0].actor_role, "course_admin");

    // The resend is on the enrolment's timeline.
    let timeline = app
        .as_faculty()
        .get_timeline(course.course_id, stu.enrolment_id, "")
        .await
        .ok_body();
    let origins: Vec<Value> = timeline["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "email_queued")
        .map(|e| e["data"]["origin"].clone())
        .collect();
    assert_eq!(origins, [json!("assign"), json!("resend")]);
    assert_eq!(
        timeline["data"]["enrolment"]["claim_email"]["origin"],
        "resend"
    );

    // A service admin is recorded as one; resend-all rows carry their own origin.
    age_claims(&app, stu.enrolment_id, 60).await;
    age_claims(&app, students[1].enrolment_id, 60).await;
    let before = events.len();
    let body = app
        .as_admin()
        .resend_claim_emails(course.course_id, None)
        .await
        .ok_body();
    assert_eq!(body["queued_count"], 2);
    let events = stored(&app.db, course.course_id).await;
    let queued = queued_since(&events, before);
    assert_eq!(queued.len(), 2);
    for e in queued {
        assert_eq!(e.actor_role, "service_admin");
        assert_eq!(e.actor_id, Some(app.users.admin.id));
        assert_eq!(e.data["origin"], "resend_all");
    }
    app.smtp.wait_for_messages(5, Duration::from_secs(10)).await;
}

#[sqlx::test]
async fn a_failed_event_insert_queues_no_resend(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = fixtures::course_with_students(&app, "Neuro 101", 1).await;
    let stu = &students[0];
    age_claims(&app, stu.enrolment_id, 60).await;
    refuse_event(&app.db, "email_queued").await;
    app.as_faculty()
        .resend_claim_email(course.course_id, stu.enrolment_id)
        .await
        .error_body(reqwest::StatusCode::INTERNAL_SERVER_ERROR, "DATABASE_ERROR");
    app.as_faculty()
        .resend_claim_emails(course.course_id, None)
        .await
        .error_body(reqwest::StatusCode::INTERNAL_SERVER_ERROR, "DATABASE_ERROR");
    assert_eq!(super::outbox_rows(&app, stu.enrolment_id).await.len(), 1);
}

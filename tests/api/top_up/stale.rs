//! Stale top-ups: a `granting` row whose lease lapsed (its process stopped after sending the
//! grant) becomes `in_doubt` through the worker, the expiry job, or the next top-up of the
//! student; and every top-up carries its id as the grant's idempotency key.

use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::{admin_top_up, extra_credits, top_up_event_types, top_up_events, top_ups};
use crate::expiry::run_job;
use crate::fixtures::{Assigned, course_with_students};
use crate::helpers::{ReplyExt, TestApp};

const UNKNOWN: &str = "The outcome of the grant is unknown";

/// The row a process leaves when it stops after sending the grant: `granting`, leased until
/// `lease` (an SQL interval from now, negative for a lapsed lease).
async fn granting_row(app: &TestApp, course_id: Uuid, s: &Assigned, lease: &str) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO credit_top_up (enrolment_id, course_id, project_id, amount, requested_by,
             requested_by_role, state, lease_id, lease_until, created_at, updated_at)
         VALUES ($1, $2, $3, 100, $4, 'service_admin', 'granting', gen_random_uuid(),
                 now() + $5::interval, now() - interval '10 minutes',
                 now() - interval '10 minutes')
         RETURNING id",
    )
    .bind(s.enrolment_id)
    .bind(course_id)
    .bind(s.project_id)
    .bind(app.users.admin.id)
    .bind(lease)
    .fetch_one(&app.db)
    .await
    .unwrap()
}

#[sqlx::test]
async fn stale_granting_top_up_becomes_in_doubt_after_the_lease(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = course_with_students(&app, "Stale 101", 2).await;
    let (lapsed, live) = (&students[0], &students[1]);
    let top_up = granting_row(&app, course.course_id, lapsed, "-1 second").await;
    granting_row(&app, course.course_id, live, "4 minutes").await;

    let services = app.services();
    vlab_courses::jobs::worker::run_pass(&services).await;
    let rows = top_ups(&app.db, lapsed.enrolment_id).await;
    assert_eq!(rows[0].id, top_up);
    assert_eq!(rows[0].state, "in_doubt");
    assert_eq!(rows[0].last_error.as_deref(), Some(UNKNOWN));
    assert!(rows[0].lease_id.is_none() && rows[0].lease_until.is_none());
    assert!(rows[0].settled_at.is_none());
    assert_eq!(extra_credits(&app.db, lapsed.enrolment_id).await, 0);
    let events = top_up_events(&app.db, lapsed.enrolment_id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "top_up_in_doubt");
    assert_eq!(events[0].actor_role, "system");
    assert_eq!(events[0].actor_id, None);
    assert_eq!(events[0].before_values, Some(json!({"extra_credits": 0})));
    assert_eq!(events[0].data, json!({"top_up_id": top_up, "note": null}));
    // A live lease is left alone.
    assert_eq!(
        top_ups(&app.db, live.enrolment_id).await[0].state,
        "granting"
    );
    assert!(
        top_up_event_types(&app.db, live.enrolment_id)
            .await
            .is_empty()
    );

    // Marked once: the next pass writes no second event.
    vlab_courses::jobs::worker::run_pass(&services).await;
    assert_eq!(top_up_events(&app.db, lapsed.enrolment_id).await.len(), 1);
    // It no longer blocks a top-up.
    let data = admin_top_up(&app, course.course_id, lapsed.enrolment_id, 50).await;
    assert_eq!(data["extra_credits"], json!(50));
}

#[sqlx::test]
async fn a_top_up_first_marks_its_students_lapsed_top_up_in_doubt(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = course_with_students(&app, "Stale 102", 1).await;
    let s = &students[0];
    let stale = granting_row(&app, course.course_id, s, "-1 second").await;
    let data = admin_top_up(&app, course.course_id, s.enrolment_id, 30).await;
    assert_eq!(data["extra_credits"], json!(30));
    let rows = top_ups(&app.db, s.enrolment_id).await;
    assert_eq!(rows[0].id, stale);
    assert_eq!(rows[0].state, "in_doubt");
    assert_eq!(rows[1].state, "granted");
    assert_eq!(
        top_up_event_types(&app.db, s.enrolment_id).await,
        ["top_up_in_doubt", "credits_topped_up"]
    );
}

#[sqlx::test]
async fn the_expiry_job_marks_stale_top_ups_and_reports_them(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = course_with_students(&app, "Stale 103", 2).await;
    for s in &students {
        granting_row(&app, course.course_id, s, "-1 minute").await;
    }
    let dry = run_job(&app, &["--dry-run"]).await;
    assert_eq!(dry.summary["top_ups_marked_in_doubt"], 0, "{}", dry.summary);
    let run = run_job(&app, &[]).await;
    assert_eq!(run.code, 0, "{}", run.summary);
    assert_eq!(run.summary["top_ups_marked_in_doubt"], 2, "{}", run.summary);
    for s in &students {
        assert_eq!(top_ups(&app.db, s.enrolment_id).await[0].state, "in_doubt");
        assert_eq!(
            top_up_event_types(&app.db, s.enrolment_id).await,
            ["top_up_in_doubt"]
        );
    }
    let again = run_job(&app, &[]).await;
    assert_eq!(again.summary["top_ups_marked_in_doubt"], 0);
}

#[sqlx::test]
async fn a_drop_is_stopped_by_a_live_top_up_only(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = course_with_students(&app, "Stale 104", 2).await;
    let (live, lapsed) = (&students[0], &students[1]);
    granting_row(&app, course.course_id, live, "4 minutes").await;
    granting_row(&app, course.course_id, lapsed, "-1 second").await;
    let preview = app
        .as_faculty()
        .post(
            &format!("/seats/courses/{}/drop-preview", course.course_id),
            &json!({"seat_ids": [live.seat_id, lapsed.seat_id]}),
        )
        .await
        .ok_body();
    let message = "A credit top-up for this student is in progress; retry the drop in a minute";
    assert_eq!(preview["results"][0]["can_drop"], false);
    assert_eq!(preview["results"][0]["error"], message);
    assert_eq!(preview["results"][1]["can_drop"], true);
    let drop = app
        .as_faculty()
        .post_drop(course.course_id, &[live.seat_id, lapsed.seat_id])
        .await
        .ok_body();
    assert_eq!(drop["results"][0]["error"], message, "{drop}");
    assert_eq!(drop["results"][1]["is_dropped"], true, "{drop}");
}

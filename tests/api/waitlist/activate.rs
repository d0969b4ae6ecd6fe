//! `POST /courses/{course_id}/enrolment/activate` and the deprecated plural (W.5.5, W.7 14–25).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;
use vlab_emulators::{Fault, FaultAction};

use super::{
    access, activation_in_flight, assert_the_drop_won, claim, future_course, member, member_paths,
    paths, start_course, started_course, waitlisted, waitlisted_paths,
};
use crate::fixtures::{ActiveCourse, Assigned};
use crate::helpers::{ReplyExt, TestApp, TestUser, exec};

const DROPPED: &str = "Cannot activate a dropped enrolment";
const GRANT_FAILED: &str = "Failed to grant access \u{2014} please try again later";

#[sqlx::test]
async fn activation_in_a_started_course_grants_member_access_once(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = started_course(&app, "Started 101", 1).await;
    let student = app.users.students[0].clone();
    claim(&app, &student, assigned[0].enrolment_id).await;
    let body = app
        .as_user(&student)
        .activate_enrolment(course.course_id)
        .await
        .ok_body();
    assert_eq!(
        body,
        json!({"enrolment_id": assigned[0].enrolment_id, "activated": true,
               "project_id": assigned[0].project_id, "error": null})
    );
    assert_eq!(paths(&app, &student), member_paths(&course, &assigned[0]));
    assert!(
        access(&app, assigned[0].enrolment_id)
            .await
            .activated_at
            .is_some()
    );

    // No admin call (the caller's groups are fetched again, as after any activation).
    let admin_calls = || {
        app.keycloak
            .calls()
            .iter()
            .filter(|c| c.operation.starts_with("kc_") && c.operation != "kc_userinfo")
            .count()
    };
    let calls = admin_calls();
    let again = app
        .as_user(&student)
        .activate_enrolment(course.course_id)
        .await
        .ok_body();
    assert_eq!(again, body);
    assert_eq!(admin_calls(), calls, "no Keycloak admin call");
}

#[sqlx::test]
async fn activation_after_the_start_moves_a_waitlisted_student_to_member(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = future_course(&app, "Waitlist 101", 1).await;
    let student = app.users.students[0].clone();
    claim(&app, &student, assigned[0].enrolment_id).await;
    app.as_user(&student)
        .activate_enrolment(course.course_id)
        .await
        .error_with(
            StatusCode::CONFLICT,
            "INVALID_REQUEST",
            "Course has not started yet",
        );
    start_course(&app, course.course_id).await;
    app.as_user(&student)
        .activate_enrolment(course.course_id)
        .await
        .ok_body();
    assert_eq!(paths(&app, &student), member_paths(&course, &assigned[0]));
    let row = access(&app, assigned[0].enrolment_id).await;
    assert_eq!(row.access_level, "member");
    assert!(row.activated_at.is_some());
}

#[sqlx::test]
async fn activation_refuses_unknown_malformed_and_anonymous_callers(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, _) = started_course(&app, "Started 101", 1).await;
    let none = "No enrolment found for this user in the course";
    let student = app.users.students[0].clone();
    app.as_user(&student)
        .activate_enrolment(course.course_id)
        .await
        .error_with(StatusCode::NOT_FOUND, "ENTITY_NOT_FOUND", none);
    app.as_user(&student)
        .activate_enrolment(Uuid::new_v4())
        .await
        .error_with(StatusCode::NOT_FOUND, "ENTITY_NOT_FOUND", none);
    let body = app
        .as_user(&student)
        .activate_enrolment("not-a-uuid")
        .await
        .invalid();
    assert_eq!(body["details"], json!({"course_id": "Must be a UUID"}));
    app.anonymous()
        .activate_enrolment("not-a-uuid")
        .await
        .unauthenticated();
}

#[sqlx::test]
async fn activation_refuses_dropped_enrolments_and_courses_that_do_not_run(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = started_course(&app, "Started 101", 1).await;
    let student = app.users.students[0].clone();
    claim(&app, &student, assigned[0].enrolment_id).await;
    let e = assigned[0].enrolment_id;
    let refuse = |message: &'static str| {
        let app = &app;
        let student = student.clone();
        async move {
            app.as_user(&student)
                .activate_enrolment(course.course_id)
                .await
                .error_with(StatusCode::CONFLICT, "INVALID_REQUEST", message);
        }
    };
    let set = |sql: &'static str| exec(&app.db, sql, course.course_id);

    set("UPDATE course SET start_date = now() + interval '99 years' WHERE id = $1").await;
    refuse("Course has not started yet").await;
    set("UPDATE course SET start_date = now() - interval '2 days', end_date = now() - interval '1 day' WHERE id = $1").await;
    refuse("Course has ended").await;
    set("UPDATE course SET status = 'voided', end_date = NULL WHERE id = $1").await;
    refuse("Course is in 'voided' status").await;
    set("UPDATE course SET status = 'active' WHERE id = $1").await;

    exec(
        &app.db,
        "INSERT INTO enrolment_drop (enrolment_id, course_id, project_id, reason, requested_at,
             is_early, state)
         SELECT id, course_id, project_id, 'faculty', now(), true, 'depleting'
         FROM course_enrolment WHERE id = $1",
        e,
    )
    .await;
    refuse(DROPPED).await;
    exec(
        &app.db,
        "DELETE FROM enrolment_drop WHERE enrolment_id = $1",
        e,
    )
    .await;
    exec(
        &app.db,
        "UPDATE course_enrolment SET is_dropped = true WHERE id = $1",
        e,
    )
    .await;
    refuse(DROPPED).await;
}

/// A student claimed before the start, the course started, and their activation failed with
/// the 502 of W.5.5 because Keycloak answered 500 to every `operation`.
async fn activation_failing_at(
    app: &TestApp,
    operation: &str,
) -> (ActiveCourse, Vec<Assigned>, TestUser) {
    let (course, assigned) = future_course(app, "Flaky 101", 1).await;
    let student = app.users.students[0].clone();
    claim(app, &student, assigned[0].enrolment_id).await;
    start_course(app, course.course_id).await;
    app.keycloak
        .inject(Fault::new(operation, FaultAction::Status(500)).times(100));
    app.as_user(&student)
        .activate_enrolment(course.course_id)
        .await
        .error_with(
            StatusCode::BAD_GATEWAY,
            "EXTERNAL_SERVICE_ERROR",
            GRANT_FAILED,
        );
    app.keycloak.clear_faults();
    (course, assigned, student)
}

#[sqlx::test]
async fn a_failed_member_addition_answers_502_and_a_retry_succeeds(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned, student) = activation_failing_at(&app, "kc_add_member").await;
    let row = access(&app, assigned[0].enrolment_id).await;
    assert_eq!(
        (row.access_level.as_str(), row.activated_at),
        ("waitlisted", None)
    );
    assert_eq!(row.access_lease_id, None);

    app.as_user(&student)
        .activate_enrolment(course.course_id)
        .await
        .ok_body();
    assert_eq!(paths(&app, &student), member_paths(&course, &assigned[0]));
}

#[sqlx::test]
async fn a_failed_waitlist_removal_keeps_member_access_and_a_retry_completes_it(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned, student) = activation_failing_at(&app, "kc_remove_member").await;
    // No undo: member access stays, next to the waitlist membership still to remove.
    let held = paths(&app, &student);
    assert!(held.contains(&member(&course, &assigned[0])), "{held:?}");
    assert!(held.contains(&super::lab_member(&course)), "{held:?}");
    assert!(
        held.contains(&waitlisted(&course, &assigned[0])),
        "{held:?}"
    );
    let row = access(&app, assigned[0].enrolment_id).await;
    assert_eq!(
        (row.access_level.as_str(), row.activated_at),
        ("waitlisted", None)
    );

    app.as_user(&student)
        .activate_enrolment(course.course_id)
        .await
        .ok_body();
    assert_eq!(paths(&app, &student), member_paths(&course, &assigned[0]));
    assert!(
        access(&app, assigned[0].enrolment_id)
            .await
            .activated_at
            .is_some()
    );
}

#[sqlx::test]
async fn the_live_enrolment_is_activated_next_to_a_dropped_one(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = started_course(&app, "Twice 101", 2).await;
    let student = app.users.students[0].clone();
    claim(&app, &student, assigned[0].enrolment_id).await;
    app.as_faculty()
        .post_drop(course.course_id, &[assigned[0].seat_id])
        .await
        .ok_body();
    claim(&app, &student, assigned[1].enrolment_id).await;
    let body = app
        .as_user(&student)
        .activate_enrolment(course.course_id)
        .await
        .ok_body();
    assert_eq!(body["enrolment_id"], assigned[1].enrolment_id.to_string());
    assert_eq!(body["project_id"], assigned[1].project_id.to_string());
}

#[sqlx::test]
async fn a_busy_access_lease_answers_409_after_five_seconds_then_the_call_succeeds(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = started_course(&app, "Busy 101", 1).await;
    let student = app.users.students[0].clone();
    claim(&app, &student, assigned[0].enrolment_id).await;
    // A stalled worker sync holds the lease.
    exec(
        &app.db,
        "UPDATE course_enrolment SET access_lease_id = gen_random_uuid(),
             access_lease_until = now() + interval '5 minutes'
         WHERE id = $1",
        assigned[0].enrolment_id,
    )
    .await;
    let started = Instant::now();
    app.as_user(&student)
        .activate_enrolment(course.course_id)
        .await
        .error_with(
            StatusCode::CONFLICT,
            "INVALID_REQUEST",
            "Access for this enrolment is being updated; please try again shortly",
        );
    assert!(
        started.elapsed() >= Duration::from_millis(4500),
        "{:?}",
        started.elapsed()
    );
    // The plural reports it per item.
    let plural = app.as_user(&student).activate_enrolments().await.ok_body();
    assert_eq!(plural["results"][0]["error"], GRANT_FAILED);

    exec(
        &app.db,
        "UPDATE course_enrolment SET access_lease_id = NULL, access_lease_until = NULL
         WHERE id = $1",
        assigned[0].enrolment_id,
    )
    .await;
    app.as_user(&student)
        .activate_enrolment(course.course_id)
        .await
        .ok_body();
}

#[sqlx::test]
async fn a_drop_that_wins_during_activation_answers_409_and_removes_the_access(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned, stall, pending) = activation_in_flight(&app, "Race 101").await;
    app.as_faculty()
        .post_drop(course.course_id, &[assigned.seat_id])
        .await
        .ok_body();
    let reply = pending.await.unwrap();
    drop(stall);
    reply.error_with(StatusCode::CONFLICT, "INVALID_REQUEST", DROPPED);
    assert_the_drop_won(&app, &app.users.students[0], assigned.enrolment_id).await;
}

#[sqlx::test]
async fn the_deprecated_plural_also_moves_a_waitlisted_student_out_of_the_waitlist(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = future_course(&app, "Plural 101", 1).await;
    let student = app.users.students[0].clone();
    claim(&app, &student, assigned[0].enrolment_id).await;
    assert_eq!(
        paths(&app, &student),
        waitlisted_paths(&course, &assigned[0])
    );
    let body = app.as_user(&student).activate_enrolments().await.ok_body();
    assert_eq!(body["results"][0]["error"], "Course has not started yet");
    start_course(&app, course.course_id).await;
    let body = app.as_user(&student).activate_enrolments().await.ok_body();
    assert_eq!(
        body,
        json!({"results": [{"enrolment_id": assigned[0].enrolment_id, "activated": true,
                            "project_id": assigned[0].project_id, "error": null}]})
    );
    assert_eq!(paths(&app, &student), member_paths(&course, &assigned[0]));
}

//! What a top-up refuses before any grant: the tier and path checks of §1.1/§1.2, the body,
//! and checks 1–3 of §6.2.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;
use vlab_emulators::{Fault, FaultAction};

use super::{amount, top_ups};
use crate::fixtures::course_with_students;
use crate::helpers::{ReplyExt, TestApp, exec};

/// Asserts a 409 `INVALID_REQUEST` with `message`, and that no grant was sent.
async fn refused(app: &TestApp, course_id: Uuid, enrolment_id: Uuid, message: &str) {
    let grants = app.accounting.call_count("acc_grant");
    app.as_admin()
        .top_up(course_id, enrolment_id, &amount(100))
        .await
        .error_with(StatusCode::CONFLICT, "INVALID_REQUEST", message);
    assert_eq!(app.accounting.call_count("acc_grant"), grants, "{message}");
}

#[sqlx::test]
async fn top_up_of_dropped_or_dropping_enrolment_is_409(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = course_with_students(&app, "Checks 101", 2).await;
    let dropped = &students[0];
    app.as_faculty()
        .post_drop(course.course_id, &[dropped.seat_id])
        .await
        .ok_body();
    refused(
        &app,
        course.course_id,
        dropped.enrolment_id,
        "This enrolment has been dropped",
    )
    .await;
    // A drop that started and failed in its deplete: the enrolment is not dropped yet, but
    // its drop row exists.
    let dropping = &students[1];
    app.accounting
        .inject(Fault::new("acc_deplete_project", FaultAction::Status(500)));
    let drop = app
        .as_faculty()
        .post_drop(course.course_id, &[dropping.seat_id])
        .await
        .ok_body();
    assert!(drop["results"][0]["error"].is_string(), "{drop}");
    refused(
        &app,
        course.course_id,
        dropping.enrolment_id,
        "This enrolment has been dropped",
    )
    .await;
    assert!(top_ups(&app.db, dropping.enrolment_id).await.is_empty());
}

#[sqlx::test]
async fn top_up_of_voided_course_is_409(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = course_with_students(&app, "Checks 102", 2).await;
    // A void drops every student, so check 1 answers first.
    app.as_admin().void_course(course.course_id).await.ok_body();
    refused(
        &app,
        course.course_id,
        students[0].enrolment_id,
        "This enrolment has been dropped",
    )
    .await;
    // The status check alone, on an enrolment no drop reached.
    let (other, others) = course_with_students(&app, "Checks 103", 1).await;
    exec(
        &app.db,
        "UPDATE course SET status = 'voided' WHERE id = $1",
        other.course_id,
    )
    .await;
    refused(
        &app,
        other.course_id,
        others[0].enrolment_id,
        "Cannot top up: course is in 'voided' status",
    )
    .await;
}

#[sqlx::test]
async fn top_up_after_course_end_is_409(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = course_with_students(&app, "Checks 104", 1).await;
    exec(
        &app.db,
        "UPDATE course SET end_date = now() - interval '1 minute' WHERE id = $1",
        course.course_id,
    )
    .await;
    refused(
        &app,
        course.course_id,
        students[0].enrolment_id,
        "Cannot top up: the student's access has ended",
    )
    .await;
}

#[sqlx::test]
async fn top_up_amount_0_10001_or_1_5_is_422(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = course_with_students(&app, "Checks 105", 1).await;
    let e = students[0].enrolment_id;
    let long_note = "n".repeat(501);
    let cases: [(Value, &str, &str); 7] = [
        (
            json!({"amount": 0}),
            "amount",
            "Must be between 1 and 10000",
        ),
        (
            json!({"amount": 10_001}),
            "amount",
            "Must be between 1 and 10000",
        ),
        (json!({"amount": 1.5}), "amount", "Must be an integer"),
        (json!({"amount": "ten"}), "amount", "Must be an integer"),
        (json!({}), "amount", "Field required"),
        (json!({"amount": null}), "amount", "Must not be null"),
        (
            json!({"amount": 1, "note": long_note}),
            "note",
            "Must be at most 500 characters",
        ),
    ];
    for (body, field, message) in cases {
        let err = app
            .as_admin()
            .top_up(course.course_id, e, &body)
            .await
            .invalid();
        assert_eq!(err["details"][field], message, "{body}");
    }
    assert!(top_ups(&app.db, e).await.is_empty());
    // A note of spaces is no note; 10 000 and 1.0 are accepted.
    app.as_admin()
        .top_up(course.course_id, e, &json!({"amount": 1.0, "note": "   "}))
        .await
        .ok_body();
    app.as_admin()
        .top_up(course.course_id, e, &json!({"amount": 10_000}))
        .await
        .ok_body();
    let rows = top_ups(&app.db, e).await;
    assert_eq!(rows[0].note, None);
    assert_eq!(
        rows.iter().map(|r| r.amount).collect::<Vec<_>>(),
        [1, 10_000]
    );
}

#[sqlx::test]
async fn top_up_path_checks_follow_the_support_tier(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = course_with_students(&app, "Checks 106", 1).await;
    let (_, others) = course_with_students(&app, "Checks 107", 1).await;
    let e = students[0].enrolment_id;

    // Not a course admin of this course: 403, whatever the ids.
    app.as_user(&app.users.students[0])
        .top_up(course.course_id, e, &amount(1))
        .await
        .not_allowed();
    app.anonymous()
        .top_up(course.course_id, e, &amount(1))
        .await
        .unauthenticated();
    // Malformed ids: 422 after the tier step.
    let err = app
        .as_faculty()
        .top_up(course.course_id, "nope", &amount(1))
        .await
        .invalid();
    assert_eq!(err["details"]["enrolment_id"], "Must be a UUID");
    let err = app.as_admin().top_up("nope", e, &amount(1)).await.invalid();
    assert_eq!(err["details"]["course_id"], "Must be a UUID");
    // Unknown course (service admin), unknown enrolment, another course's enrolment: 404.
    let missing = Uuid::new_v4();
    app.as_admin()
        .top_up(missing, e, &amount(1))
        .await
        .error_with(
            StatusCode::NOT_FOUND,
            "ENTITY_NOT_FOUND",
            &format!("Course {missing} not found"),
        );
    for enrolment in [missing, others[0].enrolment_id] {
        app.as_admin()
            .top_up(course.course_id, enrolment, &amount(1))
            .await
            .error_with(
                StatusCode::NOT_FOUND,
                "ENTITY_NOT_FOUND",
                &format!(
                    "Enrolment {enrolment} not found in course {}",
                    course.course_id
                ),
            );
    }
    assert!(top_ups(&app.db, others[0].enrolment_id).await.is_empty());
}

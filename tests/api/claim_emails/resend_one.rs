//! `POST /seats/courses/{course_id}/enrolments/{enrolment_id}/resend-claim-email`.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;
use vlab_courses::repo;
use vlab_courses::usecases::email_outbox::run_pass;
use vlab_emulators::{Fault, FaultAction};

use super::{age_claims, claim_link_of, instant, mark_dropped, outbox_rows};
use crate::fixtures::{self, ActiveCourse, Assigned};
use crate::helpers::{ReplyExt, TestApp, exec, json};

const LIMIT: StatusCode = StatusCode::TOO_MANY_REQUESTS;

async fn one_student(app: &TestApp) -> (ActiveCourse, Assigned) {
    let (course, mut students) = fixtures::course_with_students(app, "Neuro 101", 1).await;
    (course, students.remove(0))
}

#[sqlx::test]
async fn resend_sends_the_same_link_again_and_cancels_the_pending_copy(db: PgPool) {
    let app = TestApp::spawn(db).await;
    // After a sent claim e-mail: a second message with the identical link; the first stays sent.
    let (course, student) = one_student(&app).await;
    app.smtp.wait_for_messages(1, Duration::from_secs(5)).await;
    age_claims(&app, student.enrolment_id, 11).await;
    let body = app
        .as_faculty()
        .resend_claim_email(course.course_id, student.enrolment_id)
        .await
        .ok_body();
    assert_eq!(body["message"], "Claim e-mail queued");
    let data = &body["data"];
    assert_eq!(data["enrolment_id"], student.enrolment_id.to_string());
    assert_eq!(data["recipient"], "stu-1@uni.org");
    assert_eq!(data["email_sent"], true);
    let email = &data["claim_email"];
    assert_eq!(email["status"], "sent");
    assert_eq!(email["origin"], "resend");
    assert_eq!(email["attempts"], 1);
    assert_eq!(email["emails_queued"], 2);
    assert_eq!(
        instant(&email["next_resend_allowed_at"]),
        instant(&email["queued_at"]) + TimeDelta::minutes(10)
    );
    let messages = app.smtp.wait_for_messages(2, Duration::from_secs(5)).await;
    assert_eq!(messages.len(), 2);
    let link = |i: usize| {
        messages[i]
            .links
            .iter()
            .find(|l| l.contains("enrolment_id="))
            .cloned()
            .unwrap()
    };
    assert_eq!(link(0), link(1));
    assert!(link(1).ends_with(&format!("enrolment_id={}", student.enrolment_id)));
    let rows = outbox_rows(&app, student.enrolment_id).await;
    assert_eq!(
        rows.iter()
            .map(|r| (r.status.as_str(), r.origin.as_str()))
            .collect::<Vec<_>>(),
        [("sent", "assign"), ("sent", "resend")]
    );
    assert_eq!(rows[1].requested_by, Some(app.users.faculty.id));
    assert_eq!(rows[1].course_id, Some(course.course_id));
    assert_eq!(rows[1].lease_id, None);

    // When the older copy is still pending (SMTP was down at assign), it is cancelled and only
    // the new one is sent, also by later passes.
    let course = fixtures::course_with_faculty(&app, "Neuro 102").await;
    fixtures::provision(&app, course.course_id, 1).await;
    app.smtp
        .inject(Fault::new("smtp_send", FaultAction::Status(451)).times(1));
    let student = fixtures::assign(&app, course.course_id, 1).await.remove(0);
    age_claims(&app, student.enrolment_id, 11).await;
    let body = app
        .as_faculty()
        .resend_claim_email(course.course_id, student.enrolment_id)
        .await
        .ok_body();
    assert_eq!(body["data"]["email_sent"], true);
    let rows = outbox_rows(&app, student.enrolment_id).await;
    assert_eq!(
        rows.iter().map(|r| r.status.as_str()).collect::<Vec<_>>(),
        ["cancelled", "sent"]
    );
    run_pass(&app.services(), Utc::now() + TimeDelta::days(2), 50)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(app.smtp.messages().len(), 3);
    assert_eq!(
        outbox_rows(&app, student.enrolment_id).await[0].status,
        "cancelled"
    );
}

#[sqlx::test]
async fn a_resend_racing_the_workers_retry_never_sends_two_different_links(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let course = fixtures::course_with_faculty(&app, "Neuro 101").await;
    fixtures::provision(&app, course.course_id, 1).await;
    app.smtp
        .inject(Fault::new("smtp_send", FaultAction::Status(451)).times(1));
    let student = fixtures::assign(&app, course.course_id, 1).await.remove(0);
    age_claims(&app, student.enrolment_id, 11).await;
    // A worker holds the pending copy, mid-send.
    let worker_lease = Uuid::new_v4();
    sqlx::query(
        "UPDATE email_outbox SET lease_id = $2, lease_until = now() + interval '2 minutes'
         WHERE enrolment_id = $1",
    )
    .bind(student.enrolment_id)
    .bind(worker_lease)
    .execute(&app.db)
    .await
    .unwrap();
    let old = outbox_rows(&app, student.enrolment_id).await.remove(0);

    app.as_faculty()
        .resend_claim_email(course.course_id, student.enrolment_id)
        .await
        .ok_body();
    // The worker's send completes: its final update finds the row no longer pending.
    let recorded = repo::email_outbox::mark_sent(&app.db, old.id, worker_lease, Utc::now(), None)
        .await
        .unwrap();
    assert!(!recorded);
    let rows = outbox_rows(&app, student.enrolment_id).await;
    assert_eq!(rows[0].status, "cancelled");
    assert_eq!(rows[1].status, "sent");
    assert_eq!(
        claim_link_of(&rows[0].payload),
        claim_link_of(&rows[1].payload)
    );
}

#[sqlx::test]
async fn resend_within_10_minutes_is_429_with_retry_after_and_next_allowed_at(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, student) = one_student(&app).await;
    age_claims(&app, student.enrolment_id, 4).await;
    let queued_at = outbox_rows(&app, student.enrolment_id).await[0].created_at;
    let response = app
        .as_faculty()
        .resend_claim_email_response(course.course_id, student.enrolment_id)
        .await;
    let retry_after: i64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let (status, body) = json(response).await;
    let body = (status, body).error_body(LIMIT, "LIMIT_EXCEEDED");
    let next = queued_at + TimeDelta::minutes(10);
    let printed = vlab_courses::domain::datetime::format(&next);
    assert_eq!(
        body["message"],
        format!(
            "A claim e-mail to this student was queued less than 10 minutes ago. Try again after {printed}."
        )
    );
    assert_eq!(
        body["data"]["enrolment_id"],
        student.enrolment_id.to_string()
    );
    assert_eq!(body["data"]["next_allowed_at"], printed.as_str());
    assert_eq!(
        body["details"],
        format!(
            "enrolment_id={}, next_allowed_at={printed}",
            student.enrolment_id
        )
    );
    // Six minutes left, rounded up.
    assert!((355..=361).contains(&retry_after), "{retry_after}");
    assert_eq!(outbox_rows(&app, student.enrolment_id).await.len(), 1);
}

#[sqlx::test]
async fn resend_after_the_interval_succeeds(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, student) = one_student(&app).await;
    age_claims(&app, student.enrolment_id, 10).await;
    app.as_faculty()
        .resend_claim_email(course.course_id, student.enrolment_id)
        .await
        .ok_body();
    assert_eq!(outbox_rows(&app, student.enrolment_id).await.len(), 2);
}

#[sqlx::test]
async fn sixth_claim_email_within_24_hours_is_429_daily_limit(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, student) = one_student(&app).await;
    for _ in 0..4 {
        age_claims(&app, student.enrolment_id, 60).await;
        app.as_faculty()
            .resend_claim_email(course.course_id, student.enrolment_id)
            .await
            .ok_body();
    }
    age_claims(&app, student.enrolment_id, 60).await;
    let rows = outbox_rows(&app, student.enrolment_id).await;
    assert_eq!(rows.len(), 5);
    let response = app
        .as_faculty()
        .resend_claim_email_response(course.course_id, student.enrolment_id)
        .await;
    let retry_after: i64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = json(response).await.error_body(LIMIT, "LIMIT_EXCEEDED");
    let next = rows[0].created_at + TimeDelta::hours(24);
    let printed = vlab_courses::domain::datetime::format(&next);
    assert_eq!(
        body["message"],
        format!(
            "This student has been sent 5 claim e-mails in the last 24 hours. Try again after {printed}."
        )
    );
    assert_eq!(body["data"]["next_allowed_at"], printed.as_str());
    let expected = (next - Utc::now()).num_seconds();
    assert!(
        (expected - 2..=expected + 2).contains(&retry_after),
        "{retry_after} vs {expected}"
    );
    let roster = app
        .as_faculty()
        .get_enrolments(course.course_id)
        .await
        .ok_body();
    assert_eq!(
        roster["enrolments"][0]["claim_email"]["next_resend_allowed_at"],
        printed.as_str()
    );
}

#[sqlx::test]
async fn resend_of_claimed_dropped_or_dropping_enrolment_is_409(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = fixtures::course_with_students(&app, "Neuro 101", 3).await;
    let faculty = app.as_faculty();
    // Claimed (the course has started: a member; a waitlisted claimant is refused alike).
    app.as_user(&app.users.students[0])
        .claim(students[0].enrolment_id)
        .await
        .ok_body();
    faculty
        .resend_claim_email(course.course_id, students[0].enrolment_id)
        .await
        .error_with(
            StatusCode::CONFLICT,
            "INVALID_REQUEST",
            "This enrolment has already been claimed",
        );
    mark_dropped(&app, students[1].enrolment_id).await;
    // Dropping: a drop row exists, `is_dropped` is not yet set.
    sqlx::query(
        "INSERT INTO enrolment_drop (enrolment_id, course_id, project_id, reason, requested_at,
             is_early, state)
         VALUES ($1, $2, $3, 'faculty', now(), true, 'depleting')",
    )
    .bind(students[2].enrolment_id)
    .bind(course.course_id)
    .bind(students[2].project_id)
    .execute(&app.db)
    .await
    .unwrap();
    for s in &students[1..] {
        faculty
            .resend_claim_email(course.course_id, s.enrolment_id)
            .await
            .error_with(
                StatusCode::CONFLICT,
                "INVALID_REQUEST",
                "This enrolment has been dropped",
            );
    }
}

#[sqlx::test]
async fn resend_of_a_waitlisted_claimant_is_409(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let now = Utc::now();
    let course = fixtures::create_draft_course(
        &app,
        "Later 101",
        Some(now + TimeDelta::days(3)),
        Some(now + TimeDelta::days(7)),
        Some(now + TimeDelta::days(90)),
    )
    .await;
    fixtures::activate_course(&app, course.course_id).await;
    fixtures::make_lab_admin(&app, course.vlab_id, &app.users.faculty);
    fixtures::provision(&app, course.course_id, 1).await;
    let student = fixtures::assign(&app, course.course_id, 1).await.remove(0);
    app.as_user(&app.users.students[0])
        .claim(student.enrolment_id)
        .await
        .ok_body();
    app.as_faculty()
        .resend_claim_email(course.course_id, student.enrolment_id)
        .await
        .error_with(
            StatusCode::CONFLICT,
            "INVALID_REQUEST",
            "This enrolment has already been claimed",
        );
}

#[sqlx::test]
async fn resend_in_voided_course_or_after_course_end_is_409(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, student) = one_student(&app).await;
    age_claims(&app, student.enrolment_id, 60).await;
    exec(
        &app.db,
        "UPDATE course SET end_date = now() - interval '1 minute',
             last_drop_date = now() - interval '2 minutes' WHERE id = $1",
        course.course_id,
    )
    .await;
    app.as_faculty()
        .resend_claim_email(course.course_id, student.enrolment_id)
        .await
        .error_with(
            StatusCode::CONFLICT,
            "INVALID_REQUEST",
            "Cannot resend the claim e-mail: the student's access has ended",
        );
    exec(
        &app.db,
        "UPDATE course SET status = 'voided' WHERE id = $1",
        course.course_id,
    )
    .await;
    app.as_faculty()
        .resend_claim_email(course.course_id, student.enrolment_id)
        .await
        .error_with(
            StatusCode::CONFLICT,
            "INVALID_REQUEST",
            "Cannot resend the claim e-mail: course is in 'voided' status",
        );
    assert_eq!(outbox_rows(&app, student.enrolment_id).await.len(), 1);
}

#[sqlx::test]
async fn resend_by_service_admin_succeeds_other_lab_admin_and_student_are_403(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, student) = one_student(&app).await;
    age_claims(&app, student.enrolment_id, 60).await;
    let other = fixtures::create_course_lab(&app, "Other lab").await;
    let outsider = app.users.students[1].clone();
    fixtures::make_lab_admin(&app, other.vlab_id, &outsider);
    for caller in [app.as_user(&outsider), app.as_user(&app.users.students[0])] {
        caller
            .resend_claim_email(course.course_id, student.enrolment_id)
            .await
            .not_allowed();
    }
    let body = app
        .as_admin()
        .resend_claim_email(course.course_id, student.enrolment_id)
        .await
        .ok_body();
    assert_eq!(body["data"]["email_sent"], true);
    let rows = outbox_rows(&app, student.enrolment_id).await;
    assert_eq!(rows[1].requested_by, Some(app.users.admin.id));
}

#[sqlx::test]
async fn resend_unknown_or_other_course_enrolment_is_404_and_malformed_ids_are_422(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, _) = one_student(&app).await;
    let (other, other_students) = fixtures::course_with_students(&app, "Neuro 102", 1).await;
    let faculty = app.as_faculty();
    for id in [Uuid::new_v4(), other_students[0].enrolment_id] {
        faculty
            .resend_claim_email(course.course_id, id)
            .await
            .error_with(
                StatusCode::NOT_FOUND,
                "ENTITY_NOT_FOUND",
                &format!("Enrolment {id} not found in course {}", course.course_id),
            );
    }
    let body = faculty
        .resend_claim_email(course.course_id, "not-a-uuid")
        .await
        .invalid();
    assert_eq!(body["details"]["enrolment_id"], "Must be a UUID");
    // A course admin with a malformed course id fails the tier; a service admin gets the 422.
    faculty
        .resend_claim_email("nope", Uuid::new_v4())
        .await
        .not_allowed();
    let body = app
        .as_admin()
        .resend_claim_email("nope", Uuid::new_v4())
        .await
        .invalid();
    assert_eq!(body["details"]["course_id"], "Must be a UUID");
    let missing = Uuid::new_v4();
    app.as_admin()
        .resend_claim_email(missing, other_students[0].enrolment_id)
        .await
        .error_with(
            StatusCode::NOT_FOUND,
            "ENTITY_NOT_FOUND",
            &format!("Course {missing} not found"),
        );
    let _ = other;
}

#[sqlx::test]
async fn two_concurrent_resends_queue_exactly_one_email(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, student) = one_student(&app).await;
    age_claims(&app, student.enrolment_id, 60).await;
    let (faculty, admin) = (app.as_faculty(), app.as_admin());
    let (a, b) = tokio::join!(
        faculty.resend_claim_email(course.course_id, student.enrolment_id),
        admin.resend_claim_email(course.course_id, student.enrolment_id),
    );
    let (_, lost) = crate::helpers::one_wins(&a, &b, LIMIT);
    assert_eq!(lost.1["error_code"], "LIMIT_EXCEEDED");
    let resent: Vec<_> = outbox_rows(&app, student.enrolment_id)
        .await
        .into_iter()
        .filter(|r| r.origin == "resend")
        .collect();
    assert_eq!(resent.len(), 1);
}

#[sqlx::test]
async fn resend_with_smtp_failure_answers_200_email_sent_false_and_is_retried(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, student) = one_student(&app).await;
    app.smtp.wait_for_messages(1, Duration::from_secs(5)).await;
    age_claims(&app, student.enrolment_id, 60).await;
    app.smtp
        .inject(Fault::new("smtp_send", FaultAction::Status(451)).times(1));
    let body = app
        .as_faculty()
        .resend_claim_email(course.course_id, student.enrolment_id)
        .await
        .ok_body();
    assert_eq!(body["data"]["email_sent"], false);
    let email: &Value = &body["data"]["claim_email"];
    assert_eq!(email["status"], "pending");
    assert_eq!(email["attempts"], 1);
    assert!(email["last_error"].is_string());
    let summary = run_pass(&app.services(), Utc::now() + TimeDelta::minutes(3), 50)
        .await
        .unwrap();
    assert_eq!(summary.sent, 1);
    assert_eq!(
        app.smtp
            .wait_for_messages(2, Duration::from_secs(5))
            .await
            .len(),
        2
    );
    let rows = outbox_rows(&app, student.enrolment_id).await;
    assert_eq!((rows[1].status.as_str(), rows[1].attempts), ("sent", 2));
}

//! `POST /seats/courses/{course_id}/enrolments/{enrolment_id}/correct-email` (§3.2.1, §3.4.1).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use super::{assert_replaced, emailed_secret};
use crate::claim_emails::{age_claims, mark_dropped, outbox_rows};
use crate::fixtures::{self, ActiveCourse, Assigned};
use crate::helpers::{Caller, Reply, ReplyExt, TestApp, exec, fetch_scalar};

async fn one_student(app: &TestApp) -> (ActiveCourse, Assigned) {
    let (course, mut students) = fixtures::course_with_students(app, "Neuro 101", 1).await;
    (course, students.remove(0))
}

async fn correct(caller: &Caller<'_>, course: Uuid, enrolment: Uuid, email: &str) -> Reply {
    caller
        .post(
            &format!("/seats/courses/{course}/enrolments/{enrolment}/correct-email"),
            &json!({ "email": email }),
        )
        .await
}

fn recipients(app: &TestApp) -> Vec<String> {
    app.smtp
        .messages()
        .into_iter()
        .flat_map(|m| m.rcpt_to)
        .collect()
}

#[sqlx::test]
async fn correct_email_rotates_the_link(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, student) = one_student(&app).await;
    app.smtp.wait_for_messages(1, Duration::from_secs(5)).await;
    let old = emailed_secret(&app, "stu-1@uni.org", 0).await;
    assert_eq!(old, student.enrolment_id);

    let body = correct(
        &app.as_faculty(),
        course.course_id,
        student.enrolment_id,
        " ada@uni.org ",
    )
    .await
    .ok_body();
    assert_eq!(body["message"], "Enrolment e-mail corrected");
    let data = &body["data"];
    assert_eq!(data["previous_email"], "stu-1@uni.org");
    assert_eq!(data["email_sent"], true);
    let enrolment = &data["enrolment"];
    assert_eq!(enrolment["id"], student.enrolment_id.to_string());
    assert_eq!(enrolment["contact_email"], "ada@uni.org");
    assert_eq!(enrolment["claimed_by"], Value::Null);
    assert_eq!(enrolment["claim_email"]["origin"], "email_corrected");
    assert_eq!(enrolment["claim_email"]["status"], "sent");
    assert_eq!(enrolment["claim_email"]["recipient"], "ada@uni.org");
    assert_eq!(enrolment["claim_email"]["emails_queued"], 2);

    // Exactly one e-mail to the new address, none more to the old one; a new secret.
    let messages = app.smtp.wait_for_messages(2, Duration::from_secs(5)).await;
    assert_eq!(messages.len(), 2);
    assert_eq!(recipients(&app), ["stu-1@uni.org", "ada@uni.org"]);
    let new = emailed_secret(&app, "ada@uni.org", 0).await;
    assert_ne!(new, old);
    assert!(!body.to_string().contains(&new.to_string()));

    assert_replaced(&app, old).await;
    let claimed = app
        .as_user(&app.users.students[0])
        .claim(new)
        .await
        .ok_body();
    assert_eq!(claimed["data"]["id"], student.enrolment_id.to_string());

    #[derive(sqlx::FromRow)]
    struct Revocation {
        enrolment_id: Uuid,
        reason: String,
        revoked_by: Option<Uuid>,
    }
    let revoked: Revocation = crate::helpers::fetch_row(
        &app.db,
        "SELECT enrolment_id, reason, revoked_by FROM claim_token_revocation WHERE token = $1",
        old,
    )
    .await;
    assert_eq!(revoked.enrolment_id, student.enrolment_id);
    assert_eq!(revoked.reason, "email_corrected");
    assert_eq!(revoked.revoked_by, Some(app.users.faculty.id));

    // The audit timeline records the change with its before and after values.
    #[derive(sqlx::FromRow)]
    struct Event {
        actor_role: String,
        actor_id: Option<Uuid>,
        before_values: Option<Value>,
        after_values: Option<Value>,
        data: Value,
    }
    let event: Event = crate::helpers::fetch_row(
        &app.db,
        "SELECT actor_role, actor_id, before_values, after_values, data FROM course_event
         WHERE enrolment_id = $1 AND event_type = 'enrolment_email_corrected'",
        student.enrolment_id,
    )
    .await;
    assert_eq!(event.actor_role, "course_admin");
    assert_eq!(event.actor_id, Some(app.users.faculty.id));
    assert_eq!(
        event.before_values,
        Some(json!({"contact_email": "stu-1@uni.org"}))
    );
    assert_eq!(
        event.after_values,
        Some(json!({"contact_email": "ada@uni.org"}))
    );
    assert_eq!(event.data, json!({"link_rotated": true}));
    let timeline = app
        .as_admin()
        .get(&format!(
            "/courses/{}/enrolments/{}/timeline",
            course.course_id, student.enrolment_id
        ))
        .await
        .ok_body();
    let types: Vec<&str> = timeline["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event_type"].as_str())
        .collect();
    assert!(types.contains(&"enrolment_email_corrected"), "{types:?}");
    assert!(!timeline.to_string().contains(&new.to_string()));
}

#[sqlx::test]
async fn correct_email_on_a_round1_row_revokes_the_enrolment_id(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, student) = one_student(&app).await;
    // A row as round 1 left it: no token.
    exec(
        &app.db,
        "UPDATE course_enrolment SET claim_token = NULL WHERE id = $1",
        student.enrolment_id,
    )
    .await;
    correct(
        &app.as_admin(),
        course.course_id,
        student.enrolment_id,
        "ada@uni.org",
    )
    .await
    .ok_body();
    assert_replaced(&app, student.enrolment_id).await;
    let token: Option<Uuid> = fetch_scalar(
        &app.db,
        "SELECT claim_token FROM course_enrolment WHERE id = $1",
        student.enrolment_id,
    )
    .await;
    assert_eq!(token, Some(emailed_secret(&app, "ada@uni.org", 0).await));
}

#[sqlx::test]
async fn correct_email_to_an_address_used_by_another_enrolment_is_409(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = fixtures::course_with_students(&app, "Neuro 101", 3).await;
    let faculty = app.as_faculty();
    let target = students[0].enrolment_id;
    let in_use = |email: &str| {
        let email = email.to_owned();
        move |reply: Reply| {
            let body = reply.error_with(
                StatusCode::CONFLICT,
                "ENTITY_ALREADY_EXISTS",
                &format!("Another enrolment of this course already uses {email}"),
            );
            assert_eq!(body["data"]["email"], email.as_str());
        }
    };
    // Case-insensitive.
    in_use("STU-2@uni.org")(correct(&faculty, course.course_id, target, "STU-2@uni.org").await);
    // A dropped enrolment keeps its address.
    mark_dropped(&app, students[2].enrolment_id).await;
    in_use("stu-3@uni.org")(correct(&faculty, course.course_id, target, "stu-3@uni.org").await);
    // A live reservation of a seat of the course.
    let seat = fixtures::provision(&app, course.course_id, 1).await[0];
    sqlx::query(
        "UPDATE seat SET reservation_id = gen_random_uuid(), reserved_until = now() + interval '10 minutes',
             reserved_student_id = 'stu-9', reserved_email = 'Res@Uni.org' WHERE id = $1",
    )
    .bind(seat)
    .execute(&app.db)
    .await
    .unwrap();
    in_use("res@uni.org")(correct(&faculty, course.course_id, target, "res@uni.org").await);
    // Once the reservation lapsed, the address is free.
    exec(
        &app.db,
        "UPDATE seat SET reserved_until = now() - interval '1 minute' WHERE id = $1",
        seat,
    )
    .await;
    correct(&faculty, course.course_id, target, "res@uni.org")
        .await
        .ok_body();
}

#[sqlx::test]
async fn correct_email_to_the_same_address_reissues_the_link(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, student) = one_student(&app).await;
    app.smtp.wait_for_messages(1, Duration::from_secs(5)).await;
    let body = correct(
        &app.as_faculty(),
        course.course_id,
        student.enrolment_id,
        "STU-1@uni.org",
    )
    .await
    .ok_body();
    assert_eq!(body["data"]["previous_email"], "stu-1@uni.org");
    assert_eq!(body["data"]["enrolment"]["contact_email"], "STU-1@uni.org");
    app.smtp.wait_for_messages(2, Duration::from_secs(5)).await;
    let new = emailed_secret(&app, "STU-1@uni.org", 0).await;
    assert_ne!(new, student.enrolment_id);
    assert_replaced(&app, student.enrolment_id).await;
    app.as_user(&app.users.students[0])
        .claim(new)
        .await
        .ok_body();
}

#[sqlx::test]
async fn correct_email_refusals_are_409(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = fixtures::course_with_students(&app, "Neuro 101", 3).await;
    let faculty = app.as_faculty();
    let conflict = |reply: Reply, message: &str| {
        reply.error_with(StatusCode::CONFLICT, "INVALID_REQUEST", message);
    };
    // Claimed (also while waitlisted or not yet activated).
    app.as_user(&app.users.students[0])
        .claim(students[0].enrolment_id)
        .await
        .ok_body();
    conflict(
        correct(
            &faculty,
            course.course_id,
            students[0].enrolment_id,
            "x@uni.org",
        )
        .await,
        "Cannot correct the e-mail of a claimed enrolment. Unclaim it first.",
    );
    // Dropped, or a drop has started.
    mark_dropped(&app, students[1].enrolment_id).await;
    conflict(
        correct(
            &faculty,
            course.course_id,
            students[1].enrolment_id,
            "x@uni.org",
        )
        .await,
        "This enrolment has been dropped",
    );
    // The access has ended.
    exec(
        &app.db,
        "UPDATE course SET end_date = now() - interval '1 minute' WHERE id = $1",
        course.course_id,
    )
    .await;
    conflict(
        correct(
            &faculty,
            course.course_id,
            students[2].enrolment_id,
            "x@uni.org",
        )
        .await,
        "Cannot correct the e-mail: the student's access has ended",
    );
    // A voided course.
    exec(
        &app.db,
        "UPDATE course SET status = 'voided' WHERE id = $1",
        course.course_id,
    )
    .await;
    conflict(
        correct(
            &faculty,
            course.course_id,
            students[2].enrolment_id,
            "x@uni.org",
        )
        .await,
        "Cannot correct the e-mail: course is in 'voided' status",
    );
    // Nothing changed.
    let rows = outbox_rows(&app, students[2].enrolment_id).await;
    assert_eq!(rows.len(), 1);
}

#[sqlx::test]
async fn correct_email_beyond_the_daily_cap_is_429(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, student) = one_student(&app).await;
    let faculty = app.as_faculty();
    // Four more corrections reach the cap of five e-mails; the interval does not apply.
    for i in 0..4 {
        correct(
            &faculty,
            course.course_id,
            student.enrolment_id,
            &format!("a{i}@uni.org"),
        )
        .await
        .ok_body();
    }
    age_claims(&app, student.enrolment_id, 1).await;
    let oldest = outbox_rows(&app, student.enrolment_id).await[0].created_at;
    let reply = correct(
        &faculty,
        course.course_id,
        student.enrolment_id,
        "z@uni.org",
    )
    .await;
    let body = reply.error_with(
        StatusCode::TOO_MANY_REQUESTS,
        "LIMIT_EXCEEDED",
        &format!(
            "This student has been sent 5 claim e-mails in the last 24 hours. Try again after {}.",
            vlab_courses::domain::datetime::format(&(oldest + chrono::TimeDelta::hours(24)))
        ),
    );
    assert_eq!(
        body["data"]["enrolment_id"],
        student.enrolment_id.to_string()
    );
    assert_eq!(outbox_rows(&app, student.enrolment_id).await.len(), 5);
}

#[sqlx::test]
async fn correct_email_makes_no_keycloak_call(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, student) = one_student(&app).await;
    let faculty = app.as_faculty();
    // The caller's groups are read (and cached) by a first request.
    faculty.get_enrolments(course.course_id).await.ok_body();
    let calls = app.keycloak.calls().len();
    correct(
        &faculty,
        course.course_id,
        student.enrolment_id,
        "ada@uni.org",
    )
    .await
    .ok_body();
    assert_eq!(
        app.keycloak.calls().len(),
        calls,
        "{:?}",
        app.keycloak.calls()
    );
}

#[sqlx::test]
async fn correct_email_tiers_and_path_checks(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, student) = one_student(&app).await;
    // A student may not; a service admin may; unknown and foreign enrolments are 404.
    correct(
        &app.as_user(&app.users.students[0]),
        course.course_id,
        student.enrolment_id,
        "a@uni.org",
    )
    .await
    .not_allowed();
    let other = Uuid::new_v4();
    correct(&app.as_faculty(), course.course_id, other, "a@uni.org")
        .await
        .error_with(
            StatusCode::NOT_FOUND,
            "ENTITY_NOT_FOUND",
            &format!("Enrolment {other} not found in course {}", course.course_id),
        );
    correct(
        &app.as_admin(),
        Uuid::nil(),
        student.enrolment_id,
        "a@uni.org",
    )
    .await
    .error_with(
        StatusCode::NOT_FOUND,
        "ENTITY_NOT_FOUND",
        &format!("Course {} not found", Uuid::nil()),
    );
    correct(
        &app.as_faculty(),
        course.course_id,
        student.enrolment_id,
        "nope",
    )
    .await
    .invalid();
    let body = correct(
        &app.as_admin(),
        course.course_id,
        student.enrolment_id,
        "a@uni.org",
    )
    .await
    .ok_body();
    assert_eq!(body["data"]["enrolment"]["contact_email"], "a@uni.org");
}

/// §3.7 8: a correction and an assign of the same address, on two servers at once, with
/// Keycloak slowed so that the assign's window is wide: exactly one of them wins, and one
/// enrolment of the course holds the address.
#[sqlx::test]
async fn correct_email_racing_assign_of_the_same_address_enrols_it_once(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let other = app.spawn_process().await;
    let (course, student) = one_student(&app).await;
    fixtures::provision(&app, course.course_id, 1).await;
    let address = "contested@uni.org";
    let token = app.faculty_token();
    let correction = app
        .client
        .post(format!(
            "{}/seats/courses/{}/enrolments/{}/correct-email",
            app.address, course.course_id, student.enrolment_id
        ))
        .bearer_auth(&token)
        .json(&json!({ "email": address }));
    let assign = app
        .client
        .post(format!(
            "{}/seats/courses/{}/assign",
            other.base_url, course.course_id
        ))
        .bearer_auth(&token)
        .json(&fixtures::students_body(&[("stu-9", address)]));
    app.keycloak.set_latency(Duration::from_millis(20));
    let (corrected, assigned) = tokio::join!(
        async { crate::helpers::json(correction.send().await.unwrap()).await },
        async { crate::helpers::json(assign.send().await.unwrap()).await },
    );
    app.keycloak.set_latency(Duration::ZERO);

    let correction_won = corrected.0 == StatusCode::OK;
    if !correction_won {
        assert_eq!(corrected.0, StatusCode::CONFLICT, "{}", corrected.1);
    }
    let assign_won =
        assigned.0 == StatusCode::OK && assigned.1["results"][0]["assignment_successful"] == true;
    assert!(
        correction_won != assign_won,
        "exactly one wins: {corrected:?} {assigned:?}"
    );
    let holders: i64 = fetch_scalar(
        &app.db,
        "SELECT count(*) FROM course_enrolment WHERE course_id = $1 AND lower(contact_email) = 'contested@uni.org'",
        course.course_id,
    )
    .await;
    assert_eq!(holders, 1);
    let original: String = fetch_scalar(
        &app.db,
        "SELECT contact_email FROM course_enrolment WHERE id = $1",
        student.enrolment_id,
    )
    .await;
    let expected = if correction_won {
        address
    } else {
        student.email.as_str()
    };
    assert_eq!(original, expected);
}

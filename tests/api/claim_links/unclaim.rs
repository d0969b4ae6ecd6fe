//! `POST /seats/courses/{course_id}/enrolments/{enrolment_id}/unclaim` (§3.2.2, §3.4.2, §3.5).

use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;
use vlab_courses::usecases::revocations::revocation_pass;
use vlab_emulators::{Fault, FaultAction};

use super::{assert_replaced, emailed_secret};
use crate::fixtures::{self, ActiveCourse, Assigned};
use crate::helpers::{Caller, Reply, ReplyExt, TestApp, exec, fetch_row};
use crate::waitlist::{activation_in_flight, lab_member, member_paths, paths, waitlisted_paths};

async fn unclaim(caller: &Caller<'_>, course: Uuid, enrolment: Uuid, body: Option<Value>) -> Reply {
    let path = format!("/seats/courses/{course}/enrolments/{enrolment}/unclaim");
    match body {
        Some(body) => caller.post(&path, &body).await,
        None => caller.post_empty(&path).await,
    }
}

#[derive(Debug, sqlx::FromRow)]
struct Revocation {
    user_id: Uuid,
    state: String,
    attempts: i32,
    requested_by: Option<Uuid>,
    lease_id: Option<Uuid>,
}

async fn revocation(app: &TestApp, enrolment: Uuid) -> Revocation {
    fetch_row(
        &app.db,
        "SELECT user_id, state, attempts, requested_by, lease_id FROM access_revocation
         WHERE enrolment_id = $1",
        enrolment,
    )
    .await
}

#[derive(Debug, sqlx::FromRow)]
struct Claim {
    claimed_by: Option<Uuid>,
    claimed_at: Option<chrono::DateTime<Utc>>,
    activated_at: Option<chrono::DateTime<Utc>>,
    access_level: String,
}

async fn claim_row(app: &TestApp, enrolment: Uuid) -> Claim {
    fetch_row(
        &app.db,
        "SELECT claimed_by, claimed_at, activated_at, access_level FROM course_enrolment
         WHERE id = $1",
        enrolment,
    )
    .await
}

/// A started course whose first student's enrolment was claimed and activated by the wrong
/// account (`students[0]`).
async fn wrongly_claimed(app: &TestApp, n: usize) -> (ActiveCourse, Vec<Assigned>) {
    let (course, students) = fixtures::course_with_students(app, "Neuro 101", n).await;
    fixtures::claim_and_activate(app, students[0].enrolment_id, &app.users.students[0]).await;
    (course, students)
}

#[sqlx::test]
async fn unclaim_removes_the_wrong_accounts_access(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = wrongly_claimed(&app, 1).await;
    let wrong = app.users.students[0].clone();
    let enrolment = students[0].enrolment_id;
    assert_eq!(paths(&app, &wrong), member_paths(&course, &students[0]));

    let body = unclaim(
        &app.as_faculty(),
        course.course_id,
        enrolment,
        Some(json!({"reason": "  Claimed with a shared account "})),
    )
    .await
    .ok_body();
    assert_eq!(body["message"], "Enrolment unclaimed");
    let data = &body["data"];
    assert_eq!(data["previous_claimed_by"], wrong.id.to_string());
    assert_eq!(data["previous_claimed_by_email"], wrong.email.as_str());
    assert_eq!(data["access_removed"], true);
    assert_eq!(data["email_queued"], true);
    assert_eq!(data["email_sent"], true);
    assert_eq!(data["email_error"], Value::Null);
    let out = &data["enrolment"];
    assert_eq!(out["claimed_by"], Value::Null);
    assert_eq!(out["claimed_at"], Value::Null);
    assert_eq!(out["activated_at"], Value::Null);
    assert_eq!(out["access_level"], "none");
    assert_eq!(out["claim_email"]["origin"], "unclaimed");

    assert!(paths(&app, &wrong).is_empty(), "{:?}", paths(&app, &wrong));
    let row = claim_row(&app, enrolment).await;
    assert_eq!(
        (
            row.claimed_by,
            row.claimed_at,
            row.activated_at,
            row.access_level.as_str()
        ),
        (None, None, None, "none")
    );
    let revoked = revocation(&app, enrolment).await;
    assert_eq!(
        (
            revoked.user_id,
            revoked.state.as_str(),
            revoked.attempts,
            revoked.lease_id
        ),
        (wrong.id, "done", 1, None)
    );
    assert_eq!(revoked.requested_by, Some(app.users.faculty.id));

    // The new link goes to the contact address; the old one is replaced.
    app.smtp.wait_for_messages(2, Duration::from_secs(5)).await;
    let new = emailed_secret(&app, "stu-1@uni.org", 1).await;
    assert_ne!(new, enrolment);
    assert_replaced(&app, enrolment).await;

    // The audit timeline: who unclaimed, why, and the removal.
    #[derive(sqlx::FromRow)]
    struct Event {
        actor_role: String,
        before_values: Option<Value>,
        after_values: Option<Value>,
        data: Value,
    }
    let event: Event = fetch_row(
        &app.db,
        "SELECT actor_role, before_values, after_values, data FROM course_event
         WHERE enrolment_id = $1 AND event_type = 'enrolment_unclaimed'",
        enrolment,
    )
    .await;
    assert_eq!(event.actor_role, "course_admin");
    let before = event.before_values.unwrap();
    assert_eq!(before["claimed_by"], wrong.id.to_string());
    assert_eq!(before["claimed_by_email"], wrong.email.as_str());
    assert_eq!(before["access_level"], "member");
    assert!(before["activated_at"].is_string());
    assert_eq!(event.after_values.unwrap()["access_level"], "none");
    assert_eq!(
        event.data,
        json!({"reason": "Claimed with a shared account", "link_rotated": true, "email_changed": false})
    );
    let revoked: Value = fetch_row::<(Value,), _>(
        &app.db,
        "SELECT data FROM course_event WHERE enrolment_id = $1 AND event_type = 'access_revoked'",
        enrolment,
    )
    .await
    .0;
    assert_eq!(
        revoked,
        json!({"user_id": wrong.id, "lab_membership_removed": true})
    );

    // The rightful student claims with the new link and gets access.
    let right = app.users.students[1].clone();
    let claimed = app.as_user(&right).claim(new).await.ok_body();
    assert_eq!(claimed["data"]["id"], enrolment.to_string());
    app.as_user(&right)
        .activate_enrolment(course.course_id)
        .await
        .ok_body();
    assert_eq!(paths(&app, &right), member_paths(&course, &students[0]));
}

#[sqlx::test]
async fn unclaim_with_keycloak_down_answers_access_removed_false_and_the_worker_completes_it(
    db: PgPool,
) {
    let app = TestApp::spawn(db).await;
    let (course, students) = wrongly_claimed(&app, 2).await;
    let wrong = app.users.students[0].clone();
    let enrolment = students[0].enrolment_id;
    app.keycloak
        .inject(Fault::new("kc_remove_member", FaultAction::Status(500)).times(1));
    let body = unclaim(&app.as_admin(), course.course_id, enrolment, None)
        .await
        .ok_body();
    assert_eq!(body["data"]["access_removed"], false);
    let pending = revocation(&app, enrolment).await;
    assert_eq!((pending.state.as_str(), pending.attempts), ("pending", 1));
    assert!(!paths(&app, &wrong).is_empty());

    // Check 3a: the previous claimer cannot claim in the course meanwhile, whichever enrolment.
    let held_off = "Access from an earlier claim in this course is still being removed. Try again in a few minutes.";
    app.as_user(&wrong)
        .claim(students[1].enrolment_id)
        .await
        .error_with(StatusCode::CONFLICT, "INVALID_REQUEST", held_off);

    // The worker completes it once it is due.
    exec(
        &app.db,
        "UPDATE access_revocation SET next_attempt_at = now() - interval '1 second'
         WHERE enrolment_id = $1",
        enrolment,
    )
    .await;
    let sweep = revocation_pass(&app.services(), Utc::now(), 50)
        .await
        .unwrap();
    assert_eq!(
        (sweep.completed, sweep.failed, sweep.still_pending),
        (1, 0, 0)
    );
    assert_eq!(revocation(&app, enrolment).await.state, "done");
    assert!(paths(&app, &wrong).is_empty(), "{:?}", paths(&app, &wrong));
    let actor: String = crate::helpers::fetch_scalar(
        &app.db,
        "SELECT actor_role FROM course_event WHERE enrolment_id = $1 AND event_type = 'access_revoked'",
        enrolment,
    )
    .await;
    assert_eq!(actor, "system");

    // Once it is done, the account may claim its own enrolment.
    app.as_user(&wrong)
        .claim(students[1].enrolment_id)
        .await
        .ok_body();
}

#[sqlx::test]
async fn activation_racing_unclaim_leaves_no_membership(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned, stall, pending) = activation_in_flight(&app, "Neuro 101").await;
    let wrong = app.users.students[0].clone();
    let body = unclaim(
        &app.as_faculty(),
        course.course_id,
        assigned.enrolment_id,
        Some(json!({"send_claim_email": false})),
    )
    .await
    .ok_body();
    assert_eq!(body["data"]["email_queued"], false);
    let (status, answer) = pending.await.unwrap();
    drop(stall);
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(
        answer["message"],
        "No enrolment found for this user in the course"
    );
    // The sync re-opened the removal, which ran again after its additions.
    let revoked = revocation(&app, assigned.enrolment_id).await;
    assert_eq!((revoked.state.as_str(), revoked.attempts), ("done", 2));
    assert!(paths(&app, &wrong).is_empty(), "{:?}", paths(&app, &wrong));
    assert!(
        !app.keycloak
            .user_group_paths(wrong.id)
            .contains(&lab_member(&course))
    );
}

/// Also §3.7 22 before the start: the rightful student who claims after the unclaim is
/// waitlisted, and the worker promotes them at the start.
#[sqlx::test]
async fn unclaim_of_a_waitlisted_claim_removes_the_waitlisted_and_lab_memberships(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = crate::waitlist::future_course(&app, "Neuro 101", 1).await;
    let wrong = app.users.students[0].clone();
    crate::waitlist::claim(&app, &wrong, students[0].enrolment_id).await;
    assert_eq!(paths(&app, &wrong), waitlisted_paths(&course, &students[0]));
    let body = unclaim(
        &app.as_faculty(),
        course.course_id,
        students[0].enrolment_id,
        None,
    )
    .await
    .ok_body();
    assert_eq!(body["data"]["access_removed"], true);
    assert!(paths(&app, &wrong).is_empty(), "{:?}", paths(&app, &wrong));

    // The new link (the second e-mail to the contact address) claims for the rightful student.
    let right = app.users.students[1].clone();
    let new = emailed_secret(&app, &students[0].email, 1).await;
    app.as_user(&right).claim(new).await.ok_body();
    assert_eq!(paths(&app, &right), waitlisted_paths(&course, &students[0]));
    assert_eq!(
        claim_row(&app, students[0].enrolment_id).await.access_level,
        "waitlisted"
    );
    crate::waitlist::start_course(&app, course.course_id).await;
    assert_eq!(crate::waitlist::pass(&app).await.applied, 1);
    assert_eq!(paths(&app, &right), member_paths(&course, &students[0]));
    assert!(paths(&app, &wrong).is_empty(), "{:?}", paths(&app, &wrong));
}

#[sqlx::test]
async fn unclaim_refusals_tiers_and_email_options(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = wrongly_claimed(&app, 3).await;
    let faculty = app.as_faculty();
    // A student may not.
    unclaim(
        &app.as_user(&app.users.students[0]),
        course.course_id,
        students[0].enrolment_id,
        None,
    )
    .await
    .not_allowed();
    // Not claimed, and dropped.
    unclaim(&faculty, course.course_id, students[1].enrolment_id, None)
        .await
        .error_with(
            StatusCode::CONFLICT,
            "INVALID_REQUEST",
            "This enrolment has not been claimed",
        );
    // An address in use, case-insensitively.
    unclaim(
        &faculty,
        course.course_id,
        students[0].enrolment_id,
        Some(json!({"email": "STU-2@uni.org"})),
    )
    .await
    .error_with(
        StatusCode::CONFLICT,
        "ENTITY_ALREADY_EXISTS",
        "Another enrolment of this course already uses STU-2@uni.org",
    );
    // With a new address: the e-mail goes there; without a claim e-mail nothing is sent.
    let body = unclaim(
        &faculty,
        course.course_id,
        students[0].enrolment_id,
        Some(json!({"email": "ada@uni.org"})),
    )
    .await
    .ok_body();
    assert_eq!(body["data"]["enrolment"]["contact_email"], "ada@uni.org");
    assert_eq!(body["data"]["email_sent"], true);
    emailed_secret(&app, "ada@uni.org", 0).await;
    unclaim(&faculty, course.course_id, students[0].enrolment_id, None)
        .await
        .error_with(
            StatusCode::CONFLICT,
            "INVALID_REQUEST",
            "This enrolment has not been claimed",
        );
    fixtures::claim_and_activate(&app, students[2].enrolment_id, &app.users.students[1]).await;
    let sent = app.smtp.messages().len();
    // After the access has ended: the unclaim succeeds without an e-mail.
    exec(
        &app.db,
        "UPDATE course SET end_date = now() - interval '1 minute' WHERE id = $1",
        course.course_id,
    )
    .await;
    let body = unclaim(
        &app.as_admin(),
        course.course_id,
        students[2].enrolment_id,
        Some(json!({"send_claim_email": true})),
    )
    .await
    .ok_body();
    assert_eq!(body["data"]["email_queued"], false);
    assert_eq!(
        body["data"]["email_error"],
        "The student's access has ended"
    );
    assert_eq!(app.smtp.messages().len(), sent);
    let role: String = crate::helpers::fetch_scalar(
        &app.db,
        "SELECT actor_role FROM course_event WHERE enrolment_id = $1 AND event_type = 'enrolment_unclaimed'",
        students[2].enrolment_id,
    )
    .await;
    assert_eq!(role, "service_admin");
}

#[sqlx::test]
async fn delete_with_a_pending_revocation_is_502_and_a_retry_succeeds(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = wrongly_claimed(&app, 1).await;
    let enrolment = students[0].enrolment_id;
    app.keycloak
        .inject(Fault::new("kc_remove_member", FaultAction::Status(500)).times(1));
    let body = unclaim(&app.as_faculty(), course.course_id, enrolment, None)
        .await
        .ok_body();
    assert_eq!(body["data"]["access_removed"], false);
    // Another worker holds the revocation: void and delete leave it alone.
    exec(
        &app.db,
        "UPDATE access_revocation SET lease_id = gen_random_uuid(),
             lease_until = now() + interval '1 hour' WHERE enrolment_id = $1",
        enrolment,
    )
    .await;
    let admin = app.as_admin();
    admin.void_course(course.course_id).await.ok_body();
    admin.delete_course(course.course_id).await.error_with(
        StatusCode::BAD_GATEWAY,
        "EXTERNAL_SERVICE_ERROR",
        &format!(
            "Failed to remove access for 1 unclaimed enrolment(s) of course {}; the course was voided but not deleted. Retry the delete.",
            course.course_id
        ),
    );
    // Once the lease lapsed, the retry removes the access and deletes the course.
    exec(
        &app.db,
        "UPDATE access_revocation SET lease_until = now() - interval '1 second'
         WHERE enrolment_id = $1",
        enrolment,
    )
    .await;
    admin.delete_course(course.course_id).await.ok_body();
    assert!(paths(&app, &app.users.students[0]).is_empty());
}

#[sqlx::test]
async fn unclaim_then_drop_before_revocation_removes_everyone(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = wrongly_claimed(&app, 1).await;
    let enrolment = students[0].enrolment_id;
    app.keycloak
        .inject(Fault::new("kc_remove_member", FaultAction::Status(500)).times(1));
    unclaim(&app.as_faculty(), course.course_id, enrolment, None)
        .await
        .ok_body();
    // The drop empties the project groups; the revocation still owns the lab membership.
    app.as_faculty()
        .post_drop(course.course_id, &[students[0].seat_id])
        .await
        .ok_body();
    assert_eq!(
        paths(&app, &app.users.students[0]),
        vec![lab_member(&course)]
    );
    exec(
        &app.db,
        "UPDATE access_revocation SET next_attempt_at = now() - interval '1 second'
         WHERE enrolment_id = $1",
        enrolment,
    )
    .await;
    revocation_pass(&app.services(), Utc::now(), 50)
        .await
        .unwrap();
    assert!(paths(&app, &app.users.students[0]).is_empty());
    assert_eq!(revocation(&app, enrolment).await.state, "done");
}

#[sqlx::test]
async fn promotion_racing_unclaim_leaves_the_previous_account_without_access(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = crate::waitlist::future_course(&app, "Neuro 101", 1).await;
    let wrong = app.users.students[0].clone();
    let enrolment = students[0].enrolment_id;
    crate::waitlist::claim(&app, &wrong, enrolment).await;
    crate::waitlist::start_course(&app, course.course_id).await;
    // The worker's promotion reaches Keycloak and stalls there; the unclaim commits meanwhile.
    let stall = crate::waitlist::StalledAdds::start(&app, Duration::from_millis(1500));
    let services = app.services();
    let promotion = tokio::spawn(async move {
        vlab_courses::usecases::access::access_pass(&services, Utc::now(), 50).await
    });
    stall.in_flight().await;
    unclaim(&app.as_faculty(), course.course_id, enrolment, None)
        .await
        .ok_body();
    let pass = promotion.await.unwrap().unwrap();
    drop(stall);
    assert_eq!((pass.leased, pass.applied), (1, 0));
    let revoked = revocation(&app, enrolment).await;
    assert_eq!((revoked.state.as_str(), revoked.attempts), ("done", 2));
    assert!(paths(&app, &wrong).is_empty(), "{:?}", paths(&app, &wrong));
    assert_eq!(claim_row(&app, enrolment).await.access_level, "none");
    // The sync that lost to the unclaim is counted as such (the recorder is per process).
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("vlab_enrolment_access_total")
                && l.contains("outcome=\"unclaimed\"")),
        "no unclaimed access sync in /metrics"
    );
}

#[sqlx::test]
async fn plural_activation_racing_unclaim_reports_no_longer_claimed(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = crate::waitlist::future_course(&app, "Neuro 101", 1).await;
    let wrong = app.users.students[0].clone();
    let enrolment = students[0].enrolment_id;
    crate::waitlist::claim(&app, &wrong, enrolment).await;
    crate::waitlist::start_course(&app, course.course_id).await;
    let token = app.student_token(0);
    app.get(&format!("/virtual-labs/{}", course.vlab_id), Some(&token))
        .await;
    let stall = crate::waitlist::StalledAdds::start(&app, Duration::from_millis(1500));
    let pending =
        crate::waitlist::post_in_background(&app, "/courses/activate-enrolments", token, None);
    stall.in_flight().await;
    unclaim(&app.as_faculty(), course.course_id, enrolment, None)
        .await
        .ok_body();
    let (status, body) = pending.await.unwrap();
    drop(stall);
    assert_eq!(status, StatusCode::OK, "{body}");
    let item = &body["results"][0];
    assert_eq!(item["enrolment_id"], enrolment.to_string());
    assert_eq!(item["activated"], false);
    assert_eq!(item["error"], "This enrolment is no longer claimed by you");
    assert!(paths(&app, &wrong).is_empty(), "{:?}", paths(&app, &wrong));
    assert_eq!(revocation(&app, enrolment).await.state, "done");
}

#[sqlx::test]
async fn revocation_keeps_the_lab_membership_of_a_user_who_claimed_again_in_the_course(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = wrongly_claimed(&app, 2).await;
    let user = app.users.students[0].clone();
    unclaim(
        &app.as_faculty(),
        course.course_id,
        students[0].enrolment_id,
        None,
    )
    .await
    .ok_body();
    // After R is done, the account claims its own enrolment.
    fixtures::claim_and_activate(&app, students[1].enrolment_id, &user).await;
    assert_eq!(paths(&app, &user), member_paths(&course, &students[1]));
    // A re-opened row (as an access sync that lost to the unclaim leaves it).
    exec(
        &app.db,
        "UPDATE access_revocation SET state = 'pending', done_at = NULL WHERE enrolment_id = $1",
        students[0].enrolment_id,
    )
    .await;
    let sweep = revocation_pass(&app.services(), Utc::now(), 50)
        .await
        .unwrap();
    assert_eq!(sweep.completed, 1);
    assert_eq!(paths(&app, &user), member_paths(&course, &students[1]));
    let data: Value = fetch_row::<(Value,), _>(
        &app.db,
        "SELECT data FROM course_event WHERE enrolment_id = $1 AND event_type = 'access_revoked'
         ORDER BY id DESC LIMIT 1",
        students[0].enrolment_id,
    )
    .await
    .0;
    assert_eq!(data["lab_membership_removed"], false);
}

#[sqlx::test]
async fn unclaim_at_daily_cap_succeeds_without_email(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = fixtures::course_with_students(&app, "Neuro 101", 1).await;
    let enrolment = students[0].enrolment_id;
    let faculty = app.as_faculty();
    // Four corrections after the assign e-mail reach the cap of five.
    for i in 0..4 {
        faculty
            .post(
                &format!(
                    "/seats/courses/{}/enrolments/{enrolment}/correct-email",
                    course.course_id
                ),
                &json!({"email": format!("a{i}@uni.org")}),
            )
            .await
            .ok_body();
    }
    let secret = emailed_secret(&app, "a3@uni.org", 0).await;
    app.as_user(&app.users.students[0])
        .claim(secret)
        .await
        .ok_body();
    let sent = app.smtp.messages().len();
    let body = unclaim(&faculty, course.course_id, enrolment, None)
        .await
        .ok_body();
    let data = &body["data"];
    assert_eq!(data["email_queued"], false);
    assert_eq!(data["email_sent"], false);
    assert_eq!(
        data["email_error"],
        "This student has been sent 5 claim e-mails in the last 24 hours"
    );
    assert_eq!(data["enrolment"]["claimed_by"], Value::Null);
    assert_eq!(app.smtp.messages().len(), sent);
    // The link was rotated all the same.
    assert_replaced(&app, secret).await;
}

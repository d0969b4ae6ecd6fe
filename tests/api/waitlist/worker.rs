//! The worker's access pass (W.5.6, W.7 26–30): promotion at the start date, what it skips,
//! replicas splitting the work, and a backoff that never gives up.

use chrono::{TimeDelta, Utc};
use sqlx::PgPool;
use uuid::Uuid;
use vlab_courses::domain::backoff::backoff_bounds;
use vlab_courses::usecases::access::access_pass;
use vlab_emulators::{Fault, FaultAction};

use super::{
    access, claim, future_course, make_due, member_paths, pass, paths, start_course, started_course,
};
use crate::helpers::{ReplyExt, TestApp, exec};

/// Claims by SQL, as a binary older than the waitlist did: the access is still `none`.
async fn claim_without_access(app: &TestApp, enrolment_id: Uuid, user: Uuid) {
    sqlx::query("UPDATE course_enrolment SET claimed_by = $1 WHERE id = $2")
        .bind(user)
        .bind(enrolment_id)
        .execute(&app.db)
        .await
        .unwrap();
}

#[sqlx::test]
async fn the_pass_promotes_a_waitlisted_student_once_the_course_starts(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = future_course(&app, "Promote 101", 1).await;
    let student = app.users.students[0].clone();
    claim(&app, &student, assigned[0].enrolment_id).await;
    assert_eq!(pass(&app).await.leased, 0, "nothing due before the start");

    start_course(&app, course.course_id).await;
    let done = pass(&app).await;
    assert_eq!((done.leased, done.applied, done.pending), (1, 1, 0));
    assert_eq!(paths(&app, &student), member_paths(&course, &assigned[0]));
    let row = access(&app, assigned[0].enrolment_id).await;
    assert_eq!(
        (row.access_level.as_str(), row.activated_at),
        ("member", None)
    );

    let body = app.as_user(&student).activate_enrolments().await.ok_body();
    assert_eq!(body["results"][0]["activated"], true, "{body}");
}

#[sqlx::test]
async fn the_pass_skips_unclaimed_dropped_backed_off_leased_and_stopped_courses(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, assigned) = started_course(&app, "Skip 101", 7).await;
    let e: Vec<Uuid> = assigned.iter().map(|a| a.enrolment_id).collect();
    // e[6] stays unclaimed; the others are claimed with access `none`.
    for id in &e[..6] {
        claim_without_access(&app, *id, Uuid::new_v4()).await;
    }
    exec(
        &app.db,
        "UPDATE course_enrolment SET is_dropped = true WHERE id = $1",
        e[0],
    )
    .await;
    exec(
        &app.db,
        "INSERT INTO enrolment_drop (enrolment_id, course_id, project_id, reason, requested_at,
             is_early, state)
         SELECT id, course_id, project_id, 'faculty', now(), true, 'depleting'
         FROM course_enrolment WHERE id = $1",
        e[1],
    )
    .await;
    exec(
        &app.db,
        "UPDATE course_enrolment SET access_next_attempt_at = now() + interval '1 hour'
         WHERE id = $1",
        e[2],
    )
    .await;
    exec(
        &app.db,
        "UPDATE course_enrolment SET access_lease_id = gen_random_uuid(),
             access_lease_until = now() + interval '5 minutes'
         WHERE id = $1",
        e[3],
    )
    .await;
    // Only e[4] and e[5] are due (their unknown users make the syncs fail, which is fine).
    assert_eq!(pass(&app).await.leased, 2);

    for (name, sql) in [
        (
            "Draft 101",
            "UPDATE course SET status = 'draft' WHERE id = $1",
        ),
        (
            "Voided 101",
            "UPDATE course SET status = 'voided' WHERE id = $1",
        ),
        (
            "Ended 101",
            "UPDATE course SET end_date = now() - interval '1 minute' WHERE id = $1",
        ),
    ] {
        let (other, students) = started_course(&app, name, 1).await;
        claim_without_access(&app, students[0].enrolment_id, Uuid::new_v4()).await;
        exec(&app.db, sql, other.course_id).await;
        assert_eq!(pass(&app).await.leased, 0, "{name}");
    }
}

#[sqlx::test]
async fn two_passes_at_once_sync_each_enrolment_once(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = started_course(&app, "Replicas 101", 3).await;
    for (student, user) in assigned.iter().zip(&app.users.students) {
        claim_without_access(&app, student.enrolment_id, user.id).await;
    }
    let adds = app.keycloak.call_count("kc_add_member");
    let services = app.services();
    let now = Utc::now();
    let (a, b) = tokio::join!(
        access_pass(&services, now, 50),
        access_pass(&services, now, 50)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!((a.leased + b.leased, a.applied + b.applied), (3, 3));
    assert_eq!(app.keycloak.call_count("kc_add_member") - adds, 6);
    for (student, user) in assigned.iter().zip(&app.users.students) {
        assert_eq!(paths(&app, user), member_paths(&course, student));
        assert_eq!(access(&app, student.enrolment_id).await.access_attempts, 1);
    }
}

#[sqlx::test]
async fn repeated_failures_back_off_up_to_a_day_and_never_give_up(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, assigned) = future_course(&app, "Backoff 101", 1).await;
    let student = app.users.students[0].clone();
    let e = assigned[0].enrolment_id;
    app.keycloak
        .inject(Fault::new("kc_add_member", FaultAction::Status(500)).times(1000));
    claim(&app, &student, e).await;
    for attempts in 2..=4 {
        make_due(&app, e).await;
        let before = Utc::now();
        assert_eq!(pass(&app).await.failed, 1);
        let row = access(&app, e).await;
        assert_eq!(row.access_attempts, attempts);
        let (low, high) = backoff_bounds(attempts);
        let next = row.access_next_attempt_at.expect("scheduled");
        assert!(
            next >= before + low && next <= Utc::now() + high,
            "{attempts}: {next}"
        );
    }
    // Far past the cap: still scheduled, a day away at most.
    exec(
        &app.db,
        "UPDATE course_enrolment SET access_attempts = 1000000,
             access_next_attempt_at = now() - interval '1 second'
         WHERE id = $1",
        e,
    )
    .await;
    let before = Utc::now();
    assert_eq!(pass(&app).await.failed, 1);
    let next = access(&app, e)
        .await
        .access_next_attempt_at
        .expect("scheduled");
    assert!(next >= before + TimeDelta::minutes(24 * 60 * 8 / 10));
    assert!(next <= Utc::now() + TimeDelta::minutes(24 * 60 * 12 / 10));

    app.keycloak.clear_faults();
    make_due(&app, e).await;
    assert_eq!(pass(&app).await.applied, 1);
    assert_eq!(access(&app, e).await.access_level, "waitlisted");
}

//! Drops, void, expiry and delete empty the waitlisted group (W.5.7, W.7 31–37).

use chrono::Utc;
use reqwest::StatusCode;
use sqlx::PgPool;
use vlab_courses::usecases::drops::access_removal_pass;
use vlab_emulators::{Fault, FaultAction};

use super::{access, claim, drop_state, future_course, paths, started_course, waitlisted_paths};
use crate::helpers::{ReplyExt, TestApp, data_strings, exec};

#[sqlx::test]
async fn dropping_a_waitlisted_student_empties_the_waitlisted_group(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = future_course(&app, "Drop 101", 1).await;
    let student = app.users.students[0].clone();
    let token = app.student_token(0);
    app.with_token(&token)
        .claim(assigned[0].enrolment_id)
        .await
        .ok_body();
    let listed = app
        .with_token(&token)
        .get_projects(course.vlab_id, "")
        .await
        .ok_body();
    assert_eq!(data_strings(&listed, "id").len(), 1);

    let body = app
        .as_faculty()
        .post_drop(course.course_id, &[assigned[0].seat_id])
        .await
        .ok_body();
    assert_eq!(body["results"][0]["access_removed"], true, "{body}");
    assert!(
        paths(&app, &student).is_empty(),
        "{:?}",
        paths(&app, &student)
    );
    let name = format!(
        "proj/{}/{}/waitlisted",
        course.vlab_id, assigned[0].project_id
    );
    assert!(
        app.keycloak
            .group_by_name(&name)
            .unwrap()
            .members
            .is_empty()
    );
    assert_eq!(
        access(&app, assigned[0].enrolment_id).await.access_level,
        "none"
    );

    let listing = app
        .as_faculty()
        .get_enrolments(course.course_id)
        .await
        .ok_body();
    assert_eq!(listing["enrolments"][0]["access_level"], "none");
    assert_eq!(listing["enrolments"][0]["drop_state"], "done");
}

#[sqlx::test]
async fn a_failed_waitlist_removal_keeps_the_drop_revoking_until_the_worker_succeeds(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = future_course(&app, "Drop 101", 1).await;
    let student = app.users.students[0].clone();
    let e = assigned[0].enrolment_id;
    claim(&app, &student, e).await;
    // The project member group is empty: the first removal is the waitlisted one.
    app.keycloak
        .inject(Fault::new("kc_remove_member", FaultAction::Status(500)).times(100));
    let body = app
        .as_faculty()
        .post_drop(course.course_id, &[assigned[0].seat_id])
        .await
        .ok_body();
    app.keycloak.clear_faults();
    assert_eq!(body["results"][0]["access_removed"], false, "{body}");
    assert_eq!(drop_state(&app, e).await.as_deref(), Some("revoking"));
    assert_eq!(
        paths(&app, &student),
        waitlisted_paths(&course, &assigned[0])
    );
    assert_eq!(access(&app, e).await.access_level, "waitlisted");

    let later = Utc::now() + chrono::TimeDelta::hours(2);
    let sweep = access_removal_pass(&app.services(), later, 50)
        .await
        .unwrap();
    assert_eq!(sweep.completed, 1);
    assert_eq!(drop_state(&app, e).await.as_deref(), Some("done"));
    assert!(paths(&app, &student).is_empty());
    assert_eq!(access(&app, e).await.access_level, "none");
}

#[sqlx::test]
async fn voiding_a_course_that_has_not_started_empties_every_waitlisted_group(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = future_course(&app, "Void 101", 2).await;
    for (student, user) in assigned.iter().zip(&app.users.students) {
        claim(&app, user, student.enrolment_id).await;
    }
    app.as_admin().void_course(course.course_id).await.ok_body();
    for (student, user) in assigned.iter().zip(&app.users.students) {
        assert!(paths(&app, user).is_empty(), "{:?}", paths(&app, user));
        let name = format!("proj/{}/{}/waitlisted", course.vlab_id, student.project_id);
        assert!(
            app.keycloak
                .group_by_name(&name)
                .unwrap()
                .members
                .is_empty()
        );
    }
}

#[sqlx::test]
async fn expiry_drops_a_student_still_waitlisted_and_removes_every_membership(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = future_course(&app, "Expire 101", 1).await;
    let student = app.users.students[0].clone();
    claim(&app, &student, assigned[0].enrolment_id).await;
    // Promotion kept failing; the course has ended meanwhile.
    exec(
        &app.db,
        "UPDATE course SET start_date = now() - interval '10 days',
             last_drop_date = now() - interval '5 days', end_date = now() - interval '1 minute'
         WHERE id = $1",
        course.course_id,
    )
    .await;
    let mut lock = app.db.acquire().await.unwrap();
    vlab_courses::jobs::expiry::run(&app.services(), &mut lock, Utc::now())
        .await
        .unwrap();
    let dropped: bool = crate::helpers::fetch_scalar(
        &app.db,
        "SELECT is_dropped FROM course_enrolment WHERE id = $1",
        assigned[0].enrolment_id,
    )
    .await;
    assert!(dropped);
    assert!(
        paths(&app, &student).is_empty(),
        "{:?}",
        paths(&app, &student)
    );
    assert_eq!(
        access(&app, assigned[0].enrolment_id).await.access_level,
        "none"
    );
}

#[sqlx::test]
async fn a_delete_waits_for_a_live_access_lease_and_a_retry_deletes(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = started_course(&app, "Delete 101", 1).await;
    app.as_admin().void_course(course.course_id).await.ok_body();
    exec(
        &app.db,
        "UPDATE course_enrolment SET access_lease_id = gen_random_uuid(),
             access_lease_until = now() + interval '5 minutes'
         WHERE id = $1",
        assigned[0].enrolment_id,
    )
    .await;
    app.as_admin()
        .delete_course(course.course_id)
        .await
        .error_with(
            StatusCode::BAD_GATEWAY,
            "EXTERNAL_SERVICE_ERROR",
            &format!(
                "Failed to remove access for 1 dropped enrolment(s) of course {}; the course was voided but not deleted. Retry the delete.",
                course.course_id
            ),
        );
    exec(
        &app.db,
        "UPDATE course_enrolment SET access_lease_id = NULL, access_lease_until = NULL
         WHERE id = $1",
        assigned[0].enrolment_id,
    )
    .await;
    app.as_admin()
        .delete_course(course.course_id)
        .await
        .ok_body();
    let left: i64 = crate::helpers::fetch_scalar(
        &app.db,
        "SELECT count(*) FROM course WHERE id = $1",
        course.course_id,
    )
    .await;
    assert_eq!(left, 0);
}

#[sqlx::test]
async fn a_waitlisted_group_already_gone_counts_as_removed(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = future_course(&app, "Gone 101", 1).await;
    let student = app.users.students[0].clone();
    claim(&app, &student, assigned[0].enrolment_id).await;
    let name = format!(
        "proj/{}/{}/waitlisted",
        course.vlab_id, assigned[0].project_id
    );
    let group = app.keycloak.group_by_name(&name).unwrap();
    app.services()
        .keycloak
        .delete_group(&group.id)
        .await
        .unwrap();
    let body = app
        .as_faculty()
        .post_drop(course.course_id, &[assigned[0].seat_id])
        .await
        .ok_body();
    assert_eq!(body["results"][0]["access_removed"], true, "{body}");
    assert!(paths(&app, &student).is_empty());
}

#[sqlx::test]
async fn the_enrolment_listing_reports_each_access_level(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = future_course(&app, "Levels 101", 3).await;
    claim(&app, &app.users.students[0], assigned[0].enrolment_id).await;
    let listing = app
        .as_faculty()
        .get_enrolments(course.course_id)
        .await
        .ok_body();
    let level = |id: uuid::Uuid| {
        listing["enrolments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id.to_string())
            .unwrap()["access_level"]
            .clone()
    };
    assert_eq!(level(assigned[0].enrolment_id), "waitlisted");
    assert_eq!(level(assigned[1].enrolment_id), "none");
    super::start_course(&app, course.course_id).await;
    claim(&app, &app.users.students[1], assigned[1].enrolment_id).await;
    let listing = app
        .as_faculty()
        .get_enrolments(course.course_id)
        .await
        .ok_body();
    let second = listing["enrolments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == assigned[1].enrolment_id.to_string())
        .unwrap();
    assert_eq!(second["access_level"], "member");
}

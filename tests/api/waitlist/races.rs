//! A void or an expiry that lands while a grant is in Keycloak wins (W.5.9, W.7 23 for the
//! void and the worker's promotion): S3 sees the drop, re-opens D4 and runs it again.

use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use sqlx::PgPool;
use uuid::Uuid;
use vlab_courses::usecases::access::access_pass;

use super::{access, claim, drop_state, future_course, paths, start_course};
use crate::helpers::{ReplyExt, TestApp, exec, fetch_scalar, json as json_of};

/// Waits until Keycloak has seen more than `before` member additions.
async fn until_an_add_is_in_flight(app: &TestApp, before: usize) {
    for _ in 0..300 {
        if app.keycloak.call_count("kc_add_member") > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no member addition reached Keycloak");
}

/// How often D4 ran for the enrolment's drop.
async fn removal_runs(app: &TestApp, enrolment_id: Uuid) -> i32 {
    fetch_scalar(
        &app.db,
        "SELECT access_attempts FROM enrolment_drop WHERE enrolment_id = $1",
        enrolment_id,
    )
    .await
}

#[sqlx::test]
async fn a_void_during_activation_wins_and_no_access_is_left(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = future_course(&app, "Void race 101", 1).await;
    let student = app.users.students[0].clone();
    let e = assigned[0].enrolment_id;
    claim(&app, &student, e).await;
    start_course(&app, course.course_id).await;
    let token = app.student_token(0);
    // Authenticate once, so only the activation's own Keycloak calls are slowed below.
    app.get(&format!("/virtual-labs/{}", course.vlab_id), Some(&token))
        .await;
    let adds = app.keycloak.call_count("kc_add_member");
    app.keycloak
        .set_operation_latency("kc_add_member", Duration::from_millis(1500));
    let pending = {
        let (url, client) = (
            app.url(&format!("/courses/{}/enrolment/activate", course.course_id)),
            app.client.clone(),
        );
        tokio::spawn(async move {
            json_of(client.post(url).bearer_auth(token).send().await.unwrap()).await
        })
    };
    until_an_add_is_in_flight(&app, adds).await;
    app.as_admin().void_course(course.course_id).await.ok_body();
    let reply = pending.await.unwrap();
    app.keycloak
        .set_operation_latency("kc_add_member", Duration::ZERO);

    reply.error_with(
        StatusCode::CONFLICT,
        "INVALID_REQUEST",
        "Cannot activate a dropped enrolment",
    );
    assert_eq!(removal_runs(&app, e).await, 2, "D4 re-opened and run again");
    assert_eq!(drop_state(&app, e).await.as_deref(), Some("done"));
    assert!(
        paths(&app, &student).is_empty(),
        "{:?}",
        paths(&app, &student)
    );
    let row = access(&app, e).await;
    assert_eq!(
        (row.access_level.as_str(), row.activated_at),
        ("none", None)
    );
}

#[sqlx::test]
async fn an_expiry_during_the_workers_promotion_wins_and_no_access_is_left(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = future_course(&app, "Expiry race 101", 1).await;
    let student = app.users.students[0].clone();
    let e = assigned[0].enrolment_id;
    claim(&app, &student, e).await;
    start_course(&app, course.course_id).await;

    let adds = app.keycloak.call_count("kc_add_member");
    app.keycloak
        .set_operation_latency("kc_add_member", Duration::from_millis(1500));
    let promotion = {
        let services = app.services();
        tokio::spawn(async move { access_pass(&services, Utc::now(), 50).await })
    };
    until_an_add_is_in_flight(&app, adds).await;
    // The course ends while the promotion's additions are in flight, and the job expires it.
    exec(
        &app.db,
        "UPDATE course SET last_drop_date = now() - interval '2 minutes',
             end_date = now() - interval '1 minute'
         WHERE id = $1",
        course.course_id,
    )
    .await;
    let mut lock = app.db.acquire().await.unwrap();
    vlab_courses::jobs::expiry::run(&app.services(), &mut lock, Utc::now())
        .await
        .unwrap();
    assert_eq!(drop_state(&app, e).await.as_deref(), Some("done"));
    let promoted = promotion.await.unwrap().expect("access pass");
    app.keycloak
        .set_operation_latency("kc_add_member", Duration::ZERO);

    assert_eq!((promoted.leased, promoted.applied), (1, 0));
    assert_eq!(removal_runs(&app, e).await, 2, "D4 re-opened and run again");
    assert_eq!(drop_state(&app, e).await.as_deref(), Some("done"));
    assert!(
        paths(&app, &student).is_empty(),
        "{:?}",
        paths(&app, &student)
    );
    assert_eq!(access(&app, e).await.access_level, "none");
}

//! A void or an expiry that lands while a grant is in Keycloak wins (W.5.9, W.7 23 for the
//! void and the worker's promotion): S3 sees the drop, re-opens D4 and runs it again.

use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use sqlx::PgPool;
use vlab_courses::usecases::access::access_pass;

use super::{
    StalledAdds, activation_in_flight, assert_the_drop_won, claim, drop_state, future_course,
    start_course,
};
use crate::helpers::{ReplyExt, TestApp, exec};

#[sqlx::test]
async fn a_void_during_activation_wins_and_no_access_is_left(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned, stall, pending) = activation_in_flight(&app, "Void race 101").await;
    app.as_admin().void_course(course.course_id).await.ok_body();
    let reply = pending.await.unwrap();
    drop(stall);

    reply.error_with(
        StatusCode::CONFLICT,
        "INVALID_REQUEST",
        "Cannot activate a dropped enrolment",
    );
    assert_the_drop_won(&app, &app.users.students[0], assigned.enrolment_id).await;
}

#[sqlx::test]
async fn an_expiry_during_the_workers_promotion_wins_and_no_access_is_left(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = future_course(&app, "Expiry race 101", 1).await;
    let student = app.users.students[0].clone();
    let e = assigned[0].enrolment_id;
    claim(&app, &student, e).await;
    start_course(&app, course.course_id).await;

    let stall = StalledAdds::start(&app, Duration::from_millis(1500));
    let promotion = {
        let services = app.services();
        tokio::spawn(async move { access_pass(&services, Utc::now(), 50).await })
    };
    stall.in_flight().await;
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
    drop(stall);

    assert_eq!((promoted.leased, promoted.applied), (1, 0));
    assert_the_drop_won(&app, &student, e).await;
}

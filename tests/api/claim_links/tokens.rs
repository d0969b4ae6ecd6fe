//! The claim secret: the enrolment id by default, a random token when configured (§3.1).

use reqwest::StatusCode;
use sqlx::PgPool;
use uuid::Uuid;

use super::emailed_secret;
use crate::fixtures;
use crate::helpers::{ReplyExt, TestApp, fetch_scalar};

#[sqlx::test]
async fn claim_with_enrolment_id_still_works_by_default(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, students) = fixtures::course_with_students(&app, "Neuro 101", 1).await;
    let enrolment_id = students[0].enrolment_id;
    // The e-mailed link carries the enrolment id, and no token is stored.
    assert_eq!(emailed_secret(&app, "stu-1@uni.org", 0).await, enrolment_id);
    let token: Option<Uuid> = fetch_scalar(
        &app.db,
        "SELECT claim_token FROM course_enrolment WHERE id = $1",
        enrolment_id,
    )
    .await;
    assert_eq!(token, None);
    let body = app
        .as_user(&app.users.students[0])
        .claim(enrolment_id)
        .await
        .ok_body();
    assert_eq!(body["data"]["id"], enrolment_id.to_string());
}

#[sqlx::test]
async fn random_token_mode_refuses_the_enrolment_id_but_accepts_the_emailed_link(db: PgPool) {
    let app = TestApp::spawn_with(db, |vars| {
        vars.insert(
            "CLAIM_TOKEN_FOR_NEW_ENROLMENTS".to_owned(),
            "random".to_owned(),
        );
    })
    .await;
    let (course, students) = fixtures::course_with_students(&app, "Neuro 101", 1).await;
    let enrolment_id = students[0].enrolment_id;
    let secret = emailed_secret(&app, "stu-1@uni.org", 0).await;
    assert_ne!(secret, enrolment_id);
    let token: Option<Uuid> = fetch_scalar(
        &app.db,
        "SELECT claim_token FROM course_enrolment WHERE id = $1",
        enrolment_id,
    )
    .await;
    assert_eq!(token, Some(secret));
    let student = app.as_user(&app.users.students[0]);
    student.claim(enrolment_id).await.error_with(
        StatusCode::NOT_FOUND,
        "ENTITY_NOT_FOUND",
        "Enrolment not found",
    );
    let body = student.claim(secret).await.ok_body();
    // The answer names the enrolment, never the token.
    assert_eq!(body["data"]["id"], enrolment_id.to_string());
    assert!(!body.to_string().contains(&secret.to_string()));
    let claimed_by: Option<Uuid> = fetch_scalar(
        &app.db,
        "SELECT claimed_by FROM course_enrolment WHERE id = $1",
        enrolment_id,
    )
    .await;
    assert_eq!(claimed_by, Some(app.users.students[0].id));
    // The roster never shows the token either.
    let roster = app
        .as_faculty()
        .get_enrolments(course.course_id)
        .await
        .ok_body();
    assert!(!roster.to_string().contains(&secret.to_string()));
}

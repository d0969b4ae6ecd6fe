//! Upgrading a database that holds enrolments from before claim tokens: the rows are written
//! with only the earlier migrations applied, then `claim_tokens` runs, then the new code claims
//! them by id and corrects their e-mail.

use reqwest::StatusCode;
use sqlx::PgPool;
use uuid::Uuid;
use vlab_courses::repo::db::MIGRATOR;

use super::{assert_replaced, emailed_secret};
use crate::claim_emails::upgrade::{seed_course, seed_enrolment};
use crate::helpers::{ReplyExt, TestApp, fetch_scalar, migrate_before};

#[sqlx::test(migrations = false)]
async fn enrolments_from_before_claim_tokens_claim_by_id_and_can_be_corrected(db: PgPool) {
    migrate_before(&db, "claim tokens").await;
    let (lab, course) = seed_course(&db).await;
    let claimant = Uuid::new_v4();
    let claimed = seed_enrolment(&db, lab, course, 1, Some(claimant), "sent").await;
    let unclaimed = seed_enrolment(&db, lab, course, 2, None, "sent").await;
    let corrected = seed_enrolment(&db, lab, course, 3, None, "pending").await;
    MIGRATOR.run(&db).await.expect("claim_tokens");

    let app = TestApp::spawn(db.clone()).await;
    let admin_group = app
        .keycloak
        .ensure_group_path(&format!("/vlab/{lab}/admin"));
    app.keycloak
        .add_user_to_group(app.users.faculty.id, &admin_group);

    // No row got a token: the enrolment id is still every row's claim secret.
    let tokens: i64 = fetch_scalar(
        &app.db,
        "SELECT count(*) FROM course_enrolment WHERE course_id = $1 AND claim_token IS NOT NULL",
        course,
    )
    .await;
    assert_eq!(tokens, 0);
    let student = app.as_user(&app.users.students[0]);
    student.claim(claimed).await.error_with(
        StatusCode::CONFLICT,
        "INVALID_REQUEST",
        "This enrolment has already been claimed",
    );
    let body = student.claim(unclaimed).await.ok_body();
    assert_eq!(body["data"]["id"], unclaimed.to_string());

    // A correction revokes the id and e-mails a token; the pending round-1 e-mail is cancelled.
    app.as_faculty()
        .post(
            &format!("/seats/courses/{course}/enrolments/{corrected}/correct-email"),
            &serde_json::json!({"email": "ada@uni.org"}),
        )
        .await
        .ok_body();
    assert_replaced(&app, corrected).await;
    let secret = emailed_secret(&app, "ada@uni.org", 0).await;
    let statuses: Vec<String> = sqlx::query_scalar(
        "SELECT status FROM email_outbox WHERE enrolment_id = $1 ORDER BY created_at",
    )
    .bind(corrected)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(statuses, ["cancelled", "sent"]);
    app.as_user(&app.users.students[1])
        .claim(secret)
        .await
        .ok_body();
}

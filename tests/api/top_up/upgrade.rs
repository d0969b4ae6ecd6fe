//! Upgrading a database that holds enrolments from before top-ups: they get
//! `extra_credits = 0`, show it, and can be topped up.

use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;
use vlab_courses::repo::db::MIGRATOR;

use super::{admin_top_up, extra_credits};
use crate::claim_emails::upgrade::{seed_course, seed_enrolment};
use crate::helpers::{ReplyExt, TestApp, migrate_before};

/// Opens the accounting accounts of a seeded lab and project, as the round-1 service did.
async fn open_accounts(app: &TestApp, lab: Uuid, project: Uuid) {
    let base = app.accounting.base_url();
    for (path, body) in [
        (
            "/account/virtual-lab",
            json!({"name": "Round one lab", "id": lab, "balance": "0"}),
        ),
        (
            "/account/project",
            json!({"name": "stu-1", "id": project, "vlab_id": lab}),
        ),
    ] {
        let response = app
            .client
            .post(format!("{base}{path}"))
            .bearer_auth("upgrade-test")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
    }
}

#[sqlx::test(migrations = false)]
async fn enrolments_from_before_top_ups_have_no_extra_credits_and_can_be_topped_up(db: PgPool) {
    migrate_before(&db, "top up").await;
    let (lab, course) = seed_course(&db).await;
    let enrolment = seed_enrolment(&db, lab, course, 1, Some(Uuid::new_v4()), "sent").await;
    MIGRATOR.run(&db).await.expect("top_up");

    let app = TestApp::spawn(db.clone()).await;
    assert_eq!(extra_credits(&app.db, enrolment).await, 0);
    let project: Uuid = crate::helpers::fetch_scalar(
        &app.db,
        "SELECT project_id FROM course_enrolment WHERE id = $1",
        enrolment,
    )
    .await;
    open_accounts(&app, lab, project).await;

    let timeline = app
        .as_admin()
        .get(&format!(
            "/courses/{course}/enrolments/{enrolment}/timeline"
        ))
        .await
        .ok_body();
    assert_eq!(timeline["data"]["enrolment"]["extra_credits"], json!(0));
    assert_eq!(timeline["data"]["credits"]["topped_up"], json!(0.0));

    // The seeded course grants 100 per seat.
    let data = admin_top_up(&app, course, enrolment, 40).await;
    assert_eq!(data["extra_credits"], json!(40));
    assert_eq!(data["credits_granted_total"], json!(140));
    assert_eq!(extra_credits(&app.db, enrolment).await, 40);
    assert_eq!(
        app.accounting.balance(project),
        Some(rust_decimal::Decimal::from(40))
    );
}

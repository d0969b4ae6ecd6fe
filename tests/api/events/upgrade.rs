//! Upgrading a database that holds rows written before the audit log: migrated to the
//! waitlist's migration, seeded, migrated to the latest, then served by the new code.

use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;
use vlab_courses::repo::db::MIGRATOR;

use super::{EventsApi, types};
use crate::helpers::{ReplyExt, TestApp, migrate_before};

/// An active, started course with one unclaimed enrolment, written with the 0002 columns.
/// Returns `(course, enrolment)`.
async fn seed(db: &PgPool) -> (Uuid, Uuid) {
    let (lab, template, course, project, enrolment) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let owner = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO virtual_lab (id, owner_id, name, entity, admin_group_id, member_group_id,
             is_course)
         VALUES ($1, $2, 'Before events', 'OBI', $3, $4, true)",
    )
    .bind(lab)
    .bind(owner)
    .bind(format!("admin-{lab}"))
    .bind(format!("member-{lab}"))
    .execute(db)
    .await
    .unwrap();
    for (id, name) in [(template, "Template"), (project, "stu-0")] {
        sqlx::query(
            "INSERT INTO project (id, virtual_lab_id, name, owner_id, admin_group_id,
                 member_group_id)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(lab)
        .bind(name)
        .bind(owner)
        .bind(format!("admin-{id}"))
        .bind(format!("member-{id}"))
        .execute(db)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO course (id, virtual_lab_id, institution_id, template_project_id, start_date,
             end_date, last_drop_date, status, credits_per_seat)
         SELECT $1, $2, id, $3, now() - interval '1 day', now() + interval '90 days',
                now() + interval '30 days', 'active', 100
         FROM institution WHERE name = 'Open Brain Institute'",
    )
    .bind(course)
    .bind(lab)
    .bind(template)
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO course_enrolment (id, course_id, project_id, contact_email, student_id)
         VALUES ($1, $2, $3, 'stu-0@uni.org', 'stu-0')",
    )
    .bind(enrolment)
    .bind(course)
    .bind(project)
    .execute(db)
    .await
    .unwrap();
    (course, enrolment)
}

#[sqlx::test(migrations = false)]
async fn rows_from_before_the_audit_log_upgrade_and_get_events_from_then_on(db: PgPool) {
    migrate_before(&db, "course event").await;
    let (course, enrolment) = seed(&db).await;
    MIGRATOR.run(&db).await.expect("the audit-log migration");
    let app = TestApp::spawn(db.clone()).await;
    let admin = app.as_admin();

    // The old rows have no events, and read well all the same.
    let page = admin.get_events(course, "").await.ok_body();
    assert_eq!(page["pagination"]["total_items"], 0);
    let timeline = admin.get_timeline(course, enrolment, "").await.ok_body();
    assert_eq!(timeline["data"]["events"], json!([]));
    assert_eq!(timeline["data"]["credits"]["granted"], 100.0);
    assert_eq!(timeline["data"]["enrolment"]["access_level"], "none");

    // The new code records its changes on them. The seeded groups do not exist in the
    // identity provider, so the claim's access sync fails and starts a failure streak.
    admin
        .provision(&json!({"course_id": course, "number_of_seats": 1}))
        .await
        .ok_body();
    let student = app.users.students[0].clone();
    app.as_user(&student).claim(enrolment).await.ok_body();
    assert_eq!(
        types(&db, course).await,
        [
            "seats_provisioned",
            "enrolment_claimed",
            "access_update_failed"
        ]
    );
    let timeline = admin.get_timeline(course, enrolment, "").await.ok_body();
    let events = timeline["data"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["data"]["target"], "member");
    assert_eq!(events[1]["data"]["attempts"], 1);
}

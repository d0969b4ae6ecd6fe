//! Upgrading a database that holds round-1 enrolments and claim e-mails: the rows are written
//! with only the earlier migrations applied, then `claim_tracking` runs, then the new code reads
//! and resends them.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;
use vlab_courses::repo::db::MIGRATOR;

use super::outbox_rows;
use crate::helpers::{ReplyExt, TestApp, migrate_before};

/// A round-1 course lab, its template and an active course; returns `(lab, course)`.
pub async fn seed_course(db: &PgPool) -> (Uuid, Uuid) {
    let (lab, template, course, owner) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    sqlx::query(
        "INSERT INTO virtual_lab (id, owner_id, name, entity, admin_group_id, member_group_id,
             is_course)
         VALUES ($1, $2, 'Round one lab', 'OBI', $3, $4, true)",
    )
    .bind(lab)
    .bind(owner)
    .bind(format!("admin-{lab}"))
    .bind(format!("member-{lab}"))
    .execute(db)
    .await
    .unwrap();
    insert_project(db, template, lab, "Template", owner).await;
    sqlx::query(
        "INSERT INTO course (id, virtual_lab_id, institution_id, template_project_id, start_date,
             end_date, last_drop_date, status, credits_per_seat)
         SELECT $1, $2, id, $3, now() - interval '1 day', now() + interval '90 days',
                now() + interval '7 days', 'active', 100
         FROM institution WHERE name = 'Open Brain Institute'",
    )
    .bind(course)
    .bind(lab)
    .bind(template)
    .execute(db)
    .await
    .unwrap();
    (lab, course)
}

async fn insert_project(db: &PgPool, id: Uuid, lab: Uuid, name: &str, owner: Uuid) {
    sqlx::query(
        "INSERT INTO project (id, virtual_lab_id, name, owner_id, admin_group_id, member_group_id)
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

/// A round-1 enrolment with one claim e-mail in `email_status`, written an hour ago.
pub async fn seed_enrolment(
    db: &PgPool,
    lab: Uuid,
    course: Uuid,
    i: usize,
    claimed_by: Option<Uuid>,
    email_status: &str,
) -> Uuid {
    let (enrolment, project) = (Uuid::new_v4(), Uuid::new_v4());
    insert_project(db, project, lab, &format!("stu-{i}"), Uuid::new_v4()).await;
    sqlx::query(
        "INSERT INTO course_enrolment (id, course_id, project_id, contact_email, student_id,
             claimed_by, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, now() - interval '1 hour')",
    )
    .bind(enrolment)
    .bind(course)
    .bind(project)
    .bind(format!("stu-{i}@uni.org"))
    .bind(format!("stu-{i}"))
    .bind(claimed_by)
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO email_outbox (kind, enrolment_id, recipient, payload, status, attempts,
             next_attempt_at, sent_at, created_at, updated_at)
         VALUES ('enrolment_claim', $1, $2,
                 jsonb_build_object('course_name', 'Round one lab',
                     'claim_link', 'https://example.org/course-enrolment?enrolment_id=' || $1,
                     'discover_link', 'https://example.org'),
                 $3, CASE WHEN $3 = 'sent' THEN 1 ELSE 3 END, now() + interval '1 hour',
                 CASE WHEN $3 = 'sent' THEN now() - interval '1 hour' END,
                 now() - interval '1 hour', now() - interval '1 hour')",
    )
    .bind(enrolment)
    .bind(format!("stu-{i}@uni.org"))
    .bind(email_status)
    .execute(db)
    .await
    .unwrap();
    enrolment
}

#[sqlx::test(migrations = false)]
async fn round_one_enrolments_and_emails_show_on_the_roster_and_can_be_resent(db: PgPool) {
    migrate_before(&db, "claim tracking").await;
    let (lab, course) = seed_course(&db).await;
    let claimant = Uuid::new_v4();
    let claimed = seed_enrolment(&db, lab, course, 1, Some(claimant), "sent").await;
    let sent = seed_enrolment(&db, lab, course, 2, None, "sent").await;
    let pending = seed_enrolment(&db, lab, course, 3, None, "pending").await;
    MIGRATOR.run(&db).await.expect("claim_tracking");

    let app = TestApp::spawn(db.clone()).await;
    let admin_group = app
        .keycloak
        .ensure_group_path(&format!("/vlab/{lab}/admin"));
    app.keycloak
        .add_user_to_group(app.users.faculty.id, &admin_group);
    let faculty = app.as_faculty();

    let roster = faculty.get_enrolments(course).await.ok_body();
    let by_id = |id: Uuid| -> Value {
        roster["enrolments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id.to_string())
            .cloned()
            .unwrap()
    };
    let old_claim = by_id(claimed);
    assert_eq!(old_claim["claimed_by"], claimant.to_string());
    assert_eq!(old_claim["claimed_at"], Value::Null);
    assert_eq!(old_claim["claimed_by_email"], Value::Null);
    for (id, status, attempts) in [(sent, "sent", 1), (pending, "pending", 3)] {
        let email = &by_id(id)["claim_email"];
        assert_eq!(email["status"], status, "{email}");
        assert_eq!(email["origin"], "assign");
        assert_eq!(email["attempts"], attempts);
        assert_eq!(email["emails_queued"], 1);
        assert_eq!(email["next_resend_allowed_at"], Value::Null);
    }

    faculty
        .resend_claim_email(course, claimed)
        .await
        .error_with(
            StatusCode::CONFLICT,
            "INVALID_REQUEST",
            "This enrolment has already been claimed",
        );
    let body = faculty.resend_claim_email(course, pending).await.ok_body();
    assert_eq!(body["data"]["email_sent"], true);
    let rows = outbox_rows(&app, pending).await;
    assert_eq!(
        rows.iter()
            .map(|r| (r.status.as_str(), r.origin.as_str(), r.course_id))
            .collect::<Vec<_>>(),
        [
            ("cancelled", "assign", None),
            ("sent", "resend", Some(course))
        ]
    );
    let body = faculty.resend_claim_emails(course, None).await.ok_body();
    assert_eq!(body["queued_count"], 1, "{body}");
    assert_eq!(body["results"][0]["enrolment_id"], sent.to_string());
    assert_eq!(
        app.smtp
            .wait_for_messages(2, Duration::from_secs(10))
            .await
            .len(),
        2
    );

    // A claim made now records when and with which token e-mail.
    let student = app.users.students[0].clone();
    app.as_user(&student).claim(sent).await.ok_body();
    let roster = faculty.get_enrolments(course).await.ok_body();
    let now_claimed = roster["enrolments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == sent.to_string())
        .cloned()
        .unwrap();
    assert_eq!(now_claimed["claimed_by_email"], student.email.as_str());
    assert!(now_claimed["claimed_at"].is_string());
}

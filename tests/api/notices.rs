//! Pre-expiry notices: `expire-courses` queues them (step 5b) into the outbox, each once, and
//! the e-mail pass sends them or cancels those no longer wanted.

use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;
use vlab_courses::repo::db::MIGRATOR;
use vlab_courses::usecases::email_outbox;
use vlab_emulators::{Fault, FaultAction};

use crate::expiry::run_job;
use crate::fixtures::{self, ActiveCourse, Assigned};
use crate::helpers::{TestApp, fetch_scalar, migrate_before};

/// A notice row as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
struct NoticeRow {
    id: Uuid,
    kind: String,
    enrolment_id: Option<Uuid>,
    course_id: Option<Uuid>,
    recipient: String,
    payload: Value,
    status: String,
    attempts: i32,
    origin: String,
    requested_by: Option<Uuid>,
    dedup_key: Option<String>,
    lease_id: Option<Uuid>,
}

async fn notice_rows(db: &PgPool) -> Vec<NoticeRow> {
    sqlx::query_as(
        "SELECT id, kind, enrolment_id, course_id, recipient, payload, status, attempts, origin,
                requested_by, dedup_key, lease_id
         FROM email_outbox WHERE kind <> 'enrolment_claim' ORDER BY kind, recipient",
    )
    .fetch_all(db)
    .await
    .unwrap()
}

/// The app with these lead times (days) and a course link template.
async fn app_with(db: PgPool, drop_days: u32, end_days: u32, student_days: u32) -> TestApp {
    TestApp::spawn_with(db, |vars| {
        for (var, days) in [
            ("FACULTY_DROP_DEADLINE_NOTICE_DAYS", drop_days),
            ("FACULTY_END_NOTICE_DAYS", end_days),
            ("STUDENT_END_NOTICE_DAYS", student_days),
        ] {
            vars.insert(var.to_owned(), days.to_string());
        }
        vars.insert(
            "COURSE_LINK_TEMPLATE".to_owned(),
            "https://obi.example/app/virtual-lab/{virtual_lab_id}/courses/{course_id}".to_owned(),
        );
    })
    .await
}

/// An active course that started yesterday, last drop in 7 days, end in 30, with `n`
/// students, the first `claimed` of them claimed (and activated) by the test students.
async fn course(
    app: &TestApp,
    name: &str,
    n: usize,
    claimed: usize,
) -> (ActiveCourse, Vec<Assigned>) {
    let now = Utc::now();
    let course = fixtures::create_draft_course(
        app,
        name,
        Some(now - chrono::Duration::days(1)),
        Some(now + chrono::Duration::days(7)),
        Some(now + chrono::Duration::days(30)),
    )
    .await;
    fixtures::activate_course(app, course.course_id).await;
    fixtures::make_lab_admin(app, course.vlab_id, &app.users.faculty);
    fixtures::provision(app, course.course_id, n).await;
    let students = fixtures::assign(app, course.course_id, n).await;
    for (i, s) in students.iter().take(claimed).enumerate() {
        let user = app.users.students[i].clone();
        fixtures::claim_and_activate(app, s.enrolment_id, &user).await;
    }
    (course, students)
}

fn subjects_starting(app: &TestApp, prefix: &str) -> Vec<String> {
    app.smtp
        .messages()
        .into_iter()
        .filter_map(|m| m.subject)
        .filter(|s| s.starts_with(prefix))
        .collect()
}

#[sqlx::test]
async fn job_queues_the_drop_deadline_notice_to_lab_admins_except_the_owner_with_counts(
    db: PgPool,
) {
    let app = app_with(db.clone(), 10, 0, 0).await;
    let (course, _) = course(&app, "Neuro <101>", 3, 1).await;
    // A second address of the faculty member's, in another case, is the same recipient.
    let run = run_job(&app, &[]).await;
    assert_eq!(run.code, 0, "{}", run.summary);
    assert_eq!(run.summary["notices_queued"], 1);
    assert_eq!(run.summary["notices_failed"], 0);
    assert_eq!(run.summary["notice_errors"], json!([]));

    let rows = notice_rows(&db).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row.kind, "drop_deadline_notice");
    assert_eq!(row.recipient, app.users.faculty.email);
    assert_eq!(row.course_id, Some(course.course_id));
    assert_eq!((row.enrolment_id, row.requested_by), (None, None));
    assert_eq!(row.origin, "job");
    let last_drop: chrono::DateTime<Utc> = fetch_scalar(
        &db,
        "SELECT last_drop_date FROM course WHERE id = $1",
        course.course_id,
    )
    .await;
    assert_eq!(
        row.dedup_key.as_deref(),
        Some(
            format!(
                "drop_deadline:{}:{}:{}",
                course.course_id,
                last_drop.timestamp(),
                app.users.faculty.email.to_lowercase()
            )
            .as_str()
        )
    );
    let p = &row.payload;
    assert_eq!(p["course_name"], "Neuro <101>");
    assert_eq!(p["enrolled"], 3);
    assert_eq!(p["unclaimed"], 2);
    assert_eq!(p["recoverable_now"], 3);
    assert_eq!(p["margin_credits"], 50);
    assert_eq!(
        p["course_link"],
        format!(
            "https://obi.example/app/virtual-lab/{}/courses/{}",
            course.vlab_id, course.course_id
        )
    );
    assert_eq!(
        p["last_drop_date"],
        last_drop.format("%-d %B %Y, %H:%M UTC").to_string()
    );
    // Its queued event, in the queuing transaction.
    let events: i64 = fetch_scalar(
        &db,
        "SELECT count(*) FROM course_event
         WHERE event_type = 'email_queued' AND data->>'kind' = 'drop_deadline_notice'
           AND course_id = $1",
        course.course_id,
    )
    .await;
    assert_eq!(events, 1);

    // Sent by the job's own e-mail pass: a faculty notice needs no enrolment.
    assert_eq!(row.status, "sent");
    let subjects = subjects_starting(&app, "Drop deadline on ");
    assert_eq!(
        subjects,
        [format!(
            "Drop deadline on {}: Neuro <101> \u{2014} Open Brain Platform",
            p["last_drop_date"].as_str().unwrap()
        )]
    );
    let message = app
        .smtp
        .messages()
        .into_iter()
        .find(|m| m.subject.as_deref() == Some(subjects[0].as_str()))
        .unwrap();
    assert_eq!(message.rcpt_to, [app.users.faculty.email.as_str()]);
    let text = message.text().unwrap();
    assert!(
        text.contains("Right now: 3 students enrolled, 2 have not claimed their seat."),
        "{text}"
    );
    assert!(
        text.contains("3 could be dropped now with their seat returned."),
        "{text}"
    );
    assert!(
        text.contains("Manage the course: https://obi.example/app/virtual-lab/"),
        "{text}"
    );
}

#[sqlx::test]
async fn notice_is_sent_once_across_two_job_runs(db: PgPool) {
    let app = app_with(db.clone(), 10, 40, 40).await;
    course(&app, "Once", 2, 1).await;
    let first = run_job(&app, &[]).await;
    assert_eq!(first.summary["notices_queued"], 3, "{}", first.summary);
    let second = run_job(&app, &[]).await;
    assert_eq!(second.code, 0, "{}", second.summary);
    assert_eq!(second.summary["notices_queued"], 0);
    let rows = notice_rows(&db).await;
    assert_eq!(
        rows.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>(),
        [
            "access_end_notice",
            "course_end_notice",
            "drop_deadline_notice"
        ]
    );
    assert!(rows.iter().all(|r| r.status == "sent"));
    assert_eq!(subjects_starting(&app, "Drop deadline on ").len(), 1);
    assert_eq!(subjects_starting(&app, "Course ends on ").len(), 1);
    assert_eq!(
        subjects_starting(&app, "Your course access ends on ").len(),
        1
    );
}

#[sqlx::test]
async fn two_racing_job_runs_queue_one_notice_per_person(db: PgPool) {
    let app = app_with(db.clone(), 10, 40, 40).await;
    course(&app, "Racing notices", 3, 2).await;
    app.accounting.set_latency(Duration::from_millis(100));
    let (a, b) = tokio::join!(run_job(&app, &[]), run_job(&app, &[]));
    let queued = a.summary["notices_queued"].as_u64().unwrap_or(0)
        + b.summary["notices_queued"].as_u64().unwrap_or(0);
    // One per admin and kind, one per claimed student.
    assert_eq!(queued, 4, "{} {}", a.summary, b.summary);
    let rows = notice_rows(&db).await;
    assert_eq!(rows.len(), 4);
    let mut keys: Vec<_> = rows
        .iter()
        .map(|r| (r.kind.clone(), r.recipient.clone()))
        .collect();
    keys.dedup();
    assert_eq!(keys.len(), 4);
    let reports: i64 = sqlx::query_scalar("SELECT count(*) FROM expiry_run")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(reports, 2);
}

#[sqlx::test]
async fn course_end_notice_goes_to_lab_admins_with_the_enrolled_count(db: PgPool) {
    let app = app_with(db.clone(), 0, 40, 0).await;
    // A second lab admin, and the owner (obi-admin, the lab's creator) left out.
    let (course, _) = course(&app, "Ending", 2, 0).await;
    let other = app.users.students[2].clone();
    fixtures::make_lab_admin(&app, course.vlab_id, &other);
    let run = run_job(&app, &[]).await;
    assert_eq!(run.code, 0, "{}", run.summary);
    let rows = notice_rows(&db).await;
    let mut recipients: Vec<_> = rows.iter().map(|r| r.recipient.clone()).collect();
    recipients.sort();
    let mut expected = vec![app.users.faculty.email.clone(), other.email.clone()];
    expected.sort();
    assert_eq!(recipients, expected);
    assert!(!recipients.contains(&app.users.admin.email));
    for row in &rows {
        assert_eq!(row.kind, "course_end_notice");
        assert_eq!(row.payload["enrolled"], 2);
        assert!(row.payload.get("unclaimed").is_none());
    }
    let text = app
        .smtp
        .messages()
        .into_iter()
        .find(|m| {
            m.subject
                .as_deref()
                .is_some_and(|s| s.starts_with("Course ends on "))
        })
        .and_then(|m| m.text())
        .unwrap();
    assert!(text.contains("2 students are enrolled."), "{text}");
}

#[sqlx::test]
async fn student_notice_goes_to_claimed_students_with_remaining_credits(db: PgPool) {
    let app = app_with(db.clone(), 0, 0, 40).await;
    let (course, students) = course(&app, "Students", 4, 2).await;
    // The second claimed student's access is waitlisted again (as an unclaim and a new claim
    // before the start would leave it): claimed is what counts.
    sqlx::query("UPDATE course_enrolment SET access_level = 'waitlisted' WHERE id = $1")
        .bind(students[1].enrolment_id)
        .execute(&db)
        .await
        .unwrap();
    app.accounting
        .spend(students[0].project_id, Decimal::new(3050, 2))
        .unwrap();
    // The third claims and is dropped; the fourth never claims.
    let third = app.users.students[2].clone();
    fixtures::claim_and_activate(&app, students[2].enrolment_id, &third).await;
    let (status, body) = app
        .as_faculty()
        .post_drop(course.course_id, &[students[2].seat_id])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let run = run_job(&app, &[]).await;
    assert_eq!(run.code, 0, "{}", run.summary);
    let rows = notice_rows(&db).await;
    let mut got: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.enrolment_id.unwrap(),
                r.payload["remaining_credits"].clone(),
            )
        })
        .collect();
    got.sort_by_key(|(e, _)| *e);
    let mut expected = vec![
        (students[0].enrolment_id, json!("169.50")),
        (students[1].enrolment_id, json!("200.00")),
    ];
    expected.sort_by_key(|(e, _)| *e);
    assert_eq!(got, expected);
    let row = &rows[0];
    assert_eq!(row.kind, "access_end_notice");
    assert_eq!(
        row.recipient,
        format!(
            "stu-{}@uni.org",
            if row.enrolment_id == Some(students[0].enrolment_id) {
                1
            } else {
                2
            }
        )
    );
    assert_eq!(
        row.payload["platform_link"],
        app.config.invite_link_base.trim_end_matches('/')
    );
    assert!(row.payload["access_end_at"].is_string());
    let texts: Vec<String> = app
        .smtp
        .messages()
        .into_iter()
        .filter(|m| {
            m.subject
                .as_deref()
                .is_some_and(|s| s.starts_with("Your course access ends on "))
        })
        .filter_map(|m| m.text())
        .collect();
    assert_eq!(texts.len(), 2);
    assert!(
        texts
            .iter()
            .any(|t| t.contains("You have 169.50 credits left.")),
        "{texts:?}"
    );
}

#[sqlx::test]
async fn lead_time_zero_disables_that_kind(db: PgPool) {
    // The defaults: every lead time 0.
    let app = TestApp::spawn(db.clone()).await;
    course(&app, "Quiet", 2, 1).await;
    let listed = app.keycloak.call_count("kc_list_members");
    let run = run_job(&app, &[]).await;
    assert_eq!(run.code, 0, "{}", run.summary);
    assert_eq!(run.summary["notices_queued"], 0);
    assert!(notice_rows(&db).await.is_empty());
    assert_eq!(app.keycloak.call_count("kc_list_members"), listed);
}

#[sqlx::test]
async fn only_the_kinds_with_a_lead_time_are_queued(db: PgPool) {
    let app = app_with(db.clone(), 0, 40, 0).await;
    course(&app, "Ends only", 2, 1).await;
    let run = run_job(&app, &[]).await;
    assert_eq!(run.code, 0, "{}", run.summary);
    let rows = notice_rows(&db).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].kind, "course_end_notice");
    // No balance was needed.
    assert_eq!(app.accounting.call_count("acc_vlab_balance"), 0);
}

#[sqlx::test]
async fn course_voided_after_queueing_cancels_the_pending_notices(db: PgPool) {
    let app = app_with(db.clone(), 10, 40, 40).await;
    let (course, _) = course(&app, "Voided", 1, 1).await;
    app.smtp
        .inject(Fault::new("smtp_send", FaultAction::Status(451)).times(1000));
    let run = run_job(&app, &[]).await;
    assert_eq!(run.summary["notices_queued"], 3, "{}", run.summary);
    assert!(notice_rows(&db).await.iter().all(|r| r.status == "pending"));
    app.smtp.clear_faults();

    let (status, body) = app.as_admin().void_course(course.course_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let later = Utc::now() + chrono::Duration::days(1);
    let pass = email_outbox::run_pass(&app.services(), later, 50)
        .await
        .unwrap();
    // The void's drop cancelled the student's notice with the enrolment's other e-mails; the
    // faculty notices are cancelled when the pass finds the course voided.
    assert_eq!((pass.sent, pass.cancelled), (0, 2), "{pass:?}");
    assert!(
        notice_rows(&db)
            .await
            .iter()
            .all(|r| r.status == "cancelled")
    );
    assert!(subjects_starting(&app, "Drop deadline").is_empty());
}

#[sqlx::test]
async fn keycloak_failure_skips_faculty_notices_marks_partial_and_the_next_run_queues_them(
    db: PgPool,
) {
    let app = app_with(db.clone(), 10, 40, 40).await;
    let (course, _) = course(&app, "Keycloak", 1, 1).await;
    app.keycloak
        .inject(Fault::new("kc_list_members", FaultAction::Status(500)).times(10));
    let run = run_job(&app, &[]).await;
    assert_eq!(run.code, 2, "{}", run.summary);
    assert_eq!(run.summary["status"], "partial");
    assert_eq!(run.summary["notices_failed"], 1);
    assert_eq!(
        run.summary["notice_errors"],
        json!([{"course_id": course.course_id, "error": "Could not read the course administrators"}])
    );
    // The student's notice does not depend on the admins.
    let kinds: Vec<_> = notice_rows(&db).await.into_iter().map(|r| r.kind).collect();
    assert_eq!(kinds, ["access_end_notice"]);

    app.keycloak.clear_faults();
    let next = run_job(&app, &[]).await;
    assert_eq!(next.code, 0, "{}", next.summary);
    assert_eq!(next.summary["notices_queued"], 2);
    let kinds: Vec<_> = notice_rows(&db).await.into_iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [
            "access_end_notice",
            "course_end_notice",
            "drop_deadline_notice"
        ]
    );
}

#[sqlx::test]
async fn accounting_failure_queues_notices_without_the_credit_lines(db: PgPool) {
    let app = app_with(db.clone(), 10, 0, 40).await;
    course(&app, "No balances", 1, 1).await;
    app.accounting
        .inject(Fault::new("acc_vlab_balance", FaultAction::Status(500)).times(10));
    let run = run_job(&app, &[]).await;
    assert_eq!(run.code, 0, "{}", run.summary);
    assert_eq!(run.summary["notices_failed"], 0);
    let rows = notice_rows(&db).await;
    assert_eq!(rows.len(), 2);
    for row in &rows {
        match row.kind.as_str() {
            "drop_deadline_notice" => assert_eq!(row.payload["recoverable_now"], Value::Null),
            _ => assert_eq!(row.payload["remaining_credits"], Value::Null),
        }
        assert_eq!(row.status, "sent");
    }
    for m in app.smtp.messages() {
        let text = m.text().unwrap_or_default();
        assert!(!text.contains("could be dropped now"), "{text}");
        assert!(!text.contains("credits left"), "{text}");
    }
}

#[sqlx::test]
async fn dry_run_reports_notices_due_without_queueing(db: PgPool) {
    let app = app_with(db.clone(), 10, 40, 40).await;
    course(&app, "Dry notices", 3, 2).await;
    let calls = app.keycloak.call_count("kc_list_members") + app.accounting.calls().len();
    let run = run_job(&app, &["--dry-run"]).await;
    assert_eq!(run.code, 0, "{}", run.summary);
    assert_eq!(
        run.summary["notices_due"],
        json!({"drop_deadline_courses": 1, "course_end_courses": 1, "access_end_enrolments": 2})
    );
    assert_eq!(run.summary["notices_queued"], 0);
    assert!(notice_rows(&db).await.is_empty());
    assert_eq!(
        app.keycloak.call_count("kc_list_members") + app.accounting.calls().len(),
        calls
    );
    // A real run has no `notices_due`.
    let run = run_job(&app, &[]).await;
    assert!(run.summary.get("notices_due").is_none(), "{}", run.summary);
}

#[sqlx::test]
async fn faculty_notice_rows_are_not_cancelled_for_lack_of_an_enrolment(db: PgPool) {
    let app = app_with(db.clone(), 10, 40, 0).await;
    course(&app, "Faculty", 1, 0).await;
    app.smtp
        .inject(Fault::new("smtp_send", FaultAction::Status(451)).times(1000));
    run_job(&app, &[]).await;
    app.smtp.clear_faults();
    let later = Utc::now() + chrono::Duration::days(1);
    let pass = email_outbox::run_pass(&app.services(), later, 50)
        .await
        .unwrap();
    assert_eq!((pass.sent, pass.cancelled), (2, 0), "{pass:?}");
    let rows = notice_rows(&db).await;
    assert!(
        rows.iter()
            .all(|r| r.enrolment_id.is_none() && r.status == "sent")
    );
}

#[sqlx::test]
async fn student_notice_of_a_dropped_enrolment_is_cancelled_at_send_time(db: PgPool) {
    let app = app_with(db.clone(), 0, 0, 40).await;
    let (course, students) = course(&app, "Dropped later", 2, 2).await;
    app.smtp
        .inject(Fault::new("smtp_send", FaultAction::Status(451)).times(1000));
    let run = run_job(&app, &[]).await;
    assert_eq!(run.summary["notices_queued"], 2, "{}", run.summary);
    app.smtp.clear_faults();
    // A drop that has started (its deplete failed, so it did not settle): the enrolment is not
    // dropped yet, but it has a drop record.
    app.accounting
        .inject(Fault::new("acc_deplete_project", FaultAction::Status(500)));
    let (status, body) = app
        .as_faculty()
        .post_drop(course.course_id, &[students[0].seat_id])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let later = Utc::now() + chrono::Duration::days(1);
    let pass = email_outbox::run_pass(&app.services(), later, 50)
        .await
        .unwrap();
    assert_eq!((pass.sent, pass.cancelled), (1, 1), "{pass:?}");
    for row in notice_rows(&db).await {
        let expected = if row.enrolment_id == Some(students[0].enrolment_id) {
            "cancelled"
        } else {
            "sent"
        };
        assert_eq!(row.status, expected, "{row:?}");
    }
}

#[sqlx::test]
async fn a_changed_end_date_cancels_the_student_notice(db: PgPool) {
    let app = app_with(db.clone(), 0, 0, 40).await;
    let (course, _) = course(&app, "Moved", 1, 1).await;
    app.smtp
        .inject(Fault::new("smtp_send", FaultAction::Status(451)).times(1000));
    run_job(&app, &[]).await;
    app.smtp.clear_faults();
    sqlx::query("UPDATE course SET end_date = end_date - interval '1 day' WHERE id = $1")
        .bind(course.course_id)
        .execute(&db)
        .await
        .unwrap();
    let later = Utc::now() + chrono::Duration::days(1);
    let pass = email_outbox::run_pass(&app.services(), later, 50)
        .await
        .unwrap();
    assert_eq!(pass.cancelled, 1, "{pass:?}");
}

#[sqlx::test]
async fn an_image_without_the_notice_kinds_leaves_notice_rows_untouched(db: PgPool) {
    let app = app_with(db.clone(), 10, 40, 40).await;
    course(&app, "Old image", 1, 1).await;
    app.smtp
        .inject(Fault::new("smtp_send", FaultAction::Status(451)).times(1000));
    run_job(&app, &[]).await;
    app.smtp.clear_faults();
    let before = notice_rows(&db).await;
    assert_eq!(before.len(), 3);

    // A binary from before the notices knows only the claim e-mail.
    let later = Utc::now() + chrono::Duration::days(1);
    let pass = email_outbox::run_pass_of(&app.services(), &["enrolment_claim"], later, 50)
        .await
        .unwrap();
    assert_eq!(pass.leased(), 0, "{pass:?}");
    let after = notice_rows(&db).await;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(
            (a.id, a.status.as_str(), a.attempts, a.lease_id),
            (b.id, "pending", b.attempts, None)
        );
    }
    // This binary sends them.
    let pass = email_outbox::run_pass(&app.services(), later, 50)
        .await
        .unwrap();
    assert_eq!(pass.sent, 3, "{pass:?}");
}

#[sqlx::test(migrations = false)]
async fn claim_emails_queued_before_the_notices_migration_are_still_sent(db: PgPool) {
    migrate_before(&db, "notices").await;
    let (lab, course) = crate::claim_emails::upgrade::seed_course(&db).await;
    let enrolment =
        crate::claim_emails::upgrade::seed_enrolment(&db, lab, course, 1, None, "pending").await;
    MIGRATOR.run(&db).await.expect("notices");
    let app = TestApp::spawn(db.clone()).await;
    sqlx::query("UPDATE email_outbox SET next_attempt_at = now() - interval '1 minute'")
        .execute(&db)
        .await
        .unwrap();
    // The server's own worker may send it first; either way it goes out exactly once.
    let pass = email_outbox::run_pass(&app.services(), Utc::now(), 50)
        .await
        .unwrap();
    assert!(pass.sent <= 1, "{pass:?}");
    let messages = app.smtp.wait_for_messages(1, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    // The worker's pass may still be recording the send it made.
    let mut row: (String, Option<String>) = (String::new(), None);
    for _ in 0..50 {
        row = sqlx::query_as("SELECT status, dedup_key FROM email_outbox WHERE enrolment_id = $1")
            .bind(enrolment)
            .fetch_one(&db)
            .await
            .unwrap();
        if row.0 == "sent" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((row.0.as_str(), row.1), ("sent", None));
}

//! The claim e-mail outbox (rules.md §6.2): the first attempt made by assign, and the pass the
//! worker and the expiry job run (`usecases::email_outbox::run_pass`).

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::PgPool;
use uuid::Uuid;
use vlab_courses::domain::backoff::backoff_bounds;
use vlab_courses::repo;
use vlab_courses::usecases::email_outbox::{self, EmailPassSummary, run_pass};
use vlab_emulators::{Fault, FaultAction};

use crate::fixtures::{self, ActiveCourse, students_body};
use crate::helpers::{ReplyExt, TestApp, exec, fetch_row, fetch_scalar};

/// One outbox row, as the tests read it.
#[derive(Debug, sqlx::FromRow)]
struct Row {
    status: String,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
    last_error: Option<String>,
    sent_at: Option<DateTime<Utc>>,
    lease_id: Option<Uuid>,
}

async fn row(app: &TestApp, enrolment_id: Uuid) -> Row {
    fetch_row(
        &app.db,
        "SELECT status, attempts, next_attempt_at, last_error, sent_at, lease_id
         FROM email_outbox WHERE enrolment_id = $1",
        enrolment_id,
    )
    .await
}

/// Assigns `n` students while the first `failures` SMTP sends fail with 451; returns the
/// enrolment ids and whether each first attempt was accepted.
async fn assign_with_smtp_failures(
    app: &TestApp,
    n: usize,
    failures: u32,
) -> (ActiveCourse, Vec<(Uuid, bool)>, DateTime<Utc>) {
    let course = fixtures::course_with_faculty(app, "Neuro 101").await;
    fixtures::provision(app, course.course_id, n).await;
    app.smtp
        .inject(Fault::new("smtp_send", FaultAction::Status(451)).times(failures));
    let students: Vec<(String, String)> = (1..=n)
        .map(|i| (format!("stu-{i}"), format!("stu-{i}@uni.org")))
        .collect();
    let pairs: Vec<(&str, &str)> = students
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let before = Utc::now();
    let body = app
        .as_faculty()
        .post_assign(course.course_id, &students_body(&pairs))
        .await
        .ok_body();
    let results = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["assignment_successful"], true, "{r}");
            (
                r["enrolment_id"].as_str().unwrap().parse().unwrap(),
                r["email_sent"].as_bool().unwrap(),
            )
        })
        .collect();
    (course, results, before)
}

#[sqlx::test]
async fn a_failed_first_send_is_retried_by_a_later_pass(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, results, before) = assign_with_smtp_failures(&app, 1, 1).await;
    let (enrolment_id, sent) = results[0];
    assert!(
        !sent,
        "email_sent is false when SMTP refused the first attempt"
    );
    let failed = row(&app, enrolment_id).await;
    assert_eq!((failed.status.as_str(), failed.attempts), ("pending", 1));
    assert!(failed.last_error.is_some());
    assert_eq!(failed.lease_id, None);
    let (low, high) = backoff_bounds(1);
    assert!(
        failed.next_attempt_at >= before + low && failed.next_attempt_at <= Utc::now() + high,
        "{failed:?}"
    );
    assert!(app.smtp.messages().is_empty());

    // Not due yet: nothing happens.
    let services = app.services();
    let summary = run_pass(&services, Utc::now(), 50).await.unwrap();
    assert_eq!(summary, EmailPassSummary::default());

    let later = Utc::now() + chrono::Duration::minutes(2);
    let summary = run_pass(&services, later, 50).await.unwrap();
    assert_eq!(
        summary,
        EmailPassSummary {
            sent: 1,
            ..Default::default()
        }
    );
    let sent = row(&app, enrolment_id).await;
    assert_eq!((sent.status.as_str(), sent.attempts), ("sent", 2));
    assert_eq!(sent.sent_at, Some(later.trunc_subsecs(6)));
    assert_eq!(sent.lease_id, None);
    let messages = app.smtp.wait_for_messages(1, Duration::from_secs(5)).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].rcpt_to, ["stu-1@uni.org"]);
    assert!(
        messages[0]
            .links
            .iter()
            .any(|l| l.ends_with(&format!("enrolment_id={enrolment_id}")))
    );

    // Sent rows are never sent again.
    let summary = run_pass(&services, later + chrono::Duration::hours(1), 50)
        .await
        .unwrap();
    assert_eq!(summary, EmailPassSummary::default());
}

#[sqlx::test]
async fn an_email_gives_up_after_the_twelfth_failed_attempt(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, results, _) = assign_with_smtp_failures(&app, 1, 12).await;
    let enrolment_id = results[0].0;
    let services = app.services();
    for attempt in 2..=12 {
        let due = row(&app, enrolment_id).await;
        assert_eq!(
            (due.status.as_str(), due.attempts),
            ("pending", attempt - 1)
        );
        let now = due.next_attempt_at + chrono::Duration::seconds(1);
        let summary = run_pass(&services, now, 50).await.unwrap();
        let after = row(&app, enrolment_id).await;
        assert_eq!(after.attempts, attempt);
        if attempt < 12 {
            assert_eq!(
                summary,
                EmailPassSummary {
                    failed: 1,
                    ..Default::default()
                }
            );
            let (low, high) = backoff_bounds(attempt);
            let delay = after.next_attempt_at - now;
            assert!(
                delay >= low - chrono::Duration::milliseconds(1) && delay <= high,
                "attempt {attempt}: {delay}"
            );
        } else {
            assert_eq!(
                summary,
                EmailPassSummary {
                    failed: 1,
                    gave_up: 1,
                    ..Default::default()
                }
            );
            assert_eq!(after.status, "failed");
        }
    }
    let far = Utc::now() + chrono::Duration::days(30);
    assert_eq!(
        run_pass(&services, far, 50).await.unwrap(),
        EmailPassSummary::default()
    );
    assert!(app.smtp.messages().is_empty());
}

#[sqlx::test]
async fn the_email_of_a_dropped_enrolment_is_cancelled(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, results, _) = assign_with_smtp_failures(&app, 2, 2).await;
    exec(
        &app.db,
        "UPDATE course_enrolment SET is_dropped = true WHERE id = $1",
        results[0].0,
    )
    .await;
    let summary = run_pass(
        &app.services(),
        Utc::now() + chrono::Duration::minutes(2),
        50,
    )
    .await
    .unwrap();
    assert_eq!(
        summary,
        EmailPassSummary {
            sent: 1,
            cancelled: 1,
            ..Default::default()
        }
    );
    let cancelled = row(&app, results[0].0).await;
    assert_eq!(
        (cancelled.status.as_str(), cancelled.attempts),
        ("cancelled", 1)
    );
    assert_eq!(cancelled.lease_id, None);
    let messages = app.smtp.wait_for_messages(1, Duration::from_secs(5)).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].rcpt_to, ["stu-2@uni.org"]);
}

#[sqlx::test]
async fn concurrent_passes_send_each_email_once_and_respect_the_limit(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, results, _) = assign_with_smtp_failures(&app, 5, 5).await;
    assert!(results.iter().all(|(_, sent)| !sent));
    let services = app.services();
    let now = Utc::now() + chrono::Duration::minutes(2);

    let limited = run_pass(&services, now, 2).await.unwrap();
    assert_eq!(limited.sent, 2);
    let (a, b) = tokio::join!(run_pass(&services, now, 50), run_pass(&services, now, 50));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.sent + b.sent, 3, "{a:?} {b:?}");
    assert_eq!(a.failed + b.failed, 0);
    // Give a duplicate send a moment to show up before counting.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(app.smtp.messages().len(), 5);
    for (enrolment_id, _) in results {
        let sent = row(&app, enrolment_id).await;
        assert_eq!((sent.status.as_str(), sent.attempts), ("sent", 2));
    }
}

#[sqlx::test]
async fn a_row_leased_by_another_worker_is_left_alone_until_its_lease_lapses(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, results, _) = assign_with_smtp_failures(&app, 1, 1).await;
    let enrolment_id = results[0].0;
    let now = Utc::now() + chrono::Duration::minutes(2);
    // Another worker holds it until one minute after `now`.
    sqlx::query(
        "UPDATE email_outbox SET lease_id = gen_random_uuid(), lease_until = $2 WHERE enrolment_id = $1",
    )
    .bind(enrolment_id)
    .bind(now + chrono::Duration::minutes(1))
    .execute(&app.db)
    .await
    .unwrap();
    let services = app.services();
    assert_eq!(
        run_pass(&services, now, 50).await.unwrap(),
        EmailPassSummary::default()
    );
    let summary = run_pass(&services, now + chrono::Duration::minutes(2), 50)
        .await
        .unwrap();
    assert_eq!(summary.sent, 1);
    assert_eq!(row(&app, enrolment_id).await.status, "sent");
}

#[sqlx::test]
async fn the_email_pass_leases_only_the_kinds_it_is_given(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, results, _) = assign_with_smtp_failures(&app, 1, 1).await;
    let enrolment_id = results[0].0;
    let now = Utc::now() + chrono::Duration::minutes(2);
    let lease = |kinds: &'static [&'static str]| {
        let db = app.db.clone();
        async move {
            repo::email_outbox::lease_due(
                &db,
                kinds,
                Uuid::new_v4(),
                now,
                now + chrono::Duration::minutes(2),
                50,
            )
            .await
            .unwrap()
        }
    };
    assert!(lease(&[]).await.is_empty());
    assert!(lease(&["course_end_notice"]).await.is_empty());
    assert_eq!(row(&app, enrolment_id).await.lease_id, None);
    let leased = lease(email_outbox::KINDS).await;
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].email.kind, "enrolment_claim");
    assert_eq!(leased[0].email.enrolment_id, Some(enrolment_id));
}

#[sqlx::test]
async fn a_row_of_a_kind_this_binary_cannot_render_waits_untouched(db: PgPool) {
    let app = TestApp::spawn(db).await;
    // A newer release may queue kinds this one does not know; the schema of this test's own
    // database is widened to hold one.
    sqlx::query("ALTER TABLE email_outbox DROP CONSTRAINT ck_email_outbox_kind")
        .execute(&app.db)
        .await
        .unwrap();
    let id: Uuid = fetch_scalar(
        &app.db,
        "INSERT INTO email_outbox (kind, recipient, payload, next_attempt_at)
         VALUES ('grade_report', $1, '{}', now()) RETURNING id",
        "prof@uni.org",
    )
    .await;
    let summary = run_pass(
        &app.services(),
        Utc::now() + chrono::Duration::minutes(2),
        50,
    )
    .await
    .unwrap();
    assert_eq!(summary, EmailPassSummary::default());
    let waiting: Row = fetch_row(
        &app.db,
        "SELECT status, attempts, next_attempt_at, last_error, sent_at, lease_id
         FROM email_outbox WHERE id = $1",
        id,
    )
    .await;
    assert_eq!((waiting.status.as_str(), waiting.attempts), ("pending", 0));
    assert_eq!((waiting.lease_id, waiting.last_error), (None, None));
}

#[sqlx::test]
async fn a_woken_worker_drains_more_than_one_batch_at_once(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, results, _) = assign_with_smtp_failures(&app, 1, 1).await;
    let enrolment_id = results[0].0;
    // The worker's start-up pass is over; the next one is 24-36 s away unless woken.
    tokio::time::sleep(Duration::from_millis(500)).await;
    sqlx::query(
        "INSERT INTO email_outbox (kind, enrolment_id, recipient, payload, next_attempt_at)
         SELECT kind, enrolment_id, recipient, payload, now() FROM email_outbox, generate_series(1, 119)
         WHERE enrolment_id = $1",
    )
    .bind(enrolment_id)
    .execute(&app.db)
    .await
    .unwrap();
    exec(
        &app.db,
        "UPDATE email_outbox SET next_attempt_at = now() WHERE enrolment_id = $1",
        enrolment_id,
    )
    .await;
    let before = std::time::Instant::now();
    app.services().worker_wake.notify_one();
    let messages = app
        .smtp
        .wait_for_messages(120, Duration::from_secs(15))
        .await;
    assert_eq!(messages.len(), 120, "after {:?}", before.elapsed());
    // SMTP accepts a message just before its row is marked sent.
    let mut unsent = i64::MAX;
    for _ in 0..50 {
        unsent = fetch_scalar(
            &app.db,
            "SELECT count(*) FROM email_outbox WHERE enrolment_id = $1 AND status <> 'sent'",
            enrolment_id,
        )
        .await;
        if unsent == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(unsent, 0);
}

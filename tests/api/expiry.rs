//! The `expire-courses` binary (rules.md §8), run as a real process against a database
//! prepared through the API; direct SQL only moves dates into the past.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;
use vlab_emulators::{Fault, FaultAction};

use crate::fixtures::{self, ActiveCourse};
use crate::helpers::{TestApp, assert_keys, fetch_row, fetch_scalar};

pub struct JobRun {
    pub code: i32,
    pub summary: Value,
    pub stdout_lines: usize,
}

pub async fn run_job(app: &TestApp, args: &[&str]) -> JobRun {
    run_job_with(app, args, |_| {}).await
}

pub async fn run_job_with(
    app: &TestApp,
    args: &[&str],
    tweak: impl FnOnce(&mut tokio::process::Command),
) -> JobRun {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_expire-courses"));
    command
        .args(args)
        .env_clear()
        .envs(&app.vars)
        .env("RUST_LOG", "warn")
        .current_dir(std::env::temp_dir());
    tweak(&mut command);
    let output = command.output().await.expect("run expire-courses");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let summary = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|_| panic!("stdout is not one JSON line: {stdout:?}"));
    JobRun {
        code: output.status.code().unwrap_or(-1),
        summary,
        stdout_lines: stdout.lines().count(),
    }
}

/// Moves every date of the course into the past: it has ended.
pub async fn end_course(db: &PgPool, course_id: Uuid) {
    sqlx::query(
        "UPDATE course SET start_date = now() - interval '10 days',
                last_drop_date = now() - interval '5 days', end_date = now() - interval '1 minute'
         WHERE id = $1",
    )
    .bind(course_id)
    .execute(db)
    .await
    .unwrap();
}

async fn undropped(db: &PgPool, course_id: Uuid) -> i64 {
    fetch_scalar(
        db,
        "SELECT count(*) FROM course_enrolment WHERE course_id = $1 AND NOT is_dropped",
        course_id,
    )
    .await
}

pub async fn ended_course_with_students(app: &TestApp, name: &str, n: usize) -> ActiveCourse {
    let (course, _) = fixtures::course_with_students(app, name, n).await;
    end_course(&app.db, course.course_id).await;
    course
}

#[sqlx::test]
async fn an_ended_course_is_closed_once_and_a_rerun_does_nothing(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = ended_course_with_students(&app, "Ended", 3).await;

    let run = run_job(&app, &[]).await;
    assert_eq!(run.code, 0, "{}", run.summary);
    assert_eq!(run.stdout_lines, 1);
    let s = &run.summary;
    assert_eq!(s["job"], "expire-courses");
    assert_eq!(s["status"], "ok");
    assert_eq!(s["expired_courses_found"], 1);
    assert_eq!(s["enrolments_dropped"], 3);
    assert_eq!(s["enrolments_failed"], 0);
    assert_eq!(s["access_removals_completed"], 3);
    assert_eq!(s["vlabs_depleted"], 1);
    assert_eq!(s["courses"][0]["course_id"], json!(course.course_id));
    assert_eq!(s["courses"][0]["status"], "active");
    assert_eq!(s["courses"][0]["vlab_depleted"], true);
    assert_eq!(s["courses"][0]["error"], Value::Null);

    // Every student dropped, every seat consumed (the course is past its last drop date).
    assert_eq!(undropped(&db, course.course_id).await, 0);
    let consumed: i64 = fetch_scalar(
        &db,
        "SELECT count(*) FROM seat WHERE course_id = $1 AND is_consumed",
        course.course_id,
    )
    .await;
    assert_eq!(consumed, 3);
    let done: i64 = fetch_scalar(&db, "SELECT count(*) FROM enrolment_drop WHERE course_id = $1 AND state = 'done' AND reason = 'expiry'", course.course_id).await;
    assert_eq!(done, 3);
    let (status, body): (String, bool) = fetch_row(
        &db,
        "SELECT status, budget_depleted FROM course WHERE id = $1",
        course.course_id,
    )
    .await;
    assert_eq!((status.as_str(), body), ("active", true));
    assert_eq!(app.accounting.call_count("acc_deplete_vlab"), 1);
    assert_eq!(app.accounting.call_count("acc_deplete_project"), 3);
    assert_eq!(
        app.accounting.balance(course.vlab_id),
        Some(rust_decimal::Decimal::ZERO)
    );

    let again = run_job(&app, &[]).await;
    assert_eq!(again.code, 0);
    assert_eq!(again.summary["status"], "ok");
    assert_eq!(again.summary["expired_courses_found"], 0);
    assert_eq!(again.summary["enrolments_dropped"], 0);
    assert_eq!(app.accounting.call_count("acc_deplete_vlab"), 1);
    assert_eq!(app.accounting.call_count("acc_deplete_project"), 3);
}

#[sqlx::test]
async fn a_voided_course_left_unfinished_is_finished_by_the_job(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, _) = fixtures::course_with_students(&app, "Voided", 2).await;
    app.accounting
        .inject(Fault::new("acc_deplete_project", FaultAction::Status(500)).times(2));
    app.accounting
        .inject(Fault::new("acc_deplete_vlab", FaultAction::Status(500)).times(1));
    let (status, body) = app.as_admin().void_course(course.course_id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["void_summary"]["enrolments_failed"], 2);
    assert_eq!(body["data"]["void_summary"]["budget_depleted"], false);

    let run = run_job(&app, &[]).await;
    assert_eq!(run.code, 0, "{}", run.summary);
    assert_eq!(run.summary["expired_courses_found"], 1);
    assert_eq!(run.summary["courses"][0]["status"], "voided");
    assert_eq!(run.summary["enrolments_dropped"], 2);
    assert_eq!(run.summary["vlabs_depleted"], 1);
    assert_eq!(undropped(&db, course.course_id).await, 0);
    assert_eq!(run_job(&app, &[]).await.summary["expired_courses_found"], 0);
}

#[sqlx::test]
async fn a_draft_course_with_past_dates_is_left_alone(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let past = chrono::Utc::now() - chrono::Duration::days(30);
    let draft = fixtures::create_draft_course(
        &app,
        "Old draft",
        Some(past),
        Some(past + chrono::Duration::days(1)),
        Some(past + chrono::Duration::days(2)),
    )
    .await;
    let run = run_job(&app, &[]).await;
    assert_eq!(run.code, 0);
    assert_eq!(run.summary["expired_courses_found"], 0);
    let (status, depleted): (String, bool) = fetch_row(
        &db,
        "SELECT status, budget_depleted FROM course WHERE id = $1",
        draft.course_id,
    )
    .await;
    assert_eq!((status.as_str(), depleted), ("draft", false));
    assert_eq!(app.accounting.call_count("acc_deplete_vlab"), 0);
}

#[sqlx::test]
async fn an_accounting_failure_exits_2_and_the_next_run_completes_the_work(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = ended_course_with_students(&app, "Flaky", 2).await;
    app.accounting
        .inject(Fault::new("acc_deplete_project", FaultAction::Status(500)).times(1));
    app.accounting
        .inject(Fault::new("acc_deplete_vlab", FaultAction::Status(503)).times(1));

    let first = run_job(&app, &[]).await;
    assert_eq!(first.code, 2, "{}", first.summary);
    assert_eq!(first.summary["status"], "partial");
    assert_eq!(first.summary["enrolments_dropped"], 1);
    assert_eq!(first.summary["enrolments_failed"], 1);
    assert_eq!(first.summary["vlab_depletions_failed"], 1);
    assert_eq!(first.summary["courses"][0]["vlab_depleted"], false);
    assert_eq!(undropped(&db, course.course_id).await, 1);

    let second = run_job(&app, &[]).await;
    assert_eq!(second.code, 0, "{}", second.summary);
    assert_eq!(second.summary["status"], "ok");
    assert_eq!(second.summary["enrolments_dropped"], 1);
    assert_eq!(second.summary["vlabs_depleted"], 1);
    assert_eq!(undropped(&db, course.course_id).await, 0);
}

#[sqlx::test]
async fn two_instances_started_together_drop_each_enrolment_once(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = ended_course_with_students(&app, "Twice", 6).await;
    // Slow accounting so that the two runs overlap.
    app.accounting.set_latency(Duration::from_millis(100));

    let (a, b) = tokio::join!(run_job(&app, &[]), run_job(&app, &[]));
    for run in [&a, &b] {
        assert_eq!(run.code, 0, "{}", run.summary);
    }
    let statuses = [a.summary["status"].clone(), b.summary["status"].clone()];
    assert!(statuses.contains(&json!("ok")), "{statuses:?}");
    let dropped = a.summary["enrolments_dropped"].as_u64().unwrap_or(0)
        + b.summary["enrolments_dropped"].as_u64().unwrap_or(0);
    assert_eq!(dropped, 6);
    if statuses.contains(&json!("skipped")) {
        let skipped = if a.summary["status"] == "skipped" {
            &a
        } else {
            &b
        };
        assert_keys(
            &skipped.summary,
            &["job", "status", "started_at", "finished_at"],
        );
    }
    assert_eq!(app.accounting.call_count("acc_deplete_project"), 6);
    assert_eq!(app.accounting.call_count("acc_deplete_vlab"), 1);
    assert_eq!(undropped(&db, course.course_id).await, 0);
}

#[sqlx::test]
async fn a_run_that_finds_the_lock_taken_says_skipped(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let mut holder = db.acquire().await.unwrap();
    let locked: bool = sqlx::query_scalar(
        "SELECT pg_try_advisory_lock(hashtextextended('vlab-courses:expire-courses', 0))",
    )
    .fetch_one(&mut *holder)
    .await
    .unwrap();
    assert!(locked);
    let run = run_job(&app, &[]).await;
    assert_eq!(run.code, 0);
    assert_eq!(run.summary["status"], "skipped");
}

#[sqlx::test]
async fn dry_run_lists_the_work_and_changes_nothing(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = ended_course_with_students(&app, "Dry", 2).await;
    let calls_before = app.accounting.calls().len();

    let run = run_job(&app, &["--dry-run"]).await;
    assert_eq!(run.code, 0, "{}", run.summary);
    assert_eq!(run.summary["dry_run"], true);
    assert_eq!(run.summary["expired_courses_found"], 1);
    assert_eq!(
        run.summary["courses"][0]["course_id"],
        json!(course.course_id)
    );
    assert_eq!(run.summary["enrolments_dropped"], 0);
    assert_eq!(undropped(&db, course.course_id).await, 2);
    let drops: i64 = sqlx::query_scalar("SELECT count(*) FROM enrolment_drop")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(drops, 0);
    assert_eq!(app.accounting.calls().len(), calls_before);
}

#[sqlx::test]
async fn it_cannot_run_without_configuration_or_schema(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let run = run_job_with(&app, &[], |c| {
        c.env_remove("DATABASE_URL");
    })
    .await;
    assert_eq!(run.code, 1);
    assert_eq!(run.summary["status"], "error");
    assert!(
        run.summary["error"]
            .as_str()
            .unwrap()
            .contains("DATABASE_URL"),
        "{}",
        run.summary
    );

    sqlx::query("DELETE FROM _sqlx_migrations")
        .execute(&db)
        .await
        .unwrap();
    let run = run_job(&app, &[]).await;
    assert_eq!(run.code, 1);
    assert_eq!(run.summary["status"], "error");
}

#[test]
fn help_explains_the_flags_and_exit_codes() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_expire-courses"))
        .arg("--help")
        .output()
        .expect("run --help");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(text.contains("--dry-run"), "{text}");
    assert!(text.contains("Exit codes"), "{text}");
}

#[sqlx::test]
async fn a_pending_revocation_keeps_the_course_selected_until_r_has_run(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, students) = fixtures::course_with_students(&app, "Unclaimed", 1).await;
    let wrong = app.users.students[0].clone();
    let enrolment = students[0].enrolment_id;
    fixtures::claim_and_activate(&app, enrolment, &wrong).await;
    app.keycloak
        .inject(Fault::new("kc_remove_member", FaultAction::Status(500)).times(1));
    let path = format!(
        "/seats/courses/{}/enrolments/{enrolment}/unclaim",
        course.course_id
    );
    let (status, body) = app.as_faculty().post_empty(&path).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(body["data"]["access_removed"], false);
    end_course(&db, course.course_id).await;
    // Another worker holds the revocation during the first run.
    sqlx::query(
        "UPDATE access_revocation SET lease_id = gen_random_uuid(),
             lease_until = now() + interval '1 hour' WHERE enrolment_id = $1",
    )
    .bind(enrolment)
    .execute(&db)
    .await
    .unwrap();
    let run = run_job(&app, &[]).await;
    assert_eq!(run.code, 0, "{}", run.summary);
    assert_eq!(run.summary["access_revocations_completed"], 0);
    assert_eq!(run.summary["access_revocations_failed"], 0);
    // The drop emptied the project groups; the lab membership is the revocation's to remove.
    assert_eq!(
        app.keycloak.user_group_paths(wrong.id),
        [format!("/vlab/{}/member", course.vlab_id)]
    );

    // Once the lease lapsed, the course is selected for the revocation alone.
    sqlx::query(
        "UPDATE access_revocation SET lease_until = now() - interval '1 second'
         WHERE enrolment_id = $1",
    )
    .bind(enrolment)
    .execute(&db)
    .await
    .unwrap();
    let run = run_job(&app, &[]).await;
    assert_eq!(run.code, 0, "{}", run.summary);
    assert_eq!(run.summary["expired_courses_found"], 1);
    assert_eq!(run.summary["enrolments_dropped"], 0);
    assert_eq!(run.summary["access_revocations_completed"], 1);
    assert!(app.keycloak.user_group_paths(wrong.id).is_empty());
    let state: String = fetch_scalar(
        &db,
        "SELECT state FROM access_revocation WHERE enrolment_id = $1",
        enrolment,
    )
    .await;
    assert_eq!(state, "done");
    assert_eq!(run_job(&app, &[]).await.summary["expired_courses_found"], 0);
}

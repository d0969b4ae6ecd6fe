//! The expiry report: every `expire-courses` run leaves an `expiry_run` row with its printed
//! summary, and service admins read them at `GET /courses/expiry-runs[/{run_id}]`.

use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;
use vlab_courses::repo::db::MIGRATOR;
use vlab_emulators::{Fault, FaultAction};

use crate::expiry::{ended_course_with_students, run_job, run_job_with};
use crate::fixtures;
use crate::helpers::{
    ReplyExt, TestApp, assert_keys, data_strings, fetch_scalar, migrate_before, uuid_of,
};

/// An `expiry_run` row as stored.
#[derive(Debug, sqlx::FromRow)]
struct RunRow {
    id: Uuid,
    status: String,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    exit_code: Option<i32>,
    host: Option<String>,
    course_ids: Vec<Uuid>,
    summary: Option<Value>,
}

async fn runs(db: &PgPool) -> Vec<RunRow> {
    sqlx::query_as(
        "SELECT id, status, started_at, finished_at, exit_code, host, course_ids, summary
         FROM expiry_run ORDER BY started_at, id",
    )
    .fetch_all(db)
    .await
    .unwrap()
}

async fn run_row(db: &PgPool, id: Uuid) -> RunRow {
    sqlx::query_as(
        "SELECT id, status, started_at, finished_at, exit_code, host, course_ids, summary
         FROM expiry_run WHERE id = $1",
    )
    .bind(id)
    .fetch_one(db)
    .await
    .unwrap_or_else(|e| panic!("no run {id}: {e}"))
}

/// The job as a child process that the test can watch and kill.
fn start_job(app: &TestApp, host: &str) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_expire-courses"))
        .env_clear()
        .envs(&app.vars)
        .env("RUST_LOG", "warn")
        .env("HOSTNAME", host)
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start expire-courses")
}

/// Waits (up to 20 s) for a row with this status and returns it.
async fn wait_for_status(db: &PgPool, status: &str) -> RunRow {
    for _ in 0..200 {
        if let Some(row) = runs(db).await.into_iter().find(|r| r.status == status) {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no {status} run row appeared");
}

/// Takes the job's advisory lock on a connection of the test's own, as another run would.
async fn hold_the_lock(db: &PgPool) -> sqlx::pool::PoolConnection<sqlx::Postgres> {
    let mut holder = db.acquire().await.unwrap();
    let locked: bool = sqlx::query_scalar(
        "SELECT pg_try_advisory_lock(hashtextextended('vlab-courses:expire-courses', 0))",
    )
    .fetch_one(&mut *holder)
    .await
    .unwrap();
    assert!(locked);
    holder
}

/// Releases it (a pooled connection would keep a session lock when returned).
async fn release_the_lock(mut holder: sqlx::pool::PoolConnection<sqlx::Postgres>) {
    let _: bool = sqlx::query_scalar(
        "SELECT pg_advisory_unlock(hashtextextended('vlab-courses:expire-courses', 0))",
    )
    .fetch_one(&mut *holder)
    .await
    .unwrap();
}

#[sqlx::test]
async fn each_run_records_its_summary_exactly_as_printed(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = ended_course_with_students(&app, "Recorded", 2).await;

    // ok
    let ok = run_job_with(&app, &[], |c| {
        c.env("HOSTNAME", "expire-courses-29412345-x7k2p");
    })
    .await;
    assert_eq!(ok.code, 0, "{}", ok.summary);
    let run_id = uuid_of(&ok.summary["run_id"]);
    let row = run_row(&db, run_id).await;
    assert_eq!(row.status, "ok");
    assert_eq!(row.exit_code, Some(0));
    assert_eq!(row.summary.as_ref(), Some(&ok.summary));
    assert_eq!(row.course_ids, [course.course_id]);
    assert_eq!(row.host.as_deref(), Some("expire-courses-29412345-x7k2p"));
    assert!(row.finished_at.is_some_and(|f| f >= row.started_at));
    // The run id is the uuid of the request id of the run's events.
    let events: i64 = fetch_scalar(
        &db,
        "SELECT count(*) FROM course_event WHERE request_id = $1",
        format!("expire-courses-{run_id}"),
    )
    .await;
    assert!(events > 0);

    // partial: Keycloak refuses the access removal of a second course's claimed student
    let (failing, students) = fixtures::course_with_students(&app, "Keycloak down", 1).await;
    let student = app.users.students[0].clone();
    fixtures::claim_and_activate(&app, students[0].enrolment_id, &student).await;
    crate::expiry::end_course(&db, failing.course_id).await;
    app.keycloak
        .inject(Fault::new("kc_remove_member", FaultAction::Status(500)).times(100));
    let partial = run_job(&app, &[]).await;
    assert_eq!(partial.code, 2, "{}", partial.summary);
    let row = run_row(&db, uuid_of(&partial.summary["run_id"])).await;
    assert_eq!((row.status.as_str(), row.exit_code), ("partial", Some(2)));
    assert_eq!(row.summary.as_ref(), Some(&partial.summary));
    assert_eq!(row.course_ids, [failing.course_id]);
    assert_eq!(row.host, None);
    app.keycloak.clear_faults();

    // skipped: the test holds the lock
    let holder = hold_the_lock(&db).await;
    let before = runs(&db).await.len();
    let skipped = run_job(&app, &[]).await;
    assert_eq!(skipped.code, 0);
    assert_eq!(skipped.summary["status"], "skipped");
    let all = runs(&db).await;
    assert_eq!(all.len(), before + 1);
    let row = all
        .iter()
        .find(|r| r.status == "skipped")
        .expect("skipped row");
    assert_eq!(row.summary.as_ref(), Some(&skipped.summary));
    assert_eq!(row.exit_code, Some(0));
    assert!(row.course_ids.is_empty());
    release_the_lock(holder).await;

    // error: the migrations are missing, so nothing is recorded
    sqlx::query("DELETE FROM _sqlx_migrations")
        .execute(&db)
        .await
        .unwrap();
    let error = run_job(&app, &[]).await;
    assert_eq!(error.code, 1);
    assert_eq!(error.summary["status"], "error");
    assert_eq!(runs(&db).await.len(), before + 1);
}

#[sqlx::test]
async fn a_running_row_is_visible_during_a_slow_run(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    ended_course_with_students(&app, "Slow", 3).await;
    app.accounting.set_latency(Duration::from_millis(400));

    let job = start_job(&app, "pod-slow");
    let running = wait_for_status(&db, "running").await;
    assert_eq!(running.host.as_deref(), Some("pod-slow"));
    assert_eq!(running.summary, None);
    assert_eq!(running.finished_at, None);
    assert_eq!(running.exit_code, None);
    let (status, page) = app
        .as_admin()
        .get("/courses/expiry-runs?status=running")
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["data"][0]["id"], json!(running.id));
    assert_eq!(page["data"][0]["summary"], Value::Null);

    let output = job.wait_with_output().await.unwrap();
    assert_eq!(output.status.code(), Some(0));
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let row = run_row(&db, running.id).await;
    assert_eq!(row.status, "ok");
    assert_eq!(row.summary, Some(printed));
}

#[sqlx::test]
async fn killed_run_is_marked_abandoned_by_the_next_run(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    ended_course_with_students(&app, "Killed", 3).await;
    app.accounting.set_latency(Duration::from_millis(400));

    let mut job = start_job(&app, "pod-killed");
    let killed = wait_for_status(&db, "running").await;
    job.kill().await.unwrap(); // SIGKILL: the run cannot record anything
    job.wait().await.unwrap();
    assert_eq!(run_row(&db, killed.id).await.status, "running");

    app.accounting.set_latency(Duration::ZERO);
    let next = run_job(&app, &[]).await;
    // The drops the killed run had leased wait for their leases: the next run is partial.
    assert!([0, 2].contains(&next.code), "{}", next.summary);
    let row = run_row(&db, killed.id).await;
    assert_eq!(row.status, "abandoned");
    assert_eq!(
        (row.summary, row.exit_code, row.finished_at),
        (None, None, None)
    );
    let row = run_row(&db, uuid_of(&next.summary["run_id"])).await;
    assert_eq!(row.status, next.summary["status"].as_str().unwrap());
    assert_eq!(row.summary, Some(next.summary));
}

#[sqlx::test]
async fn two_racing_runs_record_one_report_each(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    ended_course_with_students(&app, "Racing", 4).await;
    app.accounting.set_latency(Duration::from_millis(100));

    let (a, b) = tokio::join!(run_job(&app, &[]), run_job(&app, &[]));
    let all = runs(&db).await;
    assert_eq!(all.len(), 2);
    for run in [&a, &b] {
        let row = all
            .iter()
            .find(|r| r.summary.as_ref() == Some(&run.summary))
            .unwrap_or_else(|| panic!("no row for {}", run.summary));
        assert_eq!(row.status, run.summary["status"].as_str().unwrap());
        assert_eq!(row.exit_code, Some(run.code));
    }
    assert!(all.iter().all(|r| r.status != "running"));
}

#[sqlx::test]
async fn expiry_runs_list_is_service_admin_only_paged_and_filtered(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let first = ended_course_with_students(&app, "First", 1).await;
    let run1 = run_job(&app, &[]).await;
    let holder = hold_the_lock(&db).await;
    let run2 = run_job(&app, &[]).await;
    assert_eq!(run2.summary["status"], "skipped");
    release_the_lock(holder).await;
    let second = ended_course_with_students(&app, "Second", 1).await;
    let run3 = run_job(&app, &[]).await;
    let id1 = run1.summary["run_id"].as_str().unwrap().to_owned();
    let id3 = run3.summary["run_id"].as_str().unwrap().to_owned();
    let id2 = runs(&db)
        .await
        .into_iter()
        .find(|r| r.status == "skipped")
        .unwrap()
        .id
        .to_string();

    let admin = app.as_admin();
    let page = admin.get("/courses/expiry-runs").await.ok_body();
    assert_eq!(
        data_strings(&page, "id"),
        [id3.as_str(), id2.as_str(), id1.as_str()]
    );
    assert_eq!(
        page["pagination"],
        json!({"page": 1, "page_size": 3, "total_items": 3})
    );
    let item = &page["data"][0];
    assert_keys(
        item,
        &[
            "id",
            "status",
            "started_at",
            "finished_at",
            "exit_code",
            "host",
            "course_count",
            "summary",
        ],
    );
    assert_eq!(item["course_count"], 1);
    assert_eq!(item["exit_code"], 0);
    assert!(item["summary"].get("courses").is_none(), "{item}");
    let mut without_courses = run3.summary.clone();
    without_courses.as_object_mut().unwrap().remove("courses");
    assert_eq!(item["summary"], without_courses);

    // Paging
    let page = admin
        .get("/courses/expiry-runs?page=2&page_size=2")
        .await
        .ok_body();
    assert_eq!(data_strings(&page, "id"), [id1.as_str()]);
    assert_eq!(
        page["pagination"],
        json!({"page": 2, "page_size": 1, "total_items": 3})
    );
    // Status, repeated or comma-separated
    let page = admin
        .get("/courses/expiry-runs?status=skipped")
        .await
        .ok_body();
    assert_eq!(data_strings(&page, "id"), [id2.as_str()]);
    let page = admin
        .get("/courses/expiry-runs?status=skipped,error&status=abandoned")
        .await
        .ok_body();
    assert_eq!(data_strings(&page, "id"), [id2.as_str()]);
    let page = admin.get("/courses/expiry-runs?status=ok").await.ok_body();
    assert_eq!(data_strings(&page, "id"), [id3.as_str(), id1.as_str()]);
    // Course
    let page = admin
        .get(&format!(
            "/courses/expiry-runs?course_id={}",
            first.course_id
        ))
        .await
        .ok_body();
    assert_eq!(data_strings(&page, "id"), [id1.as_str()]);
    let page = admin
        .get(&format!(
            "/courses/expiry-runs?course_id={}",
            second.course_id
        ))
        .await
        .ok_body();
    assert_eq!(data_strings(&page, "id"), [id3.as_str()]);
    // Dates, inclusive
    let started2 = run_row(&db, id2.parse().unwrap()).await.started_at;
    let at = started2.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let page = admin
        .get(&format!("/courses/expiry-runs?started_after={at}"))
        .await
        .ok_body();
    assert_eq!(data_strings(&page, "id"), [id3.as_str(), id2.as_str()]);
    let page = admin
        .get(&format!("/courses/expiry-runs?started_before={at}"))
        .await
        .ok_body();
    assert_eq!(data_strings(&page, "id"), [id2.as_str(), id1.as_str()]);
    // Bad filters
    let body = admin
        .get("/courses/expiry-runs?status=done")
        .await
        .invalid();
    assert_eq!(
        body["details"]["status"],
        "Must be one of: running, ok, partial, error, skipped, abandoned",
        "{body}"
    );
    admin
        .get("/courses/expiry-runs?page_size=101")
        .await
        .invalid();
    admin
        .get("/courses/expiry-runs?course_id=nope")
        .await
        .invalid();
    admin
        .get("/courses/expiry-runs?started_after=yesterday")
        .await
        .invalid();

    // The detail has the complete summary.
    let detail = admin
        .get(&format!("/courses/expiry-runs/{id3}"))
        .await
        .ok_body();
    assert_eq!(detail["message"], "Expiry run found");
    assert_eq!(detail["data"]["summary"], run3.summary);
    assert_eq!(
        detail["data"]["summary"]["courses"][0]["course_id"],
        json!(second.course_id)
    );
    let unknown = Uuid::new_v4();
    admin
        .get(&format!("/courses/expiry-runs/{unknown}"))
        .await
        .error_with(
            StatusCode::NOT_FOUND,
            "ENTITY_NOT_FOUND",
            &format!("Expiry run {unknown} not found"),
        );
    let body = admin.get("/courses/expiry-runs/not-a-uuid").await.invalid();
    assert_eq!(body["details"]["run_id"], "Must be a UUID", "{body}");

    // Service admins only: the tier comes before the id and the filters.
    for path in [
        "/courses/expiry-runs".to_owned(),
        format!("/courses/expiry-runs/{id1}"),
        "/courses/expiry-runs/not-a-uuid".to_owned(),
        "/courses/expiry-runs?status=done".to_owned(),
    ] {
        app.as_faculty().get(&path).await.denied();
        app.anonymous().get(&path).await.unauthenticated();
    }
}

#[sqlx::test]
async fn retention_purges_old_rows(db: PgPool) {
    let app = TestApp::spawn_with(db.clone(), |vars| {
        vars.insert("EXPIRY_RUN_RETENTION_DAYS".to_owned(), "30".to_owned());
    })
    .await;
    let old = uuid_of(&run_job(&app, &[]).await.summary["run_id"]);
    let kept = uuid_of(&run_job(&app, &[]).await.summary["run_id"]);
    sqlx::query("UPDATE expiry_run SET started_at = started_at - interval '31 days' WHERE id = $1")
        .bind(old)
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("UPDATE expiry_run SET started_at = started_at - interval '29 days' WHERE id = $1")
        .bind(kept)
        .execute(&db)
        .await
        .unwrap();

    let latest = uuid_of(&run_job(&app, &[]).await.summary["run_id"]);
    let ids: Vec<Uuid> = runs(&db).await.into_iter().map(|r| r.id).collect();
    assert_eq!(ids, [kept, latest]);
}

#[sqlx::test]
async fn dry_run_records_nothing(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    ended_course_with_students(&app, "Dry", 1).await;
    let run = run_job(&app, &["--dry-run"]).await;
    assert_eq!(run.code, 0, "{}", run.summary);
    assert_eq!(run.summary["dry_run"], true);
    assert!(run.summary["run_id"].is_string(), "{}", run.summary);
    assert_eq!(run.summary["credits_returned"], 0.0);
    assert_eq!(run.summary["courses"][0]["credits_returned"], 0.0);
    assert!(runs(&db).await.is_empty());
}

#[sqlx::test]
async fn summary_has_run_id_and_credits_returned_matching_the_accounting_emulator(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (a, students) = fixtures::course_with_students(&app, "Credits A", 2).await;
    app.accounting
        .spend(students[0].project_id, Decimal::new(3050, 2))
        .unwrap();
    crate::expiry::end_course(&db, a.course_id).await;
    let b = ended_course_with_students(&app, "Credits B", 1).await;
    let lab_a = app.accounting.balance(a.vlab_id).unwrap();
    let template_a = app.accounting.balance(a.template_project_id).unwrap();
    let student_a: Decimal = students
        .iter()
        .map(|s| app.accounting.balance(s.project_id).unwrap())
        .sum();
    let system_before = app.accounting.system_balance();

    let run = run_job(&app, &[]).await;
    assert_eq!(run.code, 0, "{}", run.summary);
    let returned = app.accounting.system_balance() - system_before;
    assert!(returned > Decimal::ZERO);
    let s = &run.summary;
    assert_eq!(
        s["credits_returned"],
        json!(returned.to_string().parse::<f64>().unwrap())
    );
    let course_a = s["courses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["course_id"] == json!(a.course_id))
        .unwrap();
    let expected_a = lab_a + template_a + student_a;
    assert_eq!(
        course_a["credits_returned"],
        json!(expected_a.to_string().parse::<f64>().unwrap())
    );
    assert!(s["courses"].as_array().unwrap().iter().any(
        |c| c["course_id"] == json!(b.course_id) && c["credits_returned"].as_f64() > Some(0.0)
    ));
    let run_id = uuid_of(&s["run_id"]);
    assert_eq!(run_row(&db, run_id).await.summary.as_ref(), Some(s));
}

#[sqlx::test]
async fn get_courses_expiry_runs_is_not_taken_as_a_course_id(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = fixtures::create_active_course(&app, "Routes").await;
    let page = app.as_admin().get("/courses/expiry-runs").await.ok_body();
    assert_eq!(
        page,
        json!({"data": [], "pagination": {"page": 1, "page_size": 0, "total_items": 0}})
    );
    app.as_admin()
        .get(&format!("/courses/expiry-runs/{}", Uuid::nil()))
        .await
        .error_body(StatusCode::NOT_FOUND, "ENTITY_NOT_FOUND");
    // The course itself is still reached by its id.
    let body = app.as_admin().get_course(course.course_id).await.ok_body();
    assert_eq!(body["data"]["id"], json!(course.course_id));
}

#[sqlx::test(migrations = false)]
async fn a_database_from_before_the_run_records_gets_them_on_upgrade(db: PgPool) {
    migrate_before(&db, "expiry run").await;
    let (_, course) = crate::claim_emails::upgrade::seed_course(&db).await;
    MIGRATOR.run(&db).await.expect("expiry_run");
    let app = TestApp::spawn(db.clone()).await;

    let run = run_job(&app, &[]).await;
    assert_eq!(run.code, 0, "{}", run.summary);
    let page = app.as_admin().get("/courses/expiry-runs").await.ok_body();
    assert_eq!(page["data"][0]["id"], run.summary["run_id"]);
    assert_eq!(page["data"][0]["status"], "ok");
    // The course written before the upgrade is untouched and still answers.
    app.as_admin().get_course(course).await.ok_body();
}

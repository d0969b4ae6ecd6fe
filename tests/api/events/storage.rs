//! The table itself: append-only except for the retention purge, which `expire-courses` runs
//! in batches.

use chrono::{TimeDelta, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{TestApp, fetch_scalar};

/// Inserts `n` events of `course_id` that occurred `age` ago, with one statement.
async fn insert_events(db: &PgPool, course_id: Uuid, n: i64, age: TimeDelta) {
    sqlx::query(
        "INSERT INTO course_event (course_id, event_type, actor_role, occurred_at)
         SELECT $1, 'course_updated', 'system', $2 FROM generate_series(1, $3)",
    )
    .bind(course_id)
    .bind(Utc::now() - age)
    .bind(n)
    .execute(db)
    .await
    .unwrap();
}

async fn count(db: &PgPool, course_id: Uuid) -> i64 {
    fetch_scalar(
        db,
        "SELECT count(*) FROM course_event WHERE course_id = $1",
        course_id,
    )
    .await
}

/// The database's message for `sql`, refused, in a transaction that first sets the purge
/// variable to `purge` (when given); the transaction is rolled back.
async fn refusal(db: &PgPool, purge: Option<&str>, sql: &str) -> String {
    let mut tx = db.begin().await.unwrap();
    if let Some(value) = purge {
        sqlx::query("SELECT set_config('vlab.course_event_purge', $1, true)")
            .bind(value)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    let err = sqlx::query(sql)
        .execute(&mut *tx)
        .await
        .expect_err("the statement must be refused");
    err.as_database_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_else(|| err.to_string())
}

#[sqlx::test]
async fn course_event_refuses_update_always_and_delete_without_the_purge_setting(db: PgPool) {
    let course = Uuid::new_v4();
    insert_events(&db, course, 2, TimeDelta::zero()).await;

    let refused = [
        (None, "UPDATE course_event SET amount = 1"),
        (None, "DELETE FROM course_event"),
        // The purge setting opens DELETE only.
        (Some("on"), "UPDATE course_event SET amount = 1"),
        // Any other value keeps it shut.
        (Some("yes"), "DELETE FROM course_event"),
    ];
    for (purge, sql) in refused {
        assert_eq!(
            refusal(&db, purge, sql).await,
            "course_event is append-only",
            "{purge:?} {sql}"
        );
    }
    assert_eq!(count(&db, course).await, 2);
}

#[sqlx::test]
async fn delete_with_set_local_purge_setting_succeeds(db: PgPool) {
    let course = Uuid::new_v4();
    insert_events(&db, course, 3, TimeDelta::zero()).await;
    let mut tx = db.begin().await.unwrap();
    sqlx::query("SET LOCAL vlab.course_event_purge = 'on'")
        .execute(&mut *tx)
        .await
        .unwrap();
    let deleted = sqlx::query("DELETE FROM course_event WHERE course_id = $1")
        .bind(course)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(deleted.rows_affected(), 3);
    // SET LOCAL ended with its transaction.
    insert_events(&db, course, 1, TimeDelta::zero()).await;
    assert_eq!(
        refusal(&db, None, "DELETE FROM course_event").await,
        "course_event is append-only"
    );
}

/// Runs the `expire-courses` binary with the app's configuration; `(exit code, summary)`.
async fn run_job(app: &TestApp) -> (i32, Value) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_expire-courses"))
        .env_clear()
        .envs(&app.vars)
        .env("RUST_LOG", "warn")
        .current_dir(std::env::temp_dir())
        .output()
        .await
        .expect("run expire-courses");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|_| panic!("stdout is not one JSON line: {stdout:?}"));
    (output.status.code().unwrap_or(-1), summary)
}

#[sqlx::test]
async fn expire_courses_purges_events_older_than_the_retention_in_batches(db: PgPool) {
    let app = TestApp::spawn_with(db.clone(), |vars| {
        vars.insert("COURSE_EVENT_RETENTION_DAYS".to_owned(), "30".to_owned());
    })
    .await;
    let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
    insert_events(&db, old, 10_001, TimeDelta::days(31)).await;
    insert_events(&db, new, 3, TimeDelta::days(29)).await;

    let (code, summary) = run_job(&app).await;
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["status"], "ok");
    assert_eq!(summary["course_events_purged"], 10_001, "{summary}");
    assert_eq!(summary["course_events_purge_error"], Value::Null);
    assert_eq!(count(&db, old).await, 0);
    assert_eq!(count(&db, new).await, 3);

    // Nothing is left to purge on the next run.
    let (code, summary) = run_job(&app).await;
    assert_eq!((code, &summary["course_events_purged"]), (0, &0.into()));
}

#[sqlx::test]
async fn purge_failure_makes_the_run_partial(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = Uuid::new_v4();
    insert_events(&db, course, 5, TimeDelta::days(1200)).await;
    sqlx::raw_sql(
        "CREATE FUNCTION fail_purge() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'purge refused'; END $$;
         CREATE TRIGGER fail_purge BEFORE DELETE ON course_event
             FOR EACH ROW EXECUTE FUNCTION fail_purge();",
    )
    .execute(&db)
    .await
    .unwrap();

    let (code, summary) = run_job(&app).await;
    assert_eq!(code, 2, "{summary}");
    assert_eq!(summary["status"], "partial");
    assert_eq!(summary["course_events_purged"], 0);
    assert_eq!(
        summary["course_events_purge_error"],
        "The event purge failed; the next run continues"
    );
    assert_eq!(count(&db, course).await, 5);

    // The next run continues.
    sqlx::raw_sql("DROP TRIGGER fail_purge ON course_event")
        .execute(&db)
        .await
        .unwrap();
    let (code, summary) = run_job(&app).await;
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["course_events_purged"], 5);
}

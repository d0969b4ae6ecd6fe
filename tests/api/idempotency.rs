//! The `Idempotency-Key` header of assign and roster import: replay of the first answer with
//! no second run, 409 while the first runs, 422 for another request or a bad key, keys per
//! caller, expiry and the job's purge, the resume of a request whose process died; and the
//! assign refusal that names students being enrolled by a request in progress apart.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;
use vlab_courses::http::roster_csv;
use vlab_courses::usecases::seats::assign::{self, Student};
use vlab_courses::usecases::seats::roster_import::{self, RosterFile};

use crate::fixtures::{self, ActiveCourse, students_body};
use crate::helpers::{Caller, ReplyExt, TestApp, assert_error_body, fetch_scalar, uuid_of};

const KEY: &str = "8e03978e-40d5-43e8-bc93-6894a57f9324";
const IN_PROGRESS: &str = "A request with this Idempotency-Key is still in progress; send it again once it has finished to get its answer";
const REUSED: &str = "Already used for a different request; send a new key with a new request";

/// A keyed answer: its status, whether it was a replay, its exact text and its JSON.
#[derive(Debug)]
struct Keyed {
    status: StatusCode,
    replayed: bool,
    text: String,
    body: Value,
}

async fn keyed(response: reqwest::Response) -> Keyed {
    let status = response.status();
    let replayed = response.headers().get("idempotent-replayed").is_some();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    Keyed {
        status,
        replayed,
        text,
        body,
    }
}

async fn assign_keyed(caller: &Caller<'_>, course_id: Uuid, key: &str, body: &Value) -> Keyed {
    let key = HeaderValue::from_bytes(key.as_bytes()).expect("header value");
    let path = format!("/seats/courses/{course_id}/assign");
    keyed(
        caller
            .post_with_headers(&path, &[("Idempotency-Key", key)], body)
            .await,
    )
    .await
}

async fn import_keyed(
    caller: &Caller<'_>,
    course_id: Uuid,
    dry_run: bool,
    key: &str,
    csv: &str,
) -> Keyed {
    let key = HeaderValue::from_bytes(key.as_bytes()).expect("header value");
    let path = format!("/seats/courses/{course_id}/roster-import?dry_run={dry_run}");
    let body = json!({ "csv": csv });
    keyed(
        caller
            .post_with_headers(&path, &[("Idempotency-Key", key)], &body)
            .await,
    )
    .await
}

/// `stu-{i}` with `stu-{i}@uni.org` for each `i`.
fn students(ids: &[usize]) -> Value {
    let pairs: Vec<(String, String)> = ids
        .iter()
        .map(|i| (format!("stu-{i}"), format!("stu-{i}@uni.org")))
        .collect();
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(s, e)| (s.as_str(), e.as_str()))
        .collect();
    students_body(&refs)
}

async fn enrolments(db: &PgPool, course_id: Uuid) -> i64 {
    fetch_scalar(
        db,
        "SELECT count(*) FROM course_enrolment WHERE course_id = $1",
        course_id,
    )
    .await
}

async fn course(app: &TestApp, seats: usize) -> ActiveCourse {
    let course = fixtures::course_with_faculty(app, "Neuro 101").await;
    fixtures::provision(app, course.course_id, seats).await;
    course
}

#[derive(Debug, PartialEq, Eq, sqlx::FromRow)]
struct Row {
    state: String,
    response_status: Option<i32>,
    lease_id: Option<Uuid>,
}

async fn rows(db: &PgPool) -> Vec<Row> {
    sqlx::query_as(
        "SELECT state, response_status, lease_id FROM idempotent_request ORDER BY created_at",
    )
    .fetch_all(db)
    .await
    .unwrap()
}

// ---- replay ---------------------------------------------------------------------------------

#[sqlx::test]
async fn a_repeated_assign_replays_the_first_answer_and_runs_nothing_again(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = course(&app, 3).await;
    let faculty = app.as_faculty();

    let first = assign_keyed(&faculty, course.course_id, KEY, &students(&[1, 2])).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert!(!first.replayed);
    let (groups, grants, mails) = (
        app.keycloak.call_count("kc_create_group"),
        app.accounting.call_count("acc_grant"),
        app.smtp
            .wait_for_messages(2, Duration::from_secs(5))
            .await
            .len(),
    );
    // The lab's and the template's groups and grant, then two per student.
    assert_eq!((groups, grants, mails), (4 + 2 * 2, 1 + 2, 2));

    let again = assign_keyed(&faculty, course.course_id, KEY, &students(&[1, 2])).await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(again.replayed);
    assert_eq!(again.text, first.text, "the very same bytes");
    assert_eq!(app.keycloak.call_count("kc_create_group"), groups);
    assert_eq!(app.accounting.call_count("acc_grant"), grants);
    assert_eq!(enrolments(&db, course.course_id).await, 2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.smtp.messages().len(), 2, "no second claim e-mail");
    assert_eq!(
        rows(&db).await,
        [Row {
            state: "done".into(),
            response_status: Some(200),
            lease_id: None
        }]
    );
}

#[sqlx::test]
async fn a_browser_may_read_the_replay_marker(db: PgPool) {
    let origin = "http://localhost:3000";
    let app = TestApp::spawn_with(db, |vars| {
        vars.insert("CORS_ORIGINS".to_owned(), origin.to_owned());
    })
    .await;
    let course = course(&app, 1).await;
    let path = format!("/seats/courses/{}/assign", course.course_id);
    let headers = [
        ("Idempotency-Key", HeaderValue::from_static(KEY)),
        ("Origin", HeaderValue::from_static(origin)),
    ];
    let faculty = app.as_faculty();
    for replayed in [false, true] {
        let response = faculty
            .post_with_headers(&path, &headers, &students(&[1]))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers().contains_key("idempotent-replayed"),
            replayed
        );
        let exposed = response.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap();
        assert!(exposed.contains("idempotent-replayed"), "{exposed}");
    }
}

#[sqlx::test]
async fn a_repeated_import_replays_its_answer_and_a_dry_run_ignores_the_key(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = course(&app, 3).await;
    let faculty = app.as_faculty();
    let csv = "student_id,email\nstu-1,stu-1@uni.org\nstu-2,bad\n";

    // A dry run with the key records nothing, so the real run is the key's first request.
    let dry = import_keyed(&faculty, course.course_id, true, KEY, csv).await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.text);
    assert!(rows(&db).await.is_empty());

    let first = import_keyed(&faculty, course.course_id, false, KEY, csv).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(first.body["results"][0]["verdict"], "assigned");
    let grants = app.accounting.call_count("acc_grant");
    let again = import_keyed(&faculty, course.course_id, false, KEY, csv).await;
    assert!(again.replayed);
    assert_eq!(again.text, first.text, "same import_id, same verdicts");
    assert_eq!(app.accounting.call_count("acc_grant"), grants);
    assert_eq!(enrolments(&db, course.course_id).await, 1);

    // The dry run still evaluates afresh, with the same key.
    let dry = import_keyed(&faculty, course.course_id, true, KEY, csv).await;
    assert!(!dry.replayed);
    assert_eq!(dry.body["results"][0]["verdict"], "unchanged");
    // Another file under the key of a real run is another request.
    let other = import_keyed(
        &faculty,
        course.course_id,
        false,
        KEY,
        "student_id,email\nx,x@uni.org\n",
    )
    .await;
    assert_eq!(
        other.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        other.text
    );
    assert_eq!(other.body["details"], json!({ "Idempotency-Key": REUSED }));
}

#[sqlx::test]
async fn a_repeat_while_the_first_runs_is_409_then_replays(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = course(&app, 2).await;
    let faculty = app.as_faculty();
    app.keycloak.set_latency(Duration::from_millis(150));

    let body = students(&[1, 2]);
    let first = assign_keyed(&faculty, course.course_id, KEY, &body);
    let repeat = async {
        for _ in 0..100 {
            let n: i64 = fetch_scalar(
                &db,
                "SELECT count(*) FROM idempotent_request WHERE state = $1",
                "running",
            )
            .await;
            if n == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assign_keyed(&faculty, course.course_id, KEY, &students(&[1, 2])).await
    };
    let (first, repeat) = tokio::join!(first, repeat);
    app.keycloak.set_latency(Duration::ZERO);

    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_error_body(
        &repeat.body,
        repeat.status,
        StatusCode::CONFLICT,
        "DATA_CONFLICT",
    );
    assert_eq!(repeat.body["message"], IN_PROGRESS);
    assert_eq!(enrolments(&db, course.course_id).await, 2);
    let later = assign_keyed(&faculty, course.course_id, KEY, &students(&[1, 2])).await;
    assert!(later.replayed);
    assert_eq!(later.text, first.text);
}

// ---- refusals of the key --------------------------------------------------------------------

#[sqlx::test]
async fn the_same_key_with_another_body_is_422_and_runs_nothing(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = course(&app, 3).await;
    let faculty = app.as_faculty();
    let first = assign_keyed(&faculty, course.course_id, KEY, &students(&[1])).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let groups = app.keycloak.call_count("kc_create_group");

    let other = assign_keyed(&faculty, course.course_id, KEY, &students(&[2])).await;
    assert_error_body(
        &other.body,
        other.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID_REQUEST",
    );
    assert_eq!(other.body["message"], "Validation error");
    assert_eq!(other.body["details"], json!({ "Idempotency-Key": REUSED }));
    assert_eq!(app.keycloak.call_count("kc_create_group"), groups);
    assert_eq!(enrolments(&db, course.course_id).await, 1);
}

#[sqlx::test]
async fn bad_keys_are_422_naming_the_header(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = course(&app, 1).await;
    let faculty = app.as_faculty();
    let message =
        "Must be 1 to 255 visible ASCII characters (letters, digits and punctuation, no spaces)";
    let long = "k".repeat(256);
    for key in ["", "two words", "clé", "\"\"", long.as_str()] {
        for answer in [
            assign_keyed(&faculty, course.course_id, key, &students(&[1])).await,
            import_keyed(
                &faculty,
                course.course_id,
                true,
                key,
                "student_id,email\na,a@uni.org\n",
            )
            .await,
        ] {
            assert_error_body(
                &answer.body,
                answer.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_REQUEST",
            );
            assert_eq!(
                answer.body["details"],
                json!({ "Idempotency-Key": message }),
                "{key:?}"
            );
        }
    }
    // Sent twice.
    let path = format!("/seats/courses/{}/assign", course.course_id);
    let twice = keyed(
        faculty
            .post_with_headers(
                &path,
                &[
                    ("Idempotency-Key", HeaderValue::from_static("a")),
                    ("Idempotency-Key", HeaderValue::from_static("b")),
                ],
                &students(&[1]),
            )
            .await,
    )
    .await;
    assert_eq!(twice.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        twice.body["details"],
        json!({ "Idempotency-Key": "Must be sent once" })
    );
    // The quoted form of a key is the same key.
    let quoted = assign_keyed(
        &faculty,
        course.course_id,
        &format!("\"{KEY}\""),
        &students(&[1]),
    )
    .await;
    assert_eq!(quoted.status, StatusCode::OK, "{}", quoted.text);
    let bare = assign_keyed(&faculty, course.course_id, KEY, &students(&[1])).await;
    assert!(bare.replayed);
    assert_eq!(enrolments(&db, course.course_id).await, 1);
    assert_eq!(rows(&db).await.len(), 1);
}

#[sqlx::test]
async fn keys_belong_to_their_caller(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = course(&app, 2).await;
    // The lab's creator (the service admin) is a lab admin too.
    let by_faculty = assign_keyed(&app.as_faculty(), course.course_id, KEY, &students(&[1])).await;
    let by_admin = assign_keyed(&app.as_admin(), course.course_id, KEY, &students(&[2])).await;
    assert_eq!(by_faculty.status, StatusCode::OK, "{}", by_faculty.text);
    assert_eq!(by_admin.status, StatusCode::OK, "{}", by_admin.text);
    assert!(!by_admin.replayed);
    assert_eq!(by_admin.body["results"][0]["student_id"], "stu-2");
    assert_eq!(enrolments(&db, course.course_id).await, 2);
    assert_eq!(rows(&db).await.len(), 2);
}

#[sqlx::test]
async fn a_server_error_is_not_recorded_and_the_key_stays_retryable(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = course(&app, 1).await;
    let faculty = app.as_faculty();
    // The reservation's update fails: a 500 before any student is provisioned.
    sqlx::raw_sql(
        "CREATE FUNCTION fail_seat_update() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'update refused'; END $$;
         CREATE TRIGGER fail_seat_update BEFORE UPDATE ON seat
             FOR EACH ROW EXECUTE FUNCTION fail_seat_update();",
    )
    .execute(&db)
    .await
    .unwrap();
    let failed = assign_keyed(&faculty, course.course_id, KEY, &students(&[1])).await;
    assert_error_body(
        &failed.body,
        failed.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "DATABASE_ERROR",
    );
    let lapsed: bool = fetch_scalar(
        &db,
        "SELECT lease_until <= now() FROM idempotent_request WHERE state = $1",
        "running",
    )
    .await;
    assert!(lapsed, "the lease lapses at once");

    sqlx::raw_sql("DROP TRIGGER fail_seat_update ON seat")
        .execute(&db)
        .await
        .unwrap();
    let retried = assign_keyed(&faculty, course.course_id, KEY, &students(&[1])).await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.text);
    assert!(!retried.replayed);
    assert_eq!(retried.body["results"][0]["assignment_successful"], true);
    let replayed = assign_keyed(&faculty, course.course_id, KEY, &students(&[1])).await;
    assert!(replayed.replayed);
    assert_eq!(enrolments(&db, course.course_id).await, 1);
}

// ---- expiry ---------------------------------------------------------------------------------

#[sqlx::test]
async fn an_expired_key_is_a_new_request_and_a_refusal_is_replayed(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = course(&app, 3).await;
    let faculty = app.as_faculty();
    let first = assign_keyed(&faculty, course.course_id, KEY, &students(&[1])).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);

    sqlx::query("UPDATE idempotent_request SET expires_at = now() - interval '1 second'")
        .execute(&db)
        .await
        .unwrap();
    // A new request: it runs, and stu-1 is enrolled already.
    let refused = assign_keyed(&faculty, course.course_id, KEY, &students(&[1])).await;
    assert!(!refused.replayed);
    assert_error_body(
        &refused.body,
        refused.status,
        StatusCode::CONFLICT,
        "ENTITY_ALREADY_EXISTS",
    );
    assert_eq!(
        refused.body["message"],
        "Students already enrolled in this course: stu-1 (stu-1@uni.org)"
    );
    // The use case's refusal is its final answer: replayed, even once stu-1 is dropped.
    let seat = uuid_of(&first.body["results"][0]["seat_id"]);
    app.as_faculty()
        .post_drop(course.course_id, &[seat])
        .await
        .ok_body();
    let replayed = assign_keyed(&faculty, course.course_id, KEY, &students(&[1])).await;
    assert!(replayed.replayed);
    assert_eq!(
        (replayed.status, &replayed.text),
        (refused.status, &refused.text)
    );
    let expires: bool = fetch_scalar(
        &db,
        "SELECT expires_at > now() + interval '23 hours' FROM idempotent_request WHERE state = $1",
        "done",
    )
    .await;
    assert!(expires, "a new request gets a new 24 hours");
}

#[sqlx::test]
async fn the_expiry_job_purges_expired_records_only(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = course(&app, 3).await;
    let faculty = app.as_faculty();
    for (key, student) in [("old", 1), ("new", 2)] {
        let answer = assign_keyed(&faculty, course.course_id, key, &students(&[student])).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    }
    sqlx::query("UPDATE idempotent_request SET expires_at = now() - interval '1 minute' WHERE idempotency_key = 'old'")
        .execute(&db)
        .await
        .unwrap();

    let mut lock = db.acquire().await.unwrap();
    let run = vlab_courses::jobs::expiry::run(&app.services(), &mut lock, chrono::Utc::now())
        .await
        .unwrap();
    let vlab_courses::jobs::expiry::Run::Done(summary) = run else {
        panic!("the job did not run");
    };
    assert_eq!(summary.idempotent_requests_purged, 1);
    let keys: Vec<String> = sqlx::query_scalar("SELECT idempotency_key FROM idempotent_request")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(keys, ["new"]);
}

// ---- resume after the process died -----------------------------------------------------------

/// The record a process leaves when it dies mid-run: `running`, its lease lapsed.
async fn dead_run(
    db: &PgPool,
    caller: Uuid,
    operation: &str,
    course_id: Uuid,
    hash: Vec<u8>,
    since: &str,
) -> Uuid {
    let run = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO idempotent_request (caller, operation, course_id, idempotency_key,
             request_hash, lease_id, lease_until, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, now() - interval '1 second',
                 now() - $7::interval, now() + interval '1 day')",
    )
    .bind(caller)
    .bind(operation)
    .bind(course_id)
    .bind(KEY)
    .bind(hash)
    .bind(run)
    .bind(since)
    .execute(db)
    .await
    .unwrap();
    run
}

/// A live reservation of `run` for this student, as a run in flight holds it.
async fn reserve_for(db: &PgPool, course_id: Uuid, run: Uuid, student_id: &str) {
    sqlx::query(
        "UPDATE seat SET reservation_id = $2, reserved_until = now() + interval '25 minutes',
             reserved_student_id = $3, reserved_email = $3 || '@uni.org'
         WHERE id = (SELECT id FROM seat WHERE course_id = $1 AND enrolment_id IS NULL
                     AND reservation_id IS NULL ORDER BY id LIMIT 1)",
    )
    .bind(course_id)
    .bind(run)
    .bind(student_id)
    .execute(db)
    .await
    .unwrap();
}

fn student(i: usize) -> Student {
    Student {
        student_id: format!("stu-{i}"),
        email: format!("stu-{i}@uni.org"),
    }
}

#[sqlx::test]
async fn a_repeat_after_the_process_died_resumes_the_assign(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = course(&app, 4).await;
    // What the dead run committed (stu-1, stu-2), and the seat it held for stu-3 in flight.
    let committed = fixtures::assign(&app, course.course_id, 2).await;
    let hash = assign::request_hash(&[student(1), student(2), student(3), student(4)]);
    let dead = dead_run(
        &db,
        app.users.faculty.id,
        "assign",
        course.course_id,
        hash,
        "6 minutes",
    )
    .await;
    reserve_for(&db, course.course_id, dead, "stu-3").await;
    let groups = app.keycloak.call_count("kc_create_group");

    let resumed = assign_keyed(
        &app.as_faculty(),
        course.course_id,
        KEY,
        &students(&[1, 2, 3, 4]),
    )
    .await;
    assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.text);
    assert!(!resumed.replayed);
    let results = resumed.body["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    for (result, first) in results.iter().zip(&committed) {
        assert_eq!(result["assignment_successful"], true, "{result}");
        assert_eq!(uuid_of(&result["enrolment_id"]), first.enrolment_id);
        assert_eq!(uuid_of(&result["project_id"]), first.project_id);
        assert_eq!(uuid_of(&result["seat_id"]), first.seat_id);
        assert_eq!(result["credit_transferred_amount"], 200.0);
    }
    for result in &results[2..] {
        assert_eq!(result["assignment_successful"], true, "{result}");
    }
    assert_eq!(
        app.keycloak.call_count("kc_create_group"),
        groups + 4,
        "only stu-3 and stu-4"
    );
    assert_eq!(enrolments(&db, course.course_id).await, 4);
    let held: i64 = fetch_scalar(
        &db,
        "SELECT count(*) FROM seat WHERE reservation_id = $1",
        dead,
    )
    .await;
    assert_eq!(held, 0, "the dead run's seat was taken over");
    let row = &rows(&db).await[0];
    assert_eq!(
        (row.state.as_str(), row.response_status),
        ("done", Some(200))
    );
    let again = assign_keyed(
        &app.as_faculty(),
        course.course_id,
        KEY,
        &students(&[1, 2, 3, 4]),
    )
    .await;
    assert!(again.replayed);
    assert_eq!(again.text, resumed.text);
}

#[sqlx::test]
async fn a_repeat_after_the_process_died_resumes_the_import(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = course(&app, 3).await;
    let csv = "student_id,email\nstu-1,stu-1@uni.org\nstu-2,stu-2@uni.org\nstu-3,stu-3@uni.org\n";
    let parsed = roster_csv::read(&json!(csv)).unwrap();
    let file = RosterFile {
        rows: parsed.rows,
        filename: None,
        sha256: parsed.sha256,
    };
    // stu-1 was enrolled before the import; the dead import enrolled stu-2.
    let before = fixtures::assign(&app, course.course_id, 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let faculty = app.users.faculty.id;
    let hash = roster_import::request_hash(&file);
    dead_run(
        &db,
        faculty,
        "roster_import",
        course.course_id,
        hash,
        "0 seconds",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let by_dead_run = app
        .as_faculty()
        .post_assign(course.course_id, &students(&[2]))
        .await
        .ok_body();

    let resumed = import_keyed(&app.as_faculty(), course.course_id, false, KEY, csv).await;
    assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.text);
    let results = resumed.body["results"].as_array().unwrap();
    let verdicts: Vec<&str> = results
        .iter()
        .map(|r| r["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["unchanged", "assigned", "assigned"]);
    assert_eq!(uuid_of(&results[0]["enrolment_id"]), before[0].enrolment_id);
    assert_eq!(
        results[1]["enrolment_id"],
        by_dead_run["results"][0]["enrolment_id"]
    );
    assert_eq!(
        results[1]["project_id"],
        by_dead_run["results"][0]["project_id"]
    );
    assert_eq!(results[1]["message"], Value::Null);
    assert_eq!(resumed.body["summary"]["assigned"], 2);
    assert_eq!(enrolments(&db, course.course_id).await, 3);
}

#[sqlx::test]
async fn a_repeat_within_the_lease_of_a_running_record_is_409(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = course(&app, 1).await;
    let hash = assign::request_hash(&[student(1)]);
    dead_run(
        &db,
        app.users.faculty.id,
        "assign",
        course.course_id,
        hash,
        "1 minute",
    )
    .await;
    sqlx::query("UPDATE idempotent_request SET lease_until = now() + interval '4 minutes'")
        .execute(&db)
        .await
        .unwrap();
    let answer = assign_keyed(&app.as_faculty(), course.course_id, KEY, &students(&[1])).await;
    assert_error_body(
        &answer.body,
        answer.status,
        StatusCode::CONFLICT,
        "DATA_CONFLICT",
    );
    assert_eq!(enrolments(&db, course.course_id).await, 0);
}

// ---- the refusal for students in progress ---------------------------------------------------

#[sqlx::test]
async fn students_being_enrolled_are_named_apart_from_enrolled_ones(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = course(&app, 4).await;
    fixtures::assign(&app, course.course_id, 1).await;
    let other_run = Uuid::new_v4();
    reserve_for(&db, course.course_id, other_run, "stu-9").await;
    let faculty = app.as_faculty();

    for (ids, message) in [
        (
            vec![1, 9, 5],
            "Students already enrolled in this course: stu-1 (stu-1@uni.org). \
             Students being enrolled by a request in progress: stu-9 (stu-9@uni.org)",
        ),
        (
            vec![9, 5],
            "Students being enrolled by a request in progress: stu-9 (stu-9@uni.org)",
        ),
        (
            vec![5, 1],
            "Students already enrolled in this course: stu-1 (stu-1@uni.org)",
        ),
    ] {
        faculty
            .post_assign(course.course_id, &students(&ids))
            .await
            .error_with(StatusCode::CONFLICT, "ENTITY_ALREADY_EXISTS", message);
    }

    // With a key, that refusal is not recorded: once the other run is over, a repeat runs.
    let refused = assign_keyed(&faculty, course.course_id, KEY, &students(&[9, 5])).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(rows(&db).await.is_empty());
    sqlx::query(
        "UPDATE seat SET reserved_until = now() - interval '1 second' WHERE reservation_id = $1",
    )
    .bind(other_run)
    .execute(&db)
    .await
    .unwrap();
    let later = assign_keyed(&faculty, course.course_id, KEY, &students(&[9, 5])).await;
    assert_eq!(later.status, StatusCode::OK, "{}", later.text);
    assert!(!later.replayed);
    assert_eq!(enrolments(&db, course.course_id).await, 3);
}

//! `POST /seats/courses/{course_id}/roster-import?dry_run=` (round2.md §5): the CSV dialects and
//! whole-file 422s, every verdict, the read-only dry run, the real run through assign, the
//! idempotent re-run and two servers importing the same file.

use std::time::Duration;

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;
use vlab_emulators::{Fault, FaultAction};

use crate::fixtures::{self, ActiveCourse};
use crate::helpers::{Reply, ReplyExt, TestApp, exec, fetch_scalar, json, uuid_of};

const HEADER: &str = "student_id,email\n";
const GROUPS: &str = "Could not create the student's project groups in the identity provider";
const GRANT: &str = "Failed to fund the student's project with 200 credits";

/// `student_id,email` rows `{prefix}-1..n` with e-mails `{prefix}-i@uni.org`, with a header.
fn roster(prefix: &str, n: usize) -> String {
    let rows: String = (1..=n)
        .map(|i| format!("{prefix}-{i},{prefix}-{i}@uni.org\n"))
        .collect();
    format!("{HEADER}{rows}")
}

fn query(dry_run: bool) -> String {
    format!("?dry_run={dry_run}")
}

async fn post_import(app: &TestApp, course_id: Uuid, dry_run: bool, csv: &str) -> Reply {
    app.as_faculty()
        .post_roster_import(course_id, &query(dry_run), &json!({ "csv": csv }))
        .await
}

/// Imports as faculty, asserts the 200 and its shape, and returns the body.
async fn import(app: &TestApp, course_id: Uuid, dry_run: bool, csv: &str) -> Value {
    let body = post_import(app, course_id, dry_run, csv).await.ok_body();
    assert_shape(&body, dry_run);
    body
}

fn results(body: &Value) -> &Vec<Value> {
    body["results"].as_array().expect("results")
}

/// `(row, verdict)` of every result.
fn verdicts(body: &Value) -> Vec<(u64, String)> {
    results(body)
        .iter()
        .map(|r| {
            (
                r["row"].as_u64().expect("row"),
                r["verdict"].as_str().expect("verdict").to_owned(),
            )
        })
        .collect()
}

/// The keys in order, and the summary: every row counted once, `rejected` their sum.
fn assert_shape(body: &Value, dry_run: bool) {
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["import_id", "dry_run", "evaluated_at", "summary", "results"]
    );
    assert_eq!(body["dry_run"], dry_run);
    uuid_of(&body["import_id"]);
    let summary = &body["summary"];
    let keys: Vec<&str> = summary
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "rows",
            "would_assign",
            "assigned",
            "unchanged",
            "rejected",
            "in_progress",
            "not_enough_seats",
            "failed",
            "available_seats"
        ]
    );
    let n = |k: &str| {
        summary[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k}: {summary}"))
    };
    let count = |names: &[&str]| {
        results(body)
            .iter()
            .filter(|r| names.contains(&r["verdict"].as_str().unwrap()))
            .count() as u64
    };
    assert_eq!(n("rows"), results(body).len() as u64);
    assert_eq!(
        n("rows"),
        n("would_assign")
            + n("assigned")
            + n("unchanged")
            + n("rejected")
            + n("in_progress")
            + n("not_enough_seats")
            + n("failed"),
        "{summary}"
    );
    let rejected = [
        "invalid_row",
        "duplicate_in_file",
        "already_enrolled",
        "project_name_taken",
    ];
    assert_eq!(n("rejected"), count(&rejected), "{summary}");
    for key in [
        "would_assign",
        "assigned",
        "unchanged",
        "in_progress",
        "not_enough_seats",
        "failed",
    ] {
        assert_eq!(n(key), count(&[key]), "{key}: {summary}");
    }
    if dry_run {
        assert_eq!(n("assigned") + n("failed"), 0);
    } else {
        assert_eq!(n("would_assign"), 0);
    }
    for r in results(body) {
        let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "row",
                "student_id",
                "email",
                "verdict",
                "message",
                "retryable",
                "enrolment_id",
                "seat_id",
                "project_id",
                "email_sent"
            ]
        );
    }
}

/// A row without ids: every verdict but `unchanged`, `assigned` and `failed`.
fn plain(row: u64, student_id: &str, email: &str, verdict: &str, message: Option<&str>) -> Value {
    let retryable = ["in_progress", "not_enough_seats"].contains(&verdict);
    json!({"row": row, "student_id": student_id, "email": email, "verdict": verdict,
           "message": message, "retryable": retryable, "enrolment_id": null, "seat_id": null,
           "project_id": null, "email_sent": null})
}

/// Everything the import could change: the tables' rows and the upstreams' writes.
#[derive(Debug, PartialEq, Eq)]
struct World {
    tables: Vec<String>,
    keycloak_writes: usize,
    accounting_calls: usize,
    groups: usize,
}

async fn world(app: &TestApp) -> World {
    let mut tables = Vec::new();
    for table in [
        "seat",
        "course_enrolment",
        "project",
        "email_outbox",
        "enrolment_drop",
        "course_event",
    ] {
        let digest: Option<String> = sqlx::query_scalar(&format!(
            "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {table} t"
        ))
        .fetch_one(&app.db)
        .await
        .unwrap();
        tables.push(format!("{table}:{}", digest.unwrap_or_default()));
    }
    World {
        tables,
        keycloak_writes: app
            .keycloak
            .calls()
            .iter()
            .filter(|c| c.method != "GET")
            .count(),
        accounting_calls: app.accounting.calls().len(),
        groups: app.keycloak.groups().len(),
    }
}

/// A live reservation of another request on one free seat of the course.
async fn reserve_one_seat(app: &TestApp, course_id: Uuid, student_id: &str, email: &str) {
    sqlx::query(
        "UPDATE seat SET reservation_id = gen_random_uuid(), reserved_until = now() + interval '10 minutes',
             reserved_student_id = $2, reserved_email = $3
         WHERE id = (SELECT id FROM seat WHERE course_id = $1 AND enrolment_id IS NULL
                     AND reservation_id IS NULL LIMIT 1)",
    )
    .bind(course_id)
    .bind(student_id)
    .bind(email)
    .execute(&app.db)
    .await
    .unwrap();
}

async fn enrolments_of(app: &TestApp, course_id: Uuid, student_id: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM course_enrolment WHERE course_id = $1 AND student_id = $2",
    )
    .bind(course_id)
    .bind(student_id)
    .fetch_one(&app.db)
    .await
    .unwrap()
}

/// Seats of the course still held by a reservation.
async fn reserved_seats(app: &TestApp, course_id: Uuid) -> i64 {
    fetch_scalar(
        &app.db,
        "SELECT count(*) FROM seat WHERE course_id = $1 AND reservation_id IS NOT NULL",
        course_id,
    )
    .await
}

/// Successful grants seen by the accounting emulator.
fn grants(app: &TestApp) -> usize {
    app.accounting
        .calls()
        .iter()
        .filter(|c| c.operation == "acc_grant" && c.status == 200)
        .count()
}

/// The faculty's token, used once so that later faults only meet the import's own calls.
async fn warm_token(app: &TestApp, course_id: Uuid) -> String {
    let token = app.faculty_token();
    let warm = app
        .get(&format!("/seats/courses/{course_id}"), Some(&token))
        .await;
    assert_eq!(warm.status(), StatusCode::OK);
    token
}

#[sqlx::test]
async fn dry_run_gives_each_verdict_and_touches_nothing(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let course = fixtures::course_with_faculty(&app, "Import 101").await;
    fixtures::provision(&app, course.course_id, 4).await;
    let assigned = app
        .as_faculty()
        .post_assign(
            course.course_id,
            &fixtures::students_body(&[("stu-009", "eve@uni.org"), ("stu-gone", "g@uni.org")]),
        )
        .await
        .ok_body();
    let eve = &assigned["results"][0];
    let gone_seat = uuid_of(&assigned["results"][1]["seat_id"]);
    // An early drop with nothing spent gives the seat back.
    app.as_faculty()
        .post_drop(course.course_id, &[gone_seat])
        .await
        .ok_body();
    reserve_one_seat(&app, course.course_id, "busy", "busy@uni.org").await;
    let before = world(&app).await;

    let csv = "student_id,email\n\
               stu-001,ada@uni.org\n\
               stu-002,bob@uni\n\
               stu-001,ada2@uni.org\n\
               stu-009,eve@uni.org\n\
               stu-010,fay@uni.org\n\
               stu-011,gus@uni.org\n\
               stu-gone,new@uni.org\n\
               busy2,BUSY@uni.org\n\
               Template,tpl@uni.org\n";
    let body = import(&app, course.course_id, true, csv).await;
    assert_eq!(
        body["summary"],
        json!({"rows": 9, "would_assign": 2, "assigned": 0, "unchanged": 1, "rejected": 4,
               "in_progress": 1, "not_enough_seats": 1, "failed": 0, "available_seats": 2})
    );
    let r = results(&body);
    assert_eq!(
        r[0],
        plain(2, "stu-001", "ada@uni.org", "would_assign", None)
    );
    assert_eq!(
        r[1],
        plain(
            3,
            "stu-002",
            "bob@uni",
            "invalid_row",
            Some("email: Must be a valid e-mail address")
        )
    );
    assert_eq!(
        r[2],
        plain(
            4,
            "stu-001",
            "ada2@uni.org",
            "duplicate_in_file",
            Some("Duplicate student_id in file: first used in row 2")
        )
    );
    assert_eq!(
        r[3],
        json!({"row": 5, "student_id": "stu-009", "email": "eve@uni.org", "verdict": "unchanged",
               "message": format!("Already enrolled (enrolment {})", eve["enrolment_id"].as_str().unwrap()),
               "retryable": false, "enrolment_id": eve["enrolment_id"], "seat_id": eve["seat_id"],
               "project_id": eve["project_id"], "email_sent": null})
    );
    assert_eq!(
        r[4],
        plain(6, "stu-010", "fay@uni.org", "would_assign", None)
    );
    assert_eq!(
        r[5],
        plain(
            7,
            "stu-011",
            "gus@uni.org",
            "not_enough_seats",
            Some("No seat left: 2 seat(s) were available for 3 row(s)")
        )
    );
    assert_eq!(
        r[6],
        plain(
            8,
            "stu-gone",
            "new@uni.org",
            "already_enrolled",
            Some("stu-gone was dropped from this course and cannot be enrolled again")
        )
    );
    assert_eq!(
        r[7],
        plain(
            9,
            "busy2",
            "BUSY@uni.org",
            "in_progress",
            Some("busy2 (BUSY@uni.org) is being enrolled by another request")
        )
    );
    assert_eq!(
        r[8],
        plain(
            10,
            "Template",
            "tpl@uni.org",
            "project_name_taken",
            Some("A project named 'Template' already exists in this virtual lab")
        )
    );
    assert_eq!(world(&app).await, before, "the dry run changed something");
    let imported: i64 = fetch_scalar(
        &app.db,
        "SELECT count(*) FROM course_event WHERE course_id = $1 AND event_type = 'roster_imported'",
        course.course_id,
    )
    .await;
    assert_eq!(imported, 0, "a dry run writes no event");
}

#[sqlx::test]
async fn the_other_already_enrolled_sentences(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let course = fixtures::course_with_faculty(&app, "Import 101").await;
    fixtures::provision(&app, course.course_id, 3).await;
    fixtures::assign(&app, course.course_id, 2).await;
    let csv = "student_id,email\nstu-1,changed@uni.org\nstu-9,STU-2@uni.org\n";
    let body = import(&app, course.course_id, true, csv).await;
    let messages: Vec<&Value> = results(&body).iter().map(|r| &r["message"]).collect();
    assert_eq!(
        messages,
        [
            "student_id stu-1 is already enrolled in this course with another e-mail",
            "STU-2@uni.org is already enrolled in this course as stu-2"
        ]
    );
}

#[sqlx::test]
async fn missing_dry_run_parameter_is_422(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let course = fixtures::course_with_faculty(&app, "Import 101").await;
    fixtures::provision(&app, course.course_id, 1).await;
    let faculty = app.as_faculty();
    let csv = json!({ "csv": roster("stu", 1) });
    for (query, message) in [
        ("", "Field required"),
        ("?dry_run=", "Must be a boolean"),
        ("?dryrun=true", "Field required"),
        ("?dry_run=maybe", "Must be a boolean"),
    ] {
        let err = faculty
            .post_roster_import(course.course_id, query, &csv)
            .await
            .invalid();
        assert_eq!(err["details"], json!({ "dry_run": message }), "{query}");
    }
    // The query's problem first, then the body's.
    let err = faculty
        .post_roster_import(course.course_id, "", &json!({"filename": 3}))
        .await
        .invalid();
    assert_eq!(
        err["details"],
        json!({"dry_run": "Field required", "csv": "Field required", "filename": "Must be a string"})
    );
    assert_eq!(reserved_seats(&app, course.course_id).await, 0);
    assert_eq!(enrolments_of(&app, course.course_id, "stu-1").await, 0);
}

#[sqlx::test]
async fn csv_dialects_are_accepted(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let course = fixtures::course_with_faculty(&app, "Import 101").await;
    fixtures::provision(&app, course.course_id, 10).await;
    // BOM, CRLF, `;`, swapped and extra columns, a blank line, a `;;` record, a short and a
    // long record, quoted fields with the delimiter, quotes and a line break.
    let semicolons = "\u{feff} Email ;Name;STUDENT_ID\r\n\
                      a@uni.org;\"Lovelace; Ada\";s1\r\n\
                      \r\n\
                      ;;\r\n\
                      \"b@uni.org\";\"Bob \"\"the\"\" Builder\";s2;extra;cells\r\n\
                      c@uni.org;\"two\r\nlines\"; s3 \r\n\
                      d@uni.org\r\n";
    let body = import(&app, course.course_id, true, semicolons).await;
    let cells: Vec<(u64, Value, Value, &str)> = results(&body)
        .iter()
        .map(|r| {
            (
                r["row"].as_u64().unwrap(),
                r["student_id"].clone(),
                r["email"].clone(),
                r["verdict"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        cells,
        [
            (2, json!("s1"), json!("a@uni.org"), "would_assign"),
            (5, json!("s2"), json!("b@uni.org"), "would_assign"),
            (6, json!("s3"), json!("c@uni.org"), "would_assign"),
            (7, Value::Null, json!("d@uni.org"), "invalid_row"),
        ]
    );
    assert_eq!(
        results(&body)[3]["message"],
        "student_id: Must not be empty"
    );

    let tabs = "name\temail\tstudent_id\nAda, L.\ta@uni.org\ts1\n\t\t\nBob\tb@uni.org\ts2\n";
    let body = import(&app, course.course_id, true, tabs).await;
    assert_eq!(
        verdicts(&body),
        [
            (2, "would_assign".to_owned()),
            (4, "would_assign".to_owned())
        ]
    );
    let commas = "student_id,email,note\n\"s1\",a@uni.org,\"x, \"\"y\"\"\"\ns2,b@uni.org\n";
    let body = import(&app, course.course_id, true, commas).await;
    assert_eq!(
        verdicts(&body),
        [
            (2, "would_assign".to_owned()),
            (3, "would_assign".to_owned())
        ]
    );
}

#[sqlx::test]
async fn whole_file_errors_are_422(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let course = fixtures::course_with_faculty(&app, "Import 101").await;
    fixtures::provision(&app, course.course_id, 1).await;
    let thousand_and_one = roster("stu", 1001);
    let cases = [
        (json!({}), "Field required"),
        (json!({"csv": null}), "Must not be null"),
        (json!({"csv": ["a"]}), "Must be a string"),
        (json!({"csv": ""}), "Must not be empty"),
        (json!({"csv": "\u{feff}\r\n\r\n"}), "Must not be empty"),
        (
            json!({"csv": "student_id,email\nstu-1,Zo\u{fffd}@uni.org\n"}),
            "The file is not valid UTF-8 text; save it as \"CSV UTF-8\"",
        ),
        (
            json!({"csv": "student_id,e-mail\nstu-1,a@uni.org\n"}),
            "Header row must contain the columns student_id and email",
        ),
        (
            json!({"csv": "stu-1,a@uni.org\nstu-2,b@uni.org\n"}),
            "Header row must contain the columns student_id and email",
        ),
        (
            json!({"csv": "student_id,EMAIL,email\nstu-1,a@uni.org,b@uni.org\n"}),
            "Header column email appears more than once",
        ),
        (
            json!({"csv": "student_id,email\n\n,\n"}),
            "Must contain at least 1 data row",
        ),
        (
            json!({ "csv": thousand_and_one }),
            "Must contain at most 1000 data rows",
        ),
        (
            json!({"csv": "student_id,email\nstu-1,a@uni.org\nstu-2,\"b@uni.org\nstu-3,c@uni.org\n"}),
            "Malformed CSV at row 3: a quoted field is not closed",
        ),
    ];
    for dry_run in [true, false] {
        for (body, message) in &cases {
            let err = app
                .as_faculty()
                .post_roster_import(course.course_id, &query(dry_run), body)
                .await
                .invalid();
            assert_eq!(err["details"], json!({ "csv": message }), "{body}");
        }
    }
    // A quoted line break is not a malformation; a thousand rows are allowed.
    let body = import(&app, course.course_id, true, &roster("stu", 1000)).await;
    assert_eq!(body["summary"]["rows"], 1000);
    assert_eq!(body["summary"]["would_assign"], 1);
    assert_eq!(body["summary"]["not_enough_seats"], 999);
    assert_eq!(enrolments_of(&app, course.course_id, "stu-1").await, 0);
    assert_eq!(reserved_seats(&app, course.course_id).await, 0);
}

#[derive(Debug, sqlx::FromRow)]
struct CreatedEvent {
    enrolment_id: Option<Uuid>,
    actor_role: String,
    data: Value,
}

#[sqlx::test]
async fn real_run_assigns_valid_rows_and_reports_per_row(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let course = fixtures::course_with_faculty(&app, "Import 101").await;
    fixtures::provision(&app, course.course_id, 5).await;
    let csv = "student_id,email\nstu-1,ada@uni.org\nstu-2,not-an-email\n\nstu-3,Bob@Uni.org\n";
    let body = app
        .as_faculty()
        .post_roster_import(
            course.course_id,
            "?dry_run=false",
            &json!({"csv": csv, "filename": "week1.csv"}),
        )
        .await
        .ok_body();
    assert_shape(&body, false);
    assert_eq!(
        body["summary"],
        json!({"rows": 3, "would_assign": 0, "assigned": 2, "unchanged": 0, "rejected": 1,
               "in_progress": 0, "not_enough_seats": 0, "failed": 0, "available_seats": 5})
    );
    let r = results(&body);
    assert_eq!(
        verdicts(&body),
        [
            (2, "assigned".to_owned()),
            (3, "invalid_row".to_owned()),
            (5, "assigned".to_owned())
        ]
    );
    for (item, (student_id, email)) in [&r[0], &r[2]]
        .into_iter()
        .zip([("stu-1", "ada@uni.org"), ("stu-3", "Bob@Uni.org")])
    {
        assert_eq!(item["message"], Value::Null);
        assert_eq!(item["retryable"], false);
        assert_eq!(item["email_sent"], true, "{item}");
        let enrolment_id = uuid_of(&item["enrolment_id"]);
        let project_id = uuid_of(&item["project_id"]);
        let (seat_enrolment, stored_email): (Option<Uuid>, String) = sqlx::query_as(
            "SELECT s.enrolment_id, e.contact_email FROM seat s
             JOIN course_enrolment e ON e.id = s.enrolment_id
             WHERE s.id = $1 AND e.student_id = $2 AND e.project_id = $3",
        )
        .bind(uuid_of(&item["seat_id"]))
        .bind(student_id)
        .bind(project_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
        assert_eq!(
            (seat_enrolment, stored_email.as_str()),
            (Some(enrolment_id), email)
        );
        assert_eq!(app.accounting.balance(project_id), Some(Decimal::from(200)));
    }
    let mut recipients: Vec<String> = app
        .smtp
        .wait_for_messages(2, Duration::from_secs(10))
        .await
        .iter()
        .flat_map(|m| m.rcpt_to.clone())
        .collect();
    recipients.sort();
    assert_eq!(recipients, ["Bob@Uni.org", "ada@uni.org"]);
    assert_eq!(reserved_seats(&app, course.course_id).await, 0);
    assert_eq!(enrolments_of(&app, course.course_id, "stu-2").await, 0);

    // The enrolment events name the import and the file row; one course-level event follows.
    let import_id = body["import_id"].as_str().unwrap();
    let created: Vec<CreatedEvent> = sqlx::query_as(
        "SELECT enrolment_id, actor_role, data FROM course_event
         WHERE course_id = $1 AND event_type = 'enrolment_created' ORDER BY data->>'row'",
    )
    .bind(course.course_id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(created.len(), 2);
    for (event, (item, row)) in created.iter().zip([(&r[0], 2), (&r[2], 5)]) {
        assert_eq!(event.enrolment_id, Some(uuid_of(&item["enrolment_id"])));
        assert_eq!(event.actor_role, "course_admin");
        assert_eq!(
            event.data,
            json!({"source": "roster_import", "run_id": event.data["run_id"],
                   "import_id": import_id, "row": row, "waitlisted_group": false})
        );
        uuid_of(&event.data["run_id"]);
    }
    let imported: Vec<Value> = sqlx::query_scalar(
        "SELECT data FROM course_event WHERE course_id = $1 AND event_type = 'roster_imported'",
    )
    .bind(course.course_id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    let sha256: String = sqlx::query_scalar("SELECT encode(sha256(convert_to($1, 'UTF8')), 'hex')")
        .bind(csv)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(
        imported,
        [
            json!({"import_id": import_id, "filename": "week1.csv", "sha256": sha256,
                "counts": {"rows": 3, "assigned": 2, "unchanged": 0, "rejected": 1,
                           "in_progress": 0, "not_enough_seats": 0, "failed": 0,
                           "available_seats": 5}})
        ]
    );
}

#[sqlx::test]
async fn real_run_with_too_few_seats_assigns_the_first_rows_in_file_order(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let course = fixtures::course_with_faculty(&app, "Import 101").await;
    fixtures::provision(&app, course.course_id, 2).await;
    let body = import(&app, course.course_id, false, &roster("stu", 4)).await;
    assert_eq!(
        verdicts(&body),
        [
            (2, "assigned".to_owned()),
            (3, "assigned".to_owned()),
            (4, "not_enough_seats".to_owned()),
            (5, "not_enough_seats".to_owned())
        ]
    );
    for item in &results(&body)[2..] {
        assert_eq!(
            item["message"],
            "No seat left: 2 seat(s) were available for 4 row(s)"
        );
        assert_eq!(item["retryable"], true);
    }
    assert_eq!(body["summary"]["available_seats"], 2);
    for (student_id, expected) in [("stu-1", 1), ("stu-2", 1), ("stu-3", 0), ("stu-4", 0)] {
        assert_eq!(
            enrolments_of(&app, course.course_id, student_id).await,
            expected
        );
    }
}

#[sqlx::test]
async fn rerun_of_the_same_file_is_idempotent(db: PgPool) {
    // One student at a time, so the fault meets row 3's grant.
    let app = TestApp::spawn_with(db, |vars| {
        vars.insert("EXTERNAL_CONCURRENCY".to_owned(), "1".to_owned());
    })
    .await;
    let course = fixtures::course_with_faculty(&app, "Import 101").await;
    fixtures::provision(&app, course.course_id, 3).await;
    let token = warm_token(&app, course.course_id).await;
    let grants_before = grants(&app);
    app.accounting
        .inject(Fault::new("acc_grant", FaultAction::Status(500)).skip(1));
    let csv = roster("stu", 3);
    let first = app
        .with_token(&token)
        .post_roster_import(course.course_id, "?dry_run=false", &json!({ "csv": csv }))
        .await
        .ok_body();
    assert_shape(&first, false);
    assert_eq!(
        verdicts(&first),
        [
            (2, "assigned".to_owned()),
            (3, "failed".to_owned()),
            (4, "assigned".to_owned())
        ]
    );
    let failed = &results(&first)[1];
    assert_eq!(failed["message"], GRANT);
    assert_eq!(failed["retryable"], true);
    assert!(failed["seat_id"].is_string(), "{failed}");
    assert_eq!(failed["enrolment_id"], Value::Null);
    assert_eq!(reserved_seats(&app, course.course_id).await, 0);

    let second = import(&app, course.course_id, false, &csv).await;
    assert_eq!(
        verdicts(&second),
        [
            (2, "unchanged".to_owned()),
            (3, "assigned".to_owned()),
            (4, "unchanged".to_owned())
        ]
    );
    for (a, b) in [(0, 0), (2, 2)] {
        assert_eq!(
            results(&second)[b]["enrolment_id"],
            results(&first)[a]["enrolment_id"]
        );
    }
    assert_eq!(second["summary"]["unchanged"], 2);
    assert_eq!(second["summary"]["assigned"], 1);
    // Each student funded exactly once; row 3's failed grant was not repeated.
    assert_eq!(grants(&app) - grants_before, 3);
    for i in 1..=3 {
        let student_id = format!("stu-{i}");
        assert_eq!(enrolments_of(&app, course.course_id, &student_id).await, 1);
    }
    let third = import(&app, course.course_id, false, &csv).await;
    assert_eq!(third["summary"]["unchanged"], 3);
    assert_eq!(grants(&app) - grants_before, 3);
}

#[sqlx::test]
async fn concurrent_real_runs_on_two_servers_never_double_enrol(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let other = app.spawn_process().await;
    let course = fixtures::course_with_faculty(&app, "Import 101").await;
    fixtures::provision(&app, course.course_id, 8).await;
    let grants_before = grants(&app);
    app.keycloak.set_latency(Duration::from_millis(10));
    let csv = roster("stu", 6);
    let path = format!(
        "/seats/courses/{}/roster-import?dry_run=false",
        course.course_id
    );
    let token = app.faculty_token();
    let send = |base: String| {
        let request = app
            .client
            .post(format!("{base}{path}"))
            .bearer_auth(&token)
            .json(&json!({ "csv": csv }));
        async move { json(request.send().await.expect("request")).await }
    };
    let (a, b) = tokio::join!(send(app.address.clone()), send(other.base_url.clone()));
    app.keycloak.set_latency(Duration::ZERO);
    let (a, b) = (a.ok_body(), b.ok_body());
    assert_shape(&a, false);
    assert_shape(&b, false);
    for (x, y) in results(&a).iter().zip(results(&b)) {
        let mut pair = [
            x["verdict"].as_str().unwrap(),
            y["verdict"].as_str().unwrap(),
        ];
        pair.sort();
        assert!(
            pair == ["assigned", "in_progress"] || pair == ["assigned", "unchanged"],
            "{x} {y}"
        );
    }
    for i in 1..=6 {
        let student_id = format!("stu-{i}");
        assert_eq!(enrolments_of(&app, course.course_id, &student_id).await, 1);
    }
    let linked: i64 = fetch_scalar(
        &db,
        "SELECT count(DISTINCT enrolment_id) FROM seat WHERE course_id = $1",
        course.course_id,
    )
    .await;
    assert_eq!(linked, 6);
    assert_eq!(reserved_seats(&app, course.course_id).await, 0);
    assert_eq!(grants(&app) - grants_before, 6);
    let prefix = format!("proj/{}/", course.vlab_id);
    let groups = app
        .keycloak
        .groups()
        .iter()
        .filter(|g| g.name.starts_with(&prefix))
        .count();
    assert_eq!(groups, 2 + 2 * 6);
}

#[sqlx::test]
async fn dry_run_and_real_run_agree_when_nothing_changes(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let course = fixtures::course_with_faculty(&app, "Import 101").await;
    fixtures::provision(&app, course.course_id, 3).await;
    fixtures::assign(&app, course.course_id, 1).await;
    let csv = "student_id,email\nstu-1,stu-1@uni.org\nnew-1,n1@uni.org\nbad,\nnew-2,N1@uni.org\n\
               Template,t@uni.org\nnew-3,n3@uni.org\nnew-4,n4@uni.org\n";
    let dry = import(&app, course.course_id, true, csv).await;
    let real = import(&app, course.course_id, false, csv).await;
    for (d, r) in results(&dry).iter().zip(results(&real)) {
        let expected = match d["verdict"].as_str().unwrap() {
            "would_assign" => "assigned",
            other => other,
        };
        assert_eq!(r["verdict"], expected, "{d} {r}");
        if expected != "assigned" {
            assert_eq!(r, d);
        }
    }
    let mut summary = dry["summary"].clone();
    summary["assigned"] = summary["would_assign"].take();
    summary["would_assign"] = json!(0);
    assert_eq!(real["summary"], summary);
    assert_eq!(real["summary"]["assigned"], 2);
    assert_eq!(real["summary"]["not_enough_seats"], 1);
}

#[sqlx::test]
async fn import_into_inactive_past_drop_or_deleted_lab_course_is_409(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let draft = fixtures::create_draft_course(&app, "Draft lab", None, None, None).await;
    fixtures::make_lab_admin(&app, draft.vlab_id, &app.users.faculty);
    let csv = roster("stu", 1);
    for dry_run in [true, false] {
        post_import(&app, draft.course_id, dry_run, &csv)
            .await
            .error_with(
                StatusCode::CONFLICT,
                "INVALID_REQUEST",
                "Cannot assign seats: course is in 'draft' status",
            );
    }
    let course = fixtures::course_with_faculty(&app, "Import 101").await;
    fixtures::provision(&app, course.course_id, 1).await;
    // The lab deleted comes after the last drop date, as in assign.
    for (sql, id, message) in [
        (
            "UPDATE virtual_lab SET deleted = true WHERE id = $1",
            course.vlab_id,
            "Cannot assign seats: the course's virtual lab has been deleted",
        ),
        (
            "UPDATE course SET last_drop_date = now() - interval '1 second' WHERE id = $1",
            course.course_id,
            "Cannot assign seats after the course last drop date",
        ),
    ] {
        exec(&app.db, sql, id).await;
        for dry_run in [true, false] {
            post_import(&app, course.course_id, dry_run, &csv)
                .await
                .error_with(StatusCode::CONFLICT, "INVALID_REQUEST", message);
        }
    }
    // A 422 comes before the 409.
    app.as_faculty()
        .post_roster_import(course.course_id, "?dry_run=true", &json!({"csv": ""}))
        .await
        .invalid();
    assert_eq!(reserved_seats(&app, course.course_id).await, 0);
}

#[sqlx::test]
async fn import_by_non_admin_is_403(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let course: ActiveCourse = fixtures::create_active_course(&app, "Import 101").await;
    fixtures::provision(&app, course.course_id, 1).await;
    let body = json!({ "csv": roster("stu", 1) });
    // Faculty of another lab (even with a broken query and body), a student, a malformed id.
    app.as_faculty()
        .post_roster_import(course.course_id, "", &json!({}))
        .await
        .not_allowed();
    app.as_user(&app.users.students[0])
        .post_roster_import(course.course_id, "?dry_run=false", &body)
        .await
        .not_allowed();
    app.as_faculty()
        .post_roster_import("not-a-uuid", "?dry_run=true", &body)
        .await
        .not_allowed();
    app.anonymous()
        .post_roster_import(course.course_id, "?dry_run=true", &body)
        .await
        .unauthenticated();
    assert_eq!(enrolments_of(&app, course.course_id, "stu-1").await, 0);
}

#[sqlx::test]
async fn project_name_taken_rows_do_not_consume_seats(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let course = fixtures::course_with_faculty(&app, "Import 101").await;
    fixtures::provision(&app, course.course_id, 1).await;
    let groups_before = app.keycloak.call_count("kc_create_group");
    let csv = "student_id,email\nTemplate,t@uni.org\nstu-1,s1@uni.org\n";
    let body = import(&app, course.course_id, false, csv).await;
    assert_eq!(
        verdicts(&body),
        [
            (2, "project_name_taken".to_owned()),
            (3, "assigned".to_owned())
        ]
    );
    assert_eq!(body["summary"]["rejected"], 1);
    assert_eq!(body["summary"]["available_seats"], 1);
    // Only stu-1's two groups were created.
    assert_eq!(
        app.keycloak.call_count("kc_create_group") - groups_before,
        2
    );
}

#[sqlx::test]
async fn summary_counts_add_up_to_rows(db: PgPool) {
    let app = TestApp::spawn_with(db, |vars| {
        vars.insert("EXTERNAL_CONCURRENCY".to_owned(), "1".to_owned());
    })
    .await;
    let course = fixtures::course_with_faculty(&app, "Import 101").await;
    fixtures::provision(&app, course.course_id, 4).await;
    fixtures::assign(&app, course.course_id, 1).await;
    reserve_one_seat(&app, course.course_id, "busy", "busy@uni.org").await;
    let token = warm_token(&app, course.course_id).await;
    app.accounting
        .inject(Fault::new("acc_grant", FaultAction::Status(500)));
    let csv = "student_id,email\nstu-1,stu-1@uni.org\nx,\nx2,stu-1@UNI.org\nbusy,b@uni.org\n\
               Template,t@uni.org\nn1,n1@uni.org\nn2,n2@uni.org\nn3,n3@uni.org\nn1,z@uni.org\n";
    let body = app
        .with_token(&token)
        .post_roster_import(course.course_id, "?dry_run=false", &json!({ "csv": csv }))
        .await
        .ok_body();
    assert_shape(&body, false);
    assert_eq!(
        body["summary"],
        json!({"rows": 9, "would_assign": 0, "assigned": 1, "unchanged": 1, "rejected": 4,
               "in_progress": 1, "not_enough_seats": 1, "failed": 1, "available_seats": 2})
    );
}

#[sqlx::test]
async fn import_before_the_start_creates_waitlisted_groups(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let course = future_course(&app).await;
    fixtures::provision(&app, course.course_id, 2).await;
    let body = import(&app, course.course_id, false, &roster("stu", 2)).await;
    assert_eq!(body["summary"]["assigned"], 2);
    for item in results(&body) {
        let project_id = uuid_of(&item["project_id"]);
        let name = format!("proj/{}/{project_id}/waitlisted", course.vlab_id);
        let group = app.keycloak.group_by_name(&name);
        assert!(group.is_some(), "no waitlisted group {name}");
        let stored: Option<String> = fetch_scalar(
            &app.db,
            "SELECT waitlisted_group_id FROM project WHERE id = $1",
            project_id,
        )
        .await;
        assert_eq!(stored, group.map(|g| g.id));
    }
}

#[sqlx::test]
async fn waitlisted_group_failure_fails_the_row_and_releases_its_seat(db: PgPool) {
    let app = TestApp::spawn_with(db, |vars| {
        vars.insert("EXTERNAL_CONCURRENCY".to_owned(), "1".to_owned());
    })
    .await;
    let course = future_course(&app).await;
    fixtures::provision(&app, course.course_id, 2).await;
    let token = warm_token(&app, course.course_id).await;
    let groups_before = app.keycloak.groups().len();
    // Row 2's third group (the waitlisted one) fails.
    app.keycloak
        .inject(Fault::new("kc_create_group", FaultAction::Status(500)).skip(2));
    let body = app
        .with_token(&token)
        .post_roster_import(
            course.course_id,
            "?dry_run=false",
            &json!({ "csv": roster("stu", 2) }),
        )
        .await
        .ok_body();
    assert_shape(&body, false);
    assert_eq!(
        verdicts(&body),
        [(2, "failed".to_owned()), (3, "assigned".to_owned())]
    );
    let failed = &results(&body)[0];
    assert_eq!(failed["message"], GROUPS);
    let seat: (Option<Uuid>, Option<Uuid>) =
        sqlx::query_as("SELECT enrolment_id, reservation_id FROM seat WHERE id = $1")
            .bind(uuid_of(&failed["seat_id"]))
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(seat, (None, None), "the seat is available again");
    // Only stu-2's three groups remain.
    assert_eq!(app.keycloak.groups().len(), groups_before + 3);
    assert_eq!(enrolments_of(&app, course.course_id, "stu-1").await, 0);
}

/// An active course starting in 7 days (last drop in 14, end in 90) with the faculty as a
/// lab admin.
async fn future_course(app: &TestApp) -> ActiveCourse {
    let now = chrono::Utc::now();
    let course = fixtures::create_draft_course(
        app,
        "Import 101",
        Some(now + chrono::TimeDelta::days(7)),
        Some(now + chrono::TimeDelta::days(14)),
        Some(now + chrono::TimeDelta::days(90)),
    )
    .await;
    fixtures::activate_course(app, course.course_id).await;
    fixtures::make_lab_admin(app, course.vlab_id, &app.users.faculty);
    course
}

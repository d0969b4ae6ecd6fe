//! `POST /seats/courses/{course_id}/drop` (api.md §4.6.7) and the drop routine behind it
//! (rules.md §5): recovery, pre-checks, concurrency, retries and the access-removal outbox.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;
use vlab_courses::usecases::drops;
use vlab_emulators::{Fault, FaultAction};

use crate::fixtures::{
    Assigned, claim_and_activate, course_with_students, create_active_course, make_lab_admin,
    provision,
};
use crate::helpers::{ReplyExt, TestApp, fetch_row, fetch_scalar};

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// The one result of a one-seat drop.
async fn drop_one(app: &TestApp, course_id: Uuid, seat_id: Uuid) -> Value {
    let body = app
        .as_faculty()
        .post_drop(course_id, &[seat_id])
        .await
        .ok_body();
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 1, "{body}");
    assert_eq!(results[0]["seat_id"], seat_id.to_string());
    results[0].clone()
}

fn assert_dropped(result: &Value, recovered: bool, access_removed: bool) {
    assert_eq!(
        *result,
        json!({"seat_id": result["seat_id"], "is_dropped": true, "error": null,
               "seat_recovered": recovered, "access_removed": access_removed}),
        "{result}"
    );
}

fn assert_not_dropped(result: &Value, error: &str) {
    assert_eq!(
        *result,
        json!({"seat_id": result["seat_id"], "is_dropped": false, "error": error,
               "seat_recovered": null, "access_removed": null}),
        "{result}"
    );
}

#[derive(Debug, sqlx::FromRow)]
struct SeatRow {
    is_consumed: bool,
    previously_dropped: bool,
    enrolment_id: Option<Uuid>,
}

async fn seat(db: &PgPool, id: Uuid) -> SeatRow {
    fetch_row(
        db,
        "SELECT is_consumed, previously_dropped, enrolment_id FROM seat WHERE id = $1",
        id,
    )
    .await
}

async fn is_dropped(db: &PgPool, enrolment_id: Uuid) -> bool {
    fetch_scalar(
        db,
        "SELECT is_dropped FROM course_enrolment WHERE id = $1",
        enrolment_id,
    )
    .await
}

#[derive(Debug, sqlx::FromRow)]
struct DropRow {
    reason: String,
    requested_by: Option<Uuid>,
    requested_at: DateTime<Utc>,
    is_early: bool,
    state: String,
    deplete_in_doubt: bool,
    depleted_amount: Option<Decimal>,
    seat_recovered: Option<bool>,
    access_attempts: i32,
    next_access_attempt_at: Option<DateTime<Utc>>,
    access_removed_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    lease_id: Option<Uuid>,
}

async fn drop_row(db: &PgPool, enrolment_id: Uuid) -> DropRow {
    fetch_row(
        db,
        "SELECT reason, requested_by, requested_at, is_early, state, deplete_in_doubt,
                depleted_amount, seat_recovered, access_attempts, next_access_attempt_at,
                access_removed_at, last_error, lease_id
         FROM enrolment_drop WHERE enrolment_id = $1",
        enrolment_id,
    )
    .await
}

/// Moves the course's drop window (and optionally its end) into the past.
async fn close_drop_window(db: &PgPool, course_id: Uuid, also_end: bool) {
    let past = Utc::now() - TimeDelta::minutes(5);
    sqlx::query(
        "UPDATE course SET last_drop_date = $2,
                end_date = CASE WHEN $3 THEN $2 + interval '1 minute' ELSE end_date END
         WHERE id = $1",
    )
    .bind(course_id)
    .bind(past)
    .bind(also_end)
    .execute(db)
    .await
    .unwrap();
}

/// Assigns one student with an id of our choosing (the fixture always uses stu-1..stu-n).
async fn assign_one(app: &TestApp, course_id: Uuid, student_id: &str) -> Assigned {
    let email = format!("{student_id}@uni.org");
    let body = app
        .as_faculty()
        .post_assign(
            course_id,
            &json!({"students": [{"student_id": student_id, "email": email}]}),
        )
        .await
        .ok_body();
    let item = &body["results"][0];
    assert_eq!(item["assignment_successful"], true, "{item}");
    let id = |key: &str| item[key].as_str().unwrap().parse::<Uuid>().unwrap();
    Assigned {
        student_id: student_id.to_owned(),
        email,
        seat_id: id("seat_id"),
        enrolment_id: id("enrolment_id"),
        project_id: id("project_id"),
    }
}

/// The group paths that give a student access to their project and the lab.
fn access_paths(vlab_id: Uuid, project_id: Uuid) -> [String; 2] {
    [
        format!("/proj/{vlab_id}/{project_id}/member"),
        format!("/vlab/{vlab_id}/member"),
    ]
}

fn has_any(paths: &[String], wanted: &[String]) -> bool {
    wanted.iter().any(|w| paths.contains(w))
}

// ---- recovery -------------------------------------------------------------------------------

#[sqlx::test]
async fn an_early_drop_of_a_student_who_spent_nothing_recovers_the_seat(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, students) = course_with_students(&app, "Drop recovery", 1).await;
    let s = &students[0];
    let student = &app.users.students[0];
    claim_and_activate(&app, s.enrolment_id, student).await;
    let wanted = access_paths(course.vlab_id, s.project_id);
    assert!(
        wanted
            .iter()
            .all(|w| app.keycloak.user_group_paths(student.id).contains(w))
    );

    let result = drop_one(&app, course.course_id, s.seat_id).await;
    assert_dropped(&result, true, true);

    assert!(is_dropped(&db, s.enrolment_id).await);
    let seat = seat(&db, s.seat_id).await;
    assert!(seat.previously_dropped && !seat.is_consumed && seat.enrolment_id.is_none());
    let row = drop_row(&db, s.enrolment_id).await;
    assert_eq!(row.reason, "faculty");
    assert_eq!(row.requested_by, Some(app.users.faculty.id));
    assert!(row.is_early);
    assert_eq!(row.state, "done");
    assert_eq!(row.depleted_amount, Some(dec("200.00")));
    assert_eq!(row.seat_recovered, Some(true));
    assert!(!row.deplete_in_doubt && row.lease_id.is_none());
    assert!(row.access_removed_at.is_some());
    assert_eq!(row.access_attempts, 1);
    assert_eq!(app.accounting.balance(s.project_id), Some(Decimal::ZERO));
    assert_eq!(app.accounting.call_count("acc_deplete_project"), 1);
    assert!(!has_any(
        &app.keycloak.user_group_paths(student.id),
        &wanted
    ));

    // The seat is available again: the course's seat list shows it unassigned.
    let seats = app
        .as_faculty()
        .get_course_seats(course.course_id)
        .await
        .ok_body();
    assert_eq!(seats["data"][0]["enrolment_id"], Value::Null);
    assert_eq!(seats["data"][0]["previously_dropped"], true);
    assert_eq!(seats["data"][0]["is_consumed"], false);
}

#[sqlx::test]
async fn spending_exactly_the_margin_still_recovers_the_seat(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, students) = course_with_students(&app, "Drop margin", 1).await;
    let s = &students[0];
    app.accounting.spend(s.project_id, dec("50.00")).unwrap();
    let result = drop_one(&app, course.course_id, s.seat_id).await;
    // Never claimed: there is nobody to remove, which counts as done.
    assert_dropped(&result, true, true);
    assert_eq!(
        drop_row(&db, s.enrolment_id).await.depleted_amount,
        Some(dec("150.00"))
    );
    assert!(seat(&db, s.seat_id).await.previously_dropped);
}

#[sqlx::test]
async fn spending_more_than_the_margin_consumes_the_seat(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, students) = course_with_students(&app, "Drop spent", 1).await;
    let s = &students[0];
    app.accounting.spend(s.project_id, dec("50.01")).unwrap();
    let result = drop_one(&app, course.course_id, s.seat_id).await;
    assert_dropped(&result, false, true);
    let seat = seat(&db, s.seat_id).await;
    assert!(seat.is_consumed && !seat.previously_dropped);
    assert_eq!(seat.enrolment_id, Some(s.enrolment_id));
    let row = drop_row(&db, s.enrolment_id).await;
    assert_eq!(row.depleted_amount, Some(dec("149.99")));
    assert_eq!(row.seat_recovered, Some(false));
    assert_eq!(app.accounting.balance(s.project_id), Some(Decimal::ZERO));

    // Dropping the consumed seat again is a pre-check failure with no deplete.
    let again = drop_one(&app, course.course_id, s.seat_id).await;
    assert_not_dropped(&again, "Enrolment is already dropped");
    assert_eq!(app.accounting.call_count("acc_deplete_project"), 1);
}

#[sqlx::test]
async fn a_recovered_seat_is_consumed_by_its_next_drop(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, students) = course_with_students(&app, "Drop twice", 1).await;
    let first = &students[0];
    assert_dropped(
        &drop_one(&app, course.course_id, first.seat_id).await,
        true,
        true,
    );
    // The recovered seat is the only one: the next student gets it.
    let second = assign_one(&app, course.course_id, "stu-next").await;
    assert_eq!(second.seat_id, first.seat_id);
    let result = drop_one(&app, course.course_id, second.seat_id).await;
    assert_dropped(&result, false, true);
    let seat = seat(&db, second.seat_id).await;
    assert!(seat.is_consumed && seat.previously_dropped);
    assert_eq!(seat.enrolment_id, Some(second.enrolment_id));
    // Nothing was spent, so only the second-drop rule consumed it.
    assert_eq!(
        drop_row(&db, second.enrolment_id).await.depleted_amount,
        Some(dec("200.00"))
    );
}

#[sqlx::test]
async fn a_drop_after_the_last_drop_date_consumes_the_seat_even_once_ended(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, students) = course_with_students(&app, "Drop late", 2).await;
    close_drop_window(&db, course.course_id, false).await;
    let late = drop_one(&app, course.course_id, students[0].seat_id).await;
    assert_dropped(&late, false, true);
    assert!(!drop_row(&db, students[0].enrolment_id).await.is_early);
    assert!(seat(&db, students[0].seat_id).await.is_consumed);

    // Dropping is allowed at any date: after the end too.
    close_drop_window(&db, course.course_id, true).await;
    let ended = drop_one(&app, course.course_id, students[1].seat_id).await;
    assert_dropped(&ended, false, true);
}

// ---- pre-checks, validation and the tier ----------------------------------------------------

#[sqlx::test]
async fn results_follow_request_order_with_a_pre_check_error_per_seat(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, students) = course_with_students(&app, "Drop pre-checks", 1).await;
    let unassigned = provision(&app, course.course_id, 1).await[0];
    let other = create_active_course(&app, "Drop other course").await;
    let foreign = provision(&app, other.course_id, 1).await[0];
    let unknown = Uuid::new_v4();
    let assigned = students[0].seat_id;

    let body = app
        .as_faculty()
        .post_drop(course.course_id, &[unknown, foreign, assigned, unassigned])
        .await
        .ok_body();
    let results = body["results"].as_array().unwrap();
    let ids: Vec<&str> = results
        .iter()
        .map(|r| r["seat_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [unknown, foreign, assigned, unassigned].map(|u| u.to_string())
    );
    assert_not_dropped(&results[0], "Seat not found in this course");
    assert_not_dropped(&results[1], "Seat not found in this course");
    assert_dropped(&results[2], true, true);
    assert_not_dropped(&results[3], "Seat has no enrolment");
    assert_eq!(app.accounting.call_count("acc_deplete_project"), 1);

    // The recovered seat has no enrolment any more.
    let again = drop_one(&app, course.course_id, assigned).await;
    assert_not_dropped(&again, "Seat has no enrolment");
}

#[sqlx::test]
async fn invalid_drop_bodies_are_422_under_seat_ids(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let course = create_active_course(&app, "Drop validation").await;
    make_lab_admin(&app, course.vlab_id, &app.users.faculty);
    let a = Uuid::new_v4();
    let many: Vec<Uuid> = (0..1001).map(|_| Uuid::new_v4()).collect();
    let cases = [
        (json!({}), "Field required"),
        (json!({"seat_ids": null}), "Must not be null"),
        (json!({"seat_ids": "x"}), "Must be a list"),
        (json!({"seat_ids": []}), "Must contain at least 1 item"),
        (json!({"seat_ids": many}), "Must contain at most 1000 items"),
        (
            json!({"seat_ids": [a, "nope"]}),
            "seat_ids[1]: Must be a UUID",
        ),
        (
            json!({"seat_ids": [a, a.to_string().to_uppercase()]}),
            &format!("Duplicate seat_id in request: {a}"),
        ),
    ];
    let path = format!("/seats/courses/{}/drop", course.course_id);
    for (body, message) in cases {
        let answer = app.as_faculty().post(&path, &body).await.error_with(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST",
            "Validation error",
        );
        assert_eq!(answer["details"], json!({"seat_ids": message}), "{body}");
    }
    let answer = app.as_faculty().post_empty(&path).await.invalid();
    assert_eq!(answer["details"], json!({"body": "Field required"}));
}

#[sqlx::test]
async fn only_a_course_admin_may_drop(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let course = create_active_course(&app, "Drop tier").await;
    let path = format!("/seats/courses/{}/drop", course.course_id);
    let body = json!({"seat_ids": []});

    app.anonymous().post(&path, &body).await.unauthenticated();

    // Not a lab admin of this course: 403 before the 422. (The service admin created the lab,
    // so it is a lab admin; the OBI owner user is not.)
    for token in [
        app.student_token(0),
        app.token(&app.users.owner),
        app.faculty_token(),
    ] {
        let answer = app.with_token(&token).post(&path, &body).await.error_with(
            StatusCode::FORBIDDEN,
            "NOT_ALLOWED_OP",
            "Not authorized to perform this action",
        );
        assert_eq!(answer["details"], Value::Null);
    }
    make_lab_admin(&app, course.vlab_id, &app.users.faculty);
    let token = app.token(&app.users.faculty);
    // A malformed or unknown course id fails the tier, never 422 or 404.
    for bad in ["not-a-uuid".to_owned(), Uuid::new_v4().to_string()] {
        app.with_token(&token)
            .post(&format!("/seats/courses/{bad}/drop"), &body)
            .await
            .not_allowed();
    }
}

// ---- concurrency ----------------------------------------------------------------------------

#[sqlx::test]
async fn of_two_concurrent_drops_of_one_seat_exactly_one_settles(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, students) = course_with_students(&app, "Drop race", 1).await;
    let seat_id = students[0].seat_id;
    // Both requests pass the pre-check while the first deplete is still in flight.
    app.accounting
        .set_operation_latency("acc_deplete_project", Duration::from_millis(600));
    let seats = [seat_id];
    let faculty = app.as_faculty();
    let (a, b) = tokio::join!(
        faculty.post_drop(course.course_id, &seats),
        faculty.post_drop(course.course_id, &seats),
    );
    assert_eq!(a.0, StatusCode::OK, "{}", a.1);
    assert_eq!(b.0, StatusCode::OK, "{}", b.1);
    let results = [a.1["results"][0].clone(), b.1["results"][0].clone()];
    let winners = results.iter().filter(|r| r["is_dropped"] == true).count();
    assert_eq!(winners, 1, "{results:?}");
    let loser = results.iter().find(|r| r["is_dropped"] == false).unwrap();
    assert_not_dropped(loser, "A drop of this seat is already in progress");
    assert_eq!(app.accounting.call_count("acc_deplete_project"), 1);
    let row = drop_row(&db, students[0].enrolment_id).await;
    assert_eq!(row.state, "done");
    assert_eq!(row.seat_recovered, Some(true));
}

// ---- access removal -------------------------------------------------------------------------

/// A drop whose Keycloak step fails on `operation` settles without access removal; the worker
/// pass, once the retry is due, completes it.
async fn access_removal_is_retried_by_the_worker_pass(db: PgPool, operation: &str) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, students) = course_with_students(&app, "Drop access", 1).await;
    let s = &students[0];
    let student = &app.users.students[0];
    claim_and_activate(&app, s.enrolment_id, student).await;
    let wanted = access_paths(course.vlab_id, s.project_id);

    app.keycloak
        .inject(Fault::new(operation, FaultAction::Status(500)));
    let before = Utc::now();
    let result = drop_one(&app, course.course_id, s.seat_id).await;
    assert_dropped(&result, true, false);
    assert!(is_dropped(&db, s.enrolment_id).await);

    let row = drop_row(&db, s.enrolment_id).await;
    assert_eq!(row.state, "revoking");
    assert_eq!(row.access_attempts, 1);
    assert!(row.lease_id.is_none());
    assert!(row.last_error.is_some());
    // The first retry is due after backoff(1) = 1 minute ± 20 %.
    let due = row.next_access_attempt_at.expect("a retry is scheduled");
    assert!(due >= before + TimeDelta::seconds(47), "{due} vs {before}");
    assert!(due <= Utc::now() + TimeDelta::seconds(73), "{due}");
    assert!(
        wanted
            .iter()
            .all(|w| app.keycloak.user_group_paths(student.id).contains(w))
    );

    // Not due yet: a pass now leaves it alone.
    let services = app.services();
    let sweep = drops::access_removal_pass(&services, Utc::now(), 50)
        .await
        .unwrap();
    assert_eq!(
        (sweep.completed, sweep.failed, sweep.still_revoking),
        (0, 0, 1)
    );

    let later = Utc::now() + TimeDelta::minutes(2);
    let sweep = drops::access_removal_pass(&services, later, 50)
        .await
        .unwrap();
    assert_eq!(
        (sweep.completed, sweep.failed, sweep.still_revoking),
        (1, 0, 0)
    );
    let row = drop_row(&db, s.enrolment_id).await;
    assert_eq!(row.state, "done");
    assert_eq!(row.access_attempts, 2);
    assert_eq!(row.access_removed_at, Some(later_micros(later)));
    assert!(row.lease_id.is_none() && row.last_error.is_none());
    assert!(!has_any(
        &app.keycloak.user_group_paths(student.id),
        &wanted
    ));
}

/// Postgres keeps microseconds.
fn later_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap()
}

#[sqlx::test]
async fn a_failed_member_removal_is_completed_by_the_worker_pass(db: PgPool) {
    access_removal_is_retried_by_the_worker_pass(db, "kc_remove_member").await;
}

#[sqlx::test]
async fn a_failed_member_listing_is_completed_by_the_worker_pass(db: PgPool) {
    access_removal_is_retried_by_the_worker_pass(db, "kc_list_members").await;
}

// ---- retries after a failed or uncertain deplete ----------------------------------------------

#[sqlx::test]
async fn a_retried_drop_after_a_failed_deplete_still_recovers_the_seat(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, students) = course_with_students(&app, "Drop deplete failed", 1).await;
    let s = &students[0];
    let student = &app.users.students[0];
    claim_and_activate(&app, s.enrolment_id, student).await;

    app.accounting
        .inject(Fault::new("acc_deplete_project", FaultAction::Status(500)));
    let failed = drop_one(&app, course.course_id, s.seat_id).await;
    assert_not_dropped(
        &failed,
        &format!(
            "Failed to deplete credits for project {}; the student was not dropped",
            s.project_id
        ),
    );
    // Nothing moved, the student keeps access, and the flag is restored (not in doubt).
    assert!(!is_dropped(&db, s.enrolment_id).await);
    assert_eq!(
        seat(&db, s.seat_id).await.enrolment_id,
        Some(s.enrolment_id)
    );
    assert_eq!(app.accounting.balance(s.project_id), Some(dec("200")));
    let row = drop_row(&db, s.enrolment_id).await;
    assert_eq!(row.state, "depleting");
    assert!(!row.deplete_in_doubt);
    assert!(row.lease_id.is_none());
    assert!(row.last_error.is_some());
    let wanted = access_paths(course.vlab_id, s.project_id);
    assert!(
        wanted
            .iter()
            .all(|w| app.keycloak.user_group_paths(student.id).contains(w))
    );

    let retried = drop_one(&app, course.course_id, s.seat_id).await;
    assert_dropped(&retried, true, true);
    let after = drop_row(&db, s.enrolment_id).await;
    assert_eq!(after.requested_at, row.requested_at);
    assert_eq!(after.depleted_amount, Some(dec("200.00")));
    assert!(!has_any(
        &app.keycloak.user_group_paths(student.id),
        &wanted
    ));
}

#[sqlx::test]
async fn after_a_definite_deplete_failure_spending_still_counts(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, students) = course_with_students(&app, "Drop failed then spent", 1).await;
    let s = &students[0];
    app.accounting
        .inject(Fault::new("acc_deplete_project", FaultAction::Status(500)));
    let failed = drop_one(&app, course.course_id, s.seat_id).await;
    assert_eq!(failed["is_dropped"], false);
    // The failed deplete provably moved nothing, so no in-doubt pass is given.
    app.accounting.spend(s.project_id, dec("60")).unwrap();
    let retried = drop_one(&app, course.course_id, s.seat_id).await;
    assert_dropped(&retried, false, true);
}

#[sqlx::test]
async fn a_retried_drop_after_an_uncertain_deplete_keeps_the_seat_recoverable(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let (course, students) = course_with_students(&app, "Drop deplete uncertain", 1).await;
    let s = &students[0];
    // Performed, then unanswered past HTTP_TIMEOUT_SECONDS (2 s).
    app.accounting.inject(Fault::new(
        "acc_deplete_project",
        FaultAction::TimeoutAfter(Duration::from_secs(3)),
    ));
    let uncertain = drop_one(&app, course.course_id, s.seat_id).await;
    assert_not_dropped(
        &uncertain,
        &format!(
            "Could not confirm the credit depletion for project {}; retry the drop",
            s.project_id
        ),
    );
    assert_eq!(app.accounting.balance(s.project_id), Some(Decimal::ZERO));
    let row = drop_row(&db, s.enrolment_id).await;
    assert_eq!(row.state, "depleting");
    assert!(row.deplete_in_doubt);
    assert!(row.lease_id.is_none());
    assert!(row.is_early);
    assert!(!is_dropped(&db, s.enrolment_id).await);

    // Lateness was fixed at the first request: closing the window now changes nothing.
    close_drop_window(&db, course.course_id, false).await;
    let retried = drop_one(&app, course.course_id, s.seat_id).await;
    assert_dropped(&retried, true, true);
    let after = drop_row(&db, s.enrolment_id).await;
    assert_eq!(after.depleted_amount, Some(dec("0.00")));
    assert_eq!(after.seat_recovered, Some(true));
    assert_eq!(after.requested_at, row.requested_at);
    assert!(!after.deplete_in_doubt);
    assert_eq!(app.accounting.call_count("acc_deplete_project"), 2);
    let seat = seat(&db, s.seat_id).await;
    assert!(seat.previously_dropped && seat.enrolment_id.is_none());
}

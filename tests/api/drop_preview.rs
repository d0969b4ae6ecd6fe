//! `POST /seats/courses/{course_id}/drop-preview` (round2.md §4): the prediction of each
//! seat's drop, the one balance read it may make, and that it changes nothing.

use std::str::FromStr;
use std::time::Duration;

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;
use vlab_emulators::{Fault, FaultAction};

use crate::fixtures::{self, ActiveCourse, Assigned, course_with_students, create_active_course};
use crate::helpers::{Reply, ReplyExt, TestApp, exec, fetch_scalar};

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

async fn preview(app: &TestApp, course_id: Uuid, seat_ids: &[Uuid]) -> Reply {
    app.as_faculty()
        .post(
            &format!("/seats/courses/{course_id}/drop-preview"),
            &json!({ "seat_ids": seat_ids }),
        )
        .await
}

/// The preview's results, after checking the envelope keys.
async fn results(app: &TestApp, course_id: Uuid, seat_ids: &[Uuid]) -> (Value, Vec<Value>) {
    let body = preview(app, course_id, seat_ids).await.ok_body();
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "balances_available",
            "evaluated_at",
            "last_drop_date",
            "recovery_margin_credits",
            "results",
            "summary"
        ]
    );
    let results = body["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), seat_ids.len(), "{body}");
    for (result, seat_id) in results.iter().zip(seat_ids) {
        assert_eq!(result["seat_id"], seat_id.to_string(), "request order");
    }
    (body, results)
}

/// A droppable seat's item, with the prediction and the four amounts (null: unknown).
fn droppable(
    student: &Assigned,
    recovered: Option<bool>,
    blockers: &[&str],
    balance: Option<f64>,
) -> Value {
    let granted = 200.0;
    json!({
        "seat_id": student.seat_id, "enrolment_id": student.enrolment_id,
        "student_id": student.student_id, "can_drop": true, "error": null, "drop_state": null,
        "seat_recovered": recovered, "recovery_blockers": blockers,
        "credits_granted": granted, "current_balance": balance,
        "credits_spent": balance.map(|b| (granted - b).max(0.0)),
        "credits_returned": balance.map(|b| b.max(0.0)),
        "deplete_in_doubt": false,
    })
}

/// Closes the drop window: the course is past its `last_drop_date`.
async fn close_drop_window(app: &TestApp, course_id: Uuid) {
    exec(
        &app.db,
        "UPDATE course SET start_date = now() - interval '10 days',
             last_drop_date = now() - interval '1 day' WHERE id = $1",
        course_id,
    )
    .await;
}

#[sqlx::test]
async fn preview_early_with_little_spent_predicts_recovery_and_returned_credits(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = course_with_students(&app, "Preview 101", 1).await;
    app.accounting
        .spend(students[0].project_id, dec("20"))
        .unwrap();
    let (body, results) = results(&app, course.course_id, &[students[0].seat_id]).await;
    assert_eq!(
        results[0],
        droppable(&students[0], Some(true), &[], Some(180.0))
    );
    assert_eq!(body["balances_available"], true);
    assert_eq!(body["recovery_margin_credits"], 50);
    assert_eq!(
        body["summary"],
        json!({"can_drop": 1, "seats_recovered": 1, "seats_consumed": 0, "seats_unknown": 0,
               "credits_returned": 180.0})
    );
    assert_eq!(app.accounting.call_count("acc_vlab_balance"), 1);
}

#[sqlx::test]
async fn preview_early_with_over_margin_spent_predicts_consumed_spent_over_margin(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = course_with_students(&app, "Preview 102", 2).await;
    app.accounting
        .spend(students[0].project_id, dec("60"))
        .unwrap();
    // Overdrawn: nothing to return, everything spent.
    app.accounting
        .spend(students[1].project_id, dec("230"))
        .unwrap();
    let seats = [students[0].seat_id, students[1].seat_id];
    let (body, results) = results(&app, course.course_id, &seats).await;
    assert_eq!(
        results[0],
        droppable(
            &students[0],
            Some(false),
            &["spent_over_margin"],
            Some(140.0)
        )
    );
    assert_eq!(
        results[1],
        droppable(
            &students[1],
            Some(false),
            &["spent_over_margin"],
            Some(-30.0)
        )
    );
    assert_eq!(results[1]["credits_spent"], 230.0);
    assert_eq!(body["summary"]["seats_consumed"], 2);
    assert_eq!(body["summary"]["credits_returned"], 140.0);
}

#[sqlx::test]
async fn preview_after_last_drop_date_predicts_consumed_without_reading_balances(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = course_with_students(&app, "Preview 103", 1).await;
    close_drop_window(&app, course.course_id).await;
    let (body, results) = results(&app, course.course_id, &[students[0].seat_id]).await;
    assert_eq!(
        results[0],
        droppable(&students[0], Some(false), &["past_last_drop_date"], None)
    );
    assert_eq!(body["balances_available"], true);
    assert_eq!(app.accounting.call_count("acc_vlab_balance"), 0);
}

#[sqlx::test]
async fn preview_of_a_once_recovered_seat_predicts_consumed_seat_recovered_before(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, first) = course_with_students(&app, "Preview 104", 1).await;
    let dropped = app
        .as_faculty()
        .post_drop(course.course_id, &[first[0].seat_id])
        .await
        .ok_body();
    assert_eq!(dropped["results"][0]["seat_recovered"], true);
    // The recovered seat goes to the next student.
    let (status, body) = app
        .as_faculty()
        .post_assign(
            course.course_id,
            &fixtures::students_body(&[("stu-9", "stu-9@uni.org")]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seat_id = Uuid::parse_str(body["results"][0]["seat_id"].as_str().unwrap()).unwrap();
    assert_eq!(seat_id, first[0].seat_id);

    let (_, results) = results(&app, course.course_id, &[seat_id]).await;
    assert_eq!(results[0]["seat_recovered"], false);
    assert_eq!(
        results[0]["recovery_blockers"],
        json!(["seat_recovered_before"])
    );
    assert_eq!(results[0]["student_id"], "stu-9");
    assert_eq!(app.accounting.call_count("acc_vlab_balance"), 0);
}

/// A drop whose deplete was performed but never answered: `depleting`, in doubt, unleased.
async fn uncertain_drop(app: &TestApp, course: &ActiveCourse, student: &Assigned) {
    app.accounting.inject(Fault::new(
        "acc_deplete_project",
        FaultAction::TimeoutAfter(Duration::from_secs(3)),
    ));
    let body = app
        .as_faculty()
        .post_drop(course.course_id, &[student.seat_id])
        .await
        .ok_body();
    assert_eq!(body["results"][0]["is_dropped"], false, "{body}");
    app.accounting.clear_faults();
}

#[sqlx::test]
async fn preview_of_a_resumed_in_doubt_drop_predicts_recovered(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = course_with_students(&app, "Preview 105", 1).await;
    uncertain_drop(&app, &course, &students[0]).await;
    // The window closes meanwhile; the first request's lateness holds.
    close_drop_window(&app, course.course_id).await;
    let (body, results) = results(&app, course.course_id, &[students[0].seat_id]).await;
    assert_eq!(results[0]["drop_state"], "depleting");
    assert_eq!(results[0]["deplete_in_doubt"], true);
    assert_eq!(results[0]["seat_recovered"], true);
    assert_eq!(results[0]["recovery_blockers"], json!([]));
    assert_eq!(app.accounting.call_count("acc_vlab_balance"), 0);
    assert_eq!(body["summary"]["seats_recovered"], 1);

    let dropped = app
        .as_faculty()
        .post_drop(course.course_id, &[students[0].seat_id])
        .await
        .ok_body();
    assert_eq!(dropped["results"][0]["seat_recovered"], true);
}

#[sqlx::test]
async fn preview_pre_check_errors_match_drop_strings_in_request_order(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = course_with_students(&app, "Preview 106", 3).await;
    let (_, other_students) = course_with_students(&app, "Preview 106 bis", 1).await;
    let empty_seat = fixtures::provision(&app, course.course_id, 1).await[0];
    // Dropped, the seat consumed (a recovered seat is unlinked: "Seat has no enrolment").
    app.accounting
        .spend(students[0].project_id, dec("100"))
        .unwrap();
    app.as_faculty()
        .post_drop(course.course_id, &[students[0].seat_id])
        .await
        .ok_body();
    // In progress: a depleting drop whose lease is live.
    uncertain_drop(&app, &course, &students[1]).await;
    exec(
        &app.db,
        "UPDATE enrolment_drop SET lease_id = gen_random_uuid(),
             lease_until = now() + interval '5 minutes'
         WHERE enrolment_id = $1",
        students[1].enrolment_id,
    )
    .await;
    let seats = [
        students[1].seat_id,
        Uuid::new_v4(),
        other_students[0].seat_id,
        empty_seat,
        students[0].seat_id,
        students[2].seat_id,
    ];
    let expected = [
        Some("A drop of this seat is already in progress"),
        Some("Seat not found in this course"),
        Some("Seat not found in this course"),
        Some("Seat has no enrolment"),
        Some("Enrolment is already dropped"),
        None,
    ];
    let (body, results) = results(&app, course.course_id, &seats).await;
    for (result, error) in results.iter().zip(expected) {
        assert_eq!(result["error"], json!(error), "{result}");
        assert_eq!(result["can_drop"], error.is_none(), "{result}");
        if error.is_some() {
            assert_eq!(result["seat_recovered"], Value::Null);
            assert_eq!(result["credits_granted"], Value::Null);
            assert_eq!(result["recovery_blockers"], json!([]));
        }
    }
    assert_eq!(results[3]["enrolment_id"], Value::Null);
    assert_eq!(results[4]["student_id"], students[0].student_id);
    assert_eq!(body["summary"]["can_drop"], 1);

    // The drop answers the same sentences for the same seats.
    let dropped = app
        .as_faculty()
        .post_drop(course.course_id, &seats[..5])
        .await
        .ok_body();
    for (result, error) in dropped["results"].as_array().unwrap().iter().zip(expected) {
        assert_eq!(result["error"], json!(error), "{result}");
    }
}

/// Every row of every table of the public schema, as text: a preview must leave it as it was.
async fn database_state(db: &PgPool) -> Vec<(String, i64, Option<String>)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(db)
    .await
    .unwrap();
    let mut state = Vec::new();
    for table in tables {
        let (count, digest): (i64, Option<String>) = sqlx::query_as(&format!(
            "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM \"{table}\" t"
        ))
        .fetch_one(db)
        .await
        .unwrap();
        state.push((table, count, digest));
    }
    state
}

#[sqlx::test]
async fn preview_has_no_side_effects(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = course_with_students(&app, "Preview 107", 3).await;
    app.accounting
        .spend(students[1].project_id, dec("90"))
        .unwrap();
    let seats: Vec<Uuid> = students.iter().map(|s| s.seat_id).collect();
    let before = database_state(&app.db).await;
    let (kc_calls, acc_calls) = (app.keycloak.calls().len(), app.accounting.calls().len());
    let balances: Vec<_> = students
        .iter()
        .map(|s| app.accounting.balance(s.project_id))
        .collect();

    let (body, _) = results(&app, course.course_id, &seats).await;
    assert_eq!(body["summary"]["can_drop"], 3);

    assert_eq!(database_state(&app.db).await, before);
    // Keycloak sees the caller's authentication only.
    let kc_new: Vec<String> = app.keycloak.calls()[kc_calls..]
        .iter()
        .map(|c| c.operation.clone())
        .collect();
    assert_eq!(kc_new, ["kc_userinfo"]);
    let new_calls: Vec<String> = app.accounting.calls()[acc_calls..]
        .iter()
        .map(|c| c.operation.clone())
        .collect();
    assert_eq!(new_calls, ["acc_vlab_balance"]);
    let after: Vec<_> = students
        .iter()
        .map(|s| app.accounting.balance(s.project_id))
        .collect();
    assert_eq!(after, balances);
}

#[sqlx::test]
async fn preview_then_drop_agree(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = course_with_students(&app, "Preview 108", 4).await;
    for (student, spent) in students.iter().zip(["0", "20", "50", "50.01"]) {
        app.accounting
            .spend(student.project_id, dec(spent))
            .unwrap();
    }
    let seats: Vec<Uuid> = students.iter().map(|s| s.seat_id).collect();
    let (_, predicted) = results(&app, course.course_id, &seats).await;
    let recovered: Vec<&Value> = predicted.iter().map(|r| &r["seat_recovered"]).collect();
    assert_eq!(
        recovered,
        [&json!(true), &json!(true), &json!(true), &json!(false)]
    );

    let dropped = app
        .as_faculty()
        .post_drop(course.course_id, &seats)
        .await
        .ok_body();
    for ((prediction, result), student) in predicted
        .iter()
        .zip(dropped["results"].as_array().unwrap())
        .zip(&students)
    {
        assert_eq!(result["is_dropped"], true, "{result}");
        assert_eq!(result["seat_recovered"], prediction["seat_recovered"]);
        let depleted: Decimal = fetch_scalar(
            &app.db,
            "SELECT depleted_amount FROM enrolment_drop WHERE enrolment_id = $1",
            student.enrolment_id,
        )
        .await;
        let returned = prediction["credits_returned"].as_f64().unwrap();
        assert_eq!(depleted, Decimal::from_str(&returned.to_string()).unwrap());
    }
}

#[sqlx::test]
async fn preview_with_accounting_down_still_predicts_late_seats(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = course_with_students(&app, "Preview 109", 3).await;
    // students[0]: a recovered seat taken again (decided without a balance);
    // students[1]: in doubt (decided without a balance); students[2]: needs a balance.
    app.as_faculty()
        .post_drop(course.course_id, &[students[0].seat_id])
        .await
        .ok_body();
    let again = app
        .as_faculty()
        .post_assign(
            course.course_id,
            &fixtures::students_body(&[("stu-9", "stu-9@uni.org")]),
        )
        .await
        .ok_body();
    assert_eq!(
        again["results"][0]["seat_id"],
        students[0].seat_id.to_string()
    );
    uncertain_drop(&app, &course, &students[1]).await;
    app.accounting
        .inject(Fault::new("acc_vlab_balance", FaultAction::Status(503)).times(100));

    let seats: Vec<Uuid> = students.iter().map(|s| s.seat_id).collect();
    let (body, results) = results(&app, course.course_id, &seats).await;
    assert_eq!(body["balances_available"], false);
    let predictions: Vec<&Value> = results.iter().map(|r| &r["seat_recovered"]).collect();
    assert_eq!(predictions, [&json!(false), &json!(true), &Value::Null]);
    for result in &results {
        assert_eq!(result["can_drop"], true, "{result}");
        for key in ["current_balance", "credits_spent", "credits_returned"] {
            assert_eq!(result[key], Value::Null, "{key}: {result}");
        }
    }
    assert_eq!(results[2]["recovery_blockers"], json!([]));
    assert_eq!(
        body["summary"],
        json!({"can_drop": 3, "seats_recovered": 1, "seats_consumed": 1, "seats_unknown": 1,
               "credits_returned": 0.0})
    );
    // Retried as a read (503 is retryable), then given up.
    assert!(app.accounting.call_count("acc_vlab_balance") > 1);
}

#[sqlx::test]
async fn preview_by_non_admin_is_403_and_bad_bodies_are_422(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let course = create_active_course(&app, "Preview 110").await;
    let path = format!("/seats/courses/{}/drop-preview", course.course_id);
    let seat = Uuid::new_v4();
    app.anonymous()
        .post(&path, &json!({"seat_ids": [seat]}))
        .await
        .unauthenticated();
    for token in [app.student_token(0), app.faculty_token()] {
        app.with_token(&token)
            .post(&path, &json!({"seat_ids": [seat]}))
            .await
            .not_allowed();
    }
    fixtures::make_lab_admin(&app, course.vlab_id, &app.users.faculty);
    let many: Vec<String> = (0..1001).map(|_| Uuid::new_v4().to_string()).collect();
    for (body, message) in [
        (
            json!({"seat_ids": [seat, seat]}),
            format!("Duplicate seat_id in request: {seat}"),
        ),
        (
            json!({"seat_ids": many}),
            "Must contain at most 1000 items".to_owned(),
        ),
        (json!({"seat_ids": "x"}), "Must be a list".to_owned()),
    ] {
        let answer = app.as_faculty().post(&path, &body).await.invalid();
        assert_eq!(answer["details"], json!({"seat_ids": message}), "{answer}");
    }
}

#[sqlx::test]
async fn preview_of_a_waitlisted_student_before_the_start_predicts_recovery_and_the_drop_empties_the_waitlisted_group(
    db: PgPool,
) {
    let app = TestApp::spawn(db).await;
    let (course, assigned) = crate::waitlist::future_course(&app, "Preview 111", 1).await;
    let student = app.users.students[0].clone();
    crate::waitlist::claim(&app, &student, assigned[0].enrolment_id).await;
    assert_eq!(
        crate::waitlist::paths(&app, &student),
        crate::waitlist::waitlisted_paths(&course, &assigned[0])
    );
    let (_, results) = results(&app, course.course_id, &[assigned[0].seat_id]).await;
    assert_eq!(
        results[0],
        droppable(&assigned[0], Some(true), &[], Some(200.0))
    );

    let dropped = app
        .as_faculty()
        .post_drop(course.course_id, &[assigned[0].seat_id])
        .await
        .ok_body();
    assert_eq!(dropped["results"][0]["seat_recovered"], true);
    assert!(crate::waitlist::paths(&app, &student).is_empty());
    let group = app
        .keycloak
        .group_by_name(&format!(
            "proj/{}/{}/waitlisted",
            course.vlab_id, assigned[0].project_id
        ))
        .expect("the waitlisted group");
    assert!(group.members.is_empty());
}

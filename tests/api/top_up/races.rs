//! Top-ups racing each other and a drop: one top-up of a student at a time, and a drop never
//! overlaps a grant in flight, so the drop takes back the topped-up credits exactly once.

use std::str::FromStr;
use std::time::Duration;

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use super::{amount, extra_credits, metric_lines, top_up_event_types, top_ups};
use crate::fixtures::course_with_students;
use crate::helpers::{ReplyExt, TestApp, exec, fetch_scalar, one_wins};

const TOP_UP_IN_PROGRESS: &str =
    "A credit top-up for this student is in progress; retry the drop in a minute";

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// Waits (up to 5 s) until the enrolment has a `granting` top-up.
async fn until_granting(app: &TestApp, enrolment_id: Uuid) {
    for _ in 0..100 {
        if top_ups(&app.db, enrolment_id)
            .await
            .iter()
            .any(|t| t.state == "granting")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no granting top-up for {enrolment_id}");
}

async fn drop_rows(app: &TestApp, enrolment_id: Uuid) -> i64 {
    fetch_scalar(
        &app.db,
        "SELECT count(*) FROM enrolment_drop WHERE enrolment_id = $1",
        enrolment_id,
    )
    .await
}

#[sqlx::test]
async fn two_concurrent_top_ups_one_is_409(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = course_with_students(&app, "Races 101", 1).await;
    let s = &students[0];
    let grants = app.accounting.call_count("acc_grant");
    app.accounting
        .set_operation_latency("acc_grant", Duration::from_millis(500));
    let admin = app.as_admin();
    let (hundred, seventy) = (amount(100), amount(70));
    let (a, b) = tokio::join!(
        admin.top_up(course.course_id, s.enrolment_id, &hundred),
        admin.top_up(course.course_id, s.enrolment_id, &seventy),
    );
    let (winner, loser) = one_wins(&a, &b, StatusCode::CONFLICT);
    loser.clone().error_with(
        StatusCode::CONFLICT,
        "INVALID_REQUEST",
        "Another top-up for this student is still being processed",
    );
    let won = winner.1["data"]["amount"].as_f64().unwrap() as i32;
    assert_eq!(app.accounting.call_count("acc_grant"), grants + 1);
    assert_eq!(extra_credits(&app.db, s.enrolment_id).await, won);
    let rows = top_ups(&app.db, s.enrolment_id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].state.as_str(), rows[0].amount), ("granted", won));
}

#[sqlx::test]
async fn drop_during_a_top_up_reports_top_up_in_progress_and_succeeds_after(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (course, students) = course_with_students(&app, "Races 102", 1).await;
    let s = &students[0];
    app.accounting
        .set_operation_latency("acc_grant", Duration::from_millis(1500));

    let admin = app.as_admin();
    let faculty = app.as_faculty();
    let hundred = amount(100);
    let (topped_up, drop) = tokio::join!(
        admin.top_up(course.course_id, s.enrolment_id, &hundred),
        async {
            until_granting(&app, s.enrolment_id).await;
            faculty.post_drop(course.course_id, &[s.seat_id]).await
        }
    );
    let drop = drop.ok_body();
    assert_eq!(
        drop["results"][0],
        json!({"seat_id": s.seat_id, "is_dropped": false, "error": TOP_UP_IN_PROGRESS,
               "seat_recovered": null, "access_removed": null})
    );
    // The stopped drop wrote nothing and depleted nothing.
    assert_eq!(drop_rows(&app, s.enrolment_id).await, 0);
    assert_eq!(app.accounting.call_count("acc_deplete_project"), 0);
    let topped_up = topped_up.ok_body();
    assert_eq!(topped_up["data"]["extra_credits"], json!(100));
    let lines = metric_lines(&app, "vlab_drops_failed_total").await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("outcome=\"top_up_in_progress\"")),
        "{lines:?}"
    );

    // The retry drops the student and takes back everything, top-up included, once; the
    // threshold counts the top-up (300 − 50), and nothing was spent.
    app.accounting
        .set_operation_latency("acc_grant", Duration::ZERO);
    let drop = app
        .as_faculty()
        .post_drop(course.course_id, &[s.seat_id])
        .await
        .ok_body();
    assert_eq!(drop["results"][0]["is_dropped"], true, "{drop}");
    assert_eq!(drop["results"][0]["seat_recovered"], true, "{drop}");
    let depleted: Decimal = fetch_scalar(
        &app.db,
        "SELECT depleted_amount FROM enrolment_drop WHERE enrolment_id = $1",
        s.enrolment_id,
    )
    .await;
    assert_eq!(depleted, dec("300"));
    assert_eq!(app.accounting.balance(s.project_id), Some(dec("0")));
    assert_eq!(app.accounting.call_count("acc_deplete_project"), 1);

    // And no top-up gets in after it.
    app.as_admin()
        .top_up(course.course_id, s.enrolment_id, &amount(100))
        .await
        .error_with(
            StatusCode::CONFLICT,
            "INVALID_REQUEST",
            "This enrolment has been dropped",
        );
}

#[sqlx::test]
async fn a_grant_answered_after_its_lease_lapsed_is_settled_once_and_not_counted_after_a_drop(
    db: PgPool,
) {
    // Time for a worker pass and a drop while the grant is in flight, within the timeout.
    let app = TestApp::spawn_with(db, |vars| {
        vars.insert("HTTP_TIMEOUT_SECONDS".into(), "8".into());
    })
    .await;
    let (course, students) = course_with_students(&app, "Races 103", 1).await;
    let s = &students[0];
    app.accounting
        .set_operation_latency("acc_grant", Duration::from_secs(4));

    let admin = app.as_admin();
    let hundred = amount(100);
    let (topped_up, drop) = tokio::join!(
        admin.top_up(course.course_id, s.enrolment_id, &hundred),
        async {
            until_granting(&app, s.enrolment_id).await;
            // The lease lapses while the grant is in flight (it cannot under the real
            // timeouts): the stale pass marks it in doubt, and the drop may proceed.
            exec(
                &app.db,
                "UPDATE credit_top_up SET lease_until = now() - interval '1 second'
                 WHERE enrolment_id = $1",
                s.enrolment_id,
            )
            .await;
            vlab_courses::jobs::worker::run_pass(&app.services()).await;
            assert_eq!(
                top_up_event_types(&app.db, s.enrolment_id).await,
                ["top_up_in_doubt"]
            );
            app.as_faculty()
                .post_drop(course.course_id, &[s.seat_id])
                .await
        }
    );
    let drop: Value = drop.ok_body();
    assert_eq!(drop["results"][0]["is_dropped"], true, "{drop}");
    // The drop depleted the 200 before the grant landed.
    let depleted: Decimal = fetch_scalar(
        &app.db,
        "SELECT depleted_amount FROM enrolment_drop WHERE enrolment_id = $1",
        s.enrolment_id,
    )
    .await;
    assert_eq!(depleted, dec("200"));

    // The late 2xx settles the row once, as granted, without raising the dropped student's
    // extra credits; the lab deplete at the course end takes the 100 back.
    let topped_up = topped_up.ok_body();
    assert_eq!(topped_up["data"]["extra_credits"], json!(0));
    assert_eq!(topped_up["data"]["credits_granted_total"], json!(200));
    let rows = top_ups(&app.db, s.enrolment_id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, "granted");
    assert_eq!(extra_credits(&app.db, s.enrolment_id).await, 0);
    assert_eq!(app.accounting.balance(s.project_id), Some(dec("100")));
    vlab_courses::jobs::worker::run_pass(&app.services()).await;
    assert_eq!(
        top_up_event_types(&app.db, s.enrolment_id).await,
        ["top_up_in_doubt", "credits_topped_up"]
    );
}

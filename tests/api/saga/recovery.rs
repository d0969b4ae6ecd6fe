//! The recovery pass against live processes and failing undos, the commit point, the expiry
//! job's step 6 and the accounting idempotency keys (§8.6 8–12).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use vlab_emulators::{Fault, FaultAction};

use super::{only_saga, planned_groups, recover_in, sagas};
use crate::fixtures::{self, students_body};
use crate::helpers::{ReplyExt, TestApp, exec, fetch_scalar};

#[cfg(feature = "fault-injection")]
#[sqlx::test]
async fn stalled_student_past_the_lease_is_fenced(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = fixtures::course_with_faculty(&app, "Stalled student").await;
    let seat = fixtures::provision(&app, course.course_id, 1).await[0];
    // The account creation stalls past the 1-second lease (and within the call timeout).
    app.accounting
        .set_operation_latency("acc_create_project_account", Duration::from_secs(4));
    let process = app
        .spawn_process_with(&[
            ("VLAB_SAGA_LEASE_SECONDS", "1"),
            ("HTTP_TIMEOUT_SECONDS", "10"),
        ])
        .await;
    let request = app
        .client
        .post(format!(
            "{}/seats/courses/{}/assign",
            process.base_url, course.course_id
        ))
        .bearer_auth(app.faculty_token())
        .json(&students_body(&[("stu-1", "stu-1@uni.org")]))
        .send();
    let stalled = tokio::spawn(request);

    // Once its lease lapsed, another replica's pass takes the saga over and compensates it.
    let lapsed = "SELECT count(*) FROM saga WHERE state = $1 AND lease_until < now()";
    for _ in 0..100 {
        if fetch_scalar::<i64, _>(&db, lapsed, "running").await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    recover_in(&app, 0).await;
    // (This test server's own periodic worker pass may have got there first.)
    super::wait_until_compensated(&db, Duration::from_secs(10)).await;

    let response = stalled.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["results"][0]["assignment_successful"], false, "{body}");
    let saga = only_saga(&db).await;
    assert_eq!(saga.state, "compensated");
    // Fenced: the resumed path neither granted nor committed.
    assert_eq!(
        app.accounting.call_count("acc_grant"),
        1,
        "only the template's grant"
    );
    let enrolments = "SELECT count(*) FROM course_enrolment WHERE course_id = $1";
    assert_eq!(
        fetch_scalar::<i64, _>(&db, enrolments, course.course_id).await,
        0
    );
    assert!(
        planned_groups(&saga)
            .iter()
            .all(|g| app.keycloak.group_by_name(g).is_none())
    );
    let free = "SELECT reservation_id IS NULL FROM seat WHERE id = $1";
    assert!(fetch_scalar::<bool, _>(&db, free, seat).await);
}

/// One student whose grant fails and whose group deletion fails in the in-process
/// compensation: the saga waits for the recovery.
async fn failed_undo(app: &TestApp, delete_failures: u32) -> super::SagaRecord {
    let course = fixtures::course_with_faculty(app, "Failing undo").await;
    fixtures::provision(app, course.course_id, 1).await;
    app.accounting
        .inject(Fault::new("acc_grant", FaultAction::Status(500)).times(1));
    app.keycloak
        .inject(Fault::new("kc_delete_group", FaultAction::Status(500)).times(delete_failures));
    let body = app
        .as_faculty()
        .post_assign(
            course.course_id,
            &students_body(&[("stu-1", "stu-1@uni.org")]),
        )
        .await
        .ok_body();
    assert_eq!(body["results"][0]["assignment_successful"], false);
    let saga = only_saga(&app.db).await;
    assert_eq!(saga.state, "compensating");
    assert_eq!(saga.attempts, 1);
    assert!(saga.last_error.is_some());
    saga
}

#[sqlx::test]
async fn undo_failure_is_retried_by_the_worker_until_compensated(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let saga = failed_undo(&app, 1).await;
    let groups = planned_groups(&saga);
    assert_eq!(
        groups
            .iter()
            .filter(|g| app.keycloak.group_by_name(g).is_some())
            .count(),
        1,
        "one group deletion failed"
    );
    assert_eq!(
        saga.progress["1"], "undone",
        "the seat was released in process"
    );

    // Not before its backoff, then compensated.
    assert_eq!(recover_in(&app, 0).await.leased, 0);
    let sweep = recover_in(&app, 3).await;
    assert_eq!(sweep.compensated, 1, "{sweep:?}");
    assert!(
        groups
            .iter()
            .all(|g| app.keycloak.group_by_name(g).is_none())
    );
    let saga = only_saga(&db).await;
    assert_eq!((saga.state.as_str(), saga.attempts), ("compensated", 2));
}

#[sqlx::test]
async fn twelve_failures_mark_the_saga_failed_and_count_it(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    failed_undo(&app, 1000).await;
    // Attempts 2..=11 are retried; the 12th fails the saga.
    for day in 1..=10 {
        let sweep = recover_in(&app, day * 2 * 24 * 60).await;
        assert_eq!(sweep.retried, 1, "attempt {}: {sweep:?}", day + 1);
    }
    assert_eq!(only_saga(&db).await.state, "compensating");
    let sweep = recover_in(&app, 30 * 24 * 60).await;
    assert_eq!(sweep.failed, 1, "{sweep:?}");
    let saga = only_saga(&db).await;
    assert_eq!((saga.state.as_str(), saga.attempts), ("failed", 12));
    // A failed saga is never taken again.
    assert_eq!(recover_in(&app, 60 * 24 * 60).await.leased, 0);
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("vlab_sagas_total{")
            && l.contains(r#"outcome="failed""#)
            && l.contains(r#"kind="assign_student""#)),
        "{metrics}"
    );
}

#[sqlx::test]
async fn committed_work_leaves_no_saga_rows(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = fixtures::course_with_faculty(&app, "Committed").await;
    super::provision_many(&app, course.course_id, 200).await;
    let assigned = fixtures::assign(&app, course.course_id, 200).await;
    assert_eq!(assigned.len(), 200);
    // Lab, template project and course creation, and 200 students: all committed.
    assert_eq!(
        fetch_scalar::<i64, _>(&db, "SELECT count(*) FROM saga WHERE $1", true).await,
        0
    );
}

#[sqlx::test]
async fn accounting_posts_carry_an_idempotency_key(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let course = fixtures::course_with_faculty(&app, "Keys").await;
    fixtures::provision(&app, course.course_id, 1).await;
    // A saga that stays behind shows the id the keys are made of.
    app.keycloak
        .inject(Fault::new("kc_delete_group", FaultAction::Status(500)).times(1));
    app.accounting
        .inject(Fault::new("acc_grant", FaultAction::Status(500)).times(1));
    app.as_faculty()
        .post_assign(
            course.course_id,
            &students_body(&[("stu-1", "stu-1@uni.org")]),
        )
        .await
        .ok_body();
    let saga = only_saga(&db).await;
    let keyed = |op: &str| -> Vec<Option<String>> {
        app.accounting
            .calls()
            .into_iter()
            .filter(|c| c.operation == op)
            .map(|c| c.idempotency_key)
            .collect()
    };
    let lab_key = keyed("acc_create_vlab_account");
    assert_eq!(lab_key.len(), 1);
    assert!(
        lab_key[0].as_deref().is_some_and(|k| k.ends_with(":3")),
        "{lab_key:?}"
    );
    // Template project, then the student's project; the template grant, then the student's.
    let projects = keyed("acc_create_project_account");
    assert_eq!(projects[1], Some(format!("{}:4", saga.id)));
    assert!(projects[0].as_deref().is_some_and(|k| k.ends_with(":3")));
    let grants = keyed("acc_grant");
    assert!(
        grants[0].as_deref().is_some_and(|k| k.ends_with(":1")),
        "{grants:?}"
    );
    assert_eq!(grants[1], Some(format!("{}:5", saga.id)));
    // Every key is a saga id and a seq; undos (depletes) carry none.
    for key in lab_key.iter().chain(&projects).chain(&grants).flatten() {
        let (id, seq) = key.split_once(':').expect("<saga id>:<seq>");
        assert!(
            id.parse::<uuid::Uuid>().is_ok() && seq.parse::<u32>().is_ok(),
            "{key}"
        );
    }
}

#[cfg(feature = "fault-injection")]
#[sqlx::test]
async fn expire_courses_runs_the_recovery_and_purges_old_compensated_sagas(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    let old = failed_undo(&app, 1).await;
    // One long compensated, one abandoned by a dead process (its lease lapsed).
    exec(
        &db,
        "UPDATE saga SET state = 'compensated', finished_at = now() - interval '8 days' WHERE id = $1",
        old.id,
    )
    .await;
    let course = fixtures::course_with_faculty(&app, "Abandoned").await;
    fixtures::provision(&app, course.course_id, 1).await;
    let process = super::crashing_process(&app, "assign:after_groups").await;
    super::post_aborted(
        &app,
        &process,
        &format!("/seats/courses/{}/assign", course.course_id),
        &app.faculty_token(),
        &students_body(&[("stu-2", "stu-2@uni.org")]),
    )
    .await;
    super::lapse_leases(&db).await;

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_expire-courses"))
        .env_clear()
        .envs(&app.vars)
        .env("RUST_LOG", "warn")
        .current_dir(std::env::temp_dir())
        .output()
        .await
        .expect("run expire-courses");
    let summary: Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
    assert_eq!(output.status.code(), Some(0), "{summary}");
    assert_eq!(summary["status"], "ok");
    assert_eq!(summary["sagas_compensated"], 1);
    assert_eq!(summary["sagas_failed"], 0);
    let left = sagas(&db).await;
    assert_eq!(
        left.len(),
        1,
        "the old compensated saga is purged: {left:#?}"
    );
    assert_eq!(left[0].state, "compensated");
    assert_ne!(left[0].id, old.id);

    // A saga that fails for good makes the run partial.
    exec(
        &db,
        "UPDATE saga SET state = 'compensating', attempts = 11, lease_id = NULL,
             lease_until = NULL, next_attempt_at = NULL, progress = '{}' WHERE id = $1",
        left[0].id,
    )
    .await;
    app.keycloak
        .inject(Fault::new("kc_find_group", FaultAction::Status(500)).times(100));
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_expire-courses"))
        .env_clear()
        .envs(&app.vars)
        .env("RUST_LOG", "warn")
        .current_dir(std::env::temp_dir())
        .output()
        .await
        .expect("run expire-courses");
    let summary: Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
    assert_eq!(output.status.code(), Some(2), "{summary}");
    assert_eq!(summary["status"], "partial");
    assert_eq!(summary["sagas_failed"], 1);
}

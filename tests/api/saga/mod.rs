//! The durable saga journal (addendum F7, §8.6): crash points of the test-only
//! `fault-injection` feature, run in a second server process that aborts at a named point; the
//! recovery after the lease lapsed, by a restarted process or a driven worker pass.

// The crash points exist only in builds with the test-only feature (`.ci/run` enables it).
#![cfg_attr(not(feature = "fault-injection"), allow(dead_code, unused_imports))]

#[cfg(feature = "fault-injection")]
mod big_assign;
#[cfg(feature = "fault-injection")]
mod crashes;
mod recovery;

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;
use vlab_courses::usecases::saga::recovery::{RecoverySweep, recovery_pass};

use crate::helpers::{ServerProcess, TestApp, fetch_scalar};

/// A saga row as the tests read it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SagaRecord {
    pub id: Uuid,
    pub kind: String,
    pub state: String,
    pub plan: Value,
    pub context: Value,
    pub progress: Value,
    pub attempts: i32,
    pub last_error: Option<String>,
}

pub async fn sagas(db: &PgPool) -> Vec<SagaRecord> {
    sqlx::query_as(
        "SELECT id, kind, state, plan, context, progress, attempts, last_error FROM saga
         ORDER BY created_at, id",
    )
    .fetch_all(db)
    .await
    .expect("read sagas")
}

/// The only saga; panics unless there is exactly one.
pub async fn only_saga(db: &PgPool) -> SagaRecord {
    let all = sagas(db).await;
    assert_eq!(all.len(), 1, "{all:#?}");
    all.into_iter().next().expect("one saga")
}

/// The group names a saga's plan creates.
pub fn planned_groups(saga: &SagaRecord) -> Vec<String> {
    saga.plan
        .as_array()
        .expect("plan")
        .iter()
        .filter(|s| s["step"] == "kc_create_group")
        .map(|s| s["target"]["name"].as_str().expect("name").to_owned())
        .collect()
}

/// The plan's step names in `seq` order.
pub fn planned_steps(saga: &SagaRecord) -> Vec<String> {
    saga.plan
        .as_array()
        .expect("plan")
        .iter()
        .map(|s| s["step"].as_str().expect("step").to_owned())
        .collect()
}

/// A server process that aborts at `fault`.
pub async fn crashing_process(app: &TestApp, fault: &str) -> ServerProcess {
    app.spawn_process_with(&[("VLAB_FAULT", fault)]).await
}

/// The dead process's leases lapse (moved into the past rather than waited for, so this test
/// server's own periodic worker pass is unlikely to get there first).
pub async fn lapse_leases(db: &PgPool) {
    sqlx::query(
        "UPDATE saga SET lease_until = now() - interval '1 second' WHERE state = 'running'",
    )
    .execute(db)
    .await
    .expect("lapse the leases");
}

/// Sends a request to a process that aborts while serving it: the caller sees the
/// connection break, never an answer.
pub async fn post_aborted(
    app: &TestApp,
    process: &ServerProcess,
    path: &str,
    token: &str,
    body: &Value,
) {
    let sent = app
        .client
        .post(format!("{}{path}", process.base_url))
        .bearer_auth(token)
        .json(body)
        .timeout(Duration::from_secs(60))
        .send()
        .await;
    match sent {
        Err(err) => assert!(!err.is_timeout(), "the process stalled: {err}"),
        Ok(response) => panic!(
            "the process answered {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        ),
    }
}

/// After a crash: the leases lapse, a server process starts (its first worker pass runs the
/// recovery at start-up; it logs each saga it takes over), and every saga gets compensated.
pub async fn restart_and_recover(app: &TestApp) -> ServerProcess {
    lapse_leases(&app.db).await;
    let restarted = app
        .spawn_process_with(&[("RUST_LOG", "warn,vlab_courses::usecases::saga=info")])
        .await;
    wait_until_compensated(&app.db, Duration::from_secs(30)).await;
    restarted
}

/// Asserts that `line` is logged once by whoever recovered `saga`: once in the restarted
/// process's log when it did (its log names the saga), never there when this test server's
/// own periodic worker pass got there first.
pub fn assert_logged_once(restarted: &ServerProcess, saga: Uuid, line: &str) {
    let log = restarted.log();
    let expected = usize::from(log.contains(&saga.to_string()));
    assert_eq!(log.matches(line).count(), expected, "{line}\n{log}");
}

pub async fn open_sagas(db: &PgPool) -> i64 {
    fetch_scalar(
        db,
        "SELECT count(*) FROM saga WHERE state <> $1",
        "compensated",
    )
    .await
}

pub async fn wait_until_compensated(db: &PgPool, within: Duration) {
    let started = std::time::Instant::now();
    while open_sagas(db).await > 0 {
        assert!(
            started.elapsed() < within,
            "sagas still open: {:#?}",
            sagas(db).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Provisions `n` seats, at most 100 per request.
pub async fn provision_many(app: &TestApp, course_id: Uuid, n: usize) {
    let mut left = n;
    while left > 0 {
        let batch = left.min(100);
        crate::fixtures::provision(app, course_id, batch).await;
        left -= batch;
    }
}

/// One recovery pass as if run `minutes` from now (every 5-minute lease has lapsed then).
pub async fn recover_in(app: &TestApp, minutes: i64) -> RecoverySweep {
    recovery_pass(
        &app.services(),
        Utc::now() + TimeDelta::minutes(minutes),
        50,
    )
    .await
    .expect("recovery pass")
}

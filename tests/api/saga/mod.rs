//! The durable saga journal (addendum F7, §8.6): crash points of the test-only
//! `fault-injection` feature, run in a second server process that aborts at a named point; the
//! recovery after the lease lapsed, by a restarted process or a driven worker pass.

mod big_assign;
mod crashes;
mod recovery;

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;
use vlab_courses::usecases::saga::recovery::{RecoverySweep, recovery_pass};

use crate::helpers::{ServerProcess, TestApp, fetch_scalar};

/// The saga lease of the process that crashes: short, so a restarted process recovers at once.
pub const SHORT_LEASE: &str = "1";

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

/// A server process that aborts at `fault`, with a short saga lease.
pub async fn crashing_process(app: &TestApp, fault: &str) -> ServerProcess {
    app.spawn_process_with(&[
        ("VLAB_FAULT", fault),
        ("VLAB_SAGA_LEASE_SECONDS", SHORT_LEASE),
    ])
    .await
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

/// After a crash: waits out the short lease, starts a server process (its first worker pass
/// runs the recovery at start-up), and waits until every saga is compensated.
pub async fn restart_and_recover(app: &TestApp) -> ServerProcess {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let restarted = app.spawn_process().await;
    wait_until_compensated(&app.db, Duration::from_secs(30)).await;
    restarted
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

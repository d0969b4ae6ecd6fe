//! Per-student credit top-up (round-2 addendum F5, §6.6): the grant and its records, the caps
//! per role, the checks, a grant that fails or cannot be confirmed, races with another top-up
//! and with a drop, the recovery threshold, stale top-ups, and upgraded databases.

mod caps;
mod checks;
mod grants;
mod races;
mod recovery;
mod stale;
mod upgrade;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{Reply, ReplyExt, TestApp};

/// A `credit_top_up` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TopUpRow {
    pub id: Uuid,
    pub amount: i32,
    pub note: Option<String>,
    pub requested_by: Uuid,
    pub requested_by_role: String,
    pub state: String,
    pub lease_id: Option<Uuid>,
    pub lease_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub settled_at: Option<DateTime<Utc>>,
}

/// The enrolment's top-ups, oldest first.
pub async fn top_ups(db: &PgPool, enrolment_id: Uuid) -> Vec<TopUpRow> {
    sqlx::query_as(
        "SELECT id, amount, note, requested_by, requested_by_role, state, lease_id, lease_until,
                last_error, settled_at
         FROM credit_top_up WHERE enrolment_id = $1 ORDER BY created_at, id",
    )
    .bind(enrolment_id)
    .fetch_all(db)
    .await
    .unwrap()
}

pub async fn extra_credits(db: &PgPool, enrolment_id: Uuid) -> i32 {
    crate::helpers::fetch_scalar(
        db,
        "SELECT extra_credits FROM course_enrolment WHERE id = $1",
        enrolment_id,
    )
    .await
}

/// An audit event of a top-up.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TopUpEvent {
    pub event_type: String,
    pub actor_role: String,
    pub actor_id: Option<Uuid>,
    pub project_id: Option<Uuid>,
    pub amount: Option<rust_decimal::Decimal>,
    pub before_values: Option<Value>,
    pub after_values: Option<Value>,
    pub data: Value,
}

/// The enrolment's `credits_topped_up`, `top_up_failed` and `top_up_in_doubt` events, in order.
pub async fn top_up_events(db: &PgPool, enrolment_id: Uuid) -> Vec<TopUpEvent> {
    sqlx::query_as(
        "SELECT event_type, actor_role, actor_id, project_id, amount, before_values,
                after_values, data
         FROM course_event
         WHERE enrolment_id = $1
           AND event_type IN ('credits_topped_up', 'top_up_failed', 'top_up_in_doubt')
         ORDER BY occurred_at, id",
    )
    .bind(enrolment_id)
    .fetch_all(db)
    .await
    .unwrap()
}

/// The types of [`top_up_events`].
pub async fn top_up_event_types(db: &PgPool, enrolment_id: Uuid) -> Vec<String> {
    top_up_events(db, enrolment_id)
        .await
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

/// `{"amount": amount}`.
pub fn amount(amount: i64) -> Value {
    json!({ "amount": amount })
}

/// A service-admin top-up of `n` credits that must succeed; returns its `data`.
pub async fn admin_top_up(app: &TestApp, course_id: Uuid, enrolment_id: Uuid, n: i64) -> Value {
    let reply: Reply = app
        .as_admin()
        .top_up(course_id, enrolment_id, &amount(n))
        .await;
    reply.ok_body()["data"].clone()
}

/// Starts the app with `FACULTY_TOP_UP_MAX_CREDITS` set.
pub async fn spawn_with_faculty_limit(db: PgPool, limit: u32) -> TestApp {
    TestApp::spawn_with(db, |vars| {
        vars.insert("FACULTY_TOP_UP_MAX_CREDITS".into(), limit.to_string());
    })
    .await
}

/// The metric sample lines of `/metrics` that start with `name`.
pub async fn metric_lines(app: &TestApp, name: &str) -> Vec<String> {
    let text = app.get("/metrics", None).await.text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .map(str::to_owned)
        .collect()
}

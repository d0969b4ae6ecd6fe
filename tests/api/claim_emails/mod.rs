//! Claim status on the roster and resent claim e-mails (round-2 addendum F1, §2.6).

mod events;
mod resend_many;
mod resend_one;
mod roster;
pub mod upgrade;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{TestApp, exec};

/// One outbox row, as these tests read it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: Uuid,
    pub status: String,
    pub origin: String,
    pub requested_by: Option<Uuid>,
    pub course_id: Option<Uuid>,
    pub attempts: i32,
    pub lease_id: Option<Uuid>,
    pub payload: Value,
    pub created_at: DateTime<Utc>,
}

/// The enrolment's claim e-mails, oldest first.
pub async fn outbox_rows(app: &TestApp, enrolment_id: Uuid) -> Vec<OutboxRow> {
    sqlx::query_as(
        "SELECT id, status, origin, requested_by, course_id, attempts, lease_id, payload, created_at
         FROM email_outbox WHERE enrolment_id = $1 ORDER BY created_at, id",
    )
    .bind(enrolment_id)
    .fetch_all(&app.db)
    .await
    .unwrap()
}

/// Moves every claim e-mail of the enrolment `minutes` into the past.
pub async fn age_claims(app: &TestApp, enrolment_id: Uuid, minutes: i64) {
    sqlx::query(
        "UPDATE email_outbox SET created_at = created_at - make_interval(mins => $2::int)
         WHERE enrolment_id = $1",
    )
    .bind(enrolment_id)
    .bind(minutes as i32)
    .execute(&app.db)
    .await
    .unwrap();
}

/// The claim link of a captured or queued e-mail.
pub fn claim_link_of(payload: &Value) -> String {
    payload["claim_link"].as_str().unwrap().to_owned()
}

/// Marks the enrolment dropped (as a completed drop leaves it).
pub async fn mark_dropped(app: &TestApp, enrolment_id: Uuid) {
    exec(
        &app.db,
        "UPDATE course_enrolment SET is_dropped = true WHERE id = $1",
        enrolment_id,
    )
    .await;
}

/// Parses an API datetime.
pub fn instant(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a datetime: {value}"))
        .parse()
        .unwrap()
}

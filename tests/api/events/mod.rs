//! The audit log: `course_event`, written in the transaction of each change, its two read
//! endpoints, its append-only trigger and its retention purge.

mod access;
mod atomicity;
mod lifecycle;
mod listing;
mod storage;
mod timeline;
mod upgrade;

use std::fmt::Display;

use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{Caller, Reply};

/// The two audit routes, on any caller.
pub(crate) trait EventsApi {
    /// `query` is the whole query string with its `?`, or empty.
    async fn get_events(&self, course: impl Display, query: &str) -> Reply;
    async fn get_timeline(
        &self,
        course: impl Display,
        enrolment: impl Display,
        query: &str,
    ) -> Reply;
}

impl EventsApi for Caller<'_> {
    async fn get_events(&self, course: impl Display, query: &str) -> Reply {
        self.get(&format!("/courses/{course}/events{query}")).await
    }

    async fn get_timeline(
        &self,
        course: impl Display,
        enrolment: impl Display,
        query: &str,
    ) -> Reply {
        self.get(&format!(
            "/courses/{course}/enrolments/{enrolment}/timeline{query}"
        ))
        .await
    }
}

/// A stored event, as the tests read it back.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct EventRow {
    pub id: i64,
    pub course_id: Uuid,
    pub event_type: String,
    pub actor_role: String,
    pub actor_id: Option<Uuid>,
    pub actor_email: Option<String>,
    pub enrolment_id: Option<Uuid>,
    pub seat_id: Option<Uuid>,
    pub project_id: Option<Uuid>,
    pub student_id: Option<String>,
    pub amount: Option<Decimal>,
    pub before_values: Option<Value>,
    pub after_values: Option<Value>,
    pub data: Value,
    pub request_id: Option<String>,
}

/// Every event of the course, in insertion order.
pub async fn stored(db: &PgPool, course_id: Uuid) -> Vec<EventRow> {
    sqlx::query_as(
        "SELECT id, course_id, event_type, actor_role, actor_id, actor_email, enrolment_id,
                seat_id, project_id, student_id, amount, before_values, after_values, data,
                request_id
         FROM course_event WHERE course_id = $1 ORDER BY id",
    )
    .bind(course_id)
    .fetch_all(db)
    .await
    .unwrap()
}

/// The event types of the course, in insertion order.
pub async fn types(db: &PgPool, course_id: Uuid) -> Vec<String> {
    stored(db, course_id)
        .await
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

/// Makes every insert of an event of `event_type` fail (a test-only trigger), so the change
/// that writes it must roll back.
pub async fn refuse_event(db: &PgPool, event_type: &str) {
    let sql = format!(
        "CREATE OR REPLACE FUNCTION refuse_course_event() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN
               IF NEW.event_type = TG_ARGV[0] THEN RAISE EXCEPTION 'event refused'; END IF;
               RETURN NEW;
             END $$;
         CREATE TRIGGER refuse_{event_type} BEFORE INSERT ON course_event
             FOR EACH ROW EXECUTE FUNCTION refuse_course_event('{event_type}');"
    );
    sqlx::raw_sql(&sql).execute(db).await.unwrap();
}

/// Lets events of `event_type` be written again.
pub async fn allow_event(db: &PgPool, event_type: &str) {
    sqlx::raw_sql(&format!("DROP TRIGGER refuse_{event_type} ON course_event"))
        .execute(db)
        .await
        .unwrap();
}

//! The audit log (the course's event timeline): every state change inserts its events in the
//! transaction that commits it, so an event exists if and only if its change committed.
//! [`event`] builds one, [`record`] inserts a transaction's events with one statement; the two
//! reads are in [`read`].

mod error;
pub mod read;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

pub use error::EventError;

use crate::clients::request_context;
use crate::domain::audit::{Actor, EventType};
use crate::repo::events::NewEvent;

/// A new event of `course_id`, made by `actor` at the use case's `now`, carrying the current
/// request id (or the worker's or job's run id).
pub fn event(course_id: Uuid, kind: EventType, actor: &Actor, now: DateTime<Utc>) -> NewEvent {
    NewEvent {
        course_id,
        event_type: kind.as_str(),
        actor_role: actor.role.as_str(),
        actor_id: actor.id,
        actor_email: actor.email.clone(),
        request_id: request_context::current(),
        enrolment_id: None,
        seat_id: None,
        project_id: None,
        student_id: None,
        amount: None,
        before: None,
        after: None,
        data: Value::Object(Default::default()),
        occurred_at: now,
    }
}

/// Setters for the optional parts of an event.
pub trait EventExt: Sized {
    fn enrolment(self, id: Uuid) -> Self;
    fn seat(self, id: Option<Uuid>) -> Self;
    fn project(self, id: Uuid) -> Self;
    fn student(self, student_id: &str) -> Self;
    fn amount(self, amount: Option<Decimal>) -> Self;
    fn before(self, values: Value) -> Self;
    fn after(self, values: Value) -> Self;
    fn data(self, data: Value) -> Self;
}

impl EventExt for NewEvent {
    fn enrolment(mut self, id: Uuid) -> Self {
        self.enrolment_id = Some(id);
        self
    }
    fn seat(mut self, id: Option<Uuid>) -> Self {
        self.seat_id = id;
        self
    }
    fn project(mut self, id: Uuid) -> Self {
        self.project_id = Some(id);
        self
    }
    fn student(mut self, student_id: &str) -> Self {
        self.student_id = Some(student_id.to_owned());
        self
    }
    fn amount(mut self, amount: Option<Decimal>) -> Self {
        self.amount = amount;
        self
    }
    fn before(mut self, values: Value) -> Self {
        self.before = Some(values);
        self
    }
    fn after(mut self, values: Value) -> Self {
        self.after = Some(values);
        self
    }
    fn data(mut self, data: Value) -> Self {
        self.data = data;
        self
    }
}

/// Inserts the events of one transaction (call it on that transaction, before its commit).
/// A failure must roll the change back: the caller returns it as the change's own error.
pub async fn record(db: impl PgExecutor<'_>, events: &[NewEvent]) -> Result<(), sqlx::Error> {
    crate::repo::events::insert(db, events).await?;
    // Counted at the insert: a transaction that still fails to commit afterwards is rare, and
    // its error is logged where it happens.
    count(events);
    Ok(())
}

/// Counts written events in `vlab_course_events_total`.
pub fn count(events: &[NewEvent]) {
    for e in events {
        metrics::counter!("vlab_course_events_total", "event_type" => e.event_type).increment(1);
    }
}

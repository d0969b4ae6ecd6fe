//! Stale top-ups (worker pass 6, and step 6 of `expire-courses`): a `granting` top-up whose
//! lease lapsed belongs to a process that stopped, or whose settlement failed, after sending
//! the grant. Nobody can tell whether the credits arrived, so the row becomes `in_doubt`, with
//! its event, in one statement's transaction. A grant still answering later moves it to
//! `granted` (see the settlement); in-doubt credits are left out of `extra_credits`.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::json;

use crate::domain::audit::{Actor, EventType};
use crate::repo::events::NewEvent;
use crate::repo::top_ups::{self, TopUp};
use crate::usecases::Services;
use crate::usecases::events::{self, EventExt};

/// Marks up to `limit` stale top-ups `in_doubt`; returns how many.
pub async fn stale_top_up_pass(
    services: &Services,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let mut tx = services.db.begin().await?;
    let marked = top_ups::mark_stale(&mut *tx, None, now, limit).await?;
    let system = Actor::system();
    let in_doubt: Vec<NewEvent> = marked
        .iter()
        .map(|t| in_doubt_event(t, &system, now))
        .collect();
    events::record(&mut *tx, &in_doubt).await?;
    tx.commit().await?;
    for t in &marked {
        tracing::warn!(
            top_up_id = %t.id, enrolment_id = %t.enrolment_id, project_id = %t.project_id,
            amount = t.amount, "top-up lease lapsed while granting; its outcome is unknown"
        );
    }
    count(marked.len() as u64);
    Ok(marked.len() as u64)
}

/// The `top_up_in_doubt` event of a top-up the stale rule marked.
pub(super) fn in_doubt_event(top_up: &TopUp, actor: &Actor, now: DateTime<Utc>) -> NewEvent {
    events::event(top_up.course_id, EventType::TopUpInDoubt, actor, now)
        .enrolment(top_up.enrolment_id)
        .project(top_up.project_id)
        .amount(Some(Decimal::from(top_up.amount)))
        .before(json!({ "extra_credits": top_up.extra_credits }))
        .after(json!({ "extra_credits": top_up.extra_credits }))
        .data(json!({ "top_up_id": top_up.id, "note": top_up.note }))
}

/// Counts top-ups the stale rule marked in doubt.
pub(super) fn count(marked: u64) {
    if marked > 0 {
        metrics::counter!("vlab_top_ups_total", "outcome" => "in_doubt").increment(marked);
    }
}

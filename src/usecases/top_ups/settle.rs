//! Step 3 of a top-up: record what the grant did, in one short transaction retried like the
//! drop's settlement. The row moves only from `granting` (or `in_doubt`, for a grant answered
//! after the stale pass marked it), so a top-up is counted in `extra_credits` at most once.

use std::time::Duration;

use backon::Retryable;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::json;

use super::{Started, TopUpError, ToppedUp};
use crate::clients::ClientError;
use crate::domain::audit::{Actor, EventType};
use crate::repo::events::NewEvent;
use crate::repo::top_ups::{self, state};
use crate::usecases::events::{self, EventExt};
use crate::usecases::{Services, UseCaseError};

/// Pauses before the retries of a failed settlement.
const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(400),
    Duration::from_millis(1600),
];

/// `last_error` of a refused grant.
const GRANT_FAILED: &str = "The accounting service refused the grant";
/// `last_error` of a grant whose outcome is unknown.
const GRANT_UNCERTAIN: &str = "The grant could not be confirmed";

/// What the grant did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Granted,
    Failed,
    InDoubt,
}

impl Outcome {
    fn of(grant: &Result<(), ClientError>) -> Self {
        match grant {
            Ok(()) => Outcome::Granted,
            Err(err) if err.is_uncertain() => Outcome::InDoubt,
            Err(_) => Outcome::Failed,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Outcome::Granted => state::GRANTED,
            Outcome::Failed => state::FAILED,
            Outcome::InDoubt => state::IN_DOUBT,
        }
    }
}

/// Settles `started` after its grant answered `grant`, and says what the caller gets.
pub(super) async fn settle(
    services: &Services,
    actor: &Actor,
    started: &Started,
    grant: Result<(), ClientError>,
) -> Result<ToppedUp, UseCaseError> {
    let outcome = Outcome::of(&grant);
    if let Err(err) = &grant {
        tracing::warn!(
            top_up_id = %started.id, enrolment_id = %started.enrolment_id,
            project_id = %started.project_id, outcome = outcome.label(), error = %err,
            "top-up grant failed"
        );
    }
    // The grant may have taken several HTTP timeouts: the settlement has its own instant.
    let now = Utc::now();
    let settled = (|| settle_once(services, actor, started, outcome, now))
        .retry(RETRY_DELAYS.into_iter())
        .sleep(tokio::time::sleep)
        .notify(|err, _| {
            tracing::warn!(top_up_id = %started.id, error = %err, "top-up settlement failed; retrying");
        })
        .await;
    let extra_credits = match settled {
        Ok(settled) => {
            if settled.changed {
                record_metrics(outcome, started.amount);
                tracing::info!(
                    top_up_id = %started.id, enrolment_id = %started.enrolment_id,
                    course_id = %started.course_id, project_id = %started.project_id,
                    amount = started.amount, outcome = outcome.label(),
                    role = actor.role.as_str(), user_id = ?actor.id, "credit top-up settled"
                );
            }
            settled.extra_credits
        }
        Err(err) => {
            // The row stays `granting` and becomes `in_doubt` once its lease lapses.
            tracing::error!(
                top_up_id = %started.id, enrolment_id = %started.enrolment_id,
                outcome = outcome.label(), error = %err,
                "the top-up could not be recorded after its grant"
            );
            if outcome == Outcome::Granted {
                return Err(err.into());
            }
            0
        }
    };
    let (amount, project_id) = (started.amount, started.project_id);
    match outcome {
        Outcome::Granted => Ok(ToppedUp {
            top_up_id: started.id,
            enrolment_id: started.enrolment_id,
            project_id,
            amount,
            extra_credits,
            credits_granted_total: i64::from(started.credits_per_seat) + i64::from(extra_credits),
        }),
        Outcome::Failed => Err(TopUpError::GrantFailed { amount, project_id }.into()),
        Outcome::InDoubt => Err(TopUpError::GrantUncertain { amount, project_id }.into()),
    }
}

/// What one settlement did.
struct Settled {
    /// This run moved the row; otherwise it was settled already, or is gone with its course.
    changed: bool,
    /// The enrolment's `extra_credits` afterwards.
    extra_credits: i32,
}

async fn settle_once(
    services: &Services,
    actor: &Actor,
    started: &Started,
    outcome: Outcome,
    now: DateTime<Utc>,
) -> Result<Settled, sqlx::Error> {
    let mut tx = services.db.begin().await?;
    let Some(enrolment) = top_ups::lock_enrolment(&mut *tx, started.enrolment_id).await? else {
        return Ok(Settled {
            changed: false,
            extra_credits: 0,
        });
    };
    let dropped = enrolment.is_dropped
        || crate::repo::enrolments::has_drop(&mut *tx, started.enrolment_id).await?;
    let before = enrolment.extra_credits;
    let (changed, after, kind) = match outcome {
        Outcome::Granted => {
            let changed = top_ups::settle(&mut *tx, started.id, state::GRANTED, None, now).await?;
            // A grant that lands after the drop began is not the student's any more: the drop
            // (or the lab deplete at the course end) takes it back.
            let after = if changed && !dropped {
                top_ups::add_extra_credits(&mut *tx, started.enrolment_id, started.amount).await?
            } else {
                before
            };
            (changed, after, EventType::CreditsToppedUp)
        }
        Outcome::Failed => {
            let changed =
                top_ups::settle(&mut *tx, started.id, state::FAILED, Some(GRANT_FAILED), now)
                    .await?;
            (changed, before, EventType::TopUpFailed)
        }
        Outcome::InDoubt => {
            let changed =
                top_ups::mark_in_doubt(&mut *tx, started.id, GRANT_UNCERTAIN, now).await?;
            (changed, before, EventType::TopUpInDoubt)
        }
    };
    if changed {
        let event = top_up_event(started, actor, kind, before, after, now);
        events::record(&mut *tx, &[event]).await?;
    }
    tx.commit().await?;
    Ok(Settled {
        changed,
        extra_credits: after,
    })
}

fn top_up_event(
    started: &Started,
    actor: &Actor,
    kind: EventType,
    before: i32,
    after: i32,
    now: DateTime<Utc>,
) -> NewEvent {
    events::event(started.course_id, kind, actor, now)
        .enrolment(started.enrolment_id)
        .project(started.project_id)
        .amount(Some(Decimal::from(started.amount)))
        .before(json!({ "extra_credits": before }))
        .after(json!({ "extra_credits": after }))
        .data(json!({ "top_up_id": started.id, "note": started.note }))
}

fn record_metrics(outcome: Outcome, amount: i32) {
    metrics::counter!("vlab_top_ups_total", "outcome" => outcome.label()).increment(1);
    if outcome == Outcome::Granted {
        metrics::counter!("vlab_top_up_credits_total")
            .increment(u64::try_from(amount).unwrap_or(0));
    }
}

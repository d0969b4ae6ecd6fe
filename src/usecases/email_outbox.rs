//! The e-mail outbox (rules.md §6.2): the first attempt made by assign, and the pass the
//! background worker and the expiry job run over due rows. Leases are taken with
//! `FOR UPDATE SKIP LOCKED` and every outcome is recorded only under the lease that sent it.
//! The pass leases only the kinds this binary can render ([`KINDS`]), so rows of a kind added by
//! a newer release wait for it instead of failing or being cancelled here.

use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use serde_json::json;
use uuid::Uuid;

use super::UseCaseError;
use crate::clients::Email;
use crate::clients::mail::Notice;
use crate::domain::audit::{Actor, EventType};
use crate::domain::backoff::backoff;
use crate::repo::email_outbox::{
    FailureRecorded, KIND_ACCESS_END_NOTICE, KIND_COURSE_END_NOTICE, KIND_DROP_DEADLINE_NOTICE,
    LeasedEmail, LeasedForPass, NewEmail, SendTimeState,
};
use crate::repo::events::NewEvent;
use crate::repo::{self};
use crate::usecases::Services;
use crate::usecases::events::{self, EventExt};

/// How long a lease on an outbox row lasts.
pub const LEASE: Duration = Duration::minutes(2);
/// The attempt after which a row is `failed`.
pub const MAX_ATTEMPTS: i32 = 12;

const KIND: &str = repo::email_outbox::KIND_ENROLMENT_CLAIM;

/// The kinds this binary can render, and so the only ones its pass leases.
pub const KINDS: &[&str] = &[
    KIND,
    KIND_DROP_DEADLINE_NOTICE,
    KIND_COURSE_END_NOTICE,
    KIND_ACCESS_END_NOTICE,
];

/// The `kind` label of `vlab_emails_total` for a row (a kind outside [`KINDS`] is never
/// leased).
fn kind_label(kind: &str) -> &'static str {
    KINDS.iter().copied().find(|k| *k == kind).unwrap_or(KIND)
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmailPassSummary {
    pub sent: u64,
    /// Attempts that failed this pass (those that gave up included).
    pub failed: u64,
    pub gave_up: u64,
    pub cancelled: u64,
}

impl EmailPassSummary {
    /// Rows the pass leased: each ends sent, failed or cancelled.
    pub fn leased(&self) -> u64 {
        self.sent + self.failed + self.cancelled
    }
}

/// The outcome of one send attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    /// Failed; due again later.
    Retry,
    /// Failed for the last time.
    GaveUp,
    /// The enrolment is gone or dropped.
    Cancelled,
}

/// Leases up to `limit` due pending rows (FOR UPDATE SKIP LOCKED, lease 2 min), sends them (at
/// most `config.external_concurrency` at once), records each outcome guarded by `lease_id`.
/// Backoff `min(2^(n-1) min, 24 h) × uniform(0.8, 1.2)`; `failed` after the 12th attempt;
/// a dropped or gone enrolment → `cancelled`.
pub async fn run_pass(
    services: &Services,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<EmailPassSummary, UseCaseError> {
    run_pass_of(services, KINDS, now, limit).await
}

/// [`run_pass`] over the given kinds only: what a binary that knows only those kinds does.
pub async fn run_pass_of(
    services: &Services,
    kinds: &[&str],
    now: DateTime<Utc>,
    limit: i64,
) -> Result<EmailPassSummary, UseCaseError> {
    let lease = Uuid::new_v4();
    let rows =
        repo::email_outbox::lease_due(&services.db, kinds, lease, now, now + LEASE, limit).await?;
    let concurrency = services.config.external_concurrency.max(1);
    let outcomes: Vec<Delivery> = futures::stream::iter(rows)
        .map(|row| process(services, row, lease, now))
        .buffer_unordered(concurrency)
        .collect()
        .await;

    let mut summary = EmailPassSummary::default();
    for outcome in outcomes {
        match outcome {
            Delivery::Sent => summary.sent += 1,
            Delivery::Retry => summary.failed += 1,
            Delivery::GaveUp => {
                summary.failed += 1;
                summary.gave_up += 1;
            }
            Delivery::Cancelled => summary.cancelled += 1,
        }
    }
    refresh_pending_gauge(services).await;
    Ok(summary)
}

async fn process(
    services: &Services,
    leased: LeasedForPass,
    lease: Uuid,
    now: DateTime<Utc>,
) -> Delivery {
    let row = leased.email;
    if no_longer_wanted(&row, &leased.state, now) {
        if let Err(err) = repo::email_outbox::mark_cancelled(&services.db, row.id, lease, now).await
        {
            tracing::error!(email_id = %row.id, error = %err, "could not cancel an e-mail");
        }
        metrics::counter!("vlab_emails_total", "kind" => kind_label(&row.kind), "outcome" => "cancelled")
            .increment(1);
        tracing::info!(email_id = %row.id, kind = row.kind, "e-mail cancelled: no longer wanted");
        return Delivery::Cancelled;
    }
    deliver(services, &row, &Actor::system(), lease, now).await
}

/// The cancellation rule of the row's kind, checked at send time (addendum §9.5). A notice
/// never depends on `enrolment_id` being set: faculty notices have none.
fn no_longer_wanted(row: &LeasedEmail, state: &SendTimeState, now: DateTime<Utc>) -> bool {
    let course_active = state.course_status.as_deref() == Some("active");
    let passed = |date: Option<DateTime<Utc>>| date.is_none_or(|d| now >= d);
    match row.kind.as_str() {
        KIND => row.enrolment_dropped != Some(false),
        KIND_DROP_DEADLINE_NOTICE => !course_active || passed(state.course_last_drop_date),
        KIND_COURSE_END_NOTICE => !course_active || passed(state.course_end_date),
        KIND_ACCESS_END_NOTICE => {
            let announced = row
                .payload
                .get("access_end_at")
                .and_then(|v| v.as_str())
                .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
                .map(|d| d.with_timezone(&Utc));
            row.enrolment_dropped != Some(false)
                || state.enrolment_has_drop
                || !course_active
                || announced.is_none()
                || state.course_end_date != announced
                || passed(announced)
        }
        _ => false,
    }
}

/// Sends one leased row and records the outcome under `lease`, with its final event on
/// behalf of `actor` (the caller for a first attempt, else the system). Assign's
/// `email_sent` is whether this returned [`Delivery::Sent`].
pub async fn deliver(
    services: &Services,
    row: &LeasedEmail,
    actor: &Actor,
    lease: Uuid,
    now: DateTime<Utc>,
) -> Delivery {
    let (email_id, recipient) = (row.id, row.recipient.as_str());
    let sent = match render(row) {
        Ok(email) => services
            .mailer
            .send(&email)
            .await
            .map_err(|e| e.to_string()),
        Err(error) => Err(error),
    };
    match sent {
        Ok(()) => {
            match record_sent(services, row, actor, lease, now).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(email_id = %email_id, "claim e-mail sent, but its lease was lost; it may be sent again")
                }
                Err(err) => {
                    tracing::error!(email_id = %email_id, error = %err, "claim e-mail sent but not recorded; it will be sent again")
                }
            }
            metrics::counter!("vlab_emails_total", "kind" => kind_label(&row.kind), "outcome" => "sent")
                .increment(1);
            tracing::debug!(email_id = %email_id, kind = row.kind, recipient, "e-mail sent");
            Delivery::Sent
        }
        Err(error) => record_failure(services, row, actor, lease, now, &error).await,
    }
}

/// The `email_sent` or `email_failed` event of a row's final update; none for a row whose
/// enrolment (and so its course) is gone.
fn final_event(
    row: &LeasedEmail,
    kind: EventType,
    actor: &Actor,
    attempts: i32,
    now: DateTime<Utc>,
) -> Option<crate::repo::events::NewEvent> {
    let course_id = row.course_id?;
    let mut event = events::event(course_id, kind, actor, now).data(json!({
        "outbox_id": row.id,
        "kind": row.kind,
        "attempts": attempts,
    }));
    event.enrolment_id = row.enrolment_id;
    Some(event)
}

/// The `sent` update and its event, in one statement (the first attempt of every assigned
/// student makes it, so it stays one round trip). True when this lease recorded it.
async fn record_sent(
    services: &Services,
    row: &LeasedEmail,
    actor: &Actor,
    lease: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let event = final_event(row, EventType::EmailSent, actor, row.attempts + 1, now);
    let sent =
        repo::email_outbox::mark_sent(&services.db, row.id, lease, now, event.as_ref()).await?;
    if sent && let Some(event) = &event {
        events::count(std::slice::from_ref(event));
    }
    Ok(sent)
}

/// The failure update, and the `email_failed` event when it gave up, in one transaction.
async fn record_failed_attempt(
    services: &Services,
    row: &LeasedEmail,
    actor: &Actor,
    lease: Uuid,
    now: DateTime<Utc>,
    error: &str,
) -> Result<FailureRecorded, sqlx::Error> {
    // The attempt count once this failure is recorded.
    let attempts = row.attempts + 1;
    let next = now + backoff(attempts);
    let mut tx = services.db.begin().await?;
    let recorded =
        repo::email_outbox::record_failure(&mut *tx, row.id, lease, now, next, error, MAX_ATTEMPTS)
            .await?;
    if recorded == FailureRecorded::GaveUp
        && let Some(event) = final_event(row, EventType::EmailFailed, actor, attempts, now)
    {
        events::record(&mut *tx, &[event]).await?;
    }
    tx.commit().await?;
    Ok(recorded)
}

async fn record_failure(
    services: &Services,
    row: &LeasedEmail,
    actor: &Actor,
    lease: Uuid,
    now: DateTime<Utc>,
    error: &str,
) -> Delivery {
    let email_id = row.id;
    let attempts = row.attempts + 1;
    let recorded = record_failed_attempt(services, row, actor, lease, now, error).await;
    match recorded {
        Ok(FailureRecorded::GaveUp) => {
            metrics::counter!("vlab_emails_total", "kind" => kind_label(&row.kind), "outcome" => "failed")
                .increment(1);
            tracing::error!(email_id = %email_id, attempts, error, "claim e-mail gave up after the last attempt");
            Delivery::GaveUp
        }
        Ok(recorded) => {
            if recorded == FailureRecorded::NotHeld {
                tracing::warn!(email_id = %email_id, "claim e-mail failure not recorded: the lease was lost");
            }
            metrics::counter!("vlab_emails_total", "kind" => kind_label(&row.kind), "outcome" => "retry")
                .increment(1);
            tracing::warn!(email_id = %email_id, attempts, error, "claim e-mail failed; will retry");
            Delivery::Retry
        }
        Err(err) => {
            tracing::error!(email_id = %email_id, error = %err, "could not record a failed claim e-mail");
            metrics::counter!("vlab_emails_total", "kind" => kind_label(&row.kind), "outcome" => "retry")
                .increment(1);
            Delivery::Retry
        }
    }
}

/// The message of a leased row; `Err` says what it lacks. Only [`KINDS`] are leased.
fn render(row: &LeasedEmail) -> Result<Email, String> {
    match row.kind.as_str() {
        KIND => claim_email(&row.recipient, &row.payload)
            .map_err(|missing| format!("the queued e-mail has no {missing}")),
        KIND_DROP_DEADLINE_NOTICE | KIND_COURSE_END_NOTICE | KIND_ACCESS_END_NOTICE => {
            notice_email(&row.recipient, &row.kind, &row.payload)
        }
        other => Err(format!(
            "this service cannot render e-mails of kind {other}"
        )),
    }
}

/// The claim e-mail of a queued row; `Err` names the missing payload key.
fn claim_email(recipient: &str, payload: &serde_json::Value) -> Result<Email, &'static str> {
    let text = |key: &'static str| {
        payload
            .get(key)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or(key)
    };
    Ok(Email::EnrolmentClaim {
        to: recipient.to_owned(),
        course_name: text("course_name")?,
        claim_link: text("claim_link")?,
        discover_link: text("discover_link")?,
    })
}

/// A notice of a queued row: its payload is the [`Notice`] with its variables.
fn notice_email(recipient: &str, kind: &str, payload: &serde_json::Value) -> Result<Email, String> {
    let notice: Notice = serde_json::from_value(payload.clone())
        .map_err(|err| format!("the queued notice cannot be read: {err}"))?;
    if notice.kind() != kind {
        return Err(format!(
            "the queued notice is a {} and not a {kind}",
            notice.kind()
        ));
    }
    Ok(Email::Notice {
        to: recipient.to_owned(),
        notice,
    })
}

/// The `email_queued` event of a new row of `course_id`, for the transaction that inserts it.
pub fn queued_event(
    course_id: Uuid,
    email: &NewEmail,
    actor: &Actor,
    now: DateTime<Utc>,
) -> NewEvent {
    let event = events::event(course_id, EventType::EmailQueued, actor, now).data(json!({
        "outbox_id": email.id,
        "kind": email.kind,
        "origin": email.origin,
        "recipient": email.recipient,
    }));
    match email.enrolment_id {
        Some(enrolment_id) => event.enrolment(enrolment_id),
        None => event,
    }
}

/// The payload queued with a new claim e-mail (integrations.md §4.3). `secret` is the
/// enrolment's current claim secret (addendum §3.1): its token, or its id while it has none.
pub fn claim_payload(services: &Services, course_name: &str, secret: Uuid) -> serde_json::Value {
    let base = services.config.invite_link_base.trim_end_matches('/');
    serde_json::json!({
        "course_name": course_name,
        "claim_link": format!("{base}/course-enrolment?enrolment_id={secret}"),
        "discover_link": services.config.landing_namespace,
    })
}

async fn refresh_pending_gauge(services: &Services) {
    match repo::email_outbox::count_pending(&services.db).await {
        Ok(n) => metrics::gauge!("vlab_email_outbox_pending").set(n as f64),
        Err(err) => tracing::warn!(error = %err, "could not count pending claim e-mails"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_payload_becomes_the_claim_email() {
        let payload = json!({"course_name": "Neuro", "claim_link": "https://x/c", "discover_link": "https://d"});
        let email = claim_email("a@b.org", &payload).unwrap();
        assert_eq!(
            email,
            Email::EnrolmentClaim {
                to: "a@b.org".to_owned(),
                course_name: "Neuro".to_owned(),
                claim_link: "https://x/c".to_owned(),
                discover_link: "https://d".to_owned(),
            }
        );
        assert_eq!(
            claim_email("a@b.org", &json!({"course_name": "x"})),
            Err("claim_link")
        );
    }
}

//! `POST /seats/courses/{course_id}/resend-claim-emails` (addendum §2.4.2): in one transaction,
//! the candidates are locked in id order, each is classified, and every eligible one gets its
//! pending copies cancelled and a new unleased row due now. Nothing is sent within the request:
//! the commit wakes the local worker. All or nothing: a failed commit queues nothing.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::resend_one::count_superseded;
use super::{ResendError, limit, recent_claims};
use crate::domain::audit::Actor;
use crate::domain::caller::Caller;
use crate::domain::claim_limit::{ClaimLimit, Verdict};
use crate::repo::email_outbox::{KIND_ENROLMENT_CLAIM, NewEmail, origin};
use crate::repo::enrolments::Enrolment;
use crate::repo::{self, courses::status};
use crate::usecases::courses::CourseError;
use crate::usecases::email_outbox::{claim_payload, queued_event};
use crate::usecases::events;
use crate::usecases::{Services, UseCaseError};

/// Most candidates of one request, with or without a list.
pub const MAX_CANDIDATES: usize = 1000;

/// Why one candidate was not queued, in the order the checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    NotFound,
    Dropped,
    AlreadyClaimed,
    AccessEnded,
    DailyCapReached { max: u32 },
    IntervalApplies { minutes: u32 },
}

impl Skip {
    /// The per-item `error` sentence.
    pub fn message(&self) -> String {
        match self {
            Self::NotFound => "Enrolment not found in this course".to_owned(),
            Self::Dropped => ResendError::Dropped.to_string(),
            Self::AlreadyClaimed => ResendError::AlreadyClaimed.to_string(),
            Self::AccessEnded => "The student's access has ended".to_owned(),
            Self::DailyCapReached { max } => {
                format!("This student has been sent {max} claim e-mails in the last 24 hours")
            }
            Self::IntervalApplies { minutes } => {
                format!("A claim e-mail to this student was queued less than {minutes} minutes ago")
            }
        }
    }
}

/// One candidate's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemResult {
    pub enrolment_id: Uuid,
    /// `None` (with `recipient`) for an id that is not an enrolment of the course.
    pub student_id: Option<String>,
    /// The current `contact_email`.
    pub recipient: Option<String>,
    /// `None` when queued.
    pub skipped: Option<Skip>,
    /// After this request.
    pub next_resend_allowed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResentMany {
    pub results: Vec<ItemResult>,
    /// Without a list: more unclaimed enrolments remain than this request considered.
    pub more: bool,
}

/// `selection`: the listed ids in request order (1..1000, distinct), or `None` for every
/// unclaimed, undropped enrolment of the course.
pub async fn resend_many(
    services: &Services,
    caller: &Caller,
    course_id: Uuid,
    selection: Option<Vec<Uuid>>,
) -> Result<ResentMany, UseCaseError> {
    let now = Utc::now();
    let requested_by = caller.sub;
    let actor = Actor::staff(caller);
    let mut tx = services.db.begin().await?;
    let course = repo::courses::find_for_share(&mut *tx, course_id)
        .await?
        .ok_or(CourseError::NotFound(course_id))?;
    if course.status != status::ACTIVE {
        return Err(ResendError::CourseNotActiveForMany {
            status: course.status,
        }
        .into());
    }
    let (locked, order, more) = match selection {
        Some(ids) => {
            let locked = repo::enrolments::lock_in_course(&mut *tx, course_id, &ids).await?;
            (locked, ids, false)
        }
        None => {
            let mut rows =
                repo::enrolments::lock_unclaimed(&mut *tx, course_id, MAX_CANDIDATES as i64 + 1)
                    .await?;
            rows.sort_by_key(|e| (e.created_at, e.id));
            let more = rows.len() > MAX_CANDIDATES;
            rows.truncate(MAX_CANDIDATES);
            let order = rows.iter().map(|e| e.id).collect();
            (rows, order, more)
        }
    };
    let ids: Vec<Uuid> = locked.iter().map(|e| e.id).collect();
    let with_drop: HashSet<Uuid> = repo::enrolments::with_drop(&mut *tx, &ids)
        .await?
        .into_iter()
        .collect();
    let mut recent = recent_claims(&mut *tx, &ids, now).await?;
    let mut enrolments: HashMap<Uuid, Enrolment> = locked.into_iter().map(|e| (e.id, e)).collect();

    let limit = limit(services);
    let ended = course.end_date.is_some_and(|end| now >= end);
    let mut results = Vec::with_capacity(order.len());
    let mut queue = Vec::new();
    for enrolment_id in order {
        let Some(enrolment) = enrolments.remove(&enrolment_id) else {
            results.push(ItemResult {
                enrolment_id,
                student_id: None,
                recipient: None,
                skipped: Some(Skip::NotFound),
                next_resend_allowed_at: None,
            });
            continue;
        };
        let mut times = recent.remove(&enrolment_id).unwrap_or_default();
        let skipped = classify(
            &enrolment,
            with_drop.contains(&enrolment_id),
            ended,
            &limit,
            &times,
            now,
        );
        if skipped.is_none() {
            times.insert(0, now);
            queue.push(enrolment_id);
        }
        results.push(ItemResult {
            enrolment_id,
            student_id: Some(enrolment.student_id),
            recipient: Some(enrolment.contact_email),
            skipped,
            next_resend_allowed_at: limit.next_allowed_at(&times, now),
        });
    }

    let mut cancelled = 0;
    if !queue.is_empty() {
        cancelled = repo::email_outbox::cancel_pending_claims(&mut *tx, &queue, now).await?;
        let lab_name = repo::enrolments::claim_course(&mut *tx, course_id)
            .await?
            .map(|c| c.virtual_lab_name)
            .ok_or(CourseError::NotFound(course_id))?;
        // The link each enrolment already has (addendum §3.1).
        let secrets: std::collections::HashMap<Uuid, Uuid> =
            repo::claim_tokens::current_secrets(&mut *tx, &queue)
                .await?
                .into_iter()
                .collect();
        let mut queued_events = Vec::with_capacity(queue.len());
        for item in results.iter().filter(|r| r.skipped.is_none()) {
            let email = NewEmail {
                id: Uuid::new_v4(),
                kind: KIND_ENROLMENT_CLAIM,
                enrolment_id: Some(item.enrolment_id),
                course_id: Some(course_id),
                recipient: item.recipient.clone().unwrap_or_default(),
                payload: claim_payload(
                    services,
                    &lab_name,
                    secrets
                        .get(&item.enrolment_id)
                        .copied()
                        .unwrap_or(item.enrolment_id),
                ),
                origin: origin::RESEND_ALL,
                requested_by: Some(requested_by),
                lease: None,
            };
            repo::email_outbox::insert(&mut *tx, &email, now).await?;
            queued_events.push(queued_event(course_id, &email, &actor, now));
        }
        events::record(&mut *tx, &queued_events).await?;
    }
    tx.commit().await?;
    count_superseded(cancelled);
    if !queue.is_empty() {
        services.worker_wake.notify_one();
    }
    let queued = queue.len() as u64;
    let skipped = results.len() as u64 - queued;
    metrics::counter!("vlab_claim_resends_total", "outcome" => "queued").increment(queued);
    for item in &results {
        let outcome = match item.skipped {
            None => continue,
            Some(Skip::DailyCapReached { .. } | Skip::IntervalApplies { .. }) => "rate_limited",
            Some(_) => "rejected",
        };
        metrics::counter!("vlab_claim_resends_total", "outcome" => outcome).increment(1);
    }
    tracing::info!(%course_id, user_id = %requested_by, queued, skipped, more, "claim e-mails resent");
    Ok(ResentMany { results, more })
}

/// The per-item checks after "not found", in order.
fn classify(
    enrolment: &Enrolment,
    has_drop: bool,
    course_ended: bool,
    limit: &ClaimLimit,
    recent: &[DateTime<Utc>],
    now: DateTime<Utc>,
) -> Option<Skip> {
    if enrolment.is_dropped || has_drop {
        return Some(Skip::Dropped);
    }
    if enrolment.claimed_by.is_some() {
        return Some(Skip::AlreadyClaimed);
    }
    if course_ended {
        return Some(Skip::AccessEnded);
    }
    match limit.check(recent, now) {
        Verdict::Allowed => None,
        Verdict::DailyCapReached { .. } => Some(Skip::DailyCapReached {
            max: limit.max_per_day,
        }),
        Verdict::IntervalApplies { .. } => Some(Skip::IntervalApplies {
            minutes: limit.interval.num_minutes() as u32,
        }),
    }
}

//! `GET /courses/{course_id}/enrolments` (api.md §4.5.10): every enrolment, dropped ones
//! included, with its seat, drop state and latest claim e-mail. Read-only: three set-based
//! queries, whatever the number of enrolments.

use std::collections::HashMap;

use chrono::Utc;
use uuid::Uuid;

use crate::repo::{self, enrolments::EnrolmentWithDrop, seats::Seat};
use crate::usecases::Services;
use crate::usecases::UseCaseError;
use crate::usecases::claim_emails::{self, ClaimEmailStatus};

/// One enrolment of the roster.
#[derive(Debug, Clone)]
pub struct RosterEntry {
    pub enrolment: EnrolmentWithDrop,
    /// The seat that points to it.
    pub seat: Option<Seat>,
    /// Its latest claim e-mail, if it has one.
    pub claim_email: Option<ClaimEmailStatus>,
}

/// Enrolments by `created_at`, then id.
pub async fn list_course_enrolments(
    services: &Services,
    course_id: Uuid,
) -> Result<Vec<RosterEntry>, UseCaseError> {
    let now = Utc::now();
    let enrolments = repo::enrolments::list_by_course(&services.db, course_id).await?;
    let ids: Vec<Uuid> = enrolments.iter().map(|e| e.enrolment.id).collect();
    // `seat.enrolment_id` is unique, so each enrolment has at most one seat.
    let mut seats: HashMap<Uuid, Seat> = repo::seats::find_by_enrolments(&services.db, &ids)
        .await?
        .into_iter()
        .filter_map(|s| s.enrolment_id.map(|id| (id, s)))
        .collect();
    let mut claim_emails = claim_emails::statuses(services, &ids, now).await?;
    Ok(enrolments
        .into_iter()
        .map(|e| RosterEntry {
            seat: seats.remove(&e.enrolment.id),
            claim_email: claim_emails.remove(&e.enrolment.id),
            enrolment: e,
        })
        .collect())
}

/// One enrolment of the course as the roster shows it (the answer of a support action).
pub async fn roster_entry(
    services: &Services,
    course_id: Uuid,
    enrolment_id: Uuid,
) -> Result<Option<RosterEntry>, UseCaseError> {
    let Some(found) =
        repo::enrolments::find_with_credits(&services.db, course_id, enrolment_id).await?
    else {
        return Ok(None);
    };
    let seat = repo::seats::find_by_enrolments(&services.db, &[enrolment_id])
        .await?
        .into_iter()
        .next();
    let claim_email = claim_emails::statuses(services, &[enrolment_id], Utc::now())
        .await?
        .remove(&enrolment_id);
    Ok(Some(RosterEntry {
        enrolment: EnrolmentWithDrop {
            enrolment: found.enrolment,
            drop_state: found.drop_state,
        },
        seat,
        claim_email,
    }))
}

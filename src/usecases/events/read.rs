//! The two reads of the audit log: a course's events, filtered and paged, and one enrolment's
//! timeline with its credit summary. Read-only; the timeline may read the project balance.

use rust_decimal::Decimal;
use uuid::Uuid;

use super::EventError;
use crate::repo::enrolments::EnrolmentCredits;
use crate::repo::events::{CourseEvent, EventQuery};
use crate::repo::{self, courses::Course, seats::Seat};
use crate::usecases::claim_emails::{self, ClaimEmailStatus};
use crate::usecases::courses::CourseError;
use crate::usecases::{Services, UseCaseError};

/// A page of a course's events and the number matching the filters. `course` is the course
/// the tier gate found: a service admin may read the events of a deleted course, so only a
/// course with neither a row nor any event is unknown.
pub async fn list(
    services: &Services,
    course: Option<&Course>,
    query: &EventQuery,
) -> Result<(Vec<CourseEvent>, i64), UseCaseError> {
    if course.is_none() && !repo::events::course_has_events(&services.db, query.course_id).await? {
        return Err(CourseError::NotFound(query.course_id).into());
    }
    Ok(repo::events::list(&services.db, query).await?)
}

/// What the timeline shows for one enrolment.
#[derive(Debug, Clone)]
pub struct Timeline {
    pub enrolment: EnrolmentCredits,
    pub seat: Option<Seat>,
    /// The latest claim e-mail, if any.
    pub claim_email: Option<ClaimEmailStatus>,
    pub credits: Credits,
    /// Oldest first.
    pub events: Vec<CourseEvent>,
}

/// The credit summary, read from the tables (and the balance, when asked for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credits {
    pub granted: Decimal,
    pub topped_up: Decimal,
    pub top_ups_in_doubt: Decimal,
    pub depleted: Option<Decimal>,
    pub current_balance: Option<Decimal>,
    pub spent: Option<Decimal>,
    pub balance_error: Option<&'static str>,
}

pub const BALANCE_ERROR: &str = "Could not read the balance from the accounting service";

/// The timeline of `enrolment_id` in `course_id`; `course` is what the tier gate found.
pub async fn timeline(
    services: &Services,
    course_id: Uuid,
    course: Option<&Course>,
    enrolment_id: Uuid,
    include_balance: bool,
) -> Result<Timeline, UseCaseError> {
    if course.is_none() {
        return Err(CourseError::NotFound(course_id).into());
    }
    let db = &services.db;
    let enrolment = repo::enrolments::find_with_credits(db, course_id, enrolment_id)
        .await?
        .ok_or(EventError::EnrolmentNotFound {
            enrolment_id,
            course_id,
        })?;
    let seat = repo::seats::find_by_enrolments(db, &[enrolment_id])
        .await?
        .into_iter()
        .next();
    let events = repo::events::for_enrolment(db, enrolment_id).await?;
    let claim_email = claim_emails::statuses(services, &[enrolment_id], chrono::Utc::now())
        .await?
        .remove(&enrolment_id);

    let dropped = enrolment.enrolment.is_dropped || enrolment.drop_state.is_some();
    let (balance, balance_error) = if include_balance && !dropped {
        let project_id = enrolment.enrolment.project_id;
        match services.accounting.project_balance(project_id).await {
            Ok(read) => (Some(read.balance), None),
            Err(err) => {
                tracing::warn!(%enrolment_id, %project_id, error = %err, "timeline: the balance read failed");
                (None, Some(BALANCE_ERROR))
            }
        }
    } else {
        (None, None)
    };
    let credits = credits(&enrolment, balance, balance_error);
    Ok(Timeline {
        enrolment,
        seat,
        claim_email,
        credits,
        events,
    })
}

fn credits(
    e: &EnrolmentCredits,
    balance: Option<Decimal>,
    balance_error: Option<&'static str>,
) -> Credits {
    let granted = Decimal::from(e.credits_per_seat);
    let topped_up = Decimal::from(e.enrolment.extra_credits);
    let spent = match (balance, e.depleted_amount) {
        (Some(balance), _) => Some(granted + topped_up - balance),
        (None, Some(depleted)) => Some(granted + topped_up - depleted),
        (None, None) => None,
    };
    Credits {
        granted,
        topped_up,
        top_ups_in_doubt: Decimal::from(e.top_ups_in_doubt),
        depleted: e.depleted_amount,
        current_balance: balance,
        spent,
        balance_error,
    }
}

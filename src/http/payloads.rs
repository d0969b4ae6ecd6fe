//! Shared response shapes of api.md §3 and the envelope of §0.3.

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use chrono::{DateTime, Utc};

use crate::domain::datetime::serde_utc;
use crate::repo::courses::Course;
use crate::repo::institutions::Institution;

/// `{"message", "data"}`; `data` is always present.
#[derive(Debug, Serialize)]
pub struct Envelope<T: Serialize> {
    pub message: String,
    pub data: T,
}

impl<T: Serialize> Envelope<T> {
    pub fn new(message: impl Into<String>, data: T) -> axum::Json<Self> {
        axum::Json(Self {
            message: message.into(),
            data,
        })
    }
}

/// InstitutionOut (api.md §3.1).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InstitutionOut {
    pub id: Uuid,
    pub name: String,
    pub contact_email: String,
}

impl From<Institution> for InstitutionOut {
    fn from(i: Institution) -> Self {
        Self {
            id: i.id,
            name: i.name,
            contact_email: i.contact_email,
        }
    }
}

/// CourseOut (api.md §3.2): course create, update, activate and void.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CourseOut {
    pub id: Uuid,
    pub virtual_lab_id: Uuid,
    pub institution_id: Uuid,
    pub template_project_id: Uuid,
    /// `draft`, `active` or `voided`.
    pub status: String,
    pub credits_per_seat: i32,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    pub start_date: Option<DateTime<Utc>>,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    pub end_date: Option<DateTime<Utc>>,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    pub last_drop_date: Option<DateTime<Utc>>,
    pub budget_depleted: bool,
}

impl From<&Course> for CourseOut {
    fn from(c: &Course) -> Self {
        Self {
            id: c.id,
            virtual_lab_id: c.virtual_lab_id,
            institution_id: c.institution_id,
            template_project_id: c.template_project_id,
            status: c.status.clone(),
            credits_per_seat: c.credits_per_seat,
            start_date: c.start_date,
            end_date: c.end_date,
            last_drop_date: c.last_drop_date,
            budget_depleted: c.budget_depleted,
        }
    }
}

/// VirtualLabCourseSummary (api.md §3.8): the `course` field of lab payloads.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VirtualLabCourseSummary {
    pub id: Uuid,
    pub virtual_lab_id: Uuid,
    pub template_project_id: Uuid,
    pub institution_id: Uuid,
    pub credits_per_seat: i32,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    pub start_date: Option<DateTime<Utc>>,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    pub end_date: Option<DateTime<Utc>>,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    pub last_drop_date: Option<DateTime<Utc>>,
    pub status: String,
}

impl From<&Course> for VirtualLabCourseSummary {
    fn from(c: &Course) -> Self {
        Self {
            id: c.id,
            virtual_lab_id: c.virtual_lab_id,
            template_project_id: c.template_project_id,
            institution_id: c.institution_id,
            credits_per_seat: c.credits_per_seat,
            start_date: c.start_date,
            end_date: c.end_date,
            last_drop_date: c.last_drop_date,
            status: c.status.clone(),
        }
    }
}

// ---- virtual labs

/// VirtualLabDetails (api.md §3.9).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VirtualLabDetails {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub reference_email: Option<String>,
    pub email_verified: bool,
    pub entity: String,
    /// `cell_a` or `cell_b`.
    pub compute_cell: String,
    pub is_course: bool,
    #[serde(serialize_with = "serde_utc::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "serde_utc::serialize")]
    pub updated_at: DateTime<Utc>,
    /// Non-deleted projects; `null` in the create, patch and delete responses.
    pub projects_count: Option<i64>,
    pub course: Option<VirtualLabCourseSummary>,
}

impl VirtualLabDetails {
    pub fn new(
        lab: &crate::repo::labs::VirtualLab,
        projects_count: Option<i64>,
        course: Option<&Course>,
    ) -> Self {
        Self {
            id: lab.id,
            name: lab.name.clone(),
            description: lab.description.clone(),
            reference_email: lab.reference_email.clone(),
            email_verified: lab.email_verified,
            entity: lab.entity.clone(),
            compute_cell: lab.compute_cell.clone(),
            is_course: lab.is_course,
            created_at: lab.created_at,
            updated_at: lab.updated_at,
            projects_count,
            course: course.map(VirtualLabCourseSummary::from),
        }
    }
}

// ---- courses

/// CourseDetailOut (api.md §3.3): course get and search.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CourseDetailOut {
    pub id: Uuid,
    pub virtual_lab_id: Uuid,
    pub virtual_lab_name: String,
    pub institution_id: Uuid,
    pub institution_name: String,
    pub template_project_id: Uuid,
    /// `draft`, `active` or `voided`.
    pub status: String,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    pub start_date: Option<DateTime<Utc>>,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    pub end_date: Option<DateTime<Utc>>,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    pub last_drop_date: Option<DateTime<Utc>>,
    pub credits_per_seat: i32,
    pub budget_depleted: bool,
}

impl From<crate::repo::courses::CourseDetail> for CourseDetailOut {
    fn from(d: crate::repo::courses::CourseDetail) -> Self {
        let c = d.course;
        Self {
            id: c.id,
            virtual_lab_id: c.virtual_lab_id,
            virtual_lab_name: d.virtual_lab_name,
            institution_id: c.institution_id,
            institution_name: d.institution_name,
            template_project_id: c.template_project_id,
            status: c.status,
            start_date: c.start_date,
            end_date: c.end_date,
            last_drop_date: c.last_drop_date,
            credits_per_seat: c.credits_per_seat,
            budget_depleted: c.budget_depleted,
        }
    }
}

// ---- drops

/// SeatDropResult (api.md §3.13): one per requested seat of a faculty drop.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SeatDropResult {
    pub seat_id: Uuid,
    pub is_dropped: bool,
    pub error: Option<String>,
    /// Set only when dropped: the seat went back to the pool.
    pub seat_recovered: Option<bool>,
    /// Set only when dropped: `false` means the Keycloak removal is retried automatically.
    pub access_removed: Option<bool>,
}

impl From<&crate::usecases::drops::faculty::SeatDrop> for SeatDropResult {
    fn from(d: &crate::usecases::drops::faculty::SeatDrop) -> Self {
        let settled = d.settled();
        Self {
            seat_id: d.seat_id,
            is_dropped: settled.is_some(),
            error: d.error(),
            seat_recovered: settled.map(|(recovered, _)| recovered),
            access_removed: settled.map(|(_, removed)| removed),
        }
    }
}

// ---- seats and enrolments

/// SeatOut (api.md §3.4). A reserved seat looks like an unassigned one.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SeatOut {
    pub id: Uuid,
    pub course_id: Uuid,
    pub institution_id: Uuid,
    pub batch_id: Uuid,
    pub is_consumed: bool,
    pub previously_dropped: bool,
    pub enrolment_id: Option<Uuid>,
    pub credit_value: i32,
    #[serde(serialize_with = "serde_utc::serialize")]
    pub expiry_date: DateTime<Utc>,
    #[serde(serialize_with = "serde_utc::serialize")]
    pub created_at: DateTime<Utc>,
}

impl From<&crate::repo::seats::Seat> for SeatOut {
    fn from(s: &crate::repo::seats::Seat) -> Self {
        Self {
            id: s.id,
            course_id: s.course_id,
            institution_id: s.institution_id,
            batch_id: s.batch_id,
            is_consumed: s.is_consumed,
            previously_dropped: s.previously_dropped,
            enrolment_id: s.enrolment_id,
            credit_value: s.credit_value,
            expiry_date: s.expiry_date,
            created_at: s.created_at,
        }
    }
}

/// EnrolmentSummary (api.md §3.5).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EnrolmentSummary {
    pub id: Uuid,
    pub course_id: Uuid,
    pub project_id: Uuid,
    pub contact_email: String,
    pub student_id: String,
    pub claimed_by: Option<Uuid>,
    pub is_dropped: bool,
}

impl From<&crate::repo::enrolments::Enrolment> for EnrolmentSummary {
    fn from(e: &crate::repo::enrolments::Enrolment) -> Self {
        Self {
            id: e.id,
            course_id: e.course_id,
            project_id: e.project_id,
            contact_email: e.contact_email.clone(),
            student_id: e.student_id.clone(),
            claimed_by: e.claimed_by,
            is_dropped: e.is_dropped,
        }
    }
}

/// SeatDetailOut (api.md §3.6): `SeatOut` plus its enrolment.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SeatDetailOut {
    #[serde(flatten)]
    pub seat: SeatOut,
    pub enrolment: Option<EnrolmentSummary>,
}

/// EnrolmentOut (api.md §3.7).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EnrolmentOut {
    pub id: Uuid,
    pub course_id: Uuid,
    pub project_id: Uuid,
    pub contact_email: String,
    pub student_id: String,
    pub claimed_by: Option<Uuid>,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    pub activated_at: Option<DateTime<Utc>>,
    pub is_dropped: bool,
    #[serde(serialize_with = "serde_utc::serialize")]
    pub created_at: DateTime<Utc>,
    /// The seat whose `enrolment_id` is this enrolment (null after a recovering drop).
    pub seat: Option<SeatOut>,
    /// `null`, `depleting`, `revoking` or `done`.
    pub drop_state: Option<String>,
    /// `none`, `waitlisted` or `member`: the access confirmed in Keycloak for the claimant.
    pub access_level: String,
    /// When the current claim was made; null when unclaimed, and for claims made before this
    /// was recorded.
    #[serde(serialize_with = "serde_utc::option::serialize")]
    pub claimed_at: Option<DateTime<Utc>>,
    /// The claimer's token e-mail at claim time (may differ from `contact_email`).
    pub claimed_by_email: Option<String>,
    /// The latest claim e-mail; null when there is none.
    pub claim_email: Option<ClaimEmailOut>,
    /// Credits added by top-ups on top of `credits_per_seat`: the granted ones, settled while
    /// the enrolment was not dropped.
    pub extra_credits: i32,
}

/// ClaimEmailStatus: the latest claim e-mail of an enrolment.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClaimEmailOut {
    /// `pending`, `sent`, `failed` (gave up after 12 attempts) or `cancelled` (superseded by a
    /// newer claim e-mail, or the enrolment was dropped).
    pub status: String,
    /// The `To` address.
    pub recipient: String,
    /// What queued it: `assign`, `resend`, `resend_all`, `email_corrected` or `unclaimed`.
    pub origin: String,
    /// Send attempts so far.
    pub attempts: i32,
    #[serde(serialize_with = "serde_utc::serialize")]
    pub queued_at: DateTime<Utc>,
    /// When SMTP accepted it.
    #[serde(serialize_with = "serde_utc::option::serialize")]
    pub sent_at: Option<DateTime<Utc>>,
    /// The last failure.
    pub last_error: Option<String>,
    /// How many claim e-mails this enrolment has had, in every status.
    pub emails_queued: i64,
    /// The earliest instant the rate limit would accept a resend; null means now.
    #[serde(serialize_with = "serde_utc::option::serialize")]
    pub next_resend_allowed_at: Option<DateTime<Utc>>,
}

impl From<&crate::usecases::claim_emails::ClaimEmailStatus> for ClaimEmailOut {
    fn from(c: &crate::usecases::claim_emails::ClaimEmailStatus) -> Self {
        Self {
            status: c.status.clone(),
            recipient: c.recipient.clone(),
            origin: c.origin.clone(),
            attempts: c.attempts,
            queued_at: c.queued_at,
            sent_at: c.sent_at,
            last_error: c.last_error.clone(),
            emails_queued: c.emails_queued,
            next_resend_allowed_at: c.next_resend_allowed_at,
        }
    }
}

impl EnrolmentOut {
    pub fn new(
        e: &crate::repo::enrolments::Enrolment,
        seat: Option<&crate::repo::seats::Seat>,
        drop_state: Option<String>,
        claim_email: Option<&crate::usecases::claim_emails::ClaimEmailStatus>,
    ) -> Self {
        Self {
            id: e.id,
            course_id: e.course_id,
            project_id: e.project_id,
            contact_email: e.contact_email.clone(),
            student_id: e.student_id.clone(),
            claimed_by: e.claimed_by,
            activated_at: e.activated_at,
            is_dropped: e.is_dropped,
            created_at: e.created_at,
            seat: seat.map(SeatOut::from),
            // A completed drop, or no claimant, shows `none` whatever is stored (W.3.4): a
            // drop completed by an older binary leaves the column as it was.
            access_level: if drop_state.as_deref() == Some("done") || e.claimed_by.is_none() {
                "none".to_owned()
            } else {
                e.access_level.clone()
            },
            drop_state,
            claimed_at: e.claimed_at,
            claimed_by_email: e.claimed_by_email.clone(),
            claim_email: claim_email.map(ClaimEmailOut::from),
            extra_credits: e.extra_credits,
        }
    }
}

/// The `course` of a SeatBatchSearchResponse (api.md §3.12).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SeatBatchCourseOut {
    pub id: Uuid,
    pub virtual_lab_id: Uuid,
    pub virtual_lab_name: String,
    pub institution_id: Uuid,
    pub template_project_id: Uuid,
    pub status: String,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    pub start_date: Option<DateTime<Utc>>,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    pub end_date: Option<DateTime<Utc>>,
    #[serde(serialize_with = "serde_utc::option::serialize")]
    pub last_drop_date: Option<DateTime<Utc>>,
}

impl From<&crate::repo::seats::BatchCourse> for SeatBatchCourseOut {
    fn from(c: &crate::repo::seats::BatchCourse) -> Self {
        Self {
            id: c.id,
            virtual_lab_id: c.virtual_lab_id,
            virtual_lab_name: c.virtual_lab_name.clone(),
            institution_id: c.institution_id,
            template_project_id: c.template_project_id,
            status: c.status.clone(),
            start_date: c.start_date,
            end_date: c.end_date,
            last_drop_date: c.last_drop_date,
        }
    }
}

/// One batch of a SeatBatchSearchResponse: the returned seats sharing a `batch_id`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SeatBatchOut {
    pub batch_id: Uuid,
    /// Of the first seat.
    #[serde(serialize_with = "serde_utc::serialize")]
    pub created_at: DateTime<Utc>,
    /// Of the first seat.
    #[serde(serialize_with = "serde_utc::serialize")]
    pub expiry_date: DateTime<Utc>,
    /// The number of seats returned in this batch.
    pub number_of_seats: usize,
    /// The distinct current course ids of the returned seats, sorted.
    pub course_ids: Vec<Uuid>,
    pub seats: Vec<SeatOut>,
}

impl SeatBatchOut {
    /// `seats` is non-empty and already in (`created_at`, id) order.
    pub fn new(batch_id: Uuid, seats: &[crate::repo::seats::Seat]) -> Option<Self> {
        let first = seats.first()?;
        let mut course_ids: Vec<Uuid> = seats.iter().map(|s| s.course_id).collect();
        course_ids.sort();
        course_ids.dedup();
        Some(Self {
            batch_id,
            created_at: first.created_at,
            expiry_date: first.expiry_date,
            number_of_seats: seats.len(),
            course_ids,
            seats: seats.iter().map(SeatOut::from).collect(),
        })
    }
}

/// SeatBatchSearchResponse (api.md §3.12), returned bare by both batch endpoints.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SeatBatchSearchResponse {
    /// The institution of the first seat of the first batch.
    pub institution: InstitutionOut,
    /// The current course of the first seat of the first batch.
    pub course: SeatBatchCourseOut,
    pub batches: Vec<SeatBatchOut>,
}

//! What seat provisioning, batches, transfers, assignment and claims can refuse.

use uuid::Uuid;

use crate::usecases::enrolment_checks::Refusal;
use crate::usecases::error::{Answer, ErrorCode, StatusCode};

/// Provisioning, batches and transfers.
#[derive(Debug, thiserror::Error)]
pub enum SeatError {
    #[error("Course {0} not found. Cannot provision seats without a valid course.")]
    ProvisionCourseNotFound(Uuid),
    #[error(
        "Course {course_id} is in '{status}' status. Seats can only be provisioned for active courses."
    )]
    ProvisionCourseNotActive { course_id: Uuid, status: String },
    #[error("Seat batch {0} not found")]
    BatchNotFound(Uuid),
    #[error("No seat batches found matching the given filters")]
    NoBatchesFound,
    #[error("One or both courses were not found")]
    TransferCoursesNotFound,
    #[error("Both courses must belong to the same institution")]
    TransferInstitutionMismatch,
    #[error("Both courses must be active")]
    TransferCoursesNotActive,
    #[error("Source course must be past its last drop date")]
    TransferSourceInDropWindow,
    #[error("Target course must be before its last drop date")]
    TransferTargetPastDropDate,
    #[error("Requested {requested} seats but only {available} available")]
    TransferNotEnoughSeats { requested: i64, available: usize },
    #[error("No transferable seats available")]
    NoTransferableSeats,
}

impl SeatError {
    pub fn answer(&self) -> Answer {
        use ErrorCode as C;
        use StatusCode as S;
        match self {
            Self::ProvisionCourseNotFound(_)
            | Self::BatchNotFound(_)
            | Self::NoBatchesFound
            | Self::TransferCoursesNotFound => Answer::new(S::NOT_FOUND, C::EntityNotFound),
            Self::ProvisionCourseNotActive { .. }
            | Self::TransferInstitutionMismatch
            | Self::TransferCoursesNotActive
            | Self::TransferSourceInDropWindow
            | Self::TransferTargetPastDropDate
            | Self::TransferNotEnoughSeats { .. }
            | Self::NoTransferableSeats => Answer::new(S::CONFLICT, C::InvalidRequest),
        }
    }
}

/// Why a whole assign request is refused before any student is provisioned.
#[derive(Debug, thiserror::Error)]
pub enum AssignError {
    #[error("Cannot assign seats: course is in '{status}' status")]
    CourseNotActive { status: String },
    #[error("Cannot assign seats after the course last drop date")]
    AfterLastDropDate,
    #[error("Cannot assign seats: the course's virtual lab has been deleted")]
    LabDeleted,
    #[error("Students already enrolled in this course: {entries}")]
    StudentsAlreadyEnrolled { entries: String },
    /// Some students hold a live seat reservation of a run in progress (and perhaps others
    /// an enrolment): a repeat once that run has finished may get past it.
    #[error("{}", being_enrolled(enrolled.as_deref(), in_progress))]
    StudentsBeingEnrolled {
        enrolled: Option<String>,
        in_progress: String,
    },
    #[error("Not enough available seats: requested {requested}, found {found}")]
    NotEnoughSeats { requested: usize, found: usize },
}

impl AssignError {
    pub fn answer(&self) -> Answer {
        use ErrorCode as C;
        use StatusCode as S;
        match self {
            Self::CourseNotActive { .. } | Self::AfterLastDropDate | Self::LabDeleted => {
                Answer::new(S::CONFLICT, C::InvalidRequest)
            }
            Self::StudentsAlreadyEnrolled { .. } | Self::StudentsBeingEnrolled { .. } => {
                Answer::new(S::CONFLICT, C::EntityAlreadyExists)
            }
            // Upstream's quirk, kept on purpose: a 409 with ENTITY_NOT_FOUND.
            Self::NotEnoughSeats { .. } => Answer::new(S::CONFLICT, C::EntityNotFound),
        }
    }
}

/// The refusal naming students being enrolled by a request in progress: the enrolled ones
/// first, in the sentence assign has always used, then the others in their own sentence.
fn being_enrolled(enrolled: Option<&str>, in_progress: &str) -> String {
    let in_progress = format!("Students being enrolled by a request in progress: {in_progress}");
    match enrolled {
        Some(entries) => {
            format!("Students already enrolled in this course: {entries}. {in_progress}")
        }
        None => in_progress,
    }
}

/// Why a student's claim is refused.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("Enrolment not found")]
    EnrolmentNotFound,
    #[error(
        "This claim link has been replaced by a newer one. Use the link in the most recent e-mail from your course, or ask your course administrator."
    )]
    LinkReplaced,
    #[error("This enrolment has been dropped")]
    EnrolmentDropped,
    #[error("This enrolment has already been claimed")]
    AlreadyClaimed,
    #[error("Cannot claim enrolment: course is in '{status}' status")]
    CourseNotActive { status: String },
    #[error("Cannot claim enrolment: course has ended")]
    CourseEnded,
    #[error("You have already claimed another enrolment in this course")]
    ClaimedAnotherEnrolment,
    #[error(
        "Access from an earlier claim in this course is still being removed. Try again in a few minutes."
    )]
    AccessBeingRemoved,
}

/// The claim's own words for the shared checks (it finds the enrolment by its link).
impl From<Refusal> for ClaimError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::EnrolmentNotFound { .. } => Self::EnrolmentNotFound,
            Refusal::Dropped => Self::EnrolmentDropped,
            Refusal::CourseNotActive { status } => Self::CourseNotActive { status },
            Refusal::AccessEnded => Self::CourseEnded,
        }
    }
}

impl ClaimError {
    pub fn answer(&self) -> Answer {
        use ErrorCode as C;
        use StatusCode as S;
        match self {
            Self::EnrolmentNotFound | Self::LinkReplaced => {
                Answer::new(S::NOT_FOUND, C::EntityNotFound)
            }
            Self::EnrolmentDropped
            | Self::AlreadyClaimed
            | Self::CourseNotActive { .. }
            | Self::CourseEnded
            | Self::ClaimedAnotherEnrolment
            | Self::AccessBeingRemoved => Answer::new(S::CONFLICT, C::InvalidRequest),
        }
    }
}

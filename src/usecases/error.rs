//! The one error type of the use-case layer.
//!
//! Each variant has a fixed public message (its `Display`, as api.md words it) and carries only
//! the context api.md allows to be shown; causes from Keycloak, accounting, SMTP or the
//! database are logged by the use case and never reach clients. `crate::http::error` maps each
//! variant to a status and error code.

use crate::usecases::tasks::TaskFailed;

#[derive(Debug, thiserror::Error)]
pub enum UseCaseError {
    // ---- institutions
    #[error("Institution not found")]
    InstitutionNotFound,
    #[error("No fields to update")]
    NoFieldsToUpdate,
    #[error("Another institution with the same name already exists")]
    InstitutionNameTaken,

    // ---- virtual labs, projects, invites (issue 3)
    #[error("Only service administrators can create course virtual labs.")]
    CourseLabNotAllowed,
    #[error("The user already owns a virtual lab and cannot create another.")]
    AlreadyOwnsLab { owner_id: uuid::Uuid },
    #[error("A virtual lab with this name already exists.")]
    LabNameTaken { name: String },
    #[error("A virtual lab with this name was created concurrently.")]
    LabNameRace { name: String },
    #[error("Failed to create the admin/member groups in the auth provider.")]
    LabGroupsFailed,
    #[error("Failed to attach the owner to the admin group.")]
    LabOwnerAttachFailed,
    #[error("Failed to create the accounting account for the virtual lab.")]
    LabAccountFailed,
    #[error("The virtual lab could not be saved to the database.")]
    LabNotSaved,
    #[error("No virtual lab with this id found")]
    LabNotFound,
    #[error("Another virtual lab with same name already exists")]
    LabRenameTaken,
    #[error("A virtual lab with an active course cannot be deleted. Void the course first.")]
    LabHasActiveCourse,
    #[error("Could not load user details from the identity provider.")]
    UserDetailsUnavailable,
    #[error("Virtual lab not found")]
    ProjectLabNotFound,
    #[error("Another project with the same name already exists")]
    ProjectNameTaken,
    #[error("You have reached the maximum limit of 20 projects")]
    ProjectLimitReached,
    #[error("KC Group creation/attaching failed")]
    ProjectGroupsFailed,
    #[error("Project account creation failed")]
    ProjectAccountFailed,
    #[error("Project already exists")]
    ProjectNameRace,
    #[error("Project creation failed")]
    ProjectNotSaved,
    #[error("Project not found")]
    ProjectNotFound,
    #[error(
        "There was an error while emailing virtual lab invite to {email}. Please try sending the invite again."
    )]
    InviteEmailFailed { email: String },
    #[error("Invite to user could not be sent due to an error in database.")]
    InviteNotSaved,
    #[error("Invite Token is not valid")]
    InviteTokenInvalid,
    #[error("Invite Token has expired")]
    InviteTokenExpired,
    #[error("No invite was found for this link")]
    InviteLinkNotFound,
    #[error("Inviter user is the same as invitee user")]
    InviteeOwnsLab,
    #[error("Could not attach user to group")]
    InviteAttachFailed,
    #[error("Invite not found")]
    InviteNotFound,
    #[error("Invite has already been accepted")]
    InviteAlreadyAccepted,

    // ---- courses (issue 4)
    #[error("Course {0} not found")]
    CourseNotFound(uuid::Uuid),
    #[error("Only draft courses can be modified")]
    CourseNotDraft,
    /// One of the activation date rules (its `Display` is the public message).
    #[error("{0}")]
    CourseDatesInvalid(crate::domain::course_dates::ActivationDateError),
    #[error("Virtual lab {0} not found")]
    CourseLabNotFound(uuid::Uuid),
    #[error("Virtual lab is not a course lab")]
    NotACourseLab,
    #[error("Project {project_id} not found in virtual lab {vlab_id}")]
    TemplateProjectNotFound {
        project_id: uuid::Uuid,
        vlab_id: uuid::Uuid,
    },
    #[error("Institution {0} not found")]
    CourseInstitutionNotFound(uuid::Uuid),
    #[error("Course creation failed due to a conflict (virtual lab may already have a course)")]
    CourseConflict,
    #[error("Failed to fund the template project {0}")]
    TemplateFundingFailed(uuid::Uuid),
    #[error("Course creation failed")]
    CourseNotSaved,

    // ---- seats, enrolments, drops (issue 5)
    // ---- seats, assignment, claim, activation (issue 5 part A)
    #[error("Course {0} not found. Cannot provision seats without a valid course.")]
    ProvisionCourseNotFound(uuid::Uuid),
    #[error(
        "Course {course_id} is in '{status}' status. Seats can only be provisioned for active courses."
    )]
    ProvisionCourseNotActive {
        course_id: uuid::Uuid,
        status: String,
    },
    #[error("Seat batch {0} not found")]
    SeatBatchNotFound(uuid::Uuid),
    #[error("No seat batches found matching the given filters")]
    NoSeatBatchesFound,
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
    #[error("Cannot assign seats: course is in '{status}' status")]
    AssignCourseNotActive { status: String },
    #[error("Cannot assign seats after the course last drop date")]
    AssignAfterLastDropDate,
    #[error("Cannot assign seats: the course's virtual lab has been deleted")]
    AssignLabDeleted,
    #[error("Students already enrolled in this course: {entries}")]
    StudentsAlreadyEnrolled { entries: String },
    #[error("Not enough available seats: requested {requested}, found {found}")]
    NotEnoughSeats { requested: usize, found: usize },
    #[error("Enrolment not found")]
    EnrolmentNotFound,
    #[error("This enrolment has been dropped")]
    EnrolmentDropped,
    #[error("This enrolment has already been claimed")]
    EnrolmentAlreadyClaimed,
    #[error("Cannot claim enrolment: course is in '{status}' status")]
    ClaimCourseNotActive { status: String },
    #[error("Cannot claim enrolment: course has ended")]
    ClaimCourseEnded,
    #[error("You have already claimed another enrolment in this course")]
    ClaimedAnotherEnrolment,

    // ---- drops, void, delete (issue 5 part B)
    #[error("Active courses cannot be deleted. Void the course first.")]
    ActiveCourseNotDeletable,
    #[error(
        "Failed to drop {failed} enrolment(s) of course {course_id}; the course was voided but not deleted. Retry the delete."
    )]
    DeleteDropsFailed { failed: u64, course_id: uuid::Uuid },
    #[error(
        "Failed to remove access for {pending} dropped enrolment(s) of course {course_id}; the course was voided but not deleted. Retry the delete."
    )]
    DeleteAccessPending { pending: u64, course_id: uuid::Uuid },
    #[error("Failed to deplete vlab budget for course {0}")]
    DeleteBudgetNotDepleted(uuid::Uuid),

    // ---- any use case
    /// An unexpected database failure (connection lost, pool timeout…).
    #[error("A database error occurred")]
    Database(#[from] sqlx::Error),
    /// Anything else unexpected, including a use-case task that panicked.
    #[error("An unexpected error occurred")]
    Internal(#[source] anyhow::Error),
}

impl From<TaskFailed> for UseCaseError {
    fn from(err: TaskFailed) -> Self {
        UseCaseError::Internal(err.into())
    }
}

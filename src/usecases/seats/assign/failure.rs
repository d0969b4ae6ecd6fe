//! Why one student of an assign request was not enrolled: the per-student sentences of
//! api.md §4.6.6 and the `reason` label of `vlab_seat_assignments_failed_total`.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StudentFailure {
    #[error("A project named '{student_id}' already exists in this virtual lab")]
    ProjectExists { student_id: String },
    #[error("Could not read the virtual lab administrators from the identity provider")]
    LabAdminsUnavailable,
    #[error("Could not create the student's project groups in the identity provider")]
    GroupsFailed,
    #[error("Could not give the course administrators access to the student's project")]
    MembershipsFailed,
    #[error("Could not create the accounting account for the student's project")]
    AccountFailed,
    #[error("Failed to fund the student's project with {credits} credits")]
    GrantFailed { credits: i32 },
    #[error("The seat reservation expired before the student could be enrolled")]
    ReservationLost,
    #[error("The course is no longer active")]
    CourseInactive,
    #[error("The student is already enrolled in this course")]
    AlreadyEnrolled,
    #[error("The enrolment could not be saved")]
    NotSaved,
}

impl StudentFailure {
    /// The `reason` label (operations.md §5).
    pub fn metric_reason(&self) -> &'static str {
        match self {
            StudentFailure::ProjectExists { .. } => "project_exists",
            StudentFailure::LabAdminsUnavailable => "kc_admins",
            StudentFailure::GroupsFailed => "kc_groups",
            StudentFailure::MembershipsFailed => "kc_memberships",
            StudentFailure::AccountFailed => "acc_account",
            StudentFailure::GrantFailed { .. } => "acc_grant",
            StudentFailure::ReservationLost => "reservation_lost",
            StudentFailure::CourseInactive => "course_inactive",
            StudentFailure::AlreadyEnrolled => "duplicate",
            StudentFailure::NotSaved => "db",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_match_the_contract() {
        assert_eq!(
            StudentFailure::ProjectExists {
                student_id: "Template".to_owned()
            }
            .to_string(),
            "A project named 'Template' already exists in this virtual lab"
        );
        assert_eq!(
            StudentFailure::GrantFailed { credits: 200 }.to_string(),
            "Failed to fund the student's project with 200 credits"
        );
    }
}

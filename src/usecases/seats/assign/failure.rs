//! Why one student of an assign request was not enrolled: the per-student sentences of
//! api.md §4.6.6 and the `reason` label of `vlab_seat_assignments_failed_total`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StudentFailure {
    ProjectExists { student_id: String },
    LabAdminsUnavailable,
    GroupsFailed,
    MembershipsFailed,
    AccountFailed,
    GrantFailed { credits: i32 },
    ReservationLost,
    CourseInactive,
    AlreadyEnrolled,
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

impl fmt::Display for StudentFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StudentFailure::ProjectExists { student_id } => write!(
                f,
                "A project named '{student_id}' already exists in this virtual lab"
            ),
            StudentFailure::LabAdminsUnavailable => f.write_str(
                "Could not read the virtual lab administrators from the identity provider",
            ),
            StudentFailure::GroupsFailed => f.write_str(
                "Could not create the student's project groups in the identity provider",
            ),
            StudentFailure::MembershipsFailed => f.write_str(
                "Could not give the course administrators access to the student's project",
            ),
            StudentFailure::AccountFailed => {
                f.write_str("Could not create the accounting account for the student's project")
            }
            StudentFailure::GrantFailed { credits } => write!(
                f,
                "Failed to fund the student's project with {credits} credits"
            ),
            StudentFailure::ReservationLost => {
                f.write_str("The seat reservation expired before the student could be enrolled")
            }
            StudentFailure::CourseInactive => f.write_str("The course is no longer active"),
            StudentFailure::AlreadyEnrolled => {
                f.write_str("The student is already enrolled in this course")
            }
            StudentFailure::NotSaved => f.write_str("The enrolment could not be saved"),
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

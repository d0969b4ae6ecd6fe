//! The audit log's vocabulary: who acted (the actor and its role) and what happened (the event
//! types). Every state change of a course records one or more events in its own transaction.

use uuid::Uuid;

use super::caller::Caller;

/// The role an event records for whoever made the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorRole {
    ServiceAdmin,
    CourseAdmin,
    Student,
    System,
}

impl ActorRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorRole::ServiceAdmin => "service_admin",
            ActorRole::CourseAdmin => "course_admin",
            ActorRole::Student => "student",
            ActorRole::System => "system",
        }
    }
}

/// Who made a change: a role, and the caller's id and token e-mail (none for the system).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub role: ActorRole,
    pub id: Option<Uuid>,
    pub email: Option<String>,
}

impl Actor {
    /// The worker, the expiry job, or a step no caller asked for.
    pub fn system() -> Self {
        Self {
            role: ActorRole::System,
            id: None,
            email: None,
        }
    }

    /// A service admin acting on an SA endpoint.
    pub fn service_admin(caller: &Caller) -> Self {
        Self::of(ActorRole::ServiceAdmin, caller)
    }

    /// The caller of a course-admin (or support) endpoint: recorded as a service admin when
    /// they are one, else as a course admin.
    pub fn staff(caller: &Caller) -> Self {
        let role = if caller.groups.is_service_admin() {
            ActorRole::ServiceAdmin
        } else {
            ActorRole::CourseAdmin
        };
        Self::of(role, caller)
    }

    /// A student acting on their own enrolment (claim, activation).
    pub fn student(caller: &Caller) -> Self {
        Self::of(ActorRole::Student, caller)
    }

    fn of(role: ActorRole, caller: &Caller) -> Self {
        Self {
            role,
            id: Some(caller.sub),
            email: Some(caller.email.clone()),
        }
    }
}

/// Declares the event types with their stored names, in the order of the CHECK list.
macro_rules! event_types {
    ($($variant:ident => $name:literal,)*) => {
        /// `course_event.event_type`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum EventType {
            $($variant,)*
        }

        impl EventType {
            /// Every stored name, in the order of the migration's CHECK list.
            pub const NAMES: &'static [&'static str] = &[$($name,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventType::$variant => $name,)*
                }
            }
        }
    };
}

event_types! {
    CourseCreated => "course_created",
    CourseUpdated => "course_updated",
    CourseActivated => "course_activated",
    CourseVoided => "course_voided",
    CourseBudgetDepleted => "course_budget_depleted",
    CourseDeleted => "course_deleted",
    SeatsProvisioned => "seats_provisioned",
    SeatsTransferredOut => "seats_transferred_out",
    SeatsTransferredIn => "seats_transferred_in",
    EnrolmentCreated => "enrolment_created",
    EnrolmentClaimed => "enrolment_claimed",
    AccessGranted => "access_granted",
    AccessUpdateFailed => "access_update_failed",
    EnrolmentActivated => "enrolment_activated",
    EnrolmentEmailCorrected => "enrolment_email_corrected",
    EnrolmentUnclaimed => "enrolment_unclaimed",
    AccessRevoked => "access_revoked",
    DropFailed => "drop_failed",
    EnrolmentDropped => "enrolment_dropped",
    AccessRemoved => "access_removed",
    CreditsToppedUp => "credits_topped_up",
    TopUpFailed => "top_up_failed",
    TopUpInDoubt => "top_up_in_doubt",
    EmailQueued => "email_queued",
    EmailSent => "email_sent",
    EmailFailed => "email_failed",
    AssignmentCompensated => "assignment_compensated",
    RosterImported => "roster_imported",
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::roles::Groups;

    fn caller(groups: &[&str]) -> Caller {
        let paths: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        let groups = Groups::parse(&paths, "/service/x/admin");
        Caller::new(
            Uuid::nil(),
            "a@b.org".to_owned(),
            "a".to_owned(),
            None,
            groups,
        )
    }

    #[test]
    fn staff_callers_who_are_service_admins_are_recorded_as_such() {
        assert_eq!(
            Actor::staff(&caller(&["/service/x/admin"])).role,
            ActorRole::ServiceAdmin
        );
        let ca = Actor::staff(&caller(&[]));
        assert_eq!(ca.role, ActorRole::CourseAdmin);
        assert_eq!(ca.email.as_deref(), Some("a@b.org"));
        assert_eq!(Actor::system().id, None);
    }

    #[test]
    fn the_names_are_those_of_the_check_list() {
        assert_eq!(EventType::NAMES.len(), 28);
        assert_eq!(EventType::CourseCreated.as_str(), EventType::NAMES[0]);
        assert_eq!(EventType::RosterImported.as_str(), "roster_imported");
        let migration = include_str!("../../migrations/0003_course_event.sql");
        for name in EventType::NAMES {
            assert!(migration.contains(&format!("'{name}'")), "{name}");
        }
    }
}

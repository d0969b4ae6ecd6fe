//! Assign step B.7 (rules.md §4.10): the short transaction that enrols one student once the
//! external steps are done. It re-checks the course and the reservation under lock, inserts
//! the project, the enrolment and the claim e-mail, links the seat, and deletes the student's
//! saga row: the commit point. Lock order: course (`FOR SHARE`) → seat → enrolment → outbox →
//! saga.

use rust_decimal::Decimal;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{AssignRun, Source, Student, StudentFailure};
use crate::config::ClaimTokenMode;
use crate::domain::audit::EventType;
use crate::repo::email_outbox::{LeasedEmail, NewEmail};
use crate::repo::enrolments::NewEnrolment;
use crate::repo::projects::NewProject;
use crate::repo::{self, courses::status};
use crate::usecases::email_outbox::{LEASE, claim_payload, queued_event};
use crate::usecases::events::{self, EventExt};
use crate::usecases::saga::Saga;

/// The index that makes project names unique within a lab (among non-deleted projects).
const UNIQUE_PROJECT_NAME: &str = "unique_project_name_for_non_deleted";
/// The indexes that make a student id or e-mail unique within a course.
const UNIQUE_ENROLMENT: [&str; 2] = [
    "uq_enrolment_course_student_id",
    "uq_enrolment_course_email",
];

/// The Keycloak groups created for the student's project.
#[derive(Debug, Clone)]
pub struct ProjectGroups {
    pub admin_group_id: String,
    pub member_group_id: String,
    /// Created when the course had not started at the time of the run (W.5.2).
    pub waitlisted_group_id: Option<String>,
}

/// What the transaction committed: the enrolment and its queued e-mail, leased by the run.
#[derive(Debug, Clone)]
pub struct Committed {
    pub enrolment_id: Uuid,
    pub email: LeasedEmail,
}

pub async fn enrol(
    ctx: &AssignRun,
    saga: &Saga,
    student: &Student,
    seat_id: Uuid,
    project_id: Uuid,
    groups: ProjectGroups,
) -> Result<Committed, StudentFailure> {
    let not_saved = |err: sqlx::Error| {
        tracing::error!(seat_id = %seat_id, project_id = %project_id, error = %err, "assign: the student transaction failed");
        StudentFailure::NotSaved
    };
    let db = &ctx.services.db;
    let mut tx = db.begin().await.map_err(not_saved)?;

    let course = repo::courses::find_for_share(&mut *tx, ctx.course.id)
        .await
        .map_err(not_saved)?;
    if course.is_none_or(|c| c.status != status::ACTIVE) {
        return Err(StudentFailure::CourseInactive);
    }
    let seat = repo::seats::find_for_update(&mut *tx, seat_id)
        .await
        .map_err(not_saved)?;
    let still_ours = seat.is_some_and(|s| {
        s.reservation_id == Some(ctx.run)
            && s.course_id == ctx.course.id
            && s.enrolment_id.is_none()
            && !s.is_consumed
    });
    if !still_ours {
        return Err(StudentFailure::ReservationLost);
    }

    let waitlisted_group = groups.waitlisted_group_id.is_some();
    let project = NewProject {
        id: project_id,
        virtual_lab_id: ctx.lab.id,
        name: student.student_id.clone(),
        description: None,
        owner_id: ctx.caller,
        admin_group_id: groups.admin_group_id,
        member_group_id: groups.member_group_id,
        waitlisted_group_id: groups.waitlisted_group_id,
    };
    repo::projects::insert(&mut *tx, &project, ctx.now)
        .await
        .map_err(|err| match repo::unique_violation(&err) {
            Some(c) if c == UNIQUE_PROJECT_NAME => StudentFailure::ProjectExists {
                student_id: student.student_id.clone(),
            },
            _ => not_saved(err),
        })?;

    let enrolment_id = Uuid::new_v4();
    let claim_token = match ctx.services.config.claim_token_for_new_enrolments {
        ClaimTokenMode::EnrolmentId => None,
        // A v4 UUID does not repeat an id or token in practice; the unique index backs it.
        ClaimTokenMode::Random => Some(Uuid::new_v4()),
    };
    let enrolment = NewEnrolment {
        id: enrolment_id,
        course_id: ctx.course.id,
        project_id,
        contact_email: student.email.clone(),
        student_id: student.student_id.clone(),
        claim_token,
    };
    repo::enrolments::insert(&mut *tx, &enrolment, ctx.now)
        .await
        .map_err(|err| match repo::unique_violation(&err) {
            Some(c) if UNIQUE_ENROLMENT.contains(&c.as_str()) => StudentFailure::AlreadyEnrolled,
            _ => not_saved(err),
        })?;
    repo::seats::link_enrolment(&mut *tx, seat_id, enrolment.id)
        .await
        .map_err(not_saved)?;

    let email = NewEmail {
        id: Uuid::new_v4(),
        kind: repo::email_outbox::KIND_ENROLMENT_CLAIM,
        enrolment_id: Some(enrolment.id),
        course_id: Some(enrolment.course_id),
        recipient: student.email.clone(),
        payload: claim_payload(
            &ctx.services,
            &ctx.lab.name,
            claim_token.unwrap_or(enrolment.id),
        ),
        origin: repo::email_outbox::origin::ASSIGN,
        requested_by: None,
        lease: Some((ctx.run, ctx.now + LEASE)),
    };
    repo::email_outbox::insert(&mut *tx, &email, ctx.now)
        .await
        .map_err(not_saved)?;
    let course_id = ctx.course.id;
    let created = events::event(course_id, EventType::EnrolmentCreated, &ctx.actor, ctx.now)
        .enrolment(enrolment.id)
        .seat(Some(seat_id))
        .project(project_id)
        .student(&student.student_id)
        .amount(Some(Decimal::from(ctx.course.credits_per_seat)))
        .data(created_data(ctx, student, waitlisted_group));
    let queued = queued_event(course_id, &email, &ctx.actor, ctx.now);
    events::record(&mut *tx, &[created, queued])
        .await
        .map_err(not_saved)?;
    // The recovery took the saga over: roll back (dropping the transaction) and leave the
    // compensation to it.
    if !saga.commit(&mut tx).await.map_err(not_saved)? {
        return Err(StudentFailure::NotSaved);
    }
    tx.commit().await.map_err(not_saved)?;

    Ok(Committed {
        enrolment_id: enrolment.id,
        email: LeasedEmail {
            id: email.id,
            kind: email.kind.to_owned(),
            enrolment_id: Some(enrolment.id),
            course_id: Some(course_id),
            recipient: email.recipient,
            payload: email.payload,
            attempts: 0,
            enrolment_dropped: Some(false),
        },
    })
}

/// The `data` of `enrolment_created`: the run, and for an import its id and the file row.
fn created_data(ctx: &AssignRun, student: &Student, waitlisted_group: bool) -> Value {
    match &ctx.source {
        Source::Assign => json!({
            "source": "assign",
            "run_id": ctx.run,
            "waitlisted_group": waitlisted_group,
        }),
        Source::RosterImport { import_id, rows } => json!({
            "source": "roster_import",
            "run_id": ctx.run,
            "import_id": import_id,
            "row": rows.get(&student.student_id),
            "waitlisted_group": waitlisted_group,
        }),
    }
}

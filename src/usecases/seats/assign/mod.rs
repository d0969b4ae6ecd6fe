//! `POST /seats/courses/{course_id}/assign` (rules.md §4.10): reserve the seats in one short
//! transaction, then provision each student under its own ledger, at most
//! `EXTERNAL_CONCURRENCY` at once, all in one detached task.

mod admins;
mod failure;
mod lanes;
pub(crate) mod reserve;
mod student;
mod student_tx;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use failure::StudentFailure;

use crate::domain::audit::Actor;
use crate::domain::caller::Caller;
use crate::repo::enrolments::HeldEnrolment;
use crate::repo::{self, courses::Course, labs::VirtualLab};
use crate::usecases::Services;
use crate::usecases::UseCaseError;
use crate::usecases::idempotency::{Attempt, Operation, RequestHash};
use admins::LabAdmins;
pub(crate) use reserve::Reservation;

/// One validated student of the request (trimmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Student {
    pub student_id: String,
    pub email: String,
}

/// A successfully enrolled student.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    pub enrolment_id: Uuid,
    pub project_id: Uuid,
    /// The credits granted to the project.
    pub credits: i32,
    /// Whether SMTP accepted the first send of the claim e-mail.
    pub email_sent: bool,
}

/// The result for one student, in request order.
#[derive(Debug, Clone)]
pub struct StudentResult {
    pub student: Student,
    /// The seat paired with the student (released again when the student failed).
    pub seat_id: Uuid,
    pub outcome: Result<Enrolled, StudentFailure>,
}

/// What every student of one request shares.
pub(crate) struct AssignRun {
    services: Services,
    caller: Uuid,
    /// The caller as the events record them.
    actor: Actor,
    course: Course,
    lab: VirtualLab,
    run: Uuid,
    now: DateTime<Utc>,
    source: Source,
    admins: LabAdmins,
    /// Student ids already used as project names in the lab (step B.1, read once for the
    /// whole request); `None` when that read failed.
    taken_names: Option<HashSet<String>>,
}

/// Reserves a seat per student, then enrols each. The request-level checks (409s) fail the
/// whole request with nothing done; after the reservation every student gets a result.
/// A resumed attempt reports the students its dead run enrolled as enrolled, and assigns the
/// others.
pub async fn assign(
    services: &Services,
    caller: &Caller,
    course_id: Uuid,
    students: Vec<Student>,
    attempt: Attempt,
) -> Result<Vec<StudentResult>, UseCaseError> {
    let services = services.clone();
    // A lab admin who is also a service admin is recorded as the service admin.
    let actor = Actor::staff(caller);
    let caller = caller.sub;
    let tasks = services.tasks.clone();
    // Detached from the start, so a disconnect never strands a reservation or a ledger.
    tasks
        .run("assign_seats", async move {
            let now = Utc::now();
            let run = attempt.run;
            let (reservation, held) =
                reserve::reserve(&services, course_id, run, &students, attempt.resumes, now)
                    .await?;
            let credits = reservation.course.credits_per_seat;
            let (done, pending): (Vec<_>, Vec<_>) = students
                .into_iter()
                .zip(held)
                .enumerate()
                .partition(|(_, (_, held))| held.is_some());
            let (positions, pending): (Vec<usize>, Vec<Student>) =
                pending.into_iter().map(|(i, (s, _))| (i, s)).unzip();
            let mut results: Vec<(usize, StudentResult)> = done
                .into_iter()
                .filter_map(|(i, (student, held))| {
                    held.map(|h| (i, StudentResult::held(student, h, credits)))
                })
                .collect();
            if !pending.is_empty() {
                let run = Run {
                    caller,
                    actor,
                    id: run,
                    now,
                    source: Source::Assign,
                };
                let names = NameCheck::PerRequest;
                let provisioned =
                    provision_reserved(services, run, reservation, pending, names).await;
                results.extend(positions.into_iter().zip(provisioned));
            }
            results.sort_by_key(|(i, _)| *i);
            Ok(results.into_iter().map(|(_, r)| r).collect())
        })
        .await?
}

/// The hash an `Idempotency-Key` binds to: the students as read (trimmed), in order.
pub fn request_hash(students: &[Student]) -> Vec<u8> {
    let mut hash = RequestHash::new(Operation::Assign);
    for s in students {
        hash.part(s.student_id.as_bytes()).part(s.email.as_bytes());
    }
    hash.finish()
}

impl StudentResult {
    /// A student a dead attempt of the same request enrolled, reported as that attempt would
    /// have reported it.
    fn held(student: Student, held: HeldEnrolment, credits: i32) -> Self {
        Self {
            student,
            seat_id: held.seat_id,
            outcome: Ok(Enrolled {
                enrolment_id: held.id,
                project_id: held.project_id,
                credits,
                email_sent: held.email_sent,
            }),
        }
    }
}

/// One provisioning run: who asked, why, its reservation id and its one `now`.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub caller: Uuid,
    /// The caller as the events record them.
    pub actor: Actor,
    /// The `reservation_id` of the run's seats.
    pub id: Uuid,
    pub now: DateTime<Utc>,
    pub source: Source,
}

/// What started a run, as its `enrolment_created` events record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Assign,
    /// A roster import: its id, and the file row of each student id (unique in the run).
    RosterImport {
        import_id: Uuid,
        rows: HashMap<String, usize>,
    },
}

/// Where step B.1's project-name check happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameCheck {
    /// Read once for the whole request, after the reservation (plain assign).
    PerRequest,
    /// Already done inside the reserve transaction (the roster import); the unique index
    /// stays the backstop.
    Done,
}

/// Step B for students whose seats `run` reserved (student *i* on seat *i*): each is
/// provisioned under its own ledger, and gets a result in the students' order.
pub(crate) async fn provision_reserved(
    services: Services,
    run: Run,
    reservation: Reservation,
    students: Vec<Student>,
    names: NameCheck,
) -> Vec<StudentResult> {
    let admins = LabAdmins::new(
        services.keycloak.clone(),
        reservation.lab.admin_group_id.clone(),
    );
    let taken_names = match names {
        NameCheck::Done => Some(HashSet::new()),
        NameCheck::PerRequest => {
            let names: Vec<String> = students.iter().map(|s| s.student_id.clone()).collect();
            match repo::projects::taken_names(&services.db, reservation.lab.id, &names).await {
                Ok(taken) => Some(taken.into_iter().collect()),
                Err(err) => {
                    tracing::error!(error = %err, "assign: the project-name pre-check failed");
                    None
                }
            }
        }
    };
    let ctx = Arc::new(AssignRun {
        services,
        caller: run.caller,
        actor: run.actor,
        course: reservation.course,
        lab: reservation.lab,
        run: run.id,
        now: run.now,
        source: run.source,
        admins,
        taken_names,
    });
    lanes::provision_all(ctx, students, reservation.seats).await
}

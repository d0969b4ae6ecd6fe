//! Assign step B's scheduling: students are provisioned in their own tasks, at most
//! `EXTERNAL_CONCURRENCY` at once, and each committed student's first e-mail attempt runs on a
//! second lane (also bounded), so waiting for SMTP does not hold a provisioning slot. Results
//! come back in request order.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::student::{self, Provisioned};
use super::{AssignRun, Enrolled, Student, StudentFailure, StudentResult};
use crate::repo::email_outbox::LeasedEmail;

/// Student *i* on seat *i*.
pub async fn provision_all(
    ctx: Arc<AssignRun>,
    students: Vec<Student>,
    seats: Vec<Uuid>,
) -> Vec<StudentResult> {
    let concurrency = ctx.services.config.external_concurrency.max(1);
    let mut outcomes: Vec<Option<Result<Enrolled, StudentFailure>>> =
        (0..students.len()).map(|_| None).collect();
    let pairs: Vec<(Student, Uuid)> = students
        .iter()
        .cloned()
        .zip(seats.iter().copied())
        .collect();
    let mut provisioning = futures::stream::iter(pairs.into_iter().enumerate())
        .map(|(index, (student, seat_id))| provision_one(ctx.clone(), index, student, seat_id))
        .buffer_unordered(concurrency);
    let mail_slots = Arc::new(Semaphore::new(concurrency));
    let mut mails = FuturesUnordered::new();
    let mut provisioned_all = false;
    loop {
        tokio::select! {
            next = provisioning.next(), if !provisioned_all => match next {
                Some((index, Ok(provisioned))) => {
                    outcomes[index] = Some(Ok(enrolled(&ctx, &provisioned)));
                    mails.push(first_email(ctx.clone(), mail_slots.clone(), index, provisioned.email));
                }
                Some((index, Err(failure))) => outcomes[index] = Some(Err(failure)),
                None => provisioned_all = true,
            },
            Some((index, sent)) = mails.next(), if !mails.is_empty() => {
                if let Some(Some(Ok(enrolled))) = outcomes.get_mut(index) {
                    enrolled.email_sent = sent;
                }
            }
            else => break,
        }
    }

    students
        .into_iter()
        .zip(seats)
        .zip(outcomes)
        .map(|((student, seat_id), outcome)| StudentResult {
            student,
            seat_id,
            outcome: outcome.unwrap_or(Err(StudentFailure::NotSaved)),
        })
        .collect()
}

fn enrolled(ctx: &AssignRun, provisioned: &Provisioned) -> Enrolled {
    Enrolled {
        enrolment_id: provisioned.enrolment_id,
        project_id: provisioned.project_id,
        credits: ctx.course.credits_per_seat,
        email_sent: false,
    }
}

/// One student in its own task (so students spread over the runtime's threads).
async fn provision_one(
    ctx: Arc<AssignRun>,
    index: usize,
    student: Student,
    seat_id: Uuid,
) -> (usize, Result<Provisioned, StudentFailure>) {
    let task_ctx = ctx.clone();
    let outcome = ctx
        .services
        .tasks
        .run("assign_student", async move {
            student::provision(&task_ctx, &student, seat_id).await
        })
        .await;
    match outcome {
        Ok(outcome) => (index, outcome),
        // The task panicked: its ledger compensates when dropped; the seat is freed here.
        Err(_) => {
            student::release(&ctx, seat_id).await;
            (index, Err(StudentFailure::NotSaved))
        }
    }
}

/// The first attempt of one claim e-mail, holding one of the lane's slots.
async fn first_email(
    ctx: Arc<AssignRun>,
    slots: Arc<Semaphore>,
    index: usize,
    email: LeasedEmail,
) -> (usize, bool) {
    let _slot = slots.acquire_owned().await;
    let tasks = ctx.services.tasks.clone();
    let sent = tasks
        .run("assign_claim_email", async move {
            student::send_claim_email(&ctx, &email).await
        })
        .await
        .unwrap_or(false);
    (index, sent)
}
